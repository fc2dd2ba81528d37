#!/usr/bin/env bun
/**
 * `-upstream` propagation delay: how long after a change is made upstream a waiter on the overlay is answered with
 * it. Two servers from this source tree, as separate processes: an upstream with `-controlAPI`, and an overlay with
 * `-upstream` and no config. Each sample hangs one `wait_for_change` on the upstream itself and one on the
 * overlay, on the same attribute, then PUTs a new value through the upstream's control API; the upstream's own
 * waiter is the baseline measured in the same run (the control API round trip plus its own wake-up), and the
 * overlay's extra time over it is what the overlay adds.
 *
 *   node_modules/.bin/bun bench/upstream.ts [--samples 50]
 */
import { join, resolve } from "node:path";
import { runBench, startListening, stopAll } from "./spawn.ts";

const ROOT = resolve(import.meta.dir, "..");
const H = { "Metadata-Flavor": "Google" };
const PATH = "/computeMetadata/v1/instance/attributes/bench";

async function start(args: string[]): Promise<string> {
  return (await startListening([process.execPath, join(ROOT, "src/cli.ts"), "-port", ":0", ...args], ROOT)).url;
}

const put = async (upstream: string, value: string) => {
  const r = await fetch(`${upstream}/emulator/v1/metadata/instance/attributes/bench`, {
    method: "PUT",
    headers: H,
    body: JSON.stringify(value),
  });
  if (r.status !== 200) throw new Error(`control API: ${r.status} ${await r.text()}`);
};

/** Hang a wait on `url` and resolve with the time its answer arrived and the value. */
async function hang(url: string): Promise<{ ready: Promise<void>; answered: Promise<{ at: number; body: string }> }> {
  const first = await fetch(url + PATH, { headers: H });
  const etag = first.headers.get("etag");
  await first.text();
  const answered = fetch(`${url}${PATH}?wait_for_change=true&last_etag=${etag}&timeout_sec=30`, { headers: H }).then(async (r) => ({
    body: await r.text(),
    at: performance.now(),
  }));
  return { ready: Bun.sleep(20), answered };
}

const pct = (xs: number[], p: number) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))]!;
};

async function main(argv: string[]): Promise<number> {
  const i = argv.indexOf("--samples");
  const samples = i >= 0 ? Number(argv[i + 1]) : 50;
  try {
    const upstream = await start(["-controlAPI"]);
    await put(upstream, "v0");
    const overlay = await start(["-upstream", upstream]);
    // Warm-up: the control API's routes load on first use.
    await put(upstream, "warm");
    await Bun.sleep(200);
    const direct: number[] = [];
    const through: number[] = [];
    for (let n = 1; n <= samples; n++) {
      const value = `v${n}`;
      const a = await hang(upstream);
      const b = await hang(overlay);
      await Promise.all([a.ready, b.ready]);
      const t0 = performance.now();
      await put(upstream, value);
      const [ra, rb] = await Promise.all([a.answered, b.answered]);
      if (ra.body !== value || rb.body !== value) throw new Error(`sample ${n}: got ${ra.body} / ${rb.body}, expected ${value}`);
      direct.push(ra.at - t0);
      through.push(rb.at - t0);
    }
    const extra = through.map((t, k) => t - direct[k]!);
    const line = (name: string, xs: number[]) =>
      `  ${name.padEnd(34)} median ${pct(xs, 50).toFixed(2)} ms   p90 ${pct(xs, 90).toFixed(2)} ms   max ${Math.max(...xs).toFixed(2)} ms`;
    console.log(`${samples} changes made through the upstream's control API (PUT), waiters answered after:`);
    console.log(line("upstream's own waiter (baseline)", direct));
    console.log(line("overlay's waiter (-upstream)", through));
    console.log(line("overlay minus baseline", extra));
    return pct(through, 90) < 1000 ? 0 : 1;
  } finally {
    await stopAll();
  }
}

if (import.meta.main) await runBench(main);
