/**
 * Every credential source through the one case file (source-cases.ts): the emulated issuer, static tokens, a key
 * file, impersonation, federation and a TPM key (on a software TPM, in both of its access-token modes), against the
 * fake Google that verifies signatures for real. What a source cannot do is listed, with the reason, in
 * docs/credentials.md; the first test holds the harnesses to that table.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { generateKeyPairSync, type KeyObject } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createLocalJWKSet, createRemoteJWKSet, jwtVerify, SignJWT } from "jose";
import { readAdcFile } from "../../src/credentials/adc.ts";
import { EmulatedIssuer } from "../../src/credentials/emulated.ts";
import { FederatedSource } from "../../src/credentials/federated.ts";
import { ImpersonatedSource } from "../../src/credentials/impersonated.ts";
import { readServiceAccountKey, ServiceAccountKeySource } from "../../src/credentials/service-account.ts";
import { StaticSource } from "../../src/credentials/static.ts";
import { TpmSource } from "../../src/credentials/tpm.ts";
import { openTpmSigner, type TpmSigner } from "../../src/tpm/signer.ts";
import { type FakeGoogle, makeServiceAccountKey, makeExternalAccount, startFakeGoogle } from "../fakes/google.ts";
import { requireTpmTools, startSwtpm, type Swtpm } from "../helpers/swtpm.ts";
import { Tpm2Tools } from "../helpers/tpm2-tools.ts";
import { CASES, type CaseName, CLOUD_PLATFORM, runSourceCases, type SourceHarness, type Subject } from "./source-cases.ts";

const EMAIL = "app@example-project.iam.gserviceaccount.com";
const SOURCE_EMAIL = "runner@ci-project.iam.gserviceaccount.com";
const ACCOUNT = { email: EMAIL, scopes: [CLOUD_PLATFORM] };
const WIF_AUDIENCE = "//iam.googleapis.com/projects/123456789/locations/global/workloadIdentityPools/pool/providers/oidc";
const HANDLE = 0x81008002;
const dir = mkdtempSync(join(tmpdir(), "conformance-"));

let fake: FakeGoogle;
let tpm: Swtpm;
let signer: TpmSigner;
let tpmPublicKey: KeyObject;

beforeAll(async () => {
  requireTpmTools();
  [fake, tpm] = await Promise.all([startFakeGoogle(), startSwtpm()]);
  const tools = await Tpm2Tools.on(tpm);
  const key = await tools.generateRsaKey("conformance");
  tpmPublicKey = key.publicKey;
  fake.registerServiceAccount(EMAIL, key.publicKey);
  await tools.persistKey(key, HANDLE);
  signer = await openTpmSigner({ path: tpm.path, persistentHandle: HANDLE });
}, 120_000);

afterAll(async () => {
  signer?.close();
  await Promise.all([fake?.stop(), tpm?.stop()]);
  rmSync(dir, { recursive: true, force: true });
});

/** The IAM-backed sources' failure: IAM Credentials refuses the next generateIdToken (403), until reset. */
const IAM_REFUSES_ID_TOKEN: Pick<Subject, "breakUpstream" | "heal"> = {
  breakUpstream: () => {
    fake.failNext("generateIdToken", 1, 403);
    return `IAM Credentials refused generateIdToken for ${EMAIL}: 403 PERMISSION_DENIED`;
  },
  heal: () => fake.reset(),
};

/** Checks shared by the sources whose tokens the fake issues. */
function fakeChecks(email: string): Pick<Subject, "checkAccess" | "verifyId"> {
  return {
    checkAccess(token, scopes) {
      const info = fake.tokenInfo(token);
      expect(info).toBeDefined();
      expect(info!.scopes).toEqual([...scopes]);
      if (info!.via !== "sts") expect(info!.email).toBe(email);
    },
    async verifyId(token) {
      const { payload } = await jwtVerify(token, createRemoteJWKSet(new URL(fake.jwksUrl)));
      return payload;
    },
  };
}

const GOOGLE_MINTS = "Google mints the ID token here (token endpoint or IAM Credentials): it carries no google.compute_engine claims";

/** A harness whose subject is built in beforeAll. */
function harness(name: string, omits: SourceHarness["omits"], make: () => Promise<Subject>): SourceHarness {
  let subject: Subject | undefined;
  beforeAll(async () => {
    subject = await make();
  });
  return {
    name,
    omits,
    subject: () => {
      if (!subject) throw new Error(`${name}: its subject was not made`);
      return subject;
    },
  };
}

const tpmModes = (useOauthToken: boolean): Promise<Subject> => {
  const source = new TpmSource({ signer, email: EMAIL, tokenUrl: fake.tokenUrl, useOauthToken, idTokenKeysUrl: fake.jwksUrl });
  const checks = fakeChecks(EMAIL);
  return Promise.resolve({
    source,
    account: ACCOUNT,
    async checkAccess(token, scopes) {
      if (useOauthToken) return checks.checkAccess(token, scopes);
      const { payload } = await jwtVerify(token, tpmPublicKey);
      expect(payload).toMatchObject({ iss: EMAIL, sub: EMAIL, scope: scopes.join(" ") });
    },
    verifyId: checks.verifyId,
    breakUpstream: () => {
      fake.failNext("token", 1, 403);
      return `the token endpoint ${fake.tokenUrl} refused the TPM-signed assertion for an ID token of ${EMAIL}: 403`;
    },
    heal: () => fake.reset(),
  });
};

const HARNESSES: SourceHarness[] = [
  harness(
    "EmulatedIssuer",
    {
      scopes: "its access tokens are opaque random strings: they carry no scopes to check",
      failure: "it mints tokens locally: there is no upstream to fail",
    },
    async () => {
      const source = new EmulatedIssuer();
      return {
        source,
        account: ACCOUNT,
        checkAccess: (token) => expect(token).toMatch(/^ya29\.[\w-]{100,}$/),
        async verifyId(token) {
          const { payload } = await jwtVerify(token, createLocalJWKSet((await source.openid.jwks()) as { keys: [] }));
          return payload;
        },
        breakUpstream: () => "",
        heal: () => {},
      };
    },
  ),
  harness(
    "StaticSource",
    {
      scopes: "one fixed access token (GOOGLE_ACCESS_TOKEN), whatever the scopes",
      audience: "one fixed ID token (GOOGLE_ID_TOKEN), whatever the audience",
      "format=full": "one fixed ID token (GOOGLE_ID_TOKEN), whatever the format",
      failure: "it serves fixed tokens: there is no upstream to fail",
    },
    async () => {
      const { privateKey, publicKey } = generateKeyPairSync("rsa", { modulusLength: 2048 });
      const idToken = await new SignJWT({ aud: "https://static.example.test", sub: "1" })
        .setProtectedHeader({ alg: "RS256", typ: "JWT" })
        .setIssuer("https://accounts.google.com")
        .setIssuedAt()
        .setExpirationTime("1h")
        .sign(privateKey);
      const accessToken = "ya29.static-token-for-the-conformance-cases";
      return {
        source: new StaticSource({ accessToken, idToken }),
        account: ACCOUNT,
        checkAccess: (token) => expect(token).toBe(accessToken),
        async verifyId(token) {
          return (await jwtVerify(token, publicKey)).payload;
        },
        breakUpstream: () => "",
        heal: () => {},
      };
    },
  ),
  harness("ServiceAccountKeySource", { "format=full": GOOGLE_MINTS }, async () => {
    const key = await makeServiceAccountKey(fake, { email: EMAIL, projectId: "example-project" });
    // This fake keeps one key per e-mail registered above for the TPM; the key file's is added beside it.
    return {
      source: new ServiceAccountKeySource(await readServiceAccountKey(key.path), { idTokenKeysUrl: fake.jwksUrl }),
      account: ACCOUNT,
      ...fakeChecks(EMAIL),
      breakUpstream: () => {
        fake.failNext("token", 1, 400);
        return `the token endpoint ${fake.tokenUrl} refused the key for an ID token of ${EMAIL}: 400 invalid_request`;
      },
      heal: () => fake.reset(),
    };
  }),
  harness("ImpersonatedSource", { "format=full": GOOGLE_MINTS }, async () => {
    const sa = await makeServiceAccountKey(fake, { email: SOURCE_EMAIL, projectId: "ci-project" });
    return {
      source: new ImpersonatedSource({ adc: await readAdcFile(sa.path), iamUrl: fake.url, idTokenKeysUrl: fake.jwksUrl }),
      account: ACCOUNT,
      ...fakeChecks(EMAIL),
      ...IAM_REFUSES_ID_TOKEN,
    };
  }),
  harness("FederatedSource", { "format=full": GOOGLE_MINTS }, async () => {
    const file = await makeExternalAccount(fake, dir, { audience: WIF_AUDIENCE });
    return {
      source: await FederatedSource.open(await readAdcFile(file), { iamUrl: fake.url, idTokenKeysUrl: fake.jwksUrl }),
      account: ACCOUNT,
      ...fakeChecks(EMAIL),
      ...IAM_REFUSES_ID_TOKEN,
    };
  }),
  harness("TpmSource (self-signed access tokens)", { "format=full": GOOGLE_MINTS }, () => tpmModes(false)),
  harness("TpmSource (-useOauthToken)", { "format=full": GOOGLE_MINTS }, () => tpmModes(true)),
];

/** The omissions table of docs/credentials.md: source → case → reason. */
function documentedOmissions(): Map<string, Map<string, string>> {
  const doc = readFileSync(join(import.meta.dir, "../../docs/credentials.md"), "utf8");
  const start = doc.indexOf("<!-- conformance omissions -->");
  const end = doc.indexOf("<!-- /conformance omissions -->");
  expect(start).toBeGreaterThan(0);
  const rows = doc
    .slice(start, end)
    .split("\n")
    .filter((l) => l.startsWith("| ") && !l.startsWith("| source") && !l.startsWith("| ---"));
  const out = new Map<string, Map<string, string>>();
  for (const row of rows) {
    const [source, name, reason] = row
      .slice(2, -2)
      .split(" | ")
      .map((c) => c.replaceAll("`", "").trim());
    if (!out.has(source!)) out.set(source!, new Map());
    out.get(source!)!.set(name!, reason!);
  }
  return out;
}

describe("the omitted cases are the documented ones", () => {
  test("each harness omits exactly what docs/credentials.md lists, with the same reasons; only known cases", () => {
    const documented = documentedOmissions();
    const omitted = new Map(HARNESSES.map((h) => [h.name, new Map(Object.entries(h.omits) as [string, string][])]));
    for (const h of HARNESSES)
      expect(Object.fromEntries(documented.get(h.name) ?? new Map())).toEqual(Object.fromEntries(omitted.get(h.name)!));
    expect([...documented.keys()].filter((k) => !omitted.has(k))).toEqual([]);
    for (const m of omitted.values()) for (const name of m.keys()) expect(CASES).toContain(name as CaseName);
    // Every case is met by at least one source.
    for (const name of CASES) expect(HARNESSES.some((h) => h.omits[name] === undefined)).toBe(true);
  });
});

for (const h of HARNESSES) runSourceCases(h);
