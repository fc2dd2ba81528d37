/**
 * A service-account key file (`-serviceAccountFile`): tokens through google-auth-library's JWT client, which signs
 * the RS256 assertion and exchanges it at the token endpoint. The key's `token_uri` is honoured, so a key can point
 * at a private or local token endpoint.
 */
import { CredentialError } from "../errors.ts";
import { GOOGLE_TOKEN_URL } from "./google.ts";
import type { AccessTokenRequest, CredentialSource, IdTokenRequest, IssuedToken, SourceDescription } from "./source.ts";
import { jwtExpiry } from "./jwt.ts";

// node:crypto on first use: this module is reachable from start-up (sources share GOOGLE_TOKEN_URL and helpers), and
// importing node:crypto there is part of ~2 ms of the compiled server's start-up (see http/listen.ts).
const nodeCrypto = () => require("node:crypto") as typeof import("node:crypto");

export interface ServiceAccountKey {
  type: "service_account";
  client_email: string;
  private_key: string;
  private_key_id?: string;
  project_id?: string;
  token_uri?: string;
  universe_domain?: string;
}

/** Read and check a key file; errors say which field is wrong. */
export async function readServiceAccountKey(path: string): Promise<ServiceAccountKey> {
  let text: string;
  try {
    text = await Bun.file(path).text();
  } catch (e) {
    throw new CredentialError(
      "KEY_UNREADABLE",
      `${path}: cannot read the service account key file (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`,
      { cause: e },
    );
  }
  let json: Record<string, unknown>;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw new CredentialError(
      "KEY_INVALID",
      `${path}: not JSON (${(e as Error).message}); expected a service account key downloaded from IAM`,
      { cause: e },
    );
  }
  if (json === null || typeof json !== "object") throw new CredentialError("KEY_INVALID", `${path}: not a JSON object`);
  if (json.type !== "service_account") {
    throw new CredentialError("KEY_INVALID", `${path}: "type" is ${JSON.stringify(json.type)}, expected "service_account"`);
  }
  return checkServiceAccountKey(json, path);
}

/** Check the fields of a parsed key whose `type` is `service_account`; `path` names it in errors. */
export function checkServiceAccountKey(json: Record<string, unknown>, path: string): ServiceAccountKey {
  for (const field of ["client_email", "private_key"] as const) {
    if (typeof json[field] !== "string" || json[field] === "") throw new CredentialError("KEY_INVALID", `${path}: "${field}" is missing`);
  }
  try {
    nodeCrypto().createPrivateKey(json.private_key as string);
  } catch (e) {
    throw new CredentialError("KEY_INVALID", `${path}: "private_key" is not a PEM private key (${(e as Error).message})`, { cause: e });
  }
  if (json.token_uri !== undefined && (typeof json.token_uri !== "string" || !/^https?:\/\//.test(json.token_uri))) {
    throw new CredentialError("KEY_INVALID", `${path}: "token_uri" must be an http(s) URL`);
  }
  return json as unknown as ServiceAccountKey;
}

/** Hex SHA-256 of the public key's SPKI DER: identifies a key in logs and metrics without revealing it. */
export function keyFingerprint(privateKeyPem: string): string {
  const { createHash, createPrivateKey, createPublicKey } = nodeCrypto();
  const spki = createPublicKey(createPrivateKey(privateKeyPem)).export({ type: "spki", format: "der" });
  return createHash("sha256").update(spki).digest("hex");
}

type JwtClient = import("google-auth-library").JWT;

/**
 * google-auth-library's JWT client for a key, loaded only when first needed. Its token requests go to the key's
 * `token_uri`, else to `tokenUrl` (default Google's): the library itself always posts to Google's URL.
 */
export async function createJwtClient(key: ServiceAccountKey, scopes: readonly string[], tokenUrl = GOOGLE_TOKEN_URL): Promise<JwtClient> {
  const { JWT } = await import("google-auth-library");
  const client = new JWT({
    email: key.client_email,
    key: key.private_key,
    ...(key.private_key_id ? { keyId: key.private_key_id } : {}),
    scopes: [...scopes],
    ...(key.universe_domain ? { universeDomain: key.universe_domain } : {}),
  });
  const target = key.token_uri ?? tokenUrl;
  if (target !== GOOGLE_TOKEN_URL) {
    // Send the library's requests for Google's token URL to the key's token_uri (or the given URL) instead.
    client.transporter.interceptors.request.add({
      resolved: async (opts) => {
        if (String(opts.url) === GOOGLE_TOKEN_URL) opts.url = new URL(target);
        return opts;
      },
    });
  }
  return client;
}

export class ServiceAccountKeySource implements CredentialSource {
  private readonly clients = new Map<string, Promise<JwtClient>>();
  private readonly fingerprint: string;

  constructor(private readonly key: ServiceAccountKey) {
    this.fingerprint = keyFingerprint(key.private_key);
  }

  describe(): SourceDescription {
    return { type: "serviceAccountKey", email: this.key.client_email, fingerprint: this.fingerprint };
  }

  /** One JWT client per scope set; google-auth-library is loaded only when this source is used. */
  private client(scopes: readonly string[]): Promise<JwtClient> {
    const k = scopes.join(" ");
    let c = this.clients.get(k);
    if (!c) {
      c = createJwtClient(this.key, scopes);
      this.clients.set(k, c);
      c.catch(() => this.clients.delete(k));
    }
    return c;
  }

  async accessToken(req: AccessTokenRequest): Promise<IssuedToken> {
    const client = await this.client(req.scopes);
    try {
      // authorize() always goes to the token endpoint; our cache decides when a new token is due.
      const creds = await client.authorize();
      if (!creds.access_token) throw new Error("the token endpoint returned no access_token");
      return { token: creds.access_token, expiresAt: creds.expiry_date ?? Date.now() + 3600_000 };
    } catch (e) {
      throw new CredentialError("TOKEN_EXCHANGE_FAILED", `token endpoint refused the key of ${this.key.client_email}: ${errorText(e)}`, {
        cause: e,
      });
    }
  }

  async idToken(req: IdTokenRequest): Promise<IssuedToken> {
    const client = await this.client([]);
    try {
      const token = await client.fetchIdToken(req.audience);
      return { token, expiresAt: jwtExpiry(token) ?? Date.now() + 3600_000 };
    } catch (e) {
      throw new CredentialError(
        "TOKEN_EXCHANGE_FAILED",
        `token endpoint refused an ID token for ${this.key.client_email}: ${errorText(e)}`,
        { cause: e },
      );
    }
  }
}

/** The useful part of a gaxios error: the endpoint's error and description, never the request body. */
export function errorText(e: unknown): string {
  const data = (e as { response?: { data?: unknown; status?: number } }).response;
  if (data?.data && typeof data.data === "object") {
    const d = data.data as { error?: unknown; error_description?: unknown };
    if (d.error) return `${data.status ?? ""} ${String(d.error)}${d.error_description ? `: ${String(d.error_description)}` : ""}`.trim();
  }
  return e instanceof Error ? e.message : String(e);
}
