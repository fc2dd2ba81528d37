/**
 * A local fake of Google's token-side APIs: the OAuth2 token endpoint, IAM Credentials, STS and the JWKS of
 * Google's ID-token signing key. Real Google endpoints are unreachable in tests, so this fake stands in for them
 * and checks what matters for real: every JWT assertion and subject token is signature-verified against a key
 * registered with the fake, every IAM call needs an access token this fake issued, and every ID token it mints
 * verifies against its JWKS.
 *
 * @example
 * ```ts
 * await using google = await startFakeGoogle();
 * const sa = await makeServiceAccountKey(google, { email: "app@proj.iam.gserviceaccount.com" });
 * const jwt = new JWT({ keyFile: sa.path, scopes: [CLOUD_PLATFORM_SCOPE],
 *                       transporterOptions: { fetchImplementation: google.fetch } });
 * const { token } = await jwt.getAccessToken(); // "ya29.fake-..."
 * ```
 */
import { createHash, createPublicKey, createSign, generateKeyPair, KeyObject, randomBytes, type JsonWebKeyInput } from "node:crypto";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import {
  compactVerify,
  decodeJwt,
  decodeProtectedHeader,
  exportJWK,
  SignJWT,
  type JWK,
  type JWTPayload,
  type ProtectedHeaderParameters,
} from "jose";

const generateRsa = promisify(generateKeyPair);

/** The `iss` of every ID token Google (and this fake) mints. */
export const GOOGLE_ISSUER = "https://accounts.google.com";
/** Google's real token URL. Client libraries put it in `aud` of their assertions whatever `token_uri` says. */
export const GOOGLE_TOKEN_URL = "https://oauth2.googleapis.com/token";
export const CLOUD_PLATFORM_SCOPE = "https://www.googleapis.com/auth/cloud-platform";
const IAM_SCOPE = "https://www.googleapis.com/auth/iam";
const JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer";
const TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange";
const ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token";
const SUBJECT_JWT_TYPES = new Set(["urn:ietf:params:oauth:token-type:jwt", "urn:ietf:params:oauth:token-type:id_token"]);
/** Audiences Google's token endpoint accepts in a JWT-bearer assertion (besides the fake's own URL). */
const GOOGLE_TOKEN_AUDIENCES = [GOOGLE_TOKEN_URL, "https://www.googleapis.com/oauth2/v4/token"];
/** Hosts `fake.fetch` sends to the fake. Any other Google host fails fast instead of timing out on DNS. */
const REDIRECTED_HOSTS = new Set(["oauth2.googleapis.com", "iamcredentials.googleapis.com", "sts.googleapis.com", "www.googleapis.com"]);

/** Every endpoint the fake serves, as named in `calls`, `failNext` and `requests`. */
export type FakeEndpoint = "token" | "generateAccessToken" | "generateIdToken" | "signJwt" | "signBlob" | "sts" | "certs" | "accountCerts";

const ENDPOINTS: readonly FakeEndpoint[] = [
  "token",
  "generateAccessToken",
  "generateIdToken",
  "signJwt",
  "signBlob",
  "sts",
  "certs",
  "accountCerts",
];

/** A public key as tests hold it: a KeyObject, an SPKI PEM string, or a public JWK. */
export type PublicKeyInput = KeyObject | string | JWK;

export interface FakeGoogleOptions {
  /** `expires_in` of access tokens from `/token` (seconds). Default 3599, as Google answers. */
  accessTokenLifetimeSeconds?: number;
  /** `expires_in` of access tokens from STS (seconds). Default 3600, as Google answers. */
  stsTokenLifetimeSeconds?: number;
}

/** What the fake knows about an access token it issued (like Google's tokeninfo). */
export interface IssuedAccessToken {
  token: string;
  /** Who the token acts as: a service-account e-mail, a user's client id, or an STS `principal://` URI. */
  subject: string;
  /** The service account's e-mail, when the token acts as one. */
  email?: string;
  scopes: readonly string[];
  /** Absolute expiry, milliseconds since the epoch. */
  expiresAt: number;
  /** Which endpoint issued it. */
  via: FakeEndpoint;
}

/** One request as the fake parsed it, for assertions about what a client sent. */
export interface RecordedRequest {
  endpoint: FakeEndpoint;
  method: string;
  path: string;
  /** Form fields or JSON body. */
  body: Record<string, unknown>;
  /** The bearer token from `Authorization`, if any. */
  bearer?: string;
}

export interface FakeGoogle extends AsyncDisposable {
  /** Base URL, e.g. `http://127.0.0.1:40123`. Also the IAM Credentials base (Impersonated's `endpoint`). */
  readonly url: string;
  /** OAuth2 token endpoint: `${url}/token`. */
  readonly tokenUrl: string;
  /** STS token exchange: `${url}/v1/token` (an external-account file's `token_url`). */
  readonly stsUrl: string;
  /** JWKS of the fake Google ID-token key: `${url}/oauth2/v3/certs`. */
  readonly jwksUrl: string;
  /** Requests received per endpoint, failed ones included. Reset by `reset()`. */
  readonly calls: Readonly<Record<FakeEndpoint, number>>;
  /** Every request received since start or `reset()`, in order. */
  readonly requests: readonly RecordedRequest[];
  /** Decoded header and payload of the last JWT-bearer assertion received, valid or not. */
  readonly lastAssertion: { header: ProtectedHeaderParameters; payload: JWTPayload } | undefined;
  /**
   * A `fetch` that sends requests for oauth2/iamcredentials/sts/www.googleapis.com to this fake (same path and
   * query) and throws for other Google hosts; other URLs pass through. Give it to google-auth-library as
   * `transporterOptions: { fetchImplementation: fake.fetch }`.
   */
  readonly fetch: (input: string | URL | Request, init?: RequestInit) => Promise<Response>;

  /** Accept JWT-bearer assertions with `iss` = `email` signed by `publicKey`. An account may hold several keys. */
  registerServiceAccount(email: string, publicKey: PublicKeyInput, opts?: { kid?: string }): void;
  /** Accept `grant_type=refresh_token` for this client and refresh token (an `authorized_user` ADC file). */
  registerUser(user: { clientId: string; clientSecret: string; refreshToken: string; scopes?: readonly string[] }): void;
  /**
   * Accept STS subject tokens with `iss` = `iss` signed by `publicKey`. The token's `aud` must be one of `audiences`,
   * by default the provider's `https:` resource name (`https:` + the STS `audience`), as Google's default.
   */
  registerSubjectIssuer(iss: string, publicKey: PublicKeyInput, opts?: { audiences?: readonly string[] }): void;
  /** The stable numeric id (`sub`, `azp`, `client_id`) the fake gives an account. */
  uniqueId(email: string): string;
  /** The fake's IAM Credentials URL for `email` and `method`, e.g. an external account's `service_account_impersonation_url`. */
  impersonationUrl(email: string, method?: "generateAccessToken" | "generateIdToken"): string;
  /** True when the fake issued `token` and it has not expired. */
  isIssuedAccessToken(token: string): boolean;
  /** What the fake recorded when it issued `token`, or undefined if it never did. */
  tokenInfo(token: string): IssuedAccessToken | undefined;
  /**
   * Answer the next `count` requests to `endpoint` with `status` and a Google-shaped error body (with a
   * `Retry-After: <retryAfter>` header when given), or, for `"malformed"`, a 200 whose body is cut-off JSON.
   */
  failNext(endpoint: FakeEndpoint, count: number, status?: number | "malformed", opts?: { retryAfter?: number }): void;
  /** Sign the ID tokens it mints with a key of its own that its JWKS does not publish (under the published kid). */
  signWithWrongKey(on: boolean): void;
  /** Hold every response for `ms` milliseconds (0 turns it off). */
  delay(ms: number): void;
  /** Zero `calls`, clear `requests`, `lastAssertion`, pending failures and delay. Keys and issued tokens stay. */
  reset(): void;
  /** Stop the server and delete files helpers wrote for this fake. Idempotent. */
  stop(): Promise<void>;
}

interface SigningKey {
  kid: string;
  privateKey: KeyObject;
  jwk: JWK;
}

interface RegisteredIssuer {
  key: KeyObject;
  audiences?: readonly string[];
}

interface User {
  clientSecret: string;
  refreshToken: string;
  scopes: readonly string[];
}

/** The body of a `failNext(…, "malformed")` answer. */
const MALFORMED = Symbol("malformed");

/** A response the handlers throw to short-circuit; `toResponse` renders it. */
class Reply {
  constructor(
    readonly status: number,
    readonly body: unknown,
    readonly headers: Record<string, string> = {},
  ) {}
}

/** OAuth2-style error (token endpoint, STS). */
const oauthError = (status: number, error: string, description: string) => new Reply(status, { error, error_description: description });

const GRPC_STATUS: Record<number, string> = {
  400: "INVALID_ARGUMENT",
  401: "UNAUTHENTICATED",
  403: "PERMISSION_DENIED",
  404: "NOT_FOUND",
  409: "ABORTED",
  429: "RESOURCE_EXHAUSTED",
  500: "INTERNAL",
  501: "NOT_IMPLEMENTED",
  503: "UNAVAILABLE",
  504: "DEADLINE_EXCEEDED",
};

/** Google API-style error (IAM Credentials). */
const apiError = (status: number, message: string, headers: Record<string, string> = {}) =>
  new Reply(status, { error: { code: status, message, status: GRPC_STATUS[status] ?? "UNKNOWN" } }, headers);

/** The permission Google names when it refuses an IAM Credentials method. */
const IAM_PERMISSION: Partial<Record<FakeEndpoint, string>> = {
  generateAccessToken: "iam.serviceAccounts.getAccessToken",
  generateIdToken: "iam.serviceAccounts.getOpenIdToken",
  signJwt: "iam.serviceAccounts.signJwt",
  signBlob: "iam.serviceAccounts.signBlob",
};

const nowSeconds = () => Math.floor(Date.now() / 1000);
const randomToken = () => `ya29.fake-${randomBytes(24).toString("base64url")}`;
const randomKid = () => randomBytes(20).toString("hex");
/** RFC 3339 in UTC without fractional seconds, as IAM Credentials writes `expireTime`. */
const rfc3339 = (ms: number) => new Date(ms).toISOString().replace(/\.\d{3}Z$/, "Z");

function toPublicKey(input: PublicKeyInput): KeyObject {
  if (typeof input === "string") return createPublicKey(input);
  if (input instanceof KeyObject) return input.type === "private" ? createPublicKey(input) : input;
  return createPublicKey({ key: input as JsonWebKeyInput["key"], format: "jwk" });
}

async function newSigningKey(): Promise<SigningKey> {
  const { privateKey, publicKey } = await generateRsa("rsa", { modulusLength: 2048 });
  const kid = randomKid();
  return { kid, privateKey, jwk: { ...(await exportJWK(publicKey)), kid, alg: "RS256", use: "sig" } };
}

/** Verify an RS256 compact JWT against any of `keys`; returns the decoded payload or undefined. */
async function verifyWithAny(jwt: string, keys: readonly KeyObject[]): Promise<JWTPayload | undefined> {
  for (const key of keys) {
    try {
      const { payload } = await compactVerify(jwt, key, { algorithms: ["RS256"] });
      return JSON.parse(new TextDecoder().decode(payload)) as JWTPayload;
    } catch {
      // try the next key
    }
  }
  return undefined;
}

async function readBody(req: Request): Promise<Record<string, unknown>> {
  const text = await req.text();
  if (text === "") return {};
  if ((req.headers.get("content-type") ?? "").includes("json")) {
    let parsed: unknown;
    try {
      parsed = JSON.parse(text);
    } catch {
      throw apiError(400, `Invalid JSON payload received. Unexpected token.\n${text.slice(0, 40)}`);
    }
    if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) {
      throw apiError(400, "Invalid JSON payload received. Expected an object.");
    }
    return parsed as Record<string, unknown>;
  }
  return Object.fromEntries(new URLSearchParams(text));
}

const str = (v: unknown): string | undefined => (typeof v === "string" && v !== "" ? v : undefined);

/** Start the fake on 127.0.0.1 with a free port. */
export async function startFakeGoogle(opts: FakeGoogleOptions = {}): Promise<FakeGoogle> {
  const accessTokenLifetime = opts.accessTokenLifetimeSeconds ?? 3599;
  const stsTokenLifetime = opts.stsTokenLifetimeSeconds ?? 3600;

  const googleKey = await newSigningKey();
  const serviceAccounts = new Map<string, { kid?: string; key: KeyObject }[]>();
  const systemKeys = new Map<string, Promise<SigningKey>>();
  const users = new Map<string, User>();
  const subjectIssuers = new Map<string, RegisteredIssuer>();
  const issued = new Map<string, IssuedAccessToken>();
  const calls = Object.fromEntries(ENDPOINTS.map((e) => [e, 0])) as Record<FakeEndpoint, number>;
  const requests: RecordedRequest[] = [];
  const failures = new Map<FakeEndpoint, Array<{ status: number | "malformed"; retryAfter?: number }>>();
  const wrongKey = await newSigningKey();
  let useWrongKey = false;
  let delayMs = 0;
  let lastAssertion: FakeGoogle["lastAssertion"];

  const uniqueId = (email: string) => {
    const n = BigInt(`0x${createHash("sha256").update(email).digest("hex").slice(0, 20)}`) % 10n ** 20n;
    return `1${n.toString().padStart(20, "0")}`;
  };

  const issue = (info: Omit<IssuedAccessToken, "token" | "expiresAt">, lifetimeSeconds: number) => {
    const token = randomToken();
    issued.set(token, { ...info, token, expiresAt: Date.now() + lifetimeSeconds * 1000 });
    return token;
  };

  const mintIdToken = (email: string, audience: string, o: { includeEmail: boolean; emailAzp?: boolean }) => {
    const id = uniqueId(email);
    const iat = nowSeconds();
    const claims: JWTPayload = { aud: audience, azp: o.emailAzp ? email : id, sub: id, iss: GOOGLE_ISSUER, iat, exp: iat + 3600 };
    if (o.includeEmail) Object.assign(claims, { email, email_verified: true });
    return new SignJWT(claims)
      .setProtectedHeader({ alg: "RS256", kid: googleKey.kid, typ: "JWT" })
      .sign(useWrongKey ? wrongKey.privateKey : googleKey.privateKey);
  };

  const systemKey = (email: string) => {
    let key = systemKeys.get(email);
    if (!key) systemKeys.set(email, (key = newSigningKey()));
    return key;
  };

  // ---- OAuth2 token endpoint -------------------------------------------------------------------------------

  async function token(form: Record<string, unknown>, req: Request): Promise<unknown> {
    const grantType = str(form.grant_type);
    if (grantType === JWT_BEARER) return jwtBearer(str(form.assertion), req);
    if (grantType === "refresh_token") return refreshGrant(form, req);
    if (!grantType) throw oauthError(400, "invalid_request", "Missing required parameter: grant_type");
    throw oauthError(400, "unsupported_grant_type", `Invalid grant_type: ${grantType}`);
  }

  async function jwtBearer(assertion: string | undefined, req: Request): Promise<unknown> {
    if (!assertion) throw oauthError(400, "invalid_request", "Missing required parameter: assertion");
    let header: ProtectedHeaderParameters;
    let claims: JWTPayload;
    try {
      header = decodeProtectedHeader(assertion);
      claims = decodeJwt(assertion);
    } catch {
      throw oauthError(400, "invalid_grant", "Invalid JWT: the assertion is not a well-formed JWT.");
    }
    lastAssertion = { header, payload: claims };
    if (header.alg !== "RS256") throw oauthError(400, "invalid_grant", "Invalid JWT Signature.");
    const email = str(claims.iss);
    const registered = email ? serviceAccounts.get(email) : undefined;
    if (!email || !registered) throw oauthError(400, "invalid_grant", "Invalid grant: account not found");
    const candidates =
      header.kid && registered.some((k) => k.kid === header.kid) ? registered.filter((k) => k.kid === header.kid) : registered;
    if (
      !(await verifyWithAny(
        assertion,
        candidates.map((k) => k.key),
      ))
    ) {
      throw oauthError(400, "invalid_grant", "Invalid JWT Signature.");
    }
    // Its own token URL, as addressed (a front or proxy before it has another port).
    const audiences = [...GOOGLE_TOKEN_AUDIENCES, `${url}/token`, `${new URL(req.url).origin}/token`];
    if (typeof claims.aud !== "string" || !audiences.includes(claims.aud)) {
      throw oauthError(400, "invalid_grant", `Invalid JWT: Failed audience check. The right audience is ${GOOGLE_TOKEN_URL}`);
    }
    const now = nowSeconds();
    const { iat, exp } = claims;
    if (typeof iat !== "number" || typeof exp !== "number" || exp <= iat || exp - iat > 3600 || exp <= now || iat > now + 300) {
      throw oauthError(
        400,
        "invalid_grant",
        "Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe. Check your iat and exp values in the JWT claim.",
      );
    }
    const targetAudience = str(claims.target_audience);
    if (targetAudience) return { id_token: await mintIdToken(email, targetAudience, { includeEmail: true }) };
    const scopes = str(claims.scope)?.split(/\s+/).filter(Boolean) ?? [];
    if (scopes.length === 0) {
      throw oauthError(400, "invalid_scope", "Invalid OAuth scope or ID token audience provided.");
    }
    const subject = str(claims.sub) ?? email;
    const accessToken = issue({ subject, email, scopes, via: "token" }, accessTokenLifetime);
    return { access_token: accessToken, expires_in: accessTokenLifetime, token_type: "Bearer" };
  }

  function refreshGrant(form: Record<string, unknown>, req: Request): unknown {
    let clientId = str(form.client_id);
    let clientSecret = str(form.client_secret);
    const basic = req.headers.get("authorization")?.match(/^Basic\s+(.+)$/i)?.[1];
    if (basic) {
      const [id, ...secret] = Buffer.from(basic, "base64").toString("utf8").split(":");
      clientId ??= id;
      clientSecret ??= secret.join(":");
    }
    const user = clientId ? users.get(clientId) : undefined;
    if (!clientId || !user) throw oauthError(401, "invalid_client", "The OAuth client was not found.");
    if (clientSecret !== user.clientSecret) throw oauthError(401, "invalid_client", "Unauthorized");
    if (str(form.refresh_token) !== user.refreshToken) throw oauthError(400, "invalid_grant", "Bad Request");
    const accessToken = issue({ subject: clientId, scopes: user.scopes, via: "token" }, accessTokenLifetime);
    return {
      access_token: accessToken,
      expires_in: accessTokenLifetime,
      scope: user.scopes.join(" "),
      token_type: "Bearer",
    };
  }

  // ---- IAM Credentials -------------------------------------------------------------------------------------

  function callerOf(req: Request): IssuedAccessToken {
    const challenge = { "www-authenticate": 'Bearer realm="https://accounts.google.com/"' };
    const bearer = req.headers.get("authorization")?.match(/^Bearer\s+(.+)$/i)?.[1];
    if (!bearer) {
      throw apiError(
        401,
        "Request is missing required authentication credential. Expected OAuth 2 access token, login cookie or other valid authentication credential. See https://developers.google.com/identity/sign-in/web/devconsole-project.",
        challenge,
      );
    }
    const info = issued.get(bearer);
    if (!info || info.expiresAt <= Date.now()) {
      throw apiError(
        401,
        "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid authentication credential. See https://developers.google.com/identity/sign-in/web/devconsole-project.",
        challenge,
      );
    }
    if (!info.scopes.includes(CLOUD_PLATFORM_SCOPE) && !info.scopes.includes(IAM_SCOPE)) {
      throw apiError(403, "Request had insufficient authentication scopes.");
    }
    return info;
  }

  async function iam(method: FakeEndpoint, target: string, body: Record<string, unknown>, req: Request): Promise<unknown> {
    callerOf(req);
    if (!/^[^@\s]+@[^@\s]+$/.test(target)) {
      throw apiError(403, `Permission '${IAM_PERMISSION[method] ?? method}' denied on resource (or it may not exist).`);
    }
    const delegates = body.delegates ?? [];
    if (!Array.isArray(delegates) || delegates.some((d) => typeof d !== "string")) {
      throw apiError(400, "Invalid value at 'delegates'.");
    }
    switch (method) {
      case "generateAccessToken": {
        const scope = body.scope;
        if (!Array.isArray(scope) || scope.length === 0 || scope.some((s) => typeof s !== "string")) {
          throw apiError(400, "Scope required.");
        }
        let lifetime = 3600;
        if (body.lifetime !== undefined) {
          const m = typeof body.lifetime === "string" ? body.lifetime.match(/^(\d+)(\.\d+)?s$/) : null;
          if (!m)
            throw apiError(400, `Invalid value at 'lifetime' (type.googleapis.com/google.protobuf.Duration), "${String(body.lifetime)}"`);
          lifetime = Number(m[1]);
        }
        if (lifetime < 1 || lifetime > 43200) {
          throw apiError(400, "The lifetime must be between 1s and 43200s.");
        }
        const accessToken = issue({ subject: target, email: target, scopes: scope as string[], via: "generateAccessToken" }, lifetime);
        return { accessToken, expireTime: rfc3339(issued.get(accessToken)!.expiresAt) };
      }
      case "generateIdToken": {
        const audience = str(body.audience);
        if (!audience) throw apiError(400, "Audience required.");
        const token = await mintIdToken(target, audience, {
          includeEmail: body.includeEmail === true,
          emailAzp: body.useEmailAzp === true,
        });
        return { token };
      }
      case "signJwt": {
        const payloadText = str(body.payload);
        if (!payloadText) throw apiError(400, "Payload required.");
        let payload: unknown;
        try {
          payload = JSON.parse(payloadText);
        } catch {
          throw apiError(400, "Payload must be a serialized JSON object.");
        }
        if (typeof payload !== "object" || payload === null || Array.isArray(payload)) {
          throw apiError(400, "Payload must be a serialized JSON object.");
        }
        const claims = { ...(payload as JWTPayload) };
        const now = nowSeconds();
        if (claims.exp === undefined) claims.exp = now + 3600;
        if (typeof claims.exp !== "number" || claims.exp < now || claims.exp > now + 12 * 3600) {
          throw apiError(400, "The exp claim must be an integer timestamp not in the past and at most 12 hours in the future.");
        }
        const key = await systemKey(target);
        const signedJwt = await new SignJWT(claims).setProtectedHeader({ alg: "RS256", kid: key.kid, typ: "JWT" }).sign(key.privateKey);
        return { keyId: key.kid, signedJwt };
      }
      case "signBlob": {
        const blob = str(body.payload);
        if (!blob) throw apiError(400, "Payload required.");
        const key = await systemKey(target);
        const signedBlob = createSign("RSA-SHA256").update(Buffer.from(blob, "base64")).sign(key.privateKey, "base64");
        return { keyId: key.kid, signedBlob };
      }
      default:
        throw apiError(404, `Method ${method} not found.`);
    }
  }

  // ---- STS -------------------------------------------------------------------------------------------------

  async function sts(form: Record<string, unknown>): Promise<unknown> {
    const field = (snake: string, camel: string) => str(form[snake]) ?? str(form[camel]);
    const grantType = field("grant_type", "grantType");
    if (grantType !== TOKEN_EXCHANGE) {
      throw oauthError(400, "unsupported_grant_type", `The grant_type ${grantType ?? "(missing)"} is not supported.`);
    }
    const requested = field("requested_token_type", "requestedTokenType");
    if (requested !== ACCESS_TOKEN_TYPE) {
      throw oauthError(400, "invalid_request", `Invalid value for "requested_token_type": ${requested ?? "(missing)"}`);
    }
    const audience = field("audience", "audience");
    const pool = audience?.match(
      /^\/\/iam\.googleapis\.com\/(?:projects\/(\d+)\/locations\/global\/workloadIdentityPools\/([^/]+)|locations\/global\/workforcePools\/([^/]+))\/providers\/[^/]+$/,
    );
    if (!audience || !pool) {
      throw oauthError(
        400,
        "invalid_request",
        'Invalid value for "audience". This value should be the full resource name of the Identity Provider.',
      );
    }
    const subjectToken = field("subject_token", "subjectToken");
    const subjectTokenType = field("subject_token_type", "subjectTokenType");
    if (!subjectToken) throw oauthError(400, "invalid_request", 'Missing required parameter: "subject_token".');
    if (!subjectTokenType || !SUBJECT_JWT_TYPES.has(subjectTokenType)) {
      throw oauthError(400, "invalid_grant", `The fake only verifies JWT subject tokens, not ${subjectTokenType ?? "(missing)"}.`);
    }
    let unverified: JWTPayload;
    try {
      unverified = decodeJwt(subjectToken);
    } catch {
      throw oauthError(400, "invalid_grant", "Unable to parse the ID Token.");
    }
    const issuer = str(unverified.iss) ? subjectIssuers.get(unverified.iss!) : undefined;
    if (!issuer) throw oauthError(400, "invalid_grant", `The issuer ${String(unverified.iss)} is not registered with the fake.`);
    const claims = await verifyWithAny(subjectToken, [issuer.key]);
    if (!claims) throw oauthError(400, "invalid_grant", "Invalid ID Token signature.");
    if (typeof claims.exp !== "number" || claims.exp <= nowSeconds()) {
      throw oauthError(400, "invalid_grant", "The ID Token has expired.");
    }
    const allowed = issuer.audiences ?? [`https:${audience}`];
    const tokenAud = Array.isArray(claims.aud) ? claims.aud : [claims.aud];
    if (!tokenAud.some((a) => typeof a === "string" && allowed.includes(a))) {
      throw oauthError(400, "invalid_grant", `The audience in ID Token [${tokenAud.join(",")}] does not match the expected audience.`);
    }
    const scopes = field("scope", "scope")?.split(/\s+/).filter(Boolean) ?? [CLOUD_PLATFORM_SCOPE];
    const poolPath = pool[1]
      ? `projects/${pool[1]}/locations/global/workloadIdentityPools/${pool[2]}`
      : `locations/global/workforcePools/${pool[3]}`;
    const subject = `principal://iam.googleapis.com/${poolPath}/subject/${String(claims.sub)}`;
    const accessToken = issue({ subject, scopes, via: "sts" }, stsTokenLifetime);
    return {
      access_token: accessToken,
      issued_token_type: ACCESS_TOKEN_TYPE,
      token_type: "Bearer",
      expires_in: stsTokenLifetime,
    };
  }

  // ---- routing ---------------------------------------------------------------------------------------------

  const IAM_PATH = /^\/v1\/projects\/[^/]+\/serviceAccounts\/([^/:]+):(generateAccessToken|generateIdToken|signJwt|signBlob)$/;
  const ACCOUNT_JWKS_PATH = /^\/service_accounts\/v1\/jwk\/([^/]+)$/;

  function route(method: string, path: string): { endpoint: FakeEndpoint; target?: string } | undefined {
    if (method === "POST" && path === "/token") return { endpoint: "token" };
    if (method === "POST" && path === "/v1/token") return { endpoint: "sts" };
    if (method === "GET" && path === "/oauth2/v3/certs") return { endpoint: "certs" };
    const iamMatch = method === "POST" ? path.match(IAM_PATH) : null;
    if (iamMatch) return { endpoint: iamMatch[2] as FakeEndpoint, target: decodeURIComponent(iamMatch[1]!) };
    const jwksMatch = method === "GET" ? path.match(ACCOUNT_JWKS_PATH) : null;
    if (jwksMatch) return { endpoint: "accountCerts", target: decodeURIComponent(jwksMatch[1]!) };
    return undefined;
  }

  async function handle(req: Request): Promise<unknown> {
    const { pathname } = new URL(req.url);
    const found = route(req.method, pathname);
    if (!found) throw apiError(404, `The fake has no ${req.method} ${pathname}.`);
    const { endpoint, target } = found;
    calls[endpoint]++;
    const body = req.method === "POST" ? await readBody(req) : {};
    const bearer = req.headers.get("authorization")?.match(/^Bearer\s+(.+)$/i)?.[1];
    requests.push({ endpoint, method: req.method, path: pathname, body, ...(bearer ? { bearer } : {}) });
    if (delayMs > 0) await Bun.sleep(delayMs);
    const injected = failures.get(endpoint)?.shift();
    if (injected !== undefined) {
      const failure = injected.status;
      if (failure === "malformed") throw new Reply(200, MALFORMED);
      const reply =
        endpoint === "token" || endpoint === "sts"
          ? oauthError(failure, failure >= 500 ? "internal_failure" : "invalid_request", `Injected failure (${failure}).`)
          : apiError(failure, `Injected failure (${failure}).`);
      if (injected.retryAfter !== undefined) Object.assign(reply.headers, { "retry-after": String(injected.retryAfter) });
      throw reply;
    }
    switch (endpoint) {
      case "token":
        return token(body, req);
      case "sts":
        return sts(body);
      case "certs":
        return { keys: [googleKey.jwk] };
      case "accountCerts": {
        const key = systemKeys.get(target!);
        return { keys: key ? [(await key).jwk] : [] };
      }
      default:
        return iam(endpoint, target!, body, req);
    }
  }

  const toResponse = (r: Reply) =>
    r.body === MALFORMED
      ? new Response('{"access_token": "ya29.cut-off', { status: 200, headers: { "content-type": "application/json" } })
      : Response.json(r.body, { status: r.status, headers: { "cache-control": "no-store", ...r.headers } });

  const server = Bun.serve({
    hostname: "127.0.0.1",
    port: 0,
    async fetch(req) {
      try {
        return toResponse(new Reply(200, await handle(req)));
      } catch (e) {
        if (e instanceof Reply) return toResponse(e);
        return toResponse(apiError(500, `The fake crashed: ${e instanceof Error ? e.message : String(e)}`));
      }
    },
  });
  const url = `http://127.0.0.1:${server.port}`;

  const redirectingFetch = (input: string | URL | Request, init?: RequestInit): Promise<Response> => {
    const target = new URL(input instanceof Request ? input.url : String(input));
    if (REDIRECTED_HOSTS.has(target.hostname)) {
      const local = new URL(`${target.pathname}${target.search}`, url);
      return input instanceof Request ? fetch(new Request(local.href, input), init) : fetch(local, init);
    }
    if (/(^|\.)(googleapis\.com|google\.com)$/.test(target.hostname)) {
      return Promise.reject(new Error(`fake.fetch: ${target.origin} is not faked; real Google is unreachable in tests.`));
    }
    return fetch(input, init);
  };

  let stopped = false;
  const fake: FakeGoogle = {
    url,
    tokenUrl: `${url}/token`,
    stsUrl: `${url}/v1/token`,
    jwksUrl: `${url}/oauth2/v3/certs`,
    calls,
    requests,
    get lastAssertion() {
      return lastAssertion;
    },
    fetch: redirectingFetch,
    registerServiceAccount(email, publicKey, o = {}) {
      const keys = serviceAccounts.get(email) ?? [];
      keys.push({ key: toPublicKey(publicKey), ...(o.kid ? { kid: o.kid } : {}) });
      serviceAccounts.set(email, keys);
    },
    registerUser({ clientId, clientSecret, refreshToken, scopes }) {
      users.set(clientId, {
        clientSecret,
        refreshToken,
        scopes: scopes ?? [CLOUD_PLATFORM_SCOPE, "https://www.googleapis.com/auth/userinfo.email", "openid"],
      });
    },
    registerSubjectIssuer(iss, publicKey, o = {}) {
      subjectIssuers.set(iss, { key: toPublicKey(publicKey), ...(o.audiences ? { audiences: o.audiences } : {}) });
    },
    uniqueId,
    impersonationUrl: (email, method = "generateAccessToken") => `${url}/v1/projects/-/serviceAccounts/${email}:${method}`,
    isIssuedAccessToken(t) {
      const info = issued.get(t);
      return !!info && info.expiresAt > Date.now();
    },
    tokenInfo: (t) => issued.get(t),
    failNext(endpoint, count, status = 500, o = {}) {
      const queue = failures.get(endpoint) ?? [];
      for (let i = 0; i < count; i++) queue.push({ status, ...(o.retryAfter !== undefined ? { retryAfter: o.retryAfter } : {}) });
      failures.set(endpoint, queue);
    },
    signWithWrongKey(on) {
      useWrongKey = on;
    },
    delay(ms) {
      delayMs = Math.max(0, ms);
    },
    reset() {
      for (const e of ENDPOINTS) calls[e] = 0;
      requests.length = 0;
      failures.clear();
      delayMs = 0;
      useWrongKey = false;
      lastAssertion = undefined;
    },
    async stop() {
      if (stopped) return;
      stopped = true;
      await server.stop(true);
      await Promise.all((tempDirs.get(fake) ?? []).map((d) => rm(d, { recursive: true, force: true })));
      tempDirs.delete(fake);
    },
    [Symbol.asyncDispose]() {
      return fake.stop();
    },
  };
  return fake;
}

// ---- helpers that write credential files ------------------------------------------------------------------

const tempDirs = new WeakMap<FakeGoogle, string[]>();

async function tempDirFor(fake: FakeGoogle): Promise<string> {
  const dirs = tempDirs.get(fake) ?? [];
  if (dirs[0]) return dirs[0];
  const dir = await mkdtemp(join(tmpdir(), "fake-google-"));
  tempDirs.set(fake, [dir]);
  return dir;
}

/** A service-account key file exactly as the Cloud console downloads it. */
export interface ServiceAccountKeyJson {
  type: "service_account";
  project_id: string;
  private_key_id: string;
  private_key: string;
  client_email: string;
  client_id: string;
  auth_uri: string;
  token_uri: string;
  auth_provider_x509_cert_url: string;
  client_x509_cert_url: string;
  universe_domain: "googleapis.com";
}

export interface ServiceAccountKey {
  json: ServiceAccountKeyJson;
  /** The key file, written to a temp directory removed by `fake.stop()`. */
  path: string;
  privateKeyPem: string;
  publicKey: KeyObject;
}

let accountCounter = 0;

/**
 * Generate an RSA-2048 service-account key, register it with the fake (kid = `private_key_id`) and write the key
 * file. `token_uri` is the fake's token URL.
 */
export async function makeServiceAccountKey(
  fake: FakeGoogle,
  opts: { email?: string; projectId?: string } = {},
): Promise<ServiceAccountKey> {
  const projectId = opts.projectId ?? "fake-project";
  const email = opts.email ?? `sa-${++accountCounter}@${projectId}.iam.gserviceaccount.com`;
  const { privateKey, publicKey } = await generateRsa("rsa", { modulusLength: 2048 });
  const privateKeyPem = privateKey.export({ type: "pkcs8", format: "pem" }).toString();
  const privateKeyId = randomKid();
  fake.registerServiceAccount(email, publicKey, { kid: privateKeyId });
  const json: ServiceAccountKeyJson = {
    type: "service_account",
    project_id: projectId,
    private_key_id: privateKeyId,
    private_key: privateKeyPem,
    client_email: email,
    client_id: fake.uniqueId(email),
    auth_uri: "https://accounts.google.com/o/oauth2/auth",
    token_uri: fake.tokenUrl,
    auth_provider_x509_cert_url: "https://www.googleapis.com/oauth2/v1/certs",
    client_x509_cert_url: `https://www.googleapis.com/robot/v1/metadata/x509/${encodeURIComponent(email)}`,
    universe_domain: "googleapis.com",
  };
  const path = join(await tempDirFor(fake), `${email.split("@")[0]}-${privateKeyId.slice(0, 8)}.json`);
  await writeFile(path, `${JSON.stringify(json, null, 2)}\n`, { mode: 0o600 });
  return { json, path, privateKeyPem, publicKey };
}

/** An `authorized_user` ADC file (what `gcloud auth application-default login` writes). */
export interface AuthorizedUserJson {
  type: "authorized_user";
  client_id: string;
  client_secret: string;
  refresh_token: string;
  quota_project_id?: string;
}

/** Register a user with the fake and write its `authorized_user` ADC file. */
export async function makeAuthorizedUser(
  fake: FakeGoogle,
  opts: { quotaProjectId?: string; scopes?: readonly string[] } = {},
): Promise<{ json: AuthorizedUserJson; path: string }> {
  const n = ++accountCounter;
  const json: AuthorizedUserJson = {
    type: "authorized_user",
    client_id: `${n}-fake.apps.googleusercontent.com`,
    client_secret: `GOCSPX-fake-${randomBytes(12).toString("base64url")}`,
    refresh_token: `1//fake-${randomBytes(24).toString("base64url")}`,
    ...(opts.quotaProjectId ? { quota_project_id: opts.quotaProjectId } : {}),
  };
  fake.registerUser({
    clientId: json.client_id,
    clientSecret: json.client_secret,
    refreshToken: json.refresh_token,
    ...(opts.scopes ? { scopes: opts.scopes } : {}),
  });
  const path = join(await tempDirFor(fake), `authorized-user-${n}.json`);
  await writeFile(path, `${JSON.stringify(json, null, 2)}\n`, { mode: 0o600 });
  return { json, path };
}

/** An OIDC issuer for STS tests: registered with the fake, it signs subject tokens the fake will accept. */
export interface SubjectIssuer {
  iss: string;
  /** Sign a subject token (RS256, kid in header) with `iss`, `iat` and `exp` = now + `expiresIn` (default 600s). */
  sign(claims: JWTPayload & { sub: string; aud: string | string[] }, expiresIn?: number): Promise<string>;
  publicKey: KeyObject;
}

export async function makeSubjectIssuer(
  fake: FakeGoogle,
  opts: { iss?: string; audiences?: readonly string[] } = {},
): Promise<SubjectIssuer> {
  const iss = opts.iss ?? `https://issuer-${++accountCounter}.example.test`;
  const key = await newSigningKey();
  const publicKey = createPublicKey(key.privateKey);
  fake.registerSubjectIssuer(iss, publicKey, opts.audiences ? { audiences: opts.audiences } : {});
  return {
    iss,
    publicKey,
    sign(claims, expiresIn = 600) {
      const iat = nowSeconds();
      return new SignJWT({ ...claims, iss, iat, exp: iat + expiresIn })
        .setProtectedHeader({ alg: "RS256", kid: key.kid, typ: "JWT" })
        .sign(key.privateKey);
    },
  };
}

/**
 * Write an `external_account` configuration (what `gcloud iam workload-identity-pools create-cred-config` makes)
 * whose subject token, in a file beside it, is signed by a new issuer the fake trusts. Returns the file's path.
 */
export async function makeExternalAccount(
  fake: FakeGoogle,
  dir: string,
  opts: { audience?: string; tokenUrl?: string } = {},
): Promise<string> {
  const audience = opts.audience ?? "//iam.googleapis.com/projects/1/locations/global/workloadIdentityPools/p/providers/o";
  const issuer = await makeSubjectIssuer(fake);
  const subject = join(dir, "subject.jwt");
  await writeFile(subject, await issuer.sign({ sub: "workload-1", aud: `https:${audience}` }, 3600));
  const file = join(dir, "wif.json");
  await writeFile(
    file,
    JSON.stringify({
      type: "external_account",
      audience,
      subject_token_type: "urn:ietf:params:oauth:token-type:jwt",
      token_url: opts.tokenUrl ?? fake.stsUrl,
      credential_source: { file: subject },
    }),
  );
  return file;
}
