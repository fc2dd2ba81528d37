/**
 * Logs: one line per event on stderr, `time level message key=value…`. glog's `-v N` maps to levels: errors and
 * warnings always, info by default, per-request lines from -v 1 (debug), and wire detail from -v 2 (trace).
 * Nothing that looks like a token, assertion or key ever reaches a line: values pass through `redact`.
 */

export type Level = "error" | "warn" | "info" | "debug" | "trace";
const RANK: Record<Level, number> = { error: 0, warn: 1, info: 2, debug: 3, trace: 4 };

/**
 * Patterns of secrets. Each runs in linear time: no pattern lets a repeated part rescan what an earlier attempt
 * already scanned (a JWT is found by the runs it lives in, below, not by a backtracking pattern).
 */
const SECRET_PATTERNS: Array<[RegExp, string | ((run: string) => string), (text: string) => boolean]> = [
  [/ya29\.[\w.-]+/g, "[redacted]", (t) => t.includes("ya29.")], // OAuth2 access tokens
  [/[\w.-]+/g, redactJwtIn, (t) => t.includes("eyJ")], // JWTs and JWS (ID tokens, assertions), found run by run
  [
    /-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----[\s\S]*?(?:-----END [A-Z0-9 ]*PRIVATE KEY-----|$)/g,
    "[redacted]",
    (t) => t.includes("PRIVATE KEY-----"),
  ],
  [
    /("?(?:access_token|id_token|assertion|private_key|refresh_token|client_secret|subject_token)"?\s*[:=]\s*"?)[^"&\s,}]+/gi,
    "$1[redacted]",
    (t) => {
      const lower = t.toLowerCase();
      return KEYWORDS.some((k) => lower.includes(k));
    },
  ],
];
/** Words the last pattern needs (it matches case-insensitively); text without any of them cannot match it. */
const KEYWORDS = ["token", "assertion", "private_key", "client_secret"];

/**
 * A run of `[\w.-]` characters with `eyJ` (base64 of `{"`) followed by a dot somewhere after it: from `eyJ` to the
 * run's end is a JWT, or what is left of one cut short. Two `indexOf`s per run.
 */
function redactJwtIn(run: string): string {
  const at = run.indexOf("eyJ");
  if (at < 0 || run.indexOf(".", at + 3) < 0) return run;
  return `${run.slice(0, at)}[redacted]`;
}

/** Text longer than this is cut before it is scanned; the cut is marked. */
export const MAX_SCANNED = 64 * 1024;
/** Longest logged value (and message), after redaction; longer ones are cut and marked. */
export const MAX_LOGGED = 2048;

/**
 * Replace anything that looks like a credential with `[redacted]`. Each pattern runs only on text holding what it
 * cannot match without (a plain substring test): most lines hold none, and skip the regular expressions.
 */
export function redact(text: string): string {
  let out = text.length > MAX_SCANNED ? `${text.slice(0, MAX_SCANNED)}…` : text;
  for (const [re, replacement, may] of SECRET_PATTERNS) if (may(out)) out = out.replace(re, replacement as string);
  return out;
}

/** Redacted, and cut to MAX_LOGGED characters with the original length noted. */
function forLog(text: string): string {
  const clean = redact(text);
  return clean.length > MAX_LOGGED ? `${clean.slice(0, MAX_LOGGED)}…(${text.length} characters)` : clean;
}

function formatValue(v: unknown): string {
  const s = v instanceof Error ? v.message : typeof v === "string" ? v : JSON.stringify(v);
  const clean = forLog(s ?? "");
  return /^[\w./:@+-]*$/.test(clean) && clean !== "" ? clean : JSON.stringify(clean);
}

export interface Logger {
  level: Level;
  enabled(level: Level): boolean;
  error(msg: string, fields?: Record<string, unknown>): void;
  warn(msg: string, fields?: Record<string, unknown>): void;
  info(msg: string, fields?: Record<string, unknown>): void;
  debug(msg: string, fields?: Record<string, unknown>): void;
  trace(msg: string, fields?: Record<string, unknown>): void;
}

/**
 * Default sink: one synchronous write to stderr per line. Not `process.stderr.write`: touching `process.stderr`
 * builds Node's stream machinery, which cost the compiled server ~2.5 ms and ~3 MB of its start-up (bench/startup.ts);
 * `console.error` with a single string argument writes it verbatim (no format directives) and flushes per call.
 */
const writeStderr = (line: string): void => console.error(line.endsWith("\n") ? line.slice(0, -1) : line);

export function createLogger(level: Level = "info", write: (line: string) => void = writeStderr): Logger {
  const logger: Logger = {
    level,
    enabled: (l) => RANK[l] <= RANK[logger.level],
    error: (m, f) => emit("error", m, f),
    warn: (m, f) => emit("warn", m, f),
    info: (m, f) => emit("info", m, f),
    debug: (m, f) => emit("debug", m, f),
    trace: (m, f) => emit("trace", m, f),
  };
  function emit(l: Level, msg: string, fields?: Record<string, unknown>): void {
    if (RANK[l] > RANK[logger.level]) return;
    let line = `${new Date().toISOString()} ${l.toUpperCase().padEnd(5)} ${forLog(msg)}`;
    if (fields) {
      for (const [k, v] of Object.entries(fields)) if (v !== undefined) line += ` ${k}=${formatValue(v)}`;
    }
    write(`${line}\n`);
  }
  return logger;
}

/** glog verbosity to a level: 0 info, 1 debug, 2+ trace. */
export function levelForVerbosity(v: number): Level {
  return v >= 2 ? "trace" : v >= 1 ? "debug" : "info";
}

/** What a library user may pass as a logger: at least `error`, `warn` and `info`; the rest is optional. */
export type LoggerLike = Pick<Logger, "error" | "warn" | "info"> & Partial<Logger>;

/**
 * A full Logger from a minimal one (`console` works): missing levels are dropped, and `enabled` follows what is
 * there, so per-request lines (debug) are made only for a logger that takes them.
 */
export function asLogger(l: LoggerLike): Logger {
  if (typeof l.enabled === "function" && l.debug && l.trace && l.level) return l as Logger;
  const drop = () => {};
  // The user's sink gets what ours would write: nothing that looks like a credential.
  const clean = (f?: Record<string, unknown>) =>
    f &&
    Object.fromEntries(
      Object.entries(f).map(([k, v]) => [k, typeof v === "string" ? redact(v) : v instanceof Error ? redact(v.message) : v]),
    );
  const to = (sink: (m: string, f?: Record<string, unknown>) => void) => (m: string, f?: Record<string, unknown>) =>
    sink(redact(m), clean(f));
  const logger: Logger = {
    level: l.level ?? (l.debug ? "debug" : "info"),
    enabled: l.enabled ? (level) => l.enabled!(level) : (level) => RANK[level] <= RANK[logger.level],
    error: to((m, f) => l.error(m, f)),
    warn: to((m, f) => l.warn(m, f)),
    info: to((m, f) => l.info(m, f)),
    debug: l.debug ? to((m, f) => l.debug!(m, f)) : drop,
    trace: l.trace ? to((m, f) => l.trace!(m, f)) : drop,
  };
  return logger;
}

/** A logger that drops everything (library default, so embedding tests stay quiet). */
export const silentLogger: Logger = createLogger("error", () => {});
