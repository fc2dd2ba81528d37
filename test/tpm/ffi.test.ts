import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { readFile, writeFile } from "node:fs/promises";
import { ESYS_TR_PASSWORD, ESYS_TR_RH_ENDORSEMENT, ESYS_TR_RH_OWNER, EsysContext, fromC, toC, TssCallError } from "../../src/tpm/ffi.ts";
import { H2_SRK_TEMPLATE, RSA_EK_TEMPLATE } from "../../src/tpm/templates.ts";
import { EMPTY_SENSITIVE_CREATE, SCHEME_RSASSA_SHA256, toHex, WireReader } from "../../src/tpm/wire.ts";
import { startSwtpm, type Swtpm } from "../helpers/swtpm.ts";
import { H2_ATTRIBUTES, Tpm2Tools } from "../helpers/tpm2-tools.ts";

describe("MU round trip", () => {
  test("wire → C struct → wire is the identity", () => {
    expect(toHex(fromC("TPM2B_PUBLIC", toC("TPM2B_PUBLIC", H2_SRK_TEMPLATE)))).toBe(toHex(H2_SRK_TEMPLATE));
    expect(toHex(fromC("TPM2B_PUBLIC", toC("TPM2B_PUBLIC", RSA_EK_TEMPLATE)))).toBe(toHex(RSA_EK_TEMPLATE));
    expect(toHex(fromC("TPMT_SIG_SCHEME", toC("TPMT_SIG_SCHEME", SCHEME_RSASSA_SHA256)))).toBe("0014000b");
  });

  test("malformed wire bytes are refused by Tss2_MU, not read past", () => {
    expect(() => toC("TPM2B_PUBLIC", new Uint8Array([0x01, 0x00, 0x00]))).toThrow(TssCallError);
    expect(() => toC("TPM2B_DIGEST", new Uint8Array([0x00, 0x01, 0xaa, 0xbb]))).toThrow(/trailing bytes/);
  });
});

describe("primary templates match tpm2-tools", () => {
  let tpm: Swtpm;
  let tools: Tpm2Tools;
  beforeAll(async () => {
    tpm = await startSwtpm();
    tools = await Tpm2Tools.on(tpm);
  }, 60_000);
  afterAll(async () => {
    await tpm?.stop();
  });

  test("the H-2 primary and the RSA EK have the Names tpm2_createprimary and tpm2_createek give", async () => {
    await writeFile(tools.path("unique.dat"), new Uint8Array([0, 0]));
    tools.run("tpm2_createprimary", "-C", "o", "-G", "ecc", "-g", "sha256", "-a", H2_ATTRIBUTES, "-u", "unique.dat", "-c", "h2.ctx");
    tools.run("tpm2_readpublic", "-c", "h2.ctx", "-n", "h2.name");
    const ek = tools.createEk();

    const esys = EsysContext.open(tpm.tcti);
    try {
      const h2 = esys.createPrimary(ESYS_TR_RH_OWNER, ESYS_TR_PASSWORD, EMPTY_SENSITIVE_CREATE, H2_SRK_TEMPLATE);
      const rsaEk = esys.createPrimary(ESYS_TR_RH_ENDORSEMENT, ESYS_TR_PASSWORD, EMPTY_SENSITIVE_CREATE, RSA_EK_TEMPLATE);
      const h2Name = toHex(new WireReader(esys.getName(h2.handle)).tpm2b());
      const ekName = toHex(new WireReader(esys.getName(rsaEk.handle)).tpm2b());
      expect(h2Name).toBe((await readFile(tools.path("h2.name"))).toString("hex"));
      expect(ekName).toBe(ek.nameHex);
      // ReadPublic through ESAPI gives the same public area tpm2-tools saved
      expect(toHex(esys.readPublic(rsaEk.handle).outPublic)).toBe((await readFile(tools.path("ek.pub"))).toString("hex"));
      esys.flush(h2.handle);
      esys.flush(rsaEk.handle);
    } finally {
      esys.close();
      esys.close(); // idempotent
    }
    expect(tools.transientHandles()).toEqual([]);
  }, 30_000);
});
