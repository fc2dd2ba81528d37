#!/usr/bin/env bun
/**
 * Per-caller views (`-callers`): leaf throughput of a matched caller against an unmatched one, and of a server
 * with a callers file against one without, all in one run. wrk connects from 127.0.0.1, so three servers are
 * started from the same source tree:
 *
 *   none       no -callers (the hot path has one field check more than before: `state.callers === undefined`)
 *   unmatched  -callers whose one entry matches 10.0.0.0/8: 127.0.0.1 is unmatched and gets the served tree
 *   matched    -callers whose one entry matches 127.0.0.1/32: the caller's own compiled snapshot
 *
 *   node_modules/.bin/bun bench/callers.ts [--rounds 5] [--duration 3] [--connections 32] [--before REV]
 *
 * `--before REV` adds a fourth server, the source tree at git revision REV (say, the commit before -callers), to
 * see whether `none` got slower than it was.
 *
 * Each round measures the three back to back, in an order that flips every round, after a warm-up; the printed
 * ratios are medians of the per-round ratios (matched/unmatched is judged against 0.95x). Then one more server runs
 * both: its callers file is switched between a matched and an unmatched entry before each run, which keeps the
 * scheduler's treatment of separate processes on a busy machine out of that comparison.
 */
import { readFileSync } from "node:fs";
import { mkdir, rm, symlink, writeFile } from "node:fs/promises";
import { join, resolve } from "node:path";
import { runBench, startListening, stopAll } from "./spawn.ts";
import { parseWrk } from "./http.ts";

const ROOT = resolve(import.meta.dir, "..");
const BUN = process.execPath;
const PATHS = [
  { name: "leaf project/project-id", path: "/computeMetadata/v1/project/project-id" },
  { name: "cached token", path: "/computeMetadata/v1/instance/service-accounts/default/token" },
];

function parseArgs(argv: string[]) {
  const o = { rounds: 5, duration: 3, connections: 32, before: "" };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === "--before") {
      o.before = argv[++i] ?? "";
      continue;
    }
    const v = Number(argv[++i]);
    if (!Number.isFinite(v) || v <= 0) throw new Error(`${a} needs a positive number`);
    if (a === "--rounds") o.rounds = v;
    else if (a === "--duration") o.duration = v;
    else if (a === "--connections") o.connections = v;
    else throw new Error(`unknown argument ${a}`);
  }
  return o;
}

async function start(args: string[], cwd: string, root = ROOT): Promise<{ url: string; pid: number }> {
  const { url, proc } = await startListening([BUN, join(root, "src/cli.ts"), "-port", ":0", ...args], cwd);
  return { url, pid: proc.pid };
}

/** CPU ticks (user + system) a process has used; /proc counts 100 per second. */
function cpuTicks(pid: number): number {
  try {
    const fields = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1]!.split(" ");
    return Number(fields[11]) + Number(fields[12]);
  } catch {
    return Number.NaN;
  }
}

interface Sample {
  rps: number;
  /** Server CPU per request (µs): less disturbed by a busy machine than req/s. */
  cpuUs: number;
}

async function wrk(url: string, seconds: number, connections: number, pid: number): Promise<Sample> {
  const t0 = cpuTicks(pid);
  const p = Bun.spawn(["wrk", "-t1", `-c${connections}`, `-d${seconds}s`, "--latency", "-H", "Metadata-Flavor: Google", url], {
    stdout: "pipe",
    stderr: "pipe",
  });
  const [out, err, code] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text(), p.exited]);
  if (code !== 0) throw new Error(`wrk failed (${code}): ${err}${out}`);
  const r = parseWrk(out);
  if (r.non2xx > 0) throw new Error(`${url}: ${r.non2xx} non-2xx answers under load`);
  return { rps: r.rps, cpuUs: ((cpuTicks(pid) - t0) * 10_000) / r.requests };
}

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};

const callers = (cidr: string) =>
  JSON.stringify({
    callers: [
      {
        match: { cidr },
        overlay: {
          instance: {
            hostname: "pod.example",
            serviceAccounts: {
              default: { email: "pod@example-project.iam.gserviceaccount.com", scopes: ["https://www.googleapis.com/auth/cloud-platform"] },
            },
          },
        },
      },
    ],
    unmatched: "allow",
  });

async function main(argv: string[]): Promise<number> {
  const o = parseArgs(argv);
  if (!Bun.which("wrk")) {
    console.error("wrk not found: install it with `apt-get install -y wrk` (Debian/Ubuntu)");
    return 2;
  }
  const cwd = join(ROOT, ".tmp", "bench", "callers");
  await mkdir(cwd, { recursive: true });
  try {
    await writeFile(join(cwd, "matched.json"), callers("127.0.0.1/32"));
    await writeFile(join(cwd, "unmatched.json"), callers("10.0.0.0/8"));
    const targets = [
      { name: "none", ...(await start([], cwd)) },
      { name: "unmatched", ...(await start(["-callers", join(cwd, "unmatched.json")], cwd)) },
      { name: "matched", ...(await start(["-callers", join(cwd, "matched.json")], cwd)) },
    ];
    if (o.before) {
      // That revision's sources beside this checkout's node_modules.
      const tree = join(cwd, "before");
      await mkdir(tree, { recursive: true });
      const archive = Bun.spawnSync([
        "bash",
        "-c",
        `git -C ${JSON.stringify(ROOT)} archive ${o.before} src config.json package.json | tar -x -C ${JSON.stringify(tree)}`,
      ]);
      if (archive.exitCode !== 0) throw new Error(`git archive ${o.before}: ${archive.stderr.toString()}`);
      await symlink(join(ROOT, "node_modules"), join(tree, "node_modules"));
      targets.push({ name: "before", ...(await start([], cwd, tree)) });
    }
    // The matched caller really is served its own tree.
    const email = async (url: string) =>
      (
        await fetch(`${url}/computeMetadata/v1/instance/service-accounts/default/email`, { headers: { "Metadata-Flavor": "Google" } })
      ).text();
    if ((await email(targets[2]!.url)) !== "pod@example-project.iam.gserviceaccount.com")
      throw new Error("matched: not the caller's account");
    if ((await email(targets[1]!.url)) === "pod@example-project.iam.gserviceaccount.com")
      throw new Error("unmatched: the caller's account");
    console.log(`wrk -t1 -c${o.connections}, ${o.rounds} rounds x ${o.duration} s per path and server, from 127.0.0.1`);
    for (const t of targets) for (const p of PATHS) await wrk(t.url + p.path, 1, o.connections, t.pid);
    const rps = new Map<string, Sample[]>();
    for (let round = 0; round < o.rounds; round++) {
      for (const p of PATHS) {
        const order = round % 2 ? [...targets].reverse() : targets;
        for (const t of order) {
          const k = `${t.name} ${p.path}`;
          if (!rps.has(k)) rps.set(k, []);
          rps.get(k)!.push(await wrk(t.url + p.path, o.duration, o.connections, t.pid));
        }
      }
      process.stdout.write(`  round ${round + 1}/${o.rounds} done\n`);
    }
    let ok = true;
    for (const p of PATHS) {
      const of = (name: string) => rps.get(`${name} ${p.path}`)!;
      // Per-round pairs cancel slow drift; throughput from CPU per request (b/a) is what a busy machine disturbs least.
      const ratio = (a: string, b: string) => median(of(a).map((x, i) => x.rps / of(b)[i]!.rps));
      const cpuRatio = (a: string, b: string) => median(of(a).map((x, i) => of(b)[i]!.cpuUs / x.cpuUs));
      const both = (a: string, b: string) => `${ratio(a, b).toFixed(3)}x req/s, ${cpuRatio(a, b).toFixed(3)}x by CPU/req`;
      console.log(`\n${p.name}`);
      for (const t of targets) {
        const xs = of(t.name);
        console.log(
          `  ${t.name.padEnd(10)} ${median(xs.map((x) => x.rps))
            .toFixed(0)
            .padStart(
              7,
            )} req/s   ${median(xs.map((x) => x.cpuUs)).toFixed(2)} us CPU/req   rounds: ${xs.map((x) => x.rps.toFixed(0)).join(" ")}`,
        );
      }
      if (p === PATHS[0] && cpuRatio("matched", "unmatched") < 0.95) ok = false;
      console.log(`  matched / unmatched   ${both("matched", "unmatched")}   (target >= 0.95x)`);
      console.log(`  unmatched / none      ${both("unmatched", "none")}`);
      console.log(`  matched / none        ${both("matched", "none")}`);
      if (o.before) console.log(`  none / before         ${both("none", "before")}   (no -callers, against ${o.before})`);
    }

    // One process for both: the callers file is switched between matched and unmatched before each run, so the
    // scheduler's treatment of separate processes on a busy machine is out of the comparison.
    const switchFile = join(cwd, "switch.json");
    await writeFile(switchFile, callers("10.0.0.0/8"));
    const one = await start(["-callers", switchFile], cwd);
    const until = async (want: boolean) => {
      for (let i = 0; i < 500; i++) {
        if (((await email(one.url)) === "pod@example-project.iam.gserviceaccount.com") === want) return;
        await Bun.sleep(10);
      }
      throw new Error("the callers file was not reloaded");
    };
    const leaf = PATHS[0]!;
    const switched = { matched: [] as Sample[], unmatched: [] as Sample[] };
    for (let round = 0; round < o.rounds; round++) {
      for (const matched of round % 2 ? [false, true] : [true, false]) {
        await writeFile(switchFile, callers(matched ? "127.0.0.1/32" : "10.0.0.0/8"));
        await until(matched);
        if (round === 0) await wrk(one.url + leaf.path, 1, o.connections, one.pid);
        switched[matched ? "matched" : "unmatched"].push(await wrk(one.url + leaf.path, o.duration, o.connections, one.pid));
      }
    }
    const sw = (f: (m: Sample, u: Sample) => number) => median(switched.matched.map((m, i) => f(m, switched.unmatched[i]!)));
    console.log(`\n${leaf.name}, one server, the callers file switched between runs`);
    console.log(
      `  matched / unmatched   ${sw((m, u) => m.rps / u.rps).toFixed(3)}x req/s, ${sw((m, u) => u.cpuUs / m.cpuUs).toFixed(3)}x by CPU/req   (target >= 0.95x)`,
    );
    return ok ? 0 : 1;
  } finally {
    await stopAll();
    await rm(cwd, { recursive: true, force: true });
  }
}

if (import.meta.main) await runBench(main);
