/**
 * The documentation's shell examples, run.
 *
 * Convention: every shell block (```sh, ```bash, ```console) and every block of shown output (``` with no language)
 * in README.md and docs/*.md is either run here or marked, on the nearest non-blank line above its fence,
 * `<!-- not run: <why> -->` (real Google, a hardware TPM, Docker, Kubernetes, changes to the host's network, the
 * test suite itself). The first test fails on an unmarked block that no runner below takes, and on a runner whose
 * block is gone, so a new example is either run or says why not.
 *
 * A runner finds its block by the block's first line (a trailing `# comment` aside), and runs the block's own commands (markdown.ts `commandsOf`):
 * in bash, with `gce_metadata_server` on PATH as the source CLI, in a scratch directory and HOME. The documented
 * address (`127.0.0.1:8080`, `localhost:8080`) is replaced by a live server's, started on a free port (a command
 * that starts a server gets `-port :0` appended). Then it asserts what the page shows: the output printed beside
 * the command, the shown output block, or the property the text states.
 */
import { afterAll, describe, expect, test } from "bun:test";
import { existsSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { LATENCY_BUCKETS } from "../../src/observability/metrics.ts";
import { type Block, blockAfter, commandsOf, ROOT, shellBlocks, stripComment } from "./markdown.ts";
import { type Served, removeScratch, serve, sh, stopAll, tempDir } from "./shell.ts";

afterAll(async () => {
  await stopAll();
  removeScratch();
});

const FLAVOR = { "Metadata-Flavor": "Google" };
const DOC_ADDRESS = /(?:127\.0\.0\.1|localhost):8080/g;

/** A command as the page writes it, pointed at a live server. */
const at = (command: string, server: Served): string => command.replace(DOC_ADDRESS, server.hostPort);

/** Run a command line and expect it to succeed; its standard output. */
async function ok(command: string, options: Parameters<typeof sh>[1] = {}): Promise<string> {
  const r = await sh(command, options);
  if (r.code !== 0) throw new Error(`\`${command}\` exited ${r.code}:\n${r.stdout}${r.stderr}`);
  return r.stdout;
}

/** `# {"a":1}` under a command (after its continuation lines): the output the page shows for it. */
function shownAfter(block: Block, command: string): string | undefined {
  let i = block.lines.findIndex((l) => {
    const text = stripComment(l.replace(/\\$/, "")).trim();
    return text !== "" && command.startsWith(text);
  });
  while (i >= 0 && block.lines[i]!.endsWith("\\")) i++;
  const next = block.lines[i + 1]?.trim();
  return next?.startsWith("# {") ? next.slice(2) : undefined;
}

/** A log line with its time cut off: `ERROR …`. */
const unstamped = (line: string): string => line.replace(/^\S+Z\s+/, "");

/** The ERROR line a start-up printed, without its time. */
function errorLine(stderr: string): string {
  const line = stderr.split("\n").find((l) => / ERROR /.test(l));
  if (!line) throw new Error(`no ERROR line in:\n${stderr}`);
  return unstamped(line).replace(/^ERROR\s+/, "");
}

const decodeJwt = (jwt: string): Record<string, any> => JSON.parse(Buffer.from(jwt.split(".")[1]!, "base64url").toString());

interface Runner {
  /** Where the block is (README.md, docs/x.md); several pages may show the same example. */
  files: string[];
  /** The block's first line, exactly. */
  first: string;
  run(block: Block): Promise<void>;
}

const RUNNERS: Runner[] = [
  {
    files: ["README.md"],
    first: "curl -s -H 'Metadata-Flavor: Google' http://127.0.0.1:8080/computeMetadata/v1/project/project-id",
    async run(block) {
      const server = await serve("gce_metadata_server", "-port :0");
      const [id, instance, token, identity] = await Promise.all(commandsOf(block).map((c) => ok(at(c, server))));
      expect(id).toBe("example-project");
      expect(JSON.parse(instance!).zone).toBe("projects/123456789012/zones/us-central1-a");
      expect(Object.keys(JSON.parse(token!))).toEqual(["access_token", "expires_in", "token_type"]);
      expect(JSON.parse(token!).access_token).toStartWith("ya29.");
      const claims = decodeJwt(identity!);
      expect(claims.aud).toBe("https://example.com");
      expect(claims.google.compute_engine.project_id).toBe("example-project");
      await server.stop();
    },
  },
  {
    files: ["README.md"],
    first: "npx gce_metadata_server -version",
    async run(block) {
      const [version, start, help] = commandsOf(block);
      expect(await ok(version!, { cwd: ROOT, timeoutMs: 60_000 })).toMatch(/^Version: \S+\nDate: \S+\nCommit: \S+\n$/);
      // npm start: the checkout's config.json, the control API on the metadata listener.
      const server = await serve(start!, "-port :0", { cwd: ROOT });
      const r = await fetch(`${server.url}/emulator/v1/status`, { headers: FLAVOR });
      expect(r.status).toBe(200);
      await server.stop();
      const usage = await ok(help!, { cwd: ROOT, timeoutMs: 60_000 });
      expect(usage).toContain("-watchConfig\n");
      expect(usage).toContain("(default true)");
    },
  },
  {
    files: ["README.md"],
    first: 'config.json: computeMetadata.v1.instance.disks[0].index: expected an integer, found the string "zero"',
    async run(block) {
      const bundled = JSON.parse(readFileSync(join(ROOT, "config.json"), "utf8"));
      bundled.computeMetadata.v1.instance.disks[0].index = "zero";
      const texts = [
        JSON.stringify(bundled, null, 2),
        // A trailing comma whose `}` is at line 3, column 44.
        '{\n  "computeMetadata": {\n    "v1": {"project": {"projectId": "p12"},}\n  }\n}\n',
      ];
      for (const [i, text] of texts.entries()) {
        const dir = tempDir();
        writeFileSync(join(dir, "config.json"), text);
        const r = await sh("gce_metadata_server -port :0", { cwd: dir });
        expect(r.code).toBe(1);
        expect(errorLine(r.stderr)).toBe(block.lines[i]!);
      }
    },
  },
  {
    files: ["README.md"],
    first: 'eval "$(gce_metadata_server env)"            # or: env -url http://127.0.0.1:9000, env -shell fish | source',
    async run(block) {
      const [env, doctor] = commandsOf(block);
      const set = await ok(
        `${env}; echo "$GCE_METADATA_HOST $GCE_METADATA_IP $GCE_METADATA_ROOT \${GOOGLE_APPLICATION_CREDENTIALS-unset}"`,
        {
          env: { GOOGLE_APPLICATION_CREDENTIALS: "/nowhere/key.json" },
        },
      );
      expect(set.trim()).toBe("127.0.0.1:8080 127.0.0.1:8080 127.0.0.1:8080 unset");
      // What that line sets, for a server on a free port: doctor finds everything in order.
      const server = await serve("gce_metadata_server", "-port :0");
      const r = await sh(doctor!, { env: { ...pointedAt(server), METADATA_SERVER_DETECTION: "assume-present" } });
      expect(r.stdout).not.toContain("PROBLEM");
      expect(r.stdout).toContain("ok      access tokens are served for");
      expect(r.code).toBe(0);
      await server.stop();
    },
  },
  {
    files: ["README.md"],
    first: "gce_metadata_server capture -o vm.json -redact startup-script,ssh-keys   # on the VM",
    run: captureAndServe,
  },
  {
    files: ["docs/capture.md"],
    first: "gce_metadata_server capture [-source URL] [-o FILE] [-redact KEY,…]",
    async run(block) {
      // A synopsis: the usage names each flag it shows.
      const r = await sh("gce_metadata_server capture -h");
      expect(r.code).toBe(0);
      const flags = [...block.lines[0]!.matchAll(/\[(-\w+)/g)].map((m) => m[1]!);
      expect(flags).toEqual(["-source", "-o", "-redact"]);
      for (const f of flags) expect(r.stderr).toContain(`  ${f} `);
    },
  },
  {
    files: ["docs/capture.md"],
    first: "# on the VM",
    run: captureAndServe,
  },
  {
    files: ["README.md", "docs/upstream.md"],
    first: "gce_metadata_server -upstream http://169.254.169.254 -configFile overrides.json",
    async run(block) {
      const vm = await serve("gce_metadata_server", "-port :0");
      const dir = tempDir();
      // The overlay docs/upstream.md shows.
      writeFileSync(
        join(dir, "overrides.json"),
        blockAfter("docs/upstream.md", "For example, only new attributes", "json").lines.join("\n"),
      );
      const [command] = commandsOf(block);
      const overlay = await serve(command!.replace("http://169.254.169.254", vm.url), "-port :0", { cwd: dir });
      const get = (p: string) => fetch(`${overlay.url}/computeMetadata/v1/${p}`, { headers: FLAVOR });
      expect(await (await get("instance/hostname")).text()).toBe("test-host");
      expect(await (await get("instance/attributes/startup-script")).text()).toBe("#!/bin/sh\necho test");
      expect((await get("instance/attributes/enable-oslogin")).status).toBe(404);
      expect(await (await get("instance/zone")).text()).toBe("projects/123456789012/zones/us-central1-a");
      await Promise.all([overlay.stop(), vm.stop()]);
    },
  },
  {
    files: ["docs/callers.md"],
    first: "gce_metadata_server -callers callers.json",
    async run(block) {
      const dir = tempDir();
      writeFileSync(join(dir, "callers.json"), blockAfter("docs/callers.md", "drop-in:", "json").lines.join("\n"));
      const server = await serve(commandsOf(block)[0]!, "-port :0", { cwd: dir });
      await server.waitFor(/callers loaded file=callers.json callers="frontend,10.0.1.0\/24"/);
      // The file says "unmatched": "deny", and 127.0.0.1 is neither caller.
      const r = await fetch(`${server.url}/computeMetadata/v1/project/project-id`, { headers: FLAVOR });
      expect(r.status).toBe(403);
      expect(await r.text()).toContain("No caller entry matches this client.");
      await server.stop();
    },
  },
  {
    files: ["docs/client-setup.md"],
    first: "$ gce_metadata_server env -url http://127.0.0.1:8080",
    async run(block) {
      const [command] = commandsOf(block);
      expect(await ok(command!)).toBe(`${block.lines.slice(1).join("\n")}\n`);
    },
  },
  {
    files: ["docs/client-setup.md"],
    first: 'eval "$(gce_metadata_server env)"                        # sh, bash, zsh',
    async run(block) {
      const [bash, fish, powershell] = commandsOf(block);
      expect((await ok(`${bash}; echo "$GCE_METADATA_ROOT"`)).trim()).toBe("127.0.0.1:8080");
      // No fish or PowerShell here: what they would be fed.
      expect(await ok(fish!.replace(/\s*\|\s*source$/, ""))).toContain("set -gx GCE_METADATA_HOST 127.0.0.1:8080\n");
      expect(await ok(powershell!.replace(/\s*\|\s*Invoke-Expression$/, ""))).toContain('$env:GCE_METADATA_HOST = "127.0.0.1:8080"\n');
    },
  },
  {
    files: ["docs/client-setup.md"],
    first: "$ gce_metadata_server doctor",
    async run(block) {
      const server = await serve("gce_metadata_server", "-port :0");
      // The page's situation: everything set, and a gcloud ADC file from `gcloud auth application-default login`.
      const home = tempDir("gce-md-home-");
      const adc = join(home, ".config", "gcloud", "application_default_credentials.json");
      await Bun.write(adc, JSON.stringify({ type: "authorized_user", client_id: "c", client_secret: "s", refresh_token: "r" }));
      const r = await sh(commandsOf(block)[0]!, {
        env: { ...pointedAt(server), METADATA_SERVER_DETECTION: "assume-present", HOME: home },
      });
      expect(r.code).toBe(1);
      const shown = block.lines.slice(1).map((l) =>
        l
          .replaceAll("127.0.0.1:8080", server.hostPort)
          .replace("/home/me", home)
          .replace(/expires in \d+ s/, "expires in N s"),
      );
      const printed = r.stdout
        .trimEnd()
        .split("\n")
        .map((l) => l.replace(/expires in \d+ s/, "expires in N s"));
      expect(printed).toEqual(shown);
      await server.stop();
    },
  },
  {
    files: ["docs/dynamic.md"],
    first:
      "2025-01-01T00:00:00.000Z ERROR config reload failed, still serving the last good config: /etc/gce/config.json: invalid JSON at line 3, column 47: trailing comma before '}'",
    async run(block) {
      const dir = tempDir();
      const file = join(dir, "config.json");
      writeFileSync(file, readFileSync(join(ROOT, "config.json")));
      const server = await serve(`gce_metadata_server -configFile ${file}`, "-port :0");
      const bundled = JSON.parse(readFileSync(join(ROOT, "config.json"), "utf8"));
      bundled.computeMetadata.v1.instance.id = "x";
      const texts = [
        // The `}` after a trailing comma at line 3, column 47.
        '{\n  "computeMetadata": {\n    "v1": {"project": {"projectId": "p12345"},}\n  }\n}\n',
        JSON.stringify(bundled),
      ];
      for (const [i, text] of texts.entries()) {
        writeFileSync(file, text);
        const shown = unstamped(block.lines[i]!).replace("/etc/gce/config.json", file);
        await server.waitFor(new RegExp(shown.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")), 10_000);
      }
      // The last good config is still served.
      expect(await (await fetch(`${server.url}/computeMetadata/v1/project/project-id`, { headers: FLAVOR })).text()).toBe(
        "example-project",
      );
      await server.stop();
    },
  },
  {
    files: ["docs/dynamic.md"],
    first: `curl -H 'Metadata-Flavor: Google' -X PUT -d '"echo hi"' localhost:8080/emulator/v1/metadata/instance/attributes/startup-script`,
    async run(block) {
      const server = await serve("gce_metadata_server -controlAPI", "-port :0");
      const [put, patch, update] = commandsOf(block);
      expect(await ok(`${at(put!, server)} -s`)).toBe('"echo hi"');
      expect(JSON.parse(await ok(`${at(patch!, server)} -s`)).preemptible).toBe("TRUE");
      expect(await ok(`${at(update!, server)} -s`)).toBe("Update successful");
      const get = (p: string) => fetch(`${server.url}/computeMetadata/v1/instance/${p}`, { headers: FLAVOR }).then((r) => r.text());
      expect(await get("attributes/startup-script")).toBe("echo hi");
      expect(await get("scheduling/preemptible")).toBe("TRUE");
      expect(await get("cpu-platform")).toBe("Intel Ivy Bridge");
      await server.stop();
    },
  },
  {
    files: ["docs/faults.md"],
    first: "curl -s -H 'Metadata-Flavor: Google' http://127.0.0.1:8080/emulator/v1/clock",
    async run(block) {
      const server = await serve("gce_metadata_server -controlAPI", "-port :0");
      const [read, advance, set, reset] = commandsOf(block).map((c) => at(c, server));
      const shape = shownAfter(block, commandsOf(block)[0]!)!;
      const now = JSON.parse(await ok(read!));
      expect(Object.keys(now)).toEqual(Object.keys(JSON.parse(shape)));
      expect(now.offsetSeconds).toBe(0);
      expect(JSON.parse(await ok(advance!)).offsetSeconds).toBe(58 * 60);
      expect(JSON.parse(await ok(set!)).now).toStartWith("2030-01-01T00:00:0");
      expect(JSON.parse(await ok(reset!)).offsetSeconds).toBe(0);
      await server.stop();
    },
  },
  {
    files: ["docs/faults.md"],
    first: "# the token answers 503 twice, then works",
    async run(block) {
      const server = await serve("gce_metadata_server -controlAPI", "-port :0");
      const commands = commandsOf(block);
      const [add, list, removeOne, removeAll] = commands.map((c) => at(c, server));
      expect(await ok(add!)).toBe(shownAfter(block, commands[0]!)!);
      const token = () => fetch(`${server.url}/computeMetadata/v1/instance/service-accounts/default/token`, { headers: FLAVOR });
      expect([(await token()).status, (await token()).status, (await token()).status]).toEqual([503, 503, 200]);
      const rules = JSON.parse(await ok(list!)).rules;
      expect(rules).toHaveLength(1);
      expect(rules[0]).toMatchObject({ id: "fault-1", hits: 2, active: false });
      expect(JSON.parse(await ok(removeOne!)).id).toBe("fault-1");
      expect(await ok(removeAll!)).toBe('{"removed":0}');
      await server.stop();
    },
  },
  {
    files: ["docs/faults.md"],
    first: 'gce_metadata_server -fault "path=*,status=503,for=10s"          # a metadata server still booting',
    async run(block) {
      const [booting, throttled, flaky] = commandsOf(block);
      const a = await serve(booting!, "-port :0");
      expect((await fetch(`${a.url}/computeMetadata/v1/project/project-id`, { headers: FLAVOR })).status).toBe(503);
      await a.stop();
      const b = await serve(throttled!, "-port :0");
      const token = () => fetch(`${b.url}/computeMetadata/v1/instance/service-accounts/default/token`, { headers: FLAVOR });
      const answers = [await token(), await token(), await token()];
      expect(answers.map((r) => r.status)).toEqual([200, 200, 429]);
      expect(answers[2]!.headers.get("retry-after")).toBe("2");
      await b.stop();
      const c = await serve(flaky!, "-port :0");
      await c.waitFor(/fault injection is on: matching requests fail on purpose rules=1/);
      await c.stop();
    },
  },
  {
    files: ["docs/serving.md"],
    first: "gce_metadata_server -domainsocket /run/gce-metadata/mds.sock",
    async run(block) {
      const socket = join(tempDir(), "mds.sock");
      const [start, curl] = commandsOf(block).map((c) => c.replaceAll("/run/gce-metadata/mds.sock", socket));
      const server = await serve(start!, "");
      expect(statSync(socket).mode & 0o777).toBe(0o660);
      expect(await ok(curl!)).toBe("4520031799277581759");
      await server.stop();
      expect(existsSync(socket)).toBe(false);
    },
  },
  {
    files: ["docs/serving.md"],
    first: "gce_metadata_server -usemTLS -rootCAmTLS certs/root.crt -serverCert certs/server.crt -serverKey certs/server.key",
    async run(block) {
      const [start, curl] = commandsOf(block);
      const server = await serve(start!, "-port :0", { cwd: ROOT });
      expect(server.url).toStartWith("https://");
      expect(await ok(at(curl!, server), { cwd: ROOT })).toBe("4520031799277581759");
      // Without a client certificate there is no answer at all.
      const bare = await sh(`curl -s --cacert certs/root.crt https://${server.hostPort}/computeMetadata/v1/instance/id`, { cwd: ROOT });
      expect(bare.code).not.toBe(0);
      await server.stop();
    },
  },
  {
    files: ["docs/serving.md"],
    first: "ERROR cannot read the server certificate (-serverCert) /etc/mds/server.crt: no such file",
    async run(block) {
      const caDir = tempDir();
      writeFileSync(join(caDir, "ca.pem"), "not a certificate\n");
      const certs = (f: string) => join(ROOT, "certs", f);
      const starts: Array<[string, string]> = [
        ["gce_metadata_server -usemTLS -serverCert /etc/mds/server.crt -port :0", ROOT],
        [
          `gce_metadata_server -usemTLS -rootCAmTLS ca.pem -serverCert ${certs("server.crt")} -serverKey ${certs("server.key")} -port :0`,
          caDir,
        ],
        ["gce_metadata_server -usemTLS -serverKey certs/client.key -port :0", ROOT],
      ];
      for (const [i, [command, cwd]] of starts.entries()) {
        const r = await sh(command, { cwd });
        expect(r.code).toBe(1);
        expect(errorLine(r.stderr)).toBe(block.lines[i]!.replace(/^ERROR\s+/, ""));
      }
    },
  },
  {
    files: ["docs/serving.md"],
    first: "gce_metadata_server -metricsEnabled            # metrics at http://127.0.0.1:9000/metrics",
    async run(block) {
      const [start, ...curls] = commandsOf(block);
      const server = await serve(start!, "-port :0 -metricsPort 0");
      const metrics = (await server.waitFor(/metrics listening url=http:\/\/(\S+?)\//))[1]!;
      await fetch(`${server.url}/computeMetadata/v1/project/project-id`, { headers: FLAVOR });
      const [scrape, healthz, readyz] = await Promise.all(curls.map((c) => ok(c.replaceAll("127.0.0.1:9000", metrics))));
      // The buckets serving.md names: Go's defaults and the finer ones in front.
      const le = [...scrape!.matchAll(/metadata_endpoint_latency_seconds_bucket\{[^}]*le="([^"]+)"/g)].map((m) => m[1]!);
      expect([...new Set(le)]).toEqual([...LATENCY_BUCKETS.map(String), "+Inf"]);
      expect(healthz!.trim()).toBe("ok");
      expect(readyz!.trim()).toBe("ready");
      await server.stop();
    },
  },
  {
    files: ["docs/serving.md"],
    first:
      '2025-01-01T00:00:00.000Z DEBUG request method=GET path=/computeMetadata/v1/instance/service-accounts/default/token route="/computeMetadata/v1/instance/service-accounts/{account}/token" status=200 ms=0.412 bytes=192',
    async run(block) {
      const server = await serve("gce_metadata_server -v 1", "-port :0");
      await fetch(`${server.url}/computeMetadata/v1/instance/service-accounts/default/token`, { headers: FLAVOR });
      const pattern = unstamped(block.lines[0]!)
        .replace(/[.*+?^${}()|[\]\\]/g, "\\$&")
        .replace(/ms=\S+/, "ms=[\\d.]+")
        .replace(/bytes=\d+/, "bytes=\\d+");
      await server.waitFor(new RegExp(pattern));
      await server.stop();
    },
  },
];

/** capture on "the VM" (a live server) with the page's flags, then serve the file. */
async function captureAndServe(block: Block): Promise<void> {
  const vm = await serve("gce_metadata_server", "-port :0");
  const dir = tempDir();
  const [capture, serveIt] = commandsOf(block);
  const r = await sh(capture!, { cwd: dir, env: pointedAt(vm) });
  expect(r.code).toBe(0);
  expect(r.stderr).toContain("enable-oslogin");
  expect(statSync(join(dir, "vm.json")).mode & 0o777).toBe(0o600);
  const copy = await serve(serveIt!, "-port :0", { cwd: dir });
  const get = (s: Served, p: string) => fetch(`${s.url}/computeMetadata/v1/${p}`, { headers: FLAVOR }).then((x) => x.text());
  expect(await get(copy, "instance/attributes/startup-script")).toBe("");
  for (const p of ["project/project-id", "instance/id", "instance/disks/?recursive=true"]) {
    expect(await get(copy, p)).toBe(await get(vm, p));
  }
  await Promise.all([copy.stop(), vm.stop()]);
}

/** The variables `gce_metadata_server env` sets, for a live server. */
function pointedAt(server: Served): Record<string, string> {
  return { GCE_METADATA_HOST: server.hostPort, GCE_METADATA_IP: server.hostPort, GCE_METADATA_ROOT: server.hostPort };
}

const BLOCKS = shellBlocks();
/** A block's key: its first line, without a trailing comment (a line that is all comment stays whole). */
const keyOf = (line: string | undefined): string => {
  const text = (line ?? "").trim();
  return text.startsWith("#") ? text : stripComment(text).trim();
};
const runnerFor = (b: Block): Runner[] => RUNNERS.filter((r) => r.files.includes(b.file) && keyOf(r.first) === keyOf(b.lines[0]));

test("every shell example and shown output is run here, or marked <!-- not run: why -->", () => {
  const problems: string[] = [];
  for (const b of BLOCKS) {
    const runners = runnerFor(b);
    if (b.notRun !== undefined) {
      if (b.notRun === "") problems.push(`${b.file}:${b.line}: "not run" needs its reason`);
      if (runners.length > 0) problems.push(`${b.file}:${b.line}: marked not run, but a runner takes it`);
    } else if (runners.length === 0) {
      problems.push(`${b.file}:${b.line}: \`${b.lines[0]}\` is neither run by test/docs/examples.test.ts nor marked <!-- not run: why -->`);
    }
  }
  for (const r of RUNNERS) {
    for (const file of r.files) {
      if (!BLOCKS.some((b) => b.file === file && b.notRun === undefined && keyOf(b.lines[0]) === keyOf(r.first))) {
        problems.push(`a runner's block is gone from ${file}: \`${r.first}\``);
      }
    }
  }
  expect(problems).toEqual([]);
  // The harness sees the blocks it should: not run ones are few and say why.
  expect(BLOCKS.filter((b) => b.notRun === undefined).length).toBeGreaterThanOrEqual(20);
});

describe("examples", () => {
  for (const b of BLOCKS) {
    if (b.notRun !== undefined) continue;
    const [runner] = runnerFor(b);
    if (!runner) continue;
    test(`${b.file}:${b.line} ${(b.lines[0] ?? "").slice(0, 70)}`, () => runner.run(b), 90_000);
  }
});

test("README: the library example is test/docs/library-example.test.ts, verbatim", () => {
  const shown = blockAfter("README.md", "This is [test/docs/library-example.test.ts]", "ts").lines.join("\n");
  const file = readFileSync(join(ROOT, "test", "docs", "library-example.test.ts"), "utf8");
  // The file's first line says what it is; the rest is what the README shows.
  expect(`${shown}\n`).toBe(file.slice(file.indexOf("\n") + 1));
});

// Keep the wrapper honest: the source CLI is what `gce_metadata_server` runs in these examples.
test("gce_metadata_server in the examples is the source CLI", async () => {
  const out = await ok("command -v gce_metadata_server && gce_metadata_server -version");
  expect(out).toContain("Version: ");
  const path = out.split("\n")[0]!;
  expect(readFileSync(path, "utf8")).toContain(join(ROOT, "src", "cli.ts"));
});
