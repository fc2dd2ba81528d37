/**
 * Deadlines and recovery, end to end: a MetadataServer whose credentials reach the fake Google through a front that
 * misbehaves on command (refuse, hang, headers then a stalled body, reset) or whose fake answers 429 with
 * Retry-After, 500, 503, malformed JSON or a wrongly signed ID token. Each fault must give the client a one-line 5xx
 * naming the upstream and the kind within the deadline plus a second, be logged once without secrets and counted,
 * release the single-flight slot, and clear by itself once the upstream recovers. The figures are printed.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { readServiceAccountKey, ServiceAccountKeySource } from "../../src/credentials/service-account.ts";
import { keySigner } from "../../src/credentials/service-account.ts";
import { ImpersonatedSource } from "../../src/credentials/impersonated.ts";
import { FederatedSource } from "../../src/credentials/federated.ts";
import { TpmSource } from "../../src/credentials/tpm.ts";
import { readAdcFile } from "../../src/credentials/adc.ts";
import { FAILURE_TTL_MS } from "../../src/credentials/token-cache.ts";
import { createLogger } from "../../src/log.ts";
import type { MetadataServerOptions } from "../../src/index.ts";
import { type FaultyFront, startFaultyFront } from "../fakes/faults.ts";
import { type FakeGoogle, makeServiceAccountKey, makeExternalAccount, type ServiceAccountKey, startFakeGoogle } from "../fakes/google.ts";
import { concurrentGets, startServer, type Started, V1 } from "../helpers/server.ts";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const DEADLINE = 2000;
const EMAIL = "123456789012-compute@developer.gserviceaccount.com"; // the bundled config's default account
const TOKEN = `${V1}instance/service-accounts/default/token`;
const IDENTITY = `${V1}instance/service-accounts/default/identity`;
const dir = mkdtempSync(join(tmpdir(), "faults-"));

let fake: FakeGoogle;
let front: FaultyFront;
let key: ServiceAccountKey;

beforeAll(async () => {
  fake = await startFakeGoogle();
  front = await startFaultyFront(fake.url);
  key = await makeServiceAccountKey(fake, { email: EMAIL, projectId: "example-project" });
});
afterAll(async () => {
  await front.stop();
  await fake.stop();
  rmSync(dir, { recursive: true, force: true });
  console.log(`\nupstream faults (deadline ${DEADLINE} ms unless said, failure cache ${FAILURE_TTL_MS} ms):\n${figures.join("\n")}\n`);
});

interface Serving extends Started {
  lines: string[];
}

async function serve(options: MetadataServerOptions): Promise<Serving> {
  const lines: string[] = [];
  const s = await startServer({ log: createLogger("info", (l) => lines.push(l)), ...options });
  return Object.assign(s, { lines });
}

/** The key file's source, its token endpoint behind the front; ID tokens checked against the fake's keys. */
async function keyServer(upstreamTimeoutMs?: number): Promise<Serving> {
  const json = { ...(await readServiceAccountKey(key.path)), token_uri: `${front.url}/token` };
  return serve({
    credentials: new ServiceAccountKeySource(json, { idTokenKeysUrl: fake.jwksUrl }),
    serverConfig: { port: 0, metrics: { port: 0 } },
    ...(upstreamTimeoutMs ? { upstreamTimeoutMs } : {}),
  });
}

/** GET until 200, every 50 ms; the time it took. */
async function untilOk(s: Started, path: string, limitMs = 15_000): Promise<number> {
  const started = Date.now();
  for (;;) {
    const res = await s.get(path);
    await res.arrayBuffer();
    if (res.status === 200) return Date.now() - started;
    if (Date.now() - started > limitMs) throw new Error(`${path} did not recover within ${limitMs} ms (last ${res.status})`);
    await Bun.sleep(50);
  }
}

interface Fault {
  name: string;
  /** Break the upstream; `path` is the request that will fail. */
  start(): Promise<void> | void;
  heal(): Promise<void> | void;
  status: 500 | 503;
  /** What the one-line body says about the kind. */
  says: RegExp;
  logKind: string;
  identity?: boolean;
}

const FAULTS: Fault[] = [
  {
    name: "refuse",
    start: () => front.set("refuse"),
    heal: () => front.set("pass"),
    status: 503,
    says: /connection refused/,
    logKind: "refused",
  },
  {
    name: "hang",
    start: () => front.set("hang"),
    heal: () => front.set("pass"),
    status: 503,
    says: /timed out after 2\.\d s/,
    logKind: "timeout",
  },
  {
    name: "stall-body",
    start: () => front.set("stall-body"),
    heal: () => front.set("pass"),
    status: 503,
    says: /timed out after 2\.\d s/,
    logKind: "timeout",
  },
  {
    name: "reset",
    start: () => front.set("reset"),
    heal: () => front.set("pass"),
    status: 503,
    says: /connection reset/,
    logKind: "reset",
  },
  {
    name: "429 Retry-After: 1",
    start: () => fake.failNext("token", 1000, 429, { retryAfter: 1 }),
    heal: () => fake.reset(),
    status: 503,
    says: /: 429 invalid_request: Injected failure \(429\)/,
    logKind: "http",
  },
  {
    name: "500",
    start: () => fake.failNext("token", 1000, 500),
    heal: () => fake.reset(),
    status: 503,
    says: /: 500 internal_failure/,
    logKind: "http",
  },
  {
    name: "503",
    start: () => fake.failNext("token", 1000, 503),
    heal: () => fake.reset(),
    status: 503,
    says: /: 503 internal_failure/,
    logKind: "http",
  },
  {
    name: "malformed JSON",
    start: () => fake.failNext("token", 1000, "malformed"),
    heal: () => fake.reset(),
    status: 500,
    says: /answered 200 for an access token of .*, but not with a JSON object \(malformed answer/,
    logKind: "malformed",
  },
  {
    name: "ID token signed by the wrong key",
    start: () => fake.signWithWrongKey(true),
    heal: () => fake.signWithWrongKey(false),
    status: 500,
    says: /answered an ID token that does not verify with the keys at .* \(bad signature: the signature does not match key/,
    logKind: "signature",
    identity: true,
  },
];

const figures: string[] = [];

describe(`each fault at a ${DEADLINE / 1000} s deadline: a one-line 5xx in time, one log line, counted; then recovery`, () => {
  let s: Serving;
  beforeAll(async () => {
    s = await keyServer(DEADLINE);
  });
  afterAll(async () => {
    await s.stop();
    await front.set("pass");
    fake.reset();
  });

  for (const f of FAULTS) {
    test(f.name, async () => {
      const path = f.identity
        ? `${IDENTITY}?audience=https://fault-${encodeURIComponent(f.name)}.example`
        : `${TOKEN}?scopes=https://www.googleapis.com/auth/fault-${encodeURIComponent(f.name.replace(/\W+/g, "-"))}`;
      const before = s.lines.length;
      await f.start();
      const started = Date.now();
      // Ten requests at once share one upstream call: all get the same answer in time, and one log line is written.
      const answers = await concurrentGets(s.server.port, path, 10);
      const toFailure = Date.now() - started;
      expect(answers.map((a) => a.status)).toEqual(Array(10).fill(f.status));
      expect(toFailure).toBeLessThanOrEqual(DEADLINE + 1000);
      const body = answers[0]!.body;
      expect(body).toEndWith("\n");
      expect(body.trimEnd().split("\n")).toHaveLength(1);
      expect(body).toStartWith(`Failed to obtain ${f.identity ? "an identity token" : "an access token"} for ${EMAIL}: `);
      expect(body).toContain(f.identity ? "token endpoint" : `the token endpoint ${front.url}/token`);
      expect(body).toMatch(f.says);
      expect(body).not.toMatch(/eyJ|ya29\./);

      const logged = s.lines.slice(before).filter((l) => / ERROR /.test(l));
      expect(logged).toHaveLength(1);
      expect(logged[0]).toContain(f.identity ? "an identity token failed" : "an access token failed");
      expect(logged[0]).toContain(`kind=${f.logKind}`);
      expect(logged[0]).toMatch(/ host=127\.0\.0\.1:\d+ /);
      expect(logged[0]).toMatch(/ seconds=\d/);
      expect(logged[0]).not.toMatch(/eyJ|ya29\.|PRIVATE KEY/);

      // Right away, the same request: a transient failure is answered from the failure cache, without a new call.
      const calls = fake.calls.token;
      const again = await s.get(path);
      expect(again.status).toBe(f.status);
      await again.text();
      if (f.status === 503) expect(fake.calls.token).toBe(calls);

      await f.heal();
      const recovery = await untilOk(s, path);
      expect(recovery).toBeLessThanOrEqual((f.status === 503 ? FAILURE_TTL_MS : 0) + 2000);
      figures.push(
        `  ${f.name.padEnd(34)} ${String(f.status)} after ${String(toFailure).padStart(5)} ms; recovered ${String(recovery).padStart(5)} ms after the fix`,
      );
    });
  }

  test("the failures were counted by source and kind", async () => {
    const text = await (await fetch(`${s.server.metricsUrl}/metrics`)).text();
    for (const kind of ["refused", "timeout", "reset", "http", "malformed", "signature"]) {
      expect(text).toMatch(new RegExp(`^metadata_upstream_failures_total\\{source="serviceAccountKey",kind="${kind}"\\} [1-9]`, "m"));
    }
  });
});

describe("a cached token keeps being served while its refreshes fail", () => {
  test("8 s tokens: inside the refresh window and past its floor, the cached token is answered at once while the endpoint hangs", async () => {
    const short = await startFakeGoogle({ accessTokenLifetimeSeconds: 8 });
    const shortFront = await startFaultyFront(short.url);
    const k = await makeServiceAccountKey(short, { email: EMAIL, projectId: "example-project" });
    const json = { ...(await readServiceAccountKey(k.path)), token_uri: `${shortFront.url}/token` };
    const s = await serve({ credentials: new ServiceAccountKeySource(json), upstreamTimeoutMs: DEADLINE });
    try {
      const t0 = Date.now();
      const first = ((await (await s.get(TOKEN)).json()) as { access_token: string }).access_token;
      await shortFront.set("hang");
      // Refresh window (4 s to 6 s of 8): served at once, a refresh runs behind and times out at its deadline.
      await Bun.sleep(4200 - (Date.now() - t0));
      let started = Date.now();
      expect(((await (await s.get(TOKEN)).json()) as { access_token: string }).access_token).toBe(first);
      expect(Date.now() - started).toBeLessThan(500);
      // Past the floor (6 s), after the failed refresh: still the cached token, at once, while it is valid.
      await Bun.sleep(6300 - (Date.now() - t0));
      started = Date.now();
      expect(((await (await s.get(TOKEN)).json()) as { access_token: string }).access_token).toBe(first);
      expect(Date.now() - started).toBeLessThan(500);
      expect(s.lines.filter((l) => l.includes("an access token failed") && l.includes("kind=timeout"))).toHaveLength(1);
    } finally {
      await s.stop();
      await shortFront.stop();
      await short.stop();
    }
  });
});

describe("the default deadline (10 s) against Bun's idle timeout (~10 s)", () => {
  test("a hanging token endpoint: the client gets a 503 within 11 s, never a closed connection", { timeout: 30_000 }, async () => {
    const s = await keyServer();
    try {
      await front.set("hang");
      const started = Date.now();
      const [answer] = await concurrentGets(s.server.port, `${TOKEN}?scopes=https://www.googleapis.com/auth/default-deadline`, 1);
      const took = Date.now() - started;
      expect(answer!.status).toBe(503);
      expect(answer!.body).toMatch(/: timed out after (9|10)\.\d s/);
      expect(took).toBeGreaterThanOrEqual(9_000);
      expect(took).toBeLessThanOrEqual(11_000);
      figures.push(`  hang at the default 10 s deadline      503 after ${took} ms`);
      await front.set("pass");
      expect((await s.get(`${TOKEN}?scopes=https://www.googleapis.com/auth/default-deadline-2`)).status).toBe(200);
    } finally {
      await front.set("pass");
      await s.stop();
    }
  });
});

describe("a deadline past Bun's idle timeout", () => {
  test("14 s: the hanging request still gets its 503 (its connection outlives the idle timeout)", { timeout: 40_000 }, async () => {
    const s = await keyServer(14_000);
    try {
      await front.set("hang");
      const started = Date.now();
      const [answer] = await concurrentGets(s.server.port, `${TOKEN}?scopes=https://www.googleapis.com/auth/long-deadline`, 1);
      const took = Date.now() - started;
      expect(answer!.status).toBe(503);
      expect(answer!.body).toMatch(/: timed out after 1[34]\.\d s/);
      expect(took).toBeGreaterThanOrEqual(13_000);
      expect(took).toBeLessThanOrEqual(15_000);
      figures.push(`  hang at a 14 s deadline                 503 after ${took} ms`);
    } finally {
      await front.set("pass");
      await s.stop();
    }
  });
});

describe("the other upstreams have the same deadline", () => {
  test("-impersonate: IAM Credentials hangs", async () => {
    const source = new ImpersonatedSource({ adc: await readAdcFile(key.path), iamUrl: front.url, timeoutMs: DEADLINE });
    const s = await serve({ credentials: source, upstreamTimeoutMs: DEADLINE });
    try {
      await front.set("hang");
      const started = Date.now();
      const res = await s.get(TOKEN);
      expect(res.status).toBe(503);
      expect(await res.text()).toContain(
        `cannot reach IAM Credentials at ${front.url} for generateAccessToken of ${EMAIL}: timed out after 2.`,
      );
      expect(Date.now() - started).toBeLessThanOrEqual(DEADLINE + 1000);
    } finally {
      await front.set("pass");
      await s.stop();
    }
  });

  test("-federate: STS hangs", async () => {
    const file = await makeExternalAccount(fake, dir, { tokenUrl: `${front.url}/v1/token` });
    const source = await FederatedSource.open(await readAdcFile(file), { iamUrl: fake.url });
    const s = await serve({ credentials: source, upstreamTimeoutMs: DEADLINE });
    try {
      expect((await s.get(TOKEN)).status).toBe(200);
      await front.set("hang");
      const started = Date.now();
      const res = await s.get(`${TOKEN}?scopes=https://www.googleapis.com/auth/sts-hang`);
      expect(res.status).toBe(503);
      const text = await res.text();
      expect(text).toContain(`workload identity federation with ${file} failed: STS 127.0.0.1:${front.port}: timed out after 2.`);
      expect(Date.now() - started).toBeLessThanOrEqual(DEADLINE + 1000);
    } finally {
      await front.set("pass");
      await s.stop();
    }
  });

  test("-tpm -useOauthToken: the JWT-bearer exchange hangs (a software signer stands in for the TPM)", async () => {
    const signer = { sign: keySigner(key.privateKeyPem), fingerprint: "f", close() {} };
    const source = new TpmSource({ signer, email: EMAIL, useOauthToken: true, tokenUrl: `${front.url}/token` });
    const s = await serve({ credentials: source, upstreamTimeoutMs: DEADLINE });
    try {
      await front.set("hang");
      const started = Date.now();
      const res = await s.get(TOKEN);
      expect(res.status).toBe(503);
      expect(await res.text()).toContain(
        `cannot reach the token endpoint ${front.url}/token for an access token of ${EMAIL}: timed out after 2.`,
      );
      expect(Date.now() - started).toBeLessThanOrEqual(DEADLINE + 1000);
      await front.set("pass");
      const recovery = await untilOk(s, TOKEN);
      figures.push(
        `  -tpm -useOauthToken hang                503 after ${Date.now() - started - recovery} ms; recovered ${recovery} ms after the fix`,
      );
    } finally {
      await front.set("pass");
      await s.stop();
    }
  });
});
