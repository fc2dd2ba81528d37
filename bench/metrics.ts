#!/usr/bin/env bun
/**
 * What metrics cost: leaf GET throughput of the server with -metricsEnabled against the same server without it.
 * Both run as separate processes of the real CLI, side by side; wrk drives one at a time, alternating
 * off/on/on/off so drift (thermal, other load) falls on both equally. Prints per-run numbers, the medians and their
 * ratio (the figure the bar applies to), the median of the per-pair ratios as a cross-check, and the load average
 * before and after (a busy machine makes any single figure meaningless); exits 1 when the ratio is below the bar.
 *
 *   bun bench/metrics.ts [--runs 8] [--seconds 3] [--connections 32] [--bar 0.9] [--path /computeMetadata/v1/instance/id]
 */
import { readFileSync } from "node:fs";
import { loadavg } from "node:os";
import { join } from "node:path";

const args = new Map<string, string>();
for (let i = 2; i < process.argv.length; i += 2) args.set(process.argv[i]!.replace(/^--/, ""), process.argv[i + 1] ?? "");
const runs = Number(args.get("runs") ?? 8);
const seconds = Number(args.get("seconds") ?? 3);
const connections = Number(args.get("connections") ?? 32);
const bar = Number(args.get("bar") ?? 0.9);
const path = args.get("path") ?? "/computeMetadata/v1/instance/id";

const root = join(import.meta.dir, "..");
const bun = process.execPath;

if (!Bun.which("wrk")) {
  console.error("wrk is not installed (apt-get install wrk)");
  process.exit(2);
}

async function freePort(): Promise<number> {
  const s = Bun.serve({ hostname: "127.0.0.1", port: 0, fetch: () => new Response() });
  const p = s.port!;
  s.stop(true);
  return p;
}

async function startServer(metrics: boolean) {
  const port = await freePort();
  const argv = [bun, join(root, "src/cli.ts"), "-port", `:${port}`];
  if (metrics) argv.push("-metricsEnabled", "-metricsPort", String(await freePort()));
  const proc = Bun.spawn(argv, { cwd: root, stdout: "ignore", stderr: "pipe" });
  const url = `http://127.0.0.1:${port}`;
  for (let i = 0; i < 100; i++) {
    try {
      const r = await fetch(url + path, { headers: { "Metadata-Flavor": "Google" } });
      if (r.status === 200) return { proc, url };
    } catch {}
    await Bun.sleep(50);
  }
  proc.kill();
  throw new Error(`server (metrics ${metrics ? "on" : "off"}) did not start: ${await new Response(proc.stderr).text()}`);
}

/** Server CPU time (user + system) in seconds, from /proc: contention from other processes barely moves it. */
function cpuSeconds(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return (Number(fields[11]) + Number(fields[12])) / TICKS;
}
const TICKS = Number(Bun.spawnSync(["getconf", "CLK_TCK"]).stdout.toString().trim()) || 100;

interface Run {
  rps: number;
  /** Server CPU microseconds per request. */
  cpuUs: number;
}

function wrk(server: { url: string; proc: { pid: number } }, secs: number): Run {
  const cpu0 = cpuSeconds(server.proc.pid);
  const r = Bun.spawnSync(["wrk", "-t1", `-c${connections}`, `-d${secs}s`, "-H", "Metadata-Flavor: Google", server.url + path]);
  const cpu1 = cpuSeconds(server.proc.pid);
  const out = r.stdout.toString();
  const m = /Requests\/sec:\s+([\d.]+)/.exec(out);
  const total = /(\d+) requests in/.exec(out);
  // wrk prints these lines only when something went wrong; a benchmark of errors measures nothing.
  if (!m || !total || /Non-2xx|Socket errors/.test(out)) throw new Error(`wrk failed or saw errors:\n${out}${r.stderr.toString()}`);
  return { rps: Number(m[1]), cpuUs: ((cpu1 - cpu0) * 1e6) / Number(total[1]) };
}

const load = () =>
  loadavg()
    .map((x) => x.toFixed(2))
    .join(" ");

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
};

const off = await startServer(false);
const on = await startServer(true);
try {
  // Warm both (JIT, caches) before measuring.
  console.log(`load average before: ${load()}`);
  wrk(off, 1);
  wrk(on, 1);
  const results = { off: [] as number[], on: [] as number[] };
  const cpu = { off: [] as number[], on: [] as number[] };
  for (let i = 0; i < runs; i++) {
    const order = i % 2 === 0 ? (["off", "on"] as const) : (["on", "off"] as const);
    for (const which of order) {
      const r = wrk(which === "off" ? off : on, seconds);
      results[which].push(r.rps);
      cpu[which].push(r.cpuUs);
      console.log(`run ${i + 1} metrics ${which.padEnd(3)} ${r.rps.toFixed(0)} req/s, server CPU ${r.cpuUs.toFixed(2)} µs/request`);
    }
  }
  const mOff = median(results.off);
  const mOn = median(results.on);
  const ratio = mOn / mOff;
  const pairRatio = median(results.on.map((v, i) => v / results.off[i]!));
  const cpuOff = median(cpu.off);
  const cpuOn = median(cpu.on);
  console.log(`load average after: ${load()}`);
  console.log(
    `median metrics off ${mOff.toFixed(0)} req/s, on ${mOn.toFixed(0)} req/s, ratio on/off ${ratio.toFixed(3)} (bar ${bar}); median of paired ratios ${pairRatio.toFixed(3)}`,
  );
  console.log(
    `median server CPU per request: off ${cpuOff.toFixed(2)} µs, on ${cpuOn.toFixed(2)} µs (+${(cpuOn - cpuOff).toFixed(2)} µs; CPU-bound throughput ratio ${(cpuOff / cpuOn).toFixed(3)})`,
  );
  console.log(
    JSON.stringify({
      bench: "metrics",
      path,
      connections,
      seconds,
      runs,
      off: results.off,
      on: results.on,
      medianOff: mOff,
      medianOn: mOn,
      ratio,
      pairRatio,
      cpuUsOff: cpu.off,
      cpuUsOn: cpu.on,
      load: loadavg(),
    }),
  );
  process.exitCode = ratio >= bar ? 0 : 1;
} finally {
  off.proc.kill();
  on.proc.kill();
  await Promise.all([off.proc.exited, on.proc.exited]);
}
