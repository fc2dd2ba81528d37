/**
 * `-federate`'s source, served over HTTP against the fake Google: an external_account configuration whose subject
 * token comes from a file or a URL, exchanged at the fake STS (which verifies it for real), optionally impersonating
 * a service account; ID tokens from IAM Credentials called with the federated token.
 */
import { afterAll, beforeAll, beforeEach, describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createRemoteJWKSet, jwtVerify } from "jose";
import { readAdcFile, type AdcFile } from "../../src/credentials/adc.ts";
import { FederatedSource, federationIamUrl } from "../../src/credentials/federated.ts";
import { parseFlags } from "../../src/cli/flags.ts";
import { credentialSpec } from "../../src/cli/options.ts";
import { startFaultyFront } from "../fakes/faults.ts";
import { DEFAULT_CONFIG_TEXT } from "../../src/index.ts";
import {
  CLOUD_PLATFORM_SCOPE,
  GOOGLE_ISSUER,
  makeSubjectIssuer,
  startFakeGoogle,
  type FakeGoogle,
  type SubjectIssuer,
} from "../fakes/google.ts";
import { startServer, V1, type Started } from "../helpers/server.ts";

const DEFAULT_EMAIL = "app@example-project.iam.gserviceaccount.com";
const WIF_SA = "wif-runner@example-project.iam.gserviceaccount.com";
const CONFIG_SCOPES = [CLOUD_PLATFORM_SCOPE];
const TOKEN = `${V1}instance/service-accounts/default/token`;
const AUDIENCE = "//iam.googleapis.com/projects/123456789/locations/global/workloadIdentityPools/pool/providers/oidc";
const PRINCIPAL = "principal://iam.googleapis.com/projects/123456789/locations/global/workloadIdentityPools/pool/subject";
const JWT_TYPE = "urn:ietf:params:oauth:token-type:jwt";
const dir = mkdtempSync(join(tmpdir(), "federated-"));

function claims(): object {
  const doc = JSON.parse(DEFAULT_CONFIG_TEXT);
  doc.computeMetadata.v1.instance.serviceAccounts = { default: { aliases: ["default"], email: DEFAULT_EMAIL, scopes: CONFIG_SCOPES } };
  return doc;
}

let fake: FakeGoogle;
let issuer: SubjectIssuer;
let subjectFile: string;
let subjectToken: string;

beforeAll(async () => {
  fake = await startFakeGoogle();
  issuer = await makeSubjectIssuer(fake);
  subjectToken = await issuer.sign({ sub: "workload-7", aud: `https:${AUDIENCE}` }, 3600);
  subjectFile = join(dir, "subject.jwt");
  writeFileSync(subjectFile, subjectToken);
});
afterAll(async () => {
  await fake.stop();
  rmSync(dir, { recursive: true, force: true });
});
beforeEach(() => fake.reset());

let fileCounter = 0;
/** Write an external_account file and read it back as the CLI would. */
async function externalAccount(extra: Record<string, unknown> = {}): Promise<AdcFile> {
  const path = join(dir, `wif-${++fileCounter}.json`);
  writeFileSync(
    path,
    JSON.stringify({
      type: "external_account",
      audience: AUDIENCE,
      subject_token_type: JWT_TYPE,
      token_url: fake.stsUrl,
      credential_source: { file: subjectFile },
      ...extra,
    }),
  );
  return readAdcFile(path);
}

async function serve(adc: AdcFile): Promise<Started> {
  return startServer({ claims: claims(), credentials: await FederatedSource.open(adc, { iamUrl: fake.url }) });
}

const accessToken = async (s: Started, path = TOKEN) => {
  const res = await s.get(path);
  expect(res.status).toBe(200);
  return (await res.json()) as { access_token: string; expires_in: number };
};

describe("file-sourced subject token, no impersonation", () => {
  let s: Started;
  beforeAll(async () => {
    s = await serve(await externalAccount());
  });
  afterAll(() => s.stop());

  test("the subject token from the file is exchanged at STS; the federated token is served", async () => {
    const body = await accessToken(s);
    expect(fake.tokenInfo(body.access_token)).toMatchObject({ via: "sts", subject: `${PRINCIPAL}/workload-7`, scopes: CONFIG_SCOPES });
    expect(body.expires_in).toBeWithin(3590, 3601);
    expect(fake.calls.sts).toBe(1);
    const exchange = fake.requests.find((r) => r.endpoint === "sts")!;
    expect(exchange.body).toMatchObject({
      grant_type: "urn:ietf:params:oauth:grant-type:token-exchange",
      audience: AUDIENCE,
      subject_token: subjectToken,
      subject_token_type: JWT_TYPE,
      requested_token_type: "urn:ietf:params:oauth:token-type:access_token",
      scope: CLOUD_PLATFORM_SCOPE,
    });
  });

  test("repeat requests are served from the cache: no new exchange", async () => {
    const first = (await accessToken(s)).access_token;
    fake.reset();
    for (let i = 0; i < 5; i++) expect((await accessToken(s)).access_token).toBe(first);
    expect(fake.calls.sts).toBe(0);
  });

  test("requested scopes reach STS", async () => {
    const scopes = [CLOUD_PLATFORM_SCOPE, "https://www.googleapis.com/auth/userinfo.email"];
    const { access_token } = await accessToken(s, `${TOKEN}?scopes=${scopes.join(",")}`);
    expect(fake.tokenInfo(access_token)?.scopes).toEqual(scopes);
    expect(fake.requests.find((r) => r.endpoint === "sts")!.body.scope).toBe(scopes.join(" "));
  });

  test("ID tokens: generateIdToken for the default account, called with the federated token", async () => {
    const audience = "https://api.example.test";
    const res = await s.get(`${V1}instance/service-accounts/default/identity?audience=${audience}`);
    expect(res.status).toBe(200);
    const token = await res.text();
    const { payload } = await jwtVerify(token, createRemoteJWKSet(new URL(fake.jwksUrl)), { issuer: GOOGLE_ISSUER, audience });
    expect(payload).toMatchObject({ email: DEFAULT_EMAIL, sub: fake.uniqueId(DEFAULT_EMAIL) });
    const call = fake.requests.find((r) => r.endpoint === "generateIdToken")!;
    expect(call.path).toBe(`/v1/projects/-/serviceAccounts/${DEFAULT_EMAIL}:generateIdToken`);
    expect(call.body).toEqual({ delegates: [], audience, includeEmail: true });
    expect(fake.tokenInfo(call.bearer!)).toMatchObject({ via: "sts", subject: `${PRINCIPAL}/workload-7` });
    fake.reset();
    expect(await (await s.get(`${V1}instance/service-accounts/default/identity?audience=${audience}`)).text()).toBe(token);
    expect(fake.calls.generateIdToken + fake.calls.sts).toBe(0);
  });

  test("a refused exchange is a clear 500 with STS's error, not cached", async () => {
    const url = `${TOKEN}?scopes=https://www.googleapis.com/auth/refusal-test`;
    fake.failNext("sts", 1, 400);
    const bad = await s.get(url);
    expect(bad.status).toBe(500);
    const text = await bad.text();
    expect(text).toStartWith(
      `Failed to obtain an access token for ${DEFAULT_EMAIL}: workload identity federation with ${join(dir, "wif-1.json")} failed:`,
    );
    expect(text).toContain("Injected failure (400)");
    expect(text).not.toContain(subjectToken);
    expect((await s.get(url)).status).toBe(200);
    expect(fake.calls.sts).toBe(2);
  });

  test("a refused ID token is a 500 naming IAM's error, not cached", async () => {
    const url = `${V1}instance/service-accounts/default/identity?audience=https://refused.example.test`;
    fake.failNext("generateIdToken", 1, 403);
    const bad = await s.get(url);
    expect(bad.status).toBe(500);
    expect(await bad.text()).toContain(
      `IAM Credentials refused generateIdToken for ${DEFAULT_EMAIL}: 403 PERMISSION_DENIED: Injected failure (403).`,
    );
    expect((await s.get(url)).status).toBe(200);
    expect(fake.calls.generateIdToken).toBe(2);
  });
});

describe("with service_account_impersonation_url", () => {
  test("the federated token is exchanged for the service account's, with the requested scopes", async () => {
    const s = await serve(await externalAccount({ service_account_impersonation_url: fake.impersonationUrl(WIF_SA) }));
    try {
      const scopes = ["https://www.googleapis.com/auth/devstorage.read_only"];
      const { access_token } = await accessToken(s, `${TOKEN}?scopes=${scopes.join(",")}`);
      expect(fake.tokenInfo(access_token)).toMatchObject({ email: WIF_SA, via: "generateAccessToken", scopes });
      // STS is asked for cloud-platform (IAM needs it); the service account's token gets the requested scopes.
      expect(fake.requests.find((r) => r.endpoint === "sts")!.body.scope).toBe(CLOUD_PLATFORM_SCOPE);
      const call = fake.requests.find((r) => r.endpoint === "generateAccessToken")!;
      expect(call.body).toMatchObject({ scope: scopes });
      expect(fake.tokenInfo(call.bearer!)?.via).toBe("sts");

      // ID tokens: the impersonated account's token calls generateIdToken for the default account.
      fake.reset();
      const res = await s.get(`${V1}instance/service-accounts/default/identity?audience=https://x.example.test`);
      expect(res.status).toBe(200);
      const idCall = fake.requests.find((r) => r.endpoint === "generateIdToken")!;
      expect(idCall.path).toContain(`/serviceAccounts/${DEFAULT_EMAIL}:generateIdToken`);
      expect(fake.tokenInfo(idCall.bearer!)).toMatchObject({ email: WIF_SA, via: "generateAccessToken" });
    } finally {
      await s.stop();
    }
  });
});

describe("URL-sourced subject token", () => {
  test("fetched with the configured headers, JSON field picked; exchanged at STS", async () => {
    const seen: Headers[] = [];
    const idp = Bun.serve({
      hostname: "127.0.0.1",
      port: 0,
      fetch(req) {
        seen.push(req.headers);
        return Response.json({ value: subjectToken, note: "an IdP answer" });
      },
    });
    try {
      const adc = await externalAccount({
        credential_source: {
          url: `http://127.0.0.1:${idp.port}/token?audience=gcp`,
          headers: { "Metadata-Flavor": "Azure-ish", "X-Custom": "yes" },
          format: { type: "json", subject_token_field_name: "value" },
        },
      });
      const s = await serve(adc);
      try {
        const { access_token } = await accessToken(s);
        expect(fake.tokenInfo(access_token)).toMatchObject({ via: "sts", subject: `${PRINCIPAL}/workload-7` });
        expect(seen).toHaveLength(1);
        expect(seen[0]!.get("x-custom")).toBe("yes");
        expect(fake.requests.find((r) => r.endpoint === "sts")!.body.subject_token).toBe(subjectToken);
      } finally {
        await s.stop();
      }
    } finally {
      await idp.stop(true);
    }
  });
});

describe("a subject token that cannot be used", () => {
  test("a missing token file: 500 naming it; a token for the wrong audience: STS's refusal", async () => {
    const missing = join(dir, "absent.jwt");
    const s1 = await serve(await externalAccount({ credential_source: { file: missing } }));
    try {
      const res = await s1.get(TOKEN);
      expect(res.status).toBe(500);
      expect(await res.text()).toContain(`The file at ${missing} does not exist`);
      expect(fake.calls.sts).toBe(0);
    } finally {
      await s1.stop();
    }
    const wrongFile = join(dir, "wrong-aud.jwt");
    writeFileSync(wrongFile, await issuer.sign({ sub: "w", aud: "https://elsewhere.example.test" }));
    const s2 = await serve(await externalAccount({ credential_source: { file: wrongFile } }));
    try {
      const res = await s2.get(TOKEN);
      expect(res.status).toBe(500);
      expect(await res.text()).toContain(
        "400 invalid_grant: The audience in ID Token [https://elsewhere.example.test] does not match the expected audience.",
      );
    } finally {
      await s2.stop();
    }
  });
});

describe("checks before any network call", () => {
  const adcOf = (json: Record<string, unknown>): AdcFile => ({ path: "/x/wif.json", type: String(json.type), json });
  const base = { type: "external_account", audience: AUDIENCE, subject_token_type: JWT_TYPE, credential_source: { file: "/t" } };

  test("wrong type, missing fields and bad URLs are refused naming the field", async () => {
    await expect(FederatedSource.open(adcOf({ ...base, type: "service_account" }))).rejects.toThrow(
      '/x/wif.json: "type" is "service_account"; workload identity federation needs an "external_account" credential configuration',
    );
    await expect(FederatedSource.open(adcOf({ ...base, audience: undefined }))).rejects.toThrow('"audience" is missing');
    await expect(FederatedSource.open(adcOf({ ...base, credential_source: undefined }))).rejects.toThrow('"credential_source" is missing');
    await expect(FederatedSource.open(adcOf({ ...base, token_url: "sts" }))).rejects.toThrow('"token_url" must be an http(s) URL');
    await expect(FederatedSource.open(adcOf({ ...base, service_account_impersonation_url: "https://x/v1/foo" }))).rejects.toThrow(
      "must end in /serviceAccounts/{email}:generateAccessToken",
    );
    // The library's own checks surface at open(), not at the first request.
    await expect(FederatedSource.open(adcOf({ ...base, credential_source: { file: "/a", url: "http://b" } }))).rejects.toThrow(
      '/x/wif.json: No valid Identity Pool "credential_source" provided',
    );
    expect(fake.calls.sts).toBe(0);
  });

  test("describe() names the impersonated account", async () => {
    expect((await FederatedSource.open(adcOf(base))).describe()).toEqual({ type: "federated" });
    expect(
      (await FederatedSource.open(adcOf({ ...base, service_account_impersonation_url: fake.impersonationUrl(WIF_SA) }))).describe(),
    ).toEqual({
      type: "federated",
      email: WIF_SA,
    });
  });
});

describe("where ID tokens are minted (issue 9 item 6)", () => {
  test("with service_account_impersonation_url and no -iamURL: generateIdToken goes to that URL's IAM origin", async () => {
    const front = await startFaultyFront(fake.url); // a private IAM endpoint, in front of the fake
    try {
      const adc = await externalAccount({
        service_account_impersonation_url: `${front.url}/v1/projects/-/serviceAccounts/${WIF_SA}:generateAccessToken`,
      });
      const source = await FederatedSource.open(adc);
      expect(source.iamUrl).toBe(front.url);
      const s = await startServer({ claims: claims(), credentials: source });
      try {
        const before = front.accepted;
        const res = await s.get(`${V1}instance/service-accounts/default/identity?audience=https://private.example.test`);
        expect(res.status).toBe(200);
        expect(front.accepted).toBeGreaterThan(before);
        expect(fake.requests.find((r) => r.endpoint === "generateIdToken")!.path).toBe(
          `/v1/projects/-/serviceAccounts/${DEFAULT_EMAIL}:generateIdToken`,
        );
      } finally {
        await s.stop();
      }
    } finally {
      await front.stop();
    }
  });

  test("a given -iamURL wins; without either, Google's public endpoint", async () => {
    const adc = await externalAccount({ service_account_impersonation_url: fake.impersonationUrl(WIF_SA) });
    expect((await FederatedSource.open(adc, { iamUrl: "https://iam.private.example" })).iamUrl).toBe("https://iam.private.example");
    expect((await FederatedSource.open(adc)).iamUrl).toBe(fake.url);
    expect((await FederatedSource.open(await externalAccount())).iamUrl).toBe("https://iamcredentials.googleapis.com");
    expect(
      federationIamUrl(undefined, "https://iamcredentials.p.googleapis.com/v1/projects/-/serviceAccounts/a@b:generateAccessToken"),
    ).toBe("https://iamcredentials.p.googleapis.com");
    expect(federationIamUrl(undefined, "https://proxy.example/iam/v1/projects/-/serviceAccounts/a@b:generateAccessToken")).toBe(
      "https://proxy.example/iam",
    );
  });

  test("the command line passes -iamURL only when given", () => {
    const warn = () => {};
    expect(credentialSpec(parseFlags(["-federate"]), warn)).toEqual({ type: "federated" });
    expect(credentialSpec(parseFlags(["-federate", "-iamURL", "https://iam.private.example"]), warn)).toEqual({
      type: "federated",
      iamUrl: "https://iam.private.example",
    });
  });
});
