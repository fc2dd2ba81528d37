/**
 * The emulated issuer, the default source when no credentials are given: it mints opaque access tokens and RS256
 * ID tokens shaped exactly like Google's, signed with its own key. Its tokens are not valid at Google; apps under
 * test verify ID tokens against the JWKS served on the metadata listener.
 */
import type { CredentialSource, IdTokenRequest, IssuedToken, SourceDescription } from "./source.ts";
import { CredentialError } from "../errors.ts";
import type { JWK } from "jose";

export interface EmulatedIssuerOptions {
  /** `iss` of ID tokens; Google's by default. */
  issuer?: string;
  /** PKCS#8 PEM file that holds the signing key; created on first use if missing, so tokens verify across restarts. */
  keyFile?: string;
  /** Token lifetime in seconds (Google's: 3600). */
  lifetimeSeconds?: number;
  now?: () => number;
}

export const GOOGLE_ISSUER = "https://accounts.google.com";

interface SigningKey {
  privateKey: CryptoKey;
  kid: string;
  jwk: Record<string, unknown>;
}

/** A stable 21-digit numeric id per account, like a service account's unique id. */
export function numericIdFor(email: string): string {
  const digest = new Bun.CryptoHasher("sha256").update(email).digest();
  let n = 0n;
  for (const byte of digest.subarray(0, 9)) n = (n << 8n) | BigInt(byte);
  return `1${(n % 10n ** 20n).toString().padStart(20, "0")}`;
}

export class EmulatedIssuer implements CredentialSource {
  readonly openid: { issuer: string; jwks(): Promise<{ keys: object[] }> };
  private key: Promise<SigningKey> | undefined;
  private readonly issuer: string;
  private readonly lifetime: number;
  private readonly now: () => number;

  constructor(private readonly options: EmulatedIssuerOptions = {}) {
    this.issuer = options.issuer ?? GOOGLE_ISSUER;
    this.lifetime = (options.lifetimeSeconds ?? 3600) * 1000;
    this.now = options.now ?? Date.now;
    this.openid = {
      issuer: this.issuer,
      jwks: async () => {
        const { jwk } = await this.signingKey();
        return { keys: [jwk] };
      },
    };
  }

  describe(): SourceDescription {
    return { type: "emulated" };
  }

  async accessToken(): Promise<IssuedToken> {
    const random = Buffer.from(crypto.getRandomValues(new Uint8Array(96))).toString("base64url");
    return { token: `ya29.${random}`, expiresAt: this.now() + this.lifetime };
  }

  async idToken(req: IdTokenRequest): Promise<IssuedToken> {
    const { SignJWT } = await import("jose");
    const key = await this.signingKey();
    const iat = Math.floor(this.now() / 1000);
    const exp = iat + this.lifetime / 1000;
    const id = numericIdFor(req.account.email);
    const claims: Record<string, unknown> = { aud: req.audience, azp: id };
    if (req.format === "full") {
      const i = req.instance;
      const ce: Record<string, unknown> = {
        instance_creation_timestamp: i.instanceCreationTimestamp,
        instance_id: i.instanceId,
        instance_name: i.instanceName,
        project_id: i.projectId,
        project_number: Number(i.projectNumber),
        zone: i.zone,
      };
      if (req.licenses) ce.license_id = [...i.licenseIds];
      claims.email = req.account.email;
      claims.email_verified = true;
      claims.google = { compute_engine: ce };
    }
    const token = await new SignJWT(claims)
      .setProtectedHeader({ alg: "RS256", kid: key.kid, typ: "JWT" })
      .setIssuedAt(iat)
      .setExpirationTime(exp)
      .setIssuer(this.issuer)
      .setSubject(id)
      .sign(key.privateKey);
    return { token, expiresAt: exp * 1000 };
  }

  /** The key is made (or read) on first use, so start-up pays nothing for it. */
  private signingKey(): Promise<SigningKey> {
    return (this.key ??= this.loadKey().catch((e) => {
      this.key = undefined;
      throw e;
    }));
  }

  private async loadKey(): Promise<SigningKey> {
    const jose = await import("jose");
    const file = this.options.keyFile;
    let privateKey: CryptoKey | undefined;
    if (file && (await Bun.file(file).exists())) {
      const pem = await Bun.file(file).text();
      try {
        privateKey = (await jose.importPKCS8(pem, "RS256", { extractable: true })) as CryptoKey;
      } catch (e) {
        throw new CredentialError(
          "ISSUER_KEY_INVALID",
          `${file}: not an RSA private key in PKCS#8 PEM (${(e as Error).message}); delete it to have a new one made`,
          { cause: e },
        );
      }
    }
    if (!privateKey) {
      const pair = await jose.generateKeyPair("RS256", { modulusLength: 2048, extractable: true });
      privateKey = pair.privateKey as CryptoKey;
      if (file) {
        const { chmod } = await import("node:fs/promises");
        await Bun.write(file, await jose.exportPKCS8(privateKey));
        await chmod(file, 0o600);
      }
    }
    const full = await jose.exportJWK(privateKey);
    const jwk: Record<string, unknown> = { kty: full.kty, n: full.n, e: full.e };
    const kid = await jose.calculateJwkThumbprint(jwk as JWK);
    return { privateKey, kid, jwk: { ...jwk, alg: "RS256", use: "sig", kid } };
  }
}
