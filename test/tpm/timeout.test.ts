/**
 * A TPM that stops answering (a swtpm paused with SIGSTOP, resumed with SIGCONT): metadata reads keep answering
 * while a signature waits on it, the token request fails at the deadline with a one-line reason naming the TPM,
 * and once the TPM answers again the next token is signed, with no restart. Bounds are loose (the deadline plus
 * one second, reads far under the deadline): bench/tpm-pause.ts measures the real figures.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { verify } from "node:crypto";
import { jwtVerify } from "jose";
import { TpmSource } from "../../src/credentials/tpm.ts";
import { openTpmSigner, type TpmError, type TpmSigner } from "../../src/tpm/signer.ts";
import { startServer, type Started } from "../helpers/server.ts";
import { requireTpmTools, startSwtpm, type Swtpm } from "../helpers/swtpm.ts";
import { type GeneratedKey, Tpm2Tools } from "../helpers/tpm2-tools.ts";

const EMAIL = "123456789012-compute@developer.gserviceaccount.com"; // the bundled config's default account
const HANDLE = 0x81008001;
const DEADLINE_MS = 3000;
const TOKEN = "/computeMetadata/v1/instance/service-accounts/default/token";
const LEAF = "/computeMetadata/v1/project/project-id";
const scope = (n: number) => `?scopes=https://www.googleapis.com/auth/scope-${n}`; // a new scope set needs a signature

let tpm: Swtpm;
let tools: Tpm2Tools;
let key: GeneratedKey;

beforeAll(async () => {
  requireTpmTools();
  tpm = await startSwtpm();
  tools = await Tpm2Tools.on(tpm);
  key = await tools.generateRsaKey("stall");
  await tools.persistKey(key, HANDLE);
}, 60_000);

afterAll(async () => {
  tpm?.resume();
  await tpm?.stop();
});

/** The TpmError a signature fails with. */
function failure(p: Promise<Uint8Array>): Promise<TpmError> {
  return p.then(
    () => {
      throw new Error("the signature was made, but should have failed");
    },
    (e: unknown) => e as TpmError,
  );
}

/** Wait until `check` holds, polling; fails after `ms`. */
async function eventually(check: () => boolean, ms: number): Promise<void> {
  const end = Date.now() + ms;
  while (!check()) {
    if (Date.now() > end) throw new Error(`not within ${ms} ms`);
    await Bun.sleep(50);
  }
}

describe("a stalled TPM behind a running MetadataServer", () => {
  let signer: TpmSigner;
  let s: Started;
  beforeAll(async () => {
    signer = await openTpmSigner({ path: tpm.path, persistentHandle: HANDLE, timeoutMs: DEADLINE_MS });
    s = await startServer({ credentials: new TpmSource({ signer, email: EMAIL }) });
  }, 30_000);
  afterAll(async () => {
    tpm.resume();
    await s?.stop();
  });

  test("leaf reads answer during the stall; the token request is a 500 at the deadline naming the TPM; after SIGCONT the next token is signed", async () => {
    expect((await s.get(TOKEN)).status).toBe(200);
    tpm.pause();
    try {
      const t0 = performance.now();
      const pending = s.get(TOKEN + scope(1)).then(async (r) => ({ status: r.status, text: await r.text(), ms: performance.now() - t0 }));
      // While the signature waits on the TPM, reads are served from the event loop as usual.
      await Bun.sleep(100);
      const reads: number[] = [];
      const answers = new Set<string>();
      while (performance.now() - t0 < DEADLINE_MS / 2) {
        const r0 = performance.now();
        const res = await s.get(LEAF);
        answers.add(`${res.status} ${await res.text()}`);
        reads.push(performance.now() - r0);
      }
      expect([...answers]).toEqual(["200 example-project"]);
      expect(reads.length).toBeGreaterThan(10);
      expect(Math.max(...reads)).toBeLessThan(DEADLINE_MS / 4);

      const failed = await pending;
      expect(failed.status).toBe(500);
      expect(failed.text.trim().split("\n")).toHaveLength(1);
      expect(failed.text).toContain(
        `Failed to obtain an access token for ${EMAIL}: the TPM at "${tpm.path}" did not answer: timeout after 3s signing with the key at 0x81008001`,
      );
      expect(failed.ms).toBeGreaterThanOrEqual(DEADLINE_MS - 50);
      expect(failed.ms).toBeLessThan(DEADLINE_MS + 1000);

      // Still stalled: the next request fails at its deadline too, while the key is being reopened.
      const t1 = performance.now();
      const second = await s.get(TOKEN + scope(2));
      expect(second.status).toBe(500);
      expect(await second.text()).toContain("timeout after 3s waiting for the TPM to reopen the key at 0x81008001");
      expect(performance.now() - t1).toBeLessThan(DEADLINE_MS + 1000);
    } finally {
      tpm.resume();
    }
    const res = await s.get(TOKEN + scope(3));
    expect(res.status).toBe(200);
    const { access_token } = (await res.json()) as { access_token: string };
    await jwtVerify(access_token, key.publicKey, { algorithms: ["RS256"] });
    // The stalled thread finalized its context once the TPM answered: only the reopened key's handles remain.
    await eventually(() => tools.loadedSessions().length === 0 && tools.transientHandles().length === 0, 5000);
  }, 30_000);
});

describe("the signer alone", () => {
  test("a sign past the deadline is TPM_TIMEOUT; calls queued behind it fail at their own deadline; the reopened key signs", async () => {
    const keyfile = await tools.keyfile(key, "stall-file");
    const signer = await openTpmSigner({ path: tpm.path, keyfile, timeoutMs: 1000 });
    try {
      tpm.pause();
      const first = failure(signer.sign(new Uint8Array([1])));
      await Bun.sleep(300);
      const queued = failure(signer.sign(new Uint8Array([2])));
      const e1 = await first;
      expect(e1.code).toBe("TPM_TIMEOUT");
      expect(e1.message).toBe(
        `the TPM at "${tpm.path}" did not answer: timeout after 1s signing with the key in ${keyfile}; the key is being reopened for the next request`,
      );
      const e2 = await queued;
      expect(e2.code).toBe("TPM_TIMEOUT");
      expect(e2.message).toContain(`timeout after 1s waiting for the TPM to reopen the key in ${keyfile}`);
      tpm.resume();
      // The key is reopened as soon as the TPM answers; on a loaded machine that can take longer than this test's
      // short deadline, so a call may still time out while it waits for the reopen.
      const data = new TextEncoder().encode("after the stall");
      let sig: Uint8Array | undefined;
      for (let i = 0; i < 5 && !sig; i++) {
        sig = await signer.sign(data).catch((e: TpmError) => {
          expect(e.message).toContain("waiting for the TPM to reopen");
          return undefined;
        });
      }
      expect(verify("sha256", data, key.publicKey, sig!)).toBe(true);
      // The stalled thread flushed its copy of the key once the TPM answered: one key is loaded, the reopened one.
      await eventually(() => tools.transientHandles().length === 1, 5000);
    } finally {
      tpm.resume();
      signer.close();
    }
    expect(tools.transientHandles()).toEqual([]);
  }, 30_000);

  test("opening a stalled TPM fails at the deadline with TPM_TIMEOUT; closing during a stall does not hang", async () => {
    tpm.pause();
    try {
      const t0 = performance.now();
      const e = (await openTpmSigner({ path: tpm.path, persistentHandle: HANDLE, timeoutMs: 1000 }).catch((x: unknown) => x)) as TpmError;
      expect(e.code).toBe("TPM_TIMEOUT");
      expect(e.message).toBe(`the TPM at "${tpm.path}" did not answer: timeout after 1s opening the key at 0x81008001`);
      expect(performance.now() - t0).toBeLessThan(2000);
    } finally {
      tpm.resume();
    }
    const signer = await openTpmSigner({ path: tpm.path, persistentHandle: HANDLE, timeoutMs: 1000 });
    tpm.pause();
    try {
      const pending = failure(signer.sign(new Uint8Array([3])));
      await Bun.sleep(100);
      const t0 = performance.now();
      signer.close(); // waits at most a bounded time for the stalled thread, then leaves it to finish alone
      expect(performance.now() - t0).toBeLessThan(1500);
      expect((await pending).code).toBe("TPM_CLOSED");
    } finally {
      tpm.resume();
    }
    await eventually(() => tools.loadedSessions().length === 0 && tools.transientHandles().length === 0, 5000);
  }, 30_000);

  test("timeoutMs must be a positive number", async () => {
    const e = (await openTpmSigner({ path: tpm.path, persistentHandle: HANDLE, timeoutMs: 0 }).catch((x: unknown) => x)) as TpmError;
    expect(e.code).toBe("TPM_ERROR");
    expect(e.message).toBe("timeoutMs 0 is not a positive number of milliseconds");
  });
});
