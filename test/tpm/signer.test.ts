import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { createHash, verify } from "node:crypto";
import { writeFile } from "node:fs/promises";
import { jwtVerify } from "jose";
import { openTpmSigner, TpmError, type TpmOptions, type TpmSigner } from "../../src/tpm/signer.ts";
import { requireTpmTools, startSwtpm, type Swtpm } from "../helpers/swtpm.ts";
import { Tpm2Tools, type GeneratedKey } from "../helpers/tpm2-tools.ts";

let tpm: Swtpm;
let tools: Tpm2Tools;
let key: GeneratedKey;

const HANDLE = 0x81010002;
const HANDLE_WITH_PASSWORD = 0x81010003;
const HANDLE_ECC = 0x81010004;
const MISSING_HANDLE = 0x81010009;

beforeAll(async () => {
  requireTpmTools();
  tpm = await startSwtpm();
  tools = await Tpm2Tools.on(tpm);
  tools.setLockout(1000); // the tests below fail authorisations on purpose
  key = await tools.generateRsaKey("main");
}, 60_000);

afterAll(async () => {
  await tpm?.stop();
});

const spki = (k: { export(o: { type: "spki"; format: "der" }): Buffer }) => k.export({ type: "spki", format: "der" });

/** Opening must fail; returns the TpmError. */
async function openFails(opts: TpmOptions): Promise<TpmError> {
  let signer: TpmSigner | undefined;
  try {
    signer = await openTpmSigner(opts);
  } catch (e) {
    expect(e).toBeInstanceOf(TpmError);
    return e as TpmError;
  }
  signer.close();
  throw new Error(`openTpmSigner(${JSON.stringify(opts)}) succeeded but should have failed`);
}

async function signFails(signer: TpmSigner, data: Uint8Array): Promise<TpmError> {
  try {
    await signer.sign(data);
  } catch (e) {
    expect(e).toBeInstanceOf(TpmError);
    return e as TpmError;
  }
  throw new Error("sign succeeded but should have failed");
}

/** Open, sign `data`, check the signature with the software key's public half, close. */
async function signsAndVerifies(opts: TpmOptions, expected: GeneratedKey = key): Promise<void> {
  const signer = await openTpmSigner(opts);
  try {
    const data = new TextEncoder().encode(`payload ${Math.random()}`);
    const sig = await signer.sign(data);
    expect(sig.byteLength).toBe(256);
    expect(verify("sha256", data, expected.publicKey, sig)).toBe(true);
    expect(verify("sha256", new TextEncoder().encode("other"), expected.publicKey, sig)).toBe(false);
    expect(spki(signer.publicKey).equals(spki(expected.publicKey))).toBe(true);
  } finally {
    signer.close();
  }
}

describe("persistent handle", () => {
  beforeAll(async () => {
    await tools.persistKey(key, HANDLE);
  }, 60_000);

  test("signs RS256 that verifies with the imported key; reports that key and its SPKI fingerprint", async () => {
    const signer = await openTpmSigner({ path: tpm.path, persistentHandle: HANDLE });
    try {
      const data = new TextEncoder().encode("header.payload");
      const sig = await signer.sign(data);
      expect(verify("sha256", data, key.publicKey, sig)).toBe(true);
      // RSASSA-PKCS1-v1_5 is deterministic: same input, same signature as openssl would give
      expect(Buffer.from(await signer.sign(data)).equals(Buffer.from(sig))).toBe(true);
      expect(spki(signer.publicKey).equals(spki(key.publicKey))).toBe(true);
      expect(signer.fingerprint).toBe(createHash("sha256").update(spki(key.publicKey)).digest("hex"));
    } finally {
      signer.close();
    }
  }, 30_000);

  test("a JWT whose signature the TPM made verifies with jose", async () => {
    const signer = await openTpmSigner({ path: tpm.path, persistentHandle: HANDLE });
    try {
      const b64 = (o: object) => Buffer.from(JSON.stringify(o)).toString("base64url");
      const input = `${b64({ alg: "RS256", typ: "JWT", kid: signer.fingerprint })}.${b64({ sub: "sa@example.iam.gserviceaccount.com", aud: "https://example.com" })}`;
      const sig = await signer.sign(new TextEncoder().encode(input));
      const jwt = `${input}.${Buffer.from(sig).toString("base64url")}`;
      const { payload, protectedHeader } = await jwtVerify(jwt, signer.publicKey, { audience: "https://example.com" });
      expect(payload.sub).toBe("sa@example.iam.gserviceaccount.com");
      expect(protectedHeader.alg).toBe("RS256");
    } finally {
      signer.close();
    }
  }, 30_000);

  test("concurrent signs are serialised through one queue and each signature is for its own data", async () => {
    const signer = await openTpmSigner({ path: tpm.path, persistentHandle: HANDLE });
    try {
      const inputs = Array.from({ length: 40 }, (_, i) => new TextEncoder().encode(`request ${i}`));
      const sigs = await Promise.all(inputs.map((d) => signer.sign(d)));
      for (const [i, sig] of sigs.entries()) expect(verify("sha256", inputs[i]!, key.publicKey, sig)).toBe(true);
    } finally {
      signer.close();
    }
  }, 30_000);

  test("no object at the handle: TPM_NO_OBJECT naming the handle and TPM_RC_HANDLE", async () => {
    const e = await openFails({ path: tpm.path, persistentHandle: MISSING_HANDLE });
    expect(e.code).toBe("TPM_NO_OBJECT");
    expect(e.rcName).toBe("TPM_RC_HANDLE");
    expect(e.message).toContain("0x81010009");
    expect(e.message).toContain("TPM_RC_HANDLE");
    expect(e.message).toContain("tpm2_getcap handles-persistent");
  }, 30_000);

  test("key password: the right one signs, a wrong or missing one is TPM_AUTH_FAILED with TPM_RC_AUTH_FAIL", async () => {
    const pwKey = await tools.generateRsaKey("persist-pw");
    await tools.persistKey(pwKey, HANDLE_WITH_PASSWORD, { keyPass: "correct horse" });
    await signsAndVerifies({ path: tpm.path, persistentHandle: HANDLE_WITH_PASSWORD, keyPass: "correct horse" }, pwKey);

    const wrong = await openFails({ path: tpm.path, persistentHandle: HANDLE_WITH_PASSWORD, keyPass: "battery staple" });
    expect(wrong.code).toBe("TPM_AUTH_FAILED");
    expect(wrong.rcName).toBe("TPM_RC_AUTH_FAIL");
    expect(wrong.message).toContain("TPM_RC_AUTH_FAIL");
    expect(wrong.message).toContain("check keyPass");
    expect(wrong.message).not.toContain("\n");

    const missing = await openFails({ path: tpm.path, persistentHandle: HANDLE_WITH_PASSWORD });
    expect(missing.code).toBe("TPM_AUTH_FAILED");
    expect(missing.message).toContain("pass keyPass");
  }, 60_000);

  test("a non-RSA key is refused at open with TPM_BAD_KEY", async () => {
    const ec = await tools.generateEcKey("ecc");
    await tools.persistKey(ec, HANDLE_ECC);
    const e = await openFails({ path: tpm.path, persistentHandle: HANDLE_ECC });
    expect(e.code).toBe("TPM_BAD_KEY");
    expect(e.message).toContain("not an RSA key");
  }, 60_000);
});

describe("TSS2 PRIVATE KEY file", () => {
  test("under the H-2 primary: signs, reports the imported key", async () => {
    const file = await tools.keyfile(key, "h2key");
    await signsAndVerifies({ path: tpm.path, keyfile: file });
  }, 60_000);

  test("with a key password: right signs; wrong is TPM_AUTH_FAILED with TPM_RC_AUTH_FAIL", async () => {
    const file = await tools.keyfile(key, "h2key-pw", { keyPass: "s3cret" });
    await signsAndVerifies({ path: tpm.path, keyfile: file, keyPass: "s3cret" });
    const e = await openFails({ path: tpm.path, keyfile: file, keyPass: "S3cret" });
    expect(e.code).toBe("TPM_AUTH_FAILED");
    expect(e.message).toContain("TPM_RC_AUTH_FAIL");
    expect(e.message).toContain(file);
  }, 60_000);

  test("under the RSA EK (tpm2_import under the EK): signs with useEKParent; without it the load fails", async () => {
    const file = tools.ekKeyfile(key, "ekkey");
    await signsAndVerifies({ path: tpm.path, keyfile: file, useEKParent: true });
    const e = await openFails({ path: tpm.path, keyfile: file });
    expect(e.code).toBe("TPM_BAD_KEYFILE");
    expect(e.rcName).toBe("TPM_RC_INTEGRITY");
    expect(e.message).toContain("useEKParent");
  }, 60_000);

  test("under a persistent parent with a password: parentPass right signs, wrong is TPM_AUTH_FAILED", async () => {
    const file = await tools.persistentParentKeyfile(key, "ppkey", 0x81000011, "parent-pw");
    await signsAndVerifies({ path: tpm.path, keyfile: file, parentPass: "parent-pw" });
    const e = await openFails({ path: tpm.path, keyfile: file, parentPass: "parent-PW" });
    expect(e.code).toBe("TPM_AUTH_FAILED");
    expect(e.rcName).toBe("TPM_RC_BAD_AUTH"); // the H-2 template has noDA
    expect(e.message).toContain("check parentPass");
    expect(e.message).toContain("0x81000011");
  }, 60_000);

  test("under the H-2 primary when the owner hierarchy has a password: parentPass is that password", async () => {
    const own = await startSwtpm();
    try {
      const t = await Tpm2Tools.on(own);
      const file = await t.keyfile(key, "owner-pw");
      t.run("tpm2_changeauth", "-c", "o", "owner-secret");
      await signsAndVerifies({ path: own.path, keyfile: file, parentPass: "owner-secret" });
      const e = await openFails({ path: own.path, keyfile: file });
      expect(e.code).toBe("TPM_AUTH_FAILED");
      expect(e.message).toContain("owner hierarchy has a password: pass it as parentPass");
    } finally {
      await own.stop();
    }
  }, 60_000);

  test("unreadable or malformed keyfiles are TPM_BAD_KEYFILE before the TPM is touched", async () => {
    const missing = await openFails({ path: tpm.path, keyfile: tools.path("nope.pem") });
    expect(missing.code).toBe("TPM_BAD_KEYFILE");
    expect(missing.message).toContain("cannot read keyfile");
    await writeFile(tools.path("garbage.pem"), "-----BEGIN TSS2 PRIVATE KEY-----\nMAA=\n-----END TSS2 PRIVATE KEY-----\n");
    const garbage = await openFails({ path: tpm.path, keyfile: tools.path("garbage.pem") });
    expect(garbage.code).toBe("TPM_BAD_KEYFILE");
    // the TPM was never opened: a path with no TPM would otherwise have been the error
    const noTpm = await openFails({ path: "127.0.0.1:1", keyfile: tools.path("garbage.pem") });
    expect(noTpm.code).toBe("TPM_BAD_KEYFILE");
  }, 30_000);
});

describe("PCR policy", () => {
  const PCR = 23; // resettable from locality 0, so the test can restore it

  test("a key bound to PCR 23: signs with pcrs; without pcrs it is refused at open", async () => {
    const policy = tools.pcrPolicy([PCR]);
    const file = await tools.keyfile(key, "pcrkey", { policy, attributes: "sign|decrypt" });
    await signsAndVerifies({ path: tpm.path, keyfile: file, pcrs: [PCR] });
    const e = await openFails({ path: tpm.path, keyfile: file });
    expect(e.code).toBe("TPM_POLICY_FAILED");
    expect(e.message).toContain("pass the pcrs");
  }, 60_000);

  test("extending the bound PCR makes signing fail with TPM_RC_POLICY_FAIL; resetting it makes it work again", async () => {
    tools.run("tpm2_pcrreset", String(PCR));
    const policy = tools.pcrPolicy([PCR], "pcr-extend.policy");
    await tools.persistKey(key, 0x81010005, { policy, attributes: "sign|decrypt" });
    const signer = await openTpmSigner({ path: tpm.path, persistentHandle: 0x81010005, pcrs: [PCR] });
    try {
      const data = new TextEncoder().encode("before");
      expect(verify("sha256", data, key.publicKey, await signer.sign(data))).toBe(true);

      tools.run("tpm2_pcrextend", `${PCR}:sha256=${"ab".repeat(32)}`);
      const e = await signFails(signer, new TextEncoder().encode("after"));
      expect(e.code).toBe("TPM_POLICY_FAILED");
      expect(e.rcName).toBe("TPM_RC_POLICY_FAIL");
      expect(e.message).toContain("TPM_RC_POLICY_FAIL");
      expect(e.message).toContain("sha256:23");
      // still failing on retry (the failed session is restarted, not left half-built)
      expect((await signFails(signer, new TextEncoder().encode("again"))).code).toBe("TPM_POLICY_FAILED");
      // a fresh open fails fast too
      const reopen = await openFails({ path: tpm.path, persistentHandle: 0x81010005, pcrs: [PCR] });
      expect(reopen.code).toBe("TPM_POLICY_FAILED");

      tools.run("tpm2_pcrreset", String(PCR));
      const back = new TextEncoder().encode("restored");
      expect(verify("sha256", back, key.publicKey, await signer.sign(back))).toBe(true);
    } finally {
      signer.close();
    }
  }, 60_000);

  test("PCR and password together (PolicyPCR + PolicyPassword): right password signs, wrong is TPM_AUTH_FAILED", async () => {
    tools.run("tpm2_pcrreset", String(PCR));
    const policy = tools.pcrPasswordPolicy([PCR]);
    const file = await tools.keyfile(key, "pcrpw", { policy, keyPass: "pin-1234", attributes: "sign|decrypt" });
    await signsAndVerifies({ path: tpm.path, keyfile: file, pcrs: [PCR], keyPass: "pin-1234" });
    const e = await openFails({ path: tpm.path, keyfile: file, pcrs: [PCR], keyPass: "pin-0000" });
    expect(e.code).toBe("TPM_AUTH_FAILED");
    expect(e.message).toContain("TPM_RC_AUTH_FAIL");
    // a PCR list that is not the one the key was bound to is a policy failure
    const other = await openFails({ path: tpm.path, keyfile: file, pcrs: [16], keyPass: "pin-1234" });
    expect(other.code).toBe("TPM_POLICY_FAILED");
  }, 60_000);
});

describe("open and close", () => {
  test("close flushes the key and sessions it made, is idempotent, and later signs are TPM_CLOSED", async () => {
    tools.run("tpm2_pcrreset", "23");
    const file = await tools.keyfile(key, "closekey", {
      policy: tools.pcrPolicy([23], "close.policy"),
      attributes: "sign|decrypt",
    });
    expect(tools.transientHandles()).toEqual([]);
    expect(tools.loadedSessions()).toEqual([]);
    const signer = await openTpmSigner({ path: tpm.path, keyfile: file, pcrs: [23] });
    expect(tools.transientHandles()).toHaveLength(1); // the key; its H-2 parent is already flushed
    expect(tools.loadedSessions()).toHaveLength(1); // the PCR policy session
    const pending = signer.sign(new Uint8Array([1]));
    signer.close();
    signer.close();
    expect(tools.transientHandles()).toEqual([]);
    expect(tools.loadedSessions()).toEqual([]);
    expect(
      (await pending.then(
        () => undefined,
        (e: unknown) => e,
      )) as TpmError,
    ).toMatchObject({ code: "TPM_CLOSED" });
    expect((await signFails(signer, new Uint8Array([2]))).code).toBe("TPM_CLOSED");
  }, 60_000);

  test("a failed open leaves nothing loaded in the TPM", async () => {
    const file = await tools.keyfile(key, "leak", { keyPass: "x" });
    await openFails({ path: tpm.path, keyfile: file, keyPass: "y", pcrs: [] });
    expect(tools.transientHandles()).toEqual([]);
    expect(tools.loadedSessions()).toEqual([]);
  }, 60_000);

  test("no TPM at the path: TPM_UNAVAILABLE naming the path", async () => {
    const port = await openFails({ path: "127.0.0.1:1", persistentHandle: HANDLE });
    expect(port.code).toBe("TPM_UNAVAILABLE");
    expect(port.message).toContain('"127.0.0.1:1"');
    expect(port.message).toMatch(/TSS2_TCTI_RC_\w+/);
    const device = await openFails({ path: "/dev/tpmrm-missing", persistentHandle: HANDLE });
    expect(device.code).toBe("TPM_UNAVAILABLE");
    expect(device.message).toContain("/dev/tpmrm-missing");
  });

  test("options naming no key, or two, are refused", async () => {
    expect((await openFails({ path: tpm.path })).message).toContain("exactly one of persistentHandle and keyfile");
    expect((await openFails({ path: tpm.path, persistentHandle: HANDLE, keyfile: "k.pem" })).message).toContain("exactly one");
    expect((await openFails({ path: tpm.path, persistentHandle: HANDLE, pcrs: [24] })).code).toBe("TPM_POLICY_FAILED");
  });
});

describe("dictionary-attack lockout", () => {
  test("once the TPM locks out, the error says so and how to clear it", async () => {
    const own = await startSwtpm();
    try {
      const t = await Tpm2Tools.on(own);
      t.setLockout(1, 1000);
      const k = await t.generateRsaKey("da");
      await t.persistKey(k, HANDLE, { keyPass: "right" });
      expect((await openFails({ path: own.path, persistentHandle: HANDLE, keyPass: "wrong" })).code).toBe("TPM_AUTH_FAILED");
      const locked = await openFails({ path: own.path, persistentHandle: HANDLE, keyPass: "right" });
      expect(locked.code).toBe("TPM_LOCKOUT");
      expect(locked.rcName).toBe("TPM_RC_LOCKOUT");
      expect(locked.message).toContain("tpm2_dictionarylockout --clear-lockout");
      t.run("tpm2_dictionarylockout", "--clear-lockout");
      await signsAndVerifies({ path: own.path, persistentHandle: HANDLE, keyPass: "right" }, k);
    } finally {
      await own.stop();
    }
  }, 60_000);
});
