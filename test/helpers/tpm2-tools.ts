/**
 * Drive tpm2-tools against a swtpm to provision keys the way an operator would, so the signer is tested on
 * objects made by the reference tools, not by itself.
 */
import { createPublicKey, type KeyObject } from "node:crypto";
import { readFileSync, writeFileSync } from "node:fs";
import { mkdtemp, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { requireTpmTools, type Swtpm } from "./swtpm.ts";

/** The attributes of the H-2 ECC P-256 storage primary (TCG EK Credential Profile), as tpm2-tools spells them. */
export const H2_ATTRIBUTES = "fixedtpm|fixedparent|sensitivedataorigin|userwithauth|noda|restricted|decrypt";

/**
 * Tools that load no object and leave no session loaded (a session they start or use is saved to its file), so
 * run() skips looking for leftovers around them (each look is two more processes).
 */
const LEAVE_NOTHING_LOADED = new Set([
  "tpm2_startauthsession",
  "tpm2_flushcontext",
  "tpm2_pcrread",
  "tpm2_pcrextend",
  "tpm2_pcrreset",
  "tpm2_print",
  "tpm2_getcap",
]);

export interface GeneratedKey {
  /** PKCS#8 PEM of the software key (what gets imported). */
  pemPath: string;
  publicKey: KeyObject;
}

export class Tpm2Tools {
  private constructor(
    readonly tpm: Swtpm,
    /** Scratch directory for key blobs, contexts and policies. */
    readonly dir: string,
  ) {}

  static async on(tpm: Swtpm): Promise<Tpm2Tools> {
    requireTpmTools();
    return new Tpm2Tools(tpm, await mkdtemp(join(tpm.dir, "tools-")));
  }

  /**
   * Run a tpm2-tools command against the swtpm; throws with its stderr when it fails. Returns stdout. Without a
   * resource manager a tool can leave objects and sessions it loaded in the TPM's few slots, so the ones a
   * command added are flushed after it (context files are reloaded by the next tool). Objects that were already
   * loaded, such as an open signer's key, are left alone.
   */
  run(tool: string, ...args: string[]): string {
    if (LEAVE_NOTHING_LOADED.has(tool) || tool.startsWith("tpm2_policy")) return this.exec(tool, args);
    const before = new Set([...this.transientHandles(), ...this.loadedSessions()]);
    try {
      return this.exec(tool, args);
    } finally {
      for (const h of [...this.transientHandles(), ...this.loadedSessions()]) {
        if (!before.has(h)) this.exec("tpm2_flushcontext", [h]);
      }
    }
  }

  /** Transient object handles now loaded in the TPM, e.g. "0x80000000". */
  transientHandles(): string[] {
    return this.exec("tpm2_getcap", ["handles-transient"]).match(/0x[0-9a-fA-F]+/g) ?? [];
  }

  /** Sessions now loaded in the TPM. */
  loadedSessions(): string[] {
    return this.exec("tpm2_getcap", ["handles-loaded-session"]).match(/0x[0-9a-fA-F]+/g) ?? [];
  }

  private exec(tool: string, args: string[]): string {
    const r = Bun.spawnSync([tool, ...args], {
      cwd: this.dir,
      env: { ...process.env, TPM2TOOLS_TCTI: this.tpm.tcti, TSS2_LOG: "all+none" },
      stdout: "pipe",
      stderr: "pipe",
      timeout: 60_000,
    });
    if (r.exitCode !== 0) {
      throw new Error(`${tool} ${args.join(" ")} failed (${r.exitCode}): ${r.stderr.toString().trim()}`);
    }
    return r.stdout.toString();
  }

  path(name: string): string {
    return join(this.dir, name);
  }

  /** A fresh RSA-2048 key from openssl genpkey. */
  generateRsaKey(name: string): Promise<GeneratedKey> {
    return this.genpkey(name, ["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"]);
  }

  /** A fresh ECC P-256 key from openssl genpkey (for checking that non-RSA keys are refused). */
  generateEcKey(name: string): Promise<GeneratedKey> {
    return this.genpkey(name, ["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"]);
  }

  private async genpkey(name: string, args: string[]): Promise<GeneratedKey> {
    const pemPath = this.path(`${name}.pem`);
    const r = Bun.spawnSync(["openssl", "genpkey", ...args, "-out", pemPath], { stdout: "pipe", stderr: "pipe" });
    if (r.exitCode !== 0) throw new Error(`openssl genpkey failed: ${r.stderr.toString()}`);
    return { pemPath, publicKey: createPublicKey(await readFile(pemPath, "utf8")) };
  }

  /**
   * Dictionary-attack settings. swtpm allows 3 failed authorisations before lockout; the tests make more
   * wrong-password attempts than that on purpose.
   */
  setLockout(maxTries: number, recoverySeconds = 1): void {
    this.run(
      "tpm2_dictionarylockout",
      "--setup-parameters",
      `--max-tries=${maxTries}`,
      `--recovery-time=${recoverySeconds}`,
      `--lockout-recovery-time=${recoverySeconds}`,
      "--clear-lockout",
    );
  }

  /** The H-2 primary under the owner hierarchy, saved as a context file. */
  async createH2Primary(ctx = "h2.ctx"): Promise<string> {
    await writeFile(this.path("unique.dat"), new Uint8Array([0, 0]));
    this.run("tpm2_createprimary", "-C", "o", "-G", "ecc", "-g", "sha256", "-a", H2_ATTRIBUTES, "-u", "unique.dat", "-c", ctx);
    return ctx;
  }

  /** A PolicyPCR digest over SHA-256 PCRs at their current values (tpm2_createpolicy --policy-pcr). */
  pcrPolicy(pcrs: number[], out = "pcr.policy"): string {
    this.run("tpm2_createpolicy", "--policy-pcr", "-l", `sha256:${pcrs.join(",")}`, "-L", out);
    return out;
  }

  /** PolicyPCR then PolicyPassword, computed in a trial session. */
  pcrPasswordPolicy(pcrs: number[], out = "pcrpass.policy"): string {
    this.run("tpm2_startauthsession", "-S", "trial.ctx");
    this.run("tpm2_policypcr", "-S", "trial.ctx", "-l", `sha256:${pcrs.join(",")}`);
    this.run("tpm2_policypassword", "-S", "trial.ctx", "-L", out);
    this.run("tpm2_flushcontext", "trial.ctx");
    return out;
  }

  /** tpm2_import of a software key under `parent`, writing name.pub / name.priv. */
  importKey(
    key: GeneratedKey,
    name: string,
    parent: string,
    o: { keyPass?: string; policy?: string; attributes?: string; parentAuth?: string } = {},
  ): { pub: string; priv: string } {
    const pub = `${name}.pub`;
    const priv = `${name}.priv`;
    const alg = key.publicKey.asymmetricKeyType === "ec" ? "ecc" : "rsa";
    const args = ["-C", parent, "-G", alg, "-i", key.pemPath, "-u", pub, "-r", priv];
    if (o.keyPass !== undefined) args.push("-p", o.keyPass);
    if (o.policy !== undefined) args.push("-L", o.policy);
    if (o.attributes !== undefined) args.push("-a", o.attributes);
    if (o.parentAuth !== undefined) args.push("-P", o.parentAuth);
    this.run("tpm2_import", ...args);
    return { pub, priv };
  }

  /** Import a key under the H-2 primary and make it persistent at `handle` (tpm2_import, tpm2_load, tpm2_evictcontrol). */
  async persistKey(key: GeneratedKey, handle: number, o: { keyPass?: string; policy?: string; attributes?: string } = {}): Promise<void> {
    const parent = await this.createH2Primary();
    const name = `persist-${handle.toString(16)}`;
    const { pub, priv } = this.importKey(key, name, parent, o);
    this.run("tpm2_load", "-C", parent, "-u", pub, "-r", priv, "-c", `${name}.ctx`);
    this.run("tpm2_evictcontrol", "-C", "o", "-c", `${name}.ctx`, `0x${handle.toString(16)}`);
  }

  /** Import a key under the H-2 primary and encode it as a TSS2 PRIVATE KEY PEM (tpm2_encodeobject). */
  async keyfile(key: GeneratedKey, name: string, o: { keyPass?: string; policy?: string; attributes?: string } = {}): Promise<string> {
    const parent = await this.createH2Primary();
    const { pub, priv } = this.importKey(key, name, parent, o);
    const out = this.path(`${name}.tss.pem`);
    this.run("tpm2_encodeobject", "-C", parent, "-u", pub, "-r", priv, "-o", out, ...(o.keyPass !== undefined ? ["-p"] : []));
    return out;
  }

  /**
   * An H-2 storage key made persistent at `parentHandle` with password `parentPass`, a key imported under it,
   * and that key encoded as a TSS2 PRIVATE KEY PEM naming the persistent parent.
   */
  async persistentParentKeyfile(key: GeneratedKey, name: string, parentHandle: number, parentPass: string): Promise<string> {
    await writeFile(this.path("unique.dat"), new Uint8Array([0, 0]));
    const handle = `0x${parentHandle.toString(16)}`;
    this.run(
      "tpm2_createprimary",
      "-C",
      "o",
      "-G",
      "ecc",
      "-g",
      "sha256",
      "-a",
      H2_ATTRIBUTES,
      "-u",
      "unique.dat",
      "-p",
      parentPass,
      "-c",
      `${name}-parent.ctx`,
    );
    this.run("tpm2_evictcontrol", "-C", "o", "-c", `${name}-parent.ctx`, handle);
    const { pub, priv } = this.importKey(key, name, handle, { parentAuth: parentPass });
    const out = this.path(`${name}.tss.pem`);
    this.run("tpm2_encodeobject", "-C", handle, "-P", parentPass, "-u", pub, "-r", priv, "-o", out);
    return out;
  }

  /** The RSA EK (tpm2_createek -G rsa) as a context file, and its Name as hex. */
  createEk(ctx = "ek.ctx"): { ctx: string; nameHex: string } {
    this.run("tpm2_createek", "-c", ctx, "-G", "rsa", "-u", "ek.pub");
    this.run("tpm2_readpublic", "-c", ctx, "-n", "ek.name");
    const nameHex = readFileSync(this.path("ek.name")).toString("hex");
    return { ctx, nameHex };
  }

  /**
   * Import a key under the RSA EK, authorising the EK with PolicySecret(endorsement), and encode it as a TSS2
   * PRIVATE KEY PEM. tpm2_encodeobject writes parent 0x40000001 for it, so the signer needs useEKParent.
   */
  ekKeyfile(key: GeneratedKey, name: string): string {
    const ek = this.createEk();
    const blobs = this.withEkPolicy(() => this.importKey(key, name, ek.ctx, { parentAuth: "session:ekpolicy.ctx" }));
    const out = this.path(`${name}.tss.pem`);
    this.run("tpm2_encodeobject", "-C", ek.ctx, "-u", blobs.pub, "-r", blobs.priv, "-o", out);
    return out;
  }

  /**
   * A policy digest computed by tpm2-tools in a trial session: each step is a policy tool and its arguments
   * (the session is added), and the last one writes the digest to `out`.
   */
  trialPolicy(out: string, ...steps: [string, ...string[]][]): Uint8Array {
    this.run("tpm2_startauthsession", "-S", "trial.ctx");
    try {
      for (const [i, [tool, ...args]] of steps.entries()) {
        this.run(tool, "-S", "trial.ctx", ...args, ...(i === steps.length - 1 ? ["-L", out] : []));
      }
    } finally {
      this.run("tpm2_flushcontext", "trial.ctx");
    }
    return new Uint8Array(readFileSync(this.path(out)));
  }

  /** Run `fn` with a policy session satisfying the EK's PolicySecret(endorsement), saved as ekpolicy.ctx. */
  private withEkPolicy<T>(fn: () => T): T {
    this.run("tpm2_startauthsession", "--policy-session", "-S", "ekpolicy.ctx");
    try {
      this.run("tpm2_policysecret", "-S", "ekpolicy.ctx", "-c", "e");
      return fn();
    } finally {
      this.run("tpm2_flushcontext", "ekpolicy.ctx");
    }
  }

  /**
   * The Go emulator's "Transferred TPM Key" flow (what tpmcopy does), with tpm2-tools. `this` TPM is the one the
   * key is duplicated from (TPM-A), `target` the one it is imported into (TPM-B):
   *
   * 1. TPM-B: the RSA EK's public area and Name (tpm2_createek, tpm2_readpublic -n).
   * 2. TPM-A: the key's policy, PolicyOR of the user's branch (PolicyAuthValue for a password, or PolicyPCR over
   *    TPM-B's PCR values) with PolicyDuplicationSelect to TPM-B's EK; tpm2_import with userWithAuth clear
   *    (-a "sign|decrypt") and that policy; TPM-B's EK loaded as an external key; tpm2_duplicate to it,
   *    authorised through the PolicyDuplicationSelect branch.
   * 3. TPM-B: tpm2_import of the duplicate under the EK (PolicySecret(endorsement)), then tpm2_encodeobject.
   *
   * Returns the TSS2 PEM (parent 0x40000001, so it needs useEKParent), and the public/private blobs under the EK.
   */
  transferKey(
    key: GeneratedKey,
    name: string,
    target: Tpm2Tools,
    o: { password: string } | { pcrs: number[] },
  ): { keyfile: string; pub: string; priv: string; authPolicy: Uint8Array } {
    const b = (f: string) => target.path(`${name}-${f}`);
    const a = (f: string) => this.path(`${name}-${f}`);
    // 1. TPM-B
    target.run("tpm2_createek", "-c", b("ek.ctx"), "-G", "rsa", "-u", b("ek.pub"));
    target.run("tpm2_readpublic", "-c", b("ek.ctx"), "-n", b("ek.name"));
    if ("pcrs" in o) target.run("tpm2_pcrread", `sha256:${o.pcrs.join(",")}`, "-o", b("pcrs.bin"));
    // 2. TPM-A
    const dupSelect = `${name}-dupselect.policy`;
    this.trialPolicy(dupSelect, ["tpm2_policyduplicationselect", "-N", b("ek.name")]);
    const branch = `${name}-branch.policy`;
    if ("pcrs" in o) this.trialPolicy(branch, ["tpm2_policypcr", "-l", `sha256:${o.pcrs.join(",")}`, "-f", b("pcrs.bin")]);
    else this.trialPolicy(branch, ["tpm2_policyauthvalue"]);
    const or = `${name}-or.policy`;
    const authPolicy = this.trialPolicy(or, ["tpm2_policyor", `sha256:${branch},${dupSelect}`]);
    const parent = `${name}-h2.ctx`;
    writeFileSync(this.path("unique.dat"), new Uint8Array([0, 0]));
    this.run("tpm2_createprimary", "-C", "o", "-G", "ecc", "-g", "sha256", "-a", H2_ATTRIBUTES, "-u", "unique.dat", "-c", parent);
    const password = "password" in o ? ["-p", o.password] : [];
    this.run(
      "tpm2_import",
      "-C",
      parent,
      "-G",
      "rsa",
      "-i",
      key.pemPath,
      "-u",
      a("key.pub"),
      "-r",
      a("key.priv"),
      "-a",
      "sign|decrypt",
      "-L",
      or,
      ...password,
    );
    this.run("tpm2_load", "-C", parent, "-u", a("key.pub"), "-r", a("key.priv"), "-c", a("key.ctx"), "-n", a("key.name"));
    this.run("tpm2_loadexternal", "-C", "o", "-u", b("ek.pub"), "-c", a("ek-b.ctx"));
    this.run("tpm2_startauthsession", "--policy-session", "-S", "dup.ctx");
    try {
      this.run("tpm2_policyduplicationselect", "-S", "dup.ctx", "-n", a("key.name"), "-N", b("ek.name"));
      this.run("tpm2_policyor", "-S", "dup.ctx", `sha256:${branch},${dupSelect}`);
      this.run(
        "tpm2_duplicate",
        "-C",
        a("ek-b.ctx"),
        "-c",
        a("key.ctx"),
        "-G",
        "null",
        "-p",
        "session:dup.ctx",
        "-r",
        a("dup.priv"),
        "-s",
        a("dup.seed"),
      );
    } finally {
      this.run("tpm2_flushcontext", "dup.ctx");
    }
    // 3. TPM-B
    const pub = b("key.pub");
    const priv = b("key.priv");
    writeFileSync(pub, readFileSync(a("key.pub")));
    target.withEkPolicy(() =>
      target.run(
        "tpm2_import",
        "-C",
        b("ek.ctx"),
        "-u",
        pub,
        "-i",
        a("dup.priv"),
        "-s",
        a("dup.seed"),
        "-r",
        priv,
        "-P",
        "session:ekpolicy.ctx",
      ),
    );
    const keyfile = b("key.tss.pem");
    target.run("tpm2_encodeobject", "-C", b("ek.ctx"), "-u", pub, "-r", priv, "-o", keyfile, ...("password" in o ? ["-p"] : []));
    return { keyfile, pub, priv, authPolicy };
  }

  /** Load a key imported under the RSA EK and make it persistent at `handle` (as tpmcopy --mode evict does). */
  persistUnderEk(pub: string, priv: string, handle: number): void {
    this.createEk("evict-ek.ctx");
    this.withEkPolicy(() =>
      this.run("tpm2_load", "-C", "evict-ek.ctx", "-u", pub, "-r", priv, "-c", "evict-key.ctx", "-P", "session:ekpolicy.ctx"),
    );
    this.run("tpm2_evictcontrol", "-C", "o", "-c", "evict-key.ctx", `0x${handle.toString(16)}`);
  }
}
