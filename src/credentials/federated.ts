/**
 * Workload identity federation (`-federate`), as the Go emulator does it: an `external_account` credential
 * configuration (`GOOGLE_APPLICATION_CREDENTIALS`) through google-auth-library's external-account clients.
 *
 * - Access tokens: the subject token (from a file or a URL) is exchanged at the configuration's `token_url` (STS)
 *   for a federated access token; with `service_account_impersonation_url` that token is then exchanged at IAM
 *   Credentials for the service account's. Either way the result is served, with the requested scopes.
 * - ID tokens: IAM Credentials `generateIdToken` for the requested account (the config's default one), called with
 *   the federated credentials' own cloud-platform token, as the Go emulator does. The federated principal (or the
 *   impersonated service account) needs `iam.serviceAccounts.getOpenIdToken` on that account. Google mints the token:
 *   `format=full` and `licenses` cannot be honoured.
 *
 * @example
 *   const adc = await readAdcFile(process.env.GOOGLE_APPLICATION_CREDENTIALS!);
 *   const source = await FederatedSource.open(adc, { iamUrl: "https://iamcredentials.googleapis.com" });
 */
import { CredentialError } from "../errors.ts";
import { optionalUrl, requireString, type AdcFile } from "./adc.ts";
import { CLOUD_PLATFORM_SCOPE } from "./google.ts";
import { IamCredentials } from "./iam.ts";
import { errorText } from "./service-account.ts";
import type { AccessTokenRequest, CredentialSource, IdTokenRequest, IssuedToken, SourceDescription } from "./source.ts";

type ExternalClient = import("google-auth-library").BaseExternalAccountClient;

/** Check an `external_account` file's shape; errors name the file and the field. */
export function checkExternalAccount(adc: AdcFile): void {
  if (adc.type !== "external_account") {
    const instead =
      adc.type === "service_account"
        ? "; for a service account key use -serviceAccountFile"
        : adc.type === "authorized_user"
          ? "; for user credentials use -impersonate"
          : "";
    throw new CredentialError(
      "ADC_WRONG_TYPE",
      `${adc.path}: "type" is ${JSON.stringify(adc.type)}; workload identity federation needs an "external_account" credential configuration (gcloud iam workload-identity-pools create-cred-config)${instead}`,
    );
  }
  requireString(adc, "audience");
  requireString(adc, "subject_token_type");
  const source = adc.json.credential_source;
  if (source === null || typeof source !== "object" || Array.isArray(source)) {
    throw new CredentialError(
      "ADC_INVALID",
      `${adc.path}: "credential_source" is missing: it says where the subject token comes from (a file or a url)`,
    );
  }
  optionalUrl(adc, "token_url");
  const impersonation = optionalUrl(adc, "service_account_impersonation_url");
  if (impersonation && !/\/serviceAccounts\/[^/:]+:generateAccessToken$/.test(impersonation)) {
    throw new CredentialError(
      "ADC_INVALID",
      `${adc.path}: "service_account_impersonation_url" must end in /serviceAccounts/{email}:generateAccessToken, found ${JSON.stringify(impersonation)}`,
    );
  }
}

/** The service account an `external_account` file impersonates, if it names one. */
export function impersonatedAccount(adc: AdcFile): string | undefined {
  const url = adc.json.service_account_impersonation_url;
  return typeof url === "string" ? /\/serviceAccounts\/([^/:]+):generateAccessToken$/.exec(url)?.[1] : undefined;
}

/**
 * google-auth-library's client for an `external_account` file, chosen as `ExternalAccountClient.fromJSON` chooses
 * (AWS for `environment_id`, pluggable for `executable`, else identity pool: file, url or certificate) but built
 * directly, which skips that method's console warning: the file is the operator's own configuration.
 */
export async function createExternalAccountClient(adc: AdcFile, scopes: readonly string[]): Promise<ExternalClient> {
  const lib = await import("google-auth-library");
  const options = { ...adc.json, scopes: [...scopes] } as unknown as ConstructorParameters<typeof lib.IdentityPoolClient>[0];
  const source = adc.json.credential_source as Record<string, unknown>;
  try {
    if (source.environment_id) return new lib.AwsClient(options as unknown as ConstructorParameters<typeof lib.AwsClient>[0]);
    if (source.executable)
      return new lib.PluggableAuthClient(options as unknown as ConstructorParameters<typeof lib.PluggableAuthClient>[0]);
    return new lib.IdentityPoolClient(options);
  } catch (e) {
    throw new CredentialError("ADC_INVALID", `${adc.path}: ${(e as Error).message}`, { cause: e });
  }
}

export interface FederatedSourceOptions {
  /** IAM Credentials base URL for ID tokens (`-iamURL`). */
  iamUrl?: string;
  now?: () => number;
}

export class FederatedSource implements CredentialSource {
  private readonly clients = new Map<string, Promise<ExternalClient>>();
  private readonly iam: IamCredentials;
  private readonly now: () => number;
  /** The service account the file impersonates, if any. */
  readonly serviceAccount: string | undefined;

  /** Check the file and build its client now, so a bad configuration stops start-up; no token is fetched. */
  static async open(adc: AdcFile, options: FederatedSourceOptions = {}): Promise<FederatedSource> {
    const source = new FederatedSource(adc, options);
    await source.client([CLOUD_PLATFORM_SCOPE]);
    return source;
  }

  constructor(
    private readonly adc: AdcFile,
    options: FederatedSourceOptions = {},
  ) {
    checkExternalAccount(adc);
    this.serviceAccount = impersonatedAccount(adc);
    this.iam = new IamCredentials({ ...(options.iamUrl ? { url: options.iamUrl } : {}), ...(options.now ? { now: options.now } : {}) });
    this.now = options.now ?? Date.now;
  }

  describe(): SourceDescription {
    return { type: "federated", ...(this.serviceAccount ? { email: this.serviceAccount } : {}) };
  }

  /** One client per scope set; each keeps its own federated token, which the library refreshes when due. */
  private client(scopes: readonly string[]): Promise<ExternalClient> {
    const key = scopes.join(" ");
    let c = this.clients.get(key);
    if (!c) {
      c = createExternalAccountClient(this.adc, scopes);
      this.clients.set(key, c);
      c.catch(() => this.clients.delete(key));
    }
    return c;
  }

  /** A federated (or impersonated) access token from the client for `scopes`. */
  private async federatedToken(scopes: readonly string[]): Promise<IssuedToken> {
    const client = await this.client(scopes);
    let token: string | null | undefined;
    try {
      token = (await client.getAccessToken()).token;
    } catch (e) {
      throw new CredentialError("FEDERATION_FAILED", `workload identity federation with ${this.adc.path} failed: ${errorText(e)}`, {
        cause: e,
      });
    }
    if (!token)
      throw new CredentialError("FEDERATION_FAILED", `workload identity federation with ${this.adc.path} returned no access token`);
    const expiry = client.credentials.expiry_date;
    return { token, expiresAt: typeof expiry === "number" && expiry > 0 ? expiry : this.now() + 3600_000 };
  }

  accessToken(req: AccessTokenRequest): Promise<IssuedToken> {
    return this.federatedToken(req.scopes.length ? req.scopes : [CLOUD_PLATFORM_SCOPE]);
  }

  async idToken(req: IdTokenRequest): Promise<IssuedToken> {
    const { token } = await this.federatedToken([CLOUD_PLATFORM_SCOPE]);
    return this.iam.generateIdToken(token, req.account.email, req.audience);
  }
}
