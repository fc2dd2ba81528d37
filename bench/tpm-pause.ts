/**
 * A TPM that stops answering, behind a running MetadataServer: a swtpm paused with SIGSTOP while a token request
 * waits on a signature, then resumed with SIGCONT. Measures, in one run:
 *
 * - leaf-read latency (GET /computeMetadata/v1/project/project-id, sequential) with the TPM idle, and during
 *   the pause (median, p99, max);
 * - the time from the token request to its 5xx (the TPM deadline, `--timeout`);
 * - the time from SIGCONT to the first token signed again (recovery).
 *
 *   node_modules/.bin/bun bench/tpm-pause.ts [--timeout MS] [--pause MS]
 *
 * The pause lasts `--pause` ms (default: the deadline plus one second), so the 5xx comes inside it.
 */
import { parseArgs } from "node:util";
import { TpmSource } from "../src/credentials/tpm.ts";
import { MetadataServer } from "../src/index.ts";
import { openTpmSigner } from "../src/tpm/signer.ts";
import { startSwtpm } from "../test/helpers/swtpm.ts";
import { Tpm2Tools } from "../test/helpers/tpm2-tools.ts";

const { values } = parseArgs({ options: { timeout: { type: "string", default: "10000" }, pause: { type: "string" } } });
const TIMEOUT_MS = Number(values.timeout);
const PAUSE_MS = Number(values.pause ?? TIMEOUT_MS + 1000);
const EMAIL = "123456789012-compute@developer.gserviceaccount.com";
const TOKEN = "/computeMetadata/v1/instance/service-accounts/default/token";
const LEAF = "/computeMetadata/v1/project/project-id";
const HEADERS = { "Metadata-Flavor": "Google" };

function stats(samples: number[]): string {
  const s = [...samples].sort((a, b) => a - b);
  const at = (q: number) => s[Math.min(s.length - 1, Math.ceil(q * s.length) - 1)]!;
  return `n ${s.length}  median ${at(0.5).toFixed(3)} ms  p99 ${at(0.99).toFixed(3)} ms  max ${s[s.length - 1]!.toFixed(3)} ms`;
}

/** Sequential leaf reads until `until` (performance.now()); every one must be a 200. */
async function leafReads(base: string, until: number): Promise<number[]> {
  const samples: number[] = [];
  while (performance.now() < until) {
    const t0 = performance.now();
    const res = await fetch(base + LEAF, { headers: HEADERS });
    await res.text();
    if (res.status !== 200) throw new Error(`leaf read answered ${res.status}`);
    samples.push(performance.now() - t0);
  }
  return samples;
}

const tpm = await startSwtpm();
let server: MetadataServer | undefined;
try {
  const tools = await Tpm2Tools.on(tpm);
  const key = await tools.generateRsaKey("pause");
  await tools.persistKey(key, 0x81010002);
  const signer = await openTpmSigner({ path: tpm.path, persistentHandle: 0x81010002, timeoutMs: TIMEOUT_MS });
  server = new MetadataServer({ credentials: new TpmSource({ signer, email: EMAIL }), serverConfig: { port: 0 } });
  const { url } = await server.start();
  const token = (n: number) => fetch(`${url}${TOKEN}?scopes=https://www.googleapis.com/auth/s${n}`, { headers: HEADERS });
  if ((await token(0)).status !== 200) throw new Error("no token before the pause");
  await leafReads(url, performance.now() + 500); // warm-up

  console.log(`swtpm on loopback, TPM deadline ${TIMEOUT_MS} ms, pause ${PAUSE_MS} ms`);
  console.log(`leaf reads, TPM idle:     ${stats(await leafReads(url, performance.now() + 2000))}`);

  tpm.pause();
  const paused = performance.now();
  const failed = token(1).then(async (r) => ({ status: r.status, body: (await r.text()).trim(), at: performance.now() }));
  const during = await leafReads(url, paused + PAUSE_MS - 100);
  const f = await failed;
  console.log(`leaf reads, TPM paused:   ${stats(during)}`);
  console.log(`token request during the pause: ${f.status} after ${(f.at - paused).toFixed(0)} ms: ${f.body.slice(0, 160)}…`);

  await Bun.sleep(Math.max(0, paused + PAUSE_MS - performance.now()));
  tpm.resume();
  const resumed = performance.now();
  let n = 2;
  let ok = false;
  while (!ok && performance.now() - resumed < 30_000) {
    const r = await token(n++);
    await r.text();
    ok = r.status === 200;
  }
  console.log(`recovery: first token signed ${(performance.now() - resumed).toFixed(0)} ms after SIGCONT (${n - 2} request(s))`);
} finally {
  tpm.resume();
  await server?.stop();
  await tpm.stop();
}
