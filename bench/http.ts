#!/usr/bin/env bun
/**
 * Load benchmark: wrk at 32 connections against the server and, in the same run, a bare Bun.serve answering a
 * fixed body (bench/baseline-server.ts), on three paths: a leaf, the recursive instance document, the cached token.
 *
 *   node_modules/.bin/bun bench/http.ts [--rounds 5] [--duration 3] [--connections 32] [--threads 1]
 *                                       [--binary] [--floor] [--strict] [--against REV]
 *
 * `--against REV` also runs the server as it was at git revision REV (exported with `git archive` into .tmp/bench/)
 * and prints this server's req/s as a ratio to it, paired per round: an A/B of a change measured in one run.
 * `--binary` also measures the compiled executable (built with scripts/build.ts into .tmp/bench/).
 * `--floor` also measures bench/floor-server.ts serving the server's own bodies: the least a faithful handler does
 * on Bun.serve (request headers read, the real response headers), a reference the server can approach at best.
 *
 * Why `-t1`: on a 2-core machine the server's JavaScript runs on one thread; one wrk thread on the other core
 * loads it without the load generator competing for the server's core, which `-t2` would do (two wrk threads
 * plus the server on two cores measures the scheduler as much as the server). Both baseline and server get the
 * same setup, so the ratio compares like with like.
 *
 * Each round runs every path against the baseline and the server back to back, in an order that flips every
 * round, after a 1 s warm-up of each. Prints per-path medians of req/s, p99 latency and server CPU per request
 * (from /proc: a cross-check that the server, not wrk, is the bottleneck, and a cost that load on the machine
 * disturbs less than req/s), and the req/s ratio to the baseline: the median over rounds of server/baseline
 * measured back to back (judged against the targets), and the ratio of the medians. Everything binds 127.0.0.1 and is stopped at the end (or on Ctrl-C).
 */
import { readFileSync } from "node:fs";
import { mkdir, rm } from "node:fs/promises";
import { loadavg, cpus } from "node:os";
import { join, resolve } from "node:path";
import type { Subprocess } from "bun";
import { runBench, startListening, stopAll } from "./spawn.ts";
import { compile, versionDefines, versionFacts } from "../scripts/build.ts";
import { exportRevision } from "./revision.ts";

const ROOT = resolve(import.meta.dir, "..");
const BUN = process.execPath;

interface PathSpec {
  name: string;
  path: string;
  /** Lowest acceptable req/s ratio to the baseline. */
  minRatio: number;
}

const PATHS: PathSpec[] = [
  { name: "leaf project/project-id", path: "/computeMetadata/v1/project/project-id", minRatio: 0.85 },
  { name: "instance/?recursive=true", path: "/computeMetadata/v1/instance/?recursive=true", minRatio: 0.8 },
  { name: "cached token", path: "/computeMetadata/v1/instance/service-accounts/default/token", minRatio: 0.85 },
];
const MAX_P99_MS = 2;

interface Options {
  rounds: number;
  duration: number;
  connections: number;
  threads: number;
  binary: boolean;
  floor: boolean;
  strict: boolean;
  against?: string;
}

function parseArgs(argv: string[]): Options {
  const o: Options = { rounds: 5, duration: 3, connections: 32, threads: 1, binary: false, floor: false, strict: false };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const num = () => {
      const v = Number(argv[++i]);
      if (!Number.isFinite(v) || v <= 0) throw new Error(`${a} needs a positive number`);
      return v;
    };
    if (a === "--rounds") o.rounds = num();
    else if (a === "--duration") o.duration = num();
    else if (a === "--connections") o.connections = num();
    else if (a === "--threads") o.threads = num();
    else if (a === "--binary") o.binary = true;
    else if (a === "--floor") o.floor = true;
    else if (a === "--strict") o.strict = true;
    else if (a === "--against") {
      const rev = argv[++i];
      if (!rev) throw new Error("--against needs a git revision");
      o.against = rev;
    } else throw new Error(`unknown argument ${a}`);
  }
  return o;
}

interface Target {
  name: string;
  url: string;
  proc: Subprocess;
}

/** Start a server with `-port :0` and read the URL it logs on stderr. */
async function start(name: string, cmd: string[], cwd: string): Promise<Target> {
  const { url, proc } = await startListening([...cmd, "-port", ":0"], cwd, name);
  return { name, url, proc };
}

interface WrkResult {
  rps: number;
  p99ms: number;
  requests: number;
  non2xx: number;
  errors: number;
  /** Server CPU time (user + system, all threads) per request, from /proc; NaN where unavailable. */
  cpuUs: number;
}

const UNIT_MS: Record<string, number> = { us: 0.001, ms: 1, s: 1000, m: 60_000 };

/** CPU ticks (user + system) a process has used; /proc counts in USER_HZ, 100 per second on Linux. */
function cpuTicks(pid: number): number {
  try {
    const fields = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1]!.split(" ");
    return Number(fields[11]) + Number(fields[12]);
  } catch {
    return NaN;
  }
}

export function parseWrk(out: string): WrkResult {
  const rps = /Requests\/sec:\s+([\d.]+)/.exec(out);
  const requests = /(\d+) requests in/.exec(out);
  const p99 = /^\s*99%\s+([\d.]+)(us|ms|s|m)\s*$/m.exec(out);
  if (!rps || !p99) throw new Error(`unexpected wrk output:\n${out}`);
  const non2xx = /Non-2xx or 3xx responses:\s+(\d+)/.exec(out);
  const sock = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(out);
  return {
    rps: Number(rps[1]),
    p99ms: Number(p99[1]) * UNIT_MS[p99[2]!]!,
    requests: requests ? Number(requests[1]) : NaN,
    cpuUs: NaN,
    non2xx: non2xx ? Number(non2xx[1]) : 0,
    errors: sock ? Number(sock[1]) + Number(sock[2]) + Number(sock[3]) + Number(sock[4]) : 0,
  };
}

async function wrk(url: string, o: Options, seconds: number, pid?: number): Promise<WrkResult> {
  const t0 = pid === undefined ? NaN : cpuTicks(pid);
  const args = ["wrk", `-t${o.threads}`, `-c${o.connections}`, `-d${seconds}s`, "--latency", "-H", "Metadata-Flavor: Google", url];
  const p = Bun.spawn(args, { stdout: "pipe", stderr: "pipe" });
  const [out, err, code] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text(), p.exited]);
  if (code !== 0) throw new Error(`wrk failed (${code}): ${err}${out}`);
  const r = parseWrk(out);
  if (pid !== undefined) r.cpuUs = ((cpuTicks(pid) - t0) * 10_000) / r.requests;
  if (r.non2xx > 0) throw new Error(`${url}: ${r.non2xx} non-2xx answers under load`);
  return r;
}

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};

async function check(t: Target, path: string): Promise<string> {
  const r = await fetch(t.url + path, { headers: { "Metadata-Flavor": "Google" } });
  const body = await r.text();
  if (r.status !== 200) throw new Error(`${t.name} ${path}: HTTP ${r.status}`);
  return body;
}

async function main(argv: string[]): Promise<number> {
  const o = parseArgs(argv);
  if (!Bun.which("wrk")) {
    console.error("wrk not found: install it with `apt-get install -y wrk` (Debian/Ubuntu)");
    return 2;
  }
  // An empty working directory: no ./config.json, so every server serves the bundled default config.
  const cwd = join(ROOT, ".tmp", "bench", "cwd");
  await mkdir(cwd, { recursive: true });

  const load = loadavg()[0]!;
  const cores = cpus().length;
  console.log(
    `wrk -t${o.threads} -c${o.connections}, ${o.rounds} rounds x ${o.duration} s per path and target; ${cores} cores, load average ${load.toFixed(2)}`,
  );
  if (load > cores / 2) console.log(`  warning: the machine is busy (load ${load.toFixed(2)} on ${cores} cores); numbers will be noisy`);

  const targets: Target[] = [];
  let built: string | undefined;
  try {
    const baseline = await start("baseline", [BUN, join(ROOT, "bench/baseline-server.ts")], cwd);
    targets.push(await start("server (bun src/cli.ts)", [BUN, join(ROOT, "src/cli.ts")], cwd));
    if (o.binary) {
      built = await compile({
        outfile: join(ROOT, ".tmp", "bench", "gce_metadata_server-http"),
        defines: versionDefines(await versionFacts()),
        quiet: true,
      });
      targets.push(await start("server (compiled)", [built], cwd));
    }
    const references: Target[] = [];
    let against: Target | undefined;
    if (o.against) {
      const dir = await exportRevision(o.against);
      against = await start(`server at ${o.against}`, [BUN, join(dir, "src/cli.ts")], cwd);
      references.push(against);
    }
    if (o.floor) {
      // The server's own bodies for the three paths (the token's path is served under its path, without query).
      const bodies: Record<string, { body: string; type: string }> = {};
      for (const p of PATHS) {
        const r = await fetch(targets[0]!.url + p.path, { headers: { "Metadata-Flavor": "Google" } });
        bodies[p.path.split("?")[0]!] = { body: await r.text(), type: r.headers.get("content-type") ?? "application/text" };
      }
      const file = join(cwd, "floor-bodies.json");
      await Bun.write(file, JSON.stringify(bodies));
      references.push(await start("floor (minimal faithful)", [BUN, join(ROOT, "bench/floor-server.ts"), "-bodies", file], cwd));
    }
    const all = [baseline, ...references, ...targets];

    // Sanity: real answers, and a cached token before the token path is measured.
    for (const t of targets) {
      if ((await check(t, PATHS[0]!.path)) !== "example-project") throw new Error(`${t.name}: unexpected project id`);
      const tok = JSON.parse(await check(t, PATHS[2]!.path)) as { access_token?: string };
      if (!tok.access_token) throw new Error(`${t.name}: no access_token`);
    }
    for (const t of all) for (const p of PATHS) await wrk(t.url + p.path, o, 1);

    const results = new Map<string, WrkResult[]>();
    const key = (t: Target, p: PathSpec) => `${t.name}\u0000${p.path}`;
    for (let round = 0; round < o.rounds; round++) {
      for (const p of PATHS) {
        const order = round % 2 ? [...all].reverse() : all;
        for (const t of order) {
          const r = await wrk(t.url + p.path, o, o.duration, t.proc.pid);
          if (!results.has(key(t, p))) results.set(key(t, p), []);
          results.get(key(t, p))!.push(r);
        }
      }
      process.stdout.write(`  round ${round + 1}/${o.rounds} done\n`);
    }

    let ok = true;
    for (const p of PATHS) {
      const base = results.get(key(baseline, p))!;
      const baseRps = median(base.map((r) => r.rps));
      console.log(`\n${p.name}  (${p.path})`);
      const cpu = (rs: WrkResult[]) => `${median(rs.map((r) => r.cpuUs)).toFixed(2)} us CPU/req`;
      console.log(
        `  ${"baseline Bun.serve".padEnd(26)} ${baseRps.toFixed(0).padStart(7)} req/s   p99 ${median(base.map((r) => r.p99ms)).toFixed(2)} ms   ${cpu(base)}   rounds: ${base.map((r) => r.rps.toFixed(0)).join(" ")}`,
      );
      for (const t of [...references, ...targets]) {
        const rs = results.get(key(t, p))!;
        const rps = median(rs.map((r) => r.rps));
        const p99 = median(rs.map((r) => r.p99ms));
        // Each round measures baseline and server back to back: the median of those paired ratios is what the
        // target is judged on, as it cancels slow drift (neighbours, CPU frequency) that the plain ratio of
        // medians does not.
        const paired = median(rs.map((r, i) => r.rps / base[i]!.rps));
        const met = paired >= p.minRatio && p99 < MAX_P99_MS;
        const reference = references.includes(t);
        if (!met && !reference) ok = false;
        console.log(
          `  ${t.name.padEnd(26)} ${rps.toFixed(0).padStart(7)} req/s   p99 ${p99.toFixed(2)} ms   ${cpu(rs)}` +
            `   ratio ${paired.toFixed(2)}x paired (${(rps / baseRps).toFixed(2)}x of medians)` +
            (reference ? "   (reference)" : `   (target >= ${p.minRatio}x, p99 < ${MAX_P99_MS} ms: ${met ? "met" : "MISSED"})`) +
            `   rounds: ${rs.map((r) => r.rps.toFixed(0)).join(" ")}`,
        );
      }
    }
    if (against) {
      // req/s moves with whatever else the machine runs; server CPU per request moves much less, so both are shown.
      console.log(`\nA/B: this server over the server at ${o.against}, paired per round (median; min–max)`);
      const server = targets[0]!;
      const span = (xs: number[]) => `${median(xs).toFixed(3)}x (${Math.min(...xs).toFixed(3)}–${Math.max(...xs).toFixed(3)})`;
      for (const p of PATHS) {
        const mine = results.get(key(server, p))!;
        const theirs = results.get(key(against, p))!;
        const rps = mine.map((r, i) => r.rps / theirs[i]!.rps);
        const cpu = mine.map((r, i) => theirs[i]!.cpuUs / r.cpuUs);
        console.log(`  ${p.name.padEnd(26)} req/s ${span(rps)}   requests per CPU second ${span(cpu)}`);
      }
    }
    return o.strict && !ok ? 1 : 0;
  } finally {
    await stopAll();
    if (built) await rm(built, { force: true });
  }
}

if (import.meta.main) await runBench(main);
