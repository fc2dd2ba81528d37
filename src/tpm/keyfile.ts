/**
 * Parse a TSS2 PRIVATE KEY PEM (draft-bottomley-tpm2-keys), the format tpm2_encodeobject, the tpm2 OpenSSL
 * provider and go-tpm-keyfiles write:
 *
 *   TPMKey ::= SEQUENCE {
 *     type        OBJECT IDENTIFIER,                    -- 2.23.133.10.1.3: loadable key
 *     emptyAuth   [0] EXPLICIT BOOLEAN OPTIONAL,
 *     policy      [1] EXPLICIT SEQUENCE OF TPMPolicy OPTIONAL,
 *     secret      [2] EXPLICIT OCTET STRING OPTIONAL,
 *     authPolicy  [3] EXPLICIT SEQUENCE OF TPMAuthPolicy OPTIONAL,
 *     description [4] EXPLICIT UTF8String OPTIONAL,
 *     rsaParent   [5] EXPLICIT BOOLEAN OPTIONAL,
 *     parent      INTEGER,                              -- TPM handle: 0x40000001 (owner) or a persistent key
 *     pubkey      OCTET STRING,                         -- TPM2B_PUBLIC, marshalled
 *     privkey     OCTET STRING }                        -- TPM2B_PRIVATE, marshalled
 *
 * @example
 *   const key = parseTss2PrivateKeyPem(await Bun.file("key.pem").text());
 *   key.parent === 0x40000001; // load under the H-2 primary of the owner hierarchy
 */
import { TpmError } from "./error.ts";

const OID_LOADABLE_KEY = "2.23.133.10.1.3";
const OID_IMPORTABLE_KEY = "2.23.133.10.1.4";
const OID_SEALED_DATA = "2.23.133.10.1.5";

export interface Tss2PrivateKey {
  /** True when the key has no password (the field is absent or false when it has one). */
  emptyAuth: boolean;
  /** TPM handle of the parent: TPM2_RH_OWNER (0x40000001) for the H-2 primary, or a persistent handle. */
  parent: number;
  /** TPM2B_PUBLIC, TPM wire format (with its size prefix). */
  pubkey: Uint8Array;
  /** TPM2B_PRIVATE, TPM wire format (with its size prefix). */
  privkey: Uint8Array;
  /** True when the file carries a [1] policy the key needs satisfied (its commands are not replayed here). */
  hasPolicy: boolean;
  /** [4] description, when present. */
  description?: string;
  /** [5] rsaParent: the parent is an RSA-2048 primary instead of the ECC P-256 one. */
  rsaParent: boolean;
}

interface Tlv {
  tag: number;
  value: Uint8Array;
}

/** A small DER reader: enough for the TPMKey structure. */
class Der {
  private offset = 0;
  constructor(private readonly b: Uint8Array) {}

  get done(): boolean {
    return this.offset >= this.b.byteLength;
  }

  peekTag(): number | undefined {
    return this.done ? undefined : this.b[this.offset];
  }

  next(): Tlv {
    const b = this.b;
    if (this.offset + 2 > b.byteLength) throw new RangeError("DER element is truncated");
    const tag = b[this.offset++]!;
    if ((tag & 0x1f) === 0x1f) throw new RangeError("multi-byte DER tags are not used in a TSS2 key");
    let len = b[this.offset++]!;
    if (len & 0x80) {
      const n = len & 0x7f;
      if (n === 0 || n > 4) throw new RangeError("DER length form is not supported");
      if (this.offset + n > b.byteLength) throw new RangeError("DER length is truncated");
      len = 0;
      for (let i = 0; i < n; i++) len = len * 256 + b[this.offset++]!;
    }
    if (this.offset + len > b.byteLength) throw new RangeError("DER value runs past the end");
    const value = b.subarray(this.offset, this.offset + len);
    this.offset += len;
    return { tag, value };
  }

  expect(tag: number, what: string): Uint8Array {
    const t = this.next();
    if (t.tag !== tag) {
      throw new RangeError(`expected ${what} (tag 0x${tag.toString(16)}), found tag 0x${t.tag.toString(16)}`);
    }
    return t.value;
  }
}

function decodeOid(v: Uint8Array): string {
  if (v.byteLength === 0) throw new RangeError("empty OID");
  const first = v[0]!;
  const parts = [first < 80 ? Math.floor(first / 40) : 2, first < 80 ? first % 40 : first - 80];
  let n = 0;
  for (let i = 1; i < v.byteLength; i++) {
    n = n * 128 + (v[i]! & 0x7f);
    if (!(v[i]! & 0x80)) {
      parts.push(n);
      n = 0;
    }
  }
  return parts.join(".");
}

function decodeUnsigned(v: Uint8Array): number {
  if (v.byteLength === 0 || v.byteLength > 5 || (v[0]! & 0x80) !== 0) {
    throw new RangeError("parent is not a 32-bit unsigned INTEGER");
  }
  let n = 0;
  for (const x of v) n = n * 256 + x;
  if (n > 0xffffffff) throw new RangeError("parent is not a 32-bit unsigned INTEGER");
  return n;
}

function explicitBoolean(v: Uint8Array): boolean {
  const inner = new Der(v).expect(0x01, "BOOLEAN");
  return inner.byteLength === 1 && inner[0] !== 0;
}

/** The DER inside a `-----BEGIN TSS2 PRIVATE KEY-----` PEM. */
export function pemToDer(pem: string): Uint8Array {
  const m = /-----BEGIN TSS2 PRIVATE KEY-----([\s\S]*?)-----END TSS2 PRIVATE KEY-----/.exec(pem);
  if (!m) throw new RangeError("no -----BEGIN TSS2 PRIVATE KEY----- block");
  const b64 = m[1]!.replace(/\s+/g, "");
  if (!/^[A-Za-z0-9+/]*={0,2}$/.test(b64)) throw new RangeError("the PEM body is not base64");
  return new Uint8Array(Buffer.from(b64, "base64"));
}

/** Parse the DER of a TPMKey. Throws RangeError describing what is wrong. */
export function parseTss2PrivateKeyDer(der: Uint8Array): Tss2PrivateKey {
  const outer = new Der(der);
  const seq = new Der(outer.expect(0x30, "SEQUENCE"));
  const oid = decodeOid(seq.expect(0x06, "OBJECT IDENTIFIER type"));
  if (oid !== OID_LOADABLE_KEY) {
    const kind = oid === OID_IMPORTABLE_KEY ? "an importable key" : oid === OID_SEALED_DATA ? "sealed data" : `OID ${oid}`;
    throw new RangeError(`it is ${kind}, not a loadable key (${OID_LOADABLE_KEY})`);
  }
  const key: Tss2PrivateKey = {
    emptyAuth: false,
    parent: 0,
    pubkey: new Uint8Array(),
    privkey: new Uint8Array(),
    hasPolicy: false,
    rsaParent: false,
  };
  // Optional context-specific [n] EXPLICIT fields come before the parent INTEGER.
  while ((seq.peekTag() ?? 0) >= 0xa0 && (seq.peekTag() ?? 0) <= 0xbf) {
    const { tag, value } = seq.next();
    switch (tag & 0x1f) {
      case 0:
        key.emptyAuth = explicitBoolean(value);
        break;
      case 1:
        key.hasPolicy = true;
        break;
      case 4:
        key.description = new TextDecoder().decode(new Der(value).expect(0x0c, "UTF8String"));
        break;
      case 5:
        key.rsaParent = explicitBoolean(value);
        break;
      default:
        break; // [2] secret, [3] authPolicy and later extensions: not needed to load a loadable key
    }
  }
  key.parent = decodeUnsigned(seq.expect(0x02, "INTEGER parent"));
  key.pubkey = seq.expect(0x04, "OCTET STRING pubkey").slice();
  key.privkey = seq.expect(0x04, "OCTET STRING privkey").slice();
  for (const [name, b] of [
    ["pubkey", key.pubkey],
    ["privkey", key.privkey],
  ] as const) {
    if (b.byteLength < 2 || ((b[0]! << 8) | b[1]!) !== b.byteLength - 2) {
      throw new RangeError(`${name} is not a marshalled TPM2B (size prefix does not match its length)`);
    }
  }
  return key;
}

/** Parse a TSS2 PRIVATE KEY PEM. Throws TpmError TPM_BAD_KEYFILE naming what is wrong. */
export function parseTss2PrivateKeyPem(pem: string, source = "keyfile"): Tss2PrivateKey {
  try {
    return parseTss2PrivateKeyDer(pemToDer(pem));
  } catch (cause) {
    const why = cause instanceof Error ? cause.message : String(cause);
    throw new TpmError(
      "TPM_BAD_KEYFILE",
      `${source} is not a usable TSS2 PRIVATE KEY: ${why}; make it with tpm2_encodeobject (or tpm2genkey) and pass that PEM`,
      { cause },
    );
  }
}
