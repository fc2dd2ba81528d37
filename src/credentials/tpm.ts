/**
 * A service-account key held in a TPM (`-tpm`), as the Go emulator uses it (salrashid123/oauth2 TpmTokenSource):
 * every JWT is signed inside the TPM; the private key never leaves it.
 *
 * - Access tokens, by default: a self-signed JWT access token `{scope, iss, sub, exp, iat}` with `iss` = `sub` =
 *   the account, valid one hour. Google accepts these as bearer tokens directly; no network call is made.
 * - Access tokens with `useOauthToken`: the OAuth2 JWT-bearer grant. A TPM-signed assertion
 *   `{iss, scope, aud, iat, exp}` is exchanged at the token endpoint for an ordinary access token.
 * - ID tokens: the same grant with `target_audience`; Google signs the ID token. Google's token endpoint takes
 *   no `format` or `licenses`, so those query parameters cannot be honoured here: the ID token is whatever the
 *   endpoint mints (with Google: `email` and `email_verified` included, no `google.compute_engine` claims).
 *
 * The key belongs to one account, the config's default one: tokens for any other account are refused. The
 * TokenCache in front of every source means the TPM signs once per refresh, not once per request.
 *
 * @example
 *   const signer = await openTpmSigner({ path: "/dev/tpmrm0", persistentHandle: 0x81010002 });
 *   const source = new TpmSource({ signer, email: "app@project.iam.gserviceaccount.com" });
 */
import { CredentialError } from "../errors.ts";
import type { TpmSigner } from "../tpm/signer.ts";
import { CLOUD_PLATFORM_SCOPE, defaultIdTokenKeysUrl, GOOGLE_TOKEN_URL } from "./google.ts";
import { IdTokenKeys } from "./id-token-keys.ts";
import { signJwt } from "./jwt.ts";
import { accessTokenFrom, type GrantCall, idTokenFrom, jwtBearerGrant } from "./oauth.ts";
import type { AccessTokenRequest, CredentialSource, IdTokenRequest, IssuedToken, SourceDescription } from "./source.ts";
import { DEFAULT_UPSTREAM_TIMEOUT_MS, type Fetch, hostOf } from "./upstream.ts";

/** Lifetime of self-signed access tokens and of assertions (Google's maximum for both). */
const LIFETIME_SECONDS = 3600;

export interface TpmSourceOptions {
  /** The opened TPM key (only `sign`, `fingerprint` and `close` are used). */
  signer: Pick<TpmSigner, "sign" | "fingerprint" | "close">;
  /** The account the key belongs to: the config's default service account. */
  email: string;
  /** Exchange assertions at the token endpoint instead of issuing self-signed JWT access tokens. */
  useOauthToken?: boolean;
  /** OAuth2 token endpoint for the exchanges and the assertions' `aud` (default Google's). */
  tokenUrl?: string;
  /** `kid` for the JWT headers: the service-account key id Google gave the TPM key's uploaded certificate, if
   * known. Omitted by default, as by the Go emulator; Google then tries each of the account's keys. */
  keyId?: string;
  /** Deadline of a token-endpoint exchange when the request carries none (default 10 s, `-upstreamTimeout`'s). */
  timeoutMs?: number;
  /**
   * JWKS that ID tokens from the token endpoint must verify with; `false` skips the check. Default: Google's keys
   * when `tokenUrl` is Google's, else none (see {@link defaultIdTokenKeysUrl}).
   */
  idTokenKeysUrl?: string | false;
  now?: () => number;
  fetch?: Fetch;
}

export class TpmSource implements CredentialSource {
  private readonly email: string;
  private readonly tokenUrl: string;
  private readonly now: () => number;
  private readonly sign: (data: Uint8Array) => Promise<Uint8Array>;
  private readonly keys: IdTokenKeys | undefined;

  constructor(private readonly options: TpmSourceOptions) {
    this.email = options.email;
    this.tokenUrl = options.tokenUrl ?? GOOGLE_TOKEN_URL;
    this.now = options.now ?? Date.now;
    this.sign = (data) => options.signer.sign(data);
    const keys = options.idTokenKeysUrl ?? defaultIdTokenKeysUrl(this.tokenUrl);
    this.keys = keys ? new IdTokenKeys(keys, options.fetch) : undefined;
  }

  describe(): SourceDescription {
    return { type: "tpm", email: this.email, fingerprint: this.options.signer.fingerprint };
  }

  async accessToken(req: AccessTokenRequest): Promise<IssuedToken> {
    this.checkAccount(req.account.email);
    const scope = (req.scopes.length ? req.scopes : [CLOUD_PLATFORM_SCOPE]).join(" ");
    const iat = Math.floor(this.now() / 1000);
    const exp = iat + LIFETIME_SECONDS;
    const kid = this.options.keyId === undefined ? {} : { kid: this.options.keyId };
    if (!this.options.useOauthToken) {
      const token = await signJwt({ scope, iss: this.email, sub: this.email, exp, iat }, this.sign, kid);
      return { token, expiresAt: exp * 1000 };
    }
    const assertion = await signJwt({ iss: this.email, scope, aud: this.tokenUrl, exp, iat }, this.sign, kid);
    const call = this.grant("an access token", req.deadline);
    return accessTokenFrom(await jwtBearerGrant(assertion, call), call, this.now());
  }

  async idToken(req: IdTokenRequest): Promise<IssuedToken> {
    this.checkAccount(req.account.email);
    const iat = Math.floor(this.now() / 1000);
    const claims = {
      iss: this.email,
      sub: this.email,
      aud: this.tokenUrl,
      target_audience: req.audience,
      exp: iat + LIFETIME_SECONDS,
      iat,
    };
    const kid = this.options.keyId === undefined ? {} : { kid: this.options.keyId };
    const call = this.grant("an ID token", req.deadline);
    const issued = idTokenFrom(await jwtBearerGrant(await signJwt(claims, this.sign, kid), call), call, this.now());
    await this.keys?.check(issued.token, { upstream: "token endpoint", host: hostOf(this.tokenUrl), deadline: call.deadline });
    return issued;
  }

  private grant(what: string, deadline: number | undefined): GrantCall {
    return {
      tokenUrl: this.tokenUrl,
      deadline: deadline ?? Date.now() + (this.options.timeoutMs ?? DEFAULT_UPSTREAM_TIMEOUT_MS),
      credential: "the TPM-signed assertion",
      what,
      email: this.email,
      ...(this.options.fetch ? { fetch: this.options.fetch } : {}),
    };
  }

  close(): void {
    this.options.signer.close();
  }

  private checkAccount(email: string): void {
    if (email !== this.email) {
      throw new CredentialError(
        "ACCOUNT_NOT_IN_TPM",
        `the TPM key belongs to the default service account ${this.email}; ${email} has no key here`,
      );
    }
  }
}
