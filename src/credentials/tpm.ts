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
import { signJwt } from "./jwt.ts";
import { CLOUD_PLATFORM_SCOPE, GOOGLE_TOKEN_URL } from "./google.ts";
import type { AccessTokenRequest, CredentialSource, IdTokenRequest, IssuedToken, SourceDescription } from "./source.ts";
import { jwtExpiry } from "./jwt.ts";
import type { TpmSigner } from "../tpm/signer.ts";

const JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer";
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
  /** Time allowed for one token-endpoint request (default 30 s). */
  timeoutMs?: number;
  now?: () => number;
  fetch?: (url: string, init: RequestInit) => Promise<Response>;
}

export class TpmSource implements CredentialSource {
  private readonly email: string;
  private readonly tokenUrl: string;
  private readonly now: () => number;
  private readonly fetch: (url: string, init: RequestInit) => Promise<Response>;
  private readonly sign: (data: Uint8Array) => Promise<Uint8Array>;

  constructor(private readonly options: TpmSourceOptions) {
    this.email = options.email;
    this.tokenUrl = options.tokenUrl ?? GOOGLE_TOKEN_URL;
    this.now = options.now ?? Date.now;
    this.fetch = options.fetch ?? ((url, init) => fetch(url, init));
    this.sign = (data) => options.signer.sign(data);
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
    const body = await this.exchange(assertion, "an access token");
    if (typeof body.access_token !== "string" || body.access_token === "") {
      throw new CredentialError(
        "TOKEN_EXCHANGE_FAILED",
        `the token endpoint ${this.tokenUrl} answered without an access_token for ${this.email}`,
      );
    }
    const expiresIn = typeof body.expires_in === "number" && body.expires_in > 0 ? body.expires_in : LIFETIME_SECONDS;
    return { token: body.access_token, expiresAt: this.now() + expiresIn * 1000 };
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
    const body = await this.exchange(await signJwt(claims, this.sign, kid), "an ID token");
    if (typeof body.id_token !== "string" || body.id_token === "") {
      throw new CredentialError(
        "TOKEN_EXCHANGE_FAILED",
        `the token endpoint ${this.tokenUrl} answered without an id_token for ${this.email}`,
      );
    }
    return { token: body.id_token, expiresAt: jwtExpiry(body.id_token) ?? this.now() + LIFETIME_SECONDS * 1000 };
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

  /** POST the JWT-bearer grant; the endpoint's error and description on failure, never the assertion. */
  private async exchange(assertion: string, what: string): Promise<Record<string, unknown>> {
    let res: Response;
    try {
      res = await this.fetch(this.tokenUrl, {
        method: "POST",
        headers: { "Content-Type": "application/x-www-form-urlencoded", Accept: "application/json" },
        body: new URLSearchParams({ grant_type: JWT_BEARER, assertion }).toString(),
        signal: AbortSignal.timeout(this.options.timeoutMs ?? 30_000),
      });
    } catch (e) {
      const reason = (e as Error).name === "TimeoutError" ? "timed out" : (e as Error).message;
      throw new CredentialError("TOKEN_ENDPOINT_UNREACHABLE", `cannot reach the token endpoint ${this.tokenUrl} for ${what}: ${reason}`, {
        cause: e,
      });
    }
    const text = await res.text().catch(() => "");
    let body: Record<string, unknown> | undefined;
    try {
      const parsed: unknown = JSON.parse(text);
      if (parsed !== null && typeof parsed === "object" && !Array.isArray(parsed)) body = parsed as Record<string, unknown>;
    } catch {
      // reported below
    }
    if (res.ok && body) return body;
    if (res.ok) {
      throw new CredentialError(
        "TOKEN_EXCHANGE_FAILED",
        `the token endpoint ${this.tokenUrl} answered ${res.status} for ${what} of ${this.email}, but not with a JSON object`,
      );
    }
    let reason: string;
    if (body && typeof body.error === "string") {
      reason = body.error + (typeof body.error_description === "string" ? `: ${body.error_description}` : "");
    } else if (body?.error && typeof body.error === "object" && typeof (body.error as { message?: unknown }).message === "string") {
      reason = (body.error as { message: string }).message;
    } else {
      reason = text.replaceAll(assertion, "[assertion]").replace(/\s+/g, " ").trim().slice(0, 200) || "(empty body)";
    }
    throw new CredentialError(
      "TOKEN_EXCHANGE_FAILED",
      `the token endpoint ${this.tokenUrl} refused the TPM-signed assertion for ${what} of ${this.email}: ${res.status} ${reason}`,
    );
  }
}
