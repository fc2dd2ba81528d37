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
    const pem = file ? await readIssuerKey(file) : undefined;
    if (file && pem !== undefined) {
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
        const written = await writeIssuerKey(file, await jose.exportPKCS8(privateKey));
        // Another process made the file first: use its key, so both sign alike.
        if (written !== undefined) return this.keyFrom(jose, written, file);
      }
    }
    return this.signingKeyOf(jose, privateKey);
  }

  private async keyFrom(jose: typeof import("jose"), pem: string, file: string): Promise<SigningKey> {
    try {
      return this.signingKeyOf(jose, (await jose.importPKCS8(pem, "RS256", { extractable: true })) as CryptoKey);
    } catch (e) {
      throw new CredentialError("ISSUER_KEY_INVALID", `${file}: not an RSA private key in PKCS#8 PEM (${(e as Error).message})`, {
        cause: e,
      });
    }
  }

  private async signingKeyOf(jose: typeof import("jose"), privateKey: CryptoKey): Promise<SigningKey> {
    const full = await jose.exportJWK(privateKey);
    const jwk: Record<string, unknown> = { kty: full.kty, n: full.n, e: full.e };
    const kid = await jose.calculateJwkThumbprint(jwk as JWK);
    return { privateKey, kid, jwk: { ...jwk, alg: "RS256", use: "sig", kid } };
  }
}

/**
 * The issuer key file's PEM, or undefined when there is none. The file is opened first and checked through its
 * descriptor (no window to swap it): it must belong to this user and be writable by no one else, since whoever can
 * write it chooses the key every ID token is signed with.
 */
async function readIssuerKey(file: string): Promise<string | undefined> {
  const fs = await import("node:fs/promises");
  let handle: import("node:fs/promises").FileHandle;
  try {
    handle = await fs.open(file, "r");
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === "ENOENT") return undefined;
    throw new CredentialError("ISSUER_KEY_INVALID", `${file}: cannot read the issuer key (${code ?? (e as Error).message})`, { cause: e });
  }
  try {
    const st = await handle.stat();
    const uid = process.getuid?.();
    if (!st.isFile()) throw new CredentialError("ISSUER_KEY_INVALID", `${file}: not a regular file; give -issuerKey a file path`);
    if (uid !== undefined && st.uid !== uid) {
      throw new CredentialError(
        "ISSUER_KEY_UNSAFE",
        `${file}: the issuer key belongs to user ${st.uid}, not to this user (${uid}); whoever owns it chooses the key ID tokens are signed with. Use a key file of your own (chown ${uid} ${file}), or delete it to have a new one made`,
      );
    }
    if ((st.mode & 0o022) !== 0) {
      throw new CredentialError(
        "ISSUER_KEY_UNSAFE",
        `${file}: the issuer key is writable by ${st.mode & 0o002 ? "others" : "its group"} (mode ${(st.mode & 0o777).toString(8).padStart(4, "0")}); anyone who can write it chooses the key ID tokens are signed with. Run chmod 600 ${file}, or delete it to have a new one made`,
      );
    }
    return await handle.readFile("utf8");
  } finally {
    await handle.close();
  }
}

/**
 * Create the key file in one step: O_CREAT|O_EXCL|O_NOFOLLOW with mode 0600, so a symlink or a file planted at the
 * path is never followed or reused, and the key is never readable by others, not even for a moment. Resolves
 * undefined once written, or with the content of a file another process created first.
 */
async function writeIssuerKey(file: string, pem: string): Promise<string | undefined> {
  const fs = await import("node:fs/promises");
  const { constants } = await import("node:fs");
  let handle: import("node:fs/promises").FileHandle;
  try {
    handle = await fs.open(file, constants.O_CREAT | constants.O_EXCL | constants.O_WRONLY | constants.O_NOFOLLOW, 0o600);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === "EEXIST") {
      const theirs = await readIssuerKey(file).catch((x: unknown) => {
        throw x instanceof CredentialError && (x.code === "ISSUER_KEY_UNSAFE" || x.code === "ISSUER_KEY_INVALID")
          ? x
          : new CredentialError(
              "ISSUER_KEY_INVALID",
              `${file}: something is in the way of the issuer key (a dangling symlink?); remove it`,
            );
      });
      if (theirs !== undefined) return theirs;
      throw new CredentialError(
        "ISSUER_KEY_INVALID",
        `${file}: a symbolic link points nowhere at the issuer key's path; remove it or give another path`,
      );
    }
    throw new CredentialError(
      "ISSUER_KEY_INVALID",
      `${file}: cannot create the issuer key (${code ?? (e as Error).message}); check the directory exists and is writable`,
      {
        cause: e,
      },
    );
  }
  try {
    await handle.writeFile(pem);
  } finally {
    await handle.close();
  }
  return undefined;
}
