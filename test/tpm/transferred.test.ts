/**
 * Keys as the Go emulator's users make them, with the Go emulator's flags: keys transferred with tpmcopy's flow
 * (duplicated on one swtpm, imported under the RSA EK of another; policy PolicyOR of PolicyAuthValue or PolicyPCR
 * with PolicyDuplicationSelect to the EK, userWithAuth clear), a PCR-only key used with -pcrs and -keyPass, and a
 * key bound to PCR plus password. Every key is made by tpm2-tools; every token is checked with the key's public
 * half.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { verify } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { jwtVerify } from "jose";
import { openTpmSigner, type TpmError, type TpmOptions } from "../../src/tpm/signer.ts";
import { runCliToExit, serveCli } from "../helpers/cli.ts";
import { requireTpmTools, startSwtpm, type Swtpm } from "../helpers/swtpm.ts";
import { type GeneratedKey, Tpm2Tools } from "../helpers/tpm2-tools.ts";

const EMAIL = "123456789012-compute@developer.gserviceaccount.com"; // the bundled config's default account
const TOKEN = "/computeMetadata/v1/instance/service-accounts/default/token";
const BIGQUERY = "https://www.googleapis.com/auth/bigquery";
const PW_HANDLE = 0x81008001;
const PCR_HANDLE = 0x81008002;
/** PCR 23 after `tpm2_pcrextend 23:sha256=00…00` from reset, as in the Go emulator's README. */
const PCR23_BOUND = "f5a5fd42d16a20302798ef6ed309979b43003d2320d9f0e8ea9831a92759fb4b";
const dir = mkdtempSync(join(tmpdir(), "gce-tpm-transfer-"));

let tpmA: Swtpm; // where keys are duplicated from (the operator's machine in the Go emulator's README)
let tpmB: Swtpm; // where the metadata server runs
let a: Tpm2Tools;
let b: Tpm2Tools;
let key: GeneratedKey;
let pwKey: string;
let pcrKey: string;
let pcrOnlyKey: string;
let pcrPwKey: string;

/** Put PCR 23 back to the value the PCR-bound keys were made for. */
function restorePcr23(): void {
  b.run("tpm2_pcrreset", "23");
  b.run("tpm2_pcrextend", `23:sha256=${"00".repeat(32)}`);
}

beforeAll(async () => {
  requireTpmTools();
  [tpmA, tpmB] = await Promise.all([startSwtpm(), startSwtpm()]);
  [a, b] = await Promise.all([Tpm2Tools.on(tpmA), Tpm2Tools.on(tpmB)]);
  b.setLockout(1000); // wrong passwords below are on purpose
  key = await a.generateRsaKey("sa");
  restorePcr23();
  expect(b.run("tpm2_pcrread", "sha256:23").toLowerCase()).toContain(`0x${PCR23_BOUND}`);

  const pw = a.transferKey(key, "pw", b, { password: "bar" });
  b.persistUnderEk(pw.pub, pw.priv, PW_HANDLE);
  pwKey = pw.keyfile;
  const pcr = a.transferKey(key, "pcr", b, { pcrs: [23] });
  b.persistUnderEk(pcr.pub, pcr.priv, PCR_HANDLE);
  pcrKey = pcr.keyfile;
  pcrOnlyKey = await b.keyfile(key, "pcr-only", { policy: b.pcrPolicy([23]), keyPass: "pass1", attributes: "sign|decrypt" });
  pcrPwKey = await b.keyfile(key, "pcr-pw", { policy: b.pcrPasswordPolicy([23]), keyPass: "pin-1234", attributes: "sign|decrypt" });
}, 120_000);

afterAll(async () => {
  await Promise.all([tpmA?.stop(), tpmB?.stop()]);
  rmSync(dir, { recursive: true, force: true });
});

async function openFails(opts: Omit<TpmOptions, "path">): Promise<TpmError> {
  const e = await openTpmSigner({ ...opts, path: tpmB.path }).then(
    (s) => {
      s.close();
      throw new Error(`${JSON.stringify(opts)} opened`);
    },
    (x: unknown) => x as TpmError,
  );
  expect(e.message).not.toContain("\n");
  return e;
}

describe("the key's public area says what it needs", () => {
  test("transferred keys have userWithAuth clear and tpmcopy's PolicyOR digest", () => {
    for (const file of ["pw-key.pub", "pcr-key.pub"]) {
      const out = b.run("tpm2_print", "-t", "TPM2B_PUBLIC", file);
      expect(out).toMatch(/attributes:\s+value: decrypt\|sign\s/);
      expect(out).not.toContain("userwithauth");
    }
  });
});

describe("signing with the Go emulator's flags", () => {
  const cases: [string, Omit<TpmOptions, "path">][] = [
    ["transferred password key file: -useEKParent -keyPass", { keyfile: "pw", useEKParent: true, keyPass: "bar" }],
    ["transferred password key, persistent: -useEKParent -keyPass", { persistentHandle: PW_HANDLE, useEKParent: true, keyPass: "bar" }],
    ["transferred PCR key file: -useEKParent -pcrs 23", { keyfile: "pcr", useEKParent: true, pcrs: [23] }],
    ["transferred PCR key, persistent: -useEKParent -pcrs 23", { persistentHandle: PCR_HANDLE, useEKParent: true, pcrs: [23] }],
    [
      "transferred password key with -tpm-session-encrypt-with-name (EK-salted sessions)",
      { keyfile: "pw", useEKParent: true, keyPass: "bar", sessionEncryptWithName: "ek" },
    ],
    [
      "transferred PCR key with -tpm-session-encrypt-with-name",
      { keyfile: "pcr", useEKParent: true, pcrs: [23], sessionEncryptWithName: "ek" },
    ],
    ["PCR-only key: -pcrs 23 -keyPass (the password is not part of its policy)", { keyfile: "pcr-only", pcrs: [23], keyPass: "pass1" }],
    ["PCR-only key: -pcrs 23", { keyfile: "pcr-only", pcrs: [23] }],
    ["PCR plus password key: -pcrs 23 -keyPass", { keyfile: "pcr-pw", pcrs: [23], keyPass: "pin-1234" }],
  ];
  const file = (name: string | undefined) => ({ pw: pwKey, pcr: pcrKey, "pcr-only": pcrOnlyKey, "pcr-pw": pcrPwKey })[name as "pw"];

  for (const [name, opts] of cases) {
    test(`${name}: the signature verifies with the key's public half`, async () => {
      restorePcr23();
      const ekName = readFileSync(b.path("pw-ek.name")).toString("hex");
      const signer = await openTpmSigner({
        ...opts,
        ...(opts.keyfile ? { keyfile: file(opts.keyfile) } : {}),
        ...(opts.sessionEncryptWithName ? { sessionEncryptWithName: ekName } : {}),
        path: tpmB.path,
      });
      try {
        const data = new TextEncoder().encode(`${name} ${Math.random()}`);
        const sig = await signer.sign(data);
        expect(verify("sha256", data, key.publicKey, sig)).toBe(true);
      } finally {
        signer.close();
      }
      expect(b.transientHandles()).toEqual([]);
      expect(b.loadedSessions()).toEqual([]);
    }, 30_000);
  }

  test("a wrong password on a transferred key is TPM_AUTH_FAILED naming keyPass", async () => {
    const e = await openFails({ keyfile: pwKey, useEKParent: true, keyPass: "baz" });
    expect(e.code).toBe("TPM_AUTH_FAILED");
    expect(e.rcName).toBe("TPM_RC_AUTH_FAIL");
    expect(e.message).toContain("the key password is wrong: check keyPass");
  }, 30_000);

  test("flags that do not fit a transferred key name its policy and the flags to pass", async () => {
    const pcrForPw = await openFails({ keyfile: pwKey, useEKParent: true, pcrs: [23] });
    expect(pcrForPw.code).toBe("TPM_POLICY_FAILED");
    expect(pcrForPw.message).toContain(
      `the options do not fit the key in ${pwKey}: its policy is PolicyOR(PolicyAuthValue | PolicyDuplicationSelect(EK))`,
    );
    expect(pcrForPw.message).toEndWith("which needs keyPass+useEKParent, and pcrs+useEKParent were given: pass keyPass and drop pcrs");
    // the password alone: the key takes none (userWithAuth clear), which the TPM would answer TPM_RC_AUTH_UNAVAILABLE
    const persistentNoEk = await openFails({ persistentHandle: PW_HANDLE, keyPass: "bar" });
    expect(persistentNoEk.message).toContain("takes no password alone (userWithAuth clear)");
    expect(persistentNoEk.message).toContain("tried PolicyAuthValue with keyPass = ");
    expect(persistentNoEk.message).toContain("a key transferred with tpmcopy also needs useEKParent");
    const passForPcr = await openFails({ keyfile: pcrKey, useEKParent: true, keyPass: "bar" });
    expect(passForPcr.message).toContain("if it is bound to PCRs, pass the pcrs it is bound to");
  }, 30_000);

  test("started after the PCR changed: the shapes tried and the PCRs' digest now", async () => {
    b.run("tpm2_pcrextend", `23:sha256=${"ab".repeat(32)}`);
    try {
      const e = await openFails({ keyfile: pcrKey, useEKParent: true, pcrs: [23] });
      expect(e.code).toBe("TPM_POLICY_FAILED");
      expect(e.message).toContain("tried PolicyPCR(sha256:23) with pcrs = ");
      expect(e.message).toContain("PolicyOR(PolicyPCR(sha256:23) | PolicyDuplicationSelect(EK)) with pcrs+useEKParent = ");
      expect(e.message).toContain("PCRs sha256:23 now hash to ");
      expect(e.message).toContain("either they no longer hold the values the key was bound to");
    } finally {
      restorePcr23();
    }
  }, 30_000);

  test("a running signer whose PCR is extended: 'the PCR values changed', with both digests; restored, it signs again", async () => {
    for (const opts of [
      { keyfile: pcrKey, useEKParent: true, pcrs: [23] }, // fails at TPM2_PolicyOR
      { keyfile: pcrOnlyKey, pcrs: [23] }, // fails at TPM2_Sign
    ]) {
      restorePcr23();
      const signer = await openTpmSigner({ ...opts, path: tpmB.path });
      try {
        b.run("tpm2_pcrextend", `23:sha256=${"cd".repeat(32)}`);
        const e = (await signer.sign(new Uint8Array([1])).catch((x: unknown) => x)) as TpmError;
        expect(e.code).toBe("TPM_POLICY_FAILED");
        expect(e.rcName).toBe(opts.useEKParent ? "TPM_RC_VALUE" : "TPM_RC_POLICY_FAIL");
        expect(e.message).toMatch(
          /: the PCR values changed: PCRs sha256:23 now hash to [0-9a-f]{64}, but the policy of the key in \S+, .*, needs [0-9a-f]{64} \(their values when the signer opened\)/,
        );
        const [, now, then] = /now hash to ([0-9a-f]{64}).* needs ([0-9a-f]{64})/.exec(e.message)!;
        expect(now).not.toBe(then);
        restorePcr23();
        const data = new TextEncoder().encode("restored");
        expect(verify("sha256", data, key.publicKey, await signer.sign(data))).toBe(true);
      } finally {
        signer.close();
      }
    }
  }, 30_000);
});

describe("through the CLI, with the Go emulator's flags", () => {
  const serve = (args: string[]) => serveCli(["-tpm", "-tpm-path", tpmB.path, ...args], { cwd: dir, env: { HOME: dir } });

  async function token(s: { get(path: string): Promise<Response> }, query = ""): Promise<Response> {
    return s.get(TOKEN + query);
  }

  test("each key shape serves a token whose signature verifies with the key's public half", async () => {
    restorePcr23();
    for (const args of [
      ["-keyfile", pwKey, "-useEKParent", "-keyPass", "bar"],
      ["-persistentHandle", `0x${PW_HANDLE.toString(16)}`, "-useEKParent", "-keyPass", "bar"],
      ["-keyfile", pcrKey, "-useEKParent", "-pcrs", "23"],
      ["-persistentHandle", `0x${PCR_HANDLE.toString(16)}`, "-useEKParent", "-pcrs", "23"],
      ["-keyfile", pcrOnlyKey, "-pcrs", "23", "-keyPass", "pass1"],
      ["-keyfile", pcrPwKey, "-pcrs", "23", "-keyPass", "pin-1234"],
    ]) {
      const s = await serve(args);
      try {
        const res = await token(s);
        expect(res.status).toBe(200);
        const { access_token } = (await res.json()) as { access_token: string };
        const { payload } = await jwtVerify(access_token, key.publicKey, { algorithms: ["RS256"] });
        expect(payload).toMatchObject({ iss: EMAIL, sub: EMAIL });
      } finally {
        expect(await s.stop()).toBe(0);
      }
    }
  }, 60_000);

  test("a PCR extend while serving: the refresh is a 500 whose one line says the PCR values changed; restored, it serves", async () => {
    restorePcr23();
    const s = await serve(["-keyfile", pcrKey, "-useEKParent", "-pcrs", "23"]);
    try {
      expect((await token(s)).status).toBe(200);
      b.run("tpm2_pcrextend", `23:sha256=${"ef".repeat(32)}`);
      const res = await token(s, `?scopes=${BIGQUERY}`); // a new scope set needs a signature
      expect(res.status).toBe(500);
      const text = await res.text();
      expect(text.trim().split("\n")).toHaveLength(1);
      expect(text).toContain(`Failed to obtain an access token for ${EMAIL}`);
      expect(text).toContain("the PCR values changed: PCRs sha256:23 now hash to");
      restorePcr23();
      const again = await token(s, `?scopes=${BIGQUERY}`);
      expect(again.status).toBe(200);
    } finally {
      await s.stop();
    }
  }, 30_000);

  test("flags that do not fit: exit 1 and one line naming the key's policy and what to pass", async () => {
    const r = await runCliToExit(["-port", ":0", "-tpm", "-tpm-path", tpmB.path, "-keyfile", pwKey, "-useEKParent", "-pcrs", "23"], {
      cwd: dir,
      env: { HOME: dir },
    });
    expect(r.code).toBe(1);
    expect(r.errors).toHaveLength(1);
    expect(r.errors[0]).toContain("its policy is PolicyOR(PolicyAuthValue | PolicyDuplicationSelect(EK))");
    expect(r.errors[0]).toContain("pass keyPass and drop pcrs");
  }, 30_000);
});
