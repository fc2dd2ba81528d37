/**
 * `doctor` against a live server, with the environment a client would have: all clear; then with
 * GOOGLE_APPLICATION_CREDENTIALS set, with gcloud's ADC file in a temporary CLOUDSDK_CONFIG, with the variables
 * disagreeing, with the server down, with tokens failing. Exit 1 exactly when a PROBLEM line is printed; no token
 * or key ever appears in the output.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdirSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { diagnose, formatFinding } from "../../src/cli/doctor.ts";
import { CredentialError, MetadataServer } from "../../src/index.ts";
import { tempDir } from "../dynamic/helpers.ts";
import { runCliToExit } from "../helpers/cli.ts";

let server: MetadataServer;
const dir = tempDir("doctor-");
const gcloud = join(dir, "gcloud");
const EMAIL = "123456789012-compute@developer.gserviceaccount.com";

/** The environment `eval "$(gce_metadata_server env)"` gives, with an empty gcloud config. */
const clientEnv = (extra: Record<string, string | undefined> = {}) => ({
  HOME: dir,
  CLOUDSDK_CONFIG: gcloud,
  GCE_METADATA_HOST: server.host,
  GCE_METADATA_IP: server.host,
  GCE_METADATA_ROOT: server.host,
  METADATA_SERVER_DETECTION: "assume-present",
  ...extra,
});
const doctor = async (env: Record<string, string | undefined>) => {
  const out = await runCliToExit(["doctor"], { env });
  return { ...out, lines: out.stdout.trimEnd().split("\n") };
};

beforeAll(async () => {
  mkdirSync(gcloud, { recursive: true });
  server = new MetadataServer({ serverConfig: { port: 0 } });
  await server.start();
});
afterAll(async () => {
  await server.stop();
  rmSync(dir, { recursive: true, force: true });
});

describe("doctor against a live server", () => {
  test("all clear: exit 0, one line per finding, no token printed", async () => {
    const out = await doctor(clientEnv());
    expect(out.code).toBe(0);
    expect(out.stderr).toBe("");
    expect(out.lines).toEqual([
      `ok      GCE_METADATA_HOST, GCE_METADATA_IP, GCE_METADATA_ROOT all name ${server.host}`,
      "ok      METADATA_SERVER_DETECTION=assume-present: gcp-metadata uses the server without probing",
      `ok      no GOOGLE_APPLICATION_CREDENTIALS and no gcloud ADC file (${gcloud}/application_default_credentials.json): Application Default Credentials fall through to the metadata server`,
      expect.stringMatching(/^note {4}metadata\.google\.internal (does not resolve|resolves to )/),
      `ok      ${server.url}/ answers with Metadata-Flavor: Google (the on-GCE probe of Go, Python, Java and .NET)`,
      "ok      the server answers as a metadata server: project example-project",
      expect.stringMatching(new RegExp(`^ok {6}access tokens are served for ${EMAIL} \\(expires in \\d+ s\\)$`)),
      `ok      identity tokens are served for ${EMAIL}`,
    ]);
    expect(out.stdout).not.toMatch(/ya29\.|eyJ/);
  });

  test("GOOGLE_APPLICATION_CREDENTIALS set: exit 1 and the fix; the file's secrets are not printed", async () => {
    const key = join(dir, "key.json");
    writeFileSync(
      key,
      JSON.stringify({ type: "service_account", client_email: "k@p.iam.gserviceaccount.com", private_key: "SECRET-KEY-MATERIAL" }),
    );
    const out = await doctor(clientEnv({ GOOGLE_APPLICATION_CREDENTIALS: key }));
    expect(out.code).toBe(1);
    expect(out.lines).toContain(
      `PROBLEM GOOGLE_APPLICATION_CREDENTIALS=${key} (service_account): every SDK's Application Default Credentials use it before the metadata server; fix: unset GOOGLE_APPLICATION_CREDENTIALS`,
    );
    expect(out.stdout).not.toContain("SECRET-KEY-MATERIAL");
    expect(out.lines.filter((l) => l.startsWith("PROBLEM"))).toHaveLength(1);
  });

  test("gcloud's ADC file in CLOUDSDK_CONFIG: exit 1 and the fix", async () => {
    const config = join(dir, "gcloud-with-adc");
    mkdirSync(config, { recursive: true });
    const adc = join(config, "application_default_credentials.json");
    writeFileSync(adc, JSON.stringify({ type: "authorized_user", client_id: "c", client_secret: "SECRET", refresh_token: "1//SECRET" }));
    const out = await doctor(clientEnv({ CLOUDSDK_CONFIG: config }));
    expect(out.code).toBe(1);
    expect(out.lines).toContain(
      `PROBLEM gcloud's ADC file ${adc} (authorized_user) exists: every SDK's Application Default Credentials use it before the metadata server; fix: gcloud auth application-default revoke, or move the file away, or point CLOUDSDK_CONFIG at another directory`,
    );
    expect(out.stdout).not.toContain("SECRET");
  });

  test("variables that disagree or are missing: one line each, with the fix", async () => {
    const out = await doctor(clientEnv({ GCE_METADATA_IP: "127.0.0.1:1", GCE_METADATA_ROOT: undefined }));
    expect(out.code).toBe(1);
    expect(out.lines[0]).toBe(
      `PROBLEM the variables name different servers (GCE_METADATA_HOST=${server.host}, GCE_METADATA_IP=127.0.0.1:1): each SDK reads a different one; fix: give all three the same host:port: eval "$(gce_metadata_server env -url http://${server.host})"`,
    );
    expect(out.lines[1]).toBe(
      `PROBLEM GCE_METADATA_ROOT is unset: gcloud reads metadata through it; fix: export GCE_METADATA_ROOT=${server.host} (or eval "$(gce_metadata_server env -url http://${server.host})")`,
    );
  });

  test("METADATA_SERVER_DETECTION=none and NO_GCE_CHECK=true turn the server off", async () => {
    const out = await doctor(clientEnv({ METADATA_SERVER_DETECTION: "none", NO_GCE_CHECK: "true" }));
    expect(out.code).toBe(1);
    expect(out.lines).toContain(
      "PROBLEM METADATA_SERVER_DETECTION=none: gcp-metadata never uses a metadata server; fix: export METADATA_SERVER_DETECTION=assume-present",
    );
    expect(out.lines).toContain(
      "PROBLEM NO_GCE_CHECK=true: Python's google-auth and Java's library never use a metadata server; fix: unset NO_GCE_CHECK",
    );
  });

  test("nothing listening where the variables point: exit 1", async () => {
    const out = await doctor({
      ...clientEnv(),
      GCE_METADATA_HOST: "127.0.0.1:1",
      GCE_METADATA_IP: "127.0.0.1:1",
      GCE_METADATA_ROOT: "127.0.0.1:1",
    });
    expect(out.code).toBe(1);
    expect(out.lines.at(-1)).toMatch(/^PROBLEM nothing answers at http:\/\/127\.0\.0\.1:1\/ \(.+\); fix: start the server there/);
  });
});

describe("findings the command line cannot easily stage", () => {
  const noLookup = async () => {
    throw Object.assign(new Error("not found"), { code: "ENOTFOUND" });
  };

  test("metadata.google.internal: what it resolves to, and whether that matters", async () => {
    const resolved = await diagnose(clientEnv(), { lookup: async () => ["169.254.169.254"] });
    expect(resolved.map(formatFinding)).toContain(
      `note    metadata.google.internal resolves to 169.254.169.254: clients that ignore GCE_METADATA_HOST (java-core's MetadataConfig) go there, not to ${server.host}`,
    );
    const bare = await diagnose({ HOME: dir, CLOUDSDK_CONFIG: gcloud }, { lookup: noLookup });
    expect(bare.map(formatFinding)).toContain(
      'PROBLEM metadata.google.internal does not resolve (ENOTFOUND) and GCE_METADATA_HOST is unset: clients find no metadata server; fix: eval "$(gce_metadata_server env -url http://127.0.0.1:8080)"',
    );
    // With nothing to reach, no server line follows.
    expect(bare.at(-1)!.text).toContain("does not resolve");
  });

  test("a server whose tokens fail, and one that answers without Metadata-Flavor", async () => {
    const failing = new MetadataServer({
      serverConfig: { port: 0 },
      credentials: {
        describe: () => ({ type: "broken" }),
        accessToken: () => Promise.reject(new CredentialError("TOKEN_EXCHANGE_FAILED", "the token endpoint said no")),
        idToken: () => Promise.reject(new CredentialError("TOKEN_EXCHANGE_FAILED", "the token endpoint said no")),
      },
    });
    await failing.start();
    const open = Bun.serve({
      hostname: "127.0.0.1",
      port: 0,
      fetch: (req) =>
        new Response(req.url.endsWith("numeric-project-id") ? "42" : "open-project", {
          headers: { "Metadata-Flavor": "Google", "Content-Type": "application/text" },
        }),
    });
    try {
      const env = (host: string) => ({ ...clientEnv(), GCE_METADATA_HOST: host, GCE_METADATA_IP: host, GCE_METADATA_ROOT: host });
      const broken = (await diagnose(env(failing.host), { lookup: noLookup })).map(formatFinding);
      expect(broken).toContain(
        `PROBLEM the token request for ${EMAIL} answered 500: Failed to obtain an access token for ${EMAIL}: the token endpoint said no; fix: see the server's log for why the credential source failed`,
      );
      expect(broken.some((l) => l.startsWith(`PROBLEM the identity request for ${EMAIL} answered 500`))).toBe(true);
      const lax = (await diagnose(env(`127.0.0.1:${open.port}`), { lookup: noLookup })).map(formatFinding);
      expect(lax).toContain(
        `PROBLEM http://127.0.0.1:${open.port} answers without Metadata-Flavor: Google, so any request forgery can read it; fix: serve it with this server, which refuses such requests (403) as GCE does`,
      );
    } finally {
      await failing.stop();
      await open.stop(true);
    }
  });
});
