/**
 * Client libraries in other languages, unchanged, against a running server: Go's cloud.google.com/go/compute/metadata
 * and Python's google-auth (Debian's packages), and the gcloud CLI. The test command installs the Debian packages.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createRemoteJWKSet, decodeJwt, jwtVerify } from "jose";
import { MetadataServer } from "../../src/index.ts";

const FIXTURES = join(import.meta.dir, "fixtures");
const EMAIL = "123456789012-compute@developer.gserviceaccount.com";
let server: MetadataServer;
let env: Record<string, string>;
const scratch: string[] = [];
const tempDir = (prefix: string) => {
  const d = mkdtempSync(join(tmpdir(), prefix));
  scratch.push(d);
  return d;
};

beforeAll(async () => {
  server = new MetadataServer({ serverConfig: { port: 0 } });
  await server.start();
  const home = tempDir("clients-");
  env = {
    PATH: process.env.PATH ?? "/usr/bin:/bin",
    HOME: home,
    GCE_METADATA_HOST: server.host,
    GCE_METADATA_IP: server.host,
    GCE_METADATA_ROOT: server.host,
    CLOUDSDK_CONFIG: join(home, "gcloud"),
  };
});
afterAll(async () => {
  await server.stop();
  // Go's module cache is read-only; chmod it writable so it can be removed.
  for (const d of scratch) {
    Bun.spawnSync(["chmod", "-R", "u+w", d]);
    rmSync(d, { recursive: true, force: true });
  }
});

async function run(cmd: string[], extraEnv: Record<string, string> = {}) {
  const missing = cmd[0]!.startsWith("/") ? !(await Bun.file(cmd[0]!).exists()) : !Bun.which(cmd[0]!);
  if (missing)
    throw new Error(
      `${cmd[0]} is not installed (the test command installs python3-google-auth, golang-go and golang-google-cloud-compute-metadata-dev; gcloud comes with the machine)`,
    );
  const p = Bun.spawn(cmd, { env: { ...env, ...extraEnv }, stdout: "pipe", stderr: "pipe" });
  const [stdout, stderr, code] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text(), p.exited]);
  if (code !== 0) throw new Error(`${cmd.join(" ")} exited ${code}: ${stderr}`);
  return stdout;
}

async function serverToken(): Promise<string> {
  const r = await fetch(`${server.url}/computeMetadata/v1/instance/service-accounts/default/token`, {
    headers: { "Metadata-Flavor": "Google" },
  });
  return ((await r.json()) as { access_token: string }).access_token;
}

describe("Go: cloud.google.com/go/compute/metadata", () => {
  test("reads every helper's value; 404s become NotDefinedError", async () => {
    const gopath = tempDir("gopath-");
    const out = JSON.parse(
      await run(["go", "run", join(FIXTURES, "metadata_go.go")], {
        GOPATH: `/usr/share/gocode:${gopath}`,
        GO111MODULE: "off",
        GOCACHE: join(gopath, "cache"),
        GOFLAGS: "",
      }),
    );
    expect(out.errors).toEqual({});
    expect(out).toMatchObject({
      onGCE: true,
      projectID: "example-project",
      numericProjectID: "123456789012",
      zone: "us-central1-a",
      instanceID: "4520031799277581759",
      instanceName: "vm-1",
      hostname: "vm-1.us-central1-a.c.example-project.internal",
      internalIP: "10.128.0.2",
      externalIP: "203.0.113.10",
      tags: ["http-server"],
      scopes: ["https://www.googleapis.com/auth/cloud-platform"],
      email: EMAIL,
      attributes: ["enable-oslogin", "startup-script"],
      projectAttributes: ["google-compute-default-region", "google-compute-default-zone"],
      enableOslogin: "FALSE",
      missingAttributeNotDefined: true,
      universeUnderscoreNotDefined: true,
    });
    expect(JSON.parse(out.token)).toMatchObject({ token_type: "Bearer" });
    const id = decodeJwt(out.identity);
    expect(id.aud).toBe("https://go.example.com");
    expect((id.google as { compute_engine: { license_id: string[] } }).compute_engine.license_id).toEqual(["2147286739765738111"]);
  }, 120_000);
});

describe("Python: google-auth", () => {
  test("detects GCE, reads metadata and refreshes compute credentials", async () => {
    const out = JSON.parse(await run(["/usr/bin/python3", join(FIXTURES, "google_auth_py.py")]));
    expect(out).toMatchObject({
      ping: true,
      projectId: "example-project",
      serviceAccountInfo: { aliases: ["default"], email: EMAIL, scopes: ["https://www.googleapis.com/auth/cloud-platform"] },
      zone: "projects/123456789012/zones/us-central1-a",
      disks: [{ deviceName: "persistent-disk-0", index: 0, interface: "SCSI", mode: "READ_WRITE", type: "PERSISTENT" }],
      defaultType: "google.auth.compute_engine.credentials.Credentials",
      defaultProject: "example-project",
      email: EMAIL,
    });
    expect(out.token).toBe(await serverToken());
    const expiresIn = (Date.parse(`${out.expiry}Z`) - Date.now()) / 1000;
    expect(expiresIn).toBeGreaterThan(3000);
  }, 60_000);
});

describe("gcloud", () => {
  test("finds the account and project, prints the server's access token and a verifiable ID token", async () => {
    const config = JSON.parse(await run(["gcloud", "config", "list", "--format=json"]));
    expect(config.core).toMatchObject({ account: EMAIL, project: "example-project" });
    expect((await run(["gcloud", "auth", "print-access-token"])).trim()).toBe(await serverToken());
    const jwks = createRemoteJWKSet(new URL(`${server.url}/oauth2/v3/certs`));
    const verify = async (args: string[]) => {
      const idToken = (await run(["gcloud", "auth", "print-identity-token", "--audiences=https://gcloud.example.com", ...args])).trim();
      return (await jwtVerify(idToken, jwks, { audience: "https://gcloud.example.com", issuer: "https://accounts.google.com" })).payload;
    };
    const standard = await verify([]);
    expect(standard.sub).toMatch(/^\d{21}$/);
    expect(standard.email).toBeUndefined();
    const full = await verify(["--token-format=full", "--include-license"]);
    expect(full.email).toBe(EMAIL);
    expect((full.google as { compute_engine: { license_id: string[] } }).compute_engine.license_id).toEqual(["2147286739765738111"]);
  }, 120_000);
});
