/**
 * Service-account impersonation (`-impersonate`), as the Go emulator does it (google.golang.org/api/impersonate):
 * source credentials from Application Default Credentials get a cloud-platform token, and IAM Credentials mints
 * tokens for the impersonated account with it.
 *
 * - Source: a service-account key, an `authorized_user` file (`gcloud auth application-default login`) or an
 *   `external_account` configuration. A key's `token_uri` (or an authorized_user file's, rarely present) is honoured;
 *   otherwise the source's token requests go to `tokenUrl` (`-tokenURL`, default Google's).
 * - Target: the account the request names, which for `service-accounts/default/…` is the config's default account.
 * - Access tokens: `generateAccessToken` with the requested scopes (the account's from the config when none; the
 *   cloud-platform scope when the config has none either), lifetime 3600 s.
 * - ID tokens: `generateIdToken` with `includeEmail: true`. Google mints them: `format=full` and `licenses` cannot be
 *   honoured (no `google.compute_engine` claims).
 *
 * @example
 *   const adc = await readAdcFile(findAdcFile(process.env)!.path);
 *   const source = new ImpersonatedSource({ adc });
 */
import { CredentialError } from "../errors.ts";
import { optionalUrl, requireString, type AdcFile } from "./adc.ts";
import { checkExternalAccount, createExternalAccountClient, libraryFetch, underDeadline } from "./federated.ts";
import { CLOUD_PLATFORM_SCOPE, DEFAULT_STS_URL, defaultIdTokenKeysUrl, GOOGLE_TOKEN_URL } from "./google.ts";
import { IamCredentials } from "./iam.ts";
import { IdTokenKeys } from "./id-token-keys.ts";
import { accessTokenFrom, refreshGrant } from "./oauth.ts";
import { checkServiceAccountKey, KeyGrants, keyFingerprint, type ServiceAccountKey } from "./service-account.ts";
import type { AccessTokenRequest, CredentialSource, IdTokenRequest, IssuedToken, SourceDescription } from "./source.ts";
import { DEFAULT_UPSTREAM_TIMEOUT_MS, type Fetch, failureText, hostOf, rephrase } from "./upstream.ts";

/** The lifetime the Go emulator asks for (its library's default). */
const LIFETIME_SECONDS = 3600;
/** The source token is renewed when this little of it is left. */
const SOURCE_REFRESH_MS = 300_000;

export interface ImpersonatedSourceOptions {
  /** The ADC file holding the source credentials. */
  adc: AdcFile;
  /** IAM Credentials base URL (`-iamURL`). */
  iamUrl?: string;
  /** Token endpoint for source credentials whose file names none (`-tokenURL`; default Google's). */
  tokenUrl?: string;
  /** Deadline of a token request when the request carries none (default 10 s, `-upstreamTimeout`'s). */
  timeoutMs?: number;
  /** JWKS that ID tokens must verify with; `false` skips the check. Default: Google's keys for Google's IAM. */
  idTokenKeysUrl?: string | false;
  now?: () => number;
  fetch?: Fetch;
}

/** What the source credentials are, for logs: type, principal and file; never a secret. */
export interface SourceSummary {
  type: string;
  /** A key's client_email, an authorized_user's client_id, or an external account's audience. */
  principal: string;
  path: string;
  /** Where the source gets its own token. */
  tokenUrl: string;
}

export class ImpersonatedSource implements CredentialSource {
  readonly source: SourceSummary;
  private readonly iam: IamCredentials;
  private readonly keys: IdTokenKeys | undefined;
  /** The source credentials' cloud-platform token, fetched under a deadline. */
  private readonly fetchSourceToken: (deadline: number) => Promise<IssuedToken>;
  private sourceTokenCache: IssuedToken | undefined;
  private sourceTokenPending: Promise<IssuedToken> | undefined;
  private readonly fingerprint: string | undefined;
  private readonly timeoutMs: number;

  /** Checks the ADC file's fields now (a CredentialError names what is wrong); makes no network call. */
  constructor(options: ImpersonatedSourceOptions) {
    const { adc } = options;
    const fallbackTokenUrl = options.tokenUrl ?? GOOGLE_TOKEN_URL;
    this.timeoutMs = options.timeoutMs ?? DEFAULT_UPSTREAM_TIMEOUT_MS;
    const fetchOption = options.fetch ? { fetch: options.fetch } : {};
    let quotaProject: string | undefined;
    switch (adc.type) {
      case "service_account": {
        const key: ServiceAccountKey = checkServiceAccountKey(adc.json, adc.path);
        this.fingerprint = keyFingerprint(key.private_key);
        const grants = new KeyGrants(key, { tokenUrl: fallbackTokenUrl, ...fetchOption });
        this.source = { type: adc.type, principal: key.client_email, path: adc.path, tokenUrl: grants.tokenUrl };
        this.fetchSourceToken = (deadline) => grants.accessToken([CLOUD_PLATFORM_SCOPE], deadline);
        break;
      }
      case "authorized_user": {
        const clientId = requireString(adc, "client_id");
        const clientSecret = requireString(adc, "client_secret");
        const refreshToken = requireString(adc, "refresh_token");
        const tokenUrl = optionalUrl(adc, "token_uri") ?? fallbackTokenUrl;
        if (typeof adc.json.quota_project_id === "string" && adc.json.quota_project_id) quotaProject = adc.json.quota_project_id;
        this.source = { type: adc.type, principal: clientId, path: adc.path, tokenUrl };
        this.fetchSourceToken = async (deadline) => {
          const call = { tokenUrl, deadline, credential: "the refresh token", what: "an access token", email: clientId, ...fetchOption };
          return accessTokenFrom(await refreshGrant({ clientId, clientSecret, refreshToken }, call), call);
        };
        break;
      }
      case "external_account": {
        checkExternalAccount(adc);
        const sts = typeof adc.json.token_url === "string" ? adc.json.token_url : DEFAULT_STS_URL;
        this.source = { type: adc.type, principal: String(adc.json.audience), path: adc.path, tokenUrl: sts };
        let client: ReturnType<typeof createExternalAccountClient> | undefined;
        this.fetchSourceToken = async (deadline) => {
          const made = (client ??= createExternalAccountClient(
            adc,
            [CLOUD_PLATFORM_SCOPE],
            libraryFetch(adc, this.timeoutMs, options.fetch),
          ));
          made.catch(() => {
            if (client === made) client = undefined;
          });
          const c = await made;
          const token = (await underDeadline(deadline, () => c.getAccessToken())).token;
          if (!token) throw new Error("no access token");
          const expiry = c.credentials.expiry_date;
          return { token, expiresAt: typeof expiry === "number" && expiry > 0 ? expiry : Date.now() + 3600_000 };
        };
        break;
      }
      default:
        throw new CredentialError(
          "ADC_WRONG_TYPE",
          `${adc.path}: "type" is ${JSON.stringify(adc.type)}; -impersonate takes its source credentials from a service_account key, an authorized_user file (gcloud auth application-default login) or an external_account configuration`,
        );
    }
    this.iam = new IamCredentials({
      ...(options.iamUrl ? { url: options.iamUrl } : {}),
      ...(quotaProject ? { quotaProject } : {}),
      ...(options.now ? { now: options.now } : {}),
      timeoutMs: this.timeoutMs,
      ...fetchOption,
    });
    const keys = options.idTokenKeysUrl ?? defaultIdTokenKeysUrl(`${this.iam.url}/`);
    this.keys = keys ? new IdTokenKeys(keys, options.fetch) : undefined;
  }

  describe(): SourceDescription {
    return { type: "impersonated", ...(this.fingerprint ? { fingerprint: this.fingerprint } : {}) };
  }

  /** The source credentials' cloud-platform token: kept until five minutes before it expires; one fetch at a time. */
  private async sourceToken(deadline: number): Promise<string> {
    const have = this.sourceTokenCache;
    if (have && have.expiresAt - Date.now() > SOURCE_REFRESH_MS) return have.token;
    const p = (this.sourceTokenPending ??= this.fetchSourceToken(deadline).finally(() => {
      this.sourceTokenPending = undefined;
    }));
    let issued: IssuedToken;
    try {
      issued = await p;
    } catch (e) {
      throw rephrase(
        e,
        "SOURCE_TOKEN_FAILED",
        `the source credentials (${this.source.type} ${this.source.principal} from ${this.source.path}) could not get a token from ${this.source.tokenUrl}: ${failureText(e)}`,
      );
    }
    this.sourceTokenCache = issued;
    return issued.token;
  }

  async accessToken(req: AccessTokenRequest): Promise<IssuedToken> {
    const deadline = req.deadline ?? Date.now() + this.timeoutMs;
    const scopes = req.scopes.length ? req.scopes : [CLOUD_PLATFORM_SCOPE];
    return this.iam.generateAccessToken(await this.sourceToken(deadline), req.account.email, scopes, LIFETIME_SECONDS, deadline);
  }

  async idToken(req: IdTokenRequest): Promise<IssuedToken> {
    const deadline = req.deadline ?? Date.now() + this.timeoutMs;
    const issued = await this.iam.generateIdToken(await this.sourceToken(deadline), req.account.email, req.audience, deadline);
    await this.keys?.check(issued.token, { upstream: "IAM Credentials", host: hostOf(this.iam.url), deadline });
    return issued;
  }
}
