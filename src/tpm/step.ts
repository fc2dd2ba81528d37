/**
 * One ESAPI step at a time: a TssCallError from tpm2-tss becomes a one-line TpmError that names what was being
 * done, the decoded response code, and what to check.
 */
import { TpmError, type TpmErrorCode } from "./error.ts";
import { TssCallError } from "./ffi.ts";
import { codeForRc, decodeRc, describeRc } from "./rc.ts";

/** Hints, per error code, for the step that failed. */
export type Hints = Partial<Record<TpmErrorCode, string>>;

/** Run one ESAPI step; a TssCallError becomes a one-line TpmError naming what to check and the decoded rc. */
export function step<T>(path: string, what: string, hints: Hints, fn: () => T): T {
  try {
    return fn();
  } catch (e) {
    throw asTpmError(path, what, hints, e);
  }
}

export function asTpmError(path: string, what: string, hints: Hints, e: unknown): unknown {
  if (!(e instanceof TssCallError)) return e;
  const d = decodeRc(e.rc);
  const code = codeForRc(d);
  const hint =
    hints[code] ??
    (
      {
        TPM_UNAVAILABLE: `check that a TPM answers at "${path}" (the device exists and is readable, or swtpm listens there)`,
        TPM_LOCKOUT: "the TPM is in dictionary-attack lockout: wait for recovery or run tpm2_dictionarylockout --clear-lockout",
        TPM_AUTH_FAILED: "check the password",
        TPM_POLICY_FAILED: "check the policy the key was bound to",
        TPM_NO_OBJECT: "check the handle (tpm2_getcap handles-persistent)",
      } as Hints
    )[code] ??
    "see the response code";
  return new TpmError(code, `${what} failed (${describeRc(d)}): ${hint}`, { cause: e, rc: d.rc, rcName: d.name });
}

export function handleHex(h: number): string {
  return `0x${(h >>> 0).toString(16).padStart(8, "0")}`;
}
