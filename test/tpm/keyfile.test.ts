import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { readFile } from "node:fs/promises";
import { parseTss2PrivateKeyDer, parseTss2PrivateKeyPem, pemToDer } from "../../src/tpm/keyfile.ts";
import { TpmError } from "../../src/tpm/signer.ts";
import { parsePublic, TPM2_ALG_RSA } from "../../src/tpm/wire.ts";
import { startSwtpm, type Swtpm } from "../helpers/swtpm.ts";
import { Tpm2Tools, type GeneratedKey } from "../helpers/tpm2-tools.ts";

/** Minimal DER writer for hand-made keyfiles. */
function tlv(tag: number, value: Uint8Array): Uint8Array {
  const len = value.byteLength;
  const head = len < 0x80 ? [tag, len] : len < 0x100 ? [tag, 0x81, len] : [tag, 0x82, len >> 8, len & 0xff];
  return new Uint8Array([...head, ...value]);
}
const cat = (...parts: Uint8Array[]) => new Uint8Array(parts.flatMap((p) => [...p]));
const OID_LOADABLE = new Uint8Array([0x67, 0x81, 0x05, 0x0a, 0x01, 0x03]); // 2.23.133.10.1.3
const OID_SEALED = new Uint8Array([0x67, 0x81, 0x05, 0x0a, 0x01, 0x05]); // 2.23.133.10.1.5
const tpm2b = (b: Uint8Array) => new Uint8Array([b.byteLength >> 8, b.byteLength & 0xff, ...b]);
const pem = (der: Uint8Array) =>
  `-----BEGIN TSS2 PRIVATE KEY-----\n${Buffer.from(der).toString("base64").replace(/.{64}/g, "$&\n")}\n-----END TSS2 PRIVATE KEY-----\n`;

describe("TSS2 PRIVATE KEY parsing of hand-made DER", () => {
  const pub = tpm2b(new Uint8Array([1, 2, 3]));
  const priv = tpm2b(new Uint8Array([4, 5, 6, 7]));

  test("all optional fields, a persistent parent", () => {
    const der = tlv(
      0x30,
      cat(
        tlv(0x06, OID_LOADABLE),
        tlv(0xa0, tlv(0x01, new Uint8Array([0xff]))),
        tlv(0xa1, tlv(0x30, new Uint8Array())),
        tlv(0xa4, tlv(0x0c, new TextEncoder().encode("signing key"))),
        tlv(0x02, new Uint8Array([0x00, 0x81, 0x00, 0x00, 0x01])),
        tlv(0x04, pub),
        tlv(0x04, priv),
      ),
    );
    const k = parseTss2PrivateKeyPem(pem(der));
    expect(k.emptyAuth).toBe(true);
    expect(k.hasPolicy).toBe(true);
    expect(k.description).toBe("signing key");
    expect(k.rsaParent).toBe(false);
    expect(k.parent).toBe(0x81000001);
    expect([...k.pubkey]).toEqual([...pub]);
    expect([...k.privkey]).toEqual([...priv]);
  });

  test("minimal: no optional fields, emptyAuth absent means a password may be needed", () => {
    const der = tlv(0x30, cat(tlv(0x06, OID_LOADABLE), tlv(0x02, new Uint8Array([0x40, 0, 0, 1])), tlv(0x04, pub), tlv(0x04, priv)));
    const k = parseTss2PrivateKeyDer(der);
    expect(k.emptyAuth).toBe(false);
    expect(k.parent).toBe(0x40000001);
  });

  test("refusals name what is wrong and carry TPM_BAD_KEYFILE", () => {
    const sealed = tlv(0x30, cat(tlv(0x06, OID_SEALED), tlv(0x02, new Uint8Array([0x40, 0, 0, 1])), tlv(0x04, pub), tlv(0x04, priv)));
    const badSize = tlv(
      0x30,
      cat(tlv(0x06, OID_LOADABLE), tlv(0x02, new Uint8Array([0x40, 0, 0, 1])), tlv(0x04, new Uint8Array([0, 9, 1])), tlv(0x04, priv)),
    );
    const cases: [string, RegExp][] = [
      [pem(sealed), /sealed data, not a loadable key/],
      [pem(badSize), /pubkey is not a marshalled TPM2B/],
      [pem(sealed.subarray(0, 20)), /runs past the end|truncated/],
      ["-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n", /no -----BEGIN TSS2 PRIVATE KEY----- block/],
      ["-----BEGIN TSS2 PRIVATE KEY-----\n%%%%\n-----END TSS2 PRIVATE KEY-----\n", /not base64/],
    ];
    for (const [text, why] of cases) {
      let err: unknown;
      try {
        parseTss2PrivateKeyPem(text, "keyfile k.pem");
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(TpmError);
      expect((err as TpmError).code).toBe("TPM_BAD_KEYFILE");
      expect((err as TpmError).message).toMatch(why);
      expect((err as TpmError).message).toStartWith("keyfile k.pem is not a usable TSS2 PRIVATE KEY");
    }
  });
});

describe("TSS2 PRIVATE KEY written by tpm2_encodeobject", () => {
  let tpm: Swtpm;
  let tools: Tpm2Tools;
  let key: GeneratedKey;

  beforeAll(async () => {
    tpm = await startSwtpm();
    tools = await Tpm2Tools.on(tpm);
    key = await tools.generateRsaKey("kf");
  }, 60_000);
  afterAll(async () => {
    await tpm?.stop();
  });

  test("parent, public area and private blob are what tpm2-tools made", async () => {
    const file = await tools.keyfile(key, "kf");
    const k = parseTss2PrivateKeyPem(await readFile(file, "utf8"));
    expect(k.parent).toBe(0x40000001);
    expect([...k.pubkey]).toEqual([...(await readFile(tools.path("kf.pub")))]);
    expect([...k.privkey]).toEqual([...(await readFile(tools.path("kf.priv")))]);
    const area = parsePublic(k.pubkey);
    expect(area.type).toBe(TPM2_ALG_RSA);
    const jwk = key.publicKey.export({ format: "jwk" });
    expect(Buffer.from(area.rsa!.modulus).toString("base64url")).toBe(jwk.n!);
    expect(area.rsa!.exponent).toBe(65537);
    // the DER is exactly what openssl sees in the PEM
    expect(pemToDer(await readFile(file, "utf8")).byteLength).toBeGreaterThan(k.pubkey.byteLength + k.privkey.byteLength);
  }, 30_000);
});
