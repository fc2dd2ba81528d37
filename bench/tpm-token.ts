/**
 * Cached-token throughput with the TPM source against the emulated issuer, measured in the same run: two CLI
 * servers (one `-tpm` on a throwaway swtpm, one with no credentials), wrk -t1 -c32 on the default account's token
 * path, rounds alternating between them; medians and the ratio. Once cached, a TPM token costs what any token
 * costs: the TokenCache answers, the TPM is not touched (the same token before and after proves no re-sign).
 *
 *   node_modules/.bin/bun bench/tpm-token.ts [rounds=5] [seconds=5]
 */
import { join } from "node:path";
import { startSwtpm } from "../test/helpers/swtpm.ts";
import { Tpm2Tools } from "../test/helpers/tpm2-tools.ts";

const ROUNDS = Number(process.argv[2] ?? 5);
const SECONDS = Number(process.argv[3] ?? 5);
const CLI = join(import.meta.dir, "../src/cli.ts");
const PATH = "/computeMetadata/v1/instance/service-accounts/default/token";

if (!Bun.which("wrk")) throw new Error("bench/tpm-token.ts needs wrk on PATH (apt-get install -y wrk)");

interface Running {
  url: string;
  stop(): Promise<unknown>;
}

async function serve(args: string[]): Promise<Running> {
  const p = Bun.spawn([process.execPath, CLI, "-port", ":0", ...args], { cwd: import.meta.dir, stdout: "ignore", stderr: "pipe" });
  const reader = p.stderr.getReader();
  let log = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) throw new Error(`server exited: ${log}`);
    log += new TextDecoder().decode(value);
    const m = /listening url=(http:\/\/\S+)/.exec(log);
    if (m) {
      (async () => {
        while (!(await reader.read()).done);
      })();
      return {
        url: m[1]!,
        stop: () => {
          p.kill("SIGTERM");
          return p.exited;
        },
      };
    }
  }
}

async function token(s: Running): Promise<string> {
  const res = await fetch(s.url + PATH, { headers: { "Metadata-Flavor": "Google" } });
  if (res.status !== 200) throw new Error(`token: ${res.status} ${await res.text()}`);
  return ((await res.json()) as { access_token: string }).access_token;
}

interface Result {
  rps: number;
  p50: number;
  p99: number;
}

/** wrk's latency figures in milliseconds. */
function ms(text: string): number {
  const m = /^([\d.]+)(us|ms|s)$/.exec(text)!;
  return Number(m[1]) * (m[2] === "us" ? 0.001 : m[2] === "s" ? 1000 : 1);
}

function wrk(s: Running): Result {
  const r = Bun.spawnSync(["wrk", "-t1", "-c32", `-d${SECONDS}s`, "--latency", "-H", "Metadata-Flavor: Google", s.url + PATH], {
    stdout: "pipe",
    stderr: "pipe",
  });
  const out = r.stdout.toString();
  if (r.exitCode !== 0 || /Non-2xx/.test(out)) throw new Error(`wrk failed: ${out} ${r.stderr.toString()}`);
  return {
    rps: Number(/Requests\/sec:\s+([\d.]+)/.exec(out)![1]),
    p50: ms(/\s50%\s+(\S+)/.exec(out)![1]!),
    p99: ms(/\s99%\s+(\S+)/.exec(out)![1]!),
  };
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};

const tpm = await startSwtpm();
const servers: Running[] = [];
try {
  const tools = await Tpm2Tools.on(tpm);
  await tools.persistKey(await tools.generateRsaKey("bench"), 0x81008001);
  const tpmServer = await serve(["-tpm", "-tpm-path", tpm.path, "-persistentHandle", "0x81008001"]);
  servers.push(tpmServer);
  const emulated = await serve([]);
  servers.push(emulated);
  const tpmToken = await token(tpmServer);
  await token(emulated);

  const results: Record<"tpm" | "emulated", Result[]> = { tpm: [], emulated: [] };
  console.log(`wrk -t1 -c32 -d${SECONDS}s ${PATH}, ${ROUNDS} alternating rounds (order flips each round)`);
  for (let i = 0; i < ROUNDS; i++) {
    const order: ["tpm" | "emulated", Running][] = [
      ["tpm", tpmServer],
      ["emulated", emulated],
    ];
    if (i % 2) order.reverse();
    for (const [name, s] of order) {
      const r = wrk(s);
      results[name].push(r);
      console.log(
        `  round ${i + 1} ${name.padEnd(8)} ${r.rps.toFixed(0).padStart(7)} req/s  p50 ${r.p50.toFixed(3)} ms  p99 ${r.p99.toFixed(3)} ms`,
      );
    }
  }
  if ((await token(tpmServer)) !== tpmToken) throw new Error("the TPM token changed during the run: it was re-signed");

  const summary = (name: "tpm" | "emulated") => ({
    rps: median(results[name].map((r) => r.rps)),
    p50: median(results[name].map((r) => r.p50)),
    p99: median(results[name].map((r) => r.p99)),
  });
  const t = summary("tpm");
  const e = summary("emulated");
  console.log(`median emulated ${e.rps.toFixed(0)} req/s  p50 ${e.p50.toFixed(3)} ms  p99 ${e.p99.toFixed(3)} ms`);
  console.log(`median tpm      ${t.rps.toFixed(0)} req/s  p50 ${t.p50.toFixed(3)} ms  p99 ${t.p99.toFixed(3)} ms`);
  console.log(`tpm/emulated throughput ratio ${(t.rps / e.rps).toFixed(3)}; the TPM token was signed once and served throughout`);
} finally {
  await Promise.all(servers.map((s) => s.stop()));
  await tpm.stop();
}
