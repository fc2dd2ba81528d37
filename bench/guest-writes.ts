/**
 * Guest-attribute writes with many keys present, against a server in a child process:
 *
 *   - the latency of one PUT with N keys already present (median and p99 of sequential PUTs), in one namespace and
 *     spread over namespaces of 1,000 keys;
 *   - the latency of cached token reads alone, and while a client writes guest attributes back to back.
 *
 * Usage: bun bench/guest-writes.ts [keys=8000] [one|spread|both=both]
 * (A build where each write recompiles the whole tree takes minutes to fill 8,000 keys; run one layout there.)
 */
import { readyPort } from "./spawn.ts";

const KEYS = Number(process.argv[2] ?? 8000);
const LAYOUT = process.argv[3] ?? "both";
const H = { "Metadata-Flavor": "Google" };
const GA = "/computeMetadata/v1/instance/guest-attributes/";
const TOKEN = "/computeMetadata/v1/instance/service-accounts/default/token";

const child = Bun.spawn([process.execPath, new URL("./guest-writes-server.ts", import.meta.url).pathname], {
  stdin: "ignore",
  stdout: "pipe",
  stderr: "inherit",
});
const port = await readyPort(child.stdout);
const url = `http://127.0.0.1:${port}`;

const put = async (ns: string, key: string, value: string) => {
  const r = await fetch(`${url}${GA}${ns}/${key}`, { method: "PUT", headers: H, body: value });
  await r.text();
  if (r.status !== 200) throw new Error(`PUT ${ns}/${key}: ${r.status}`);
};
const timed = async (f: () => Promise<unknown>): Promise<number> => {
  const t = performance.now();
  await f();
  return performance.now() - t;
};
const pct = (xs: number[], p: number) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(xs.length * p))]!;
const fmt = (xs: number[]) => `median ${pct(xs, 0.5).toFixed(3)} ms, p99 ${pct(xs, 0.99).toFixed(3)} ms`;

async function fill(nsOf: (i: number) => string): Promise<void> {
  // Eight clients at once to fill faster; the measurement below is sequential.
  let next = 0;
  await Promise.all(
    Array.from({ length: 8 }, async () => {
      for (let i = next++; i < KEYS; i = next++) await put(nsOf(i), `key-${i}`, `value-${i}`);
    }),
  );
}

async function measurePuts(nsOf: (i: number) => string, n = 300): Promise<number[]> {
  const out: number[] = [];
  for (let i = 0; i < n; i++) out.push(await timed(() => put(nsOf(i), `key-${i}`, `changed-${i}-${Math.random()}`)));
  return out;
}

async function tokenReads(n: number): Promise<number[]> {
  const out: number[] = [];
  for (let i = 0; i < n; i++) out.push(await timed(async () => (await fetch(url + TOKEN, { headers: H })).text()));
  return out;
}

try {
  for (let i = 0; i < 300; i++) await (await fetch(url + TOKEN, { headers: H })).text();
  console.log(`token read, no writes:                          ${fmt(await tokenReads(1000))}`);
  const layouts: Array<[string, (i: number) => string]> = [];
  if (LAYOUT !== "spread") layouts.push(["one namespace", () => "one"]);
  if (LAYOUT !== "one") layouts.push(["namespaces of 1,000 keys", (i) => `ns-${Math.floor(i / 1000)}`]);
  for (const [n, [name, nsOf]] of layouts.entries()) {
    await fill(nsOf);
    console.log(`guest PUT with ${KEYS} keys in ${name}: ${fmt(await measurePuts(nsOf))}`);
    let writing = true;
    let writes = 0;
    const writer = (async () => {
      for (let i = 0; writing; i++) {
        await put(nsOf(i % KEYS), `key-${i % KEYS}`, `busy-${i}`);
        writes++;
      }
    })();
    const busy = await tokenReads(1000);
    writing = false;
    await writer;
    console.log(`token read while writing (${writes} PUTs, ${name}): ${fmt(busy)}`);
    // The next layout starts from an empty guest-attributes tree.
    for (let i = 0; n < layouts.length - 1 && i < KEYS; i++) {
      const r = await fetch(`${url}${GA}${nsOf(i)}/key-${i}`, { method: "DELETE", headers: H });
      await r.text();
    }
  }
} finally {
  child.kill("SIGTERM");
  await child.exited;
}
