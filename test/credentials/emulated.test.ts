/** The emulated issuer: Google-shaped tokens, a JWKS that verifies them, a key that can outlive a restart. */
import { describe, expect, test } from "bun:test";
import { mkdtempSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createLocalJWKSet, decodeProtectedHeader, jwtVerify } from "jose";
import { EmulatedIssuer, numericIdFor } from "../../src/credentials/emulated.ts";
import { CredentialError } from "../../src/errors.ts";

const account = { email: "sa@example-project.iam.gserviceaccount.com", scopes: [] };
const instance = {
  projectId: "example-project",
  projectNumber: "123456789012",
  instanceId: "1",
  instanceName: "vm-1",
  zone: "us-central1-a",
  instanceCreationTimestamp: 1700000000,
  licenseIds: ["42"],
};
const request = { account, audience: "https://a.example", format: "standard" as const, licenses: false, instance };

describe("EmulatedIssuer", () => {
  test("access tokens are opaque ya29 strings living an hour", async () => {
    const issuer = new EmulatedIssuer({ now: () => 1_000_000 });
    const a = await issuer.accessToken();
    const b = await issuer.accessToken();
    expect(a.token).toMatch(/^ya29\.[\w-]{120,}$/);
    expect(a.token).not.toBe(b.token);
    expect(a.expiresAt).toBe(1_000_000 + 3600_000);
  });

  test("a custom issuer URL is used for iss and discovery", async () => {
    const issuer = new EmulatedIssuer({ issuer: "https://issuer.test" });
    const { token } = await issuer.idToken(request);
    const { payload } = await jwtVerify(token, createLocalJWKSet((await issuer.openid.jwks()) as never), { issuer: "https://issuer.test" });
    expect(payload.sub).toBe(numericIdFor(account.email));
    expect(issuer.openid.issuer).toBe("https://issuer.test");
  });

  test("numeric ids are stable 21-digit strings, distinct per account", () => {
    expect(numericIdFor("a@b")).toMatch(/^1\d{20}$/);
    expect(numericIdFor("a@b")).toBe(numericIdFor("a@b"));
    expect(numericIdFor("a@b")).not.toBe(numericIdFor("c@d"));
  });

  test("with a key file, tokens from before a restart still verify after it", async () => {
    const file = join(mkdtempSync(join(tmpdir(), "issuer-")), "issuer.pem");
    const first = new EmulatedIssuer({ keyFile: file });
    const { token } = await first.idToken(request);
    expect(statSync(file).mode & 0o777).toBe(0o600);
    const second = new EmulatedIssuer({ keyFile: file });
    const jwks = createLocalJWKSet((await second.openid.jwks()) as never);
    const { payload } = await jwtVerify(token, jwks, { audience: "https://a.example" });
    expect(payload.aud).toBe("https://a.example");
    expect(decodeProtectedHeader(token).kid).toBe(((await second.openid.jwks()).keys[0] as { kid: string }).kid);
    // Without the file, a restart means a new key: the old token no longer verifies.
    const third = new EmulatedIssuer();
    await expect(jwtVerify(token, createLocalJWKSet((await third.openid.jwks()) as never))).rejects.toThrow();
  });

  test("a key file that is not a PKCS#8 RSA key is a clear error", async () => {
    const file = join(mkdtempSync(join(tmpdir(), "issuer-")), "bad.pem");
    writeFileSync(file, "not a key");
    const issuer = new EmulatedIssuer({ keyFile: file });
    const err = await issuer.idToken(request).catch((e) => e);
    expect(err).toBeInstanceOf(CredentialError);
    expect(err.message).toContain(`${file}: not an RSA private key in PKCS#8 PEM`);
  });
});
