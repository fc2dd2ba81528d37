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
import { checkExternalAccount, createExternalAccountClient } from "./federated.ts";
import { CLOUD_PLATFORM_SCOPE, DEFAULT_STS_URL, GOOGLE_TOKEN_URL } from "./google.ts";
import { IamCredentials } from "./iam.ts";
import { checkServiceAccountKey, createJwtClient, errorText, keyFingerprint, type ServiceAccountKey } from "./service-account.ts";
import type { AccessTokenRequest, CredentialSource, IdTokenRequest, IssuedToken, SourceDescription } from "./source.ts";

/** The lifetime the Go emulator asks for (its library's default). */
const LIFETIME_SECONDS = 3600;

interface SourceClient {
  getAccessToken(): Promise<{ token?: string | null }>;
}

export interface ImpersonatedSourceOptions {
  /** The ADC file holding the source credentials. */
  adc: AdcFile;
  /** IAM Credentials base URL (`-iamURL`). */
  iamUrl?: string;
  /** Token endpoint for source credentials whose file names none (`-tokenURL`; default Google's). */
  tokenUrl?: string;
  now?: () => number;
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
  private readonly makeClient: () => Promise<SourceClient>;
  private client: Promise<SourceClient> | undefined;
  private readonly fingerprint: string | undefined;

  /** Checks the ADC file's fields now (a CredentialError names what is wrong); makes no network call. */
  constructor(options: ImpersonatedSourceOptions) {
    const { adc } = options;
    const fallbackTokenUrl = options.tokenUrl ?? GOOGLE_TOKEN_URL;
    let quotaProject: string | undefined;
    switch (adc.type) {
      case "service_account": {
        const key: ServiceAccountKey = checkServiceAccountKey(adc.json, adc.path);
        this.fingerprint = keyFingerprint(key.private_key);
        this.source = { type: adc.type, principal: key.client_email, path: adc.path, tokenUrl: key.token_uri ?? fallbackTokenUrl };
        this.makeClient = () => createJwtClient(key, [CLOUD_PLATFORM_SCOPE], fallbackTokenUrl);
        break;
      }
      case "authorized_user": {
        const clientId = requireString(adc, "client_id");
        const clientSecret = requireString(adc, "client_secret");
        const refreshToken = requireString(adc, "refresh_token");
        const tokenUrl = optionalUrl(adc, "token_uri") ?? fallbackTokenUrl;
        if (typeof adc.json.quota_project_id === "string" && adc.json.quota_project_id) quotaProject = adc.json.quota_project_id;
        this.source = { type: adc.type, principal: clientId, path: adc.path, tokenUrl };
        this.makeClient = async () => {
          const { UserRefreshClient } = await import("google-auth-library");
          return new UserRefreshClient({ clientId, clientSecret, refreshToken, endpoints: { oauth2TokenUrl: tokenUrl } });
        };
        break;
      }
      case "external_account": {
        checkExternalAccount(adc);
        const sts = typeof adc.json.token_url === "string" ? adc.json.token_url : DEFAULT_STS_URL;
        this.source = { type: adc.type, principal: String(adc.json.audience), path: adc.path, tokenUrl: sts };
        this.makeClient = () => createExternalAccountClient(adc, [CLOUD_PLATFORM_SCOPE]);
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
    });
  }

  describe(): SourceDescription {
    return { type: "impersonated", ...(this.fingerprint ? { fingerprint: this.fingerprint } : {}) };
  }

  /** The source credentials' cloud-platform token; the client caches it and refreshes it when due. */
  private async sourceToken(): Promise<string> {
    if (!this.client) {
      const c = this.makeClient();
      this.client = c;
      c.catch(() => {
        if (this.client === c) this.client = undefined;
      });
    }
    let token: string | null | undefined;
    try {
      token = (await (await this.client).getAccessToken()).token;
    } catch (e) {
      throw new CredentialError(
        "SOURCE_TOKEN_FAILED",
        `the source credentials (${this.source.type} ${this.source.principal} from ${this.source.path}) could not get a token from ${this.source.tokenUrl}: ${errorText(e)}`,
        { cause: e },
      );
    }
    if (!token) throw new CredentialError("SOURCE_TOKEN_FAILED", `the source credentials (${this.source.path}) returned no access token`);
    return token;
  }

  async accessToken(req: AccessTokenRequest): Promise<IssuedToken> {
    const scopes = req.scopes.length ? req.scopes : [CLOUD_PLATFORM_SCOPE];
    return this.iam.generateAccessToken(await this.sourceToken(), req.account.email, scopes, LIFETIME_SECONDS);
  }

  async idToken(req: IdTokenRequest): Promise<IssuedToken> {
    return this.iam.generateIdToken(await this.sourceToken(), req.account.email, req.audience);
  }
}
