#!/usr/bin/env bun
/**
 * `npm run soak`: a bounded soak at half the measured peak (default 10 minutes; `--duration 3m`).
 *
 * It starts the server in its own process, measures the peak rate of the request mix for 5 s with 32 concurrent
 * clients, then sends the mix open-loop at half that rate: leaf and recursive reads, access tokens for several scope
 * sets, ID tokens for rotating audiences, guest-attribute writes, hanging waits (timeout 1-3 s), control-API edits,
 * and a config-file rewrite every 10 s (a reload). Every 10 s it prints the server's RSS, its event-loop delay and the
 * answers by status.
 *
 * Fails (exit 1) on: RSS growth over 10% from the end of warm-up (the first fifth, at least 30 s) to the end
 * (medians of the last three samples of each), any 5xx, any request left unanswered (no answer within 30 s, or a
 * failed connection).
 *
 * Options: --duration <Go duration or seconds> (default 10m), --rate <requests/s> (skip the peak measurement).
 */
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseDuration } from "../src/duration.ts";

const arg = (name: string): string | undefined => {
  const i = process.argv.indexOf(`--${name}`);
  return i < 0 ? undefined : process.argv[i + 1];
};
const durationMs = parseDuration(arg("duration") ?? "10m");
const H = { "Metadata-Flavor": "Google" };
const V1 = "/computeMetadata/v1/";

// The config: the bundled VM with guest attributes on, rewritten every 10 s with a new description.
const dir = mkdtempSync(join(tmpdir(), "gce-md-soak-"));
const configFile = join(dir, "config.json");
const base = JSON.parse(readFileSync(new URL("../config.json", import.meta.url), "utf8"));
base.computeMetadata.v1.instance.attributes["enable-guest-attributes"] = "TRUE";
base.computeMetadata.v1.instance.attributes["soak-watched"] = "initial";
const writeConfig = (n: number) => {
  base.computeMetadata.v1.instance.description = `soak generation ${n}`;
  writeFileSync(configFile, JSON.stringify(base));
};
writeConfig(0);

const child = Bun.spawn([process.execPath, join(import.meta.dir, "soak-server.ts"), configFile], {
  stdin: "ignore",
  stdout: "pipe",
  stderr: "inherit",
});
const samples: Array<{ t: number; rss: number; p99: number; max: number }> = [];
const t0 = Date.now();
const port = await new Promise<number>((resolve, reject) => {
  void (async () => {
    const decoder = new TextDecoder();
    let buf = "";
    for await (const chunk of child.stdout as ReadableStream<Uint8Array>) {
      buf += decoder.decode(chunk, { stream: true });
      let nl = buf.indexOf("\n");
      while (nl >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        const ready = /^READY (\d+)/.exec(line);
        if (ready) resolve(Number(ready[1]));
        const stats = /^STATS (\d+) ([\d.]+) ([\d.]+)/.exec(line);
        if (stats) samples.push({ t: Date.now() - t0, rss: Number(stats[1]), p99: Number(stats[2]), max: Number(stats[3]) });
        nl = buf.indexOf("\n");
      }
    }
    reject(new Error("the soak server exited"));
  })();
});
const url = `http://127.0.0.1:${port}`;

const SCOPES = [
  "",
  "https://www.googleapis.com/auth/cloud-platform",
  "https://www.googleapis.com/auth/devstorage.read_only,openid",
  "a,b,c",
];
const LEAVES = [
  "project/project-id",
  "instance/id",
  "instance/zone",
  "instance/network-interfaces/0/ip",
  "instance/attributes/enable-oslogin",
  "instance/description",
];
let n = 0;

/** One request of the mix; resolves with its status. */
function one(allowWaits: boolean): Promise<number> {
  const i = n++;
  const r = Math.random() * 100;
  const get = (path: string) => statusOf(fetch(url + V1 + path, { headers: H }));
  if (r < 40) return get(LEAVES[i % LEAVES.length]!);
  if (r < 52) return get(i % 2 ? "instance/?recursive=true" : "?recursive=true&alt=json");
  if (r < 67) {
    const scopes = SCOPES[i % SCOPES.length]!;
    return get(`instance/service-accounts/default/token${scopes ? `?scopes=${scopes}` : ""}`);
  }
  if (r < 77)
    return get(`instance/service-accounts/default/identity?audience=https://aud-${i % 400}.example&format=${i % 3 ? "standard" : "full"}`);
  if (r < 85)
    return statusOf(
      fetch(`${url}${V1}instance/guest-attributes/soak-${i % 5}/key-${i % 200}`, { method: "PUT", headers: H, body: `value ${i}` }),
    );
  if (r < 92 && allowWaits) return get(`instance/attributes/soak-watched?wait_for_change=true&timeout_sec=${1 + (i % 3)}`);
  return statusOf(
    fetch(`${url}/emulator/v1/metadata/instance/attributes/soak-${i % 2 ? "watched" : `edit-${i % 50}`}`, {
      method: "PUT",
      headers: H,
      body: JSON.stringify(`edit ${i}`),
    }),
  );
}

/** The status of an answer, once its body is read. */
async function statusOf(p: Promise<Response>): Promise<number> {
  const res = await p;
  await res.arrayBuffer();
  return res.status;
}

// Peak: closed loop, 32 clients, 5 s, no waits (they would measure their own timeouts).
async function peak(): Promise<number> {
  let done = 0;
  const end = Date.now() + 5000;
  await Promise.all(
    Array.from({ length: 32 }, async () => {
      while (Date.now() < end) {
        await one(false);
        done++;
      }
    }),
  );
  return done / 5;
}

const given = arg("rate");
const measured = given ? undefined : await peak();
const rate = given ? Number(given) : Math.floor(measured! / 2);
console.log(
  `soak: ${Math.round(durationMs / 1000)} s at ${rate} requests/s${measured ? ` (half the measured peak of ${Math.round(measured)}/s)` : ""}`,
);

const byStatus = new Map<number, number>();
let window = new Map<number, number>();
let unanswered = 0;
let inFlight = 0;
let maxInFlight = 0;
let sent = 0;
const pending = new Set<Promise<void>>();
const start = Date.now();
const warmupMs = Math.max(30_000, durationMs / 5);
let generation = 0;
const reloads = setInterval(() => writeConfig(++generation), 10_000);

function launch(): void {
  sent++;
  inFlight++;
  maxInFlight = Math.max(maxInFlight, inFlight);
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<number>((resolve) => {
    timer = setTimeout(() => resolve(-1), 30_000);
  });
  const p = Promise.race([one(true).catch(() => -2), timeout]).then((status) => {
    clearTimeout(timer);
    inFlight--;
    if (status < 0) unanswered++;
    else {
      byStatus.set(status, (byStatus.get(status) ?? 0) + 1);
      window.set(status, (window.get(status) ?? 0) + 1);
    }
    pending.delete(p);
  });
  pending.add(p);
}

const mb = (b: number) => (b / 1024 / 1024).toFixed(1);
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
let lastReport = Date.now();
let warmRss: number | undefined;
const tickMs = 10;
await new Promise<void>((resolve) => {
  let owed = 0;
  const ticker = setInterval(() => {
    const now = Date.now();
    if (now - start >= durationMs) {
      clearInterval(ticker);
      resolve();
      return;
    }
    owed += (rate * tickMs) / 1000;
    while (owed >= 1) {
      launch();
      owed--;
    }
    if (warmRss === undefined && now - start >= warmupMs && samples.length >= 3) {
      warmRss = median(samples.slice(-3).map((s) => s.rss));
      console.log(`  warm-up over: RSS ${mb(warmRss)} MB`);
    }
    if (now - lastReport >= 10_000) {
      lastReport = now;
      const recent = samples.filter((s) => s.t >= now - t0 - 10_000);
      const last = samples.at(-1);
      const statuses = [...window].sort((a, b) => a[0] - b[0]).map(([s, c]) => `${s}:${c}`);
      window = new Map();
      console.log(
        `  ${String(Math.round((now - start) / 1000)).padStart(4)} s  RSS ${last ? mb(last.rss) : "?"} MB  loop delay p99 ${Math.max(...recent.map((s) => s.p99)).toFixed(1)} ms max ${Math.max(...recent.map((s) => s.max)).toFixed(1)} ms  in flight ${inFlight}  answers ${statuses.join(" ")}  unanswered ${unanswered}`,
      );
    }
  }, tickMs);
});
clearInterval(reloads);
await Promise.all(pending);
const endRss = median(samples.slice(-3).map((s) => s.rss));
child.kill("SIGTERM");
await child.exited;

const fivexx = [...byStatus].filter(([s]) => s >= 500).reduce((a, [, c]) => a + c, 0);
const growth = warmRss ? (endRss - warmRss) / warmRss : 0;
const first = samples[0]?.rss ?? 0;
console.log(
  `done: ${sent} requests (${Math.round(sent / (durationMs / 1000))}/s), ${generation} config reloads; answers ${[...byStatus]
    .sort((a, b) => a[0] - b[0])
    .map(([s, c]) => `${s}:${c}`)
    .join(" ")}; 5xx ${fivexx}; unanswered ${unanswered}; most in flight ${maxInFlight}`,
);
console.log(
  `RSS: ${mb(first)} MB at start, ${warmRss ? mb(warmRss) : "?"} MB after warm-up, ${mb(endRss)} MB at the end (${(growth * 100).toFixed(1)}% after warm-up)`,
);
const failures = [
  ...(growth > 0.1 ? [`RSS grew ${(growth * 100).toFixed(1)}% after warm-up (limit 10%)`] : []),
  ...(fivexx > 0 ? [`${fivexx} answers were 5xx`] : []),
  ...(unanswered > 0 ? [`${unanswered} requests were left unanswered`] : []),
  ...(warmRss === undefined ? ["the run ended before warm-up did: give a longer --duration"] : []),
];
for (const f of failures) console.log(`FAIL: ${f}`);
console.log(failures.length ? "soak failed" : "soak passed");
process.exit(failures.length ? 1 : 0);
