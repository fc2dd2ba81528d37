/**
 * A service-account key file (`-serviceAccountFile`): the RS256 assertion is signed here with the key and exchanged
 * at the token endpoint (the JWT-bearer grant, through the shared upstream helper: deadline, retries, classified
 * errors), the calls google-auth-library's JWT client makes. The key's `token_uri` is honoured, so a key can point at
 * a private or local token endpoint. The key serves its own account (and the config's default account); ID tokens
 * the endpoint mints are checked against Google's keys.
 */
import { CredentialError, unreadableReason } from "../errors.ts";
import { CLOUD_PLATFORM_SCOPE, defaultIdTokenKeysUrl, GOOGLE_TOKEN_URL } from "./google.ts";
import { IdTokenKeys } from "./id-token-keys.ts";
import { type Rs256Signer, signJwt } from "./jwt.ts";
import { accessTokenFrom, type GrantCall, idTokenFrom, jwtBearerGrant } from "./oauth.ts";
import type { AccessTokenRequest, CredentialSource, IdTokenRequest, IssuedToken, SourceDescription } from "./source.ts";
import { DEFAULT_UPSTREAM_TIMEOUT_MS, type Fetch, hostOf } from "./upstream.ts";

// node:crypto on first use: this module is reachable from start-up (sources share GOOGLE_TOKEN_URL and helpers), and
// importing node:crypto there is part of ~2 ms of the compiled server's start-up (see http/listen.ts).
const nodeCrypto = () => require("node:crypto") as typeof import("node:crypto");

export interface ServiceAccountKey {
  type: "service_account";
  client_email: string;
  private_key: string;
  private_key_id?: string;
  project_id?: string;
  token_uri?: string;
  universe_domain?: string;
}

/** Read and check a key file; errors say which field is wrong. */
export async function readServiceAccountKey(path: string): Promise<ServiceAccountKey> {
  let text: string;
  try {
    text = await Bun.file(path).text();
  } catch (e) {
    throw new CredentialError("KEY_UNREADABLE", `${path}: cannot read the service account key file (${unreadableReason(e)})`, { cause: e });
  }
  let json: Record<string, unknown>;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw new CredentialError(
      "KEY_INVALID",
      `${path}: not JSON (${(e as Error).message}); expected a service account key downloaded from IAM`,
      { cause: e },
    );
  }
  if (json === null || typeof json !== "object") throw new CredentialError("KEY_INVALID", `${path}: not a JSON object`);
  if (json.type !== "service_account") {
    throw new CredentialError("KEY_INVALID", `${path}: "type" is ${JSON.stringify(json.type)}, expected "service_account"`);
  }
  return checkServiceAccountKey(json, path);
}

/** Check the fields of a parsed key whose `type` is `service_account`; `path` names it in errors. */
export function checkServiceAccountKey(json: Record<string, unknown>, path: string): ServiceAccountKey {
  for (const field of ["client_email", "private_key"] as const) {
    if (typeof json[field] !== "string" || json[field] === "") throw new CredentialError("KEY_INVALID", `${path}: "${field}" is missing`);
  }
  try {
    nodeCrypto().createPrivateKey(json.private_key as string);
  } catch (e) {
    throw new CredentialError("KEY_INVALID", `${path}: "private_key" is not a PEM private key (${(e as Error).message})`, { cause: e });
  }
  if (json.token_uri !== undefined && (typeof json.token_uri !== "string" || !/^https?:\/\//.test(json.token_uri))) {
    throw new CredentialError("KEY_INVALID", `${path}: "token_uri" must be an http(s) URL`);
  }
  return json as unknown as ServiceAccountKey;
}

/** Hex SHA-256 of the public key's SPKI DER: identifies a key in logs and metrics without revealing it. */
export function keyFingerprint(privateKeyPem: string): string {
  const { createHash, createPrivateKey, createPublicKey } = nodeCrypto();
  const spki = createPublicKey(createPrivateKey(privateKeyPem)).export({ type: "spki", format: "der" });
  return createHash("sha256").update(spki).digest("hex");
}

/** RS256 with a PEM private key (node:crypto), as a {@link Rs256Signer}. */
export function keySigner(privateKeyPem: string): Rs256Signer {
  let key: import("node:crypto").KeyObject | undefined;
  return async (data) => {
    const crypto = nodeCrypto();
    key ??= crypto.createPrivateKey(privateKeyPem);
    return new Uint8Array(crypto.sign("RSA-SHA256", data, key));
  };
}

/** Lifetime of the assertions, Google's maximum. */
const ASSERTION_SECONDS = 3600;

/**
 * A key's two grants at its token endpoint, as google-auth-library makes them: an assertion
 * `{iss, scope, aud, exp, iat}` (or `{iss, aud, exp, iat, target_audience}` for an ID token) with the key's id as
 * `kid`, and `aud` Google's token URL whatever `token_uri` says (Google checks `aud`; the post goes to `token_uri`),
 * except for a key of another universe (`universe_domain`), whose own token endpoint is the audience.
 */
export class KeyGrants {
  readonly tokenUrl: string;
  /** Google's token URL, except in another universe, whose token endpoint is the key's own. */
  private readonly audience: string;
  private readonly sign: Rs256Signer;

  constructor(
    private readonly key: ServiceAccountKey,
    private readonly options: { tokenUrl?: string; timeoutMs?: number; fetch?: Fetch } = {},
  ) {
    this.tokenUrl = key.token_uri ?? options.tokenUrl ?? GOOGLE_TOKEN_URL;
    this.audience = key.universe_domain && key.universe_domain !== "googleapis.com" ? this.tokenUrl : GOOGLE_TOKEN_URL;
    this.sign = keySigner(key.private_key);
  }

  call(what: string, deadline: number | undefined): GrantCall {
    return {
      tokenUrl: this.tokenUrl,
      deadline: deadline ?? Date.now() + (this.options.timeoutMs ?? DEFAULT_UPSTREAM_TIMEOUT_MS),
      credential: "the key",
      what,
      email: this.key.client_email,
      ...(this.options.fetch ? { fetch: this.options.fetch } : {}),
    };
  }

  private assertion(claims: Record<string, unknown>): Promise<string> {
    const iat = Math.floor(Date.now() / 1000);
    return signJwt(
      { iss: this.key.client_email, ...claims, aud: this.audience, exp: iat + ASSERTION_SECONDS, iat },
      this.sign,
      this.key.private_key_id ? { kid: this.key.private_key_id } : {},
    );
  }

  async accessToken(scopes: readonly string[], deadline?: number): Promise<IssuedToken> {
    const call = this.call("an access token", deadline);
    const body = await jwtBearerGrant(await this.assertion({ scope: scopes.join(" ") }), call);
    return accessTokenFrom(body, call);
  }

  async idToken(audience: string, deadline?: number): Promise<IssuedToken & { call: GrantCall }> {
    const call = this.call("an ID token", deadline);
    const body = await jwtBearerGrant(await this.assertion({ target_audience: audience }), call);
    return { ...idTokenFrom(body, call), call };
  }
}

export interface ServiceAccountKeySourceOptions {
  /** Token endpoint when the key names none (default Google's). */
  tokenUrl?: string;
  /** Deadline of a call when the request carries none (default 10 s, `-upstreamTimeout`'s). */
  timeoutMs?: number;
  /** JWKS that ID tokens must verify with; `false` skips the check. Default: Google's keys for Google's token URL. */
  idTokenKeysUrl?: string | false;
  fetch?: Fetch;
}

export class ServiceAccountKeySource implements CredentialSource {
  private readonly fingerprint: string;
  private readonly grants: KeyGrants;
  private readonly keys: IdTokenKeys | undefined;
  readonly ownAccount: string;

  constructor(
    private readonly key: ServiceAccountKey,
    options: ServiceAccountKeySourceOptions = {},
  ) {
    this.fingerprint = keyFingerprint(key.private_key);
    this.grants = new KeyGrants(key, options);
    this.ownAccount = key.client_email;
    const keys = options.idTokenKeysUrl ?? defaultIdTokenKeysUrl(this.grants.tokenUrl);
    this.keys = keys ? new IdTokenKeys(keys, options.fetch) : undefined;
  }

  describe(): SourceDescription {
    return { type: "serviceAccountKey", email: this.key.client_email, fingerprint: this.fingerprint };
  }

  /** No client per scope set is kept: each token is one signature and one exchange, cached by the TokenCache. */
  accessToken(req: AccessTokenRequest): Promise<IssuedToken> {
    return this.grants.accessToken(req.scopes.length ? req.scopes : [CLOUD_PLATFORM_SCOPE], req.deadline);
  }

  async idToken(req: IdTokenRequest): Promise<IssuedToken> {
    const { token, expiresAt, call } = await this.grants.idToken(req.audience, req.deadline);
    await this.keys?.check(token, { upstream: "token endpoint", host: hostOf(call.tokenUrl), deadline: call.deadline });
    return { token, expiresAt };
  }
}
