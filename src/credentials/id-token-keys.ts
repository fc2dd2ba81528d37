/**
 * The check on ID tokens an upstream mints (token endpoint, IAM Credentials): the signature must verify with the
 * issuer's published keys (Google's: https://www.googleapis.com/oauth2/v3/certs), so a client is never handed a
 * token that no verifier will accept. A token that fails is an UpstreamError of kind `signature`, not retried.
 *
 * Keys are fetched through the same deadline and retries as every upstream call, kept for an hour, and fetched again
 * when a token names a key id not among them (at most every 30 s: Google publishes new keys well before use).
 *
 * @example
 *   const keys = new IdTokenKeys(GOOGLE_CERTS_URL);
 *   await keys.check(token, { upstream: "IAM Credentials", host: "iamcredentials.googleapis.com", deadline });
 */
import type { CompactVerifyResult, JWK } from "jose";
import { UpstreamError } from "../errors.ts";
import { callUpstream, type Fetch, hostOf } from "./upstream.ts";

const KEEP_MS = 3_600_000;
const REFETCH_MIN_MS = 30_000;

interface KeySet {
  keys: JWK[];
  fetchedAt: number;
}

export class IdTokenKeys {
  private set: KeySet | undefined;
  private pending: Promise<KeySet> | undefined;

  constructor(
    readonly url: string,
    private readonly fetchImpl?: Fetch,
  ) {}

  /** Resolves when `token` verifies with a published key; throws UpstreamError (kind `signature`) when not. */
  async check(token: string, from: { upstream: string; host: string; deadline: number }): Promise<void> {
    const bad = (why: string): UpstreamError =>
      new UpstreamError(
        "ID_TOKEN_BAD_SIGNATURE",
        `${from.upstream} ${from.host} answered an ID token that does not verify with the keys at ${this.url} (bad signature: ${why})`,
        { upstream: from.upstream, host: from.host, kind: "signature", attempts: 1, elapsedMs: 0, transient: false },
      );
    const jose = await import("jose");
    let kid: string | undefined;
    try {
      const header = jose.decodeProtectedHeader(token);
      if (header.alg !== "RS256") throw bad(`alg ${JSON.stringify(header.alg)}, not RS256`);
      kid = typeof header.kid === "string" ? header.kid : undefined;
    } catch (e) {
      if (e instanceof UpstreamError) throw e;
      throw bad("not a JWT");
    }
    let set = await this.keys(from.deadline, false);
    if (kid !== undefined && !set.keys.some((k) => k.kid === kid) && Date.now() - set.fetchedAt >= REFETCH_MIN_MS) {
      set = await this.keys(from.deadline, true);
    }
    const candidates = kid === undefined ? set.keys : set.keys.filter((k) => k.kid === kid);
    if (candidates.length === 0) throw bad(`no published key has kid ${JSON.stringify(kid)}`);
    for (const jwk of candidates) {
      let result: CompactVerifyResult | undefined;
      try {
        result = await jose.compactVerify(token, await jose.importJWK({ ...jwk, alg: "RS256" }, "RS256"));
      } catch {
        // the next key, then the verdict below
      }
      if (result) return;
    }
    throw bad(`the signature does not match key ${JSON.stringify(kid ?? "(none named)")}`);
  }

  private async keys(deadline: number, refresh: boolean): Promise<KeySet> {
    const have = this.set;
    if (have && !refresh && Date.now() - have.fetchedAt < KEEP_MS) return have;
    this.pending ??= this.fetchKeys(deadline).finally(() => {
      this.pending = undefined;
    });
    return this.pending;
  }

  private async fetchKeys(deadline: number): Promise<KeySet> {
    const { json } = await callUpstream({
      upstream: "the ID-token keys",
      url: this.url,
      deadline,
      phrase: (f, reason) => [
        f.kind === "http" || f.kind === "malformed" ? "IAM_BAD_ANSWER" : "IAM_UNREACHABLE",
        `cannot check the ID token's signature: the keys at ${this.url} could not be read: ${reason}`,
      ],
      ...(this.fetchImpl ? { fetch: this.fetchImpl } : {}),
    });
    const keys = Array.isArray(json.keys) ? (json.keys.filter((k) => k && typeof k === "object") as JWK[]) : [];
    if (keys.length === 0) {
      throw new UpstreamError("IAM_BAD_ANSWER", `cannot check the ID token's signature: ${this.url} lists no keys (malformed answer)`, {
        upstream: "the ID-token keys",
        host: hostOf(this.url),
        kind: "malformed",
        attempts: 1,
        elapsedMs: 0,
        transient: false,
      });
    }
    this.set = { keys, fetchedAt: Date.now() };
    return this.set;
  }
}
