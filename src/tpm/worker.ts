/**
 * The TPM worker: one thread per opened key, where every ESAPI call for its context runs, one message at a time
 * (ESAPI is not thread-safe, and a TCTI carries one command at a time). TPM commands block, so they run here and
 * not on the server's event loop: a TPM that stalls stalls this thread alone. signer.ts starts it, and a build
 * of the single executable lists this file as an entry point of its own.
 */
import { TpmError, type TpmErrorCode } from "./error.ts";
import { type KeySigner, openKeySigner } from "./signing.ts";
import type { TpmOptions } from "./signer.ts";

/** Messages to the worker. */
export type ToWorker =
  | { op: "open"; opts: TpmOptions }
  | { op: "sign"; id: number; digest: Uint8Array }
  /** `flag` (when given) is set to 1 and notified once the context is finalized. */
  | { op: "close"; flag?: Int32Array };

/** A TpmError as it crosses the thread boundary. */
export interface WireError {
  code: TpmErrorCode;
  message: string;
  rc?: number;
  rcName?: string;
}

/** Messages from the worker. */
export type FromWorker =
  | { op: "opened"; spki: Uint8Array }
  | { op: "open-failed"; error: WireError }
  | { op: "signed"; id: number; signature: Uint8Array }
  | { op: "sign-failed"; id: number; error: WireError }
  | { op: "closed" };

declare const self: Worker;

function toWire(e: unknown): WireError {
  if (e instanceof TpmError) {
    return { code: e.code, message: e.message, ...(e.rc !== undefined ? { rc: e.rc, rcName: e.rcName ?? "" } : {}) };
  }
  return { code: "TPM_ERROR", message: `the TPM signer failed: ${e instanceof Error ? e.message : String(e)}` };
}

const post = (m: FromWorker): void => self.postMessage(m);

let signer: KeySigner | undefined;
let opening: Promise<unknown> = Promise.resolve();

self.onmessage = async (event: MessageEvent<ToWorker>) => {
  const m = event.data;
  switch (m.op) {
    case "open":
      opening = openKeySigner(m.opts).then(
        (s) => {
          signer = s;
          // The key is open: signing may now compile as usual (a compiled executable starts with the JIT's
          // thresholds raised, scripts/build.ts START_JIT_POLICY; this sets them back for this thread's VM).
          Bun.unsafe.setJITPolicy(1);
          post({ op: "opened", spki: new Uint8Array(s.publicKey.export({ type: "spki", format: "der" })) });
        },
        (e: unknown) => post({ op: "open-failed", error: toWire(e) }),
      );
      return;
    case "sign":
      try {
        if (!signer) throw new TpmError("TPM_CLOSED", "the TPM signer is not open");
        post({ op: "signed", id: m.id, signature: signer.signDigest(m.digest) });
      } catch (e) {
        post({ op: "sign-failed", id: m.id, error: toWire(e) });
      }
      return;
    case "close":
      await opening; // an open still under way is closed once it is done, never left holding TPM handles
      signer?.close();
      signer = undefined;
      if (m.flag) {
        Atomics.store(m.flag, 0, 1);
        Atomics.notify(m.flag, 0);
      }
      post({ op: "closed" });
      return;
  }
};
