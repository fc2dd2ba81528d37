/**
 * The two IAM Credentials methods the metadata server needs, called over REST with a bearer token:
 * `generateAccessToken` (an access token for a service account) and `generateIdToken` (an ID token Google signs
 * for it). The base URL is configurable (`-iamURL`, or the origin of a federation file's
 * `service_account_impersonation_url`) for private endpoints and tests.
 *
 * Why this small client and not google-auth-library's `Impersonated`, which covers the same two calls: every
 * upstream call here shares one deadline per token request (source token, IAM call and key check together, within
 * `-upstreamTimeout`), one retry policy, classified errors and one failure log line; `Impersonated` brings its own
 * gaxios retries and timeouts per request, builds one client per target and scope set (the unbounded per-scope map
 * this server must avoid), puts the e-mail into the URL unencoded, and caches its own tokens beside the TokenCache.
 * The two methods are two POSTs of a few fields each; the shared helper (upstream.ts) carries the rest.
 *
 * @example
 *   const iam = new IamCredentials({ url: "https://iamcredentials.googleapis.com" });
 *   const { token } = await iam.generateAccessToken(bearer, "app@p.iam.gserviceaccount.com", [CLOUD_PLATFORM], 3600, deadline);
 */
import { IAM_CREDENTIALS_URL } from "./google.ts";
import { jwtExpiry } from "./jwt.ts";
import type { IssuedToken } from "./source.ts";
import { callUpstream, DEFAULT_UPSTREAM_TIMEOUT_MS, type Fetch, malformedAnswer, pathSegment } from "./upstream.ts";

export interface IamCredentialsOptions {
  /** Base URL, without `/v1` (default {@link IAM_CREDENTIALS_URL}). */
  url?: string;
  /** Deadline of a call when the caller gives none (default 10 s, `-upstreamTimeout`'s). */
  timeoutMs?: number;
  /** Project billed for the calls (`x-goog-user-project`): an authorized_user file's `quota_project_id`. */
  quotaProject?: string;
  now?: () => number;
  fetch?: Fetch;
}

type Method = "generateAccessToken" | "generateIdToken";

/**
 * The IAM Credentials base of a `…/v1/projects/-/serviceAccounts/{email}:generateAccessToken` URL (everything
 * before `/v1/`), as Google's clients call generateIdToken on the service that issues the access tokens.
 */
export function iamBaseOf(impersonationUrl: string): string | undefined {
  const m = /^(https?:\/\/[^/?#]+(?:\/[^?#]*?)?)\/v1\/projects\/[^/]+\/serviceAccounts\/[^/]+:generateAccessToken$/.exec(impersonationUrl);
  return m?.[1];
}

export class IamCredentials {
  readonly url: string;
  private readonly now: () => number;

  constructor(private readonly options: IamCredentialsOptions = {}) {
    this.url = (options.url ?? IAM_CREDENTIALS_URL).replace(/\/+$/, "");
    this.now = options.now ?? Date.now;
  }

  /** `…/v1/projects/-/serviceAccounts/{email}:{method}`, the e-mail percent-encoded as a path segment. */
  methodUrl(email: string, method: Method): string {
    return `${this.url}/v1/projects/-/serviceAccounts/${pathSegment(email)}:${method}`;
  }

  /** An access token for `email` with `scopes`, valid `lifetimeSeconds` (at most 3600 without an org policy). */
  async generateAccessToken(
    bearer: string,
    email: string,
    scopes: readonly string[],
    lifetimeSeconds: number,
    deadline?: number,
  ): Promise<IssuedToken> {
    const body = await this.call(
      bearer,
      email,
      "generateAccessToken",
      { delegates: [], scope: scopes, lifetime: `${lifetimeSeconds}s` },
      deadline,
    );
    if (typeof body.accessToken !== "string" || body.accessToken === "") {
      throw this.malformed(email, "generateAccessToken", "an accessToken");
    }
    const expires = typeof body.expireTime === "string" ? Date.parse(body.expireTime) : NaN;
    return { token: body.accessToken, expiresAt: Number.isFinite(expires) ? expires : this.now() + lifetimeSeconds * 1000 };
  }

  /**
   * An ID token for `email` and `audience` with `email` and `email_verified` claims (`includeEmail`), as the Go
   * emulator asks for. Google mints it: no `google.compute_engine` claims, whatever the request's `format`.
   */
  async generateIdToken(bearer: string, email: string, audience: string, deadline?: number): Promise<IssuedToken> {
    const body = await this.call(bearer, email, "generateIdToken", { delegates: [], audience, includeEmail: true }, deadline);
    if (typeof body.token !== "string" || body.token === "") throw this.malformed(email, "generateIdToken", "a token");
    return { token: body.token, expiresAt: jwtExpiry(body.token) ?? this.now() + 3600_000 };
  }

  private malformed(email: string, method: Method, what: string) {
    return malformedAnswer(
      "IAM Credentials",
      this.url,
      "IAM_BAD_ANSWER",
      `IAM Credentials ${method} for ${email} answered without ${what} (malformed answer)`,
    );
  }

  /** POST one method; the endpoint's error message on failure, never the bearer. */
  private async call(bearer: string, email: string, method: Method, payload: object, deadline?: number): Promise<Record<string, unknown>> {
    const { json } = await callUpstream({
      upstream: "IAM Credentials",
      url: this.methodUrl(email, method),
      json: payload,
      headers: {
        Authorization: `Bearer ${bearer}`,
        ...(this.options.quotaProject ? { "x-goog-user-project": this.options.quotaProject } : {}),
      },
      deadline: deadline ?? Date.now() + (this.options.timeoutMs ?? DEFAULT_UPSTREAM_TIMEOUT_MS),
      secrets: { token: bearer },
      ...(this.options.fetch ? { fetch: this.options.fetch } : {}),
      phrase: (f, reason) => {
        if (f.kind === "http") return ["IAM_REFUSED", `IAM Credentials refused ${method} for ${email}: ${reason}`];
        if (f.kind === "malformed")
          return ["IAM_BAD_ANSWER", `IAM Credentials ${method} for ${email} answered ${f.status}, but not with a JSON object (${reason})`];
        return ["IAM_UNREACHABLE", `cannot reach IAM Credentials at ${this.url} for ${method} of ${email}: ${reason}`];
      },
    });
    return json;
  }
}
