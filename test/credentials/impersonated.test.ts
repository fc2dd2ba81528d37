/**
 * `-impersonate`'s source, served over HTTP against the fake Google: source credentials from an ADC file (service
 * account key, authorized_user, external_account), tokens for the config's account from IAM Credentials, all
 * verified by the fake for real; plus the ADC file search and a real client library reading the served token.
 */
import { afterAll, beforeAll, beforeEach, describe, expect, test } from "bun:test";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { GoogleAuth } from "google-auth-library";
import { createRemoteJWKSet, jwtVerify } from "jose";
import { findAdcFile, readAdcFile, type AdcFile } from "../../src/credentials/adc.ts";
import { readEnvironment } from "../../src/environment.ts";
import { ImpersonatedSource } from "../../src/credentials/impersonated.ts";
import { CredentialError } from "../../src/errors.ts";
import { DEFAULT_CONFIG_TEXT } from "../../src/index.ts";
import {
  CLOUD_PLATFORM_SCOPE,
  GOOGLE_ISSUER,
  makeAuthorizedUser,
  makeServiceAccountKey,
  makeSubjectIssuer,
  startFakeGoogle,
  type FakeGoogle,
  type ServiceAccountKey,
} from "../fakes/google.ts";
import { concurrentGets, startServer, V1, type Started } from "../helpers/server.ts";

const TARGET = "target@example-project.iam.gserviceaccount.com";
const OTHER = "other@example-project.iam.gserviceaccount.com";
const SOURCE = "runner@ci-project.iam.gserviceaccount.com";
const CONFIG_SCOPES = [CLOUD_PLATFORM_SCOPE, "https://www.googleapis.com/auth/userinfo.email"];
const TOKEN = `${V1}instance/service-accounts/default/token`;
const WIF_AUDIENCE = "//iam.googleapis.com/projects/123456789/locations/global/workloadIdentityPools/pool/providers/oidc";
const dir = mkdtempSync(join(tmpdir(), "impersonated-"));

/** The bundled config with `default` = TARGET and a second account. */
function claims(): object {
  const doc = JSON.parse(DEFAULT_CONFIG_TEXT);
  doc.computeMetadata.v1.instance.serviceAccounts = {
    default: { aliases: ["default"], email: TARGET, scopes: CONFIG_SCOPES },
    [OTHER]: { aliases: [], email: OTHER, scopes: [CLOUD_PLATFORM_SCOPE] },
  };
  return doc;
}

let fake: FakeGoogle;
let sa: ServiceAccountKey;

beforeAll(async () => {
  fake = await startFakeGoogle();
  sa = await makeServiceAccountKey(fake, { email: SOURCE, projectId: "ci-project" });
});
afterAll(async () => {
  await fake.stop();
  rmSync(dir, { recursive: true, force: true });
});
beforeEach(() => fake.reset());

async function serve(adc: AdcFile, tokenUrl?: string): Promise<Started> {
  return startServer({
    claims: claims(),
    credentials: new ImpersonatedSource({ adc, iamUrl: fake.url, ...(tokenUrl ? { tokenUrl } : {}) }),
  });
}

const jwks = () => createRemoteJWKSet(new URL(fake.jwksUrl));

describe("service account key as the source", () => {
  let s: Started;
  beforeAll(async () => {
    s = await serve(await readAdcFile(sa.path));
  });
  afterAll(() => s.stop());

  test("the served access token is one the fake issued for the target via generateAccessToken, with the config's scopes", async () => {
    const res = await s.get(TOKEN);
    expect(res.status).toBe(200);
    const body = (await res.json()) as { access_token: string; expires_in: number; token_type: string };
    expect(body.token_type).toBe("Bearer");
    expect(body.expires_in).toBeWithin(3590, 3601);
    expect(fake.tokenInfo(body.access_token)).toMatchObject({ email: TARGET, via: "generateAccessToken", scopes: CONFIG_SCOPES });
    expect(fake.calls.generateAccessToken).toBe(1);
    const call = fake.requests.find((r) => r.endpoint === "generateAccessToken")!;
    expect(call.path).toBe(`/v1/projects/-/serviceAccounts/${TARGET}:generateAccessToken`);
    expect(call.body).toEqual({ delegates: [], scope: CONFIG_SCOPES, lifetime: "3600s" });
    // The bearer is the source key's own cloud-platform token, from the key's token_uri.
    expect(fake.tokenInfo(call.bearer!)).toMatchObject({ email: SOURCE, via: "token", scopes: [CLOUD_PLATFORM_SCOPE] });
    expect(fake.lastAssertion!.payload.iss).toBe(SOURCE);
  });

  test("repeat requests are served from the cache: no new upstream call", async () => {
    const first = ((await (await s.get(TOKEN)).json()) as { access_token: string }).access_token;
    fake.reset();
    for (let i = 0; i < 5; i++) {
      expect(((await (await s.get(TOKEN)).json()) as { access_token: string }).access_token).toBe(first);
    }
    expect(fake.calls.generateAccessToken + fake.calls.token).toBe(0);
  });

  test("requested scopes reach the fake; the source token is reused", async () => {
    const scopes = ["https://www.googleapis.com/auth/devstorage.read_only", "https://www.googleapis.com/auth/pubsub"];
    const res = await s.get(`${TOKEN}?scopes=${scopes.join(",")}`);
    const { access_token } = (await res.json()) as { access_token: string };
    expect(fake.tokenInfo(access_token)).toMatchObject({ email: TARGET, scopes });
    expect(fake.requests.find((r) => r.endpoint === "generateAccessToken")!.body.scope).toEqual(scopes);
    expect(fake.calls.token).toBe(0);
  });

  test("another account in the config is impersonated as itself", async () => {
    const res = await s.get(`${V1}instance/service-accounts/${OTHER}/token`);
    const { access_token } = (await res.json()) as { access_token: string };
    expect(fake.tokenInfo(access_token)).toMatchObject({ email: OTHER, via: "generateAccessToken" });
  });

  test("ID tokens: generateIdToken with includeEmail, carrying the audience, verifying with the fake's JWKS, cached", async () => {
    const audience = "https://backend.example.test";
    const res = await s.get(`${V1}instance/service-accounts/default/identity?audience=${audience}`);
    expect(res.status).toBe(200);
    const token = await res.text();
    const { payload } = await jwtVerify(token, jwks(), { issuer: GOOGLE_ISSUER, audience });
    expect(payload).toMatchObject({ email: TARGET, email_verified: true, sub: fake.uniqueId(TARGET), azp: fake.uniqueId(TARGET) });
    const call = fake.requests.find((r) => r.endpoint === "generateIdToken")!;
    expect(call.path).toBe(`/v1/projects/-/serviceAccounts/${TARGET}:generateIdToken`);
    expect(call.body).toEqual({ delegates: [], audience, includeEmail: true });
    fake.reset();
    expect(await (await s.get(`${V1}instance/service-accounts/default/identity?audience=${audience}`)).text()).toBe(token);
    expect(fake.calls.generateIdToken).toBe(0);
  });

  test("format=full cannot be honoured: the token is what IAM mints, without google.compute_engine", async () => {
    const audience = "https://full.example.test";
    const res = await s.get(`${V1}instance/service-accounts/default/identity?audience=${audience}&format=full&licenses=TRUE`);
    const { payload } = await jwtVerify(await res.text(), jwks(), { audience });
    expect(payload.email).toBe(TARGET);
    expect(payload.google).toBeUndefined();
  });

  test("a refusal is a clear 500 naming the endpoint's error, and is not cached", async () => {
    const url = `${TOKEN}?scopes=https://www.googleapis.com/auth/refusal-test`;
    fake.failNext("generateAccessToken", 1, 403);
    const bad = await s.get(url);
    expect(bad.status).toBe(500);
    expect(await bad.text()).toBe(
      `Failed to obtain an access token for ${TARGET}: IAM Credentials refused generateAccessToken for ${TARGET}: 403 PERMISSION_DENIED: Injected failure (403).\n`,
    );
    const good = await s.get(url);
    expect(good.status).toBe(200);
    expect(fake.isIssuedAccessToken(((await good.json()) as { access_token: string }).access_token)).toBe(true);
    expect(fake.calls.generateAccessToken).toBe(2);
  });

  test("a refused ID token is a 500 too, not cached", async () => {
    const url = `${V1}instance/service-accounts/default/identity?audience=https://refused.example.test`;
    fake.failNext("generateIdToken", 1, 403);
    const bad = await s.get(url);
    expect(bad.status).toBe(500);
    expect(await bad.text()).toContain(`IAM Credentials refused generateIdToken for ${TARGET}: 403 PERMISSION_DENIED`);
    expect((await s.get(url)).status).toBe(200);
    expect(fake.calls.generateIdToken).toBe(2);
  });

  test("a transient 5xx from IAM is retried", async () => {
    fake.failNext("generateAccessToken", 1, 503);
    const res = await s.get(`${TOKEN}?scopes=https://www.googleapis.com/auth/retry-test`);
    expect(res.status).toBe(200);
    expect(fake.calls.generateAccessToken).toBe(2);
  });
});

describe("single flight", () => {
  test("cold concurrent requests: one source token, one generateAccessToken per scope set", async () => {
    const s = await serve(await readAdcFile(sa.path));
    try {
      fake.delay(200);
      const paths = ["a", "b"].map((x) => `${TOKEN}?scopes=https://www.googleapis.com/auth/${x}`);
      const [a, b] = await Promise.all(paths.map((p) => concurrentGets(s.server.port, p, 200)));
      for (const batch of [a!, b!]) {
        expect(new Set(batch.map((r) => r.status))).toEqual(new Set([200]));
        expect(new Set(batch.map((r) => JSON.parse(r.body).access_token)).size).toBe(1);
      }
      expect(fake.calls.token).toBe(1);
      expect(fake.calls.generateAccessToken).toBe(2);
    } finally {
      await s.stop();
    }
  });
});

describe("authorized_user as the source", () => {
  test("the refresh grant goes to tokenUrl (the file names none); the user's token calls IAM", async () => {
    const user = await makeAuthorizedUser(fake, { quotaProjectId: "billing-project" });
    const s = await serve(await readAdcFile(user.path), fake.tokenUrl);
    try {
      const { access_token } = (await (await s.get(TOKEN)).json()) as { access_token: string };
      expect(fake.tokenInfo(access_token)).toMatchObject({ email: TARGET, via: "generateAccessToken" });
      const refresh = fake.requests.find((r) => r.endpoint === "token")!;
      expect(refresh.body).toMatchObject({ grant_type: "refresh_token", client_id: user.json.client_id });
      const call = fake.requests.find((r) => r.endpoint === "generateAccessToken")!;
      expect(fake.tokenInfo(call.bearer!)?.subject).toBe(user.json.client_id);
    } finally {
      await s.stop();
    }
  });

  test("a revoked refresh token: 500 naming the source file and the token endpoint's error; IAM never called", async () => {
    const user = await makeAuthorizedUser(fake);
    const revoked = join(dir, "revoked.json");
    writeFileSync(revoked, JSON.stringify({ ...user.json, refresh_token: "1//revoked" }));
    const s = await serve(await readAdcFile(revoked), fake.tokenUrl);
    try {
      const res = await s.get(TOKEN);
      expect(res.status).toBe(500);
      const text = await res.text();
      expect(text).toContain(
        `the source credentials (authorized_user ${user.json.client_id} from ${revoked}) could not get a token from ${fake.tokenUrl}`,
      );
      expect(text).toContain("invalid_grant");
      expect(text).not.toContain(user.json.client_secret);
      expect(fake.calls.generateAccessToken).toBe(0);
    } finally {
      await s.stop();
    }
  });
});

describe("external_account as the source", () => {
  test("the subject token is exchanged at STS; the federated token calls IAM", async () => {
    const issuer = await makeSubjectIssuer(fake);
    const tokenFile = join(dir, "subject.jwt");
    writeFileSync(tokenFile, await issuer.sign({ sub: "ci-job", aud: `https:${WIF_AUDIENCE}` }));
    const file = join(dir, "wif-source.json");
    writeFileSync(
      file,
      JSON.stringify({
        type: "external_account",
        audience: WIF_AUDIENCE,
        subject_token_type: "urn:ietf:params:oauth:token-type:jwt",
        token_url: fake.stsUrl,
        credential_source: { file: tokenFile },
      }),
    );
    const s = await serve(await readAdcFile(file));
    try {
      const { access_token } = (await (await s.get(TOKEN)).json()) as { access_token: string };
      expect(fake.tokenInfo(access_token)).toMatchObject({ email: TARGET, via: "generateAccessToken" });
      const call = fake.requests.find((r) => r.endpoint === "generateAccessToken")!;
      expect(fake.tokenInfo(call.bearer!)).toMatchObject({ via: "sts", subject: expect.stringContaining("/subject/ci-job") });
    } finally {
      await s.stop();
    }
  });
});

describe("checks before any network call", () => {
  const adcOf = (json: object): AdcFile => ({
    path: "/x/adc.json",
    type: String((json as { type?: unknown }).type),
    json: json as Record<string, unknown>,
  });

  test("wrong types and missing fields are CredentialErrors naming the file and the field", () => {
    const make = (json: object) => () => new ImpersonatedSource({ adc: adcOf(json) });
    expect(make({ type: "impersonated_service_account" })).toThrow(
      '/x/adc.json: "type" is "impersonated_service_account"; -impersonate takes its source credentials from a service_account key, an authorized_user file',
    );
    expect(make({ type: "authorized_user", client_id: "a", client_secret: "b" })).toThrow(
      '/x/adc.json: "refresh_token" is missing from the authorized_user file',
    );
    expect(make({ type: "service_account", client_email: "a@b" })).toThrow('/x/adc.json: "private_key" is missing');
    expect(make({ type: "external_account", audience: "a", subject_token_type: "t" })).toThrow('"credential_source" is missing');
    expect(make({ type: "authorized_user", client_id: "a", client_secret: "b", refresh_token: "c", token_uri: "ftp://x" })).toThrow(
      CredentialError,
    );
  });

  test("readAdcFile: unreadable, not JSON, no type", async () => {
    await expect(readAdcFile(join(dir, "absent.json"))).rejects.toThrow(
      `${join(dir, "absent.json")}: cannot read the credentials file (no such file)`,
    );
    writeFileSync(join(dir, "garbage.json"), "{nope");
    await expect(readAdcFile(join(dir, "garbage.json"))).rejects.toThrow("not JSON");
    writeFileSync(join(dir, "untyped.json"), "{}");
    await expect(readAdcFile(join(dir, "untyped.json"))).rejects.toThrow('"type" is missing');
  });
});

describe("ADC file search, as google-auth-library does it", () => {
  test("GOOGLE_APPLICATION_CREDENTIALS first, even when the file is missing; then CLOUDSDK_CONFIG, then ~/.config/gcloud", () => {
    const home = join(dir, "home");
    const sdk = join(dir, "sdk");
    mkdirSync(join(home, ".config", "gcloud"), { recursive: true });
    mkdirSync(sdk, { recursive: true });
    const wellKnown = join(home, ".config", "gcloud", "application_default_credentials.json");
    writeFileSync(wellKnown, "{}");
    expect(findAdcFile(readEnvironment({ GOOGLE_APPLICATION_CREDENTIALS: "/nowhere.json", HOME: home }))).toEqual({
      path: "/nowhere.json",
      fromEnv: true,
    });
    expect(findAdcFile(readEnvironment({ HOME: home }))).toEqual({ path: wellKnown, fromEnv: false });
    expect(findAdcFile(readEnvironment({ HOME: home, CLOUDSDK_CONFIG: sdk }))).toBeUndefined();
    writeFileSync(join(sdk, "application_default_credentials.json"), "{}");
    expect(findAdcFile(readEnvironment({ HOME: home, CLOUDSDK_CONFIG: sdk }))).toEqual({
      path: join(sdk, "application_default_credentials.json"),
      fromEnv: false,
    });
    expect(findAdcFile(readEnvironment({}))).toBeUndefined();
  });
});

describe("a real client reads the impersonated token", () => {
  let s: Started;
  let restore: () => void;
  const saved = { ...process.env };
  beforeAll(async () => {
    s = await serve(await readAdcFile(sa.path));
    restore = s.server.applyEnv();
    // Keep the library from finding credentials on this machine: the metadata server must be its only source.
    delete process.env.GOOGLE_APPLICATION_CREDENTIALS;
    process.env.CLOUDSDK_CONFIG = mkdtempSync(join(tmpdir(), "gcloud-empty-"));
  });
  afterAll(async () => {
    restore();
    process.env = saved;
    await s.stop();
  });

  test("GoogleAuth (GCE_METADATA_HOST) gets the target's token and an ID token for it", async () => {
    const auth = new GoogleAuth({ scopes: [CLOUD_PLATFORM_SCOPE] });
    const client = await auth.getClient();
    const { token } = await client.getAccessToken();
    expect(fake.tokenInfo(token!)).toMatchObject({ email: TARGET, via: "generateAccessToken" });
    expect(await auth.getCredentials()).toMatchObject({ client_email: TARGET });
    const idClient = await auth.getIdTokenClient("https://run.example.test");
    const headers = await idClient.getRequestHeaders();
    const idToken = headers.get("authorization")!.replace(/^Bearer /, "");
    const { payload } = await jwtVerify(idToken, jwks(), { audience: "https://run.example.test" });
    expect(payload.email).toBe(TARGET);
  });
});
