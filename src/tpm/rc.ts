/**
 * Decode a TSS2_RC: its name ("TPM_RC_AUTH_FAIL", "TSS2_TCTI_RC_IO_ERROR"), where in the command it points
 * ("session 1", "handle 1", "parameter 2"), and Tss2_RC_Decode's text; plus the signer's error code for it.
 *
 * @example
 *   decodeRc(0x98e).name === "TPM_RC_AUTH_FAIL"; decodeRc(0x98e).where === "session 1"
 */
import type { TpmErrorCode } from "./error.ts";
import { rcText } from "./ffi.ts";

const FMT0: Record<number, string> = {
  0x000: "INITIALIZE",
  0x001: "FAILURE",
  0x003: "SEQUENCE",
  0x00b: "PRIVATE",
  0x019: "HMAC",
  0x020: "DISABLED",
  0x021: "EXCLUSIVE",
  0x024: "AUTH_TYPE",
  0x025: "AUTH_MISSING",
  0x026: "POLICY",
  0x027: "PCR",
  0x028: "PCR_CHANGED",
  0x02d: "UPGRADE",
  0x02e: "TOO_MANY_CONTEXTS",
  0x02f: "AUTH_UNAVAILABLE",
  0x030: "REBOOT",
  0x031: "UNBALANCED",
  0x042: "COMMAND_SIZE",
  0x043: "COMMAND_CODE",
  0x044: "AUTHSIZE",
  0x045: "AUTH_CONTEXT",
  0x046: "NV_RANGE",
  0x047: "NV_SIZE",
  0x048: "NV_LOCKED",
  0x049: "NV_AUTHORIZATION",
  0x04a: "NV_UNINITIALIZED",
  0x04b: "NV_SPACE",
  0x04c: "NV_DEFINED",
  0x050: "BAD_CONTEXT",
  0x051: "CPHASH",
  0x052: "PARENT",
  0x053: "NEEDS_TEST",
  0x054: "NO_RESULT",
  0x055: "SENSITIVE",
};

const FMT1: Record<number, string> = {
  0x001: "ASYMMETRIC",
  0x002: "ATTRIBUTES",
  0x003: "HASH",
  0x004: "VALUE",
  0x005: "HIERARCHY",
  0x007: "KEY_SIZE",
  0x008: "MGF",
  0x009: "MODE",
  0x00a: "TYPE",
  0x00b: "HANDLE",
  0x00c: "KDF",
  0x00d: "RANGE",
  0x00e: "AUTH_FAIL",
  0x00f: "NONCE",
  0x010: "PP",
  0x012: "SCHEME",
  0x015: "SIZE",
  0x016: "SYMMETRIC",
  0x017: "TAG",
  0x018: "SELECTOR",
  0x01a: "INSUFFICIENT",
  0x01b: "SIGNATURE",
  0x01c: "KEY",
  0x01d: "POLICY_FAIL",
  0x01f: "INTEGRITY",
  0x020: "TICKET",
  0x021: "RESERVED_BITS",
  0x022: "BAD_AUTH",
  0x023: "EXPIRED",
  0x024: "POLICY_CC",
  0x025: "BINDING",
  0x026: "CURVE",
  0x027: "ECC_POINT",
};

const WARN: Record<number, string> = {
  0x001: "CONTEXT_GAP",
  0x002: "OBJECT_MEMORY",
  0x003: "SESSION_MEMORY",
  0x004: "MEMORY",
  0x005: "SESSION_HANDLES",
  0x006: "OBJECT_HANDLES",
  0x007: "LOCALITY",
  0x008: "YIELDED",
  0x009: "CANCELED",
  0x00a: "TESTING",
  0x010: "REFERENCE_H0",
  0x011: "REFERENCE_H1",
  0x012: "REFERENCE_H2",
  0x013: "REFERENCE_H3",
  0x014: "REFERENCE_H4",
  0x015: "REFERENCE_H5",
  0x016: "REFERENCE_H6",
  0x018: "REFERENCE_S0",
  0x019: "REFERENCE_S1",
  0x01a: "REFERENCE_S2",
  0x01b: "REFERENCE_S3",
  0x01c: "REFERENCE_S4",
  0x01d: "REFERENCE_S5",
  0x01e: "REFERENCE_S6",
  0x020: "NV_RATE",
  0x021: "LOCKOUT",
  0x022: "RETRY",
  0x023: "NV_UNAVAILABLE",
};

/** TSS2_BASE_RC_* names (tss2_common.h), shared by every TSS layer. */
const BASE = [
  "",
  "GENERAL_FAILURE",
  "NOT_IMPLEMENTED",
  "BAD_CONTEXT",
  "ABI_MISMATCH",
  "BAD_REFERENCE",
  "INSUFFICIENT_BUFFER",
  "BAD_SEQUENCE",
  "NO_CONNECTION",
  "TRY_AGAIN",
  "IO_ERROR",
  "BAD_VALUE",
  "NOT_PERMITTED",
  "INVALID_SESSIONS",
  "NO_DECRYPT_PARAM",
  "NO_ENCRYPT_PARAM",
  "BAD_SIZE",
  "MALFORMED_RESPONSE",
  "INSUFFICIENT_CONTEXT",
  "INSUFFICIENT_RESPONSE",
  "INCOMPATIBLE_TCTI",
  "NOT_SUPPORTED",
  "BAD_TCTI_STRUCTURE",
  "MEMORY",
  "BAD_TR",
  "MULTIPLE_DECRYPT_SESSIONS",
  "MULTIPLE_ENCRYPT_SESSIONS",
  "RSP_AUTH_FAILED",
];

/** Layer numbers (bits 16..23) of a TSS2_RC, tss2_common.h. */
const LAYERS: Record<number, string> = {
  0: "TPM",
  6: "FEATURE",
  7: "ESYS",
  8: "SYS",
  9: "MU",
  10: "TCTI",
  11: "RESMGR",
  12: "RESMGR_TPM",
};

const LAYER_TPM = 0;
const LAYER_TCTI = 10;
const LAYER_RESMGR_TPM = 12;

export interface DecodedRc {
  rc: number;
  /** e.g. "TPM_RC_AUTH_FAIL", "TSS2_TCTI_RC_IO_ERROR", "TPM_RC_0x1ab" when unknown. */
  name: string;
  /** For TPM format-one codes: "handle N", "session N" or "parameter N". */
  where?: string;
  /** Tss2_RC_Decode's text. */
  text: string;
  /** bits 16..23. */
  layer: number;
  /** The TPM response code with location bits removed (e.g. 0x08e for AUTH_FAIL); undefined outside TPM layers. */
  base?: number;
}

/** The TPM part of an rc, location bits cleared, and where it points. */
function decodeTpm(rc16: number): { name: string; base: number; where?: string } {
  if (rc16 & 0x080) {
    // format one: error number in bits 0..5, location in bits 6..11
    const n = rc16 & 0x03f;
    const base = 0x080 | n;
    const num = (rc16 >>> 8) & 0xf;
    let where: string | undefined;
    if (rc16 & 0x040) where = `parameter ${num}`;
    else if (num & 0x8) where = `session ${num & 0x7}`;
    else if (num) where = `handle ${num}`;
    return { name: `TPM_RC_${FMT1[n] ?? `0x${base.toString(16)}`}`, base, ...(where ? { where } : {}) };
  }
  if (rc16 & 0x100) {
    const n = rc16 & 0x07f;
    if (rc16 & 0x800) return { name: `TPM_RC_${WARN[n] ?? `0x${rc16.toString(16)}`}`, base: 0x900 | n };
    return { name: `TPM_RC_${FMT0[n] ?? `0x${rc16.toString(16)}`}`, base: 0x100 | n };
  }
  return { name: rc16 === 0 ? "TPM_RC_SUCCESS" : `TPM_RC_0x${rc16.toString(16)}`, base: rc16 };
}

export function decodeRc(rc: number): DecodedRc {
  rc >>>= 0;
  const layer = (rc >>> 16) & 0xff;
  let text = "";
  try {
    text = rcText(rc);
  } catch {
    // libtss2-rc missing: the name is still useful
  }
  if (layer === LAYER_TPM || layer === LAYER_RESMGR_TPM) {
    const tpm = decodeTpm(rc & 0xffff);
    return { rc, layer, text, ...tpm };
  }
  const baseCode = rc & 0xffff;
  const layerName = LAYERS[layer] ?? `LAYER${layer}`;
  const baseName = BASE[baseCode] ?? `0x${baseCode.toString(16)}`;
  return { rc, layer, text, name: `TSS2_${layerName}_RC_${baseName}` };
}

/** "TPM_RC_AUTH_FAIL, session 1, rc 0x98e: tpm:session(1):the authorization HMAC check failed ..." */
export function describeRc(d: DecodedRc): string {
  const where = d.where ? ` at ${d.where}` : "";
  const text = d.text ? `: ${d.text}` : "";
  return `${d.name}${where}, rc 0x${d.rc.toString(16)}${text}`;
}

/** The TpmError code for an rc, before the signer adds what it was doing. */
export function codeForRc(d: DecodedRc): TpmErrorCode {
  if (d.layer === LAYER_TCTI || d.name.endsWith("_RC_NO_CONNECTION") || d.name.endsWith("_RC_IO_ERROR")) {
    return "TPM_UNAVAILABLE";
  }
  switch (d.base) {
    case 0x08e: // AUTH_FAIL
    case 0x0a2: // BAD_AUTH
      return "TPM_AUTH_FAILED";
    case 0x09d: // POLICY_FAIL
    case 0x128: // PCR_CHANGED
    case 0x126: // POLICY
    case 0x12f: // AUTH_UNAVAILABLE: the object takes no password, only its policy
      return "TPM_POLICY_FAILED";
    case 0x08b: // HANDLE
    case 0x910: // REFERENCE_H0
      return "TPM_NO_OBJECT";
    case 0x921: // LOCKOUT
      return "TPM_LOCKOUT";
    case 0x09f: // INTEGRITY: a private blob that was not made under this parent
      return "TPM_BAD_KEYFILE";
    default:
      return "TPM_ERROR";
  }
}
