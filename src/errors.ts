/** Errors are values with a stable `code`; messages tell the user what to do. */
export class MetadataError extends Error {
  readonly code: string;
  constructor(code: string, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
    this.name = new.target.name;
  }
}

/** The config file (or a control-API change) is unreadable or has the wrong shape. */
export class ConfigError extends MetadataError {}

/** A credential source could not produce a token. */
export class CredentialError extends MetadataError {}

/** A command-line flag or environment variable is wrong. */
export class UsageError extends MetadataError {}

/** A listener could not start: address or socket in use, a path that is not a socket, unusable TLS files. */
export class ListenError extends MetadataError {}
