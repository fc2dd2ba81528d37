/**
 * The one contract every credential source implements. Sources know nothing about HTTP or caching:
 * the TokenCache in front of them handles expiry, refresh ahead of expiry and single-flight.
 */

/** A service account as the metadata tree describes it. */
export interface Account {
  /** The account's e-mail address (never the `default` alias). */
  email: string;
  /** Scopes from the config; used when a token request names none. */
  scopes: readonly string[];
}

/** Facts about the emulated VM that `format=full` ID tokens carry in `google.compute_engine`. */
export interface InstanceIdentity {
  projectId: string;
  projectNumber: string;
  instanceId: string;
  instanceName: string;
  zone: string;
  instanceCreationTimestamp: number;
  licenseIds: readonly string[];
}

export interface AccessTokenRequest {
  account: Account;
  scopes: readonly string[];
}

export interface IdTokenRequest {
  account: Account;
  audience: string;
  format: "standard" | "full";
  licenses: boolean;
  instance: InstanceIdentity;
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
  /** Release handles (TPM contexts, timers). Idempotent. */
  close?(): Promise<void> | void;
}
