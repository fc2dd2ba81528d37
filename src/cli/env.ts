/**
 * `gce_metadata_server env [-shell sh|fish|powershell|cmd] [-url URL]`: the lines that point every SDK at the
 * server, so `eval "$(gce_metadata_server env)"` is all a shell needs. Every SDK reads a different mix of
 * `GCE_METADATA_HOST`, `GCE_METADATA_IP` and `GCE_METADATA_ROOT` (spec §8.1), so all three get the same host:port;
 * `METADATA_SERVER_DETECTION=assume-present` spares gcp-metadata its probe; and `GOOGLE_APPLICATION_CREDENTIALS`,
 * which every SDK's Application Default Credentials prefer to the metadata server, is unset.
 */
import { UsageError } from "../errors.ts";
import { metadataBaseUrl } from "../metadata/client.ts";
import { type FlagSpec, parseCommandFlags } from "./flags.ts";
import { printErr, printOut } from "./print.ts";

const FLAGS = {
  shell: { kind: "string", default: "sh", help: "syntax of the lines: sh (bash, zsh, …), fish, powershell or cmd" },
  url: { kind: "string", default: "http://127.0.0.1:8080", help: "the server's URL (its -interface and -port)" },
} as const satisfies Record<string, FlagSpec>;

const PROGRAM = "gce_metadata_server env";

type Shell = "sh" | "fish" | "powershell" | "cmd";

interface Syntax {
  comment(text: string): string;
  set(name: string, value: string): string;
  unset(name: string): string;
}

/** Single quotes where a value has more than letters, digits and `.:_-` (an IPv6 `[::1]` is a glob in sh). */
const quoted = (v: string): string => (/^[\w.:-]+$/.test(v) ? v : `'${v}'`);

const SYNTAX: Record<Shell, Syntax> = {
  sh: { comment: (t) => `# ${t}`, set: (n, v) => `export ${n}=${quoted(v)}`, unset: (n) => `unset ${n}` },
  fish: { comment: (t) => `# ${t}`, set: (n, v) => `set -gx ${n} ${quoted(v)}`, unset: (n) => `set -e ${n}` },
  powershell: {
    comment: (t) => `# ${t}`,
    set: (n, v) => `$env:${n} = "${v}"`,
    unset: (n) => `Remove-Item Env:${n} -ErrorAction SilentlyContinue`,
  },
  cmd: { comment: (t) => `REM ${t}`, set: (n, v) => `set ${n}=${v}`, unset: (n) => `set ${n}=` },
};

/** `host:port` as the GCE_METADATA_* variables take it; a UsageError for a URL clients cannot use. */
export function metadataHostOf(url: string): string {
  const base = metadataBaseUrl(url, "-url");
  if (base.startsWith("https:")) {
    throw new UsageError("BAD_URL", `-url ${JSON.stringify(url)}: clients reach GCE_METADATA_HOST over plain HTTP; give the http:// URL`);
  }
  return base.slice("http://".length);
}

/** The lines for one shell. */
export function envLines(shell: Shell, host: string): string[] {
  const s = SYNTAX[shell];
  return [
    s.comment(`point Google's SDKs and gcloud at the metadata server at ${host}`),
    s.set("GCE_METADATA_HOST", host),
    s.set("GCE_METADATA_IP", host),
    s.set("GCE_METADATA_ROOT", host),
    s.comment("gcp-metadata (Node): the server is there, skip the probe"),
    s.set("METADATA_SERVER_DETECTION", "assume-present"),
    s.comment(
      "GOOGLE_APPLICATION_CREDENTIALS wins over the metadata server in every SDK (gcloud's ADC file too: run gce_metadata_server doctor)",
    ),
    s.unset("GOOGLE_APPLICATION_CREDENTIALS"),
  ];
}

export async function main(argv: string[], _env: Record<string, string | undefined>): Promise<number> {
  const flags = parseCommandFlags(argv, FLAGS, PROGRAM);
  if (typeof flags === "number") return flags;
  if (!Object.hasOwn(SYNTAX, flags.shell)) {
    printErr(`invalid -shell ${JSON.stringify(flags.shell)}: use sh, fish, powershell or cmd\n`);
    return 2;
  }
  let host: string;
  try {
    host = metadataHostOf(flags.url);
  } catch (e) {
    printErr(`${(e as Error).message}\n`);
    return 2;
  }
  printOut(`${envLines(flags.shell as Shell, host).join("\n")}\n`);
  return 0;
}
