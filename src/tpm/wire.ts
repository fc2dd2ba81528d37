/**
 * TPM 2.0 wire format (TPM 2.0 Part 2, big-endian): a writer and reader, the constants the signer uses, and the
 * parse of a TPM2B_PUBLIC into what the signer checks. Pure TypeScript; the FFI wall turns wire bytes into C
 * structs with Tss2_MU_*.
 */

export const TPM2_ALG_RSA = 0x0001;
export const TPM2_ALG_SHA256 = 0x000b;
export const TPM2_ALG_AES = 0x0006;
export const TPM2_ALG_RSASSA = 0x0014;
export const TPM2_ALG_NULL = 0x0010;
export const TPM2_ALG_ECC = 0x0023;
export const TPM2_ALG_CFB = 0x0043;
export const TPM2_ECC_NIST_P256 = 0x0003;
const TPM2_ST_HASHCHECK = 0x8024;
export const TPM2_RH_OWNER = 0x40000001;
const TPM2_RH_NULL = 0x40000007;

/** Command codes that policy digests are extended with (TPM 2.0 Part 3, section 23). */
export const TPM2_CC_POLICY_AUTHVALUE = 0x0000016b;
export const TPM2_CC_POLICY_OR = 0x00000171;
export const TPM2_CC_POLICY_PCR = 0x0000017f;
export const TPM2_CC_POLICY_DUPLICATIONSELECT = 0x00000188;

export const TPMA_OBJECT_FIXEDTPM = 0x00000002;
export const TPMA_OBJECT_FIXEDPARENT = 0x00000010;
export const TPMA_OBJECT_SENSITIVEDATAORIGIN = 0x00000020;
export const TPMA_OBJECT_USERWITHAUTH = 0x00000040;
export const TPMA_OBJECT_ADMINWITHPOLICY = 0x00000080;
export const TPMA_OBJECT_NODA = 0x00000400;
export const TPMA_OBJECT_RESTRICTED = 0x00010000;
export const TPMA_OBJECT_DECRYPT = 0x00020000;
export const TPMA_OBJECT_SIGN_ENCRYPT = 0x00040000;

export class WireWriter {
  private bytes: number[] = [];
  u8(v: number): this {
    this.bytes.push(v & 0xff);
    return this;
  }
  u16(v: number): this {
    this.bytes.push((v >>> 8) & 0xff, v & 0xff);
    return this;
  }
  u32(v: number): this {
    this.bytes.push((v >>> 24) & 0xff, (v >>> 16) & 0xff, (v >>> 8) & 0xff, v & 0xff);
    return this;
  }
  raw(b: Uint8Array): this {
    for (const x of b) this.bytes.push(x);
    return this;
  }
  /** A TPM2B: u16 size then the bytes. */
  tpm2b(b: Uint8Array): this {
    return this.u16(b.byteLength).raw(b);
  }
  /** A TPM2B around whatever `inner` writes. */
  sized(inner: (w: WireWriter) => void): this {
    const w = new WireWriter();
    inner(w);
    return this.tpm2b(w.done());
  }
  done(): Uint8Array {
    return Uint8Array.from(this.bytes);
  }
}

export class WireReader {
  private offset = 0;
  constructor(private readonly b: Uint8Array) {}
  private need(n: number): void {
    if (this.offset + n > this.b.byteLength) throw new RangeError("TPM structure is truncated");
  }
  u8(): number {
    this.need(1);
    return this.b[this.offset++]!;
  }
  u16(): number {
    this.need(2);
    const v = (this.b[this.offset]! << 8) | this.b[this.offset + 1]!;
    this.offset += 2;
    return v;
  }
  u32(): number {
    this.need(4);
    const v =
      ((this.b[this.offset]! << 24) | (this.b[this.offset + 1]! << 16) | (this.b[this.offset + 2]! << 8) | this.b[this.offset + 3]!) >>> 0;
    this.offset += 4;
    return v;
  }
  bytes(n: number): Uint8Array {
    this.need(n);
    const v = this.b.subarray(this.offset, this.offset + n);
    this.offset += n;
    return v;
  }
  tpm2b(): Uint8Array {
    return this.bytes(this.u16());
  }
  get remaining(): number {
    return this.b.byteLength - this.offset;
  }
}

/** TPM2B_DIGEST around `d`. */
export function tpm2bDigest(d: Uint8Array): Uint8Array {
  return new WireWriter().tpm2b(d).done();
}

/** TPM2B_AUTH for a password (UTF-8 bytes, as tpm2-tools sends a plain `-p` string). */
export function tpm2bAuth(password: string | undefined): Uint8Array {
  return new WireWriter().tpm2b(new TextEncoder().encode(password ?? "")).done();
}

/** TPM2B_SENSITIVE_CREATE with an empty userAuth and empty data. */
export const EMPTY_SENSITIVE_CREATE = new WireWriter().sized((w) => w.u16(0).u16(0)).done();

/** TPMT_SYM_DEF for AES-128-CFB (session parameter encryption). */
export const SYM_AES_128_CFB = new WireWriter().u16(TPM2_ALG_AES).u16(128).u16(TPM2_ALG_CFB).done();
/** TPMT_SYM_DEF TPM_ALG_NULL. */
export const SYM_NULL = new WireWriter().u16(TPM2_ALG_NULL).done();

/** TPMT_SIG_SCHEME RSASSA-PKCS1-v1_5 with SHA-256. */
export const SCHEME_RSASSA_SHA256 = new WireWriter().u16(TPM2_ALG_RSASSA).u16(TPM2_ALG_SHA256).done();

/** TPMT_TK_HASHCHECK: the null ticket (the digest was made outside the TPM; fine for an unrestricted key). */
export const NULL_HASHCHECK = new WireWriter().u16(TPM2_ST_HASHCHECK).u32(TPM2_RH_NULL).u16(0).done();

/** TPML_PCR_SELECTION of SHA-256 PCRs. */
export function pcrSelectionSha256(pcrs: readonly number[]): Uint8Array {
  const select = new Uint8Array(3);
  for (const p of pcrs) {
    if (!Number.isInteger(p) || p < 0 || p > 23) throw new RangeError(`PCR index ${p} is not in 0..23`);
    select[p >> 3]! |= 1 << (p & 7);
  }
  return new WireWriter().u32(1).u16(TPM2_ALG_SHA256).u8(3).raw(select).done();
}

/** The PCR indices a TPML_PCR_SELECTION (wire) selects in its SHA-256 bank, ascending. */
export function pcrsSelectedSha256(selection: Uint8Array): number[] {
  const r = new WireReader(selection);
  const out: number[] = [];
  for (let n = r.u32(); n > 0; n--) {
    const hash = r.u16();
    const select = r.bytes(r.u8());
    if (hash !== TPM2_ALG_SHA256) continue;
    for (let i = 0; i < select.byteLength * 8; i++) if (select[i >> 3]! & (1 << (i & 7))) out.push(i);
  }
  return out;
}

/** TPML_DIGEST around `digests`. */
export function tpmlDigest(digests: readonly Uint8Array[]): Uint8Array {
  const w = new WireWriter().u32(digests.length);
  for (const d of digests) w.tpm2b(d);
  return w.done();
}

/** The digests of a TPML_DIGEST (wire). */
export function parseTpmlDigest(list: Uint8Array): Uint8Array[] {
  const r = new WireReader(list);
  const out: Uint8Array[] = [];
  for (let n = r.u32(); n > 0; n--) out.push(r.tpm2b());
  return out;
}

/** What the signer needs from a TPMT_PUBLIC. */
export interface PublicArea {
  type: number;
  nameAlg: number;
  attributes: number;
  authPolicy: Uint8Array;
  /** RSA only: */
  rsa?: { scheme: number; schemeHash: number; keyBits: number; exponent: number; modulus: Uint8Array };
}

/** Parse a TPM2B_PUBLIC (wire). Only RSA parameters are decoded; other types stop after the attributes. */
export function parsePublic(tpm2b: Uint8Array): PublicArea {
  const outer = new WireReader(tpm2b);
  const r = new WireReader(outer.tpm2b());
  const type = r.u16();
  const nameAlg = r.u16();
  const attributes = r.u32();
  const authPolicy = r.tpm2b();
  const area: PublicArea = { type, nameAlg, attributes, authPolicy };
  if (type === TPM2_ALG_RSA) {
    const symAlg = r.u16();
    if (symAlg !== TPM2_ALG_NULL) r.bytes(4); // keyBits, mode
    const scheme = r.u16();
    const schemeHash = scheme === TPM2_ALG_NULL ? 0 : r.u16();
    const keyBits = r.u16();
    const exponent = r.u32();
    const modulus = r.tpm2b();
    area.rsa = { scheme, schemeHash, keyBits, exponent: exponent === 0 ? 65537 : exponent, modulus };
  }
  return area;
}

export function toHex(b: Uint8Array): string {
  return Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString("hex");
}
