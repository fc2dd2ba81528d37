/**
 * Static tokens from the environment (`GOOGLE_ACCESS_TOKEN`, `GOOGLE_ID_TOKEN`), as the Go emulator serves them.
 * Set, they take precedence over any other source for their kind of token, exactly as there.
 */
import { CredentialError } from "../errors.ts";
import { jwtExpiry } from "./jwt.ts";
import type { CredentialSource, IdTokenRequest, IssuedToken, SourceDescription } from "./source.ts";

export interface StaticTokens {
  accessToken?: string;
  idToken?: string;
  /** Lifetime reported for the static access token, counting down and renewed (seconds; default 3600). */
  lifetimeSeconds?: number;
  now?: () => number;
}

export class StaticSource implements CredentialSource {
  private readonly now: () => number;
  constructor(private readonly tokens: StaticTokens) {
    this.now = tokens.now ?? Date.now;
  }

  describe(): SourceDescription {
    return { type: "static" };
  }

  async accessToken(): Promise<IssuedToken> {
    if (!this.tokens.accessToken) {
      throw new CredentialError("NO_ACCESS_TOKEN", "no access token configured: set GOOGLE_ACCESS_TOKEN or give a credential source");
    }
    return { token: this.tokens.accessToken, expiresAt: this.now() + (this.tokens.lifetimeSeconds ?? 3600) * 1000 };
  }

  async idToken(_req: IdTokenRequest): Promise<IssuedToken> {
    const token = this.tokens.idToken;
    if (!token) throw new CredentialError("NO_ID_TOKEN", "no ID token configured: set GOOGLE_ID_TOKEN or give a credential source");
    // A static JWT past its exp is still what the user asked to serve; report it as short-lived rather than fail.
    const exp = jwtExpiry(token);
    const fallback = this.now() + (this.tokens.lifetimeSeconds ?? 3600) * 1000;
    return { token, expiresAt: exp && exp > this.now() + 60_000 ? exp : fallback };
  }
}

/** Static tokens where configured, the base source for the rest. */
export function overlayStatic(tokens: StaticTokens, base: CredentialSource): CredentialSource {
  if (!tokens.accessToken && !tokens.idToken) return base;
  const fixed = new StaticSource(tokens);
  const type = tokens.accessToken && tokens.idToken ? "static" : `static+${base.describe().type}`;
  return {
    describe: () => ({ ...base.describe(), type }),
    accessToken: (r) => (tokens.accessToken ? fixed.accessToken() : base.accessToken(r)),
    idToken: (r) => (tokens.idToken ? fixed.idToken(r) : base.idToken(r)),
    ...(base.openid && !tokens.idToken ? { openid: base.openid } : {}),
    ...(base.ownAccount !== undefined ? { ownAccount: base.ownAccount } : {}),
    close: () => base.close?.(),
  };
}
