/**
 * The two IAM Credentials methods the metadata server needs, called over REST with a bearer token:
 * `generateAccessToken` (an access token for a service account) and `generateIdToken` (an ID token Google signs
 * for it). The base URL is configurable (`-iamURL`) for private endpoints and tests.
 *
 * @example
 *   const iam = new IamCredentials({ url: "https://iamcredentials.googleapis.com" });
 *   const { token } = await iam.generateAccessToken(bearer, "app@p.iam.gserviceaccount.com", [CLOUD_PLATFORM], 3600);
 */
import { CredentialError } from "../errors.ts";
import { IAM_CREDENTIALS_URL } from "./google.ts";
import type { IssuedToken } from "./source.ts";
import { jwtExpiry } from "./jwt.ts";

/** Statuses worth one more try: Google's own clients retry these. */
const RETRYABLE = new Set([429, 500, 502, 503, 504]);

export interface IamCredentialsOptions {
  /** Base URL, without `/v1` (default {@link IAM_CREDENTIALS_URL}). */
  url?: string;
  /** Time allowed for one request (default 30 s). */
  timeoutMs?: number;
  /** Further tries after a 429, a 5xx or a failed connection (default 2), 200 ms apart, then 400 ms. */
  retries?: number;
  /** Project billed for the calls (`x-goog-user-project`): an authorized_user file's `quota_project_id`. */
  quotaProject?: string;
  now?: () => number;
  fetch?: (url: string, init: RequestInit) => Promise<Response>;
}

export class IamCredentials {
  readonly url: string;
  private readonly now: () => number;
  private readonly fetch: (url: string, init: RequestInit) => Promise<Response>;

  constructor(private readonly options: IamCredentialsOptions = {}) {
    this.url = (options.url ?? IAM_CREDENTIALS_URL).replace(/\/+$/, "");
    this.now = options.now ?? Date.now;
    this.fetch = options.fetch ?? ((url, init) => fetch(url, init));
  }

  /** `…/v1/projects/-/serviceAccounts/{email}:{method}` */
  methodUrl(email: string, method: "generateAccessToken" | "generateIdToken"): string {
    return `${this.url}/v1/projects/-/serviceAccounts/${email}:${method}`;
  }

  /** An access token for `email` with `scopes`, valid `lifetimeSeconds` (at most 3600 without an org policy). */
  async generateAccessToken(bearer: string, email: string, scopes: readonly string[], lifetimeSeconds: number): Promise<IssuedToken> {
    const body = await this.call(bearer, email, "generateAccessToken", { delegates: [], scope: scopes, lifetime: `${lifetimeSeconds}s` });
    if (typeof body.accessToken !== "string" || body.accessToken === "") {
      throw new CredentialError("IAM_BAD_ANSWER", `IAM Credentials generateAccessToken for ${email} answered without an accessToken`);
    }
    const expires = typeof body.expireTime === "string" ? Date.parse(body.expireTime) : NaN;
    return { token: body.accessToken, expiresAt: Number.isFinite(expires) ? expires : this.now() + lifetimeSeconds * 1000 };
  }

  /**
   * An ID token for `email` and `audience` with `email` and `email_verified` claims (`includeEmail`), as the Go
   * emulator asks for. Google mints it: no `google.compute_engine` claims, whatever the request's `format`.
   */
  async generateIdToken(bearer: string, email: string, audience: string): Promise<IssuedToken> {
    const body = await this.call(bearer, email, "generateIdToken", { delegates: [], audience, includeEmail: true });
    if (typeof body.token !== "string" || body.token === "") {
      throw new CredentialError("IAM_BAD_ANSWER", `IAM Credentials generateIdToken for ${email} answered without a token`);
    }
    return { token: body.token, expiresAt: jwtExpiry(body.token) ?? this.now() + 3600_000 };
  }

  /** POST one method; the endpoint's error message on failure, never the bearer. */
  private async call(
    bearer: string,
    email: string,
    method: "generateAccessToken" | "generateIdToken",
    payload: object,
  ): Promise<Record<string, unknown>> {
    const url = this.methodUrl(email, method);
    const retries = this.options.retries ?? 2;
    for (let attempt = 0; ; attempt++) {
      let res: Response;
      try {
        res = await this.fetch(url, {
          method: "POST",
          headers: {
            "Content-Type": "application/json",
            Accept: "application/json",
            Authorization: `Bearer ${bearer}`,
            ...(this.options.quotaProject ? { "x-goog-user-project": this.options.quotaProject } : {}),
          },
          body: JSON.stringify(payload),
          signal: AbortSignal.timeout(this.options.timeoutMs ?? 30_000),
        });
      } catch (e) {
        const timedOut = (e as Error).name === "TimeoutError";
        if (!timedOut && attempt < retries) {
          await Bun.sleep(200 * (attempt + 1));
          continue;
        }
        throw new CredentialError(
          "IAM_UNREACHABLE",
          `cannot reach IAM Credentials at ${this.url} for ${method} of ${email}: ${timedOut ? "timed out" : (e as Error).message}`,
          { cause: e },
        );
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
      if (!res.ok && RETRYABLE.has(res.status) && attempt < retries) {
        await Bun.sleep(200 * (attempt + 1));
        continue;
      }
      if (res.ok) {
        throw new CredentialError(
          "IAM_BAD_ANSWER",
          `IAM Credentials ${method} for ${email} answered ${res.status}, but not with a JSON object`,
        );
      }
      throw new CredentialError(
        "IAM_REFUSED",
        `IAM Credentials refused ${method} for ${email}: ${res.status} ${apiErrorText(body, text, bearer)}`,
      );
    }
  }
}

/** `PERMISSION_DENIED: Permission '…' denied …` from Google's API error body, or a short excerpt of the text. */
export function apiErrorText(body: Record<string, unknown> | undefined, text: string, secret?: string): string {
  const error = body?.error;
  if (error && typeof error === "object") {
    const { status, message } = error as { status?: unknown; message?: unknown };
    if (typeof message === "string") return typeof status === "string" ? `${status}: ${message}` : message;
  }
  if (typeof error === "string") {
    return error + (typeof body?.error_description === "string" ? `: ${body.error_description}` : "");
  }
  const excerpt = (secret ? text.replaceAll(secret, "[token]") : text).replace(/\s+/g, " ").trim().slice(0, 200);
  return excerpt || "(empty body)";
}
