/** The token cache: single-flight, refresh ahead of expiry, failures never cached. */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { TokenCache, CachedToken } from "../../src/credentials/token-cache.ts";
import type { CredentialSource, IssuedToken } from "../../src/credentials/source.ts";
import { readServiceAccountKey, ServiceAccountKeySource } from "../../src/credentials/service-account.ts";
import { makeServiceAccountKey, startFakeGoogle, type FakeGoogle } from "../fakes/google.ts";
import { concurrentGets, startServer, V1, type Started } from "../helpers/server.ts";

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
    const instance = {
      projectId: "",
      projectNumber: "",
      instanceId: "",
      instanceName: "",
      zone: "",
      instanceCreationTimestamp: 0,
      licenseIds: [],
    };
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

  test("an upstream failure is a clear 500 and is not cached", async () => {
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
