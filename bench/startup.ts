#!/usr/bin/env bun
/**
 * Start-up and memory of the compiled server against a compiled bare `Bun.serve` (bench/baseline-server.ts),
 * both built in this run with the same flags (scripts/build.ts), the server also laid out by a recorded start as
 * releases are. Both are freshly written, so both have every page cached (which adds a few MB to RSS alike).
 *
 *   node_modules/.bin/bun bench/startup.ts [--runs 21] [--poll-ms 1] [--no-bytecode] [--strict]
 *
 * One run: spawn the executable on a free 127.0.0.1 port, poll until the first HTTP 200 arrives (fresh connection
 * per attempt), record the time since spawn, read VmRSS from /proc/PID/status, stop it. Server and baseline
 * alternate (the order flips every round) after two warm-up runs each, so page cache and CPU frequency drift hit
 * both alike. Prints medians, the ratio, and whether the targets hold: first answer within 1.3x the baseline and
 * RSS within the baseline's plus 8 MB. `--strict` exits 1 when a target is missed.
 */
import { readFileSync } from "node:fs";
import { mkdir, rm } from "node:fs/promises";
import { join, resolve } from "node:path";
import { compile, versionDefines, versionFacts, withStartupOrder } from "../scripts/build.ts";

const ROOT = resolve(import.meta.dir, "..");
const TARGET_RATIO = 1.3;
/** Resident memory the server may add to the bare baseline's. */
const TARGET_RSS_EXTRA_MB = 8;

interface Options {
  runs: number;
  pollMs: number;
  bytecode: boolean;
  strict: boolean;
  /** Prebuilt executables instead of building (paths). */
  server?: string;
  baseline?: string;
}

function parseArgs(argv: string[]): Options {
  const o: Options = { runs: 21, pollMs: 1, bytecode: true, strict: false };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const value = (): string => {
      const v = argv[++i];
      if (v !== undefined) return v;
      console.error(`${a} needs a value`);
      process.exit(2);
    };
    if (a === "--runs") o.runs = Math.max(15, Number(value()));
    else if (a === "--poll-ms") o.pollMs = Number(value());
    else if (a === "--no-bytecode") o.bytecode = false;
    else if (a === "--strict") o.strict = true;
    else if (a === "--server") o.server = resolve(value());
    else if (a === "--baseline") o.baseline = resolve(value());
    else {
      console.error(`unknown argument ${a}`);
      process.exit(2);
    }
  }
  return o;
}

/** A port that was free a moment ago (bound and released on 127.0.0.1). */
export function freePort(): number {
  const s = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } });
  const port = s.port;
  s.stop(true);
  return port;
}

export const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};

const quantile = (xs: number[], q: number): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.round(q * (s.length - 1))))]!;
};

function rssKiB(pid: number): number {
  try {
    const status = readFileSync(`/proc/${pid}/status`, "utf8");
    const m = /^VmRSS:\s+(\d+)\s+kB/m.exec(status);
    return m ? Number(m[1]) : NaN;
  } catch {
    return NaN;
  }
}

export interface Sample {
  ms: number;
  rssKiB: number;
}

const fmt = (n: number, d = 1) => n.toFixed(d);

const PATH = "/computeMetadata/v1/project/project-id";

/** Spawn, wait for the first 200, measure, stop. */
export async function firstAnswer(exe: string, pollMs = 1): Promise<Sample> {
  const port = freePort();
  const url = `http://127.0.0.1:${port}${PATH}`;
  const t0 = performance.now();
  const proc = Bun.spawn([exe, "-port", `:${port}`], { cwd: "/", stdin: "ignore", stdout: "ignore", stderr: "ignore" });
  try {
    for (;;) {
      let status = 0;
      try {
        const r = await fetch(url, { headers: { "Metadata-Flavor": "Google" }, keepalive: false });
        await r.arrayBuffer();
        status = r.status;
      } catch {
        // Not listening yet.
      }
      if (status === 200) break;
      if (status !== 0) throw new Error(`${exe}: HTTP ${status} from ${url}`);
      if (proc.exitCode !== null) throw new Error(`${exe} exited with ${proc.exitCode} before answering`);
      if (performance.now() - t0 > 10_000) throw new Error(`${exe}: no answer within 10 s`);
      if (pollMs > 0) await Bun.sleep(pollMs);
    }
    const ms = performance.now() - t0;
    return { ms, rssKiB: rssKiB(proc.pid) };
  } finally {
    proc.kill("SIGKILL");
    await proc.exited;
  }
}

/**
 * Measure executables in turn, `runs` times each after `warmup` discarded rounds; the order reverses every
 * round so slow drift (page cache, CPU frequency, neighbours) hits all of them alike.
 */
export async function alternate(exes: string[], runs: number, pollMs = 1, warmup = 2): Promise<Sample[][]> {
  const out: Sample[][] = exes.map(() => []);
  for (let w = 0; w < warmup; w++) for (const e of exes) await firstAnswer(e, pollMs);
  for (let i = 0; i < runs; i++) {
    const order = exes.map((_, k) => k);
    if (i % 2) order.reverse();
    for (const k of order) out[k]!.push(await firstAnswer(exes[k]!, pollMs));
  }
  return out;
}

/** `first answer median … ms (p10, p90)   RSS median … MB` */
export function describe(xs: Sample[]): string {
  const ms = xs.map((x) => x.ms);
  const rss = xs.map((x) => x.rssKiB / 1024);
  return `first answer median ${fmt(median(ms))} ms (p10 ${fmt(quantile(ms, 0.1))}, p90 ${fmt(quantile(ms, 0.9))})   RSS median ${fmt(median(rss))} MB (max ${fmt(Math.max(...rss))})`;
}

async function buildBoth(o: Options): Promise<{ server: string; baseline: string }> {
  const dir = join(ROOT, ".tmp", "bench");
  await mkdir(dir, { recursive: true });
  const defines = versionDefines(await versionFacts());
  const common = { bytecode: o.bytecode, quiet: true };
  // The server as it ships (laid out by a recorded start); the baseline with the same flags otherwise.
  const [server, baseline] = await Promise.all([
    o.server ??
      withStartupOrder({ ...common, defines }, (bytecodeOrder) =>
        compile({ ...common, defines, outfile: join(dir, "gce_metadata_server"), ...(bytecodeOrder ? { bytecodeOrder } : {}) }),
      ),
    o.baseline ?? compile({ ...common, entry: join(ROOT, "bench/baseline-server.ts"), outfile: join(dir, "baseline-server") }),
  ]);
  return { server, baseline };
}

export async function main(argv: string[]): Promise<number> {
  const o = parseArgs(argv);
  const { server, baseline } = await buildBoth(o);
  console.log(`start-up: ${o.runs} alternating runs each, poll every ${o.pollMs} ms, bytecode ${o.bytecode ? "on" : "off"}`);
  console.log(`  server   ${server}\n  baseline ${baseline}`);
  // The executables it built (~110 MB each) go when it is done; ones given with --server/--baseline stay.
  const built = [o.server ? undefined : server, o.baseline ? undefined : baseline].filter((f): f is string => f !== undefined);
  const [s, b] = await alternate([server, baseline], o.runs, o.pollMs).finally(() => Promise.all(built.map((f) => rm(f, { force: true }))));
  console.log(`  baseline  ${describe(b!)}`);
  console.log(`  server    ${describe(s!)}`);
  const ratio = median(s!.map((x) => x.ms)) / median(b!.map((x) => x.ms));
  const rss = median(s!.map((x) => x.rssKiB)) / 1024;
  const extra = rss - median(b!.map((x) => x.rssKiB)) / 1024;
  const okRatio = ratio <= TARGET_RATIO;
  const okRss = extra <= TARGET_RSS_EXTRA_MB;
  console.log(`  ratio server/baseline ${fmt(ratio, 2)}x  (target <= ${TARGET_RATIO}x: ${okRatio ? "met" : "MISSED"})`);
  console.log(
    `  server RSS ${fmt(rss)} MB, baseline +${fmt(extra)} MB  (target <= +${TARGET_RSS_EXTRA_MB} MB: ${okRss ? "met" : "MISSED"})`,
  );
  return o.strict && !(okRatio && okRss) ? 1 : 0;
}

if (import.meta.main) process.exit(await main(process.argv.slice(2)));
