/**
 * Command-line flags in Go's `flag` syntax (`-f v`, `-f=v`, `--f v`, `--f=v`, bare booleans), with the Go
 * emulator's names and defaults, plus glog's flags that its documentation uses everywhere.
 */
import { UsageError } from "../errors.ts";
import { printErr } from "./print.ts";

/** `strings` is a repeatable string flag: every occurrence is kept, in order. */
type Kind = "string" | "bool" | "int" | "strings";

export interface FlagSpec {
  kind: Kind;
  default: string | boolean | number | readonly string[];
  help: string;
}

/** The Go emulator's flags (cmd/main.go) and glog's, then this program's own additions. */
export const FLAGS = {
  configFile: {
    kind: "string",
    default: "config.json",
    help: "config file: the metadata tree in the real server's ?recursive=true JSON shape",
  },
  interface: { kind: "string", default: "127.0.0.1", help: "interface address to bind to" },
  port: { kind: "string", default: ":8080", help: "port to listen on (:8080, 8080, or :0 for a free port)" },
  domainsocket: { kind: "string", default: "", help: "listen only on this unix socket (TCP off)" },
  serviceAccountFile: { kind: "string", default: "", help: "service account key JSON to mint tokens with" },
  impersonate: { kind: "bool", default: false, help: "impersonate the config's default account, using ADC as the source" },
  federate: { kind: "bool", default: false, help: "use workload identity federation from GOOGLE_APPLICATION_CREDENTIALS" },
  metricsEnabled: { kind: "bool", default: false, help: "serve Prometheus metrics" },
  metricsInterface: { kind: "string", default: "127.0.0.1", help: "metrics interface address to bind to" },
  metricsPort: { kind: "string", default: "9000", help: "metrics port" },
  metricsPath: { kind: "string", default: "/metrics", help: "metrics path" },
  tpm: { kind: "bool", default: false, help: "sign with a key held in a TPM" },
  persistentHandle: { kind: "int", default: 0, help: "TPM persistent handle of the key (e.g. 0x81010002)" },
  keyfile: { kind: "string", default: "", help: "TPM key as a TSS2 PRIVATE KEY PEM file" },
  "tpm-path": { kind: "string", default: "/dev/tpmrm0", help: "TPM device path, or host:port of a software TPM" },
  parentPass: { kind: "string", default: "", help: "password of the TPM key's parent" },
  keyPass: { kind: "string", default: "", help: "password of the TPM key" },
  pcrs: { kind: "string", default: "", help: "PCRs the key's policy is bound to (comma separated, ascending)" },
  "tpm-session-encrypt-with-name": {
    kind: "string",
    default: "",
    help: "hex name of the EK for an encrypted TPM session; a mismatch refuses start",
  },
  useOauthToken: {
    kind: "bool",
    default: false,
    help: "TPM: exchange a signed assertion for an OAuth2 token instead of a self-signed JWT access token",
  },
  useEKParent: { kind: "bool", default: false, help: "TPM: the key file's parent is the RSA endorsement key" },
  useTPMmTLS: { kind: "bool", default: false, help: "TPM key as the client key of an mTLS workload federation exchange" },
  projectNumber: { kind: "string", default: "", help: "project number for TPM mTLS federation" },
  poolID: { kind: "string", default: "", help: "workload identity pool id for TPM mTLS federation" },
  providerID: { kind: "string", default: "", help: "workload identity provider id for TPM mTLS federation" },
  pubCert: { kind: "string", default: "", help: "client certificate for TPM mTLS federation" },
  usemTLS: { kind: "bool", default: false, help: "serve HTTPS and require client certificates" },
  rootCAmTLS: { kind: "string", default: "certs/root.crt", help: "CA that client certificates must chain to" },
  serverCert: { kind: "string", default: "certs/server.crt", help: "server certificate" },
  serverKey: { kind: "string", default: "certs/server.key", help: "server key" },
  version: { kind: "bool", default: false, help: "print version and exit" },
  // glog
  logtostderr: { kind: "bool", default: false, help: "log to standard error (always on here)" },
  alsologtostderr: { kind: "bool", default: false, help: "log to standard error (always on here)" },
  v: { kind: "int", default: 0, help: "log verbosity: 1 logs every request, 2 adds detail" },
  stderrthreshold: { kind: "string", default: "ERROR", help: "accepted for glog compatibility" },
  log_dir: { kind: "string", default: "", help: "accepted for glog compatibility (logs go to standard error)" },
  vmodule: { kind: "string", default: "", help: "accepted for glog compatibility" },
  log_backtrace_at: { kind: "string", default: "", help: "accepted for glog compatibility" },
  // this program's own
  domainsocketMode: {
    kind: "string",
    default: "0660",
    help: "file mode of the -domainsocket socket, octal (0660: owner and group may connect)",
  },
  issuer: { kind: "string", default: "https://accounts.google.com", help: "emulated issuer: iss of the ID tokens it signs" },
  issuerKey: {
    kind: "string",
    default: "",
    help: "emulated issuer: PKCS#8 PEM file for its signing key, created if missing, so tokens verify across restarts",
  },
  // changing metadata at run time (docs/dynamic.md)
  watchConfig: {
    kind: "bool",
    default: true,
    help: "reload -configFile whenever it changes on disk (in place, renamed over, or a Kubernetes ConfigMap); -watchConfig=false to turn off",
  },
  controlAPI: {
    kind: "bool",
    default: false,
    help: "serve the control API under /emulator/v1/ on the metadata listener (set, merge, delete metadata; Google's reference emulator's update routes; simulated events)",
  },
  controlListen: {
    kind: "string",
    default: "",
    help: "serve the control API on its own listener instead, host:port or unix:/path (the metadata listener then answers /emulator/v1/ with 404); implies -controlAPI",
  },
  controlTokenFile: {
    kind: "string",
    default: "",
    help: "control requests must carry Authorization: Bearer <this file's content, trimmed> (401 otherwise)",
  },
  maxControlBodyBytes: { kind: "int", default: 4194304, help: "largest control-API request body, 413 beyond" },
  maxWaiters: {
    kind: "int",
    default: -1,
    help: "most wait_for_change requests held at once, 503 beyond (-1: half the open-file limit, at most 10000; 0: no limit)",
  },
  maxGuestValueBytes: { kind: "int", default: 262144, help: "largest guest attribute value a guest may PUT, 413 beyond" },
  maxGuestKeys: { kind: "int", default: 1000, help: "most keys in one guest attribute namespace, 400 beyond" },
  maxGuestNamespaces: { kind: "int", default: 100, help: "most guest attribute namespaces, 400 beyond" },
  maxGuestBytes: { kind: "int", default: 16777216, help: "most bytes of all guest attribute values together, 413 beyond" },
  legacyHeader: {
    kind: "bool",
    default: true,
    help: "accept X-Google-Metadata-Request: True in place of Metadata-Flavor: Google (-legacyHeader=false to refuse it)",
  },
  upstream: {
    kind: "string",
    default: "",
    help: "serve the tree of another metadata server (http://169.254.169.254 on a VM, or another instance of this one), kept fresh with wait_for_change; -configFile, if given, is a partial overlay merged over it; without a credential flag its tokens are served too",
  },
  callers: {
    kind: "string",
    default: "",
    help: 'a JSON file giving callers (by source address) their own view of the tree and accounts: {"callers":[{"match":{"cidr":"10.0.0.5/32"},"overlay":{…}}],"unmatched":"allow"|"deny"}; reloaded when it changes',
  },
  simulateMaintenance: {
    kind: "string",
    default: "",
    help: 'schedule a host maintenance event: "in=30s,type=MIGRATE,duration=60s" (type MIGRATE or TERMINATE; or at=<RFC 3339 time> instead of in=)',
  },
  simulatePreemption: {
    kind: "string",
    default: "",
    help: 'schedule a preemption: "in=2m" or "at=<RFC 3339 time>", optionally grace=30s (shutdown-details/max-duration)',
  },
  // test superpowers (docs/faults.md)
  tokenLifetime: {
    kind: "string",
    default: "1h",
    help: "lifetime of the tokens this server mints (emulated issuer, static tokens' countdown); refresh margins scale with it, so 2m behaves like the real hour, compressed",
  },
  fault: {
    kind: "strings",
    default: [],
    help: 'inject a fault, repeatable: "path=instance/service-accounts/*/token,status=503,times=2" (fields: path, action=respond|reset|hang, status, header=Name: value, delay, times, every, probability, after, for; see docs/faults.md)',
  },
  tokenURL: {
    kind: "string",
    default: "https://oauth2.googleapis.com/token",
    help: "-tpm: OAuth2 token endpoint for -useOauthToken and ID tokens, and the aud of the assertions; -impersonate: token endpoint of source credentials whose file names none (this program's addition)",
  },
  iamURL: {
    kind: "string",
    default: "https://iamcredentials.googleapis.com",
    help: "-impersonate, -federate: IAM Credentials base URL for generateAccessToken and generateIdToken; -federate without it uses the origin of the file's service_account_impersonation_url (this program's addition)",
  },
  upstreamTimeout: {
    kind: "string",
    default: "10s",
    help: "deadline of each token request's upstream calls (token endpoint, STS, IAM), retries included; past it the request is answered 503 (Go duration, at most 4m)",
  },
} as const satisfies Record<string, FlagSpec>;

export type FlagName = keyof typeof FLAGS;
type ValueOf<K extends FlagName> = (typeof FLAGS)[K]["kind"] extends "bool"
  ? boolean
  : (typeof FLAGS)[K]["kind"] extends "int"
    ? number
    : (typeof FLAGS)[K]["kind"] extends "strings"
      ? string[]
      : string;
export type Flags = { [K in FlagName]: ValueOf<K> } & { help: boolean; explicit: Set<FlagName> };

const BOOL_VALUES: Record<string, boolean> = {
  "1": true,
  t: true,
  T: true,
  true: true,
  TRUE: true,
  True: true,
  "0": false,
  f: false,
  F: false,
  false: false,
  FALSE: false,
  False: false,
};

/** Go's strconv.ParseInt(s, 0, 64): decimal, 0x hex, 0o/0 octal, 0b binary, underscores between digits. */
export function parseGoInt(s: string): number | undefined {
  const m = /^([+-]?)(0[xX][0-9a-fA-F_]+|0[oO][0-7_]+|0[bB][01_]+|0[0-7_]*|[1-9][0-9_]*)$/.exec(s);
  if (!m) return undefined;
  const sign = m[1] === "-" ? -1n : 1n;
  const body = m[2]!.replace(/_/g, "");
  let value: bigint;
  if (/^0[xXoObB]/.test(body)) value = BigInt(body.toLowerCase());
  else if (body.length > 1 && body.startsWith("0")) value = BigInt(`0o${body.slice(1)}`);
  else value = BigInt(body || "0");
  value *= sign;
  if (value > BigInt(Number.MAX_SAFE_INTEGER) || value < -BigInt(Number.MAX_SAFE_INTEGER)) return undefined;
  return Number(value);
}

export function parseFlags(argv: readonly string[]): Flags {
  return parseGoFlags(argv, FLAGS) as Flags;
}

/** The values a flag table gives, by its kinds; `help` for -h, and the names given on the command line. */
export type ParsedFlags<T extends Record<string, FlagSpec>> = {
  [K in keyof T]: T[K]["kind"] extends "bool"
    ? boolean
    : T[K]["kind"] extends "int"
      ? number
      : T[K]["kind"] extends "strings"
        ? string[]
        : string;
} & { help: boolean; explicit: Set<keyof T & string> };

/** Parse Go-style flags against any table (the server's, or a subcommand's own). Throws UsageError. */
export function parseGoFlags<T extends Record<string, FlagSpec>>(argv: readonly string[], table: T): ParsedFlags<T> {
  const specs = table as Record<string, FlagSpec>;
  const out: Record<string, unknown> = { help: false, explicit: new Set<string>() };
  for (const [k, spec] of Object.entries(specs)) out[k] = Array.isArray(spec.default) ? [...spec.default] : spec.default;
  const explicit = out.explicit as Set<string>;
  let i = 0;
  while (i < argv.length) {
    const arg = argv[i]!;
    if (arg === "--") {
      i++;
      break;
    }
    if (!arg.startsWith("-") || arg === "-") break;
    i++;
    let name = arg.slice(arg.startsWith("--") ? 2 : 1);
    if (name === "" || name.startsWith("-") || name.startsWith("=")) throw new UsageError("USAGE", `bad flag syntax: ${arg}`);
    let value: string | undefined;
    const eq = name.indexOf("=");
    if (eq >= 0) {
      value = name.slice(eq + 1);
      name = name.slice(0, eq);
    }
    if (name === "h" || name === "help") {
      out.help = true;
      continue;
    }
    // Own keys only: `-constructor` is not a flag.
    const spec = Object.hasOwn(specs, name) ? specs[name] : undefined;
    if (!spec) throw new UsageError("USAGE", `flag provided but not defined: -${name}`);
    if (spec.kind === "bool") {
      if (value === undefined) out[name] = true;
      else {
        const b = Object.hasOwn(BOOL_VALUES, value) ? BOOL_VALUES[value] : undefined;
        if (b === undefined)
          throw new UsageError("USAGE", `invalid boolean value ${JSON.stringify(value)} for -${name}: use -${name} or -${name}=false`);
        out[name] = b;
      }
    } else {
      if (value === undefined) {
        if (i >= argv.length) throw new UsageError("USAGE", `flag needs an argument: -${name}`);
        value = argv[i++]!;
      }
      if (spec.kind === "int") {
        const n = parseGoInt(value);
        if (n === undefined) throw new UsageError("USAGE", `invalid value ${JSON.stringify(value)} for flag -${name}: parse error`);
        out[name] = n;
      } else if (spec.kind === "strings") (out[name] as string[]).push(value);
      else out[name] = value;
    }
    explicit.add(name);
  }
  if (i < argv.length) {
    const rest = argv[i]!;
    const prev = argv[i - 1];
    const prevName = prev?.replace(/^--?/, "");
    const hint =
      prevName && Object.hasOwn(specs, prevName) && specs[prevName]!.kind === "bool" && (rest === "true" || rest === "false")
        ? ` (-${prevName} is a boolean flag: write -${prevName}=${rest})`
        : "";
    throw new UsageError("USAGE", `unexpected argument ${JSON.stringify(rest)}${hint}; every option is a -flag`);
  }
  return out as ParsedFlags<T>;
}

export function usage(program = "gce_metadata_server", table: Record<string, FlagSpec> = FLAGS): string {
  let s = `Usage of ${program}:\n`;
  if (table === FLAGS) s += "  (subcommands: capture, env, doctor, healthcheck; gce_metadata_server <command> -h for theirs)\n";
  for (const [name, spec] of Object.entries(table) as [string, FlagSpec][]) {
    const type = spec.kind === "bool" ? "" : ` ${spec.kind === "int" ? "int" : "string"}`;
    s += `  -${name}${type}\n    \t${spec.help}`;
    // As Go's flag package: zero values are not shown; a boolean that defaults to true says so.
    if (spec.kind === "bool" ? spec.default === true : spec.kind !== "strings" && spec.default !== "" && spec.default !== 0) {
      s += ` (default ${JSON.stringify(spec.default)})`;
    }
    s += "\n";
  }
  return s;
}

/**
 * A subcommand's flags: the parsed values, or the exit code after `-h` (0, usage on stderr) or a bad flag (2, the
 * message and the usage on stderr).
 */
export function parseCommandFlags<T extends Record<string, FlagSpec>>(
  argv: readonly string[],
  table: T,
  program: string,
): ParsedFlags<T> | number {
  let flags: ParsedFlags<T>;
  try {
    flags = parseGoFlags(argv, table);
  } catch (e) {
    if (!(e instanceof UsageError)) throw e;
    printErr(`${e.message}\n${usage(program, table)}`);
    return 2;
  }
  if (flags.help) {
    printErr(usage(program, table));
    return 0;
  }
  return flags;
}
