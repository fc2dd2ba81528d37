/**
 * examples/: each SDK example whose toolchain this machine has runs through its own run.sh against a live server,
 * with nothing in its environment but PATH, HOME and its toolchain's settings (so run.sh alone points the SDK at the
 * server), and prints values that must be the server's own: a project and account only this test's config has, the
 * access token the server hands out, an ID token that verifies against the server's keys. The Envoy and Compose
 * files are parsed and what they point at is exercised against a server too.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdirSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { createRemoteJWKSet, jwtVerify } from "jose";
import { LAYER } from "../../scripts/image-contents.ts";
import { parseFlags } from "../../src/cli/flags.ts";
import { MetadataServer } from "../../src/index.ts";
import { listeningUrl, runCli, type CliProcess } from "../helpers/cli.ts";
import { hostExecutable } from "../helpers/executable.ts";

const ROOT = join(import.meta.dir, "../..");
const EXAMPLES = join(ROOT, "examples");
const PROJECT = "examples-run-project";
const EMAIL = `examples-sa@${PROJECT}.iam.gserviceaccount.com`;
const AUDIENCE = "https://example.com"; // what each example asks an ID token for
const work = mkdtempSync(join(tmpdir(), "gce-examples-"));

let server: MetadataServer;
type Example = "node" | "python" | "go" | "java" | "gcloud";
/** Each example's run, started together in beforeAll (the Go build dominates) and awaited by its own test. */
const runs = new Map<Example, Promise<Record<string, string>>>();

/** Toolchain settings only: where the SDKs live on Debian, and private caches. */
function toolchainEnv(name: Example): Record<string, string> {
  const home = join(work, `home-${name}`);
  mkdirSync(home, { recursive: true });
  const base = { PATH: process.env.PATH ?? "/usr/bin:/bin", HOME: home };
  switch (name) {
    case "python":
      return { ...base, PYTHON: "/usr/bin/python3" }; // Debian's python3-google-auth, not a pyenv shim's
    case "go":
      // Debian's Go packages in GOPATH mode: the module proxy is not reachable here, so go.mod is not used. The
      // build cache is kept between runs (.tmp/, like the test executable): a cold build takes about 20 s.
      return {
        ...base,
        GO111MODULE: "off",
        GOPATH: `/usr/share/gocode:${join(home, "go")}`,
        GOCACHE: join(ROOT, ".tmp", "go-build"),
        GOFLAGS: "",
      };
    case "gcloud":
      return { ...base, CLOUDSDK_CONFIG: join(home, "gcloud") };
    default:
      return base;
  }
}

const TOOLS: Record<Example, string> = { node: "node", python: "/usr/bin/python3", go: "go", java: "java", gcloud: "gcloud" };

async function runExample(name: Example): Promise<Record<string, string>> {
  const tool = TOOLS[name];
  if (!(tool.startsWith("/") ? await Bun.file(tool).exists() : Bun.which(tool))) {
    throw new Error(
      `${tool} is not installed: the test command installs the Debian packages in scripts/test.ts (gcloud comes with the machine)`,
    );
  }
  const p = Bun.spawn(["sh", join(EXAMPLES, name, "run.sh"), server.host], {
    cwd: work,
    env: toolchainEnv(name),
    stdin: "ignore",
    stdout: "pipe",
    stderr: "pipe",
  });
  const timer = setTimeout(() => p.kill("SIGKILL"), 150_000);
  const [out, err, code] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text(), p.exited]);
  clearTimeout(timer);
  if (code !== 0) throw new Error(`examples/${name}/run.sh exited ${code}:\n${err}`);
  const last = out.trim().split("\n").pop() ?? "";
  try {
    return JSON.parse(last);
  } catch {
    throw new Error(`examples/${name}/run.sh printed no JSON line:\n${out}\n${err}`);
  }
}

beforeAll(async () => {
  // The bundled VM with a project and account of this test's own, so every value printed is traceable to it.
  const configFile = join(work, "config.json");
  const text = readFileSync(join(ROOT, "config.json"), "utf8")
    .replaceAll("example-project", PROJECT)
    .replaceAll("123456789012-compute@developer.gserviceaccount.com", EMAIL);
  await Bun.write(configFile, text);
  server = new MetadataServer({ configFile, serverConfig: { port: 0 } });
  await server.start();
  for (const name of ["go", "java", "gcloud", "node", "python"] as Example[]) {
    const run = runExample(name);
    run.catch(() => {}); // reported by the example's own test
    runs.set(name, run);
  }
});

afterAll(async () => {
  await Promise.allSettled(runs.values());
  await server?.stop();
  // Go's module cache is read-only; make it writable so it can be removed.
  Bun.spawnSync(["chmod", "-R", "u+w", work]);
  rmSync(work, { recursive: true, force: true });
});

const get = (path: string) => fetch(`${server.url}/computeMetadata/v1/${path}`, { headers: { "Metadata-Flavor": "Google" } });

/** The access token the server hands out for the default account (its cache returns it to every client). */
async function serverToken(): Promise<string> {
  return ((await (await get("instance/service-accounts/default/token")).json()) as { access_token: string }).access_token;
}

async function verifyIdToken(token: string, audience = AUDIENCE): Promise<Record<string, unknown>> {
  const jwks = createRemoteJWKSet(new URL(`${server.url}/oauth2/v3/certs`));
  return (await jwtVerify(token, jwks, { audience, issuer: "https://accounts.google.com" })).payload;
}

describe("SDK examples through their run.sh", () => {
  test("node: gcp-metadata and google-auth-library", async () => {
    const out = await runs.get("node")!;
    expect(out).toMatchObject({
      onGCE: true,
      projectId: PROJECT,
      adcProjectId: PROJECT,
      zone: "projects/123456789012/zones/us-central1-a",
      email: EMAIL,
    });
    expect(out.accessToken).toBe(await serverToken());
    expect((await verifyIdToken(out.idToken!)).azp).toMatch(/^\d{21}$/);
  }, 160_000);

  test("python: google-auth", async () => {
    const out = await runs.get("python")!;
    expect(out).toMatchObject({ credentials: "google.auth.compute_engine.credentials.Credentials", projectId: PROJECT, email: EMAIL });
    expect(out.accessToken).toBe(await serverToken());
    // Debian's google-auth (1.5) predates fetch_id_token; newer ones print an ID token.
    if ("idToken" in out) await verifyIdToken(out.idToken!);
  }, 160_000);

  test("go: compute/metadata, oauth2/google and idtoken", async () => {
    const out = await runs.get("go")!;
    expect(out).toMatchObject({ onGCE: "true", projectId: PROJECT, adcProjectId: PROJECT, email: EMAIL, zone: "us-central1-a" });
    expect(out.accessToken).toBe(await serverToken());
    expect((await verifyIdToken(out.idToken!)).email).toBe(EMAIL); // idtoken asks for the full format
  }, 160_000);

  test("java: google-auth-library-java", async () => {
    const out = await runs.get("java")!;
    expect(out).toMatchObject({ credentials: "com.google.auth.oauth2.ComputeEngineCredentials", projectId: PROJECT, email: EMAIL });
    expect(out.accessToken).toBe(await serverToken());
    expect((await verifyIdToken(out.idToken!)).email).toBe(EMAIL);
  }, 160_000);

  test("gcloud: the account and project from the server, its access token and a full ID token", async () => {
    const out = await runs.get("gcloud")!;
    expect(out).toMatchObject({ account: EMAIL, project: PROJECT });
    expect(out.accessToken).toBe(await serverToken());
    expect((await verifyIdToken(out.idToken!)).email).toBe(EMAIL);
  }, 160_000);
});

type Yaml = Record<string, any>;
const parseYaml = async (path: string) => Bun.YAML.parse(await Bun.file(path).text()) as Yaml;
/** Where a server started with no -interface and -port listens: the default the files rely on. */
const DEFAULT_HOST = (() => {
  const f = parseFlags([]);
  return `${f.interface}${f.port}`;
})();

describe("configuration examples", () => {
  test("envoy: the gcp_authn filter fetches ID tokens through the `metadata` cluster, which points at the server; the URI it asks answers a token for the backend's audience", async () => {
    const envoy = await parseYaml(join(EXAMPLES, "envoy", "envoy.yaml"));
    const hcm = envoy.static_resources.listeners[0].filter_chains[0].filters[0].typed_config;
    const filters = hcm.http_filters as Yaml[];
    expect(filters.map((f) => f.name)).toEqual(["envoy.filters.http.gcp_authn", "envoy.filters.http.router"]);
    const authn = filters[0]!.typed_config;
    expect(authn["@type"]).toBe("type.googleapis.com/envoy.extensions.filters.http.gcp_authn.v3.GcpAuthnFilterConfig");
    const clusters = Object.fromEntries((envoy.static_resources.clusters as Yaml[]).map((c) => [c.name, c]));
    const metadata = clusters[authn.http_uri.cluster];
    expect(authn.http_uri.cluster).toBe("metadata");
    const address = metadata.load_assignment.endpoints[0].lb_endpoints[0].endpoint.address.socket_address;
    expect(`${address.address}:${address.port_value}`).toBe(DEFAULT_HOST);
    const uri = new URL(authn.http_uri.uri);
    expect(uri.hostname).toBe("metadata.google.internal");
    const audience = clusters.backend.metadata.typed_filter_metadata["envoy.filters.http.gcp_authn"].url;
    expect(audience).toBe("https://backend.example.com");
    // What the filter sends, with [AUDIENCE] replaced and the Metadata-Flavor header it adds.
    const path = `${uri.pathname}${uri.search}`.replace("%5BAUDIENCE%5D", "[AUDIENCE]").replace("[AUDIENCE]", audience);
    const res = await fetch(`${server.url}${path}`, { headers: { "Metadata-Flavor": "Google" } });
    expect(res.status).toBe(200);
    expect((await verifyIdToken(await res.text(), audience)).aud).toBe(audience);
    expect(hcm.route_config.virtual_hosts[0].routes[0].route.cluster).toBe("backend");
  });

  test("docker-compose: the app shares the server's network namespace and loopback; with the file's own flags and environment, gcloud gets the server's token", async () => {
    const dir = join(EXAMPLES, "docker-compose");
    const compose = await parseYaml(join(dir, "compose.yaml"));
    const { metadata, app } = compose.services;
    expect(resolve(dir, metadata.build)).toBe(ROOT);
    expect(await Bun.file(join(ROOT, "Dockerfile")).exists()).toBe(true);
    expect(metadata.read_only).toBe(true);
    const args = metadata.command as string[];
    const flags = parseFlags(args);
    expect(`${flags.interface}${flags.port}`).toBe(DEFAULT_HOST);
    const [hostPath, containerPath] = (metadata.volumes[0] as string).split(":");
    expect(flags.configFile).toBe(containerPath!);
    expect(await Bun.file(resolve(dir, hostPath!)).exists()).toBe(true);
    expect(metadata.healthcheck.test).toEqual(["CMD", LAYER.executable, "healthcheck", "-url", `http://${DEFAULT_HOST}`]);
    expect(app.network_mode).toBe("service:metadata");
    expect(app.depends_on).toEqual({ metadata: { condition: "service_healthy" } });
    expect(app.environment).toMatchObject({
      GCE_METADATA_HOST: DEFAULT_HOST,
      GCE_METADATA_IP: DEFAULT_HOST,
      GCE_METADATA_ROOT: DEFAULT_HOST,
    });

    // The server with the file's command (a free port instead of 8080, the volume's file at its host path), and the
    // app's command with the app's environment pointed at it.
    const hostArgs = args.map((a) => (a === flags.port ? ":0" : a === containerPath ? resolve(dir, hostPath!) : a));
    let p: CliProcess | undefined;
    try {
      p = runCli(hostArgs, { command: [await hostExecutable()], cwd: work });
      const url = await listeningUrl(p);
      const host = url.slice("http://".length);
      const env: Record<string, string> = { PATH: process.env.PATH ?? "/usr/bin:/bin", HOME: join(work, "home-compose") };
      for (const [k, v] of Object.entries(app.environment as Record<string, string>)) env[k] = v === DEFAULT_HOST ? host : v;
      env.CLOUDSDK_CONFIG = join(work, "compose-gcloud");
      const [cmd, ...rest] = app.command as string[];
      const r = Bun.spawn([cmd!, ...rest], { env, stdout: "pipe", stderr: "pipe", stdin: "ignore" });
      const [out, err, code] = await Promise.all([new Response(r.stdout).text(), new Response(r.stderr).text(), r.exited]);
      if (code !== 0) throw new Error(`the app's command exited ${code}: ${err}`);
      expect(out).toContain("account = 123456789012-compute@developer.gserviceaccount.com\n");
      expect(out).toContain("project = example-project\n");
      const token = out.trim().split("\n").pop();
      const fromServer = await fetch(`${url}/computeMetadata/v1/instance/service-accounts/default/token`, {
        headers: { "Metadata-Flavor": "Google" },
      });
      expect(token).toBe(((await fromServer.json()) as { access_token: string }).access_token);
    } finally {
      await p?.stop();
    }
  }, 60_000);
});
