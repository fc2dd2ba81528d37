/** Google's endpoints and the one scope the sources fall back to, named once. */

/** OAuth2 token endpoint: JWT-bearer grants of keys and TPM assertions, refresh tokens. */
export const GOOGLE_TOKEN_URL = "https://oauth2.googleapis.com/token";

/** Security Token Service, where an external_account file without `token_url` exchanges its subject token. */
export const DEFAULT_STS_URL = "https://sts.googleapis.com/v1/token";

/** IAM Credentials API base, without `/v1`: generateAccessToken and generateIdToken. */
export const IAM_CREDENTIALS_URL = "https://iamcredentials.googleapis.com";

/** The scope a source asks for when neither the request nor the config names one. */
export const CLOUD_PLATFORM_SCOPE = "https://www.googleapis.com/auth/cloud-platform";

/** Google's ID-token signing keys (JWKS): ID tokens minted by the token endpoint and IAM Credentials verify with them. */
export const GOOGLE_CERTS_URL = "https://www.googleapis.com/oauth2/v3/certs";

/** Google's own minting hosts; ID tokens from them are checked against {@link GOOGLE_CERTS_URL} by default. */
const GOOGLE_MINTERS = /^https:\/\/(oauth2|iamcredentials|www)\.googleapis\.com(:443)?\//;

/**
 * Where to check the signature of ID tokens minted at `mintingUrl`: Google's keys for Google's own hosts; nothing for
 * any other host (a private endpoint, a proxy, a test double) unless the keys' URL is given explicitly, since their
 * tokens may be signed by keys published elsewhere.
 */
export function defaultIdTokenKeysUrl(mintingUrl: string): string | undefined {
  return GOOGLE_MINTERS.test(mintingUrl) ? GOOGLE_CERTS_URL : undefined;
}
