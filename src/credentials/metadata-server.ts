/**
 * Tokens from another metadata server (`-upstream` without a credential flag): each access-token and ID-token
 * request for an account, scope set and audience is asked of the upstream's own `token` and `identity` endpoints,
 * behind the one token cache like every source. On a real VM the tokens are Google's; the accounts are the
 * upstream's, so an account only the local overlay names has no token there (the upstream's 404 is reported).
 *
 * @example
 * const source = new UpstreamSource("http://169.254.169.254");
 * const { token, expiresAt } = await source.accessToken({ account, scopes: account.scopes });
 */
import { CredentialError } from "../errors.ts";
import { accountSegment, firstLine, type MetadataAnswer, metadataGet } from "../metadata/client.ts";
import { jwtExpiry } from "./jwt.ts";
import type { AccessTokenRequest, CredentialSource, IdTokenRequest, IssuedToken, SourceDescription } from "./source.ts";

const ACCOUNTS = "/computeMetadata/v1/instance/service-accounts/";

export interface UpstreamSourceOptions {
  /** Time allowed for one upstream request (default 30 s). */
  timeoutMs?: number;
  now?: () => number;
}

export class UpstreamSource implements CredentialSource {
  private readonly now: () => number;
  private readonly timeoutMs: number;

  constructor(
    /** `http://host:port` of the upstream metadata server. */
    readonly base: string,
    options: UpstreamSourceOptions = {},
  ) {
    this.now = options.now ?? Date.now;
    this.timeoutMs = options.timeoutMs ?? 30_000;
  }

  describe(): SourceDescription {
    return { type: "upstream" };
  }

  async accessToken({ account, scopes }: AccessTokenRequest): Promise<IssuedToken> {
    // The account's own scopes are the upstream's default; only other scopes are asked for by name.
    const query = scopes === account.scopes ? "" : `?scopes=${scopes.map(encodeURIComponent).join(",")}`;
    const r = await this.get(`${ACCOUNTS}${accountSegment(account.email)}/token${query}`, account.email, "an access token");
    let body: { access_token?: unknown; expires_in?: unknown };
    try {
      body = JSON.parse(r.body);
    } catch {
      body = {};
    }
    if (typeof body.access_token !== "string" || body.access_token === "" || typeof body.expires_in !== "number" || body.expires_in <= 0) {
      throw new CredentialError(
        "UPSTREAM_REFUSED",
        `the upstream metadata server ${this.base} answered ${account.email}'s token request with something that is not a token`,
      );
    }
    return { token: body.access_token, expiresAt: this.now() + body.expires_in * 1000 };
  }

  async idToken({ account, audience, format, licenses }: IdTokenRequest): Promise<IssuedToken> {
    const query = `?audience=${encodeURIComponent(audience)}&format=${format}${licenses ? "&licenses=TRUE" : ""}`;
    const r = await this.get(`${ACCOUNTS}${accountSegment(account.email)}/identity${query}`, account.email, "an identity token");
    const token = r.body.trim();
    const exp = jwtExpiry(token);
    if (exp === undefined) {
      throw new CredentialError(
        "UPSTREAM_REFUSED",
        `the upstream metadata server ${this.base} answered ${account.email}'s identity request with something that is not a JWT`,
      );
    }
    return { token, expiresAt: exp };
  }

  private async get(path: string, email: string, what: string): Promise<MetadataAnswer> {
    let r: MetadataAnswer;
    try {
      r = await metadataGet(this.base, path, { timeoutMs: this.timeoutMs });
    } catch (e) {
      throw new CredentialError(
        "UPSTREAM_UNREACHABLE",
        `cannot reach the upstream metadata server ${this.base} for ${what} for ${email}: ${(e as Error).message}`,
        { cause: e },
      );
    }
    if (r.status !== 200 || !r.flavor) {
      const hint =
        r.status === 404 ? " (the upstream has no such account: give a local credential source for accounts only the overlay names)" : "";
      throw new CredentialError(
        "UPSTREAM_REFUSED",
        `the upstream metadata server ${this.base} answered ${r.status} to the request for ${what} for ${email}: ${firstLine(r.body)}${hint}`,
      );
    }
    return r;
  }
}
