/**
 * `-impersonate` and `-federate` end to end: the CLI started as a user starts it, with GOOGLE_APPLICATION_CREDENTIALS
 * (or gcloud's well-known file) and `-iamURL`/`-tokenURL` pointed at the fake Google; tokens fetched over HTTP and
 * checked with the fake. Start-up refusals exit 1 with one line saying what to fix.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createRemoteJWKSet, jwtVerify } from "jose";
import { runCliToExit, serveCli } from "../helpers/cli.ts";
import { parseFlags } from "../../src/cli/flags.ts";
import {
  makeAuthorizedUser,
  makeServiceAccountKey,
  makeSubjectIssuer,
  startFakeGoogle,
  type FakeGoogle,
  type ServiceAccountKey,
} from "../fakes/google.ts";

const EMAIL = "123456789012-compute@developer.gserviceaccount.com"; // the bundled config's default account
const TOKEN = "/computeMetadata/v1/instance/service-accounts/default/token";
const IDENTITY = "/computeMetadata/v1/instance/service-accounts/default/identity";
const AUDIENCE = "//iam.googleapis.com/projects/123456789/locations/global/workloadIdentityPools/pool/providers/oidc";
const dir = mkdtempSync(join(tmpdir(), "gce-adc-cli-"));

let fake: FakeGoogle;
let sa: ServiceAccountKey;
let wif: string;

beforeAll(async () => {
  fake = await startFakeGoogle();
  sa = await makeServiceAccountKey(fake, { email: "deployer@ci-project.iam.gserviceaccount.com", projectId: "ci-project" });
  const issuer = await makeSubjectIssuer(fake);
  const subject = join(dir, "subject.jwt");
  writeFileSync(subject, await issuer.sign({ sub: "pod-1", aud: `https:${AUDIENCE}` }, 3600));
  wif = join(dir, "wif.json");
  writeFileSync(
    wif,
    JSON.stringify({
      type: "external_account",
      audience: AUDIENCE,
      subject_token_type: "urn:ietf:params:oauth:token-type:jwt",
      token_url: fake.stsUrl,
      credential_source: { file: subject },
    }),
  );
});
afterAll(async () => {
  await fake.stop();
  rmSync(dir, { recursive: true, force: true });
});

const baseEnv = () => ({ PATH: process.env.PATH ?? "" });

/** Run to completion (start-ups that must fail). */
const run = (args: string[], env: Record<string, string> = {}) =>
  runCliToExit(["-port", ":0", ...args], { cwd: dir, env: { HOME: undefined, ...baseEnv(), ...env } });

/** Start a server; resolves once it logs its URL. */
const serve = (args: string[], env: Record<string, string> = {}) =>
  serveCli(args, { cwd: dir, env: { HOME: undefined, ...baseEnv(), ...env } });

test("-iamURL: this program's flag, with Google's default", () => {
  expect(parseFlags([]).iamURL).toBe("https://iamcredentials.googleapis.com");
  expect(parseFlags(["-iamURL", "http://127.0.0.1:1"]).iamURL).toBe("http://127.0.0.1:1");
});

describe("-impersonate", () => {
  test("service account key from GOOGLE_APPLICATION_CREDENTIALS: the default account's token and ID token from IAM", async () => {
    fake.reset();
    const s = await serve(["-impersonate", "-iamURL", fake.url], { GOOGLE_APPLICATION_CREDENTIALS: sa.path });
    try {
      expect(s.log()).toContain("using service account impersonation for credentials");
      expect(s.log()).toContain("principal=deployer@ci-project.iam.gserviceaccount.com");
      const res = await s.get(TOKEN);
      expect(res.status).toBe(200);
      const { access_token } = (await res.json()) as { access_token: string };
      expect(fake.tokenInfo(access_token)).toMatchObject({
        email: EMAIL,
        via: "generateAccessToken",
        scopes: ["https://www.googleapis.com/auth/cloud-platform"],
      });
      expect(fake.calls.generateAccessToken).toBe(1);
      await s.get(TOKEN);
      expect(fake.calls.generateAccessToken).toBe(1);

      const id = await s.get(`${IDENTITY}?audience=https://svc.example.test`);
      expect(id.status).toBe(200);
      const { payload } = await jwtVerify(await id.text(), createRemoteJWKSet(new URL(fake.jwksUrl)), {
        audience: "https://svc.example.test",
      });
      expect(payload.email).toBe(EMAIL);
      expect(s.log()).not.toContain(access_token);
      expect(s.log()).not.toContain("ignored");
    } finally {
      expect(await s.stop()).toBe(0);
    }
  });

  test("authorized_user from gcloud's well-known file; -tokenURL is its token endpoint (no 'ignored' warning)", async () => {
    fake.reset();
    const user = await makeAuthorizedUser(fake);
    const gcloud = join(dir, "gcloud");
    mkdirSync(gcloud, { recursive: true });
    writeFileSync(join(gcloud, "application_default_credentials.json"), JSON.stringify(user.json));
    const s = await serve(["-impersonate", "-iamURL", fake.url, "-tokenURL", fake.tokenUrl], { CLOUDSDK_CONFIG: gcloud });
    try {
      expect(s.log()).toContain('from="gcloud well-known file"');
      const { access_token } = (await (await s.get(TOKEN)).json()) as { access_token: string };
      expect(fake.tokenInfo(access_token)).toMatchObject({ email: EMAIL, via: "generateAccessToken" });
      expect(fake.requests.find((r) => r.endpoint === "token")!.body).toMatchObject({
        grant_type: "refresh_token",
        client_id: user.json.client_id,
      });
      expect(s.log()).not.toContain("ignored");
    } finally {
      await s.stop();
    }
  });

  test("a refusal at request time is a 500 from the token endpoint; the server keeps serving", async () => {
    fake.reset();
    const s = await serve(["-impersonate", "-iamURL", fake.url], { GOOGLE_APPLICATION_CREDENTIALS: sa.path });
    try {
      fake.failNext("generateAccessToken", 1, 403);
      const bad = await s.get(TOKEN);
      expect(bad.status).toBe(500);
      expect(await bad.text()).toContain(`IAM Credentials refused generateAccessToken for ${EMAIL}: 403 PERMISSION_DENIED`);
      expect((await s.get(TOKEN)).status).toBe(200);
    } finally {
      await s.stop();
    }
  });

  test("takes precedence over -federate and -tpm, with one warning", async () => {
    const s = await serve(["-impersonate", "-federate", "-tpm", "-iamURL", fake.url], { GOOGLE_APPLICATION_CREDENTIALS: sa.path });
    try {
      expect(s.log()).toContain("-federate, -tpm ignored: -impersonate takes precedence, as in the Go emulator");
      expect(s.log()).toContain("using service account impersonation");
    } finally {
      await s.stop();
    }
  });

  test("no ADC anywhere: exit 1 saying where it looked", async () => {
    const empty = join(dir, "empty-gcloud");
    mkdirSync(empty, { recursive: true });
    const r = await run(["-impersonate"], { CLOUDSDK_CONFIG: empty });
    expect(r.code).toBe(1);
    expect(r.errors).toHaveLength(1);
    expect(r.errors[0]).toContain(
      `-impersonate needs source credentials: set GOOGLE_APPLICATION_CREDENTIALS to a service account key or an authorized_user file, or run gcloud auth application-default login (no ${empty}/application_default_credentials.json)`,
    );
  });

  test("a missing, malformed or wrong-type ADC file: exit 1 naming it", async () => {
    const missing = join(dir, "absent.json");
    let r = await run(["-impersonate"], { GOOGLE_APPLICATION_CREDENTIALS: missing });
    expect(r.code).toBe(1);
    expect(r.errors[0]).toContain(`${missing}: cannot read the credentials file (no such file)`);

    const garbage = join(dir, "garbage.json");
    writeFileSync(garbage, "not json");
    r = await run(["-impersonate"], { GOOGLE_APPLICATION_CREDENTIALS: garbage });
    expect(r.code).toBe(1);
    expect(r.errors[0]).toContain(`${garbage}: not JSON`);

    const chained = join(dir, "impersonated.json");
    writeFileSync(
      chained,
      JSON.stringify({ type: "impersonated_service_account", service_account_impersonation_url: "x", source_credentials: {} }),
    );
    r = await run(["-impersonate"], { GOOGLE_APPLICATION_CREDENTIALS: chained });
    expect(r.code).toBe(1);
    expect(r.errors[0]).toContain(`${chained}: "type" is "impersonated_service_account"; -impersonate takes its source credentials from`);
  });

  test("a bad -iamURL: exit 1", async () => {
    const r = await run(["-impersonate", "-iamURL", "iamcredentials.googleapis.com"], { GOOGLE_APPLICATION_CREDENTIALS: sa.path });
    expect(r.code).toBe(1);
    expect(r.errors[0]).toContain(
      '-iamURL "iamcredentials.googleapis.com" is not an http(s) URL; the default is https://iamcredentials.googleapis.com',
    );
  });
});

describe("-federate", () => {
  test("external_account from GOOGLE_APPLICATION_CREDENTIALS: the STS token served; ID tokens from IAM with it", async () => {
    fake.reset();
    const s = await serve(["-federate", "-iamURL", fake.url], { GOOGLE_APPLICATION_CREDENTIALS: wif });
    try {
      expect(s.log()).toContain("using workload identity federation for credentials");
      const { access_token } = (await (await s.get(TOKEN)).json()) as { access_token: string };
      expect(fake.tokenInfo(access_token)).toMatchObject({ via: "sts", subject: expect.stringContaining("/subject/pod-1") });
      const id = await s.get(`${IDENTITY}?audience=https://svc.example.test`);
      expect(id.status).toBe(200);
      const { payload } = await jwtVerify(await id.text(), createRemoteJWKSet(new URL(fake.jwksUrl)), {
        audience: "https://svc.example.test",
      });
      expect(payload.email).toBe(EMAIL);
      expect(fake.requests.find((r) => r.endpoint === "generateIdToken")!.bearer).toBe(access_token);
      expect(fake.calls.sts).toBe(1);
      expect(s.log()).not.toContain(access_token);
    } finally {
      expect(await s.stop()).toBe(0);
    }
  });

  test("without GOOGLE_APPLICATION_CREDENTIALS: exit 1 with the Go emulator's message", async () => {
    const r = await run(["-federate"]);
    expect(r.code).toBe(1);
    expect(r.errors).toHaveLength(1);
    expect(r.errors[0]).toContain("GOOGLE_APPLICATION_CREDENTIAL must be set with --federate");
  });

  test("a service account key, or an external_account the library refuses: exit 1 naming the file", async () => {
    let r = await run(["-federate"], { GOOGLE_APPLICATION_CREDENTIALS: sa.path });
    expect(r.code).toBe(1);
    expect(r.errors[0]).toContain(
      `${sa.path}: "type" is "service_account"; workload identity federation needs an "external_account" credential configuration (gcloud iam workload-identity-pools create-cred-config); for a service account key use -serviceAccountFile`,
    );

    const both = join(dir, "both.json");
    writeFileSync(
      both,
      JSON.stringify({
        type: "external_account",
        audience: AUDIENCE,
        subject_token_type: "urn:ietf:params:oauth:token-type:jwt",
        credential_source: { file: "/a", url: "http://127.0.0.1:1/" },
      }),
    );
    r = await run(["-federate"], { GOOGLE_APPLICATION_CREDENTIALS: both });
    expect(r.code).toBe(1);
    expect(r.errors[0]).toContain(`${both}: No valid Identity Pool "credential_source" provided`);
  });
});

test("-iamURL without -impersonate or -federate, and -tokenURL without -tpm or -impersonate, are ignored with warnings", async () => {
  const s = await serve(["-iamURL", "http://127.0.0.1:1", "-tokenURL", "http://127.0.0.1:1/token"]);
  try {
    expect(s.log()).toContain("-iamURL is ignored without -impersonate or -federate");
    expect(s.log()).toContain("-tokenURL is ignored without -tpm or -impersonate");
  } finally {
    await s.stop();
  }
});
