/**
 * TPM sign latency on a throwaway swtpm, against node:crypto signing with the same key in software, measured in
 * the same run. Each TPM case is timed two ways, in alternating rounds (a swtpm serves one connection at a time,
 * so one signer is open at once): through openTpmSigner, whose TPM calls run on the worker thread, and with the
 * same signing code called directly on the event loop, as before the worker. Their ratio is the worker's cost.
 *
 *   node_modules/.bin/bun bench/tpm-sign.ts [count]
 */
import { createPrivateKey, sign as softwareSign } from "node:crypto";
import { readFile } from "node:fs/promises";
import { openTpmSigner, type TpmOptions } from "../src/tpm/signer.ts";
import { openKeySigner } from "../src/tpm/signing.ts";
import { startSwtpm } from "../test/helpers/swtpm.ts";
import { Tpm2Tools } from "../test/helpers/tpm2-tools.ts";

const COUNT = Number(process.argv[2] ?? 300);
const ROUNDS = 6;

function stats(samples: number[]): { median: number; p99: number } {
  const s = [...samples].sort((a, b) => a - b);
  const at = (q: number) => s[Math.min(s.length - 1, Math.ceil(q * s.length) - 1)]!;
  return { median: at(0.5), p99: at(0.99) };
}

async function time(n: number, fn: (data: Uint8Array) => unknown | Promise<unknown>, into: number[]): Promise<void> {
  for (let i = 0; i < 5; i++) await fn(new TextEncoder().encode(`warm-up ${i}`));
  for (let i = 0; i < n; i++) {
    const data = new TextEncoder().encode(`{"iss":"sa@example.iam.gserviceaccount.com","n":${i}}`);
    const t0 = performance.now();
    await fn(data);
    into.push(performance.now() - t0);
  }
}

const tpm = await startSwtpm();
try {
  const tools = await Tpm2Tools.on(tpm);
  const key = await tools.generateRsaKey("bench");
  await tools.persistKey(key, 0x81010002);
  tools.run("tpm2_pcrreset", "23");
  const pcrFile = await tools.keyfile(key, "bench-pcr", { policy: tools.pcrPolicy([23]), attributes: "sign|decrypt" });
  const ekName = tools.createEk().nameHex;

  const privateKey = createPrivateKey(await readFile(key.pemPath, "utf8"));
  const software: number[] = [];
  await time(COUNT, (d) => softwareSign("sha256", d, privateKey), software);
  const baseline = stats(software);
  const fmt = (ms: number) => `${ms.toFixed(3)} ms`;
  console.log(`${COUNT} signs each, swtpm on loopback, RSA-2048 RS256`);
  console.log(`software (node:crypto)                     median ${fmt(baseline.median)}  p99 ${fmt(baseline.p99)}`);

  const cases: [string, Omit<TpmOptions, "path">][] = [
    ["persistent handle", { persistentHandle: 0x81010002 }],
    ["keyfile + PCR policy", { keyfile: pcrFile, pcrs: [23] }],
    ["EK-salted encryption", { persistentHandle: 0x81010002, sessionEncryptWithName: ekName }],
  ];
  for (const [name, opts] of cases) {
    const viaWorker: number[] = [];
    const onLoop: number[] = [];
    for (let r = 0; r < ROUNDS; r++) {
      const worker = await openTpmSigner({ ...opts, path: tpm.path });
      try {
        await time(Math.ceil(COUNT / ROUNDS), (d) => worker.sign(d), viaWorker);
      } finally {
        worker.close();
      }
      const direct = await openKeySigner({ ...opts, path: tpm.path });
      try {
        await time(
          Math.ceil(COUNT / ROUNDS),
          (d) => direct.signDigest(new Uint8Array(new Bun.CryptoHasher("sha256").update(d).digest())),
          onLoop,
        );
      } finally {
        direct.close();
      }
    }
    const w = stats(viaWorker);
    const l = stats(onLoop);
    console.log(
      `TPM ${name.padEnd(22)} on the event loop  median ${fmt(l.median)}  p99 ${fmt(l.p99)}  (${(l.median / baseline.median).toFixed(1)}x software)`,
    );
    console.log(
      `TPM ${name.padEnd(22)} via the worker     median ${fmt(w.median)}  p99 ${fmt(w.p99)}  (${(w.median / baseline.median).toFixed(1)}x software, ${(w.median / l.median).toFixed(2)}x on the loop)`,
    );
  }
} finally {
  await tpm.stop();
}
