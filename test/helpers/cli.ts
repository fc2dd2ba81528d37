/** The real command line as a child process, with its standard error captured for assertions. */
import { join } from "node:path";

export const ROOT = join(import.meta.dir, "..", "..");
export const CERTS = join(ROOT, "certs");
const CLI = join(ROOT, "src", "cli.ts");

export interface CliProcess {
  readonly proc: ReturnType<typeof Bun.spawn>;
  /** Everything written to stderr so far. */
  stderr(): string;
  /** Wait until stderr matches (or the process exits, which fails). */
  waitFor(re: RegExp, timeoutMs?: number): Promise<RegExpMatchArray>;
  /** SIGTERM and the exit code. */
  stop(): Promise<number>;
  exited: Promise<number>;
}

export interface CliOptions {
  env?: Record<string, string | undefined>;
  cwd?: string;
  /** Run under a wrapper, e.g. `["ip", "netns", "exec", "ns1"]`. */
  prefix?: string[];
  /** The program: the source CLI by default, or e.g. a compiled executable. */
  command?: string[];
}

export function runCli(args: string[], options: CliOptions = {}): CliProcess {
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries({ PATH: process.env.PATH, HOME: process.env.HOME, ...options.env })) if (v !== undefined) env[k] = v;
  const proc = Bun.spawn([...(options.prefix ?? []), ...(options.command ?? [process.execPath, CLI]), ...args], {
    cwd: options.cwd ?? ROOT,
    env,
    stdout: "pipe",
    stderr: "pipe",
  });
  let text = "";
  const listeners = new Set<() => void>();
  const pump = (async () => {
    const decoder = new TextDecoder();
    for await (const chunk of proc.stderr as ReadableStream<Uint8Array>) {
      text += decoder.decode(chunk, { stream: true });
      for (const l of listeners) l();
    }
  })();
  let done = false;
  const exited = proc.exited.then(async (code) => {
    await pump;
    // Before the listeners run, so a waitFor sees the exit and fails at once instead of at its timeout.
    done = true;
    for (const l of listeners) l();
    return code;
  });
  return {
    proc,
    exited,
    stderr: () => text,
    waitFor(re, timeoutMs = 10_000) {
      return new Promise((resolve, reject) => {
        const check = () => {
          const m = re.exec(text);
          if (m) {
            cleanup();
            resolve(m);
          } else if (done) {
            cleanup();
            reject(new Error(`the server exited before printing ${re}; stderr:\n${text}`));
          }
        };
        const timer = setTimeout(() => {
          cleanup();
          reject(new Error(`no ${re} on stderr within ${timeoutMs} ms; stderr:\n${text}`));
        }, timeoutMs);
        const cleanup = () => {
          clearTimeout(timer);
          listeners.delete(check);
        };
        listeners.add(check);
        check();
      });
    },
    async stop() {
      if (!done) proc.kill("SIGTERM");
      return exited;
    },
  };
}

/** Run the CLI expecting it to exit by itself (start-up errors, -version); a server that starts instead is killed. */
export async function runCliToExit(
  args: string[],
  options: CliOptions = {},
  timeoutMs = 20_000,
): Promise<{ code: number; stdout: string; stderr: string; errors: string[] }> {
  const p = runCli(args, options);
  const stdout = new Response(p.proc.stdout as ReadableStream<Uint8Array>).text();
  const timer = setTimeout(() => p.proc.kill("SIGKILL"), timeoutMs);
  const code = await p.exited;
  clearTimeout(timer);
  const stderr = p.stderr();
  return { code, stdout: await stdout, stderr, errors: stderr.split("\n").filter((l) => / ERROR /.test(l)) };
}

/** A started CLI server: its URL, its log so far, a GET with Metadata-Flavor, and a SIGTERM stop. */
export interface ServedCli {
  url: string;
  log(): string;
  get(path: string): Promise<Response>;
  stop(): Promise<number>;
}

/** Start the CLI as a server (on a free port unless args say otherwise); resolves once it logs its URL. */
export async function serveCli(args: string[], options: CliOptions = {}): Promise<ServedCli> {
  const p = runCli(["-port", ":0", ...args], options);
  let url: string;
  try {
    url = await listeningUrl(p);
  } catch (e) {
    await p.stop();
    throw e;
  }
  return {
    url,
    log: () => p.stderr(),
    get: (path) => fetch(url + path, { headers: { "Metadata-Flavor": "Google" } }),
    stop: () => p.stop(),
  };
}

/** URL and port the CLI reports in its "listening" line. */
export async function listeningUrl(p: CliProcess): Promise<string> {
  const m = await p.waitFor(/metadata server listening url=(\S+)/);
  return m[1]!;
}

export async function metricsUrl(p: CliProcess): Promise<string> {
  const m = await p.waitFor(/metrics listening url=(\S+)/);
  return m[1]!;
}
