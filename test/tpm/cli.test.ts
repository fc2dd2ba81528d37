/**
 * `-tpm` end to end: the CLI (and the compiled single executable) started against a swtpm holding keys imported
 * by tpm2-tools, tokens fetched over HTTP and checked with the key's public half and the fake Google endpoint.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createRemoteJWKSet, jwtVerify } from "jose";
import { parsePcrs } from "../../src/cli/tpm.ts";
import { parseFlags } from "../../src/cli/flags.ts";
import { startFakeGoogle, type FakeGoogle } from "../fakes/google.ts";
import { requireTpmTools, startSwtpm, type Swtpm } from "../helpers/swtpm.ts";
import { Tpm2Tools, type GeneratedKey } from "../helpers/tpm2-tools.ts";
import { compile } from "../../scripts/build.ts";
import { runCliToExit, serveCli } from "../helpers/cli.ts";

const ROOT = join(import.meta.dir, "../..");
const CLI = join(ROOT, "src/cli.ts");
const EMAIL = "123456789012-compute@developer.gserviceaccount.com"; // the bundled config's default account
const HANDLE = "0x81008001";
const PCR = 23;
const TOKEN = "/computeMetadata/v1/instance/service-accounts/default/token";
const CLOUD_PLATFORM = "https://www.googleapis.com/auth/cloud-platform";
const dir = mkdtempSync(join(tmpdir(), "gce-tpm-cli-"));

let tpm: Swtpm;
let tools: Tpm2Tools;
let key: GeneratedKey;
let fake: FakeGoogle;
let pwKeyfile: string;
let pcrKeyfile: string;
let ekKeyfile: string;
let ekName: string;

beforeAll(async () => {
  requireTpmTools();
  [tpm, fake] = await Promise.all([startSwtpm(), startFakeGoogle()]);
  tools = await Tpm2Tools.on(tpm);
  tools.setLockout(1000); // wrong passwords below are on purpose
  key = await tools.generateRsaKey("cli");
  fake.registerServiceAccount(EMAIL, key.publicKey);
  await tools.persistKey(key, Number(HANDLE));
  pwKeyfile = await tools.keyfile(key, "cli-pw", { keyPass: "s3cret" });
  tools.run("tpm2_pcrreset", String(PCR));
  pcrKeyfile = await tools.keyfile(key, "cli-pcr", { policy: tools.pcrPolicy([PCR]), attributes: "sign|decrypt" });
  ekKeyfile = tools.ekKeyfile(key, "cli-ek");
  ekName = tools.createEk("ek2.ctx").nameHex;
}, 120_000);

afterAll(async () => {
  await Promise.all([tpm?.stop(), fake?.stop()]);
  rmSync(dir, { recursive: true, force: true });
});

type Command = string[];
const SOURCE: Command = [process.execPath, CLI];

function tpmArgs(...extra: string[]): string[] {
  return ["-tpm", "-tpm-path", tpm.path, "-tokenURL", fake.tokenUrl, ...extra];
}

/** Run to completion (for start-ups that must fail). */
const run = (args: string[], cmd: Command = SOURCE) =>
  runCliToExit(["-port", ":0", ...args], { command: cmd, cwd: dir, env: { HOME: dir } });

/** Start a server; resolves once it logs its URL. */
const serve = (args: string[], cmd: Command = SOURCE) => serveCli(args, { command: cmd, cwd: dir, env: { HOME: dir } });

async function selfSigned(token: string, scope = CLOUD_PLATFORM): Promise<void> {
  const { payload, protectedHeader } = await jwtVerify(token, key.publicKey, { algorithms: ["RS256"] });
  expect(protectedHeader).toEqual({ alg: "RS256", typ: "JWT" });
  expect(payload).toMatchObject({ iss: EMAIL, sub: EMAIL, scope });
  expect(payload.exp! - payload.iat!).toBe(3600);
}

describe("-tpm through the CLI", () => {
  test("persistent handle: self-signed access token; ID token from the token endpoint; clean shutdown leaves nothing loaded", async () => {
    fake.reset();
    const s = await serve(tpmArgs("-persistentHandle", HANDLE));
    try {
      expect(s.log()).toContain("using a TPM key for credentials");
      expect(s.log()).toContain('tokens="self-signed JWT access tokens"');
      const res = await s.get(TOKEN);
      expect(res.status).toBe(200);
      const tok = (await res.json()) as { access_token: string; expires_in: number };
      await selfSigned(tok.access_token);
      expect(tok.expires_in).toBeGreaterThan(3590);
      expect(fake.calls.token).toBe(0);

      const id = await s.get("/computeMetadata/v1/instance/service-accounts/default/identity?audience=https://svc.example");
      expect(id.status).toBe(200);
      const { payload } = await jwtVerify(await id.text(), createRemoteJWKSet(new URL(fake.jwksUrl)), { audience: "https://svc.example" });
      expect(payload.email).toBe(EMAIL);
      expect(s.log()).not.toContain(tok.access_token);
    } finally {
      expect(await s.stop()).toBe(0);
    }
    expect(tools.transientHandles()).toEqual([]);
    expect(tools.loadedSessions()).toEqual([]);
  });

  test("-useOauthToken: the fake endpoint accepts the TPM-signed assertion; its access token is served", async () => {
    fake.reset();
    const s = await serve(tpmArgs("-persistentHandle", HANDLE, "-useOauthToken"));
    try {
      const tok = (await (await s.get(TOKEN)).json()) as { access_token: string };
      expect(fake.isIssuedAccessToken(tok.access_token)).toBe(true);
      expect(fake.calls.token).toBe(1);
      expect(fake.lastAssertion!.payload).toMatchObject({ iss: EMAIL, aud: fake.tokenUrl, scope: CLOUD_PLATFORM });
      await s.get(TOKEN);
      expect(fake.calls.token).toBe(1);
    } finally {
      await s.stop();
    }
  });

  test("TSS2 key file with -keyPass; key file under the EK with -useEKParent; -tpm-session-encrypt-with-name with the right EK", async () => {
    for (const args of [
      ["-keyfile", pwKeyfile, "-keyPass", "s3cret"],
      ["-keyfile", ekKeyfile, "-useEKParent"],
      ["-persistentHandle", HANDLE, "-tpm-session-encrypt-with-name", ekName],
    ]) {
      const s = await serve(tpmArgs(...args));
      try {
        await selfSigned(((await (await s.get(TOKEN)).json()) as { access_token: string }).access_token);
      } finally {
        await s.stop();
      }
    }
  });

  test("PCR-bound key: serves; after the PCR is extended a refresh is a 500 saying the PCR values changed, and start-up fails with exit 1", async () => {
    tools.run("tpm2_pcrreset", String(PCR));
    const s = await serve(tpmArgs("-keyfile", pcrKeyfile, "-pcrs", String(PCR)));
    try {
      await selfSigned(((await (await s.get(TOKEN)).json()) as { access_token: string }).access_token);
      tools.run("tpm2_pcrextend", `${PCR}:sha256=${"ef".repeat(32)}`);
      const res = await s.get(`${TOKEN}?scopes=https://www.googleapis.com/auth/bigquery`);
      expect(res.status).toBe(500);
      const text = await res.text();
      expect(text).toContain("TPM_RC_POLICY_FAIL");
      expect(text).toContain("the PCR values changed: PCRs sha256:23 now hash to");
    } finally {
      await s.stop();
    }
    const r = await run(tpmArgs("-keyfile", pcrKeyfile, "-pcrs", String(PCR)));
    expect(r.code).toBe(1);
    expect(r.errors).toHaveLength(1);
    expect(r.errors[0]).toContain("no policy the options allow gives it (tried PolicyPCR(sha256:23) with pcrs = ");
    expect(r.errors[0]).toContain("PCRs sha256:23 now hash to");
    tools.run("tpm2_pcrreset", String(PCR));
  });
});

describe("-tpm start-up refusals: exit 1, one line", () => {
  test("neither -persistentHandle nor -keyfile: the Go emulator's rule", async () => {
    const r = await run(["-tpm"]);
    expect(r.code).toBe(1);
    expect(r.errors).toHaveLength(1);
    expect(r.errors[0]).toContain("-tpm needs -persistentHandle (e.g. 0x81010002) or -keyfile");
  });

  test("a wrong EK name refuses start-up", async () => {
    const wrong = `000b${"00".repeat(32)}`;
    const r = await run(tpmArgs("-persistentHandle", HANDLE, "-tpm-session-encrypt-with-name", wrong));
    expect(r.code).toBe(1);
    expect(r.errors).toHaveLength(1);
    expect(r.errors[0]).toContain(`has RSA EK name ${ekName}, not ${wrong}`);
  });

  test("TPM errors carry the decoded response code", async () => {
    const cases: [string[], string][] = [
      [tpmArgs("-persistentHandle", "0x81008009"), "TPM_RC_HANDLE"],
      [tpmArgs("-keyfile", pwKeyfile, "-keyPass", "wrong"), "TPM_RC_AUTH_FAIL"],
      [["-tpm", "-tpm-path", "127.0.0.1:1", "-persistentHandle", HANDLE], "TSS2_TCTI_RC_"],
    ];
    for (const [args, rc] of cases) {
      const r = await run(args);
      expect(r.code).toBe(1);
      expect(r.errors).toHaveLength(1);
      expect(r.errors[0]).toContain(rc);
    }
  });

  test("a PCR-bound key without -pcrs: named as a key that takes no password alone, with the flag to pass", async () => {
    const r = await run(tpmArgs("-keyfile", pcrKeyfile));
    expect(r.code).toBe(1);
    expect(r.errors).toHaveLength(1);
    expect(r.errors[0]).toContain("takes no password alone (userWithAuth clear)");
    expect(r.errors[0]).toContain("if it is bound to PCRs, pass the pcrs it is bound to");
  });

  test("a bad -pcrs list or -tokenURL is named", async () => {
    for (const [value, text] of [
      ["7,x", '"x" is not a PCR index 0-23'],
      ["1,,2", "an empty entry"],
      ["24", '"24" is not a PCR index'],
    ]) {
      const r = await run(tpmArgs("-persistentHandle", HANDLE, "-pcrs", value!));
      expect(r.code).toBe(1);
      expect(r.errors).toHaveLength(1);
      expect(r.errors[0]).toContain(text!);
    }
    const r = await run(["-tpm", "-persistentHandle", HANDLE, "-tokenURL", "oauth2.googleapis.com/token"]);
    expect(r.code).toBe(1);
    expect(r.errors[0]).toContain('-tokenURL "oauth2.googleapis.com/token" is not an http(s) URL');
  });

  test("-useTPMmTLS says why it cannot work, and names the flags the Go emulator requires with it", async () => {
    const r = await run(tpmArgs("-persistentHandle", HANDLE, "-useTPMmTLS", "-poolID", "pool"));
    expect(r.code).toBe(1);
    expect(r.errors).toHaveLength(1);
    expect(r.errors[0]).toContain(
      "-useTPMmTLS is not supported: Bun's TLS (BoringSSL) takes a client private key only as PEM/DER in memory and has no hook to sign the handshake inside a TPM",
    );
    expect(r.errors[0]).toContain("it would also need -providerID, -pubCert, as in the Go emulator");
    const all = await run(tpmArgs("-persistentHandle", HANDLE, "-useTPMmTLS", "-poolID", "p", "-providerID", "q", "-pubCert", "c.pem"));
    expect(all.code).toBe(1);
    expect(all.errors[0]).not.toContain("would also need");
  });

  test("TPM flags without -tpm are ignored with a warning, as the Go emulator ignores them", async () => {
    const s = await serve(["-persistentHandle", HANDLE, "-useOauthToken"]);
    try {
      expect(s.log()).toContain("-persistentHandle, -useOauthToken ignored: they apply only with -tpm");
      expect(((await (await s.get(TOKEN)).json()) as { access_token: string }).access_token).toStartWith("ya29.");
    } finally {
      await s.stop();
    }
  });
});

test("parsePcrs: sorted, without repeats", () => {
  expect(parsePcrs("23,0, 7,7")).toEqual([0, 7, 23]);
  expect(() => parsePcrs("")).toThrow("an empty entry");
  expect(() => parsePcrs("-1")).toThrow("is not a PCR index");
  expect(parseFlags(["-tokenURL", "http://x/token"]).tokenURL).toBe("http://x/token");
});

describe("the compiled single executable", () => {
  let exe: string;
  beforeAll(async () => {
    // Built as `npm run build` builds it (bytecode, minified syntax), so the release flags are what is tested.
    exe = await compile({ outfile: join(dir, "gce_metadata_server"), quiet: true });
  }, 120_000);

  test("-tpm with a persistent handle serves TPM-signed tokens; -useOauthToken exchanges at the fake", async () => {
    const s = await serve(tpmArgs("-persistentHandle", HANDLE), [exe]);
    try {
      await selfSigned(((await (await s.get(TOKEN)).json()) as { access_token: string }).access_token);
    } finally {
      expect(await s.stop()).toBe(0);
    }
    fake.reset();
    const o = await serve(tpmArgs("-keyfile", pwKeyfile, "-keyPass", "s3cret", "-useOauthToken"), [exe]);
    try {
      const tok = (await (await o.get(TOKEN)).json()) as { access_token: string };
      expect(fake.isIssuedAccessToken(tok.access_token)).toBe(true);
    } finally {
      await o.stop();
    }
  }, 60_000);
});
