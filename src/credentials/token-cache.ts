/**
 * One cache in front of every credential source. Tokens are kept per account and scopes (access) or per account,
 * audience, format and licenses (identity); refreshed ahead of expiry like the real server, which swaps in a new
 * token when about four minutes remain; single-flight, so a thousand cold requests make one upstream call.
 * Failures are never cached.
 */
import type { Account, CredentialSource, IdTokenRequest, InstanceIdentity, IssuedToken } from "./source.ts";

/** A cached token plus its rendered metadata-server body, rebuilt at most once a second. */
export class CachedToken {
  private renderedAt = -1;
  private rendered = "";
  /** Until then the token is served as is; after it, served while a refresh runs behind. */
  readonly refreshAt: number;
  /** After it the token is never handed out: callers wait for the new one. */
  readonly floorAt: number;
  constructor(
    readonly token: string,
    readonly expiresAt: number,
    /** Lifetime when minted: short-lived tokens (tests, custom sources) scale the margins down so they are reused. */
    readonly lifetime: number,
    refreshAhead: number,
    minRemaining: number,
  ) {
    this.refreshAt = expiresAt - Math.min(refreshAhead, lifetime / 2);
    this.floorAt = expiresAt - Math.min(minRemaining, lifetime / 4);
  }

  /** Whole seconds left, as `expires_in`. */
  expiresIn(now = Date.now()): number {
    return Math.max(0, Math.floor((this.expiresAt - now) / 1000));
  }

  /** `{"access_token":…,"expires_in":…,"token_type":"Bearer"}`, in the real server's field order. */
  accessTokenBody(now = Date.now()): string {
    const left = this.expiresIn(now);
    if (left !== this.renderedAt) {
      this.rendered = `{"access_token":${JSON.stringify(this.token)},"expires_in":${left},"token_type":"Bearer"}`;
      this.renderedAt = left;
    }
    return this.rendered;
  }
}

interface Slot {
  value?: CachedToken;
  inflight?: Promise<CachedToken>;
}

export interface TokenCacheEvents {
  hit?(kind: "access" | "identity"): void;
  miss?(kind: "access" | "identity"): void;
  /** An upstream call finished; `ok` false when it threw. */
  upstream?(kind: "access" | "identity", seconds: number, ok: boolean): void;
  /** A background refresh failed; the still-valid token keeps being served. */
  refreshFailed?(kind: "access" | "identity", error: unknown): void;
}

export interface TokenCacheOptions {
  now?: () => number;
  /** Start refreshing in the background when this much lifetime remains (default 300 s). */
  refreshAheadMs?: number;
  /** Never hand out a token with less than this left; wait for the refresh instead (default 240 s). */
  minRemainingMs?: number;
  /** Upper bound on cached keys; expired and oldest entries go first. */
  maxEntries?: number;
  events?: TokenCacheEvents;
}

const accessKey = (email: string, scopes: readonly string[]): string => `a\u0000${email}\u0000${[...new Set(scopes)].sort().join(" ")}`;

export class TokenCache {
  private readonly slots = new Map<string, Slot>();
  private readonly now: () => number;
  private readonly refreshAhead: number;
  private readonly minRemaining: number;
  private readonly maxEntries: number;
  private readonly events: TokenCacheEvents;

  constructor(
    readonly source: CredentialSource,
    options: TokenCacheOptions = {},
  ) {
    this.now = options.now ?? Date.now;
    this.refreshAhead = options.refreshAheadMs ?? 300_000;
    this.minRemaining = options.minRemainingMs ?? 240_000;
    this.maxEntries = options.maxEntries ?? 10_000;
    this.events = options.events ?? {};
  }

  /** An access token; synchronous when a fresh one is cached, so the hot path allocates no promise. */
  accessToken(account: Account, scopes: readonly string[]): CachedToken | Promise<CachedToken> {
    const key = scopes === account.scopes ? this.configuredKey(account) : accessKey(account.email, scopes);
    return this.fresh(key, "access") ?? this.get(key, "access", () => this.source.accessToken({ account, scopes }));
  }

  /** Cache keys for accounts' configured scopes, built once per account: the common request builds no strings. */
  private readonly configuredKeys = new WeakMap<Account, { email: string; scopes: readonly string[]; key: string }>();

  private configuredKey(account: Account): string {
    const k = this.configuredKeys.get(account);
    if (k !== undefined && k.email === account.email && k.scopes === account.scopes) return k.key;
    const key = accessKey(account.email, account.scopes);
    this.configuredKeys.set(account, { email: account.email, scopes: account.scopes, key });
    return key;
  }

  idToken(request: IdTokenRequest): CachedToken | Promise<CachedToken> {
    const { account, audience, format, licenses } = request;
    const key = `i\u0000${account.email}\u0000${format}\u0000${licenses ? 1 : 0}\u0000${audience}`;
    return this.fresh(key, "identity") ?? this.get(key, "identity", () => this.source.idToken(request));
  }

  /** Forget cached tokens: all of them, or one kind (identity tokens after the instance's facts change). */
  clear(kind?: "access" | "identity"): void {
    if (!kind) {
      this.slots.clear();
      return;
    }
    const prefix = kind === "access" ? "a\u0000" : "i\u0000";
    for (const key of this.slots.keys()) if (key.startsWith(prefix)) this.slots.delete(key);
  }

  get size(): number {
    return this.slots.size;
  }

  /** The hot path: a cached token well inside its lifetime, with no closure or promise made. */
  private fresh(key: string, kind: "access" | "identity"): CachedToken | undefined {
    const value = this.slots.get(key)?.value;
    if (value === undefined || this.now() >= value.refreshAt) return undefined;
    this.events.hit?.(kind);
    return value;
  }

  private get(key: string, kind: "access" | "identity", mint: () => Promise<IssuedToken>): CachedToken | Promise<CachedToken> {
    let slot = this.slots.get(key);
    const now = this.now();
    const value = slot?.value;
    if (value) {
      if (now < value.refreshAt) {
        this.events.hit?.(kind);
        return value;
      }
      if (now < value.floorAt) {
        this.events.hit?.(kind);
        if (!slot!.inflight) {
          this.start(slot!, kind, mint).catch((e) => this.events.refreshFailed?.(kind, e));
        }
        return value;
      }
    }
    this.events.miss?.(kind);
    if (!slot) {
      this.evictIfFull(now);
      slot = {};
      this.slots.set(key, slot);
    }
    return slot.inflight ?? this.start(slot, kind, mint);
  }

  private start(slot: Slot, kind: "access" | "identity", mint: () => Promise<IssuedToken>): Promise<CachedToken> {
    const started = this.now();
    // mint runs in a microtask, so `inflight` is set before it can settle.
    const p: Promise<CachedToken> = Promise.resolve()
      .then(mint)
      .then(
        (issued) => {
          const lifetime = issued.expiresAt - this.now();
          if (!(lifetime > 0)) throw new Error("the credential source returned an already expired token");
          const cached = new CachedToken(issued.token, issued.expiresAt, lifetime, this.refreshAhead, this.minRemaining);
          slot.value = cached;
          this.events.upstream?.(kind, (this.now() - started) / 1000, true);
          return cached;
        },
        (e: unknown) => {
          this.events.upstream?.(kind, (this.now() - started) / 1000, false);
          throw e;
        },
      )
      .finally(() => {
        if (slot.inflight === p) slot.inflight = undefined;
      });
    slot.inflight = p;
    return p;
  }

  private evictIfFull(now: number): void {
    if (this.slots.size < this.maxEntries) return;
    for (const [k, s] of this.slots) {
      if (!s.inflight && (!s.value || s.value.expiresAt <= now)) this.slots.delete(k);
    }
    for (const k of this.slots.keys()) {
      if (this.slots.size < this.maxEntries) break;
      this.slots.delete(k);
    }
  }
}

export type { Account, InstanceIdentity };
