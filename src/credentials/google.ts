/** Google's endpoints and the one scope the sources fall back to, named once. */

/** OAuth2 token endpoint: JWT-bearer grants of keys and TPM assertions, refresh tokens. */
export const GOOGLE_TOKEN_URL = "https://oauth2.googleapis.com/token";

/** Security Token Service, where an external_account file without `token_url` exchanges its subject token. */
export const DEFAULT_STS_URL = "https://sts.googleapis.com/v1/token";

/** IAM Credentials API base, without `/v1`: generateAccessToken and generateIdToken. */
export const IAM_CREDENTIALS_URL = "https://iamcredentials.googleapis.com";

/** The scope a source asks for when neither the request nor the config names one. */
export const CLOUD_PLATFORM_SCOPE = "https://www.googleapis.com/auth/cloud-platform";
