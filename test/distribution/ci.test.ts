/**
 * CI hosting: the release workflow and the composite action, parsed and cross-checked against what they drive (the
 * build script's targets, the Dockerfile's arguments, the image's platforms), the workflow's version-facts step run
 * in this checkout, and the action's script run for real with a temporary GITHUB_ENV: from source, and from a
 * "release" served on loopback (checked against its SHA256SUMS, and refused when it does not match). Later steps'
 * clients, given only what the script exported, get the project id.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { $ } from "bun";
import { mkdirSync, mkdtempSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ARCHES } from "../../scripts/image-contents.ts";
import { TARGETS, versionFacts } from "../../scripts/build.ts";
import { hostExecutable } from "../helpers/executable.ts";

const ROOT = join(import.meta.dir, "../..");
const work = mkdtempSync(join(tmpdir(), "gce-ci-"));
const PROJECT = "action-project";

type Yaml = Record<string, any>;
const workflow = Bun.YAML.parse(await Bun.file(join(ROOT, ".github/workflows/release.yml")).text()) as Yaml;
const action = Bun.YAML.parse(await Bun.file(join(ROOT, "action.yml")).text()) as Yaml;
const script = await Bun.file(join(ROOT, "scripts/github-action.sh")).text();
const dockerfile = await Bun.file(join(ROOT, "Dockerfile")).text();
const buildScript = await Bun.file(join(ROOT, "scripts/build.ts")).text();

/** Server processes the action started, stopped in afterAll if a test did not. */
const started = new Set<number>();
const alive = (pid: number) => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

afterAll(() => {
  for (const pid of started) if (alive(pid)) process.kill(pid, "SIGKILL");
  rmSync(work, { recursive: true, force: true });
});

/** A GitHub Actions expression and a shell expansion, as the files spell them. */
const gh = (expression: string) => `\${{ ${expression} }}`;
const sh = (expansion: string) => `\${${expansion}}`;

const steps = (job: string) => workflow.jobs[job].steps as Yaml[];
const stepRunning = (job: string, text: string) => steps(job).find((s) => typeof s.run === "string" && s.run.includes(text));

describe("release workflow", () => {
  test("on a v* tag: builds every target with SHA256SUMS, checks and attaches them", async () => {
    expect(workflow.on).toEqual({ push: { tags: ["v*"] } });
    expect(workflow.permissions).toEqual({ contents: "write", packages: "write" });
    const uses = steps("executables").map((s) => s.uses ?? s.run);
    expect(uses.slice(0, 3)).toEqual(["actions/checkout@v4", "actions/setup-node@v4", "npm ci --no-audit --no-fund"]);
    // `npm run build:all` is scripts/build.ts --all: every target into dist/ plus dist/SHA256SUMS.
    expect(stepRunning("executables", "npm run build:all")!.run).toContain(`BUILD_VERSION="${sh("GITHUB_REF_NAME#v")}" npm run build:all`);
    const { scripts } = (await Bun.file(join(ROOT, "package.json")).json()) as { scripts: Record<string, string> };
    expect(scripts["build:all"]).toBe("bun scripts/build.ts --all");
    expect(buildScript).toContain('const outdir = opts.outdir ?? join(ROOT, "dist");');
    expect(stepRunning("executables", "sha256sum -c SHA256SUMS")!["working-directory"]).toBe("dist");
    const attach = stepRunning("executables", "gh release upload")!;
    expect(attach.run).toContain("dist/gce_metadata_server-* dist/SHA256SUMS");
    expect(attach.env).toEqual({ GH_TOKEN: gh("github.token") });
    // The action downloads the Linux assets by these names.
    const assets = script.match(/gce_metadata_server-linux-\w+/g)!;
    expect(assets.sort()).toEqual(["gce_metadata_server-linux-arm64", "gce_metadata_server-linux-x64"]);
    for (const a of assets) expect(Object.keys(TARGETS)).toContain(a.slice("gce_metadata_server-".length));
  });

  test("builds and pushes the multi-arch image with the Dockerfile's own build arguments", () => {
    const build = steps("image").find((s) => s.uses === "docker/build-push-action@v6")!;
    expect(
      steps("image")
        .map((s) => s.uses)
        .filter(Boolean),
    ).toEqual(["actions/checkout@v4", "docker/setup-buildx-action@v3", "docker/login-action@v3", "docker/build-push-action@v6"]);
    expect(build.with.push).toBe(true);
    expect(build.with.context).toBe(".");
    const platforms = (build.with.platforms as string).split(",");
    expect(platforms).toEqual(Object.values(ARCHES).map((a) => `linux/${a.docker}`));
    expect((build.with.tags as string).trim().split("\n")).toEqual([
      `${gh("steps.facts.outputs.image")}:${gh("steps.facts.outputs.version")}`,
      `${gh("steps.facts.outputs.image")}:latest`,
    ]);
    const buildArgs = (build.with["build-args"] as string)
      .trim()
      .split("\n")
      .map((l) => l.split("=")[0]);
    const dockerArgs = [...dockerfile.matchAll(/^ARG (BUILD_\w+)/gm)].map((m) => m[1]);
    expect(buildArgs.sort()).toEqual(dockerArgs.sort());
    expect(dockerfile).toContain(`--arch "${sh("TARGETARCH")}"`);
    const login = steps("image").find((s) => s.uses === "docker/login-action@v3")!;
    expect(login.with.registry).toBe("ghcr.io");
  });

  test("its version-facts step, run in this checkout, gives the image the commit and date scripts/build.ts bakes into the executables", async () => {
    const facts = steps("image").find((s) => s.id === "facts")!;
    const out = join(work, "facts-output");
    const r = await $`bash -euo pipefail -c ${facts.run}`
      .cwd(ROOT)
      .env({
        PATH: process.env.PATH ?? "/usr/bin:/bin",
        GITHUB_OUTPUT: out,
        GITHUB_REPOSITORY_OWNER: "Some-Owner",
        GITHUB_REF_NAME: "v1.2.3",
      })
      .quiet()
      .nothrow();
    expect(r.stderr.toString()).toBe("");
    expect(r.exitCode).toBe(0);
    const outputs = Object.fromEntries(
      (await Bun.file(out).text())
        .trim()
        .split("\n")
        .map((l) => l.split(/=(.*)/s).slice(0, 2)),
    );
    const fromGit = await versionFacts({});
    expect(outputs).toEqual({
      image: "ghcr.io/some-owner/gce-metadata-server",
      version: "1.2.3",
      commit: fromGit.commit,
      date: fromGit.date,
    });
  });
});

describe("composite action", () => {
  test("runs scripts/github-action.sh with every input mapped to the variable the script reads; its outputs come from the step", () => {
    expect(action.runs.using).toBe("composite");
    const [step] = action.runs.steps as Yaml[];
    expect(action.runs.steps).toHaveLength(1);
    expect(step!.id).toBe("start");
    expect(step!.shell).toBe("bash");
    expect(step!.run).toBe('"$GITHUB_ACTION_PATH/scripts/github-action.sh"');
    expect(statSync(join(ROOT, "scripts/github-action.sh")).mode & 0o111).toBe(0o111);
    const inputs = Object.keys(action.inputs);
    expect(inputs).toEqual(["config-file", "port", "flags", "release"]);
    for (const name of inputs) {
      const variable = `INPUT_${name.toUpperCase().replaceAll("-", "_")}`;
      expect(step!.env[variable]).toBe(gh(`inputs.${name}`));
      expect(script).toContain(variable);
      expect(action.inputs[name].required).toBe(false);
    }
    expect(action.inputs.port.default).toBe("8080");
    expect(action.inputs.release.default).toBe("");
    for (const [name, o] of Object.entries(action.outputs as Record<string, Yaml>)) {
      expect(o.value).toBe(gh(`steps.start.outputs.${name}`));
      expect(script).toContain(`echo "${name}=$`);
    }
  });
});

interface ActionRun {
  code: number;
  stdout: string;
  stderr: string;
  /** What the script appended to GITHUB_ENV and GITHUB_OUTPUT. */
  env: Record<string, string>;
  outputs: Record<string, string>;
}

const readKv = async (path: string) => {
  const f = Bun.file(path);
  if (!(await f.exists())) return {};
  return Object.fromEntries(
    (await f.text())
      .split("\n")
      .filter(Boolean)
      .map((l) => l.split(/=(.*)/s).slice(0, 2)),
  ) as Record<string, string>;
};

/** Run the action's script as the runner runs the step: inputs as INPUT_*, a fresh GITHUB_ENV and GITHUB_OUTPUT. */
async function runAction(name: string, inputs: Record<string, string>, extra: Record<string, string> = {}): Promise<ActionRun> {
  const dir = join(work, name);
  mkdirSync(join(dir, "runner-temp"), { recursive: true });
  const files = { GITHUB_ENV: join(dir, "github-env"), GITHUB_OUTPUT: join(dir, "github-output") };
  const p = Bun.spawn([join(ROOT, "scripts/github-action.sh")], {
    cwd: dir,
    env: {
      PATH: process.env.PATH ?? "/usr/bin:/bin",
      HOME: dir,
      ...files,
      RUNNER_TEMP: join(dir, "runner-temp"),
      GITHUB_ACTION_PATH: ROOT,
      GITHUB_ACTION_REPOSITORY: "owner/gce-metadata-server",
      ...inputs,
      ...extra,
    },
    stdin: "ignore",
    stdout: "pipe",
    stderr: "pipe",
  });
  const [stdout, stderr, code] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text(), p.exited]);
  const env = await readKv(files.GITHUB_ENV);
  if (env.GCE_METADATA_SERVER_PID) started.add(Number(env.GCE_METADATA_SERVER_PID));
  return { code, stdout, stderr, env, outputs: await readKv(files.GITHUB_OUTPUT) };
}

/** A later step: clients given only the exported variables (Node's gcp-metadata reads HOST; google-auth ROOT and IP). */
async function laterStepClients(exported: Record<string, string>): Promise<{ node: string; python: string }> {
  const env = { PATH: process.env.PATH ?? "/usr/bin:/bin", HOME: work, ...exported };
  const node = await $`node --input-type=module -e ${'import * as m from "gcp-metadata"; console.log(await m.project("project-id"))'}`
    .cwd(ROOT)
    .env(env)
    .quiet()
    .text();
  const python = await $`/usr/bin/python3 -c ${"import google.auth; print(google.auth.default()[1])"}`.cwd(work).env(env).quiet().text();
  return { node: node.trim(), python: python.trim() };
}

/** Stop the server as a job would (kill the exported pid); resolves once it has exited. */
async function stopServer(pid: number): Promise<void> {
  process.kill(pid, "SIGTERM");
  for (let i = 0; i < 100 && alive(pid); i++) await Bun.sleep(50);
  expect(alive(pid)).toBe(false);
  started.delete(pid);
}

describe("the action's script, run for real", () => {
  let configFile: string;
  beforeAll(async () => {
    configFile = join(work, "metadata.json");
    const text = (await Bun.file(join(ROOT, "config.json")).text()).replaceAll("example-project", PROJECT);
    await Bun.write(configFile, text);
  });

  test("from source: starts the server with the config file and flags, exports host:port three times, and a later step's clients get the project id", async () => {
    const r = await runAction("source", {
      INPUT_CONFIG_FILE: configFile,
      INPUT_PORT: "0",
      INPUT_FLAGS: "-metricsEnabled  -metricsPort 0",
      INPUT_RELEASE: "",
    });
    if (r.code !== 0) throw new Error(`github-action.sh exited ${r.code}:\n${r.stderr}`);
    const host = r.env.GCE_METADATA_HOST!;
    expect(host).toMatch(/^127\.0\.0\.1:\d+$/);
    expect(r.env).toMatchObject({ GCE_METADATA_IP: host, GCE_METADATA_ROOT: host });
    const pid = Number(r.env.GCE_METADATA_SERVER_PID);
    expect(alive(pid)).toBe(true);
    expect(r.outputs).toEqual({ url: `http://${host}`, host, pid: String(pid), log: r.env.GCE_METADATA_SERVER_LOG! });
    expect(r.stdout).toContain(`gce-metadata-server listening at http://${host} (pid ${pid}`);
    const log = await Bun.file(r.env.GCE_METADATA_SERVER_LOG!).text();
    expect(log).toContain("metrics listening"); // the flags were passed
    expect(log).toContain("version=0.1.0-dev"); // the checkout's source

    expect(await laterStepClients(r.env)).toEqual({ node: PROJECT, python: PROJECT });
    await stopServer(pid);
    expect(await Bun.file(r.env.GCE_METADATA_SERVER_LOG!).text()).toContain("shutting down signal=SIGTERM");
  }, 60_000);

  describe("release: the executable from the release URL", () => {
    const asset = `gce_metadata_server-linux-${process.arch === "arm64" ? "arm64" : "x64"}`;
    let releases: ReturnType<typeof Bun.serve>;
    let sums = "";
    const requested: string[] = [];
    beforeAll(async () => {
      const exe = await hostExecutable();
      const digest = new Bun.CryptoHasher("sha256").update(await Bun.file(exe).arrayBuffer()).digest("hex");
      releases = Bun.serve({
        hostname: "127.0.0.1",
        port: 0,
        fetch(req) {
          const path = new URL(req.url, "http://releases").pathname;
          requested.push(path);
          if (path === `/v9.8.7/${asset}`) return new Response(Bun.file(exe));
          if (path === "/v9.8.7/SHA256SUMS") return new Response(sums.replace("DIGEST", digest));
          return new Response("not found", { status: 404 });
        },
      });
    });
    afterAll(() => releases?.stop(true));

    test("verified against SHA256SUMS, then run: the later step's clients get the project id", async () => {
      sums = `${"0".repeat(64)}  gce_metadata_server-windows-x64.exe\nDIGEST  ${asset}\n`;
      requested.length = 0;
      const r = await runAction(
        "release",
        { INPUT_CONFIG_FILE: configFile, INPUT_PORT: "0", INPUT_RELEASE: "v9.8.7" },
        { GCE_METADATA_SERVER_RELEASE_URL: `http://127.0.0.1:${releases.port}` },
      );
      if (r.code !== 0) throw new Error(`github-action.sh exited ${r.code}:\n${r.stderr}`);
      expect(requested).toEqual([`/v9.8.7/${asset}`, "/v9.8.7/SHA256SUMS"]);
      const log = await Bun.file(r.env.GCE_METADATA_SERVER_LOG!).text();
      expect(log).toContain("version=9.8.7-dist"); // the downloaded executable (test/helpers/executable.ts's facts)
      expect(await laterStepClients(r.env)).toEqual({ node: PROJECT, python: PROJECT });
      await stopServer(Number(r.env.GCE_METADATA_SERVER_PID));
    }, 60_000);

    test("a download that does not match SHA256SUMS is not run and nothing is exported", async () => {
      sums = `${"ab".repeat(32)}  ${asset}\n`;
      const r = await runAction(
        "tampered",
        { INPUT_PORT: "0", INPUT_RELEASE: "v9.8.7" },
        { GCE_METADATA_SERVER_RELEASE_URL: `http://127.0.0.1:${releases.port}` },
      );
      expect(r.code).toBe(1);
      expect(r.stderr).toContain(`::error::gce-metadata-server: ${asset} does not match the release's SHA256SUMS; not running it`);
      expect(r.env).toEqual({});
    }, 30_000);
  });
});
