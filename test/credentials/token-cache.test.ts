/**
 * The token cache: single-flight, refresh ahead of expiry, deadlines, transient failures cached briefly, a valid
 * token served while refreshes fail, bounds by entries and bytes with CLOCK eviction.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { TokenCache, CachedToken, FAILURE_TTL_MS, FAILURE_TTL_MAX_MS } from "../../src/credentials/token-cache.ts";
import { UpstreamError, type UpstreamKind } from "../../src/errors.ts";
import type { CredentialSource, IssuedToken } from "../../src/credentials/source.ts";
import { readServiceAccountKey, ServiceAccountKeySource } from "../../src/credentials/service-account.ts";
import { makeServiceAccountKey, startFakeGoogle, type FakeGoogle } from "../fakes/google.ts";
import { concurrentGets, startServer, V1, type Started } from "../helpers/server.ts";

/** Instance facts no test here looks at. */
const instance = {
  projectId: "",
  projectNumber: "",
  instanceId: "",
  instanceName: "",
  zone: "",
  instanceCreationTimestamp: 0,
  licenseIds: [],
};

const account = { email: "sa@example-project.iam.gserviceaccount.com", scopes: ["https://www.googleapis.com/auth/cloud-platform"] };

/** A source that counts calls and mints tokens with a chosen lifetime on a controllable clock. */
function countingSource(clock: { now: number }, lifetimeMs = 3600_000) {
  const calls = { access: 0, identity: 0 };
  let fail = false;
  const source: CredentialSource = {
    describe: () => ({ type: "test" }),
    accessToken: async (): Promise<IssuedToken> => {
      calls.access++;
      if (fail) throw new Error("upstream down");
      return { token: `tok-${calls.access}`, expiresAt: clock.now + lifetimeMs };
    },
    idToken: async () => {
      calls.identity++;
      return { token: `id-${calls.identity}`, expiresAt: clock.now + lifetimeMs };
    },
  };
  return { source, calls, setFail: (v: boolean) => (fail = v) };
}

describe("TokenCache (unit)", () => {
  test("serves the cached token synchronously until the refresh margin", async () => {
    const clock = { now: 1_000_000 };
    const { source, calls } = countingSource(clock);
    const cache = new TokenCache(source, { now: () => clock.now });
    const first = await cache.accessToken(account, account.scopes);
    expect(first.token).toBe("tok-1");
    clock.now += 3000_000; // 600 s left: still fresh
    const again = cache.accessToken(account, account.scopes);
    expect(again).toBeInstanceOf(CachedToken);
    expect((again as CachedToken).expiresIn(clock.now)).toBe(600);
    expect(calls.access).toBe(1);
  });

  test("refreshes in the background inside the last five minutes, never hands out under four", async () => {
    const clock = { now: 0 };
    const { source, calls } = countingSource(clock);
    const cache = new TokenCache(source, { now: () => clock.now });
    await cache.accessToken(account, account.scopes);
    clock.now = 3600_000 - 280_000; // 280 s left: serve old, refresh behind
    const old = cache.accessToken(account, account.scopes) as CachedToken;
    expect(old.token).toBe("tok-1");
    await Bun.sleep(1);
    expect(calls.access).toBe(2);
    expect((cache.accessToken(account, account.scopes) as CachedToken).token).toBe("tok-2");
    clock.now += 3600_000 - 200_000; // tok-2 has 200 s left: below the floor, wait for a new one
    const waited = cache.accessToken(account, account.scopes);
    expect(waited).toBeInstanceOf(Promise);
    expect((await waited).token).toBe("tok-3");
  });

  test("keys: scopes in any order are one entry; accounts, audiences and formats are separate", async () => {
    const clock = { now: 0 };
    const { source, calls } = countingSource(clock);
    const cache = new TokenCache(source, { now: () => clock.now });
    await cache.accessToken(account, ["b", "a"]);
    await cache.accessToken(account, ["a", "b", "a"]);
    expect(calls.access).toBe(1);
    for (const format of ["standard", "full"] as const) {
      await cache.idToken({ account, audience: "a", format, licenses: false, instance });
      await cache.idToken({ account, audience: "b", format, licenses: false, instance });
    }
    await cache.idToken({ account, audience: "a", format: "full", licenses: false, instance });
    expect(calls.identity).toBe(4);
  });

  test("a failure is not cached and reaches every waiting caller", async () => {
    const clock = { now: 0 };
    const { source, calls, setFail } = countingSource(clock);
    const cache = new TokenCache(source, { now: () => clock.now });
    setFail(true);
    const results = await Promise.allSettled([1, 2, 3].map(() => cache.accessToken(account, account.scopes)));
    expect(results.map((r) => r.status)).toEqual(["rejected", "rejected", "rejected"]);
    expect(calls.access).toBe(1);
    setFail(false);
    expect((await cache.accessToken(account, account.scopes)).token).toBe("tok-2");
  });

  test("short-lived tokens are still reused (margins scale with the lifetime)", async () => {
    const clock = { now: 0 };
    const { source, calls } = countingSource(clock, 60_000);
    const cache = new TokenCache(source, { now: () => clock.now });
    await cache.accessToken(account, account.scopes);
    clock.now = 20_000;
    expect(cache.accessToken(account, account.scopes)).toBeInstanceOf(CachedToken);
    expect(calls.access).toBe(1);
  });

  test("an expired token from a source is an error, not a cache entry", async () => {
    const cache = new TokenCache({
      describe: () => ({ type: "t" }),
      accessToken: async () => ({ token: "x", expiresAt: Date.now() - 1 }),
      idToken: async () => ({ token: "x", expiresAt: 0 }),
    });
    await expect(Promise.resolve(cache.accessToken(account, []))).rejects.toThrow("already expired");
    expect(cache.size).toBe(1);
  });
});

/** An UpstreamError as a source reports one. */
function upstreamError(kind: UpstreamKind, transient: boolean, extra: { retryAfterMs?: number } = {}): UpstreamError {
  return new UpstreamError("TOKEN_ENDPOINT_UNREACHABLE", `the token endpoint failed (${kind})`, {
    upstream: "token endpoint",
    host: "127.0.0.1:1",
    kind,
    attempts: 1,
    elapsedMs: 1,
    transient,
    ...extra,
  });
}

/** A source whose next answers are chosen by the test: a token, an error, or a promise that never settles. */
function scriptedSource(clock: { now: number }, lifetimeMs = 3600_000) {
  let calls = 0;
  let next: "ok" | "hang" | Error = "ok";
  const deadlines: (number | undefined)[] = [];
  const source: CredentialSource = {
    describe: () => ({ type: "serviceAccountKey" }),
    accessToken: async (req): Promise<IssuedToken> => {
      calls++;
      deadlines.push(req.deadline);
      if (next === "hang") return new Promise<IssuedToken>(() => {});
      if (next instanceof Error) throw next;
      return { token: `tok-${calls}`, expiresAt: clock.now + lifetimeMs };
    },
    idToken: async (req) => ({ token: `id-${req.audience}`, expiresAt: clock.now + lifetimeMs }),
  };
  return {
    source,
    calls: () => calls,
    deadlines,
    answer: (v: "ok" | "hang" | Error) => {
      next = v;
    },
  };
}

describe("TokenCache off the happy path", () => {
  test("every call gets the deadline; a source that never answers fails its callers at the deadline and frees the slot", async () => {
    const { source, calls, deadlines, answer } = scriptedSource({ now: Date.now() });
    const failed: string[] = [];
    const cache = new TokenCache(source, {
      deadlineMs: 300,
      events: { failed: (_k, e, _s, type) => failed.push(`${type} ${(e as Error).message}`) },
    });
    answer("hang");
    const started = Date.now();
    const results = await Promise.allSettled([1, 2, 3].map(() => cache.accessToken(account, account.scopes)));
    expect(results.map((r) => r.status)).toEqual(["rejected", "rejected", "rejected"]);
    const reason = (results[0] as PromiseRejectedResult).reason as UpstreamError;
    expect(reason).toMatchObject({ code: "UPSTREAM_TIMEOUT", kind: "timeout", transient: true });
    expect(reason.message).toBe("the serviceAccountKey credentials did not answer within the 0.3 s deadline (timeout)");
    expect(Date.now() - started).toBeLessThan(300 + 1000);
    expect(calls()).toBe(1);
    expect(deadlines[0]).toBeGreaterThanOrEqual(started + 300);
    expect(deadlines[0]).toBeLessThanOrEqual(started + 400);
    expect(failed).toEqual([`serviceAccountKey ${reason.message}`]);
  });

  test("a transient failure is answered to identical requests for the failure TTL, then the source is asked again", async () => {
    const clock = { now: 1_000_000 };
    const { source, calls, answer } = scriptedSource(clock);
    const cache = new TokenCache(source, { now: () => clock.now });
    answer(upstreamError("refused", true));
    await expect(Promise.resolve(cache.accessToken(account, ["s"]))).rejects.toThrow("(refused)");
    answer("ok");
    clock.now += FAILURE_TTL_MS - 1;
    await expect(Promise.resolve(cache.accessToken(account, ["s"]))).rejects.toThrow("(refused)");
    expect(calls()).toBe(1);
    // Another scope set is another request.
    expect((await cache.accessToken(account, ["t"])).token).toBe("tok-2");
    clock.now += 1;
    expect((await cache.accessToken(account, ["s"])).token).toBe("tok-3");
  });

  test("Retry-After lengthens the failure TTL, up to its cap", async () => {
    const clock = { now: 1_000_000 };
    const { source, calls, answer } = scriptedSource(clock);
    const cache = new TokenCache(source, { now: () => clock.now });
    answer(upstreamError("http", true, { retryAfterMs: 10 * 60_000 }));
    await Promise.resolve(cache.accessToken(account, ["s"])).catch(() => {});
    answer("ok");
    clock.now += FAILURE_TTL_MAX_MS - 1;
    await expect(Promise.resolve(cache.accessToken(account, ["s"]))).rejects.toThrow();
    clock.now += 1;
    expect((await cache.accessToken(account, ["s"])).token).toBe("tok-2");
    expect(calls()).toBe(2);
  });

  test("a permanent failure is not kept: the next request asks again", async () => {
    const clock = { now: 1_000_000 };
    const { source, calls, answer } = scriptedSource(clock);
    const cache = new TokenCache(source, { now: () => clock.now });
    answer(upstreamError("http", false));
    await Promise.resolve(cache.accessToken(account, ["s"])).catch(() => {});
    answer("ok");
    expect((await cache.accessToken(account, ["s"])).token).toBe("tok-2");
    expect(calls()).toBe(2);
  });

  test("past the floor, a valid token is served while refreshes fail (one try per failure TTL); the first success replaces it", async () => {
    const clock = { now: 0 };
    const { source, calls, answer } = scriptedSource(clock);
    const cache = new TokenCache(source, { now: () => clock.now });
    expect((await cache.accessToken(account, account.scopes)).token).toBe("tok-1");
    clock.now = 3600_000 - 200_000; // 200 s left: below the 240 s floor
    answer(upstreamError("timeout", true));
    expect((await cache.accessToken(account, account.scopes)).token).toBe("tok-1");
    expect(calls()).toBe(2);
    // Within the failure TTL: no new call, the cached token at once.
    clock.now += 1000;
    expect(cache.accessToken(account, account.scopes)).toBeInstanceOf(CachedToken);
    expect(calls()).toBe(2);
    // Recovered, after the TTL: the refresh is made and its token replaces the old one.
    answer("ok");
    clock.now += FAILURE_TTL_MS;
    expect((await cache.accessToken(account, account.scopes)).token).toBe("tok-3");
    expect((cache.accessToken(account, account.scopes) as CachedToken).token).toBe("tok-3");
  });

  test("inside the refresh window, failed background refreshes are retried once per failure TTL, not per request", async () => {
    const clock = { now: 0 };
    const { source, calls, answer } = scriptedSource(clock);
    const refreshFailed: unknown[] = [];
    const cache = new TokenCache(source, { now: () => clock.now, events: { refreshFailed: (_k, e) => refreshFailed.push(e) } });
    await cache.accessToken(account, account.scopes);
    clock.now = 3600_000 - 280_000;
    answer(upstreamError("http", false));
    for (let i = 0; i < 20; i++) {
      expect((cache.accessToken(account, account.scopes) as CachedToken).token).toBe("tok-1");
      await Bun.sleep(0);
    }
    expect(calls()).toBe(2);
    expect(refreshFailed).toHaveLength(1);
  });

  test("a token that is no longer valid is never served: the failure is", async () => {
    const clock = { now: 0 };
    const { source, answer } = scriptedSource(clock, 60_000);
    const cache = new TokenCache(source, { now: () => clock.now });
    await cache.accessToken(account, account.scopes);
    clock.now = 59_500; // half a second left
    answer(upstreamError("refused", true));
    await expect(Promise.resolve(cache.accessToken(account, account.scopes))).rejects.toThrow("(refused)");
  });
});

describe("TokenCache bounds", () => {
  const id = (audience: string) => ({ account, audience, format: "standard" as const, licenses: false, instance });

  test("bytes: long audiences fill the byte budget, not memory; the held bytes stay under it", async () => {
    const { source } = scriptedSource({ now: Date.now() });
    const cache = new TokenCache(source, { maxBytes: 1_000_000 });
    for (let i = 0; i < 500; i++) await cache.idToken(id(`https://${"a".repeat(2000)}/${i}`));
    expect(cache.bytes).toBeLessThanOrEqual(1_000_000);
    expect(cache.size).toBeLessThan(500);
    expect(cache.size).toBeGreaterThan(50); // about 12 KB each: the key twice over (UTF-16), the token four times (and its body)
  });

  test("CLOCK: an entry in use survives a flood of one-off entries", async () => {
    const { source } = scriptedSource({ now: Date.now() });
    const cache = new TokenCache(source, { maxEntries: 100 });
    const hot = (await cache.idToken(id("https://hot.example"))).token;
    for (let i = 0; i < 1000; i++) {
      await cache.idToken(id(`https://cold-${i}.example`));
      if (i % 50 === 0) expect(cache.idToken(id("https://hot.example"))).toBeInstanceOf(CachedToken);
    }
    expect(cache.size).toBeLessThanOrEqual(100);
    expect((cache.idToken(id("https://hot.example")) as CachedToken).token).toBe(hot);
  });

  test("clear(kind) gives back the bytes", async () => {
    const { source } = scriptedSource({ now: Date.now() });
    const cache = new TokenCache(source);
    await cache.idToken(id("https://a.example"));
    await cache.accessToken(account, account.scopes);
    const both = cache.bytes;
    cache.clear("identity");
    expect(cache.bytes).toBeLessThan(both);
    expect(cache.size).toBe(1);
    cache.clear();
    expect(cache.bytes).toBe(0);
  });
});

describe("single-flight through HTTP, counted at the fake token endpoint", () => {
  let fake: FakeGoogle;
  let s: Started;
  beforeAll(async () => {
    fake = await startFakeGoogle();
    const key = await makeServiceAccountKey(fake, { email: account.email, projectId: "example-project" });
    s = await startServer({
      credentials: new ServiceAccountKeySource(await readServiceAccountKey(key.path)),
      env: { GOOGLE_SERVICE_ACCOUNT: account.email },
    });
  });
  afterAll(async () => {
    await s.stop();
    await fake.stop();
  });

  test("1000 concurrent cold token requests make exactly one upstream call", { timeout: 30_000 }, async () => {
    fake.reset();
    fake.delay(300);
    const responses = await concurrentGets(s.server.port, `${V1}instance/service-accounts/default/token`, 1000);
    const bodies = responses.map((r) => JSON.parse(r.body));
    expect(new Set(responses.map((r) => r.status))).toEqual(new Set([200]));
    expect(new Set(bodies.map((b) => b.access_token)).size).toBe(1);
    expect(fake.isIssuedAccessToken(bodies[0].access_token)).toBe(true);
    expect(fake.calls.token).toBe(1);
  });

  test("1000 concurrent cold identity requests for one audience make one upstream call", { timeout: 30_000 }, async () => {
    fake.reset();
    fake.delay(300);
    const url = `${V1}instance/service-accounts/default/identity?audience=https://single-flight.example.com`;
    const responses = await concurrentGets(s.server.port, url, 1000);
    expect(new Set(responses.map((r) => r.status))).toEqual(new Set([200]));
    const tokens = new Set(responses.map((r) => r.body));
    expect(tokens.size).toBe(1);
    expect(fake.calls.token).toBe(1);
  });

  test("a refused exchange (permanent) is a clear 500 and is not cached", async () => {
    fake.reset();
    // A 400 is not retried by the library: exactly one refused exchange.
    fake.failNext("token", 1, 400);
    const url = `${V1}instance/service-accounts/default/token?scopes=https://www.googleapis.com/auth/failure-test`;
    const bad = await s.get(url);
    expect(bad.status).toBe(500);
    expect(bad.headers.get("metadata-flavor")).toBe("Google");
    const text = await bad.text();
    expect(text).toStartWith(`Failed to obtain an access token for ${account.email}:`);
    expect(text).not.toContain("eyJ");
    const good = await s.get(url);
    expect(good.status).toBe(200);
    expect(fake.calls.token).toBe(2);
  });
});
