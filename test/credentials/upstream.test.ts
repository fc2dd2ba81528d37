/**
 * The shared upstream helper against local fakes that misbehave on command: what is retried and what is not,
 * Retry-After, the deadline, how each failure is named, and that no secret of the request reaches a message.
 */
import { afterAll, beforeAll, beforeEach, describe, expect, test } from "bun:test";
import { UpstreamError } from "../../src/errors.ts";
import { refreshGrant } from "../../src/credentials/oauth.ts";
import { callUpstream, hostOf, pathSegment, retryAfter } from "../../src/credentials/upstream.ts";
import { type FaultyFront, startFaultyFront } from "../fakes/faults.ts";
import { type FakeGoogle, makeAuthorizedUser, startFakeGoogle } from "../fakes/google.ts";

let fake: FakeGoogle;
let front: FaultyFront;
let user: { clientId: string; clientSecret: string; refreshToken: string };

beforeAll(async () => {
  fake = await startFakeGoogle();
  front = await startFaultyFront(fake.url);
  const u = await makeAuthorizedUser(fake);
  user = { clientId: u.json.client_id, clientSecret: u.json.client_secret, refreshToken: u.json.refresh_token };
});
afterAll(async () => {
  await front.stop();
  await fake.stop();
});
beforeEach(async () => {
  fake.reset();
  await front.set("pass");
});

/** A refresh grant through the front, with `ms` to run; resolves to the error (or undefined) and the time taken. */
async function grant(ms: number): Promise<{ error: UpstreamError | undefined; elapsed: number; body?: Record<string, unknown> }> {
  const started = Date.now();
  try {
    const body = await refreshGrant(user, {
      tokenUrl: `${front.url}/token`,
      deadline: Date.now() + ms,
      credential: "the refresh token",
      what: "an access token",
      email: user.clientId,
    });
    return { error: undefined, elapsed: Date.now() - started, body };
  } catch (e) {
    expect(e).toBeInstanceOf(UpstreamError);
    return { error: e as UpstreamError, elapsed: Date.now() - started };
  }
}

describe("helpers", () => {
  test("hostOf keeps host and port only; pathSegment encodes all but @", () => {
    expect(hostOf("https://user:pw@iamcredentials.googleapis.com:443/v1/x?y")).toBe("iamcredentials.googleapis.com:443");
    expect(hostOf("http://127.0.0.1:8080")).toBe("127.0.0.1:8080");
    expect(pathSegment("app@p.iam.gserviceaccount.com")).toBe("app@p.iam.gserviceaccount.com");
    expect(pathSegment("x/../../v2/evil?a#b:c%")).toBe("x%2F..%2F..%2Fv2%2Fevil%3Fa%23b%3Ac%25");
  });

  test("Retry-After: delta seconds and HTTP dates", () => {
    expect(retryAfter(new Headers({ "retry-after": "7" }))).toBe(7000);
    const now = Date.parse("2030-01-01T00:00:00Z");
    expect(retryAfter(new Headers({ "retry-after": "Tue, 01 Jan 2030 00:00:05 GMT" }), now)).toBe(5000);
    expect(retryAfter(new Headers({ "retry-after": "soon" }))).toBeUndefined();
    expect(retryAfter(new Headers())).toBeUndefined();
  });
});

describe("transient failures are retried inside the deadline", () => {
  test("500 then 503 then success: one answer, three attempts", async () => {
    fake.failNext("token", 1, 500);
    fake.failNext("token", 1, 503);
    const r = await grant(5000);
    expect(r.error).toBeUndefined();
    expect(typeof r.body!.access_token).toBe("string");
    expect(fake.calls.token).toBe(3);
  });

  test("429 with Retry-After: 1 is honoured, then success", async () => {
    fake.failNext("token", 1, 429, { retryAfter: 1 });
    const r = await grant(5000);
    expect(r.error).toBeUndefined();
    expect(r.elapsed).toBeGreaterThanOrEqual(950);
    expect(fake.calls.token).toBe(2);
  });

  test("a Retry-After past the deadline fails at once, saying so; the wait is kept for the cache", async () => {
    fake.failNext("token", 1, 429, { retryAfter: 30 });
    const r = await grant(3000);
    expect(r.elapsed).toBeLessThan(1000);
    expect(fake.calls.token).toBe(1);
    expect(r.error).toMatchObject({ kind: "http", status: 429, transient: true, retryAfterMs: 30_000, attempts: 1 });
    expect(r.error!.message).toContain("it asked to retry after 30 s, past the 3.0 s deadline");
  });

  test("503 until the deadline: the last status, the attempts folded, within the deadline", async () => {
    fake.failNext("token", 100, 503);
    const r = await grant(1500);
    expect(r.error).toMatchObject({ kind: "http", status: 503, transient: true, upstream: "token endpoint" });
    expect(r.error!.attempts).toBeGreaterThan(2);
    expect(r.error!.message).toMatch(
      /: 503 internal_failure: Injected failure \(503\)\. \(\d+ attempts in \d\.\d s: 503 internal_failure ×\d+\)$/,
    );
    expect(r.elapsed).toBeLessThanOrEqual(1500 + 250);
  });
});

describe("permanent failures are not retried", () => {
  test("a 4xx: one attempt, the endpoint's error, not transient", async () => {
    fake.failNext("token", 1, 403);
    const r = await grant(5000);
    expect(fake.calls.token).toBe(1);
    expect(r.error).toMatchObject({ kind: "http", status: 403, transient: false, attempts: 1, code: "TOKEN_EXCHANGE_FAILED" });
    expect(r.error!.message).toBe(
      `the token endpoint ${front.url}/token refused the refresh token for an access token of ${user.clientId}: 403 invalid_request: Injected failure (403).`,
    );
  });

  test("malformed JSON: one attempt, kind malformed", async () => {
    fake.failNext("token", 1, "malformed");
    const r = await grant(5000);
    expect(fake.calls.token).toBe(1);
    expect(r.error).toMatchObject({ kind: "malformed", status: 200, transient: false });
    expect(r.error!.message).toContain("answered 200 for an access token");
    expect(r.error!.message).toContain("but not with a JSON object (malformed answer:");
    expect(r.error!.message).not.toContain("ya29.");
  });

  test("an echoed secret is cut out of the excerpt", async () => {
    const echo = Bun.serve({
      hostname: "127.0.0.1",
      port: 0,
      fetch: async (req) => new Response(`<html>no: ${new URLSearchParams(await req.text()).get("refresh_token")}</html>`, { status: 418 }),
    });
    try {
      const e = (await refreshGrant(user, {
        tokenUrl: `http://127.0.0.1:${echo.port}/token`,
        deadline: Date.now() + 3000,
        credential: "the refresh token",
        what: "an access token",
        email: "u",
      }).catch((x: unknown) => x)) as UpstreamError;
      expect(e.message).toContain("418 <html>no: [refresh token]</html>");
      expect(e.message).not.toContain(user.refreshToken);
    } finally {
      echo.stop(true);
    }
  });
});

describe("transport faults", () => {
  test("refused: retried until the deadline, named", async () => {
    await front.set("refuse");
    const r = await grant(1200);
    expect(r.error).toMatchObject({
      kind: "refused",
      transient: true,
      code: "TOKEN_ENDPOINT_UNREACHABLE",
      host: `127.0.0.1:${front.port}`,
    });
    expect(r.error!.attempts).toBeGreaterThan(1);
    expect(r.error!.message).toStartWith(
      `cannot reach the token endpoint ${front.url}/token for an access token of ${user.clientId}: connection refused (`,
    );
    expect(r.elapsed).toBeLessThanOrEqual(1200 + 250);
  });

  test("reset: named, retried", async () => {
    await front.set("reset");
    const r = await grant(1200);
    expect(r.error).toMatchObject({ kind: "reset", transient: true });
    expect(r.error!.message).toContain("connection reset");
  });

  for (const fault of ["hang", "stall-body"] as const) {
    test(`${fault}: a timeout at the deadline, one attempt per half of what is left (at least 2 s)`, async () => {
      await front.set(fault);
      const r = await grant(2500);
      expect(r.error).toMatchObject({ kind: "timeout", transient: true });
      expect(r.error!.message).toMatch(/: timed out after 2\.\d s/);
      expect(r.elapsed).toBeGreaterThanOrEqual(2400);
      expect(r.elapsed).toBeLessThanOrEqual(2500 + 250);
    });
  }

  test("then recovered: the same call succeeds", async () => {
    await front.set("hang");
    await grant(300);
    await front.set("pass");
    const r = await grant(3000);
    expect(r.error).toBeUndefined();
  });
});

describe("callUpstream directly", () => {
  test("GET, JSON object required", async () => {
    const { json } = await callUpstream({
      upstream: "keys",
      url: fake.jwksUrl,
      deadline: Date.now() + 2000,
      phrase: (_f, reason) => ["IAM_BAD_ANSWER", reason],
    });
    expect(Array.isArray(json.keys)).toBe(true);
  });
});
