/**
 * The one thing the rest of the server sees of the TPM: an RSA key that signs RS256 inside the TPM.
 *
 * @example
 *   const signer = await openTpmSigner({ path: "/dev/tpmrm0", persistentHandle: 0x81010002 });
 *   const sig = await signer.sign(new TextEncoder().encode(`${header}.${payload}`)); // RSASSA-PKCS1-v1_5 SHA-256
 *   signer.close();
 */
import { createHash, createPublicKey, verify, type KeyObject } from "node:crypto";
import { readFile } from "node:fs/promises";
import { TpmError } from "./error.ts";
import {
  ESYS_TR_NONE,
  ESYS_TR_PASSWORD,
  ESYS_TR_RH_ENDORSEMENT,
  ESYS_TR_RH_OWNER,
  EsysContext,
  TPM2_SE_HMAC,
  TPM2_SE_POLICY,
  TPMA_SESSION_CONTINUESESSION,
  TPMA_SESSION_DECRYPT,
  TPMA_SESSION_ENCRYPT,
  TssCallError,
  toC,
} from "./ffi.ts";
import { parseTss2PrivateKeyPem, type Tss2PrivateKey } from "./keyfile.ts";
import { codeForRc, decodeRc, describeRc } from "./rc.ts";
import { H2_SRK_TEMPLATE, RSA_EK_TEMPLATE } from "./templates.ts";
import {
  EMPTY_SENSITIVE_CREATE,
  NULL_HASHCHECK,
  SCHEME_RSASSA_SHA256,
  SYM_AES_128_CFB,
  SYM_NULL,
  TPM2_ALG_NULL,
  TPM2_ALG_RSA,
  TPM2_ALG_RSASSA,
  TPM2_ALG_SHA256,
  TPM2_RH_OWNER,
  TPMA_OBJECT_RESTRICTED,
  TPMA_OBJECT_SIGN_ENCRYPT,
  WireReader,
  parsePublic,
  pcrSelectionSha256,
  toHex,
  tpm2bAuth,
  tpm2bDigest,
} from "./wire.ts";

export { TpmError } from "./error.ts";

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
  /** The signing key's password. With `pcrs`, the policy is PolicyPCR then PolicyAuthValue (same digest as
   * tpm2_policypcr + tpm2_policypassword). */
  keyPass?: string;
  /** SHA-256 bank PCRs the key's policy is bound to (TPM2_PolicyPCR with the current values). */
  pcrs?: number[];
  /** Hex Name of the TPM's RSA EK (e.g. `xxd -p -c 100 ek.name`). The signer refuses a TPM whose EK differs and
   * salts an HMAC session, AES-128-CFB parameter encryption, with that EK for every command that carries secrets. */
  sessionEncryptWithName?: string;
  /** The keyfile's parent is the RSA EK (default template) instead of the ECC P-256 "H-2" primary under owner. */
  useEKParent?: boolean;
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

/** The TCTI configuration string for a `path` option. */
export function tctiConfig(path: string): string {
  if (path.startsWith("/")) return `device:${path}`;
  if (/^(device|swtpm|mssim|tabrmd|cmd|libtpms|spi-helper|pcap):/.test(path) && /[=/]|:$/.test(path)) return path;
  const m = /^(\[[^\]]+\]|[^:/\s]+):(\d{1,5})$/.exec(path);
  if (m) return `swtpm:host=${m[1]!.replace(/^\[|\]$/g, "")},port=${m[2]}`;
  throw new TpmError(
    "TPM_UNAVAILABLE",
    `TPM path "${path}" is neither a device (/dev/tpmrm0) nor host:port of a swtpm nor a TCTI config string`,
  );
}

function handleHex(h: number): string {
  return `0x${(h >>> 0).toString(16).padStart(8, "0")}`;
}

/** Hints, per error code, for the step that failed. */
type Hints = Partial<Record<string, string>>;

/** Run one ESAPI step; a TssCallError becomes a one-line TpmError naming what to check and the decoded rc. */
function step<T>(path: string, what: string, hints: Hints, fn: () => T): T {
  try {
    return fn();
  } catch (e) {
    throw asTpmError(path, what, hints, e);
  }
}

function asTpmError(path: string, what: string, hints: Hints, e: unknown): unknown {
  if (!(e instanceof TssCallError)) return e;
  const d = decodeRc(e.rc);
  const code = codeForRc(d);
  const hint =
    hints[code] ??
    {
      TPM_UNAVAILABLE: `check that a TPM answers at "${path}" (the device exists and is readable, or swtpm listens there)`,
      TPM_LOCKOUT: "the TPM is in dictionary-attack lockout: wait for recovery or run tpm2_dictionarylockout --clear-lockout",
      TPM_AUTH_FAILED: "check the password",
      TPM_POLICY_FAILED: "check the policy the key was bound to",
      TPM_NO_OBJECT: "check the handle (tpm2_getcap handles-persistent)",
    }[code] ??
    "see the response code";
  return new TpmError(code, `${what} failed (${describeRc(d)}): ${hint}`, { cause: e, rc: d.rc, rcName: d.name });
}

/** Name bytes as hex (no TPM2B size prefix). */
function nameHex(tpm2bName: Uint8Array): string {
  return toHex(new WireReader(tpm2bName).tpm2b());
}

function normaliseNameHex(s: string): string {
  return s.replace(/^0x/i, "").replace(/[\s:]/g, "").toLowerCase();
}

const SELF_TEST_DATA = new TextEncoder().encode("gce-metadata-server TPM signer self-test");

/**
 * Which sessions authorise a command and which one encrypts its parameters. With an EK-salted session, that
 * session is also the HMAC authorisation for objects that take a password, so no password crosses the bus in
 * clear; without one, passwords go as plain password sessions.
 */
class Sessions {
  constructor(
    private readonly esys: EsysContext,
    /** The EK-salted HMAC session with AES-128-CFB parameter encryption, when sessionEncryptWithName is set. */
    readonly encrypt: number | undefined,
  ) {}

  /** Authorisation for an object or hierarchy whose auth value is set: the salted session, or a password. */
  auth(paramFlags: number): number {
    if (this.encrypt === undefined) return ESYS_TR_PASSWORD;
    this.esys.setSessionAttributes(this.encrypt, TPMA_SESSION_CONTINUESESSION | paramFlags);
    return this.encrypt;
  }

  /** The salted session as a pure parameter-encryption session beside another authorisation, or none. */
  beside(paramFlags: number): number {
    if (this.encrypt === undefined) return ESYS_TR_NONE;
    this.esys.setSessionAttributes(this.encrypt, TPMA_SESSION_CONTINUESESSION | paramFlags);
    return this.encrypt;
  }
}

const DECRYPT = TPMA_SESSION_DECRYPT; // the command's first parameter travels encrypted
const ENCRYPT = TPMA_SESSION_ENCRYPT; // the response's first parameter travels encrypted

class Signer implements TpmSigner {
  readonly publicKey: KeyObject;
  readonly fingerprint: string;
  private queue: Promise<unknown> = Promise.resolve();
  private closed = false;
  /** A failed policy authorisation leaves the session's digest half-built: restart it before the next use. */
  private policyDirty = false;
  private readonly schemeC = toC("TPMT_SIG_SCHEME", SCHEME_RSASSA_SHA256);
  private readonly validationC = toC("TPMT_TK_HASHCHECK", NULL_HASHCHECK);
  private readonly emptyDigest = tpm2bDigest(new Uint8Array());
  private readonly signHints: Hints;
  private readonly keyName: string;

  constructor(
    private readonly esys: EsysContext,
    private readonly opts: TpmOptions,
    private readonly key: number,
    private readonly keyIsPersistent: boolean,
    private readonly sessions: Sessions,
    private readonly policy: { session: number; pcrs: number[]; selection: Uint8Array } | undefined,
    publicKey: KeyObject,
  ) {
    this.publicKey = publicKey;
    this.fingerprint = createHash("sha256")
      .update(publicKey.export({ type: "spki", format: "der" }))
      .digest("hex");
    this.keyName = keyIsPersistent ? `the key at ${handleHex(opts.persistentHandle!)}` : `the key in ${opts.keyfile}`;
    this.signHints = {
      TPM_AUTH_FAILED: opts.keyPass === undefined ? "the key has a password: pass keyPass" : "the key password is wrong: check keyPass",
      TPM_POLICY_FAILED: policy
        ? `the key's policy is not satisfied: PCRs sha256:${policy.pcrs.join(",")} no longer hold the values the key was bound to (compare tpm2_pcrread), or pcrs does not list exactly the key's PCRs`
        : "the key takes no password, only its policy: pass the pcrs it is bound to",
      TPM_NO_OBJECT: "the key is no longer loaded in the TPM (evicted, or the TPM was reset): restart the server",
    };
  }

  sign(data: Uint8Array): Promise<Uint8Array> {
    const digest = createHash("sha256").update(data).digest();
    return this.serialise(() => this.signDigest(digest));
  }

  /** Every ESAPI call goes through here, one after another. */
  private serialise<T>(fn: () => T): Promise<T> {
    const run = this.queue.then(() => {
      if (this.closed) throw new TpmError("TPM_CLOSED", "the TPM signer is closed: open a new one");
      try {
        return fn();
      } catch (e) {
        throw asTpmError(this.opts.path, `signing with ${this.keyName}`, {}, e);
      }
    });
    this.queue = run.catch(() => undefined);
    return run;
  }

  /** TPM2_Sign of a SHA-256 digest; returns the raw RSASSA signature. Synchronous: call through serialise(). */
  signDigest(digest: Uint8Array): Uint8Array {
    const { esys, opts, policy, sessions } = this;
    const path = opts.path;
    const digestC = toC("TPM2B_DIGEST", tpm2bDigest(digest));
    let s1: number;
    let s2: number;
    if (policy) {
      const session = policy.session;
      if (this.policyDirty) step(path, "restarting the PCR policy session", {}, () => esys.policyRestart(session));
      this.policyDirty = true;
      step(path, `TPM2_PolicyPCR over sha256:${policy.pcrs.join(",")}`, {}, () =>
        esys.policyPcr(session, this.emptyDigest, policy.selection),
      );
      if (opts.keyPass !== undefined) step(path, "TPM2_PolicyAuthValue", {}, () => esys.policyAuthValue(session));
      s1 = session;
      s2 = sessions.beside(DECRYPT);
    } else {
      s1 = sessions.auth(DECRYPT);
      s2 = ESYS_TR_NONE;
    }
    const sigWire = step(path, `TPM2_Sign with ${this.keyName}`, this.signHints, () =>
      esys.sign(this.key, s1, s2, digestC, this.schemeC, this.validationC),
    );
    this.policyDirty = false; // a successful use resets the policy session's digest
    // TPMT_SIGNATURE: sigAlg, hash, TPM2B_PUBLIC_KEY_RSA
    const r = new WireReader(sigWire);
    const sigAlg = r.u16();
    const hash = r.u16();
    if (sigAlg !== TPM2_ALG_RSASSA || hash !== TPM2_ALG_SHA256) {
      throw new TpmError("TPM_BAD_KEY", `TPM2_Sign returned scheme 0x${sigAlg.toString(16)}/0x${hash.toString(16)}, not RSASSA/SHA-256`);
    }
    return r.tpm2b().slice();
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    const flush = [
      ...(this.policy ? [this.policy.session] : []),
      ...(this.sessions.encrypt !== undefined ? [this.sessions.encrypt] : []),
      ...(this.keyIsPersistent ? [] : [this.key]),
    ];
    closeQuietly(this.esys, flush, this.keyIsPersistent ? [this.key] : []);
  }
}

/** Flush what we created, forget what we only referenced, finalize. Never throws. */
function closeQuietly(esys: EsysContext, flush: number[], forget: number[] = []): void {
  for (const h of flush) {
    try {
      esys.flush(h);
    } catch {
      // the TPM may be gone; finalizing still frees our side
    }
  }
  for (const h of forget) {
    try {
      esys.forget(h);
    } catch {
      // nothing to release on the TPM
    }
  }
  esys.close();
}

/** Handles made while opening, released in reverse if opening fails. */
class Acquired {
  private readonly flushes: number[] = [];
  private readonly forgets: number[] = [];
  constructor(private readonly esys: EsysContext) {}
  flushLater(h: number): number {
    this.flushes.push(h);
    return h;
  }
  forgetLater(h: number): number {
    this.forgets.push(h);
    return h;
  }
  /** Flush one now (it is no longer needed). */
  flushNow(h: number): void {
    this.flushes.splice(this.flushes.indexOf(h), 1);
    this.esys.flush(h);
  }
  forgetNow(h: number): void {
    this.forgets.splice(this.forgets.indexOf(h), 1);
    this.esys.forget(h);
  }
  releaseAll(): void {
    closeQuietly(this.esys, [...this.flushes].reverse(), this.forgets);
  }
}

/** The RSA public key of a TPM2B_PUBLIC, after checking it is an unrestricted RSA signing key usable for RS256. */
function rsaSigningKey(outPublic: Uint8Array, what: string): KeyObject {
  const area = parsePublic(outPublic);
  if (area.type !== TPM2_ALG_RSA || !area.rsa) {
    throw new TpmError(
      "TPM_BAD_KEY",
      `${what} is not an RSA key (TPM_ALG 0x${area.type.toString(16)}): the metadata server signs RS256 and needs an RSA-2048 signing key`,
    );
  }
  if (!(area.attributes & TPMA_OBJECT_SIGN_ENCRYPT) || area.attributes & TPMA_OBJECT_RESTRICTED) {
    throw new TpmError(
      "TPM_BAD_KEY",
      `${what} is not an unrestricted signing key (attributes 0x${area.attributes.toString(16)}): import or create it with the "sign" attribute and without "restricted"`,
    );
  }
  const { scheme, schemeHash, exponent, modulus } = area.rsa;
  if (!(scheme === TPM2_ALG_NULL || (scheme === TPM2_ALG_RSASSA && schemeHash === TPM2_ALG_SHA256))) {
    throw new TpmError(
      "TPM_BAD_KEY",
      `${what} is fixed to signing scheme 0x${scheme.toString(16)}/0x${schemeHash.toString(16)}: RS256 needs scheme null or rsassa with sha256`,
    );
  }
  const e = Buffer.alloc(4);
  e.writeUInt32BE(exponent);
  let i = 0;
  while (i < 3 && e[i] === 0) i++;
  return createPublicKey({
    key: { kty: "RSA", n: Buffer.from(modulus).toString("base64url"), e: e.subarray(i).toString("base64url") },
    format: "jwk",
  });
}

async function readKeyfile(path: string): Promise<Tss2PrivateKey> {
  let pem: string;
  try {
    pem = await readFile(path, "utf8");
  } catch (cause) {
    throw new TpmError("TPM_BAD_KEYFILE", `cannot read keyfile ${path}: ${(cause as Error).message}`, { cause });
  }
  const key = parseTss2PrivateKeyPem(pem, `keyfile ${path}`);
  if (key.rsaParent) {
    throw new TpmError(
      "TPM_BAD_KEYFILE",
      `keyfile ${path} names an RSA storage parent (rsaParent); only the ECC P-256 H-2 parent, a persistent parent or the RSA EK (useEKParent) are supported: re-wrap the key under the H-2 primary`,
    );
  }
  return key;
}

function pcrSelectionOrThrow(pcrs: number[]): Uint8Array {
  try {
    return pcrSelectionSha256(pcrs);
  } catch (cause) {
    throw new TpmError("TPM_POLICY_FAILED", `pcrs ${JSON.stringify(pcrs)}: ${(cause as Error).message}`, { cause });
  }
}

/**
 * Open the TPM at `opts.path`, load or reference the key, check it is an RSA signing key and make one test
 * signature, so anything that would make signing impossible fails here with a TpmError.
 */
export async function openTpmSigner(opts: TpmOptions): Promise<TpmSigner> {
  if ((opts.persistentHandle === undefined) === (opts.keyfile === undefined)) {
    throw new TpmError("TPM_NO_OBJECT", "give exactly one of persistentHandle and keyfile to name the TPM signing key");
  }
  if (opts.useEKParent && opts.keyfile === undefined) {
    throw new TpmError("TPM_BAD_KEYFILE", "useEKParent applies to a keyfile: pass keyfile too");
  }
  const pcrSelection = opts.pcrs?.length ? pcrSelectionOrThrow(opts.pcrs) : undefined;
  const keyfile = opts.keyfile !== undefined ? await readKeyfile(opts.keyfile) : undefined;
  const conf = tctiConfig(opts.path);
  const path = opts.path;

  const esys = step(
    path,
    `opening the TPM at "${path}" (TCTI ${conf})`,
    {
      TPM_UNAVAILABLE: `check that a TPM answers at "${path}" (the device exists and this user can open it, or swtpm listens there) and that its TCTI module is installed (Debian: libtss2-tcti-device0, libtss2-tcti-swtpm0)`,
    },
    () => EsysContext.open(conf),
  );
  const held = new Acquired(esys);
  try {
    // The RSA EK: to check the TPM's identity and salt the encrypted session, or as the keyfile's parent.
    let ek: number | undefined;
    if (opts.sessionEncryptWithName !== undefined || opts.useEKParent) {
      if (opts.useEKParent && opts.parentPass !== undefined) {
        esys.setAuth(ESYS_TR_RH_ENDORSEMENT, tpm2bAuth(opts.parentPass));
      }
      ek = held.flushLater(
        step(
          path,
          "creating the RSA EK (TCG default template) under the endorsement hierarchy",
          { TPM_AUTH_FAILED: "the endorsement hierarchy has a password: pass it as parentPass with useEKParent" },
          () => esys.createPrimary(ESYS_TR_RH_ENDORSEMENT, ESYS_TR_PASSWORD, EMPTY_SENSITIVE_CREATE, RSA_EK_TEMPLATE),
        ).handle,
      );
    }
    let encSession: number | undefined;
    if (opts.sessionEncryptWithName !== undefined) {
      const actual = nameHex(esys.getName(ek!));
      const expected = normaliseNameHex(opts.sessionEncryptWithName);
      if (actual !== expected) {
        throw new TpmError(
          "TPM_EK_MISMATCH",
          `the TPM at "${path}" has RSA EK name ${actual}, not ${expected} from sessionEncryptWithName: this is not the TPM you trust (or the name was read from another TPM); refusing to open`,
        );
      }
      encSession = held.flushLater(
        step(path, "starting the EK-salted encrypted session", {}, () =>
          esys.startAuthSession(ek!, ESYS_TR_NONE, TPM2_SE_HMAC, SYM_AES_128_CFB, TPM2_ALG_SHA256),
        ),
      );
    }
    const sessions = new Sessions(esys, encSession);

    let key: number;
    let what: string;
    const keyIsPersistent = opts.persistentHandle !== undefined;
    if (opts.persistentHandle !== undefined) {
      const handle = opts.persistentHandle;
      what = `the object at persistent handle ${handleHex(handle)}`;
      key = held.forgetLater(
        step(
          path,
          `reading ${what}`,
          { TPM_NO_OBJECT: `there is no object at ${handleHex(handle)}: check persistentHandle against tpm2_getcap handles-persistent` },
          () => esys.fromTpmPublic(handle, sessions.beside(ENCRYPT)),
        ),
      );
    } else {
      what = `the key in ${opts.keyfile}`;
      key = loadKeyfile(esys, held, sessions, opts, keyfile!, ek, what);
    }

    const keyHandle = key;
    const { outPublic } = step(path, `reading the public area of ${what}`, {}, () => esys.readPublic(keyHandle, sessions.beside(ENCRYPT)));
    const publicKey = rsaSigningKey(outPublic, what);
    if (opts.keyPass !== undefined) esys.setAuth(key, tpm2bAuth(opts.keyPass));

    let policy: { session: number; pcrs: number[]; selection: Uint8Array } | undefined;
    if (pcrSelection) {
      // Salted with the trusted EK when encrypting, so the PolicyAuthValue HMAC cannot be attacked offline.
      const salt = encSession !== undefined ? ek! : ESYS_TR_NONE;
      const session = held.flushLater(
        step(path, "starting the PCR policy session", {}, () =>
          esys.startAuthSession(salt, ESYS_TR_NONE, TPM2_SE_POLICY, SYM_NULL, TPM2_ALG_SHA256),
        ),
      );
      esys.setSessionAttributes(session, TPMA_SESSION_CONTINUESESSION);
      policy = { session, pcrs: [...opts.pcrs!], selection: pcrSelection };
    }
    // Sessions keep their keys; the EK itself is no longer needed.
    if (ek !== undefined) held.flushNow(ek);

    const signer = new Signer(esys, opts, key, keyIsPersistent, sessions, policy, publicKey);
    // One real signature now, so a wrong password or a broken PCR policy shows up at open, not at first token.
    const sig = signer.signDigest(createHash("sha256").update(SELF_TEST_DATA).digest());
    if (!verify("sha256", SELF_TEST_DATA, publicKey, sig)) {
      throw new TpmError(
        "TPM_BAD_KEY",
        `the test signature of ${what} does not verify with its public key: the TPM object is not the key it claims to be`,
      );
    }
    return signer;
  } catch (e) {
    held.releaseAll();
    throw asTpmError(path, `opening the TPM signer at "${path}"`, {}, e);
  }
}

/** Load a TSS2 keyfile under its parent (H-2 primary, persistent parent, or the RSA EK); returns the key's ESYS_TR. */
function loadKeyfile(
  esys: EsysContext,
  held: Acquired,
  sessions: Sessions,
  opts: TpmOptions,
  kf: Tss2PrivateKey,
  ek: number | undefined,
  what: string,
): number {
  const path = opts.path;
  let parent: number;
  let parentWhat: string;
  let release: () => void;
  if (opts.useEKParent) {
    parent = ek!;
    parentWhat = "the RSA EK";
    release = () => {}; // flushed by the caller once the sessions that it salts are started
  } else if (kf.parent === TPM2_RH_OWNER) {
    if (opts.parentPass !== undefined) esys.setAuth(ESYS_TR_RH_OWNER, tpm2bAuth(opts.parentPass));
    parent = held.flushLater(
      step(
        path,
        "creating the H-2 ECC P-256 storage primary under the owner hierarchy",
        {
          TPM_AUTH_FAILED:
            opts.parentPass === undefined
              ? "the owner hierarchy has a password: pass it as parentPass"
              : "the owner hierarchy password is wrong: check parentPass",
        },
        () => esys.createPrimary(ESYS_TR_RH_OWNER, sessions.auth(DECRYPT | ENCRYPT), EMPTY_SENSITIVE_CREATE, H2_SRK_TEMPLATE),
      ).handle,
    );
    parentWhat = "the H-2 primary";
    const p = parent;
    release = () => held.flushNow(p);
  } else if (kf.parent >>> 24 === 0x81) {
    const ph = kf.parent;
    parent = held.forgetLater(
      step(
        path,
        `reading the keyfile's parent at ${handleHex(ph)}`,
        { TPM_NO_OBJECT: `the keyfile's parent ${handleHex(ph)} is not in this TPM: check tpm2_getcap handles-persistent` },
        () => esys.fromTpmPublic(ph, sessions.beside(ENCRYPT)),
      ),
    );
    if (opts.parentPass !== undefined) esys.setAuth(parent, tpm2bAuth(opts.parentPass));
    parentWhat = `the persistent parent ${handleHex(ph)}`;
    const p = parent;
    release = () => held.forgetNow(p);
  } else {
    throw new TpmError(
      "TPM_BAD_KEYFILE",
      `keyfile ${opts.keyfile} names parent ${handleHex(kf.parent)}: expected 0x40000001 (owner, H-2 primary) or a persistent 0x81xxxxxx handle`,
    );
  }

  const authHints: Hints = {
    TPM_AUTH_FAILED: opts.useEKParent
      ? "the endorsement hierarchy password is wrong or missing: check parentPass"
      : "the parent's password is wrong or missing: check parentPass",
  };
  let s1: number;
  let s2: number;
  let ekPolicy: number | undefined;
  if (opts.useEKParent) {
    // The EK's authPolicy is PolicySecret(TPM_RH_ENDORSEMENT).
    ekPolicy = held.flushLater(
      step(path, "starting the policy session for the EK", {}, () =>
        esys.startAuthSession(ESYS_TR_NONE, ESYS_TR_NONE, TPM2_SE_POLICY, SYM_NULL, TPM2_ALG_SHA256),
      ),
    );
    const session = ekPolicy;
    step(path, "TPM2_PolicySecret(endorsement) for the EK parent", authHints, () =>
      esys.policySecret(ESYS_TR_RH_ENDORSEMENT, session, sessions.auth(0)),
    );
    s1 = session;
    s2 = sessions.beside(DECRYPT | ENCRYPT);
  } else {
    s1 = sessions.auth(DECRYPT | ENCRYPT);
    s2 = ESYS_TR_NONE;
  }
  const p = parent;
  const key = held.flushLater(
    step(
      path,
      `loading ${what} under ${parentWhat}`,
      {
        ...authHints,
        TPM_BAD_KEYFILE:
          "the keyfile was not made under this parent on this TPM: check the TPM, and useEKParent if the key was imported under the EK",
      },
      () => esys.load(p, s1, s2, kf.privkey, kf.pubkey),
    ),
  );
  // The parent is not needed for signing: free its slot now.
  if (ekPolicy !== undefined) held.flushNow(ekPolicy);
  release();
  return key;
}
