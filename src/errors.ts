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
  | "NOT_STARTED";

/** A credential source could not be opened or could not produce a token. */
export class CredentialError extends MetadataError<CredentialErrorCode> {}

export type UsageErrorCode =
  /** A flag or option is wrong; the message names it. */
  "USAGE" | "BAD_DURATION" | "BAD_URL" | "BAD_PORT" | "BAD_PCRS" | "NO_ADC" | "TPM_NO_KEY" | "TPM_MTLS_UNSUPPORTED";

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
