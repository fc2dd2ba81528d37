/**
 * Signing with the opened key: TPM2_Sign of a SHA-256 digest (RSASSA-PKCS1-v1_5), authorised by the key's
 * password or its policy session, and the one test signature made at open. Synchronous and not re-entrant: the
 * TPM worker (worker.ts) is its only caller and runs one call at a time.
 */
import { createHash, verify } from "node:crypto";
import { TpmError } from "./error.ts";
import { ESYS_TR_NONE, TssCallError, toC } from "./ffi.ts";
import { Acquired, closeQuietly, type OpenedKey, openContext, openKey, preflight } from "./open.ts";
import { codeForRc, decodeRc, describeRc } from "./rc.ts";
import { choosePolicy, DECRYPT, PolicySession, readPcrDigest } from "./sessions.ts";
import type { TpmOptions } from "./signer.ts";
import { asTpmError, type Hints } from "./step.ts";
import {
  NULL_HASHCHECK,
  pcrSelectionSha256,
  SCHEME_RSASSA_SHA256,
  TPM2_ALG_RSASSA,
  TPM2_ALG_SHA256,
  TPMA_OBJECT_USERWITHAUTH,
  toHex,
  tpm2bDigest,
  WireReader,
} from "./wire.ts";

const SELF_TEST_DATA = new TextEncoder().encode("gce-metadata-server TPM signer self-test");

/** The PCRs a PCR-bound key's policy was matched with, and the digest of their values then. */
interface BoundPcrs {
  list: number[];
  selection: Uint8Array;
  digest: Uint8Array;
}

export class KeySigner {
  private closed = false;
  private readonly schemeC = toC("TPMT_SIG_SCHEME", SCHEME_RSASSA_SHA256);
  private readonly validationC = toC("TPMT_TK_HASHCHECK", NULL_HASHCHECK);
  private readonly signHints: Hints;
  private readonly path: string;

  constructor(
    private readonly k: OpenedKey,
    opts: TpmOptions,
    private readonly policy: PolicySession | undefined,
    private readonly pcrs: BoundPcrs | undefined,
  ) {
    this.path = opts.path;
    this.signHints = {
      TPM_AUTH_FAILED: opts.keyPass === undefined ? "the key has a password: pass keyPass" : "the key password is wrong: check keyPass",
      TPM_POLICY_FAILED: policy
        ? `the key's policy ${policy.shape.label} is not satisfied${pcrs ? ` although PCRs sha256:${pcrs.list.join(",")} hold the values they had when the signer opened` : ""}`
        : "the key takes no password, only its policy: pass the pcrs it is bound to",
      TPM_NO_OBJECT: "the key is no longer loaded in the TPM (evicted, or the TPM was reset): restart the server",
    };
  }

  get publicKey() {
    return this.k.publicKey;
  }

  /** TPM2_Sign of a SHA-256 digest; returns the raw RSASSA signature. */
  signDigest(digest: Uint8Array): Uint8Array {
    if (this.closed) throw new TpmError("TPM_CLOSED", "the TPM signer is closed: open a new one");
    const { esys, sessions, key, what } = this.k;
    const policy = this.policy;
    let command = `TPM2_Sign with ${what}`;
    let sigWire: Uint8Array;
    try {
      const digestC = toC("TPM2B_DIGEST", tpm2bDigest(digest));
      let s1: number;
      let s2: number;
      if (policy) {
        try {
          s1 = policy.run();
        } catch (e) {
          command = policy.command;
          throw e;
        }
        s2 = sessions.beside(DECRYPT);
      } else {
        s1 = sessions.auth(DECRYPT);
        s2 = ESYS_TR_NONE;
      }
      sigWire = esys.sign(key, s1, s2, digestC, this.schemeC, this.validationC);
      policy?.used();
    } catch (e) {
      throw this.explain(command, e);
    }
    // TPMT_SIGNATURE: sigAlg, hash, TPM2B_PUBLIC_KEY_RSA
    const r = new WireReader(sigWire);
    const sigAlg = r.u16();
    const hash = r.u16();
    if (sigAlg !== TPM2_ALG_RSASSA || hash !== TPM2_ALG_SHA256) {
      throw new TpmError("TPM_BAD_KEY", `TPM2_Sign returned scheme 0x${sigAlg.toString(16)}/0x${hash.toString(16)}, not RSASSA/SHA-256`);
    }
    return r.tpm2b().slice();
  }

  /**
   * A failed policy command or signature of a PCR-bound key: when the PCRs no longer hash to what they did at
   * open (the digest the key's policy was matched with), say so, with both digests.
   */
  private explain(command: string, e: unknown): unknown {
    if (!(e instanceof TssCallError)) return asTpmError(this.path, `signing with ${this.k.what}`, {}, e);
    const d = decodeRc(e.rc);
    const pcrs = this.pcrs;
    const code = codeForRc(d);
    if (pcrs && (code === "TPM_POLICY_FAILED" || code === "TPM_ERROR")) {
      let now: Uint8Array | undefined;
      try {
        now = readPcrDigest(this.k.esys, this.path, pcrs.list);
      } catch {
        // the TPM cannot say: report the failure as it is
      }
      if (now && toHex(now) !== toHex(pcrs.digest)) {
        const list = pcrs.list.join(",");
        return new TpmError(
          "TPM_POLICY_FAILED",
          `${command} failed (${describeRc(d)}): the PCR values changed: PCRs sha256:${list} now hash to ${toHex(now)}, but the policy of ${this.k.what}, ${this.policy!.shape.label}, needs ${toHex(pcrs.digest)} (their values when the signer opened): restore them (compare tpm2_pcrread sha256:${list}), or bind the key to the new values`,
          { cause: e, rc: d.rc, rcName: d.name },
        );
      }
    }
    return asTpmError(this.path, command, this.signHints, e);
  }

  /** Flush the key and sessions made at open, finalize the ESAPI context and TCTI. Idempotent. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    const { esys, sessions, key, keyIsPersistent } = this.k;
    const flush = [
      ...(this.policy ? [this.policy.handle] : []),
      ...(sessions.encrypt !== undefined ? [sessions.encrypt] : []),
      ...(keyIsPersistent ? [] : [key]),
    ];
    closeQuietly(esys, flush, keyIsPersistent ? [key] : []);
  }
}

/**
 * Open the TPM at `opts.path`, load or reference the key, check it is an RSA signing key, choose how it is
 * authorised, and make one test signature, so anything that would make signing impossible fails here.
 */
export async function openKeySigner(opts: TpmOptions): Promise<KeySigner> {
  const keyfile = await preflight(opts);
  const path = opts.path;
  const esys = openContext(path);
  const held = new Acquired(esys);
  try {
    const k = openKey(esys, held, opts, keyfile);
    const list = opts.pcrs?.length ? [...new Set(opts.pcrs)].sort((a, b) => a - b) : undefined;
    const pcrs = list ? { list, selection: pcrSelectionSha256(list), digest: readPcrDigest(esys, path, list) } : undefined;
    const plan = choosePolicy({
      authPolicy: k.area.authPolicy,
      userWithAuth: (k.area.attributes & TPMA_OBJECT_USERWITHAUTH) !== 0,
      ...(pcrs ? { pcrs } : {}),
      keyPass: opts.keyPass !== undefined,
      useEKParent: opts.useEKParent === true,
      ...(k.ek ? { ekName: k.ek.name } : {}),
      what: k.what,
    });
    let policy: PolicySession | undefined;
    if (plan.kind === "policy") {
      const salt = k.sessions.encrypt !== undefined ? k.ek!.handle : ESYS_TR_NONE;
      const handle = held.flushLater(PolicySession.start(esys, path, salt));
      policy = new PolicySession(esys, handle, plan.shape, pcrs?.selection);
    }
    // Sessions keep their keys; the EK itself is no longer needed.
    if (k.ek) held.flushNow(k.ek.handle);
    const signer = new KeySigner(k, opts, policy, policy?.shape.pcr ? pcrs : undefined);
    // One real signature now, so a wrong password or an unsatisfied policy shows up at open, not at first token.
    const sig = signer.signDigest(createHash("sha256").update(SELF_TEST_DATA).digest());
    if (!verify("sha256", SELF_TEST_DATA, k.publicKey, sig)) {
      throw new TpmError(
        "TPM_BAD_KEY",
        `the test signature of ${k.what} does not verify with its public key: the TPM object is not the key it claims to be`,
      );
    }
    return signer;
  } catch (e) {
    held.releaseAll();
    throw asTpmError(path, `opening the TPM signer at "${path}"`, {}, e);
  }
}
