/**
 * Errors are values with a stable `code`; messages tell the user what to do. Each class has a union of its codes,
 * so `switch (e.code)` is checked by the compiler.
 *
 * @example
 * try { server.set("instance/attributes", 5); } catch (e) { if (e instanceof EditError) console.log(e.code); }
 */
export class MetadataError<C extends string = string> extends Error {
  readonly code: C;
  constructor(code: C, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
    this.name = new.target.name;
  }
}

export type ConfigErrorCode =
  /** Not JSON; the message names the line and column. */
  | "CONFIG_SYNTAX"
  /** A value of the wrong type or shape; the message names the JSON path. */
  | "CONFIG_SHAPE"
  /** The file cannot be read. */
  | "CONFIG_UNREADABLE"
  /** An environment override (GOOGLE_NUMERIC_PROJECT_ID, GOOGLE_SERVICE_ACCOUNT) cannot be applied. */
  | "CONFIG_ENV"
  /** The config has no `instance.serviceAccounts.default` where one is required. */
  | "CONFIG_NO_DEFAULT_ACCOUNT"
  /** Nested deeper than the parser allows. */
  | "CONFIG_TOO_DEEP"
  /** Another metadata server (`-upstream`, `capture -source`) could not be read, or did not answer as one. */
  | "CONFIG_UPSTREAM"
  /** A setting this server cannot honour here (the message says why and what works instead). */
  | "CONFIG_NOT_SUPPORTED"
  /** The config could not be compiled for a reason not listed above; the message says why. */
  | "CONFIG_UNUSABLE"
  | EditErrorCode;

export type EditErrorCode =
  /** The node, or its parent, does not exist. */
  | "EDIT_NOT_FOUND"
  /** A key of a fixed-key directory added or removed. */
  | "EDIT_FIXED_KEYS"
  /** A list position past the end. */
  | "EDIT_BAD_INDEX"
  /** A value of the wrong type or shape. */
  | "CONFIG_SHAPE";

/** The config file (or a whole config given to the library or the control API) is unreadable or has the wrong shape. */
export class ConfigError<C extends ConfigErrorCode = ConfigErrorCode> extends MetadataError<C> {}

/** A change to the served tree (library `set`/`merge`/`delete`, control API) cannot be made. */
export class EditError extends ConfigError<EditErrorCode> {}

export type CredentialErrorCode =
  | "ADC_UNREADABLE"
  | "ADC_INVALID"
  | "ADC_WRONG_TYPE"
  | "KEY_UNREADABLE"
  | "KEY_INVALID"
  | "ISSUER_KEY_INVALID"
  | "NO_ACCESS_TOKEN"
  | "NO_ID_TOKEN"
  | "ACCOUNT_NOT_IN_TPM"
  | "TOKEN_ENDPOINT_UNREACHABLE"
  | "TOKEN_EXCHANGE_FAILED"
  | "SOURCE_TOKEN_FAILED"
  | "FEDERATION_FAILED"
  | "IAM_UNREACHABLE"
  | "IAM_REFUSED"
  | "IAM_BAD_ANSWER"
  | "EXPIRED_TOKEN"
  | "NOT_STARTED"
  /** An upstream answered an ID token whose signature does not verify with the issuer's published keys. */
  | "ID_TOKEN_BAD_SIGNATURE"
  /** The credential source did not answer within the upstream deadline. */
  | "UPSTREAM_TIMEOUT"
  /** The issuer key file exists but anyone other than its owner may write it, or another user owns it. */
  | "ISSUER_KEY_UNSAFE"
  /** The upstream metadata server (`-upstream`) cannot be reached for a token. */
  | "UPSTREAM_UNREACHABLE"
  /** The upstream metadata server refused a token request or answered something that is not a token. */
  | "UPSTREAM_REFUSED";

/** A credential source could not be opened or could not produce a token. */
export class CredentialError extends MetadataError<CredentialErrorCode> {}

/**
 * How an upstream call (token endpoint, STS, IAM Credentials, JWKS) failed; a fixed set, used as a metric label.
 * `unreachable` is anything else before an answer (a name that does not resolve, a TLS failure).
 */
export type UpstreamKind = "timeout" | "refused" | "reset" | "unreachable" | "http" | "malformed" | "signature";

export const UPSTREAM_KINDS: readonly UpstreamKind[] = ["timeout", "refused", "reset", "unreachable", "http", "malformed", "signature"];

/** What is known about a failed upstream call, after its retries. */
export interface UpstreamFailure {
  /** Who was called, for people: "token endpoint", "IAM Credentials", "STS". */
  upstream: string;
  /** Host (and port) called; never a path or query, which may carry an e-mail or a key. */
  host: string;
  kind: UpstreamKind;
  /** The last HTTP status, when the upstream answered. */
  status?: number;
  /** Attempts made (1 when not retried). */
  attempts: number;
  /** From the first attempt to the failure. */
  elapsedMs: number;
  /** Worth trying again soon: timeout, refused, reset, 429 and 5xx. */
  transient: boolean;
  /** How long the upstream asked callers to wait (Retry-After), when it said. */
  retryAfterMs?: number;
}

/** A credential source's upstream call failed; the message is one line naming the upstream and the kind of failure. */
export class UpstreamError extends CredentialError implements UpstreamFailure {
  readonly upstream: string;
  readonly host: string;
  readonly kind: UpstreamKind;
  readonly status?: number;
  readonly attempts: number;
  readonly elapsedMs: number;
  readonly transient: boolean;
  readonly retryAfterMs?: number;
  constructor(code: CredentialErrorCode, message: string, failure: UpstreamFailure, options?: { cause?: unknown }) {
    super(code, message, options);
    this.upstream = failure.upstream;
    this.host = failure.host;
    this.kind = failure.kind;
    if (failure.status !== undefined) this.status = failure.status;
    this.attempts = failure.attempts;
    this.elapsedMs = failure.elapsedMs;
    this.transient = failure.transient;
    if (failure.retryAfterMs !== undefined) this.retryAfterMs = failure.retryAfterMs;
  }
}

export type UsageErrorCode =
  /** A flag or option is wrong; the message names it. */
  | "USAGE"
  | "BAD_DURATION"
  | "BAD_URL"
  | "BAD_PORT"
  | "BAD_PCRS"
  | "NO_ADC"
  | "TPM_NO_KEY"
  | "TPM_MTLS_UNSUPPORTED"
  /** A fault-injection rule (`-fault`, control API, library) is malformed; the message names the field. */
  | "BAD_FAULT";

/** A command-line flag, library option or environment variable is wrong. */
export class UsageError extends MetadataError<UsageErrorCode> {}

export type ListenErrorCode =
  | "LISTEN"
  | "SOCKET_PATH"
  | "SOCKET_IN_USE"
  | "SOCKET_BIND"
  | "TLS_FILE_UNREADABLE"
  | "TLS_FILE_INVALID"
  | "TLS_KEY_MISMATCH"
  | "METRICS_LISTEN"
  /** The control API's token file is unreadable or empty. */
  | "CONTROL_TOKEN";

/** A listener could not start: address or socket in use, a path that is not a socket, unusable TLS files. */
export class ListenError extends MetadataError<ListenErrorCode> {}

export type RequestErrorCode =
  /** The body is not what the route takes; the message says what it takes. */
  | "BAD_REQUEST"
  | "NOT_FOUND"
  | "METHOD"
  | "BAD_PATH"
  /** The body is over the route's size cap (413). */
  | "TOO_LARGE"
  /** The control API's token is missing or wrong (401). */
  | "UNAUTHORIZED"
  /** With real credentials, the control API may not create, rename or widen service accounts (403). */
  | "ACCOUNT_CHANGE_REFUSED";

/** A control-API request cannot be served: answered with its status and `{"error":{"code","message"}}`. */
export class RequestError extends MetadataError<RequestErrorCode> {
  constructor(
    readonly status: number,
    code: RequestErrorCode,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(code, message, options);
  }
}

/** Why a file could not be read, in a few words for a message: "no such file", "permission denied", … */
export function unreadableReason(e: unknown): string {
  const code = (e as { code?: string }).code;
  if (code === "ENOENT") return "no such file";
  if (code === "EACCES") return "permission denied";
  if (code === "EISDIR") return "it is a directory";
  return code ?? (e instanceof Error ? e.message : String(e));
}
