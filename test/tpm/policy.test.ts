/**
 * Choosing the policy a key needs from the key itself: the digests computed in software equal those tpm2-tools
 * computes in trial sessions on a swtpm, and choosePolicy picks the shape whose digest is the key's, or says
 * exactly why none fits.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import {
  choosePolicy,
  type PolicyInputs,
  policyAuthValueDigest,
  policyDuplicationSelectDigest,
  policyOrDigest,
  policyPcrDigest,
  policyShapes,
} from "../../src/tpm/sessions.ts";
import { pcrSelectionSha256, toHex } from "../../src/tpm/wire.ts";
import { requireTpmTools, startSwtpm, type Swtpm } from "../helpers/swtpm.ts";
import { Tpm2Tools } from "../helpers/tpm2-tools.ts";

const hex = (b: Uint8Array) => toHex(b);
const sha256 = (b: Uint8Array) => new Uint8Array(createHash("sha256").update(b).digest());

describe("policy digests, against tpm2-tools trial sessions", () => {
  let tpm: Swtpm;
  let tools: Tpm2Tools;
  let ekName: Uint8Array;
  beforeAll(async () => {
    requireTpmTools();
    tpm = await startSwtpm();
    tools = await Tpm2Tools.on(tpm);
    tools.createEk();
    ekName = new Uint8Array(readFileSync(tools.path("ek.name")));
    tools.run("tpm2_pcrextend", `7:sha256=${"11".repeat(32)}`, `23:sha256=${"22".repeat(32)}`);
  }, 60_000);
  afterAll(async () => {
    await tpm?.stop();
  });

  /** SHA-256 over the PCRs' current values, read with tpm2_pcrread. */
  function pcrDigest(pcrs: number[]): Uint8Array {
    tools.run("tpm2_pcrread", `sha256:${pcrs.join(",")}`, "-o", "values.bin");
    return sha256(new Uint8Array(readFileSync(tools.path("values.bin"))));
  }

  test("PolicyAuthValue, and PolicyPassword, which extends the digest the same way", () => {
    expect(hex(policyAuthValueDigest())).toBe(hex(tools.trialPolicy("av.policy", ["tpm2_policyauthvalue"])));
    expect(hex(policyAuthValueDigest())).toBe(hex(tools.trialPolicy("pw.policy", ["tpm2_policypassword"])));
    expect(hex(policyAuthValueDigest())).toBe("8fcd2169ab92694e0c633f1ab772842b8241bbc20288981fc7ac1eddc1fddb0e");
  });

  test("PolicyPCR over one PCR and over several, and PolicyPCR then PolicyPassword", () => {
    for (const pcrs of [[23], [0, 7, 23]]) {
      const mine = policyPcrDigest(pcrSelectionSha256(pcrs), pcrDigest(pcrs));
      expect(hex(mine)).toBe(hex(tools.trialPolicy("pcr.policy", ["tpm2_policypcr", "-l", `sha256:${pcrs.join(",")}`])));
      expect(hex(policyAuthValueDigest(mine))).toBe(
        hex(tools.trialPolicy("pcrpw.policy", ["tpm2_policypcr", "-l", `sha256:${pcrs.join(",")}`], ["tpm2_policypassword"])),
      );
    }
  });

  test("PolicyDuplicationSelect to the EK, and tpmcopy's PolicyOR shapes", () => {
    const dupSelect = tools.trialPolicy("ds.policy", ["tpm2_policyduplicationselect", "-N", "ek.name"]);
    expect(hex(policyDuplicationSelectDigest(ekName))).toBe(hex(dupSelect));
    tools.trialPolicy("av.policy", ["tpm2_policyauthvalue"]);
    tools.trialPolicy("pcr.policy", ["tpm2_policypcr", "-l", "sha256:23"]);
    const pcr = policyPcrDigest(pcrSelectionSha256([23]), pcrDigest([23]));
    expect(hex(policyOrDigest([policyAuthValueDigest(), dupSelect]))).toBe(
      hex(tools.trialPolicy("or-av.policy", ["tpm2_policyor", "sha256:av.policy,ds.policy"])),
    );
    expect(hex(policyOrDigest([pcr, dupSelect]))).toBe(
      hex(tools.trialPolicy("or-pcr.policy", ["tpm2_policyor", "sha256:pcr.policy,ds.policy"])),
    );
  });
});

describe("choosePolicy", () => {
  const ekName = Uint8Array.from(Buffer.from(`000b${"ab".repeat(32)}`, "hex"));
  const pcrs = { list: [23], selection: pcrSelectionSha256([23]), digest: sha256(new Uint8Array(32)) };
  const shapes = policyShapes({ pcrs, ekName });
  const digestOf = (label: string) => shapes.find((s) => s.label === label)!.digest;
  const PCR = "PolicyPCR(sha256:23)";
  const PCR_AV = "PolicyPCR(sha256:23) then PolicyAuthValue";
  const OR_PCR = "PolicyOR(PolicyPCR(sha256:23) | PolicyDuplicationSelect(EK))";
  const AV = "PolicyAuthValue";
  const OR_AV = "PolicyOR(PolicyAuthValue | PolicyDuplicationSelect(EK))";
  const base: PolicyInputs = {
    authPolicy: new Uint8Array(),
    userWithAuth: false,
    keyPass: false,
    useEKParent: false,
    what: "the key in k.pem",
  };
  const chosen = (i: Partial<PolicyInputs>) => {
    const r = choosePolicy({ ...base, ...i });
    return r.kind === "auth" ? "auth" : r.shape.label;
  };
  const refused = (i: Partial<PolicyInputs>): { code: string; message: string } => {
    try {
      choosePolicy({ ...base, ...i });
    } catch (e) {
      return e as { code: string; message: string };
    }
    throw new Error("choosePolicy accepted the key");
  };

  test("the five shapes have five different digests", () => {
    expect(shapes.map((s) => s.label)).toEqual([PCR, PCR_AV, OR_PCR, AV, OR_AV]);
    expect(new Set(shapes.map((s) => hex(s.digest))).size).toBe(5);
  });

  test("a key whose password may authorise it, without pcrs: the password (or the salted HMAC session)", () => {
    expect(chosen({ userWithAuth: true })).toBe("auth");
    expect(chosen({ userWithAuth: true, keyPass: true, authPolicy: digestOf(AV) })).toBe("auth");
  });

  test("each shape is chosen by the options the Go emulator takes for it", () => {
    expect(chosen({ authPolicy: digestOf(PCR), pcrs })).toBe(PCR);
    // -pcrs with -keyPass on a PolicyPCR key: the password is not part of the policy (the Go emulator ignores it)
    expect(chosen({ authPolicy: digestOf(PCR), pcrs, keyPass: true })).toBe(PCR);
    expect(chosen({ authPolicy: digestOf(PCR_AV), pcrs, keyPass: true })).toBe(PCR_AV);
    expect(chosen({ authPolicy: digestOf(AV), keyPass: true })).toBe(AV);
    expect(chosen({ authPolicy: digestOf(OR_AV), keyPass: true, useEKParent: true, ekName })).toBe(OR_AV);
    expect(chosen({ authPolicy: digestOf(OR_PCR), pcrs, useEKParent: true, ekName })).toBe(OR_PCR);
    expect(chosen({ authPolicy: digestOf(PCR), pcrs, useEKParent: true, ekName, userWithAuth: true })).toBe(PCR);
  });

  test("the options do not fit: the key's shape and digest are named, and what to pass or drop", () => {
    const noPass = refused({ authPolicy: digestOf(OR_AV), useEKParent: true, ekName });
    expect(noPass.code).toBe("TPM_POLICY_FAILED");
    expect(noPass.message).toBe(
      `the options do not fit the key in k.pem: its policy is ${OR_AV} (digest ${hex(digestOf(OR_AV))}), which needs keyPass+useEKParent, and useEKParent was given: pass keyPass`,
    );
    expect(refused({ authPolicy: digestOf(OR_AV), pcrs, useEKParent: true, ekName }).message).toEndWith(
      "and pcrs+useEKParent were given: pass keyPass and drop pcrs",
    );
    expect(refused({ authPolicy: digestOf(PCR_AV), pcrs }).message).toEndWith("which needs pcrs+keyPass, and pcrs was given: pass keyPass");
    expect(refused({ authPolicy: digestOf(AV), pcrs, keyPass: true }).message).toEndWith("drop pcrs");
    expect(refused({ authPolicy: digestOf(AV) }).message).toEndWith("and none of pcrs, keyPass, useEKParent were given: pass keyPass");
    expect(refused({ authPolicy: digestOf(OR_PCR), pcrs, ekName }).message).toEndWith("pass useEKParent");
  });

  test("no shape gives the key's digest: the shapes tried, with their options, and the PCRs' digest now", () => {
    const other = sha256(new TextEncoder().encode("another policy"));
    const e = refused({ authPolicy: other, pcrs, keyPass: true, useEKParent: true, ekName });
    expect(e.code).toBe("TPM_POLICY_FAILED");
    expect(e.message).toContain(`the key in k.pem has policy digest ${hex(other)} and takes no password alone (userWithAuth clear)`);
    expect(e.message).toContain(
      `tried ${PCR} with pcrs = ${hex(digestOf(PCR)).slice(0, 16)}…; ${PCR_AV} with pcrs+keyPass = ${hex(digestOf(PCR_AV)).slice(0, 16)}…; ${OR_PCR} with pcrs+useEKParent = `,
    );
    expect(e.message).toContain(
      `PCRs sha256:23 now hash to ${hex(pcrs.digest)}: either they no longer hold the values the key was bound to`,
    );
    expect(e.message).not.toContain("also needs useEKParent");
    const bare = refused({ authPolicy: other });
    expect(bare.message).toContain("none was tried: pcrs or keyPass chooses one");
    expect(bare.message).toContain(
      "if it is bound to PCRs, pass the pcrs it is bound to (a key transferred with tpmcopy also needs useEKParent)",
    );
  });

  test("a key without a policy given pcrs, and a key nothing can authorise", () => {
    const e = refused({ userWithAuth: true, pcrs });
    expect(e.code).toBe("TPM_POLICY_FAILED");
    expect(e.message).toBe(
      "the key in k.pem has no policy (empty authPolicy), so it is not bound to PCRs: the options do not fit this key; drop pcrs",
    );
    expect(refused({}).code).toBe("TPM_BAD_KEY");
  });
});
