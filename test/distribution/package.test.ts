/**
 * The published package: `npm pack`, installed with npm into a fresh project as a user would (the tarball, and its
 * dependencies from the npm cache or registry), then `bun test` there on the README's "Use it in your own tests"
 * file, verbatim, and on one more file; and the installed `gce_metadata_server` command serves the bundled config.
 */
import { afterAll, beforeAll, expect, test } from "bun:test";
import { mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { listeningUrl, runCli } from "../helpers/cli.ts";

const ROOT = join(import.meta.dir, "../..");
const work = mkdtempSync(join(tmpdir(), "gce-package-"));
const project = join(work, "consumer");
const pkg = (await Bun.file(join(ROOT, "package.json")).json()) as { name: string; version: string; files: string[] };
/** The consumer's environment: Bun on PATH (as `bun add` users have it), nothing pointing at Google or a server. */
const env = {
  PATH: `${dirname(process.execPath)}:${process.env.PATH ?? "/usr/bin:/bin"}`,
  HOME: join(work, "home"),
  CLOUDSDK_CONFIG: join(work, "home", "gcloud"),
  npm_config_cache: process.env.npm_config_cache ?? join(process.env.HOME ?? work, ".npm"),
};

let packed: { filename: string; files: Array<{ path: string }> };

async function run(cmd: string[], cwd: string): Promise<{ code: number; stdout: string; stderr: string }> {
  const p = Bun.spawn(cmd, { cwd, env, stdin: "ignore", stdout: "pipe", stderr: "pipe" });
  const [stdout, stderr, code] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text(), p.exited]);
  return { code, stdout, stderr };
}

/** The first ```ts block of a README section. */
async function readmeExample(heading: string): Promise<string> {
  const readme = await Bun.file(join(ROOT, "README.md")).text();
  const start = readme.indexOf(`\n${heading}\n`);
  if (start < 0) throw new Error(`README.md has no "${heading}" section`);
  const m = /```ts\n([\s\S]*?)```/.exec(readme.slice(start));
  if (!m) throw new Error(`README.md's "${heading}" section has no ts block`);
  return m[1]!;
}

/** More than the README shows: the package.json export, applyEnv's restore, and an ID token verified with jose. */
const MORE = `import { expect, test } from "bun:test";
import { createRemoteJWKSet, jwtVerify } from "jose";
import { GoogleAuth } from "google-auth-library";
import { DEFAULT_CONFIG_TEXT, MetadataServer } from "gce-metadata-server";
import meta from "gce-metadata-server/package.json";

test("exports, applyEnv's restore, and an ID token from google-auth-library that verifies with the server's keys", async () => {
  expect(meta.name).toBe("gce-metadata-server");
  expect(DEFAULT_CONFIG_TEXT).toContain('"projectId": "example-project"');
  const server = new MetadataServer({ serverConfig: { port: 0 } });
  await server.start();
  try {
    const target: Record<string, string | undefined> = { GCE_METADATA_HOST: "elsewhere:1" };
    const undo = server.applyEnv(target);
    expect(target).toEqual({ GCE_METADATA_HOST: server.host, GCE_METADATA_IP: server.host, GCE_METADATA_ROOT: server.host });
    undo();
    expect(target).toEqual({ GCE_METADATA_HOST: "elsewhere:1" });

    const restore = server.applyEnv();
    try {
      const audience = "https://consumer.example.com";
      const client = await new GoogleAuth().getIdTokenClient(audience);
      const token = await client.idTokenProvider.fetchIdToken(audience);
      const jwks = createRemoteJWKSet(new URL(server.url + "/oauth2/v3/certs"));
      const { payload } = await jwtVerify(token, jwks, { audience, issuer: "https://accounts.google.com" });
      expect(payload.email).toBe("123456789012-compute@developer.gserviceaccount.com");
    } finally {
      restore();
    }
  } finally {
    await server.stop();
  }
});
`;

beforeAll(async () => {
  mkdirSync(join(work, "home"), { recursive: true });
  mkdirSync(project);
  const pack = await run(["npm", "pack", "--json", "--pack-destination", work], ROOT);
  if (pack.code !== 0) throw new Error(`npm pack failed: ${pack.stderr}`);
  packed = (JSON.parse(pack.stdout) as (typeof packed)[])[0]!;
  await Bun.write(join(project, "package.json"), JSON.stringify({ name: "consumer", private: true, type: "module" }));
  // As the README says: npm install --save-dev gce-metadata-server (here the tarball); dependencies from the cache
  // when it has them.
  const install = await run(
    ["npm", "install", "--save-dev", "--prefer-offline", "--no-audit", "--no-fund", "--loglevel=error", join(work, packed.filename)],
    project,
  );
  if (install.code !== 0) throw new Error(`npm install of the tarball failed: ${install.stderr}`);
}, 180_000);

afterAll(() => rmSync(work, { recursive: true, force: true }));

test("npm pack holds the library, the command and the bundled config, and nothing of the repository's own", () => {
  expect(packed.filename).toBe(`${pkg.name}-${pkg.version}.tgz`);
  const paths = packed.files.map((f) => f.path);
  expect(paths).toContain("src/index.ts");
  expect(paths).toContain("src/cli.ts");
  expect(paths).toContain("config.json");
  expect(paths).toContain("README.md");
  expect(paths.filter((p) => !p.startsWith("src/") && !["config.json", "README.md", "package.json", "LICENSE"].includes(p))).toEqual([]);
  expect(paths.filter((p) => /\.test\.ts$|^test\/|^scripts\/|node_modules/.test(p))).toEqual([]);
});

test("installed into a fresh project, `bun test` passes the README's example verbatim and a test of exports, applyEnv and ID tokens", async () => {
  const installed = (await Bun.file(join(project, "node_modules", pkg.name, "package.json")).json()) as Record<string, unknown>;
  expect(installed.private).toBeUndefined();
  expect((await Bun.file(join(project, "package.json")).json()).devDependencies[pkg.name]).toStartWith("file:");
  await Bun.write(join(project, "readme.test.ts"), await readmeExample("## Use it in your own tests"));
  await Bun.write(join(project, "more.test.ts"), MORE);
  const r = await run([process.execPath, "test"], project);
  const out = r.stdout + r.stderr;
  if (r.code !== 0) throw new Error(`bun test in the consumer project failed:\n${out}`);
  expect(out).toContain("(pass) the code under test sees the VM, its changes, and gets tokens");
  expect(out).toContain(
    "(pass) exports, applyEnv's restore, and an ID token from google-auth-library that verifies with the server's keys",
  );
  expect(out).toMatch(/^ 2 pass$/m);
  expect(out).toMatch(/^ 0 fail$/m);
}, 60_000);

test("the installed gce_metadata_server command (run through Bun) serves the bundled config", async () => {
  const bin = join(project, "node_modules", ".bin", "gce_metadata_server");
  const v = await run([bin, "-version"], project);
  expect(v.code).toBe(0);
  // Run from source, as installed: the package version marked -dev (only built executables carry date and commit).
  expect(v.stdout).toBe(`Version: ${pkg.version}-dev\nDate: unknown\nCommit: unknown\n`);
  const p = runCli(["-port", ":0"], { command: [bin], cwd: project, env });
  try {
    const url = await listeningUrl(p);
    const res = await fetch(`${url}/computeMetadata/v1/project/project-id`, { headers: { "Metadata-Flavor": "Google" } });
    expect(await res.text()).toBe("example-project");
    expect(p.stderr()).toContain("serving the bundled default config (project example-project)");
  } finally {
    expect(await p.stop()).toBe(0);
  }
});
