/**
 * OAuth2 token-endpoint grants, shared by the sources that hold a key (a key file, a TPM) or a refresh token (an
 * `authorized_user` file): the JWT-bearer grant (RFC 7523) for access and ID tokens, and the refresh-token grant.
 * Every call goes through {@link callUpstream}: one deadline, retries of transient failures, classified errors that
 * never carry the assertion or the refresh token.
 *
 * @example
 *   const body = await jwtBearerGrant(assertion, { tokenUrl, deadline, credential: "the key", what: "an access token", email });
 *   const issued = accessTokenFrom(body, { tokenUrl, email });
 */
import { jwtExpiry } from "./jwt.ts";
import type { IssuedToken } from "./source.ts";
import { callUpstream, type Fetch, malformedAnswer, type Secrets } from "./upstream.ts";

export const JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer";

/** Google's fallback lifetime when an answer names none (and the longest it grants). */
const DEFAULT_LIFETIME_S = 3600;

export interface GrantCall {
  tokenUrl: string;
  deadline: number;
  /** What is presented, for messages: "the TPM-signed assertion", "the key". */
  credential: string;
  /** What is asked for: "an access token", "an ID token". */
  what: string;
  /** The account it is for. */
  email: string;
  fetch?: Fetch;
}

async function grant(form: Record<string, string>, secrets: Secrets, call: GrantCall): Promise<Record<string, unknown>> {
  const { json } = await callUpstream({
    upstream: "token endpoint",
    url: call.tokenUrl,
    form,
    deadline: call.deadline,
    secrets,
    ...(call.fetch ? { fetch: call.fetch } : {}),
    phrase: (f, reason) => {
      if (f.kind === "http")
        return [
          "TOKEN_EXCHANGE_FAILED",
          `the token endpoint ${call.tokenUrl} refused ${call.credential} for ${call.what} of ${call.email}: ${reason}`,
        ];
      if (f.kind === "malformed") {
        return [
          "TOKEN_EXCHANGE_FAILED",
          `the token endpoint ${call.tokenUrl} answered ${f.status} for ${call.what} of ${call.email}, but not with a JSON object (${reason})`,
        ];
      }
      return [
        "TOKEN_ENDPOINT_UNREACHABLE",
        `cannot reach the token endpoint ${call.tokenUrl} for ${call.what} of ${call.email}: ${reason}`,
      ];
    },
  });
  return json;
}

/** Exchange a signed assertion (RFC 7523) at the token endpoint. */
export function jwtBearerGrant(assertion: string, call: GrantCall): Promise<Record<string, unknown>> {
  return grant({ grant_type: JWT_BEARER, assertion }, { assertion }, call);
}

/** Exchange a refresh token (an `authorized_user` file's) for an access token. */
export function refreshGrant(
  client: { clientId: string; clientSecret: string; refreshToken: string },
  call: GrantCall,
): Promise<Record<string, unknown>> {
  return grant(
    { grant_type: "refresh_token", client_id: client.clientId, client_secret: client.clientSecret, refresh_token: client.refreshToken },
    { "client secret": client.clientSecret, "refresh token": client.refreshToken },
    call,
  );
}

/** A token field of a token-endpoint answer: a non-empty string, else the malformed-answer error naming it. */
function tokenField(
  body: Record<string, unknown>,
  field: "access_token" | "id_token",
  call: Pick<GrantCall, "tokenUrl" | "email">,
): string {
  const v = body[field];
  if (typeof v === "string" && v !== "") return v;
  throw malformedAnswer(
    "token endpoint",
    call.tokenUrl,
    "TOKEN_EXCHANGE_FAILED",
    `the token endpoint ${call.tokenUrl} answered without an ${field} for ${call.email} (malformed answer)`,
  );
}

/** The access token of a token-endpoint answer; its `expires_in` (default an hour) made absolute. */
export function accessTokenFrom(body: Record<string, unknown>, call: Pick<GrantCall, "tokenUrl" | "email">, now = Date.now()): IssuedToken {
  const token = tokenField(body, "access_token", call);
  const expiresIn = typeof body.expires_in === "number" && body.expires_in > 0 ? body.expires_in : DEFAULT_LIFETIME_S;
  return { token, expiresAt: now + expiresIn * 1000 };
}

/** The ID token of a token-endpoint answer, with its own `exp`. */
export function idTokenFrom(body: Record<string, unknown>, call: Pick<GrantCall, "tokenUrl" | "email">, now = Date.now()): IssuedToken {
  const token = tokenField(body, "id_token", call);
  return { token, expiresAt: jwtExpiry(token) ?? now + DEFAULT_LIFETIME_S * 1000 };
}
