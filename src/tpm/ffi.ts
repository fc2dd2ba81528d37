/**
 * The FFI wall: bun:ffi bindings to tpm2-tss (ESAPI, TCTI loader, MU, RC). Nothing outside src/tpm imports this.
 *
 * Every TPM structure crosses the wall in TPM wire format (big-endian, as the TPM 2.0 spec marshals it):
 * inputs are turned into C structs with `Tss2_MU_*_Unmarshal`, outputs back into wire bytes with
 * `Tss2_MU_*_Marshal`, so no C struct layout is laid out by hand here. bun:ffi pointers are plain numbers, so
 * every buffer handed to ESAPI is a local that lives until the call returns, and every ESAPI-allocated output
 * is marshalled and released with `Esys_Free` before the method returns.
 *
 * The libraries are opened by soname on first use, so a compiled single executable finds the system's copies.
 */
import { dlopen, FFIType, type Pointer } from "bun:ffi";
import { TpmError } from "./error.ts";

const { u8, u16, u32, i32, u64, ptr, cstring, void: none } = FFIType;

/**
 * Shared libraries opened at run time, with the Debian 12 package that ships each. The TCTI loader then opens
 * libtss2-tcti-device.so.0 (libtss2-tcti-device0) for /dev/tpm* or libtss2-tcti-swtpm.so.0 (libtss2-tcti-swtpm0).
 */
const RUNTIME_LIBRARIES = {
  "libtss2-esys.so.0": "libtss2-esys-3.0.2-0",
  "libtss2-tctildr.so.0": "libtss2-tctildr0",
  "libtss2-mu.so.0": "libtss2-mu0",
  "libtss2-rc.so.0": "libtss2-rc0",
} as const;
const TCTI_PACKAGES = "libtss2-tcti-device0 libtss2-tcti-swtpm0";

const esysSymbols = {
  Esys_Initialize: { args: [ptr, ptr, ptr], returns: u32 },
  Esys_Finalize: { args: [ptr], returns: none },
  Esys_Free: { args: [ptr], returns: none },
  Esys_TR_FromTPMPublic: { args: [ptr, u32, u32, u32, u32, ptr], returns: u32 },
  Esys_TR_SetAuth: { args: [ptr, u32, ptr], returns: u32 },
  Esys_TR_GetName: { args: [ptr, u32, ptr], returns: u32 },
  Esys_TR_Close: { args: [ptr, ptr], returns: u32 },
  Esys_TRSess_SetAttributes: { args: [ptr, u32, u8, u8], returns: u32 },
  Esys_CreatePrimary: {
    args: [ptr, u32, u32, u32, u32, ptr, ptr, ptr, ptr, ptr, ptr, ptr, ptr, ptr],
    returns: u32,
  },
  Esys_Load: { args: [ptr, u32, u32, u32, u32, ptr, ptr, ptr], returns: u32 },
  Esys_ReadPublic: { args: [ptr, u32, u32, u32, u32, ptr, ptr, ptr], returns: u32 },
  Esys_StartAuthSession: { args: [ptr, u32, u32, u32, u32, u32, ptr, u8, ptr, u16, ptr], returns: u32 },
  Esys_PolicyPCR: { args: [ptr, u32, u32, u32, u32, ptr, ptr], returns: u32 },
  Esys_PolicyAuthValue: { args: [ptr, u32, u32, u32, u32], returns: u32 },
  Esys_PolicyRestart: { args: [ptr, u32, u32, u32, u32], returns: u32 },
  Esys_PolicyOR: { args: [ptr, u32, u32, u32, u32, ptr], returns: u32 },
  Esys_PCR_Read: { args: [ptr, u32, u32, u32, ptr, ptr, ptr, ptr], returns: u32 },
  Esys_PolicySecret: { args: [ptr, u32, u32, u32, u32, u32, ptr, ptr, ptr, i32, ptr, ptr], returns: u32 },
  Esys_Sign: { args: [ptr, u32, u32, u32, u32, ptr, ptr, ptr, ptr], returns: u32 },
  Esys_FlushContext: { args: [ptr, u32], returns: u32 },
} as const;

const tctildrSymbols = {
  Tss2_TctiLdr_Initialize: { args: [cstring, ptr], returns: u32 },
  Tss2_TctiLdr_Finalize: { args: [ptr], returns: none },
} as const;

const rcSymbols = {
  Tss2_RC_Decode: { args: [u32], returns: cstring },
} as const;

/** The TPM structures that cross the wall, by their tpm2-tss type name. */
const MU_TYPES = [
  "TPM2B_PUBLIC",
  "TPM2B_PRIVATE",
  "TPM2B_SENSITIVE_CREATE",
  "TPM2B_DIGEST",
  "TPM2B_AUTH",
  "TPM2B_NAME",
  "TPM2B_DATA",
  "TPML_PCR_SELECTION",
  "TPMT_SYM_DEF",
  "TPMT_SIG_SCHEME",
  "TPMT_TK_HASHCHECK",
  "TPMT_SIGNATURE",
  "TPML_DIGEST",
] as const;
export type MuType = (typeof MU_TYPES)[number];

/** Tss2_MU_<T>_Marshal(src, buffer, size, &offset) and Tss2_MU_<T>_Unmarshal(buffer, size, &offset, dest). */
const muSymbols: Record<string, { args: FFIType[]; returns: FFIType }> = Object.fromEntries(
  MU_TYPES.flatMap((t) => [
    [`Tss2_MU_${t}_Marshal`, { args: [ptr, ptr, u64, ptr], returns: u32 }],
    [`Tss2_MU_${t}_Unmarshal`, { args: [ptr, u64, ptr, ptr], returns: u32 }],
  ]),
);

type MuFn = (a: unknown, b: unknown, c: unknown, d: unknown) => number;

interface Libraries {
  esys: ReturnType<typeof dlopen<typeof esysSymbols>>["symbols"];
  tctildr: ReturnType<typeof dlopen<typeof tctildrSymbols>>["symbols"];
  rc: ReturnType<typeof dlopen<typeof rcSymbols>>["symbols"];
  mu: Record<string, MuFn>;
}

let libraries: Libraries | undefined;

function open<T extends Record<string, { args: readonly FFIType[]; returns: FFIType }>>(
  soname: keyof typeof RUNTIME_LIBRARIES,
  symbols: T,
) {
  try {
    return dlopen(soname, symbols as never) as unknown as ReturnType<typeof dlopen<T>>;
  } catch (cause) {
    const pkgs = Object.values(RUNTIME_LIBRARIES).join(" ");
    throw new TpmError(
      "TPM_UNAVAILABLE",
      `cannot load ${soname}: install the tpm2-tss runtime libraries (Debian 12: apt-get install -y ${pkgs} ${TCTI_PACKAGES})`,
      { cause },
    );
  }
}

/**
 * tpm2-tss logs every TPM error to stderr; the signer reports them itself as TpmError. Unless the user set
 * TSS2_LOG, quiet it. bun's process.env does not reach the C environment, so this goes through libc setenv.
 */
function quietTssLog(): void {
  if (process.env.TSS2_LOG !== undefined) return;
  try {
    const libc = dlopen("libc.so.6", { setenv: { args: [cstring, cstring, i32], returns: i32 } });
    libc.symbols.setenv(cString("TSS2_LOG"), cString("all+none"), 0);
    libc.close();
  } catch {
    // not glibc: tpm2-tss keeps logging, which is harmless
  }
}

/** The tpm2-tss libraries, opened on first use. Throws TpmError TPM_UNAVAILABLE naming the packages. */
export function tss(): Libraries {
  if (libraries) return libraries;
  quietTssLog();
  const esys = open("libtss2-esys.so.0", esysSymbols).symbols;
  const tctildr = open("libtss2-tctildr.so.0", tctildrSymbols).symbols;
  const mu = open("libtss2-mu.so.0", muSymbols).symbols as unknown as Record<string, MuFn>;
  const rc = open("libtss2-rc.so.0", rcSymbols).symbols;
  libraries = { esys, tctildr, mu, rc };
  return libraries;
}

/** A TSS2 call returned a non-zero TSS2_RC. Internal: the signer turns it into a TpmError with context. */
export class TssCallError extends Error {
  constructor(
    readonly call: string,
    readonly rc: number,
  ) {
    super(`${call} returned 0x${rc.toString(16)}`);
    this.name = "TssCallError";
  }
}

function check(call: string, rc: number): void {
  if (rc !== 0) throw new TssCallError(call, rc >>> 0);
}

/** Tss2_RC_Decode's text for an rc, e.g. "tpm:session(1):the authorization HMAC check failed ...". */
export function rcText(rc: number): string {
  return String(tss().rc.Tss2_RC_Decode(rc >>> 0) ?? "");
}

/** Big enough for the C struct of every MU_TYPES member (the largest, TPM2B_PRIVATE, is under 1.7 KiB). */
const C_STRUCT_BYTES = 4096;
/** Big enough for the wire form of every MU_TYPES member. */
const WIRE_BYTES = 4096;

/** Wire bytes → a C struct (in a fresh zeroed buffer), via Tss2_MU_<type>_Unmarshal. */
export function toC(type: MuType, wire: Uint8Array): Uint8Array {
  const dest = new Uint8Array(C_STRUCT_BYTES);
  const offset = new BigUint64Array(1);
  check(`Tss2_MU_${type}_Unmarshal`, tss().mu[`Tss2_MU_${type}_Unmarshal`]!(wire, wire.byteLength, offset, dest));
  if (Number(offset[0]) !== wire.byteLength) {
    throw new TssCallError(`Tss2_MU_${type}_Unmarshal (trailing bytes)`, 0x9000b /* TSS2_MU_RC_BAD_VALUE */);
  }
  return dest;
}

/** A C struct at `src` → wire bytes, via Tss2_MU_<type>_Marshal. */
export function fromC(type: MuType, src: Pointer | bigint | Uint8Array): Uint8Array {
  const out = new Uint8Array(WIRE_BYTES);
  const offset = new BigUint64Array(1);
  check(`Tss2_MU_${type}_Marshal`, tss().mu[`Tss2_MU_${type}_Marshal`]!(src, out, out.byteLength, offset));
  return out.slice(0, Number(offset[0]));
}

/** Marshal an ESAPI-allocated output (the pointer stored in `slot`) and release it with Esys_Free. */
function take(type: MuType, slot: BigUint64Array): Uint8Array {
  const p = slot[0]!;
  if (p === 0n) throw new TssCallError(`ESAPI output ${type} (null)`, 0x70005 /* TSS2_ESYS_RC_BAD_REFERENCE */);
  try {
    return fromC(type, p);
  } finally {
    tss().esys.Esys_Free(p);
    slot[0] = 0n;
  }
}

function release(...slots: BigUint64Array[]): void {
  for (const s of slots) {
    if (s[0] !== 0n) tss().esys.Esys_Free(s[0]!);
    s[0] = 0n;
  }
}

/** NUL-terminated UTF-8 for C. */
function cString(s: string): Buffer {
  return Buffer.from(`${s}\0`, "utf8");
}

export const ESYS_TR_NONE = 0xfff;
export const ESYS_TR_PASSWORD = 0x0ff;
export const ESYS_TR_RH_OWNER = 0x101;
export const ESYS_TR_RH_ENDORSEMENT = 0x10b;

export const TPMA_SESSION_CONTINUESESSION = 0x01;
export const TPMA_SESSION_DECRYPT = 0x20;
export const TPMA_SESSION_ENCRYPT = 0x40;

export const TPM2_SE_HMAC = 0x00;
export const TPM2_SE_POLICY = 0x01;

/**
 * One ESAPI context over one TCTI. Methods take and return wire-format bytes and ESYS_TR numbers; they throw
 * TssCallError. Not re-entrant: the caller serialises (ESAPI is not thread-safe, and a TCTI carries one command
 * at a time).
 */
export class EsysContext {
  private ctx: bigint;
  private tcti: bigint;

  private constructor(ctx: bigint, tcti: bigint) {
    this.ctx = ctx;
    this.tcti = tcti;
  }

  /** Tss2_TctiLdr_Initialize(conf) then Esys_Initialize. `conf` is e.g. "device:/dev/tpmrm0". */
  static open(conf: string): EsysContext {
    const { tctildr, esys } = tss();
    const confC = cString(conf);
    const tctiSlot = new BigUint64Array(1);
    check("Tss2_TctiLdr_Initialize", tctildr.Tss2_TctiLdr_Initialize(confC, tctiSlot));
    const ctxSlot = new BigUint64Array(1);
    const rc = esys.Esys_Initialize(ctxSlot, tctiSlot[0]!, null);
    if (rc !== 0) {
      tctildr.Tss2_TctiLdr_Finalize(tctiSlot);
      throw new TssCallError("Esys_Initialize", rc >>> 0);
    }
    return new EsysContext(ctxSlot[0]!, tctiSlot[0]!);
  }

  get closed(): boolean {
    return this.ctx === 0n;
  }

  private get c(): bigint {
    if (this.ctx === 0n) throw new TssCallError("ESAPI context (finalized)", 0x70003 /* TSS2_ESYS_RC_BAD_CONTEXT */);
    return this.ctx;
  }

  /** Esys_Finalize and Tss2_TctiLdr_Finalize. Idempotent. */
  close(): void {
    const { esys, tctildr } = tss();
    if (this.ctx !== 0n) {
      esys.Esys_Finalize(new BigUint64Array([this.ctx]));
      this.ctx = 0n;
    }
    if (this.tcti !== 0n) {
      tctildr.Tss2_TctiLdr_Finalize(new BigUint64Array([this.tcti]));
      this.tcti = 0n;
    }
  }

  /** TPM2_CreatePrimary. Returns the new object's ESYS_TR and its TPM2B_PUBLIC (wire). */
  createPrimary(hierarchy: number, auth: number, inSensitive: Uint8Array, inPublic: Uint8Array): { handle: number; outPublic: Uint8Array } {
    const sensitiveC = toC("TPM2B_SENSITIVE_CREATE", inSensitive);
    const publicC = toC("TPM2B_PUBLIC", inPublic);
    const outsideInfoC = toC("TPM2B_DATA", new Uint8Array(2));
    const creationPcrC = toC("TPML_PCR_SELECTION", new Uint8Array(4));
    const handle = new Uint32Array(1);
    const outPublic = new BigUint64Array(1);
    const creationData = new BigUint64Array(1);
    const creationHash = new BigUint64Array(1);
    const creationTicket = new BigUint64Array(1);
    const rc = tss().esys.Esys_CreatePrimary(
      this.c,
      hierarchy,
      auth,
      ESYS_TR_NONE,
      ESYS_TR_NONE,
      sensitiveC,
      publicC,
      outsideInfoC,
      creationPcrC,
      handle,
      outPublic,
      creationData,
      creationHash,
      creationTicket,
    );
    release(creationData, creationHash, creationTicket);
    if (rc !== 0) {
      release(outPublic);
      throw new TssCallError("Esys_CreatePrimary", rc >>> 0);
    }
    return { handle: handle[0]!, outPublic: take("TPM2B_PUBLIC", outPublic) };
  }

  /** TPM2_Load of a TPM2B_PRIVATE / TPM2B_PUBLIC pair (wire) under `parent`. */
  load(parent: number, s1: number, s2: number, inPrivate: Uint8Array, inPublic: Uint8Array): number {
    const privateC = toC("TPM2B_PRIVATE", inPrivate);
    const publicC = toC("TPM2B_PUBLIC", inPublic);
    const handle = new Uint32Array(1);
    check("Esys_Load", tss().esys.Esys_Load(this.c, parent, s1, s2, ESYS_TR_NONE, privateC, publicC, handle));
    return handle[0]!;
  }

  /** An ESYS_TR for a TPM handle that already exists (persistent object), via TPM2_ReadPublic. */
  fromTpmPublic(tpmHandle: number, s1: number = ESYS_TR_NONE): number {
    const handle = new Uint32Array(1);
    check("Esys_TR_FromTPMPublic", tss().esys.Esys_TR_FromTPMPublic(this.c, tpmHandle >>> 0, s1, ESYS_TR_NONE, ESYS_TR_NONE, handle));
    return handle[0]!;
  }

  /** TPM2_ReadPublic: the object's TPM2B_PUBLIC and TPM2B_NAME (wire). */
  readPublic(handle: number, s1: number = ESYS_TR_NONE): { outPublic: Uint8Array; name: Uint8Array } {
    const outPublic = new BigUint64Array(1);
    const name = new BigUint64Array(1);
    const qualifiedName = new BigUint64Array(1);
    const rc = tss().esys.Esys_ReadPublic(this.c, handle, s1, ESYS_TR_NONE, ESYS_TR_NONE, outPublic, name, qualifiedName);
    release(qualifiedName);
    if (rc !== 0) {
      release(outPublic, name);
      throw new TssCallError("Esys_ReadPublic", rc >>> 0);
    }
    return { outPublic: take("TPM2B_PUBLIC", outPublic), name: take("TPM2B_NAME", name) };
  }

  /** The Name ESAPI holds for an object (TPM2B_NAME, wire). */
  getName(handle: number): Uint8Array {
    const name = new BigUint64Array(1);
    check("Esys_TR_GetName", tss().esys.Esys_TR_GetName(this.c, handle, name));
    return take("TPM2B_NAME", name);
  }

  /** Esys_TR_SetAuth with a TPM2B_AUTH (wire). */
  setAuth(handle: number, auth: Uint8Array): void {
    const authC = toC("TPM2B_AUTH", auth);
    check("Esys_TR_SetAuth", tss().esys.Esys_TR_SetAuth(this.c, handle, authC));
  }

  /** TPM2_StartAuthSession; `symmetric` is a TPMT_SYM_DEF (wire). ESAPI picks nonceCaller. */
  startAuthSession(tpmKey: number, bind: number, type: number, symmetric: Uint8Array, authHash: number): number {
    const symC = toC("TPMT_SYM_DEF", symmetric);
    const handle = new Uint32Array(1);
    check(
      "Esys_StartAuthSession",
      tss().esys.Esys_StartAuthSession(this.c, tpmKey, bind, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, null, type, symC, authHash, handle),
    );
    return handle[0]!;
  }

  /** Set the TPMA_SESSION bits in `mask` to those in `flags`. */
  setSessionAttributes(session: number, flags: number, mask: number = 0xff): void {
    check("Esys_TRSess_SetAttributes", tss().esys.Esys_TRSess_SetAttributes(this.c, session, flags, mask));
  }

  /** TPM2_PolicyPCR; `pcrDigest` is a TPM2B_DIGEST and `pcrs` a TPML_PCR_SELECTION (wire). */
  policyPcr(session: number, pcrDigest: Uint8Array, pcrs: Uint8Array, s1: number = ESYS_TR_NONE): void {
    const digestC = toC("TPM2B_DIGEST", pcrDigest);
    const pcrsC = toC("TPML_PCR_SELECTION", pcrs);
    check("Esys_PolicyPCR", tss().esys.Esys_PolicyPCR(this.c, session, s1, ESYS_TR_NONE, ESYS_TR_NONE, digestC, pcrsC));
  }

  /**
   * TPM2_PolicyAuthValue: the policy also needs the object's auth value, proven by HMAC (never sent in clear).
   * It extends the policy digest exactly as TPM2_PolicyPassword does, so it satisfies policies built with either.
   */
  policyAuthValue(session: number): void {
    check("Esys_PolicyAuthValue", tss().esys.Esys_PolicyAuthValue(this.c, session, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE));
  }

  /** TPM2_PolicyOR; `hashList` is a TPML_DIGEST (wire) of the branches, one of which the session's digest is. */
  policyOr(session: number, hashList: Uint8Array): void {
    const listC = toC("TPML_DIGEST", hashList);
    check("Esys_PolicyOR", tss().esys.Esys_PolicyOR(this.c, session, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, listC));
  }

  /**
   * TPM2_PCR_Read of a TPML_PCR_SELECTION (wire). The TPM answers at most eight PCRs per call: it returns the
   * selection it did read and their values (TPML_PCR_SELECTION and TPML_DIGEST, wire).
   */
  pcrRead(selection: Uint8Array): { selection: Uint8Array; values: Uint8Array } {
    const selC = toC("TPML_PCR_SELECTION", selection);
    const counter = new Uint32Array(1);
    const selOut = new BigUint64Array(1);
    const values = new BigUint64Array(1);
    const rc = tss().esys.Esys_PCR_Read(this.c, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, selC, counter, selOut, values);
    if (rc !== 0) {
      release(selOut, values);
      throw new TssCallError("Esys_PCR_Read", rc >>> 0);
    }
    return { selection: take("TPML_PCR_SELECTION", selOut), values: take("TPML_DIGEST", values) };
  }

  /** TPM2_PolicyRestart: reset a policy session's digest. */
  policyRestart(session: number): void {
    check("Esys_PolicyRestart", tss().esys.Esys_PolicyRestart(this.c, session, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE));
  }

  /** TPM2_PolicySecret(authHandle) authorised by `s1` (ESYS_TR_PASSWORD with authHandle's auth set). */
  policySecret(authHandle: number, session: number, s1: number = ESYS_TR_PASSWORD, s2: number = ESYS_TR_NONE): void {
    const empty = toC("TPM2B_DIGEST", new Uint8Array(2));
    const timeout = new BigUint64Array(1);
    const ticket = new BigUint64Array(1);
    const rc = tss().esys.Esys_PolicySecret(this.c, authHandle, session, s1, s2, ESYS_TR_NONE, null, empty, empty, 0, timeout, ticket);
    release(timeout, ticket);
    check("Esys_PolicySecret", rc);
  }

  /** TPM2_Sign. `digest` TPM2B_DIGEST, `scheme` TPMT_SIG_SCHEME, `validation` TPMT_TK_HASHCHECK: all C structs
   * already (from toC), so a caller can build the constant ones once. Returns the TPMT_SIGNATURE (wire). */
  sign(key: number, s1: number, s2: number, digestC: Uint8Array, schemeC: Uint8Array, validationC: Uint8Array): Uint8Array {
    const signature = new BigUint64Array(1);
    const rc = tss().esys.Esys_Sign(this.c, key, s1, s2, ESYS_TR_NONE, digestC, schemeC, validationC, signature);
    if (rc !== 0) {
      release(signature);
      throw new TssCallError("Esys_Sign", rc >>> 0);
    }
    return take("TPMT_SIGNATURE", signature);
  }

  /** TPM2_FlushContext for a transient object or session. */
  flush(handle: number): void {
    check("Esys_FlushContext", tss().esys.Esys_FlushContext(this.c, handle));
  }

  /** Forget an ESYS_TR without touching the TPM (for persistent objects). */
  forget(handle: number): void {
    check("Esys_TR_Close", tss().esys.Esys_TR_Close(this.c, new Uint32Array([handle])));
  }
}
