import { MetadataError } from "../errors.ts";

export type TpmErrorCode =
  | "TPM_UNAVAILABLE"
  | "TPM_NO_OBJECT"
  | "TPM_AUTH_FAILED"
  | "TPM_POLICY_FAILED"
  | "TPM_EK_MISMATCH"
  | "TPM_BAD_KEYFILE"
  | "TPM_BAD_KEY"
  | "TPM_LOCKOUT"
  /** The TPM did not answer within the deadline. */
  | "TPM_TIMEOUT"
  | "TPM_CLOSED"
  | "TPM_ERROR";

/**
 * The TPM could not do what the signer needed. `code` is stable; `rc` and `rcName` carry the TSS2 response code
 * when the TPM or the TSS gave one.
 */
export class TpmError extends MetadataError<TpmErrorCode> {
  /** The raw TSS2_RC, when one caused this error. */
  readonly rc: number | undefined;
  /** The response code's name, e.g. "TPM_RC_AUTH_FAIL", when one caused this error. */
  readonly rcName: string | undefined;

  constructor(code: TpmErrorCode, message: string, options?: { cause?: unknown; rc?: number; rcName?: string }) {
    super(code, message, options);
    this.rc = options?.rc;
    this.rcName = options?.rcName;
  }
}
