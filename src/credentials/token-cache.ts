/**
 * One cache in front of every credential source. Tokens are kept per account and scopes (access) or per account,
 * audience, format and licenses (identity); refreshed ahead of expiry like the real server, which swaps in a new
 * token when about four minutes remain; single-flight, so a thousand cold requests make one upstream call.
 *
 * Off the happy path:
 * - Every call to the source has a deadline (`-upstreamTimeout`), passed to it and enforced here too: a source that
 *   never settles fails its callers at the deadline and frees the slot, so the next request tries again.
 * - A token that is still valid keeps being served while refreshes fail; the first refresh that works replaces it.
 * - A transient failure (timeout, refused, reset, 429, 5xx; the source already retried inside the deadline) is
 *   answered to identical requests for {@link FAILURE_TTL_MS} (longer if the upstream's Retry-After says so, at most
 *   {@link FAILURE_TTL_MAX_MS}); other failures are not kept, so a fixed permission takes effect at once.
 * - Bounded by entries and by bytes; eviction is the CLOCK algorithm (a used bit set on hits, second chance), O(1)
 *   amortised. A fresh hit sets one boolean and makes no closure or promise.
 */
import { CredentialError, UpstreamError } from "../errors.ts";
import type { Account, CredentialSource, IdTokenRequest, InstanceIdentity, IssuedToken } from "./source.ts";

/**
 * How long a transient failure is answered to identical requests: long enough to absorb client libraries' quick
 * retries (each of which would otherwise wait out another full deadline against a dead upstream, and pile load on
 * a struggling one), short enough that recovery is seen within seconds.
 */
export const FAILURE_TTL_MS = 3_000;
/** The longest a Retry-After keeps a failure cached. */
export const FAILURE_TTL_MAX_MS = 30_000;
/** `-upstreamTimeout`'s default: the deadline of each call to a credential source (upstream calls and retries). */
export const DEFAULT_UPSTREAM_TIMEOUT_MS = 10_000;
/** Longest `audience` accepted for ID tokens (a URL; longer ones are refused with 400). */
export const MAX_AUDIENCE_LENGTH = 2048;
/** Past its deadline a source is given this long to report its own (more telling) error before the cache does. */
const DEADLINE_GRACE_MS = 250;
/** A stale token is not handed out with less than this left. */
const LAST_USABLE_MS = 1_000;
/** Rough bytes of a slot beyond its strings (objects, map entry, rendered body header). */
const SLOT_OVERHEAD = 256;

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
  /** A transient failure answered to identical requests until `quietUntil`. */
  failure?: unknown;
  /** After a failed call, no new call before this (a valid token, if any, is served meanwhile). */
  quietUntil: number;
  /** CLOCK's bit: set by hits, cleared when eviction passes over the slot. */
  used: boolean;
  bytes: number;
}

export type TokenKind = "access" | "identity";

export interface TokenCacheEvents {
  hit?(kind: TokenKind): void;
  miss?(kind: TokenKind): void;
  /** An upstream call finished; `ok` false when it threw. */
  upstream?(kind: TokenKind, seconds: number, ok: boolean): void;
  /** A background refresh failed; the still-valid token keeps being served. */
  refreshFailed?(kind: TokenKind, error: unknown): void;
  /** A call to the source failed (once per call, however many requests waited on it). */
  failed?(kind: TokenKind, error: unknown, seconds: number, source: string): void;
}

export interface TokenCacheOptions {
  now?: () => number;
  /** Start refreshing in the background when this much lifetime remains (default 300 s). */
  refreshAheadMs?: number;
  /** Never hand out a token with less than this left; wait for the refresh instead (default 240 s). */
  minRemainingMs?: number;
  /** Upper bound on cached keys (default 10,000). */
  maxEntries?: number;
  /** Upper bound on the bytes of keys and tokens held (default 32 MiB). */
  maxBytes?: number;
  /** Deadline of each call to the source (`-upstreamTimeout`; default 10 s). */
  deadlineMs?: number;
  /** How long a transient failure is answered to identical requests (default {@link FAILURE_TTL_MS}). */
  failureTtlMs?: number;
  events?: TokenCacheEvents;
}

const accessKey = (email: string, scopes: readonly string[]): string => `a\u0000${email}\u0000${[...new Set(scopes)].sort().join(" ")}`;

const isTransient = (e: unknown): e is UpstreamError => e instanceof UpstreamError && e.transient;

export class TokenCache {
  private readonly slots = new Map<string, Slot>();
  private readonly now: () => number;
  private readonly refreshAhead: number;
  private readonly minRemaining: number;
  private readonly maxEntries: number;
  private readonly maxBytes: number;
  readonly deadlineMs: number;
  private readonly failureTtl: number;
  private readonly events: TokenCacheEvents;
  private heldBytes = 0;

  constructor(
    readonly source: CredentialSource,
    options: TokenCacheOptions = {},
  ) {
    this.now = options.now ?? Date.now;
    this.refreshAhead = options.refreshAheadMs ?? 300_000;
    this.minRemaining = options.minRemainingMs ?? 240_000;
    this.maxEntries = options.maxEntries ?? 10_000;
    this.maxBytes = options.maxBytes ?? 32 * 1024 * 1024;
    this.deadlineMs = options.deadlineMs ?? DEFAULT_UPSTREAM_TIMEOUT_MS;
    this.failureTtl = options.failureTtlMs ?? FAILURE_TTL_MS;
    this.events = options.events ?? {};
  }

  /** An access token; synchronous when a fresh one is cached, so the hot path allocates no promise. */
  accessToken(account: Account, scopes: readonly string[]): CachedToken | Promise<CachedToken> {
    const key = scopes === account.scopes ? this.configuredKey(account) : accessKey(account.email, scopes);
    return this.fresh(key, "access") ?? this.get(key, "access", (deadline) => this.source.accessToken({ account, scopes, deadline }));
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
    return this.fresh(key, "identity") ?? this.get(key, "identity", (deadline) => this.source.idToken({ ...request, deadline }));
  }

  /** Forget cached tokens: all of them, or one kind (identity tokens after the instance's facts change). */
  clear(kind?: TokenKind): void {
    if (!kind) {
      this.slots.clear();
      this.heldBytes = 0;
      return;
    }
    const prefix = kind === "access" ? "a\u0000" : "i\u0000";
    for (const key of [...this.slots.keys()]) if (key.startsWith(prefix)) this.remove(key);
  }

  get size(): number {
    return this.slots.size;
  }

  /** Estimated bytes held by keys and tokens. */
  get bytes(): number {
    return this.heldBytes;
  }

  /** The hot path: a cached token well inside its lifetime, with no closure or promise made. */
  private fresh(key: string, kind: TokenKind): CachedToken | undefined {
    const slot = this.slots.get(key);
    const value = slot?.value;
    if (value === undefined || this.now() >= value.refreshAt) return undefined;
    slot!.used = true;
    this.events.hit?.(kind);
    return value;
  }

  private get(key: string, kind: TokenKind, mint: (deadline: number) => Promise<IssuedToken>): CachedToken | Promise<CachedToken> {
    let slot = this.slots.get(key);
    const now = this.now();
    const value = slot?.value;
    if (slot && value) {
      slot.used = true;
      if (now < value.refreshAt) {
        this.events.hit?.(kind);
        return value;
      }
      if (now < value.floorAt) {
        this.events.hit?.(kind);
        if (!slot.inflight && now >= slot.quietUntil) {
          this.start(key, slot, kind, mint).catch((e) => this.events.refreshFailed?.(kind, e));
        }
        return value;
      }
      if (now < value.expiresAt - LAST_USABLE_MS) {
        // Past the floor but still valid: wait for a new token, and keep serving this one while refreshes fail.
        if (now < slot.quietUntil) {
          this.events.hit?.(kind);
          return value;
        }
        this.events.miss?.(kind);
        const p = slot.inflight ?? this.start(key, slot, kind, mint);
        return p.catch((e: unknown) => {
          if (this.now() < value.expiresAt - LAST_USABLE_MS) return value;
          throw e;
        });
      }
    }
    this.events.miss?.(kind);
    if (!slot) {
      slot = { quietUntil: 0, used: false, bytes: 0 };
      this.makeRoom(1, key.length * 2 + SLOT_OVERHEAD);
      this.slots.set(key, slot);
      this.account(slot, key.length * 2 + SLOT_OVERHEAD);
    }
    if (slot.failure !== undefined && now < slot.quietUntil) return Promise.reject(slot.failure);
    return slot.inflight ?? this.start(key, slot, kind, mint);
  }

  private start(key: string, slot: Slot, kind: TokenKind, mint: (deadline: number) => Promise<IssuedToken>): Promise<CachedToken> {
    const started = this.now();
    const deadline = started + this.deadlineMs;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const overdue = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        const type = this.source.describe().type;
        reject(
          new UpstreamError(
            "UPSTREAM_TIMEOUT",
            `the ${type} credentials did not answer within the ${(this.deadlineMs / 1000).toFixed(1)} s deadline (timeout)`,
            { upstream: `${type} credentials`, host: "", kind: "timeout", attempts: 1, elapsedMs: this.deadlineMs, transient: true },
          ),
        );
      }, this.deadlineMs + DEADLINE_GRACE_MS);
    });
    // mint runs in a microtask, so `inflight` is set before it can settle.
    const p: Promise<CachedToken> = Promise.race([Promise.resolve(deadline).then(mint), overdue])
      .then(
        (issued) => {
          const lifetime = issued.expiresAt - this.now();
          if (!(lifetime > 0)) throw new CredentialError("EXPIRED_TOKEN", "the credential source returned an already expired token");
          const cached = new CachedToken(issued.token, issued.expiresAt, lifetime, this.refreshAhead, this.minRemaining);
          this.events.upstream?.(kind, (this.now() - started) / 1000, true);
          if (this.slots.get(key) === slot) {
            this.account(slot, (issued.token.length - (slot.value?.token.length ?? 0)) * 4);
            slot.value = cached;
            slot.failure = undefined;
            slot.quietUntil = 0;
            // The token's bytes are known only now.
            if (this.heldBytes > this.maxBytes) this.makeRoom(0, 0);
          }
          return cached;
        },
        (e: unknown) => {
          const seconds = (this.now() - started) / 1000;
          this.events.upstream?.(kind, seconds, false);
          this.events.failed?.(kind, e, seconds, this.source.describe().type);
          const ttl = isTransient(e) ? Math.max(this.failureTtl, Math.min(e.retryAfterMs ?? 0, FAILURE_TTL_MAX_MS)) : this.failureTtl;
          slot.quietUntil = this.now() + ttl;
          slot.failure = isTransient(e) ? e : undefined;
          throw e;
        },
      )
      .finally(() => {
        clearTimeout(timer);
        if (slot.inflight === p) slot.inflight = undefined;
      });
    slot.inflight = p;
    return p;
  }

  private account(slot: Slot, delta: number): void {
    slot.bytes += delta;
    this.heldBytes += delta;
  }

  private remove(key: string): void {
    const slot = this.slots.get(key);
    if (!slot) return;
    this.slots.delete(key);
    this.heldBytes -= slot.bytes;
  }

  /**
   * Evict until `entries` more slots of `bytes` fit. CLOCK: the oldest slot goes unless it was used since eviction
   * last passed it or a call for it is in flight; then it moves to the back with its bit cleared. Each slot is
   * passed over at most once per use, so eviction is O(1) amortised.
   */
  private makeRoom(entries: number, bytes: number): void {
    let passes = this.slots.size * 2;
    while (this.slots.size > 0 && (this.slots.size + entries > this.maxEntries || this.heldBytes + bytes > this.maxBytes) && passes-- > 0) {
      const key = this.slots.keys().next().value as string;
      const slot = this.slots.get(key)!;
      if (slot.used || slot.inflight) {
        slot.used = false;
        this.slots.delete(key);
        this.slots.set(key, slot);
        continue;
      }
      this.remove(key);
    }
  }
}

export type { Account, InstanceIdentity };
