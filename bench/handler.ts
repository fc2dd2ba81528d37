#!/usr/bin/env bun
/**
 * The metadata handler's own cost, in process, A/B against a git revision: each version's `createMetadataHandler`
 * over its own MetadataServer state answers the same Request in a tight loop, the two alternating round by round.
 * No sockets, so load on a shared machine disturbs it far less than bench/http.ts; use it to check that a change
 * to the guard costs nothing (e.g. the fault-injection hook with no rules).
 *
 *   node_modules/.bin/bun bench/handler.ts --against REV [--rounds 21] [--calls 500000]
 *
 * Prints CPU ns per call for each version and path, and this tree's calls/s over the revision's: the median of
 * paired rounds (with min–max), and the ratio of each version's best round (interference only adds time).
 */
import { resolve } from "node:path";
import { exportRevision } from "./revision.ts";

const ROOT = resolve(import.meta.dir, "..");
const PATHS = [
  { name: "leaf project/project-id", path: "/computeMetadata/v1/project/project-id" },
  { name: "instance/?recursive=true", path: "/computeMetadata/v1/instance/?recursive=true" },
  { name: "cached token", path: "/computeMetadata/v1/instance/service-accounts/default/token" },
];

function args(argv: string[]): { against: string; rounds: number; calls: number } {
  const o = { against: "", rounds: 21, calls: 500_000 };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === "--against") o.against = argv[++i] ?? "";
    else if (a === "--rounds") o.rounds = Number(argv[++i]);
    else if (a === "--calls") o.calls = Number(argv[++i]);
    else throw new Error(`unknown argument ${a}`);
  }
  if (!o.against) throw new Error("--against REV is required");
  return o;
}

type Handle = (req: Request) => Response | Promise<Response> | undefined;

async function load(root: string): Promise<Handle> {
  const { MetadataServer } = await import(`${root}/src/index.ts`);
  const { createMetadataHandler } = await import(`${root}/src/http/handler.ts`);
  const server = new MetadataServer({});
  return createMetadataHandler(server.state) as Handle;
}

/** CPU time per call in ns (user + system, so time the scheduler gives other processes does not count). */
async function loop(handle: Handle, req: Request, calls: number): Promise<number> {
  // A first answer to fill the token cache; then only synchronous answers are timed, from a collected heap.
  await handle(req);
  Bun.gc(true);
  const t0 = process.cpuUsage();
  for (let i = 0; i < calls; i++) {
    const r = handle(req);
    if (!(r instanceof Response)) throw new Error("expected a synchronous answer");
  }
  const d = process.cpuUsage(t0);
  return ((d.user + d.system) * 1000) / calls;
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};

const o = args(process.argv.slice(2));
const mine = await load(ROOT);
const theirs = await load(await exportRevision(o.against));
console.log(`in-process handler A/B: this tree vs ${o.against}, ${o.rounds} rounds x ${o.calls} calls per path`);
for (const p of PATHS) {
  const req = new Request(`http://127.0.0.1:8080${p.path}`, { headers: { "Metadata-Flavor": "Google" } });
  const a: number[] = [];
  const b: number[] = [];
  for (let r = 0; r < o.rounds; r++) {
    // Order flips every round so neither version always runs on a warmer cache.
    if (r % 2) {
      b.push(await loop(theirs, req, o.calls));
      a.push(await loop(mine, req, o.calls));
    } else {
      a.push(await loop(mine, req, o.calls));
      b.push(await loop(theirs, req, o.calls));
    }
  }
  const ratios = a.map((x, i) => b[i]! / x);
  // Interference only ever adds time, so each version's best round is the steadiest estimate of its own cost.
  const [bestA, bestB] = [Math.min(...a), Math.min(...b)];
  console.log(
    `  ${p.name.padEnd(26)} median ${median(a).toFixed(0)} vs ${median(b).toFixed(0)} ns/call, paired ratio ${median(ratios).toFixed(3)}x (${Math.min(...ratios).toFixed(3)}–${Math.max(...ratios).toFixed(3)});   best round ${bestA.toFixed(0)} vs ${bestB.toFixed(0)} ns/call: ${(bestB / bestA).toFixed(3)}x`,
  );
}
