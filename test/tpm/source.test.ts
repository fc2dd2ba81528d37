/**
 * The TPM credential source on a swtpm, with RSA keys made by openssl and imported by tpm2-tools, served through
 * a real MetadataServer (and so through its TokenCache), against the fake Google token endpoint.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { createRemoteJWKSet, decodeProtectedHeader, jwtVerify } from "jose";
import { signJwt } from "../../src/credentials/jwt.ts";
import { CLOUD_PLATFORM_SCOPE } from "../../src/credentials/google.ts";
import { TpmSource, type TpmSourceOptions } from "../../src/credentials/tpm.ts";
import { DEFAULT_CONFIG_TEXT } from "../../src/index.ts";
import { openTpmSigner, type TpmOptions, type TpmSigner } from "../../src/tpm/signer.ts";
import { startFakeGoogle, type FakeGoogle } from "../fakes/google.ts";
import { startServer, type Started } from "../helpers/server.ts";
import { requireTpmTools, startSwtpm, type Swtpm } from "../helpers/swtpm.ts";
import { Tpm2Tools, type GeneratedKey } from "../helpers/tpm2-tools.ts";

const EMAIL = "123456789012-compute@developer.gserviceaccount.com"; // the bundled config's default account
const OTHER = "other@example-project.iam.gserviceaccount.com";
const HANDLE = 0x81008001;
const PCR = 23;
const TOKEN = "/computeMetadata/v1/instance/service-accounts/default/token";
const IDENTITY = "/computeMetadata/v1/instance/service-accounts/default/identity";
const BIGQUERY = "https://www.googleapis.com/auth/bigquery";

let tpm: Swtpm;
let tools: Tpm2Tools;
let key: GeneratedKey;
let fake: FakeGoogle;
let keyfile: string;
let pwKeyfile: string;
let pcrKeyfile: string;

beforeAll(async () => {
  requireTpmTools();
  [tpm, fake] = await Promise.all([startSwtpm(), startFakeGoogle()]);
  tools = await Tpm2Tools.on(tpm);
  key = await tools.generateRsaKey("sa");
  fake.registerServiceAccount(EMAIL, key.publicKey);
  await tools.persistKey(key, HANDLE);
  keyfile = await tools.keyfile(key, "sa-file");
  pwKeyfile = await tools.keyfile(key, "sa-pw", { keyPass: "k3y-pass" });
  tools.run("tpm2_pcrreset", String(PCR));
  pcrKeyfile = await tools.keyfile(key, "sa-pcr", { policy: tools.pcrPolicy([PCR]), attributes: "sign|decrypt" });
}, 120_000);

afterAll(async () => {
  await Promise.all([tpm?.stop(), fake?.stop()]);
});

/** A signer that counts the signatures it makes. */
async function countingSigner(opts: Omit<TpmOptions, "path">): Promise<{ signer: TpmSigner; signs: () => number }> {
  const inner = await openTpmSigner({ ...opts, path: tpm.path });
  let n = 0;
  const signer: TpmSigner = {
    publicKey: inner.publicKey,
    fingerprint: inner.fingerprint,
    sign: (d) => {
      n++;
      return inner.sign(d);
    },
    close: () => inner.close(),
  };
  return { signer, signs: () => n };
}

/** A metadata server whose credentials are a TpmSource over the key `opts` names. */
async function serveTpm(
  opts: Omit<TpmOptions, "path">,
  source: Partial<TpmSourceOptions> = {},
  claims?: object,
): Promise<Started & { signs: () => number; source: TpmSource }> {
  const { signer, signs } = await countingSigner(opts);
  const tpmSource = new TpmSource({ signer, email: EMAIL, tokenUrl: fake.tokenUrl, ...source });
  const s = await startServer({ credentials: tpmSource, ...(claims ? { claims } : {}) });
  return Object.assign(s, { signs, source: tpmSource });
}

async function accessToken(s: Started, query = ""): Promise<{ access_token: string; expires_in: number; token_type: string }> {
  const res = await s.get(TOKEN + query);
  expect(res.status).toBe(200);
  return (await res.json()) as { access_token: string; expires_in: number; token_type: string };
}

/** Check a self-signed JWT access token with the software key's public half. */
async function checkSelfSigned(token: string, scopes: string[]): Promise<void> {
  const before = Math.floor(Date.now() / 1000);
  const { payload, protectedHeader } = await jwtVerify(token, key.publicKey, { algorithms: ["RS256"] });
  expect(protectedHeader).toEqual({ alg: "RS256", typ: "JWT" });
  // the Go emulator's field order: scope, iss, sub, exp, iat
  expect(Object.keys(payload)).toEqual(["scope", "iss", "sub", "exp", "iat"]);
  expect(payload.iss).toBe(EMAIL);
  expect(payload.sub).toBe(EMAIL);
  expect(payload.scope).toBe(scopes.join(" "));
  expect(payload.exp! - payload.iat!).toBe(3600);
  expect(Math.abs(payload.iat! - before)).toBeLessThanOrEqual(5);
}

describe("signJwt", () => {
  test("header and payload in order, base64url, signature from the given signer", async () => {
    const calls: string[] = [];
    const jwt = await signJwt(
      { b: 1, a: "x" },
      async (d) => {
        calls.push(new TextDecoder().decode(d));
        return new Uint8Array([0xfb, 0xff]);
      },
      { kid: "k1" },
    );
    const [h, p, s] = jwt.split(".");
    expect(Buffer.from(h!, "base64url").toString()).toBe('{"alg":"RS256","kid":"k1","typ":"JWT"}');
    expect(Buffer.from(p!, "base64url").toString()).toBe('{"b":1,"a":"x"}');
    expect(s).toBe("-_8");
    expect(calls).toEqual([`${h}.${p}`]);
    const noKid = await signJwt({}, async () => new Uint8Array());
    expect(Buffer.from(noKid.split(".")[0]!, "base64url").toString()).toBe('{"alg":"RS256","typ":"JWT"}');
  });
});

describe("self-signed JWT access tokens (the default)", () => {
  test("persistent handle: the token verifies with the imported key; iss, sub, scope, exp right; expires_in follows exp", async () => {
    const s = await serveTpm({ persistentHandle: HANDLE });
    try {
      const tok = await accessToken(s);
      expect(tok.token_type).toBe("Bearer");
      await checkSelfSigned(tok.access_token, [CLOUD_PLATFORM_SCOPE]);
      const { exp } = JSON.parse(Buffer.from(tok.access_token.split(".")[1]!, "base64url").toString());
      expect(Math.abs(tok.expires_in - (exp - Math.floor(Date.now() / 1000)))).toBeLessThanOrEqual(2);
      expect(tok.expires_in).toBeGreaterThan(3590);

      const scoped = await accessToken(s, `?scopes=${CLOUD_PLATFORM_SCOPE},${BIGQUERY}`);
      await checkSelfSigned(scoped.access_token, [CLOUD_PLATFORM_SCOPE, BIGQUERY]);
      expect(fake.calls.token).toBe(0); // no network at all
      expect(s.source.describe()).toEqual({ type: "tpm", email: EMAIL, fingerprint: expect.stringMatching(/^[0-9a-f]{64}$/) });
    } finally {
      await s.stop();
    }
  });

  test("TSS2 PEM key file, and one with a key password", async () => {
    for (const opts of [{ keyfile }, { keyfile: pwKeyfile, keyPass: "k3y-pass" }]) {
      const s = await serveTpm(opts);
      try {
        await checkSelfSigned((await accessToken(s)).access_token, [CLOUD_PLATFORM_SCOPE]);
      } finally {
        await s.stop();
      }
    }
  });

  test("kid in the header only when a key id is given", async () => {
    const s = await serveTpm({ persistentHandle: HANDLE }, { keyId: "0123abcd" });
    try {
      expect(decodeProtectedHeader((await accessToken(s)).access_token)).toEqual({ alg: "RS256", kid: "0123abcd", typ: "JWT" });
    } finally {
      await s.stop();
    }
  });

  test("repeated and concurrent requests sign once: the TokenCache is in front", async () => {
    const s = await serveTpm({ persistentHandle: HANDLE });
    try {
      const first = await Promise.all(Array.from({ length: 50 }, () => accessToken(s)));
      for (let i = 0; i < 20; i++) await accessToken(s);
      expect(new Set(first.map((t) => t.access_token)).size).toBe(1);
      expect(s.signs()).toBe(1);
      await accessToken(s, `?scopes=${BIGQUERY}`); // a new scope set is a new token
      await accessToken(s, `?scopes=${BIGQUERY}`);
      expect(s.signs()).toBe(2);
    } finally {
      await s.stop();
    }
  });

  test("another account in the config is refused with a clear 500; the default works", async () => {
    const doc = JSON.parse(DEFAULT_CONFIG_TEXT);
    doc.computeMetadata.v1.instance.serviceAccounts[OTHER] = { aliases: [OTHER], email: OTHER, scopes: [CLOUD_PLATFORM_SCOPE] };
    const s = await serveTpm({ persistentHandle: HANDLE }, {}, doc);
    try {
      const res = await s.get(`/computeMetadata/v1/instance/service-accounts/${OTHER}/token`);
      expect(res.status).toBe(500);
      expect(await res.text()).toContain(`the TPM key belongs to the default service account ${EMAIL}; ${OTHER} has no key here`);
      await checkSelfSigned((await accessToken(s)).access_token, [CLOUD_PLATFORM_SCOPE]);
      expect(s.signs()).toBe(1);
    } finally {
      await s.stop();
    }
  });
});

describe("-useOauthToken: the JWT-bearer exchange", () => {
  test("the fake token endpoint accepts the TPM-signed assertion; the access token is its own; one exchange per refresh", async () => {
    fake.reset();
    const s = await serveTpm({ persistentHandle: HANDLE }, { useOauthToken: true });
    try {
      const toks = await Promise.all(Array.from({ length: 20 }, () => accessToken(s)));
      const tok = toks[0]!;
      expect(new Set(toks.map((t) => t.access_token)).size).toBe(1);
      expect(fake.isIssuedAccessToken(tok.access_token)).toBe(true);
      expect(fake.tokenInfo(tok.access_token)).toMatchObject({ email: EMAIL, scopes: [CLOUD_PLATFORM_SCOPE] });
      expect(tok.expires_in).toBeGreaterThan(3590);
      expect(tok.expires_in).toBeLessThanOrEqual(3599);
      expect(fake.calls.token).toBe(1);
      expect(s.signs()).toBe(1);
      const a = fake.lastAssertion!;
      expect(a.header).toEqual({ alg: "RS256", typ: "JWT" });
      expect(a.payload).toMatchObject({ iss: EMAIL, scope: CLOUD_PLATFORM_SCOPE, aud: fake.tokenUrl });
      expect(a.payload.exp! - a.payload.iat!).toBe(3600);
      const body = fake.requests.find((r) => r.endpoint === "token")!.body;
      expect(body.grant_type).toBe("urn:ietf:params:oauth:grant-type:jwt-bearer");
      // the assertion really is signed by the key in the TPM
      await jwtVerify(body.assertion as string, key.publicKey, { audience: fake.tokenUrl });
    } finally {
      await s.stop();
    }
  });

  test("endpoint errors become a clear 500 with the endpoint's error, never the assertion", async () => {
    fake.reset();
    const s = await serveTpm({ persistentHandle: HANDLE }, { useOauthToken: true, email: OTHER });
    try {
      const doc = JSON.parse(DEFAULT_CONFIG_TEXT);
      doc.computeMetadata.v1.instance.serviceAccounts.default.email = OTHER;
      s.server.replaceClaims(doc);
      const res = await s.get(TOKEN);
      expect(res.status).toBe(500);
      const text = await res.text();
      expect(text).toContain(
        `the token endpoint ${fake.tokenUrl} refused the TPM-signed assertion for an access token of ${OTHER}: 400 invalid_grant: Invalid grant: account not found`,
      );
      expect(text).not.toContain("eyJ");

      fake.failNext("token", 1, 503);
      const again = await s.get(`${TOKEN}?scopes=${BIGQUERY}`);
      expect(again.status).toBe(500);
      expect(await again.text()).toMatch(/refused the TPM-signed assertion .*: 503 /);
    } finally {
      await s.stop();
    }
  });

  test("a non-JSON answer: status and a short excerpt, with the assertion cut out if echoed", async () => {
    const signer = { fingerprint: "f", sign: async () => new Uint8Array([1, 2, 3]), close() {} };
    const answers = [
      (form: URLSearchParams) => new Response(`<html>Bad Gateway for ${form.get("assertion")}</html>`, { status: 502 }),
      () => new Response("not json", { status: 200 }),
    ];
    for (const answer of answers) {
      const source = new TpmSource({
        signer,
        email: EMAIL,
        useOauthToken: true,
        fetch: async (_url, init) => answer(new URLSearchParams(String(init.body))),
      });
      const e = (await source.accessToken({ account: { email: EMAIL, scopes: [] }, scopes: [] }).catch((x: unknown) => x)) as Error;
      expect(e).toMatchObject({ code: "TOKEN_EXCHANGE_FAILED" });
      expect(e.message).not.toContain("eyJ");
      expect(e.message).toMatch(/502 <html>Bad Gateway for \[assertion\]<\/html>|answered 200 .* but not with a JSON object/);
    }
  });

  test("an unreachable endpoint is named", async () => {
    const { signer } = await countingSigner({ persistentHandle: HANDLE });
    const source = new TpmSource({ signer, email: EMAIL, useOauthToken: true, tokenUrl: "http://127.0.0.1:1/token" });
    try {
      const e = await source.accessToken({ account: { email: EMAIL, scopes: [] }, scopes: [] }).catch((x: unknown) => x);
      expect(e).toMatchObject({ code: "TOKEN_ENDPOINT_UNREACHABLE" });
      expect((e as Error).message).toContain("cannot reach the token endpoint http://127.0.0.1:1/token");
    } finally {
      source.close();
    }
  });
});

describe("ID tokens", () => {
  test("exchanged with target_audience; the token carries the audience and verifies with the fake's JWKS; cached", async () => {
    fake.reset();
    const s = await serveTpm({ keyfile });
    try {
      const aud = "https://service.example.com";
      const res = await s.get(`${IDENTITY}?audience=${encodeURIComponent(aud)}`);
      expect(res.status).toBe(200);
      const jwt = await res.text();
      const { payload } = await jwtVerify(jwt, createRemoteJWKSet(new URL(fake.jwksUrl)), {
        audience: aud,
        issuer: "https://accounts.google.com",
      });
      expect(payload.email).toBe(EMAIL);
      const a = fake.lastAssertion!.payload;
      expect(a).toMatchObject({ iss: EMAIL, sub: EMAIL, aud: fake.tokenUrl, target_audience: aud });
      expect(await (await s.get(`${IDENTITY}?audience=${encodeURIComponent(aud)}`)).text()).toBe(jwt);
      expect(fake.calls.token).toBe(1);
      expect(s.signs()).toBe(1);
    } finally {
      await s.stop();
    }
  });
});

describe("PCR-bound key", () => {
  test("extending the bound PCR: the cached token is still served, a refresh is a clear 500 naming TPM_RC_POLICY_FAIL", async () => {
    tools.run("tpm2_pcrreset", String(PCR));
    const s = await serveTpm({ keyfile: pcrKeyfile, pcrs: [PCR] });
    try {
      const before = await accessToken(s);
      await checkSelfSigned(before.access_token, [CLOUD_PLATFORM_SCOPE]);
      tools.run("tpm2_pcrextend", `${PCR}:sha256=${"cd".repeat(32)}`);
      expect((await accessToken(s)).access_token).toBe(before.access_token);
      const res = await s.get(`${TOKEN}?scopes=${BIGQUERY}`); // a new scope set forces a signature
      expect(res.status).toBe(500);
      const text = await res.text();
      expect(text).toContain(`Failed to obtain an access token for ${EMAIL}`);
      expect(text).toContain("TPM_RC_POLICY_FAIL");
      expect(text).toContain("sha256:23");
      expect(text.trim().split("\n")).toHaveLength(1);
      tools.run("tpm2_pcrreset", String(PCR));
      await checkSelfSigned((await accessToken(s, `?scopes=${BIGQUERY}`)).access_token, [BIGQUERY]);
    } finally {
      await s.stop();
    }
  });
});
