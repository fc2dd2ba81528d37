/**
 * The one contract every credential source implements. Sources know nothing about HTTP or caching:
 * the TokenCache in front of them handles expiry, refresh ahead of expiry and single-flight.
 */
import type { Account, InstanceIdentity } from "../metadata/identity.ts";

export type { Account, InstanceIdentity };

export interface AccessTokenRequest {
  account: Account;
  scopes: readonly string[];
  /** Absolute time (ms) by which the source answers or fails; the TokenCache sets it from `-upstreamTimeout`. */
  deadline?: number;
}

export interface IdTokenRequest {
  account: Account;
  audience: string;
  format: "standard" | "full";
  licenses: boolean;
  instance: InstanceIdentity;
  /** As for access tokens. */
  deadline?: number;
}

export interface IssuedToken {
  token: string;
  /** Absolute expiry, milliseconds since the epoch. */
  expiresAt: number;
}

export interface SourceDescription {
  /** Credential type for logs and metrics: "emulated", "static", "serviceAccountKey", "tpm", ... */
  type: string;
  /** Account the source signs as, when it knows it. */
  email?: string;
  /** Public-key fingerprint (hex SHA-256 of the SPKI DER), when the source holds a key. Never the key itself. */
  fingerprint?: string;
}

export interface CredentialSource {
  describe(): SourceDescription;
  accessToken(request: AccessTokenRequest): Promise<IssuedToken>;
  idToken(request: IdTokenRequest): Promise<IssuedToken>;
  /**
   * Sources that sign ID tokens themselves publish their verification keys, served as OpenID discovery and a JWKS
   * on the metadata listener so applications can verify tokens offline.
   */
  openid?: { issuer: string; jwks(): Promise<{ keys: object[] }> };
  /**
   * A source holding the key of one account (a key file) sets its e-mail: it serves that account and the config's
   * default account (the Go emulator's model: the credentials given are the VM's), and other accounts are 404.
   */
  readonly ownAccount?: string;
  /** Release handles (TPM contexts, timers). Idempotent. */
  close?(): Promise<void> | void;
}
