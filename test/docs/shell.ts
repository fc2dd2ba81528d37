/**
 * Running documentation examples as written: bash with `gce_metadata_server` on PATH as the source command line (as
 * `npx gce_metadata_server` runs it in a checkout), a scratch HOME, and none of the caller's Google variables.
 */
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { runCli } from "../helpers/cli.ts";
import { ROOT } from "./markdown.ts";

const scratch: string[] = [];

export function tempDir(prefix = "gce-md-docs-"): string {
  const d = mkdtempSync(join(tmpdir(), prefix));
  scratch.push(d);
  return d;
}

export function removeScratch(): void {
  for (const d of scratch.splice(0)) rmSync(d, { recursive: true, force: true });
}

let bin: string | undefined;

/** A directory holding `gce_metadata_server`, the source CLI run by this Bun. */
function binDir(): string {
  if (bin) return bin;
  bin = tempDir("gce-md-bin-");
  const wrapper = join(bin, "gce_metadata_server");
  writeFileSync(wrapper, `#!/bin/sh\nexec ${JSON.stringify(process.execPath)} ${JSON.stringify(join(ROOT, "src", "cli.ts"))} "$@"\n`);
  chmodSync(wrapper, 0o755);
  return bin;
}

export interface ShellOptions {
  cwd?: string;
  env?: Record<string, string>;
  /** Kill the command after this long (default 30 s). */
  timeoutMs?: number;
}

/** The environment examples run in: PATH with the CLI and the project's tools, a scratch HOME. */
export function shellEnv(extra: Record<string, string> = {}): Record<string, string> {
  const home = extra.HOME ?? tempDir("gce-md-home-");
  return {
    PATH: `${binDir()}:${join(ROOT, "node_modules", ".bin")}:${process.env.PATH ?? "/usr/bin:/bin"}`,
    HOME: home,
    LANG: "C.UTF-8",
    ...(process.env.npm_config_cache ? { npm_config_cache: process.env.npm_config_cache } : {}),
    ...extra,
  };
}

export interface Ran {
  code: number;
  stdout: string;
  stderr: string;
}

/** Run one command line in bash and wait for it. */
export async function sh(command: string, options: ShellOptions = {}): Promise<Ran> {
  const p = Bun.spawn(["bash", "-c", command], {
    cwd: options.cwd ?? tempDir(),
    env: shellEnv(options.env),
    stdin: "ignore",
    stdout: "pipe",
    stderr: "pipe",
  });
  const timer = setTimeout(() => p.kill("SIGKILL"), options.timeoutMs ?? 30_000);
  const [stdout, stderr, code] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text(), p.exited]);
  clearTimeout(timer);
  return { code, stdout, stderr };
}

/** A server an example started. */
export interface Served {
  /** `http://127.0.0.1:PORT` (or `https://`), or the socket's `http+unix://…`. */
  url: string;
  /** `127.0.0.1:PORT`. */
  hostPort: string;
  /** Everything it logged so far. */
  log(): string;
  waitFor(re: RegExp, timeoutMs?: number): Promise<RegExpMatchArray>;
  stop(): Promise<void>;
}

const running = new Set<Served>();

/**
 * Start a command line that runs a server (`gce_metadata_server …`, `npm start -- …`) in a process group of its
 * own, with `extraArgs` appended (`-port :0`, so it takes a free port), and wait for its "listening" line.
 */
export async function serve(command: string, extraArgs: string, options: ShellOptions = {}): Promise<Served> {
  const cli = runCli([], {
    command: ["setsid", "bash", "-c", `exec ${command} ${extraArgs}`],
    cwd: options.cwd ?? tempDir(),
    env: shellEnv(options.env),
  });
  const waitFor = (re: RegExp, timeoutMs = 20_000) => cli.waitFor(re, timeoutMs);
  const stop = async () => {
    running.delete(served);
    // The whole process group: `npm start` and shells leave the server as a grandchild.
    try {
      process.kill(-cli.proc.pid, "SIGTERM");
    } catch {
      cli.proc.kill("SIGTERM");
    }
    await cli.exited;
  };
  const served: Served = { url: "", hostPort: "", log: cli.stderr, waitFor, stop };
  running.add(served);
  try {
    const m = await waitFor(/metadata server listening (?:url=(\S+)|socket=(\S+))/);
    served.url = m[1] ?? `http+unix://${m[2]}`;
    served.hostPort = m[1] ? m[1].replace(/^https?:\/\//, "") : "";
  } catch (e) {
    await stop();
    throw e;
  }
  return served;
}

/** Stop every server still running (afterAll). */
export async function stopAll(): Promise<void> {
  await Promise.all([...running].map((s) => s.stop()));
}
