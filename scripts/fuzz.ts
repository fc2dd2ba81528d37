#!/usr/bin/env bun
/**
 * `npm run fuzz`: the HTTP fuzzer (100,000 requests over raw sockets, against a server in its own process) and the
 * config fuzzer (1,000 mutated configs as reloads, control-API configs and start-ups), with a fresh seed that is
 * printed first, so a finding can be replayed: `npm run fuzz -- --seed N`. Exits 1 when anything is found.
 *
 * Options: --seed N, --requests N (default 100000), --configs N (default 1000).
 */
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fuzzConfig } from "../test/fuzz/config-fuzz.ts";
import { fuzzHttp } from "../test/fuzz/http-fuzz.ts";
import { freshSeed } from "../test/fuzz/random.ts";
import { startFuzzServer } from "../test/fuzz/server-process.ts";

function option(name: string, fallback: number): number {
  const i = process.argv.indexOf(`--${name}`);
  if (i < 0) return fallback;
  const v = Number(process.argv[i + 1]);
  if (!Number.isSafeInteger(v) || v < 0) throw new Error(`--${name} takes a whole number`);
  return v;
}

const seed = option("seed", freshSeed());
const requests = option("requests", 100_000);
const configs = option("configs", 1000);
console.log(`seed ${seed} (replay: npm run fuzz -- --seed ${seed})`);

const server = await startFuzzServer();
const t0 = performance.now();
const http = await fuzzHttp({
  port: server.port,
  seed,
  requests,
  alive: server.alive,
  progress: (n) => console.log(`  ${n} requests, ${Math.round((performance.now() - t0) / 1000)} s`),
});
const errors = server.errors();
await server.stop();
const statuses = [...http.byStatus].sort((a, b) => a[0] - b[0]).map(([s, n]) => `${s}:${n}`);
console.log(
  `http: ${http.requests} requests on ${http.cases} connections in ${Math.round((performance.now() - t0) / 1000)} s; answers ${statuses.join(" ")}`,
);

const t1 = performance.now();
const config = await fuzzConfig({ seed, iterations: configs, startupEvery: 10, dir: mkdtempSync(join(tmpdir(), "gce-md-fuzz-")) });
console.log(
  `config: ${config.reloads} reloads (${config.accepted} accepted), ${config.startups} start-ups in ${Math.round((performance.now() - t1) / 1000)} s`,
);

const findings = [
  ...http.findings.map((f) => `http ${f.kind}: ${f.detail}\n    sent ${f.request}`),
  ...errors.map((l) => `server logged: ${l}`),
  ...config.findings.map((f) => `config (${f.how}): ${f.detail}`),
];
for (const f of findings.slice(0, 30)) console.log(f);
console.log(`${findings.length} findings (seed ${seed})`);
process.exit(findings.length > 0 ? 1 : 0);
