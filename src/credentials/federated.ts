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
 *   `format=full` and `licenses` cannot be honoured. The call goes to `-iamURL` when given, else to the origin of
 *   `service_account_impersonation_url` (a private IAM endpoint there serves ID tokens too), else Google's.
 * - Every HTTP call the library makes (subject token URL, STS, impersonation) goes through the shared upstream
 *   helper, under the deadline of the token request that caused it.
 *
 * @example
 *   const adc = await readAdcFile(process.env.GOOGLE_APPLICATION_CREDENTIALS!);
 *   const source = await FederatedSource.open(adc, { iamUrl: "https://iamcredentials.googleapis.com" });
 */
import type { AsyncLocalStorage } from "node:async_hooks";
import { CredentialError } from "../errors.ts";
import { optionalUrl, requireString, type AdcFile } from "./adc.ts";
import { BoundedMap } from "./bounded.ts";
import { CLOUD_PLATFORM_SCOPE, DEFAULT_STS_URL, defaultIdTokenKeysUrl, IAM_CREDENTIALS_URL } from "./google.ts";
import { iamBaseOf, IamCredentials } from "./iam.ts";
import { IdTokenKeys } from "./id-token-keys.ts";
import type { AccessTokenRequest, CredentialSource, IdTokenRequest, IssuedToken, SourceDescription } from "./source.ts";
import { DEFAULT_UPSTREAM_TIMEOUT_MS, type Fetch, failureText, hostOf, rephrase, upstreamFetch } from "./upstream.ts";

type ExternalClient = import("google-auth-library").BaseExternalAccountClient;

/** Scope sets with a client of their own; more are rebuilt on use (each holds one federated token). */
const MAX_CLIENTS = 32;

/** The deadline of the token request a library call runs for: set around it, read by the library's fetch. */
let deadlines: AsyncLocalStorage<number> | undefined;
const deadlineStore = (): AsyncLocalStorage<number> =>
  (deadlines ??= new (require("node:async_hooks") as typeof import("node:async_hooks")).AsyncLocalStorage<number>());

/** Run `fn` (a library call) under `deadline`: the {@link libraryFetch} it makes requests with reads it. */
export function underDeadline<T>(deadline: number, fn: () => Promise<T>): Promise<T> {
  return deadlineStore().run(deadline, fn);
}

/** google-auth-library's fetch: each request through the upstream helper, named after the file's endpoints. */
export function libraryFetch(adc: AdcFile, timeoutMs: number, fetchImpl?: Fetch): ReturnType<typeof upstreamFetch> {
  const sts = typeof adc.json.token_url === "string" ? adc.json.token_url : DEFAULT_STS_URL;
  const impersonation = adc.json.service_account_impersonation_url;
  return upstreamFetch({
    name: (url) => (url === sts ? "STS" : url === impersonation ? "IAM Credentials" : "the subject token URL"),
    deadline: () => deadlineStore().getStore() ?? Date.now() + timeoutMs,
    ...(fetchImpl ? { fetch: fetchImpl } : {}),
  });
}

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
export async function createExternalAccountClient(
  adc: AdcFile,
  scopes: readonly string[],
  fetchImplementation?: ReturnType<typeof upstreamFetch>,
): Promise<ExternalClient> {
  const lib = await import("google-auth-library");
  const options = {
    ...adc.json,
    scopes: [...scopes],
    ...(fetchImplementation ? { transporterOptions: { fetchImplementation } } : {}),
  } as unknown as ConstructorParameters<typeof lib.IdentityPoolClient>[0];
  const source = adc.json.credential_source as Record<string, unknown>;
  try {
    const client = source.environment_id
      ? new lib.AwsClient(options as unknown as ConstructorParameters<typeof lib.AwsClient>[0])
      : source.executable
        ? new lib.PluggableAuthClient(options as unknown as ConstructorParameters<typeof lib.PluggableAuthClient>[0])
        : new lib.IdentityPoolClient(options);
    // The library's STS exchange makes its own transporter, ignoring transporterOptions: give it the client's, so
    // the exchange runs under the same deadline and retries (tested in test/credentials/faults.test.ts).
    if (fetchImplementation) {
      const sts = (client as unknown as { stsCredential?: { transporter?: unknown } }).stsCredential;
      if (sts) sts.transporter = client.transporter;
      // The helper retries inside the deadline; the library's own retries (gaxios) would only add delay after it.
      client.transporter.interceptors.request.add({
        resolved: async (opts) => Object.assign(opts, { retryConfig: { ...opts.retryConfig, retry: 0 } }),
      });
    }
    return client;
  } catch (e) {
    throw new CredentialError("ADC_INVALID", `${adc.path}: ${(e as Error).message}`, { cause: e });
  }
}

export interface FederatedSourceOptions {
  /** IAM Credentials base URL for ID tokens (`-iamURL`); default: the impersonation URL's origin, else Google's. */
  iamUrl?: string;
  /** Deadline of a call when the request carries none (default 10 s, `-upstreamTimeout`'s). */
  timeoutMs?: number;
  /** JWKS that ID tokens must verify with; `false` skips the check. Default: Google's keys for Google's IAM. */
  idTokenKeysUrl?: string | false;
  now?: () => number;
  fetch?: Fetch;
}

export class FederatedSource implements CredentialSource {
  private readonly clients = new BoundedMap<string, Promise<ExternalClient>>(MAX_CLIENTS);
  private readonly iam: IamCredentials;
  private readonly keys: IdTokenKeys | undefined;
  private readonly now: () => number;
  private readonly fetchImpl: ReturnType<typeof upstreamFetch>;
  private readonly timeoutMs: number;
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
    this.timeoutMs = options.timeoutMs ?? DEFAULT_UPSTREAM_TIMEOUT_MS;
    const impersonation = adc.json.service_account_impersonation_url;
    const iamUrl = federationIamUrl(options.iamUrl, typeof impersonation === "string" ? impersonation : undefined);
    this.iam = new IamCredentials({
      url: iamUrl,
      timeoutMs: this.timeoutMs,
      ...(options.now ? { now: options.now } : {}),
      ...(options.fetch ? { fetch: options.fetch } : {}),
    });
    const keys = options.idTokenKeysUrl ?? defaultIdTokenKeysUrl(`${this.iam.url}/`);
    this.keys = keys ? new IdTokenKeys(keys, options.fetch) : undefined;
    this.now = options.now ?? Date.now;
    this.fetchImpl = libraryFetch(adc, this.timeoutMs, options.fetch);
  }

  /** Where ID tokens are minted. */
  get iamUrl(): string {
    return this.iam.url;
  }

  describe(): SourceDescription {
    return { type: "federated", ...(this.serviceAccount ? { email: this.serviceAccount } : {}) };
  }

  /** One client per scope set; each keeps its own federated token, which the library refreshes when due. */
  private client(scopes: readonly string[]): Promise<ExternalClient> {
    const key = scopes.join(" ");
    let c = this.clients.get(key);
    if (!c) {
      const made = createExternalAccountClient(this.adc, scopes, this.fetchImpl);
      c = made;
      this.clients.set(key, made);
      made.catch(() => {
        if (this.clients.get(key) === made) this.clients.delete(key);
      });
    }
    return c;
  }

  /** A federated (or impersonated) access token from the client for `scopes`. */
  private async federatedToken(scopes: readonly string[], deadline: number | undefined): Promise<IssuedToken> {
    const client = await this.client(scopes);
    let token: string | null | undefined;
    try {
      token = (await underDeadline(deadline ?? Date.now() + this.timeoutMs, () => client.getAccessToken())).token;
    } catch (e) {
      throw rephrase(e, "FEDERATION_FAILED", `workload identity federation with ${this.adc.path} failed: ${failureText(e)}`);
    }
    if (!token)
      throw new CredentialError("FEDERATION_FAILED", `workload identity federation with ${this.adc.path} returned no access token`);
    const expiry = client.credentials.expiry_date;
    return { token, expiresAt: typeof expiry === "number" && expiry > 0 ? expiry : this.now() + 3600_000 };
  }

  accessToken(req: AccessTokenRequest): Promise<IssuedToken> {
    return this.federatedToken(req.scopes.length ? req.scopes : [CLOUD_PLATFORM_SCOPE], req.deadline);
  }

  async idToken(req: IdTokenRequest): Promise<IssuedToken> {
    const deadline = req.deadline ?? Date.now() + this.timeoutMs;
    const { token } = await this.federatedToken([CLOUD_PLATFORM_SCOPE], deadline);
    const issued = await this.iam.generateIdToken(token, req.account.email, req.audience, deadline);
    await this.keys?.check(issued.token, { upstream: "IAM Credentials", host: hostOf(this.iam.url), deadline });
    return issued;
  }
}

/**
 * The IAM Credentials base for a federation file's ID tokens: `-iamURL` when given; else the origin (and path prefix)
 * of `service_account_impersonation_url`, the IAM service the file already trusts with its tokens, as Google's
 * clients call the impersonation URL's service; else Google's public endpoint.
 */
export function federationIamUrl(given: string | undefined, impersonationUrl: string | undefined): string {
  return given ?? (impersonationUrl ? iamBaseOf(impersonationUrl) : undefined) ?? IAM_CREDENTIALS_URL;
}
