/**
 * Hanging-GET load: 10,000 concurrent wait_for_change requests on one node, held by a server in a child process.
 *
 * Reports (targets in brackets):
 *   - server RSS added by holding them                                      [< 100 MB]
 *   - time from one change until all of them have the new value             [< 250 ms]
 *   - time from writing a 5,000-attribute config file to a waiter seeing it [< 100 ms]
 *
 * The client holds its sockets with raw Bun.connect HTTP/1.1 (cheaper than fetch). Needs `ulimit -n` above the
 * waiter count in both processes. Usage: bun bench/waiters.ts [waiters=10000]
 */
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { readyPort } from "./spawn.ts";

const WAITERS = Number(process.argv[2] ?? 10_000);
const HOST = "127.0.0.1";
const NODE = "/computeMetadata/v1/instance/attributes/watched";
const dir = mkdtempSync(join(tmpdir(), "gce-md-bench-"));
const file = join(dir, "config.json");
const base = JSON.parse(readFileSync(new URL("../config.json", import.meta.url), "utf8"));

function configText(attrs: number, tag: string): string {
  const c = structuredClone(base);
  c.computeMetadata.v1.instance.attributes.watched = "initial";
  for (let i = 0; i < attrs; i++) c.computeMetadata.v1.instance.attributes[`key-${i}`] = `${tag}-${i}`;
  return JSON.stringify(c);
}
writeFileSync(file, configText(0, "a"));

const child = Bun.spawn([process.execPath, new URL("./waiters-server.ts", import.meta.url).pathname, file], {
  stdin: "ignore",
  stdout: "pipe",
  stderr: "inherit",
});
const port = await readyPort(child.stdout);
const url = `http://${HOST}:${port}`;
const H = { "Metadata-Flavor": "Google" };

function rssMB(pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, "utf8");
  return Number(/VmRSS:\s+(\d+) kB/.exec(status)![1]) / 1024;
}
const status = async () => (await (await fetch(`${url}/emulator/v1/status`, { headers: H })).json()) as { waiters: number };

// Warm up the serving path, then take the baseline.
for (let i = 0; i < 200; i++) await (await fetch(url + NODE, { headers: H })).text();
const etag = (await fetch(url + NODE, { headers: H })).headers.get("etag")!;
Bun.gc(true);
await Bun.sleep(300);
const rssBefore = rssMB(child.pid);

// Open the waiters in batches (the listen backlog is finite) and wait until the server holds them all.
const request = `GET ${NODE}?wait_for_change=true&last_etag=${etag} HTTP/1.1\r\nHost: metadata.google.internal\r\nMetadata-Flavor: Google\r\n\r\n`;
const NEW = "changed-value";
let answered = 0;
let lastAnswerAt = 0;
let failures = 0;
const sockets: Bun.Socket<{ buf: string; done: boolean }>[] = [];
const BATCH = 500;
for (let i = 0; i < WAITERS; i += BATCH) {
  const batch: Promise<Bun.Socket<{ buf: string; done: boolean }>>[] = [];
  for (let j = i; j < Math.min(WAITERS, i + BATCH); j++) {
    batch.push(
      Bun.connect<{ buf: string; done: boolean }>({
        hostname: HOST,
        port,
        data: { buf: "", done: false },
        socket: {
          open(s) {
            s.write(request);
          },
          data(s, chunk) {
            if (s.data.done) return;
            s.data.buf += chunk.toString();
            if (s.data.buf.includes(NEW)) {
              s.data.done = true;
              answered++;
              lastAnswerAt = performance.now();
            } else if (s.data.buf.startsWith("HTTP/1.1 ") && !s.data.buf.startsWith("HTTP/1.1 200")) {
              s.data.done = true;
              failures++;
            }
          },
          error() {
            failures++;
          },
        },
      }),
    );
  }
  sockets.push(...(await Promise.all(batch)));
}
const holdDeadline = Date.now() + 30_000;
while ((await status()).waiters < WAITERS) {
  if (Date.now() > holdDeadline) throw new Error(`server holds only ${(await status()).waiters} of ${WAITERS} waiters`);
  await Bun.sleep(50);
}
await Bun.sleep(500);
const rssHeld = rssMB(child.pid);

// One change through the control API; time until every waiter has the new value.
const t0 = performance.now();
const put = await fetch(`${url}/emulator/v1/metadata/instance/attributes/watched`, {
  method: "PUT",
  body: JSON.stringify(NEW),
  headers: H,
});
if (put.status !== 200) throw new Error(`change refused: ${put.status} ${await put.text()}`);
const wakeDeadline = Date.now() + 10_000;
while (answered + failures < WAITERS && Date.now() < wakeDeadline) await Bun.sleep(1);
const wakeMs = lastAnswerAt - t0;
for (const s of sockets) s.end();

// A 5,000-attribute config file written; time until a waiter on the last attribute sees it.
writeFileSync(file, configText(5000, "a"));
for (let i = 0; i < 100 && (await fetch(`${url}/computeMetadata/v1/instance/attributes/key-4999`, { headers: H })).status !== 200; i++)
  await Bun.sleep(20);
const fileTimes: number[] = [];
for (let round = 0; round < 7; round++) {
  const tag = `r${round}`;
  const waiting = fetch(`${url}/computeMetadata/v1/instance/attributes/key-4999?wait_for_change=true&timeout_sec=10`, { headers: H }).then(
    (r) => r.text(),
  );
  while ((await status()).waiters < 1) await Bun.sleep(2);
  const start = performance.now();
  writeFileSync(file, configText(5000, tag));
  const body = await waiting;
  fileTimes.push(performance.now() - start);
  if (body !== `${tag}-4999`) throw new Error(`file change not seen: ${body}`);
  await Bun.sleep(100);
}
fileTimes.sort((a, b) => a - b);

child.kill("SIGTERM");
await child.exited;

const added = rssHeld - rssBefore;
const median = fileTimes[Math.floor(fileTimes.length / 2)]!;
const worst = fileTimes.at(-1)!;
const line = (ok: boolean, text: string) => console.log(`${ok ? "PASS" : "FAIL"}  ${text}`);
console.log(`waiters: ${WAITERS} held on ${NODE}; server RSS ${rssBefore.toFixed(1)} MB idle, ${rssHeld.toFixed(1)} MB holding them`);
line(
  added < 100,
  `server memory added by ${WAITERS} hanging requests: ${added.toFixed(1)} MB (${((added * 1024) / WAITERS).toFixed(2)} kB each) [< 100 MB]`,
);
line(
  answered === WAITERS && wakeMs < 250,
  `one change → all ${answered}/${WAITERS} answered with the new value in ${wakeMs.toFixed(1)} ms (${failures} failures) [< 250 ms]`,
);
line(
  worst < 100,
  `5,000-attribute config file written → visible to a waiter: median ${median.toFixed(1)} ms, worst ${worst.toFixed(1)} ms of ${fileTimes.length} [< 100 ms]`,
);
process.exit(added < 100 && answered === WAITERS && wakeMs < 250 && worst < 100 ? 0 : 1);
