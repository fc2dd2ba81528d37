/**
 * Primary-key templates (TPM2B_PUBLIC, wire) the signer re-creates: primaries are derived from the hierarchy
 * seed and the template, so the same template gives the same key on the same TPM every time.
 */
import {
  TPM2_ALG_AES,
  TPM2_ALG_CFB,
  TPM2_ALG_ECC,
  TPM2_ALG_NULL,
  TPM2_ALG_RSA,
  TPM2_ALG_SHA256,
  TPM2_ECC_NIST_P256,
  TPMA_OBJECT_ADMINWITHPOLICY,
  TPMA_OBJECT_DECRYPT,
  TPMA_OBJECT_FIXEDPARENT,
  TPMA_OBJECT_FIXEDTPM,
  TPMA_OBJECT_NODA,
  TPMA_OBJECT_RESTRICTED,
  TPMA_OBJECT_SENSITIVEDATAORIGIN,
  TPMA_OBJECT_USERWITHAUTH,
  WireWriter,
} from "./wire.ts";

/**
 * The "H-2" ECC P-256 storage parent (TCG EK Credential Profile, used as the parent of TSS2 PEM keyfiles whose
 * parent is the owner hierarchy): what `tpm2_createprimary -C o -G ecc -g sha256 -a
 * "fixedtpm|fixedparent|sensitivedataorigin|userwithauth|noda|restricted|decrypt" -u unique.dat` makes with a
 * unique.dat of two zero bytes (empty x and y).
 */
export const H2_SRK_TEMPLATE: Uint8Array = new WireWriter()
  .sized(
    (w) =>
      w
        .u16(TPM2_ALG_ECC)
        .u16(TPM2_ALG_SHA256)
        .u32(
          TPMA_OBJECT_FIXEDTPM |
            TPMA_OBJECT_FIXEDPARENT |
            TPMA_OBJECT_SENSITIVEDATAORIGIN |
            TPMA_OBJECT_USERWITHAUTH |
            TPMA_OBJECT_NODA |
            TPMA_OBJECT_RESTRICTED |
            TPMA_OBJECT_DECRYPT,
        )
        .u16(0) // authPolicy: empty
        .u16(TPM2_ALG_AES)
        .u16(128)
        .u16(TPM2_ALG_CFB) // symmetric
        .u16(TPM2_ALG_NULL) // scheme
        .u16(TPM2_ECC_NIST_P256)
        .u16(TPM2_ALG_NULL) // kdf
        .u16(0)
        .u16(0), // unique: x, y empty
  )
  .done();

/** PolicySecret(TPM_RH_ENDORSEMENT): the authPolicy of the TCG default EK templates. */
const EK_POLICY = Uint8Array.from(Buffer.from("837197674484b3f81a90cc8d46a5d724fd52d76e06520b64f2a1da1b331469aa", "hex"));

/**
 * The TCG default RSA-2048 EK template (EK Credential Profile, template L-1): what `tpm2_createek -G rsa` makes
 * when the TPM holds no template of its own in NV.
 */
export const RSA_EK_TEMPLATE: Uint8Array = new WireWriter()
  .sized(
    (w) =>
      w
        .u16(TPM2_ALG_RSA)
        .u16(TPM2_ALG_SHA256)
        .u32(
          TPMA_OBJECT_FIXEDTPM |
            TPMA_OBJECT_FIXEDPARENT |
            TPMA_OBJECT_SENSITIVEDATAORIGIN |
            TPMA_OBJECT_ADMINWITHPOLICY |
            TPMA_OBJECT_RESTRICTED |
            TPMA_OBJECT_DECRYPT,
        )
        .tpm2b(EK_POLICY)
        .u16(TPM2_ALG_AES)
        .u16(128)
        .u16(TPM2_ALG_CFB) // symmetric
        .u16(TPM2_ALG_NULL) // scheme
        .u16(2048) // keyBits
        .u32(0) // exponent: default 65537
        .tpm2b(new Uint8Array(256)), // unique: 256 zero bytes
  )
  .done();
