import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { createHash, verify } from "node:crypto";
import { readFile } from "node:fs/promises";
import { parseTss2PrivateKeyPem } from "../../src/tpm/keyfile.ts";
import { openTpmSigner, TpmError, type TpmOptions } from "../../src/tpm/signer.ts";
import { requireTpmTools, startSwtpm, type Swtpm } from "../helpers/swtpm.ts";
import { contains, startRecorder, type Recorder } from "../helpers/tcp-recorder.ts";
import { Tpm2Tools, type GeneratedKey } from "../helpers/tpm2-tools.ts";

let tpm: Swtpm;
let tools: Tpm2Tools;
let key: GeneratedKey;
let ekName: string;
const HANDLE = 0x81010002;
const PASSWORD = "a-rather-distinctive-password";

beforeAll(async () => {
  requireTpmTools();
  tpm = await startSwtpm();
  tools = await Tpm2Tools.on(tpm);
  tools.setLockout(1000);
  key = await tools.generateRsaKey("enc");
  await tools.persistKey(key, HANDLE);
  ekName = tools.createEk().nameHex;
}, 60_000);

afterAll(async () => {
  await tpm?.stop();
});

async function signAndVerify(opts: TpmOptions, data: Uint8Array): Promise<void> {
  const signer = await openTpmSigner(opts);
  try {
    expect(verify("sha256", data, key.publicKey, await signer.sign(data))).toBe(true);
  } finally {
    signer.close();
  }
}

describe("sessionEncryptWithName", () => {
  test("the EK name tpm2_readpublic reports is accepted: persistent key, keyfiles under H-2, a persistent parent, the EK, and with PCRs", async () => {
    const data = new TextEncoder().encode("encrypted session");
    expect(ekName).toMatch(/^000b[0-9a-f]{64}$/);
    await signAndVerify({ path: tpm.path, persistentHandle: HANDLE, sessionEncryptWithName: ekName }, data);
    const file = await tools.keyfile(key, "enc-h2", { keyPass: PASSWORD });
    await signAndVerify({ path: tpm.path, keyfile: file, keyPass: PASSWORD, sessionEncryptWithName: ekName.toUpperCase() }, data);
    const ppFile = await tools.persistentParentKeyfile(key, "enc-pp", 0x81000012, "parent-pw");
    await signAndVerify({ path: tpm.path, keyfile: ppFile, parentPass: "parent-pw", sessionEncryptWithName: ekName }, data);
    const ekFile = tools.ekKeyfile(key, "enc-ek");
    await signAndVerify({ path: tpm.path, keyfile: ekFile, useEKParent: true, sessionEncryptWithName: ekName }, data);
    tools.run("tpm2_pcrreset", "23");
    const pcrFile = await tools.keyfile(key, "enc-pcr", {
      policy: tools.pcrPasswordPolicy([23]),
      keyPass: PASSWORD,
      attributes: "sign|decrypt",
    });
    await signAndVerify({ path: tpm.path, keyfile: pcrFile, pcrs: [23], keyPass: PASSWORD, sessionEncryptWithName: ekName }, data);
    expect(tools.transientHandles()).toEqual([]);
    expect(tools.loadedSessions()).toEqual([]);
  }, 60_000);

  test("a different EK name refuses to open with TPM_EK_MISMATCH naming both", async () => {
    const wrong = `000b${"5a".repeat(32)}`;
    let err: unknown;
    try {
      (await openTpmSigner({ path: tpm.path, persistentHandle: HANDLE, sessionEncryptWithName: wrong })).close();
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(TpmError);
    expect((err as TpmError).code).toBe("TPM_EK_MISMATCH");
    expect((err as TpmError).message).toContain(ekName);
    expect((err as TpmError).message).toContain(wrong);
    expect((err as TpmError).message).toContain("refusing to open");
    expect(tools.transientHandles()).toEqual([]);
    expect(tools.loadedSessions()).toEqual([]);
  }, 30_000);
});

describe("on the wire (a relay records the TPM command stream)", () => {
  let relay: Recorder;
  beforeAll(async () => {
    relay = await startRecorder(tpm.port);
  }, 30_000);
  afterAll(async () => {
    await relay?.stop();
  });

  /** Open through the relay, sign `data`, return every byte the client sent to the TPM. */
  async function traffic(opts: Omit<TpmOptions, "path">, data: Uint8Array): Promise<Uint8Array> {
    const before = (await relay.sent()).byteLength;
    await signAndVerify({ ...opts, path: relay.path }, data);
    return (await relay.sent()).subarray(before);
  }

  test("without encryption the digest, the key blob and the password travel in clear; with it none do", async () => {
    const file = await tools.keyfile(key, "wire", { keyPass: PASSWORD });
    const blob = parseTss2PrivateKeyPem(await readFile(file, "utf8")).privkey.subarray(2);
    const password = new TextEncoder().encode(PASSWORD);

    const plainData = new TextEncoder().encode("plain request");
    const plain = await traffic({ keyfile: file, keyPass: PASSWORD }, plainData);
    // the control: the recorder does see these in clear
    expect(contains(plain, createHash("sha256").update(plainData).digest())).toBe(true);
    expect(contains(plain, blob)).toBe(true);
    expect(contains(plain, password)).toBe(true);

    const secretData = new TextEncoder().encode("encrypted request");
    const enc = await traffic({ keyfile: file, keyPass: PASSWORD, sessionEncryptWithName: ekName }, secretData);
    expect(enc.byteLength).toBeGreaterThan(0);
    expect(contains(enc, createHash("sha256").update(secretData).digest())).toBe(false);
    expect(contains(enc, blob)).toBe(false);
    expect(contains(enc, password)).toBe(false);
  }, 60_000);
});
