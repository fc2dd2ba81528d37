#!/usr/bin/env bun
/**
 * The cost of picking a caller's view, in process: the metadata handler answering a leaf, called directly with a
 * server object whose `requestIP` returns a fresh address object per call (as Bun's does), with no network and no
 * wrk. Three handlers over the same served snapshot: no callers, callers with the address unmatched, callers with
 * the address matched. Rounds alternate the order; prints the median ns per request and the ratios. Less disturbed
 * by a busy machine than wrk, since each round is short and the three are measured back to back.
 *
 *   node_modules/.bin/bun bench/callers-handler.ts [--rounds 21] [--requests 200000] [--before REV]
 *
 * `--before REV` adds the handler of git revision REV (say, the commit before -callers), built the same way from
 * that revision's modules, to compare the path without callers against it. The last line measures Bun's own
 * `server.requestIP` in a real request handler: every request pays it once there are callers.
 */
import defaultConfigText from "../config.json" with { type: "text" };
import { callersFromDocument } from "../src/config/callers.ts";
import { claimsFromDocument, parseConfigText } from "../src/config/claims.ts";
import { EmulatedIssuer } from "../src/credentials/emulated.ts";
import { TokenCache } from "../src/credentials/token-cache.ts";
import { Callers } from "../src/http/callers.ts";
import { createMetadataHandler, type ServerHooks, type ServingState } from "../src/http/handler.ts";
import { fromPlain } from "../src/json.ts";
import { silentLogger } from "../src/log.ts";
import { Snapshot } from "../src/metadata/snapshot.ts";

function argText(name: string): string | undefined {
  const i = process.argv.indexOf(name);
  return i >= 0 ? process.argv[i + 1] : undefined;
}

function arg(name: string, fallback: number): number {
  const i = process.argv.indexOf(name);
  return i >= 0 ? Number(process.argv[i + 1]) : fallback;
}
const ROUNDS = arg("--rounds", 21);
const REQUESTS = arg("--requests", 200_000);

const snapshot = new Snapshot(claimsFromDocument(parseConfigText(defaultConfigText as unknown as string) as object));
const state = (): ServingState => ({
  snapshot,
  tokens: new TokenCache(new EmulatedIssuer()),
  log: silentLogger,
  legacyHeader: true,
  scheme: "http",
});
const withCallers = (cidr: string): ServingState => {
  const s = state();
  const callers = new Callers({ base: s, maxWaiters: 0, instanceCreationTimestamp: 0, log: silentLogger });
  const doc = { callers: [{ match: { cidr }, overlay: { instance: { hostname: "pod.example" } } }] };
  callers.install(callersFromDocument(fromPlain(doc), "bench"), snapshot);
  s.callers = callers;
  return s;
};

type Handle = (req: Request, server?: ServerHooks) => Response | Promise<Response> | undefined;
const variants: Array<{ name: string; handle: Handle }> = [
  { name: "none", handle: createMetadataHandler(state()) },
  { name: "unmatched", handle: createMetadataHandler(withCallers("10.0.0.0/8")) },
  { name: "matched", handle: createMetadataHandler(withCallers("127.0.0.1/32")) },
];

const before = argText("--before");
let beforeTree: string | undefined;
if (before) {
  // That revision's modules, built into a handler the same way (their APIs for this are unchanged).
  const { mkdtempSync, symlinkSync } = await import("node:fs");
  const { join, resolve } = await import("node:path");
  const root = resolve(import.meta.dir, "..");
  beforeTree = mkdtempSync(join(root, ".tmp-bench-before-"));
  const a = Bun.spawnSync([
    "bash",
    "-c",
    `git -C ${JSON.stringify(root)} archive ${before} src config.json package.json | tar -x -C ${JSON.stringify(beforeTree)}`,
  ]);
  if (a.exitCode !== 0) throw new Error(`git archive ${before}: ${a.stderr.toString()}`);
  symlinkSync(join(root, "node_modules"), join(beforeTree, "node_modules"));
  const m = (p: string) => import(join(beforeTree!, "src", p));
  const [claims, snap, emulated, cache, handler, log] = await Promise.all(
    ["config/claims.ts", "metadata/snapshot.ts", "credentials/emulated.ts", "credentials/token-cache.ts", "http/handler.ts", "log.ts"].map(
      m,
    ),
  );
  const old = new snap.Snapshot(claims.claimsFromDocument(claims.parseConfigText(defaultConfigText as unknown as string)));
  const oldState = {
    snapshot: old,
    tokens: new cache.TokenCache(new emulated.EmulatedIssuer()),
    log: log.silentLogger,
    legacyHeader: true,
    scheme: "http",
  };
  variants.push({ name: "before", handle: handler.createMetadataHandler(oldState) });
}
const server: ServerHooks = { requestIP: () => ({ address: "127.0.0.1", family: "IPv4", port: 40000 }) as { address: string } };
const req = new Request("http://127.0.0.1:8080/computeMetadata/v1/project/project-id", { headers: { "Metadata-Flavor": "Google" } });

function run(handle: Handle, n: number): number {
  let bytes = 0;
  const t0 = Bun.nanoseconds();
  for (let i = 0; i < n; i++) bytes += (handle(req, server) as Response).status;
  const ns = (Bun.nanoseconds() - t0) / n;
  if (bytes !== 200 * n) throw new Error("not every answer was 200");
  return ns;
}

for (const v of variants) run(v.handle, REQUESTS / 4); // warm-up and JIT
const ns = new Map<string, number[]>(variants.map((v) => [v.name, []]));
for (let r = 0; r < ROUNDS; r++) {
  const order = r % 2 ? [...variants].reverse() : variants;
  for (const v of order) ns.get(v.name)!.push(run(v.handle, REQUESTS));
}
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[xs.length >> 1]!;
const paired = (a: string, b: string) => median(ns.get(a)!.map((x, i) => ns.get(b)![i]! / x));
console.log(`${ROUNDS} rounds x ${REQUESTS} leaf requests, handler called in process`);
for (const v of variants) console.log(`  ${v.name.padEnd(10)} ${median(ns.get(v.name)!).toFixed(1)} ns/request`);
console.log(`  throughput matched / unmatched ${paired("matched", "unmatched").toFixed(3)}x (target >= 0.95x)`);
console.log(
  `  throughput unmatched / none ${paired("unmatched", "none").toFixed(3)}x, matched / none ${paired("matched", "none").toFixed(3)}x`,
);
if (before) console.log(`  throughput none / before (${before}) ${paired("none", "before").toFixed(3)}x`);
if (beforeTree) (await import("node:fs")).rmSync(beforeTree, { recursive: true, force: true });

// Bun's requestIP, in a real request handler (one socket, many calls).
const probe = Bun.serve({
  hostname: "127.0.0.1",
  port: 0,
  fetch(request, s) {
    const n = 20_000;
    const t0 = Bun.nanoseconds();
    for (let i = 0; i < n; i++) s.requestIP(request);
    return new Response(((Bun.nanoseconds() - t0) / n).toFixed(0));
  },
});
const ipNs = await (await fetch(`http://127.0.0.1:${probe.port}/`)).text();
await probe.stop(true);
console.log(`  Bun's server.requestIP: ${ipNs} ns per call (paid once per request with -callers)`);
