/**
 * The sessions that authorise the signer's commands:
 *
 * - the EK-salted HMAC session with AES-128-CFB parameter encryption (`sessionEncryptWithName`), which also
 *   authorises objects that take a password, so no password crosses the bus in clear;
 * - the policy session a key bound to a policy needs. Which policy is read from the key itself: its public area
 *   holds the policy digest (`authPolicy`) and whether a password alone may authorise it (`userWithAuth`). The
 *   shapes the options allow are computed in software, and the one whose digest equals the key's is replayed
 *   before every signature. The shapes are those the Go emulator's users make: PolicyPCR, PolicyPCR then
 *   PolicyAuthValue, PolicyAuthValue, and tpmcopy's transferred keys, PolicyOR of (PolicyAuthValue or
 *   PolicyPCR) with PolicyDuplicationSelect to the EK.
 */
import { createHash } from "node:crypto";
import { TpmError } from "./error.ts";
import {
  ESYS_TR_NONE,
  ESYS_TR_PASSWORD,
  type EsysContext,
  TPM2_SE_HMAC,
  TPM2_SE_POLICY,
  TPMA_SESSION_CONTINUESESSION,
  TPMA_SESSION_DECRYPT,
  TPMA_SESSION_ENCRYPT,
} from "./ffi.ts";
import { step } from "./step.ts";
import {
  parseTpmlDigest,
  pcrSelectionSha256,
  pcrsSelectedSha256,
  SYM_AES_128_CFB,
  SYM_NULL,
  TPM2_ALG_SHA256,
  TPM2_CC_POLICY_AUTHVALUE,
  TPM2_CC_POLICY_DUPLICATIONSELECT,
  TPM2_CC_POLICY_OR,
  TPM2_CC_POLICY_PCR,
  toHex,
  tpm2bDigest,
  tpmlDigest,
  WireWriter,
} from "./wire.ts";

export const DECRYPT = TPMA_SESSION_DECRYPT; // the command's first parameter travels encrypted
export const ENCRYPT = TPMA_SESSION_ENCRYPT; // the response's first parameter travels encrypted

/**
 * Which sessions authorise a command and which one encrypts its parameters. With an EK-salted session, that
 * session is also the HMAC authorisation for objects that take a password; without one, passwords go as plain
 * password sessions.
 */
export class Sessions {
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

/** TPM2_StartAuthSession of the HMAC session salted with the EK, encrypting parameters with AES-128-CFB. */
export function startSaltedSession(esys: EsysContext, path: string, ek: number): number {
  return step(path, "starting the EK-salted encrypted session", {}, () =>
    esys.startAuthSession(ek, ESYS_TR_NONE, TPM2_SE_HMAC, SYM_AES_128_CFB, TPM2_ALG_SHA256),
  );
}

// ---- policy shapes ------------------------------------------------------------------------------------------

const sha256 = (...parts: Uint8Array[]): Uint8Array => {
  const h = createHash("sha256");
  for (const p of parts) h.update(p);
  return new Uint8Array(h.digest());
};
const u32 = (v: number): Uint8Array => new WireWriter().u32(v).done();
const ZERO_DIGEST = new Uint8Array(32);

/** policyDigest extended by one command, as the TPM does in a policy or trial session. */
function extend(old: Uint8Array, cc: number, ...params: Uint8Array[]): Uint8Array {
  return sha256(old, u32(cc), ...params);
}

/** TPM2_PolicyPCR from a fresh session: H(0 ‖ CC ‖ TPML_PCR_SELECTION ‖ H(selected PCR values)). */
export function policyPcrDigest(selection: Uint8Array, pcrDigest: Uint8Array): Uint8Array {
  return extend(ZERO_DIGEST, TPM2_CC_POLICY_PCR, selection, pcrDigest);
}

/** TPM2_PolicyAuthValue after `old` (TPM2_PolicyPassword extends the digest the same way). */
export function policyAuthValueDigest(old: Uint8Array = ZERO_DIGEST): Uint8Array {
  return extend(old, TPM2_CC_POLICY_AUTHVALUE);
}

/** TPM2_PolicyDuplicationSelect to `newParentName` (Name bytes), includeObject clear, from a fresh session. */
export function policyDuplicationSelectDigest(newParentName: Uint8Array): Uint8Array {
  return extend(ZERO_DIGEST, TPM2_CC_POLICY_DUPLICATIONSELECT, newParentName, new Uint8Array([0]));
}

/** TPM2_PolicyOR of `branches`: the session's digest is reset, then extended with every branch. */
export function policyOrDigest(branches: readonly Uint8Array[]): Uint8Array {
  return extend(ZERO_DIGEST, TPM2_CC_POLICY_OR, ...branches);
}

/** The options a shape needs. */
type Need = "pcrs" | "keyPass" | "useEKParent";

/** One policy a key may be bound to, with its digest for the PCR values read now. */
export interface PolicyShape {
  /** e.g. "PolicyOR(PolicyAuthValue | PolicyDuplicationSelect(EK))". */
  label: string;
  /** The options that select this shape. */
  needs: readonly Need[];
  digest: Uint8Array;
  /** What the session runs, in order: PolicyPCR, PolicyAuthValue, then PolicyOR of these branches. */
  pcr: boolean;
  authValue: boolean;
  or?: readonly Uint8Array[];
}

/** What the options say, and what the key and the TPM say, for choosing the policy. */
export interface PolicyInputs {
  /** The key's authPolicy (empty when it has none). */
  authPolicy: Uint8Array;
  /** TPMA_OBJECT_USERWITHAUTH: the key's password alone may authorise it. */
  userWithAuth: boolean;
  /** The `pcrs` option, with the digest of those PCRs' current SHA-256 values. */
  pcrs?: { list: readonly number[]; selection: Uint8Array; digest: Uint8Array };
  keyPass: boolean;
  useEKParent: boolean;
  /** The RSA EK's Name bytes, when the EK was created (useEKParent or sessionEncryptWithName). */
  ekName?: Uint8Array;
  /** "the key in key.pem", for messages. */
  what: string;
}

/** Every shape the key could be checked against: the PCR ones need the pcrs option, the tpmcopy ones the EK. */
export function policyShapes(i: Pick<PolicyInputs, "pcrs" | "ekName">): PolicyShape[] {
  const shapes: PolicyShape[] = [];
  const dupSelect = i.ekName ? policyDuplicationSelectDigest(i.ekName) : undefined;
  if (i.pcrs) {
    const pcrLabel = `PolicyPCR(sha256:${i.pcrs.list.join(",")})`;
    const pcr = policyPcrDigest(i.pcrs.selection, i.pcrs.digest);
    shapes.push({ label: pcrLabel, needs: ["pcrs"], digest: pcr, pcr: true, authValue: false });
    shapes.push({
      label: `${pcrLabel} then PolicyAuthValue`,
      needs: ["pcrs", "keyPass"],
      digest: policyAuthValueDigest(pcr),
      pcr: true,
      authValue: true,
    });
    if (dupSelect) {
      const or = [pcr, dupSelect];
      shapes.push({
        label: `PolicyOR(${pcrLabel} | PolicyDuplicationSelect(EK))`,
        needs: ["pcrs", "useEKParent"],
        digest: policyOrDigest(or),
        pcr: true,
        authValue: false,
        or,
      });
    }
  }
  const authValue = policyAuthValueDigest();
  shapes.push({ label: "PolicyAuthValue", needs: ["keyPass"], digest: authValue, pcr: false, authValue: true });
  if (dupSelect) {
    const or = [authValue, dupSelect];
    shapes.push({
      label: "PolicyOR(PolicyAuthValue | PolicyDuplicationSelect(EK))",
      needs: ["keyPass", "useEKParent"],
      digest: policyOrDigest(or),
      pcr: false,
      authValue: true,
      or,
    });
  }
  return shapes;
}

function given(i: PolicyInputs): Set<Need> {
  const s = new Set<Need>();
  if (i.pcrs) s.add("pcrs");
  if (i.keyPass) s.add("keyPass");
  if (i.useEKParent) s.add("useEKParent");
  return s;
}

/** A shape the options select: it needs every option given that selects a policy. pcrs means a PCR shape. */
function allowed(shape: PolicyShape, have: Set<Need>): boolean {
  return shape.needs.every((n) => have.has(n)) && have.has("pcrs") === shape.pcr;
}

const equal = (a: Uint8Array, b: Uint8Array): boolean => a.byteLength === b.byteLength && a.every((x, k) => x === b[k]);
const short = (d: Uint8Array): string => `${toHex(d).slice(0, 16)}…`;
const opts = (needs: readonly Need[]): string => needs.join("+");

/**
 * How the key is authorised: by its password (or the salted HMAC session), or by the policy shape whose digest
 * equals its authPolicy. Throws TpmError TPM_POLICY_FAILED saying which shapes were tried with which options, and
 * whether the options do not fit the key (another shape matches) or the PCRs may have changed.
 */
export function choosePolicy(i: PolicyInputs): { kind: "auth" } | { kind: "policy"; shape: PolicyShape } {
  const have = given(i);
  if (!i.pcrs && i.userWithAuth) return { kind: "auth" };
  const keyDigest = toHex(i.authPolicy);
  if (i.authPolicy.byteLength === 0) {
    if (!i.userWithAuth) {
      throw new TpmError(
        "TPM_BAD_KEY",
        `${i.what} has neither a policy nor userWithAuth, so nothing can authorise it to sign: re-import it with one of them`,
      );
    }
    throw new TpmError(
      "TPM_POLICY_FAILED",
      `${i.what} has no policy (empty authPolicy), so it is not bound to PCRs: the options do not fit this key; drop pcrs`,
    );
  }
  const shapes = policyShapes(i);
  const chosen = shapes.find((s) => allowed(s, have) && equal(s.digest, i.authPolicy));
  if (chosen) return { kind: "policy", shape: chosen };

  const alone = i.userWithAuth ? "" : " and takes no password alone (userWithAuth clear)";
  const fits = shapes.find((s) => equal(s.digest, i.authPolicy));
  if (fits) {
    const add = fits.needs.filter((n) => !have.has(n));
    const fix = [...(add.length ? [`pass ${add.join(" and ")}`] : []), ...(have.has("pcrs") && !fits.pcr ? ["drop pcrs"] : [])];
    throw new TpmError(
      "TPM_POLICY_FAILED",
      `the options do not fit ${i.what}: its policy is ${fits.label} (digest ${keyDigest}), which needs ${opts(fits.needs)}, and ${have.size ? opts([...have]) : "none of pcrs, keyPass, useEKParent"} ${have.size === 1 ? "was" : "were"} given: ${fix.join(" and ")}`,
    );
  }
  const tried = shapes.filter((s) => allowed(s, have)).map((s) => `${s.label} with ${opts(s.needs)} = ${short(s.digest)}`);
  const triedText = tried.length ? `tried ${tried.join("; ")}` : "none was tried: pcrs or keyPass chooses one";
  if (i.pcrs) {
    const list = i.pcrs.list.join(",");
    throw new TpmError(
      "TPM_POLICY_FAILED",
      `${i.what} has policy digest ${keyDigest}${alone}, and no policy the options allow gives it (${triedText}); PCRs sha256:${list} now hash to ${toHex(i.pcrs.digest)}: either they no longer hold the values the key was bound to (compare tpm2_pcrread sha256:${list} with the values it was made for), or the key is bound to other PCRs or another policy${i.useEKParent ? "" : " (a key transferred with tpmcopy also needs useEKParent)"}`,
    );
  }
  throw new TpmError(
    "TPM_POLICY_FAILED",
    `${i.what} has policy digest ${keyDigest}${alone}, and no policy the options allow gives it (${triedText}): if it is bound to PCRs, pass the pcrs it is bound to${i.useEKParent ? "" : " (a key transferred with tpmcopy also needs useEKParent)"}; if to a password policy, pass keyPass`,
  );
}

/** SHA-256 of the current SHA-256-bank values of `pcrs` (ascending), as TPM2_PolicyPCR hashes them. */
export function readPcrDigest(esys: EsysContext, path: string, pcrs: readonly number[]): Uint8Array {
  const values = new Map<number, Uint8Array>();
  let remaining = [...pcrs];
  while (remaining.length) {
    const want = remaining;
    const out = step(path, `TPM2_PCR_Read of sha256:${want.join(",")}`, {}, () => esys.pcrRead(pcrSelectionSha256(want)));
    const got = pcrsSelectedSha256(out.selection);
    const digests = parseTpmlDigest(out.values);
    if (got.length === 0 || got.length !== digests.length) {
      throw new TpmError(
        "TPM_POLICY_FAILED",
        `the TPM at "${path}" returned no SHA-256 values for PCRs sha256:${want.join(",")}: check that its SHA-256 PCR bank is active (tpm2_getcap pcrs)`,
      );
    }
    for (const [k, p] of got.entries()) values.set(p, digests[k]!);
    remaining = remaining.filter((p) => !values.has(p));
  }
  return sha256(...[...pcrs].sort((a, b) => a - b).map((p) => values.get(p)!));
}

/** The policy session of a policy-bound key, replayed before each use. Its commands throw TssCallError. */
export class PolicySession {
  /** A failed authorisation leaves the session's digest half-built: restart it before the next use. */
  private dirty = false;
  private readonly emptyDigest = tpm2bDigest(new Uint8Array());
  private readonly orList: Uint8Array | undefined;
  /** The command last sent, for the message when one fails. */
  command = "";

  constructor(
    private readonly esys: EsysContext,
    readonly handle: number,
    readonly shape: PolicyShape,
    /** The PCRs' TPML_PCR_SELECTION, for PCR shapes. */
    private readonly selection: Uint8Array | undefined,
  ) {
    this.orList = shape.or ? tpmlDigest(shape.or) : undefined;
  }

  /** Start a policy session, salted with the EK when encrypting (so PolicyAuthValue's HMAC cannot be attacked offline). */
  static start(esys: EsysContext, path: string, salt: number): number {
    const session = step(path, "starting the policy session", {}, () =>
      esys.startAuthSession(salt, ESYS_TR_NONE, TPM2_SE_POLICY, SYM_NULL, TPM2_ALG_SHA256),
    );
    try {
      esys.setSessionAttributes(session, TPMA_SESSION_CONTINUESESSION);
    } catch (e) {
      esys.flush(session);
      throw e;
    }
    return session;
  }

  /** Replay the shape's commands; returns the session to authorise the key with. */
  run(): number {
    const { esys, handle, shape } = this;
    if (this.dirty) {
      this.command = "restarting the policy session";
      esys.policyRestart(handle);
    }
    this.dirty = true;
    if (shape.pcr) {
      this.command = `TPM2_PolicyPCR of ${shape.label}`;
      esys.policyPcr(handle, this.emptyDigest, this.selection!);
    }
    if (shape.authValue) {
      this.command = `TPM2_PolicyAuthValue of ${shape.label}`;
      esys.policyAuthValue(handle);
    }
    if (this.orList) {
      this.command = `TPM2_PolicyOR of ${shape.label}`;
      esys.policyOr(handle, this.orList);
    }
    return handle;
  }

  /** A successful use resets the session's digest. */
  used(): void {
    this.dirty = false;
  }
}
