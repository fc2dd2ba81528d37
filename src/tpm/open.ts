/**
 * Opening the TPM key: the ESAPI context over its TCTI, the RSA EK when it is needed (to check the TPM's
 * identity, to salt the encrypted session, as the keyfile's parent, or as the new parent a transferred key's
 * policy names), the key itself (a persistent handle, or a TSS2 keyfile loaded under its parent), and the checks
 * that it is an RSA key that can sign RS256.
 */
import { createPublicKey, type KeyObject } from "node:crypto";
import { readFile } from "node:fs/promises";
import { TpmError } from "./error.ts";
import { ESYS_TR_NONE, ESYS_TR_PASSWORD, ESYS_TR_RH_ENDORSEMENT, ESYS_TR_RH_OWNER, EsysContext, TPM2_SE_POLICY } from "./ffi.ts";
import { parseTss2PrivateKeyPem, type Tss2PrivateKey } from "./keyfile.ts";
import { DECRYPT, ENCRYPT, Sessions, startSaltedSession } from "./sessions.ts";
import type { TpmOptions } from "./signer.ts";
import { handleHex, type Hints, step } from "./step.ts";
import { tctiConfig } from "./tcti.ts";
import { H2_SRK_TEMPLATE, RSA_EK_TEMPLATE } from "./templates.ts";
import {
  EMPTY_SENSITIVE_CREATE,
  type PublicArea,
  parsePublic,
  pcrSelectionSha256,
  SYM_NULL,
  TPM2_ALG_NULL,
  TPM2_ALG_RSA,
  TPM2_ALG_RSASSA,
  TPM2_ALG_SHA256,
  TPM2_RH_OWNER,
  TPMA_OBJECT_RESTRICTED,
  TPMA_OBJECT_SIGN_ENCRYPT,
  toHex,
  tpm2bAuth,
  WireReader,
} from "./wire.ts";

/** Flush what we created, forget what we only referenced, finalize. Never throws. */
export function closeQuietly(esys: EsysContext, flush: number[], forget: number[] = []): void {
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
export class Acquired {
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

/** The key once opened: what the policy and the signing steps need. */
export interface OpenedKey {
  esys: EsysContext;
  held: Acquired;
  sessions: Sessions;
  /** ESYS_TR of the key. */
  key: number;
  keyIsPersistent: boolean;
  /** "the key in key.pem" or "the key at 0x81010002", for messages. */
  what: string;
  area: PublicArea;
  publicKey: KeyObject;
  /** The RSA EK, still loaded (flush it once the sessions it salts are started), and its Name bytes. */
  ek?: { handle: number; name: Uint8Array };
}

/** Checks that need no TPM, then the keyfile read from disk: both fail before the TPM is touched. */
export async function preflight(opts: TpmOptions): Promise<Tss2PrivateKey | undefined> {
  if ((opts.persistentHandle === undefined) === (opts.keyfile === undefined)) {
    throw new TpmError("TPM_NO_OBJECT", "give exactly one of persistentHandle and keyfile to name the TPM signing key");
  }
  if (opts.pcrs?.length) {
    try {
      pcrSelectionSha256(opts.pcrs);
    } catch (cause) {
      throw new TpmError("TPM_POLICY_FAILED", `pcrs ${JSON.stringify(opts.pcrs)}: ${(cause as Error).message}`, { cause });
    }
  }
  const keyfile = opts.keyfile !== undefined ? await readKeyfile(opts.keyfile) : undefined;
  tctiConfig(opts.path);
  return keyfile;
}

/** Open the ESAPI context for `opts.path`. */
export function openContext(path: string): EsysContext {
  const conf = tctiConfig(path);
  return step(
    path,
    `opening the TPM at "${path}" (TCTI ${conf})`,
    {
      TPM_UNAVAILABLE: `check that a TPM answers at "${path}" (the device exists and this user can open it, or swtpm listens there) and that its TCTI module is installed (Debian: libtss2-tcti-device0, libtss2-tcti-swtpm0)`,
    },
    () => EsysContext.open(conf),
  );
}

/**
 * Create the EK if needed, start the encrypted session, load or reference the key, read its public area and check
 * it can sign RS256. Handles go into `held`; the caller releases them if anything later fails.
 */
export function openKey(esys: EsysContext, held: Acquired, opts: TpmOptions, keyfile: Tss2PrivateKey | undefined): OpenedKey {
  const path = opts.path;
  let ek: OpenedKey["ek"];
  if (opts.sessionEncryptWithName !== undefined || opts.useEKParent) {
    if (opts.useEKParent && opts.parentPass !== undefined) esys.setAuth(ESYS_TR_RH_ENDORSEMENT, tpm2bAuth(opts.parentPass));
    const handle = held.flushLater(
      step(
        path,
        "creating the RSA EK (TCG default template) under the endorsement hierarchy",
        { TPM_AUTH_FAILED: "the endorsement hierarchy has a password: pass it as parentPass with useEKParent" },
        () => esys.createPrimary(ESYS_TR_RH_ENDORSEMENT, ESYS_TR_PASSWORD, EMPTY_SENSITIVE_CREATE, RSA_EK_TEMPLATE),
      ).handle,
    );
    ek = { handle, name: new WireReader(esys.getName(handle)).tpm2b().slice() };
  }
  let encSession: number | undefined;
  if (opts.sessionEncryptWithName !== undefined) {
    const actual = toHex(ek!.name);
    const expected = opts.sessionEncryptWithName.replace(/^0x/i, "").replace(/[\s:]/g, "").toLowerCase();
    if (actual !== expected) {
      throw new TpmError(
        "TPM_EK_MISMATCH",
        `the TPM at "${path}" has RSA EK name ${actual}, not ${expected} from sessionEncryptWithName: this is not the TPM you trust (or the name was read from another TPM); refusing to open`,
      );
    }
    encSession = held.flushLater(startSaltedSession(esys, path, ek!.handle));
  }
  const sessions = new Sessions(esys, encSession);

  let key: number;
  let what: string;
  const keyIsPersistent = opts.persistentHandle !== undefined;
  if (opts.persistentHandle !== undefined) {
    const handle = opts.persistentHandle;
    what = `the key at ${handleHex(handle)}`;
    key = held.forgetLater(
      step(
        path,
        `reading the object at persistent handle ${handleHex(handle)}`,
        { TPM_NO_OBJECT: `there is no object at ${handleHex(handle)}: check persistentHandle against tpm2_getcap handles-persistent` },
        () => esys.fromTpmPublic(handle, sessions.beside(ENCRYPT)),
      ),
    );
  } else {
    what = `the key in ${opts.keyfile}`;
    key = loadKeyfile(esys, held, sessions, opts, keyfile!, ek?.handle, what);
  }

  const keyHandle = key;
  const { outPublic } = step(path, `reading the public area of ${what}`, {}, () => esys.readPublic(keyHandle, sessions.beside(ENCRYPT)));
  const area = parsePublic(outPublic);
  const publicKey = rsaSigningKey(area, what);
  if (opts.keyPass !== undefined) esys.setAuth(key, tpm2bAuth(opts.keyPass));
  return { esys, held, sessions, key, keyIsPersistent, what, area, publicKey, ...(ek ? { ek } : {}) };
}

/** The RSA public key of a public area, after checking it is an unrestricted RSA signing key usable for RS256. */
function rsaSigningKey(area: PublicArea, what: string): KeyObject {
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
