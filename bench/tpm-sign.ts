/**
 * TPM sign latency: opens signers on a throwaway swtpm and times 200 RS256 signs each, against node:crypto
 * signing with the same key in software, measured in the same run.
 *
 *   node_modules/.bin/bun bench/tpm-sign.ts [count]
 */
import { createPrivateKey, sign as softwareSign } from "node:crypto";
import { readFile } from "node:fs/promises";
import { openTpmSigner, type TpmOptions } from "../src/tpm/signer.ts";
import { startSwtpm } from "../test/helpers/swtpm.ts";
import { Tpm2Tools } from "../test/helpers/tpm2-tools.ts";

const COUNT = Number(process.argv[2] ?? 200);

function stats(samples: number[]): { median: number; p99: number } {
  const s = [...samples].sort((a, b) => a - b);
  const at = (q: number) => s[Math.min(s.length - 1, Math.ceil(q * s.length) - 1)]!;
  return { median: at(0.5), p99: at(0.99) };
}

async function time(fn: (data: Uint8Array) => unknown | Promise<unknown>): Promise<{ median: number; p99: number }> {
  const samples: number[] = [];
  for (let i = 0; i < 10; i++) await fn(new TextEncoder().encode(`warm-up ${i}`));
  for (let i = 0; i < COUNT; i++) {
    const data = new TextEncoder().encode(`{"iss":"sa@example.iam.gserviceaccount.com","n":${i}}`);
    const t0 = performance.now();
    await fn(data);
    samples.push(performance.now() - t0);
  }
  return stats(samples);
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
  const baseline = await time((d) => softwareSign("sha256", d, privateKey));
  const fmt = (ms: number) => `${ms.toFixed(3)} ms`;
  console.log(`${COUNT} signs each, swtpm on loopback, RSA-2048 RS256`);
  console.log(`software (node:crypto)        median ${fmt(baseline.median)}  p99 ${fmt(baseline.p99)}`);

  const cases: [string, Omit<TpmOptions, "path">][] = [
    ["TPM persistent handle", { persistentHandle: 0x81010002 }],
    ["TPM keyfile + PCR policy", { keyfile: pcrFile, pcrs: [23] }],
    ["TPM + EK-salted encryption", { persistentHandle: 0x81010002, sessionEncryptWithName: ekName }],
  ];
  for (const [name, opts] of cases) {
    const signer = await openTpmSigner({ ...opts, path: tpm.path });
    try {
      const r = await time((d) => signer.sign(d));
      console.log(
        `${name.padEnd(30)}median ${fmt(r.median)}  p99 ${fmt(r.p99)}  (${(r.median / baseline.median).toFixed(1)}x software median)`,
      );
    } finally {
      signer.close();
    }
  }
} finally {
  await tpm.stop();
}
