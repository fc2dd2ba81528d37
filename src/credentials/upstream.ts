/**
 * The one way credential sources call Google's token side (token endpoint, STS, IAM Credentials, the ID-token
 * keys): a deadline for the whole call, transient failures retried inside it, every failure classified.
 *
 * - Deadline: absolute, shared by every attempt (the TokenCache sets it from `-upstreamTimeout`). One attempt gets
 *   at most half of what is left (at least 2 s), so a connection that hangs is abandoned in time for another try.
 * - Transient (timeout, refused, reset, 429, 5xx): retried after an exponential backoff with jitter (100–200 ms,
 *   then 200–400 ms, … up to 1–2 s), or after `Retry-After` when the upstream gives one and it fits before the
 *   deadline; when it does not fit, the call fails at once rather than wait past the deadline.
 * - Permanent (other 4xx, an answer that is not a JSON object, a bad signature): never retried.
 * - Errors are UpstreamError: one line naming the upstream, the kind of failure and the attempts. The request's
 *   secrets (assertion, bearer, refresh token) are cut out of any echoed body.
 *
 * @example
 *   const body = await callUpstream({ upstream: "token endpoint", url, form: { grant_type, assertion },
 *     deadline: Date.now() + 10_000, secrets: { assertion }, phrase: (f, reason) => ["TOKEN_EXCHANGE_FAILED", reason] });
 */
import { redact } from "../log.ts";
import { CredentialError, type CredentialErrorCode, UpstreamError, type UpstreamFailure, type UpstreamKind } from "../errors.ts";

export { DEFAULT_UPSTREAM_TIMEOUT_MS } from "./token-cache.ts";
/** The shortest attempt worth making; a longer deadline gives each attempt half of what is left. */
const MIN_ATTEMPT_MS = 2_000;
/** First backoff ceiling; doubles per attempt up to {@link BACKOFF_CAP_MS}; the delay is half to all of it. */
const BACKOFF_BASE_MS = 200;
const BACKOFF_CAP_MS = 2_000;
/** Not worth another attempt with less than this left. */
const MIN_USEFUL_MS = 100;
/** Echoed bodies are cut to this many characters in messages. */
const EXCERPT = 200;

export type Fetch = (url: string, init: RequestInit) => Promise<Response>;

/** Secrets of a request by the name that replaces them in messages (`[assertion]`). */
export type Secrets = Readonly<Record<string, string | undefined>>;

/** Turns a failure and its reason (`503 UNAVAILABLE: …`, `timed out after 10.0 s`) into a code and a message. */
export type Phrase = (failure: UpstreamFailure, reason: string) => [CredentialErrorCode, string];

export interface UpstreamCall {
  /** Who is called, for people: "token endpoint", "IAM Credentials", "STS". */
  upstream: string;
  url: string;
  /** POST a form (`application/x-www-form-urlencoded`). */
  form?: Record<string, string>;
  /** POST JSON. Neither: GET. */
  json?: object;
  headers?: Record<string, string>;
  /** Absolute time (ms since the epoch) by which the call succeeds or fails. */
  deadline: number;
  /** Strings that must never appear in a message, by the name shown instead: `{ assertion }`, `{ token: bearer }`. */
  secrets?: Secrets;
  phrase: Phrase;
  fetch?: Fetch;
}

/** `host[:port]` of a URL, for logs and messages: never the path, which may carry an e-mail. */
export function hostOf(url: string): string {
  const m = /^[a-z][a-z0-9+.-]*:\/\/([^/?#]*)/i.exec(url);
  return m ? m[1]!.replace(/^[^@]*@/, "") : "";
}

/** A path segment of a URL, percent-encoded (`@` kept, as Google's own clients send it). */
export function pathSegment(text: string): string {
  return encodeURIComponent(text).replaceAll("%40", "@");
}

const defaultFetch: Fetch = (url, init) => fetch(url, init);

/** What one attempt came to. */
type Outcome =
  | { ok: true; status: number; json: Record<string, unknown>; response: Response; text: string }
  | { ok: false; kind: UpstreamKind; transient: boolean; status?: number; reason: string; short: string; retryAfterMs?: number };

/** The class of a fetch that threw: Bun names refused and reset connections by their errno. */
function networkFailure(e: unknown, timedOut: boolean): Extract<Outcome, { ok: false }> {
  const err = e as { code?: unknown; name?: unknown; message?: unknown };
  if (timedOut || err.name === "TimeoutError" || err.name === "AbortError") {
    return { ok: false, kind: "timeout", transient: true, reason: "timed out", short: "timeout" };
  }
  const code = typeof err.code === "string" ? err.code : "";
  if (code === "ECONNREFUSED") return { ok: false, kind: "refused", transient: true, reason: "connection refused", short: "refused" };
  if (
    code === "ECONNRESET" ||
    code === "EPIPE" ||
    code === "UND_ERR_SOCKET" ||
    /closed unexpectedly|socket hang up/i.test(String(err.message))
  ) {
    return { ok: false, kind: "reset", transient: true, reason: "connection reset", short: "reset" };
  }
  const message = typeof err.message === "string" ? err.message.split("\n")[0]! : String(e);
  return { ok: false, kind: "unreachable", transient: false, reason: `unreachable (${message.slice(0, EXCERPT)})`, short: "unreachable" };
}

/** `Retry-After` in milliseconds (delta seconds or an HTTP date), if given. */
export function retryAfter(headers: Headers, now = Date.now()): number | undefined {
  const v = headers.get("retry-after")?.trim();
  if (!v) return undefined;
  if (/^\d+$/.test(v)) return Number(v) * 1000;
  const at = Date.parse(v);
  return Number.isFinite(at) ? Math.max(0, at - now) : undefined;
}

/**
 * The endpoint's own words from an error body: Google API errors (`PERMISSION_DENIED: …`), OAuth2 errors
 * (`invalid_grant: …`), else a short excerpt of the text with the secrets cut out.
 */
export function endpointErrorText(body: Record<string, unknown> | undefined, text: string, secrets: Secrets = {}): string {
  const error = body?.error;
  if (error && typeof error === "object") {
    const { status, message } = error as { status?: unknown; message?: unknown };
    if (typeof message === "string") return typeof status === "string" ? `${status}: ${message}` : message;
  }
  if (typeof error === "string") return error + (typeof body?.error_description === "string" ? `: ${body.error_description}` : "");
  return excerpt(text, secrets) || "(empty body)";
}

function excerpt(text: string, secrets: Secrets): string {
  let t = text;
  for (const [name, s] of Object.entries(secrets)) if (s) t = t.replaceAll(s, `[${name}]`);
  return redact(t.replace(/\s+/g, " ").trim()).slice(0, EXCERPT);
}

/** Short form of a failed attempt for the history: `503 UNAVAILABLE`, `timeout`. */
function shortOf(status: number, body: Record<string, unknown> | undefined): string {
  const error = body?.error;
  if (typeof error === "string") return `${status} ${error}`;
  if (error && typeof error === "object" && typeof (error as { status?: unknown }).status === "string") {
    return `${status} ${(error as { status: string }).status}`;
  }
  return String(status);
}

function parseObject(text: string): Record<string, unknown> | undefined {
  try {
    const v: unknown = JSON.parse(text);
    return v !== null && typeof v === "object" && !Array.isArray(v) ? (v as Record<string, unknown>) : undefined;
  } catch {
    return undefined;
  }
}

async function attempt(call: UpstreamCall, fetchImpl: Fetch, timeoutMs: number): Promise<Outcome> {
  const signal = AbortSignal.timeout(Math.max(1, Math.round(timeoutMs)));
  const headers: Record<string, string> = { Accept: "application/json", ...call.headers };
  let body: string | undefined;
  if (call.form) {
    headers["Content-Type"] = "application/x-www-form-urlencoded";
    body = new URLSearchParams(call.form).toString();
  } else if (call.json) {
    headers["Content-Type"] = "application/json";
    body = JSON.stringify(call.json);
  }
  let response: Response;
  let text: string;
  try {
    response = await fetchImpl(call.url, {
      method: body === undefined ? "GET" : "POST",
      headers,
      ...(body === undefined ? {} : { body }),
      signal,
    });
    // The body is read under the same signal: headers followed by a stalled body is a timeout too.
    text = await response.text();
  } catch (e) {
    return networkFailure(e, signal.aborted);
  }
  const json = parseObject(text);
  const status = response.status;
  if (status >= 200 && status < 300) {
    if (json) return { ok: true, status, json, response, text };
    return {
      ok: false,
      kind: "malformed",
      transient: false,
      status,
      // A success body may carry a token even when cut off: its length only, never its text.
      reason: `malformed answer: ${text.length ? `${text.length} bytes that are not a JSON object` : "an empty body"}`,
      short: `${status} malformed`,
    };
  }
  const transient = status === 429 || status >= 500;
  const after = transient ? retryAfter(response.headers) : undefined;
  return {
    ok: false,
    kind: "http",
    transient,
    status,
    reason: `${status} ${endpointErrorText(json, text, call.secrets)}`,
    short: shortOf(status, json),
    ...(after !== undefined ? { retryAfterMs: after } : {}),
  };
}

/** Backoff before attempt `n + 1`: half to all of min(cap, base·2^(n-1)). */
function backoff(n: number): number {
  const ceiling = Math.min(BACKOFF_CAP_MS, BACKOFF_BASE_MS * 2 ** (n - 1));
  return ceiling / 2 + (Math.random() * ceiling) / 2;
}

/** Consecutive repeats folded: `503 UNAVAILABLE ×3, 400 invalid_grant`. */
function history(shorts: string[]): string {
  const out: string[] = [];
  let i = 0;
  while (i < shorts.length) {
    let j = i;
    while (j + 1 < shorts.length && shorts[j + 1] === shorts[i]) j++;
    out.push(j > i ? `${shorts[i]} ×${j - i + 1}` : shorts[i]!);
    i = j + 1;
  }
  return out.join(", ");
}

/** The answer of a successful call. */
export interface UpstreamAnswer {
  json: Record<string, unknown>;
  status: number;
  headers: Headers;
  text: string;
}

/** Call an upstream with retries inside the deadline; the JSON object it answered, or an UpstreamError. */
export async function callUpstream(call: UpstreamCall): Promise<UpstreamAnswer> {
  const fetchImpl = call.fetch ?? defaultFetch;
  const started = Date.now();
  const shorts: string[] = [];
  for (let n = 1; ; n++) {
    const left = call.deadline - Date.now();
    const outcome: Outcome =
      left <= 0
        ? { ok: false, kind: "timeout", transient: true, reason: "timed out", short: "timeout" }
        : await attempt(call, fetchImpl, Math.min(left, Math.max(MIN_ATTEMPT_MS, left / 2)));
    if (outcome.ok) return { json: outcome.json, status: outcome.status, headers: outcome.response.headers, text: outcome.text };
    shorts.push(outcome.short);
    let wait = outcome.retryAfterMs ?? backoff(n);
    const remaining = call.deadline - Date.now();
    const retry = outcome.transient && remaining - wait >= MIN_USEFUL_MS;
    if (retry) {
      await Bun.sleep(wait);
      continue;
    }
    const elapsedMs = Date.now() - started;
    let reason =
      outcome.kind !== "timeout"
        ? outcome.reason
        : n === 1 && left <= 0
          ? "timed out (no time left before the deadline)"
          : `timed out after ${(elapsedMs / 1000).toFixed(1)} s`;
    if (outcome.transient && outcome.retryAfterMs !== undefined && remaining - wait < MIN_USEFUL_MS && remaining > 0) {
      reason += ` (it asked to retry after ${Math.ceil(outcome.retryAfterMs / 1000)} s, past the ${upstreamDeadline(call, started)} deadline)`;
      wait = outcome.retryAfterMs;
    }
    if (n > 1) reason += ` (${n} attempts in ${(elapsedMs / 1000).toFixed(1)} s: ${history(shorts)})`;
    const failure: UpstreamFailure = {
      upstream: call.upstream,
      host: hostOf(call.url),
      kind: outcome.kind,
      attempts: n,
      elapsedMs,
      transient: outcome.transient,
      ...(outcome.status !== undefined ? { status: outcome.status } : {}),
      ...(outcome.retryAfterMs !== undefined ? { retryAfterMs: outcome.retryAfterMs } : {}),
    };
    const [code, message] = call.phrase(failure, reason);
    throw new UpstreamError(code, message, failure);
  }
}

function upstreamDeadline(call: UpstreamCall, started: number): string {
  return `${((call.deadline - started) / 1000).toFixed(1)} s`;
}

/** Options of {@link upstreamFetch}. */
export interface UpstreamFetchOptions {
  /** Who a URL belongs to, for messages ("STS", "IAM Credentials", "the subject token URL"). */
  name(url: string): string;
  /** The deadline of the call being made (read per request). */
  deadline(): number;
  /** Secrets of the client that may be echoed (none known in advance for library clients). */
  secrets?: Secrets;
  fetch?: Fetch;
}

/**
 * A `fetch` for google-auth-library's clients (`transporterOptions.fetchImplementation`): each request goes through
 * {@link callUpstream}'s deadline, retries and classification. A success is handed back as a Response; a failure
 * is thrown as the UpstreamError (the library wraps it; {@link upstreamCause} finds it again).
 */
export function upstreamFetch(options: UpstreamFetchOptions): (input: string | URL | Request, init?: RequestInit) => Promise<Response> {
  return async (input, init = {}) => {
    const url = input instanceof Request ? input.url : String(input);
    const headers: Record<string, string> = {};
    new Headers(init.headers ?? (input instanceof Request ? input.headers : undefined)).forEach((v, k) => {
      headers[k] = v;
    });
    const raw = init.body ?? undefined;
    const body =
      raw === undefined || raw === null
        ? undefined
        : typeof raw === "string"
          ? raw
          : raw instanceof URLSearchParams
            ? raw.toString()
            : undefined;
    const contentType = headers["content-type"] ?? "";
    const call: UpstreamCall = {
      upstream: options.name(url),
      url,
      headers,
      deadline: options.deadline(),
      secrets: { ...options.secrets, ...secretsIn(body) },
      phrase: (f, reason) =>
        f.kind === "malformed"
          ? ["TOKEN_EXCHANGE_FAILED", `${f.upstream} ${f.host} answered ${f.status}, not with a JSON object (${reason})`]
          : [f.kind === "http" ? "TOKEN_EXCHANGE_FAILED" : "TOKEN_ENDPOINT_UNREACHABLE", `${f.upstream} ${f.host}: ${reason}`],
      ...(options.fetch ? { fetch: options.fetch } : {}),
    };
    if (body !== undefined) {
      // Keep the library's own encoding and content type.
      delete headers["content-type"];
      if (contentType.includes("json")) call.json = JSON.parse(body);
      else call.form = Object.fromEntries(new URLSearchParams(body));
    }
    const answer = await callUpstream(call);
    return new Response(answer.text, { status: answer.status, headers: answer.headers });
  };
}

/** Values in a request body that must not be echoed back: subject tokens, assertions, secrets. */
function secretsIn(body: string | undefined): Record<string, string> {
  const out: Record<string, string> = {};
  if (!body) return out;
  const params = body.trimStart().startsWith("{") ? undefined : new URLSearchParams(body);
  const json = params ? undefined : parseObject(body);
  for (const n of ["subject_token", "subjectToken", "assertion", "refresh_token", "client_secret", "actor_token"]) {
    const v = params ? params.get(n) : json?.[n];
    if (typeof v === "string" && v) out[n] = v;
  }
  return out;
}

/** An answer that parsed but lacks what was asked for (no `access_token`, no `token`): a malformed answer. */
export function malformedAnswer(upstream: string, url: string, code: CredentialErrorCode, message: string): UpstreamError {
  return new UpstreamError(code, message, { upstream, host: hostOf(url), kind: "malformed", attempts: 1, elapsedMs: 0, transient: false });
}

/** The UpstreamError behind an error a library wrapped (gaxios puts it in `cause`), if any. */
export function upstreamCause(e: unknown): UpstreamError | undefined {
  for (let x: unknown = e, i = 0; x && i < 5; x = (x as { cause?: unknown }).cause, i++) if (x instanceof UpstreamError) return x;
  return undefined;
}

/** The useful words of an error from a library call: an UpstreamError's message, else the endpoint's error, else the message. */
export function failureText(e: unknown): string {
  const up = upstreamCause(e);
  if (up) return up.message;
  const res = (e as { response?: { data?: unknown; status?: number } }).response;
  if (res?.data && typeof res.data === "object") {
    const d = res.data as { error?: unknown; error_description?: unknown };
    if (d.error) return `${res.status ?? ""} ${String(d.error)}${d.error_description ? `: ${String(d.error_description)}` : ""}`.trim();
  }
  return e instanceof Error ? e.message : String(e);
}

/** An error with a source's own words, keeping what the upstream failure was (kind, host, transient) when it was one. */
export function rephrase(e: unknown, code: CredentialErrorCode, message: string): CredentialError {
  const up = upstreamCause(e);
  return up ? new UpstreamError(code, message, up, { cause: e }) : new CredentialError(code, message, { cause: e });
}
