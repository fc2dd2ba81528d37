import { describe, expect, test } from "bun:test";
import { codeForRc, decodeRc, describeRc } from "../../src/tpm/rc.ts";

describe("decodeRc", () => {
  test("format-one TPM codes: name, location, and Tss2_RC_Decode's text", () => {
    const auth = decodeRc(0x98e);
    expect(auth.name).toBe("TPM_RC_AUTH_FAIL");
    expect(auth.where).toBe("session 1");
    expect(auth.base).toBe(0x08e);
    expect(auth.text).toContain("authorization HMAC check failed");
    expect(codeForRc(auth)).toBe("TPM_AUTH_FAILED");

    const handle = decodeRc(0x18b);
    expect(handle.name).toBe("TPM_RC_HANDLE");
    expect(handle.where).toBe("handle 1");
    expect(codeForRc(handle)).toBe("TPM_NO_OBJECT");

    const policy = decodeRc(0x99d);
    expect(policy.name).toBe("TPM_RC_POLICY_FAIL");
    expect(codeForRc(policy)).toBe("TPM_POLICY_FAILED");

    const integrity = decodeRc(0x1df);
    expect(integrity.name).toBe("TPM_RC_INTEGRITY");
    expect(integrity.where).toBe("parameter 1");
    expect(codeForRc(integrity)).toBe("TPM_BAD_KEYFILE");

    expect(decodeRc(0x9a2).name).toBe("TPM_RC_BAD_AUTH");
    expect(codeForRc(decodeRc(0x9a2))).toBe("TPM_AUTH_FAILED");
  });

  test("format-zero errors and warnings", () => {
    expect(decodeRc(0x128).name).toBe("TPM_RC_PCR_CHANGED");
    expect(codeForRc(decodeRc(0x128))).toBe("TPM_POLICY_FAILED");
    expect(decodeRc(0x12f).name).toBe("TPM_RC_AUTH_UNAVAILABLE");
    expect(decodeRc(0x921).name).toBe("TPM_RC_LOCKOUT");
    expect(codeForRc(decodeRc(0x921))).toBe("TPM_LOCKOUT");
    expect(decodeRc(0x910).name).toBe("TPM_RC_REFERENCE_H0");
    expect(codeForRc(decodeRc(0x910))).toBe("TPM_NO_OBJECT");
    expect(decodeRc(0x902).name).toBe("TPM_RC_OBJECT_MEMORY");
    expect(codeForRc(decodeRc(0x902))).toBe("TPM_ERROR");
  });

  test("TSS layers: TCTI errors mean the TPM is unreachable", () => {
    const io = decodeRc(0xa000a);
    expect(io.name).toBe("TSS2_TCTI_RC_IO_ERROR");
    expect(io.text).toContain("IO failure");
    expect(codeForRc(io)).toBe("TPM_UNAVAILABLE");
    expect(decodeRc(0x70005).name).toBe("TSS2_ESYS_RC_BAD_REFERENCE");
    expect(decodeRc(0x7001b).name).toBe("TSS2_ESYS_RC_RSP_AUTH_FAILED");
    // the in-kernel resource manager passes TPM codes through on its own layer
    expect(decodeRc(0xc098e).name).toBe("TPM_RC_AUTH_FAIL");
  });

  test("describeRc is one line with name, location, hex and text", () => {
    const line = describeRc(decodeRc(0x98e));
    expect(line).toStartWith("TPM_RC_AUTH_FAIL at session 1, rc 0x98e: ");
    expect(line).not.toContain("\n");
  });
});
