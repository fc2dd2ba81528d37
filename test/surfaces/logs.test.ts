/**
 * Logs: glog's `-v N` maps to levels, `-v 1` and up print one structured line per request (method, path, route
 * template, status, duration, bytes), and no log line or metric ever carries a token, an assertion or key material.
 * The server runs at `-v 2` with metrics on, in the emulated-issuer mode and the service-account-key mode (against
 * the fake Google), serves token and identity requests (and a failing one), and then all of its stderr and its
 * /metrics text are searched for every token it issued, every assertion it signed, `ya29.`, `eyJ`, and each line
 * of the private key's PEM body.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { createHash, createPrivateKey, createPublicKey } from "node:crypto";
import { createLogger, levelForVerbosity } from "../../src/log.ts";
import { makeServiceAccountKey, startFakeGoogle, type FakeGoogle, type ServiceAccountKey } from "../fakes/google.ts";
import { listeningUrl, metricsUrl, runCli, type CliProcess } from "../helpers/cli.ts";

const V1 = "/computeMetadata/v1/";
const H = { "Metadata-Flavor": "Google" };

interface Run {
  cli: CliProcess;
  stderr: string;
  metrics: string;
  /** Secrets that must appear nowhere: tokens served, assertions sent upstream, key lines. */
  secrets: string[];
}

/** Start the CLI, make token and identity requests, collect what it served, stop it. */
async function exercise(args: string[], extraSecrets: () => string[] = () => []): Promise<Run> {
  const cli = runCli(["-v", "2", "-port", ":0", "-metricsEnabled", "-metricsPort", "0", ...args]);
  const secrets: string[] = [];
  let metrics: string;
  try {
    const base = await listeningUrl(cli);
    const murl = await metricsUrl(cli);
    const acct = `${base}${V1}instance/service-accounts/default`;
    for (const q of ["", "?scopes=https://www.googleapis.com/auth/cloud-platform,openid", ""]) {
      const res = await fetch(`${acct}/token${q}`, { headers: H });
      expect(res.status).toBe(200);
      const body = (await res.json()) as { access_token: string };
      secrets.push(body.access_token);
    }
    for (const q of [
      "?audience=https://svc.example",
      "?audience=https://svc.example&format=full&licenses=TRUE",
      "?audience=https://other.example",
    ]) {
      const res = await fetch(`${acct}/identity${q}`, { headers: H });
      expect(res.status).toBe(200);
      secrets.push(await res.text());
    }
    metrics = await (await fetch(murl)).text();
  } finally {
    expect(await cli.stop()).toBe(0);
  }
  secrets.push(...extraSecrets());
  return { cli, stderr: cli.stderr(), metrics, secrets };
}

function expectNoSecrets(run: Run, keyPem?: string): void {
  const haystacks = { stderr: run.stderr, metrics: run.metrics };
  const needles = [...run.secrets, "ya29.", "eyJ"];
  if (keyPem) {
    for (const line of keyPem.split("\n")) if (line && !line.startsWith("-----")) needles.push(line);
  }
  for (const [where, text] of Object.entries(haystacks)) {
    for (const needle of needles) {
      if (text.includes(needle)) throw new Error(`${where} contains a secret (${needle.slice(0, 12)}…):\n${text}`);
    }
  }
}

describe("-v maps to levels", () => {
  test("0 info, 1 debug (per-request lines), 2 and up trace", () => {
    expect(levelForVerbosity(0)).toBe("info");
    expect(levelForVerbosity(1)).toBe("debug");
    expect(levelForVerbosity(2)).toBe("trace");
    expect(levelForVerbosity(10)).toBe("trace");
  });

  test("the logger redacts anything token-shaped in messages and fields", () => {
    const lines: string[] = [];
    const log = createLogger("trace", (l) => lines.push(l));
    log.error("failed with ya29.abc.def", { error: "bad assertion=eyJhbGciOi.eyJzdWIi.c2ln", body: '{"access_token":"secret-value"}' });
    expect(lines.join("")).not.toMatch(/ya29\.|eyJ|secret-value/);
  });
});

describe("per-request lines", () => {
  test("-v 0: none; -v 1: one per request with method, path, route, status, ms, bytes and no query", async () => {
    const quiet = runCli(["-port", ":0"]);
    try {
      const qbase = await listeningUrl(quiet);
      await fetch(`${qbase}${V1}instance/id`, { headers: H }).then((r) => r.text());
    } finally {
      await quiet.stop();
    }
    expect(quiet.stderr()).toContain("metadata server listening");
    expect(quiet.stderr()).not.toContain(" request ");

    const cli = runCli(["-v", "1", "-port", ":0"]);
    let id: string;
    try {
      const base = await listeningUrl(cli);
      id = await fetch(`${base}${V1}instance/id`, { headers: H }).then((r) => r.text());
      await fetch(`${base}${V1}instance/attributes/enable-oslogin?alt=text&secret-query=hunter2`, { headers: H }).then((r) => r.text());
      await fetch(`${base}/nowhere`).then((r) => r.text());
      await cli.waitFor(/path=\/nowhere/);
    } finally {
      await cli.stop();
    }
    const lines = cli
      .stderr()
      .split("\n")
      .filter((l) => l.includes(" DEBUG request "));
    expect(lines.length).toBe(3);
    expect(lines[0]).toMatch(
      new RegExp(`DEBUG request method=GET path=${V1}instance/id route=${V1}instance/id status=200 ms=[\\d.]+ bytes=${id.length}$`),
    );
    expect(lines[1]).toContain(`path=${V1}instance/attributes/enable-oslogin route="${V1}instance/attributes/{key}" status=200`);
    expect(lines[1]).not.toContain("hunter2");
    expect(lines[1]).not.toContain("alt=");
    expect(lines[2]).toContain('path=/nowhere route="{other}" status=404');
  });
});

describe("no token, assertion or key in any log line or metric", () => {
  let fake: FakeGoogle;
  let key: ServiceAccountKey;
  beforeAll(async () => {
    fake = await startFakeGoogle();
    key = await makeServiceAccountKey(fake);
  });
  afterAll(() => fake.stop());

  test("emulated issuer at -v 2", async () => {
    const run = await exercise([]);
    // The searches are meaningful: these are the token shapes the patterns look for, and requests were logged.
    expect(run.secrets.slice(0, 3).every((t) => t.startsWith("ya29."))).toBe(true);
    expect(run.secrets.slice(3).every((t) => t.startsWith("eyJ"))).toBe(true);
    expect(run.stderr).toMatch(/DEBUG request method=GET path=\S+\/token route="\S+\{account\}\/token" status=200/);
    expect(run.stderr).toMatch(/DEBUG request method=GET path=\S+\/identity route="\S+\{account\}\/identity" status=200/);
    expect(run.metrics).toContain('credential_type{type="emulated"} 1');
    expectNoSecrets(run);
  });

  test("service-account key at -v 2, including a refused token exchange", async () => {
    fake.reset();
    const run = await exercise(["-serviceAccountFile", key.path], () =>
      fake.requests.map((r) => r.body.assertion).filter((a): a is string => typeof a === "string"),
    );
    // Tokens came from the fake Google through the key (not the emulated issuer), with signed assertions.
    expect(run.secrets.slice(0, 3).every((t) => fake.isIssuedAccessToken(t))).toBe(true);
    expect(run.secrets.length).toBeGreaterThan(6); // tokens plus at least one assertion
    expect(run.stderr).toContain(`email=${key.json.client_email}`);
    expect(run.stderr).toMatch(/DEBUG request method=GET path=\S+\/identity route="\S+\{account\}\/identity" status=200/);
    expect(run.metrics).toContain('credential_type{type="serviceAccountKey"} 1');
    // The key's fingerprint is there as the Go emulator writes it: base64 SHA-256 of the public key DER.
    const spki = createPublicKey(createPrivateKey(key.privateKeyPem)).export({ type: "spki", format: "der" });
    expect(run.metrics).toContain(`service_account_hash{fingerprint="${createHash("sha256").update(spki).digest("base64")}"} 1`);
    expectNoSecrets(run, key.privateKeyPem);

    // A refused exchange puts the upstream error in a log line and a 500 body; still nothing secret.
    fake.reset();
    fake.failNext("token", 1, 400);
    const cli = runCli(["-v", "2", "-port", ":0", "-serviceAccountFile", key.path]);
    let res: Response;
    try {
      const base = await listeningUrl(cli);
      res = await fetch(`${base}${V1}instance/service-accounts/default/token`, { headers: H });
      expect(res.status).toBe(500);
      await cli.waitFor(/an access token failed/);
    } finally {
      await cli.stop();
    }
    const assertions = fake.requests.map((r) => r.body.assertion).filter((a): a is string => typeof a === "string");
    expect(assertions.length).toBe(1);
    expectNoSecrets({ cli, stderr: cli.stderr() + (await res.text()), metrics: "", secrets: assertions }, key.privateKeyPem);
  });
});
