/**
 * The one thing the rest of the server sees of the TPM: an RSA key that signs RS256 inside the TPM.
 *
 * The TPM itself is driven from a worker thread (worker.ts), so a TPM that stalls never holds up the event loop:
 * metadata reads keep answering. Each call has a deadline (`timeoutMs`). A call past it fails with TpmError
 * TPM_TIMEOUT, and the stalled thread is retired: it finalizes its context once the TPM answers, while a fresh
 * worker reopens the key for the next request, with no restart.
 *
 * @example
 *   const signer = await openTpmSigner({ path: "/dev/tpmrm0", persistentHandle: 0x81010002 });
 *   const sig = await signer.sign(new TextEncoder().encode(`${header}.${payload}`)); // RSASSA-PKCS1-v1_5 SHA-256
 *   signer.close();
 */
import { createHash, createPublicKey, type KeyObject } from "node:crypto";
import { pathToFileURL } from "node:url";
import { TpmError } from "./error.ts";
import type { FromWorker, ToWorker, WireError } from "./worker.ts";

export { TpmError } from "./error.ts";
export { tctiConfig } from "./tcti.ts";

export interface TpmOptions {
  /** "/dev/tpmrm0" | "/dev/tpm0" (device TCTI), "host:port" (swtpm TCTI), or a full TCTI config ("mssim:..."). */
  path: string;
  /** Persistent handle of the signing key, e.g. 0x81010002. Exactly one of this and `keyfile`. */
  persistentHandle?: number;
  /** Path to a TSS2 PRIVATE KEY PEM holding the signing key. */
  keyfile?: string;
  /** Authorisation of the keyfile's parent: the owner hierarchy password for the H-2 primary, the endorsement
   * hierarchy password with useEKParent, or the persistent parent's own password. */
  parentPass?: string;
  /** The signing key's password: used alone, or with PolicyAuthValue when the key's policy has it. */
  keyPass?: string;
  /** SHA-256 bank PCRs the key's policy is bound to (TPM2_PolicyPCR with the current values). The policy the
   * session replays is the one whose digest equals the key's: PolicyPCR, PolicyPCR then PolicyAuthValue (with
   * keyPass), or tpmcopy's PolicyOR(PolicyPCR | PolicyDuplicationSelect(EK)) (with useEKParent). */
  pcrs?: number[];
  /** Hex Name of the TPM's RSA EK (e.g. `xxd -p -c 100 ek.name`). The signer refuses a TPM whose EK differs and
   * salts an HMAC session, AES-128-CFB parameter encryption, with that EK for every command that carries secrets. */
  sessionEncryptWithName?: string;
  /** The key was imported under the RSA EK (default template): a keyfile is loaded under it, and a transferred
   * (tpmcopy) key's PolicyDuplicationSelect names it. */
  useEKParent?: boolean;
  /** Deadline of each TPM call (opening, and each signature), in ms. Default 10000. */
  timeoutMs?: number;
}

export interface TpmSigner {
  /** The RSA public half of the TPM key. */
  readonly publicKey: KeyObject;
  /** Hex SHA-256 of the public key's SPKI DER. */
  readonly fingerprint: string;
  /** RS256: SHA-256 of `data` in software, then TPM2_Sign (RSASSA-PKCS1-v1_5, SHA-256) inside the TPM. */
  sign(data: Uint8Array): Promise<Uint8Array>;
  /** Flush transient objects and sessions, finalize the ESAPI context and TCTI. Idempotent. */
  close(): void;
}

const DEFAULT_TPM_TIMEOUT_MS = 10_000;
/** How long close() waits for the worker to flush and finalize before leaving it to finish alone. */
const CLOSE_WAIT_MS = 2_000;

const fromWire = (e: WireError): TpmError =>
  new TpmError(e.code, e.message, e.rc !== undefined ? { rc: e.rc, ...(e.rcName ? { rcName: e.rcName } : {}) } : undefined);

/**
 * Where the worker's code is. From source, beside this file. In a compiled executable (scripts/build.ts lists
 * src/tpm/worker.ts as an entry point beside src/cli.ts) this module is a code-split chunk at the root of the
 * executable's file system, while the worker entry keeps its path under src/: tpm/worker.js beside the main entry.
 */
function workerUrl(): string {
  const here = new URL("./worker.ts", import.meta.url);
  return here.pathname.includes("/$bunfs/") ? new URL("tpm/worker.js", pathToFileURL(Bun.main)).href : here.href;
}

/** One worker thread and the TPM context it holds. */
class TpmWorker {
  private readonly worker: Worker;
  private readonly pending = new Map<number, PromiseWithResolvers<Uint8Array>>();
  private nextId = 1;
  private retired = false;
  /** The key's SPKI DER once opened. */
  readonly opened: Promise<Uint8Array>;
  ready = false;
  /** Called if the thread dies (an uncaught error): every call it had is failed with `error`. */
  onCrash: (error: TpmError) => void = () => {};

  constructor(opts: Omit<TpmOptions, "timeoutMs">) {
    const opened = Promise.withResolvers<Uint8Array>();
    this.opened = opened.promise;
    this.opened.catch(() => undefined); // observed by the caller; no unhandled rejection if it stopped waiting
    this.worker = new Worker(workerUrl());
    this.worker.onmessage = (event: MessageEvent<FromWorker>) => {
      const m = event.data;
      switch (m.op) {
        case "opened":
          this.ready = true;
          opened.resolve(m.spki);
          return;
        case "open-failed":
          opened.reject(fromWire(m.error));
          this.terminate();
          return;
        case "signed":
          this.settle(m.id)?.resolve(m.signature);
          return;
        case "sign-failed":
          this.settle(m.id)?.reject(fromWire(m.error));
          return;
        case "closed":
          this.terminate();
          return;
      }
    };
    this.worker.onerror = (event: ErrorEvent) => {
      const error = new TpmError("TPM_ERROR", `the TPM worker for "${opts.path}" stopped: ${event.message}`);
      opened.reject(error);
      for (const p of this.pending.values()) p.reject(error);
      this.pending.clear();
      this.terminate();
      this.onCrash(error);
    };
    this.post({ op: "open", opts });
  }

  private post(m: ToWorker): void {
    this.worker.postMessage(m);
  }

  private settle(id: number): PromiseWithResolvers<Uint8Array> | undefined {
    const p = this.pending.get(id);
    this.pending.delete(id);
    return p;
  }

  sign(digest: Uint8Array): Promise<Uint8Array> {
    const id = this.nextId++;
    const p = Promise.withResolvers<Uint8Array>();
    this.pending.set(id, p);
    this.post({ op: "sign", id, digest });
    return p.promise;
  }

  /**
   * Leave a stalled thread to finish alone: it finalizes its context (flushing its handles and closing its
   * connection, which a single-connection TPM such as swtpm needs before it serves the next one) once the TPM
   * answers, then ends. It no longer keeps the process alive.
   */
  retire(): void {
    if (this.retired) return;
    this.retired = true;
    this.pending.clear();
    this.post({ op: "close" });
    this.worker.unref();
  }

  /** Close now, waiting up to `waitMs` (blocking) for the worker to flush and finalize; retire it past that. */
  close(waitMs: number): void {
    if (this.retired) return;
    const flag = new Int32Array(new SharedArrayBuffer(4));
    this.retired = true;
    this.pending.clear();
    this.post({ op: "close", flag });
    if (Atomics.wait(flag, 0, 0, waitMs) === "timed-out") this.worker.unref();
    else this.terminate();
  }

  private terminate(): void {
    this.retired = true;
    this.worker.terminate();
  }
}

interface Request {
  digest: Uint8Array;
  done: PromiseWithResolvers<Uint8Array>;
  timer: ReturnType<typeof setTimeout>;
  settled: boolean;
}

/** Seconds as the Go emulator writes durations: "10s", "2.5s". */
const seconds = (ms: number): string => `${Number((ms / 1000).toFixed(3))}s`;

class WorkerSigner implements TpmSigner {
  readonly publicKey: KeyObject;
  readonly fingerprint: string;
  private current: TpmWorker | undefined;
  private readonly queue: Request[] = [];
  private inFlight: Request | undefined;
  private closed = false;
  private pumpScheduled = false;
  private readonly keyName: string;

  constructor(
    private readonly opts: Omit<TpmOptions, "timeoutMs">,
    private readonly timeoutMs: number,
    first: TpmWorker,
    spki: Uint8Array,
  ) {
    this.publicKey = createPublicKey({ key: Buffer.from(spki), format: "der", type: "spki" });
    this.fingerprint = createHash("sha256").update(spki).digest("hex");
    this.keyName = keyName(opts);
    this.adopt(first);
  }

  sign(data: Uint8Array): Promise<Uint8Array> {
    if (this.closed) return Promise.reject(new TpmError("TPM_CLOSED", "the TPM signer is closed: open a new one"));
    const digest = new Uint8Array(createHash("sha256").update(data).digest());
    const done = Promise.withResolvers<Uint8Array>();
    const req: Request = { digest, done, settled: false, timer: setTimeout(() => this.timedOut(req), this.timeoutMs) };
    this.queue.push(req);
    // Dispatched on the next microtask, so a close() right after sign() still fails it with TPM_CLOSED.
    if (!this.pumpScheduled) {
      this.pumpScheduled = true;
      queueMicrotask(() => {
        this.pumpScheduled = false;
        this.pump();
      });
    }
    return done.promise;
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    const closedError = new TpmError("TPM_CLOSED", "the TPM signer is closed: open a new one");
    for (const req of [...(this.inFlight ? [this.inFlight] : []), ...this.queue.splice(0)]) this.finish(req, undefined, closedError);
    this.inFlight = undefined;
    const w = this.current;
    this.current = undefined;
    w?.close(Math.min(this.timeoutMs, CLOSE_WAIT_MS));
  }

  /** One call at a time to the worker: it serialises anyway, and this way a stalled call is known. */
  private pump(): void {
    if (this.closed || this.inFlight || this.queue.length === 0) return;
    if (!this.current) {
      this.adopt(new TpmWorker(this.opts));
      return;
    }
    if (!this.current.ready) return;
    const req = this.queue.shift()!;
    this.inFlight = req;
    this.current.sign(req.digest).then(
      (sig) => this.finishInFlight(req, sig, undefined),
      (e: unknown) => this.finishInFlight(req, undefined, e),
    );
  }

  private finishInFlight(req: Request, sig: Uint8Array | undefined, error: unknown): void {
    if (this.inFlight !== req) return; // timed out or closed meanwhile
    this.inFlight = undefined;
    this.finish(req, sig, error);
    this.pump();
  }

  private finish(req: Request, sig: Uint8Array | undefined, error: unknown): void {
    if (req.settled) return;
    req.settled = true;
    clearTimeout(req.timer);
    if (sig) req.done.resolve(sig);
    else req.done.reject(error);
  }

  /** Make `w` the current worker; when it opens, signing resumes; when it fails to open, the waiting calls fail. */
  private adopt(w: TpmWorker): void {
    this.current = w;
    w.onCrash = (error) => {
      // Before it opened, the failed open is handled below; after, the key is reopened for what waits.
      if (this.current !== w || !w.ready) return;
      this.current = undefined;
      if (this.inFlight) this.finishInFlight(this.inFlight, undefined, error);
      else this.pump();
    };
    w.opened.then(
      () => this.pump(),
      (error: unknown) => {
        if (this.current !== w) return;
        this.current = undefined; // the next call tries to open again
        for (const req of this.queue.splice(0)) this.finish(req, undefined, error);
      },
    );
  }

  private timedOut(req: Request): void {
    if (req.settled) return;
    const reopening = this.current !== undefined && !this.current.ready;
    let doing: string;
    if (req === this.inFlight) {
      // The TPM holds this call: retire the stalled thread and reopen the key on a fresh one right away, so
      // the next request is served as soon as the TPM answers again.
      this.inFlight = undefined;
      this.current?.retire();
      this.current = undefined;
      doing = `signing with ${this.keyName}`;
    } else {
      this.queue.splice(this.queue.indexOf(req), 1);
      doing = reopening ? `waiting for the TPM to reopen ${this.keyName}` : `waiting to sign with ${this.keyName}`;
    }
    this.finish(
      req,
      undefined,
      new TpmError(
        "TPM_TIMEOUT",
        `the TPM at "${this.opts.path}" did not answer: timeout after ${seconds(this.timeoutMs)} ${doing}; the key is being reopened for the next request`,
      ),
    );
    if (!this.current && !this.closed) this.adopt(new TpmWorker(this.opts));
    this.pump();
  }
}

function keyName(opts: Omit<TpmOptions, "timeoutMs">): string {
  return opts.keyfile !== undefined
    ? `the key in ${opts.keyfile}`
    : `the key at 0x${((opts.persistentHandle ?? 0) >>> 0).toString(16).padStart(8, "0")}`;
}

/**
 * Open the TPM at `opts.path` on a worker thread, load or reference the key, check it is an RSA signing key and
 * make one test signature, so anything that would make signing impossible fails here with a TpmError.
 */
export async function openTpmSigner(opts: TpmOptions): Promise<TpmSigner> {
  const { timeoutMs = DEFAULT_TPM_TIMEOUT_MS, ...rest } = opts;
  if (!Number.isFinite(timeoutMs) || timeoutMs <= 0) {
    throw new TpmError("TPM_ERROR", `timeoutMs ${timeoutMs} is not a positive number of milliseconds`);
  }
  const first = new TpmWorker(rest);
  let timer: ReturnType<typeof setTimeout> | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      first.retire();
      reject(
        new TpmError(
          "TPM_TIMEOUT",
          `the TPM at "${opts.path}" did not answer: timeout after ${seconds(timeoutMs)} opening ${keyName(rest)}`,
        ),
      );
    }, timeoutMs);
  });
  try {
    const spki = await Promise.race([first.opened, deadline]);
    return new WorkerSigner(rest, timeoutMs, first, spki);
  } finally {
    clearTimeout(timer);
  }
}
