/**
 * `gce_metadata_server healthcheck [-url http://127.0.0.1:8080]`: exit 0 when `project/project-id` answers 200
 * within 2 s, else 1. The image declares it as its HEALTHCHECK: distroless has no shell or curl to probe with.
 */
import { UsageError } from "../errors.ts";
import { printErr, printOut } from "./print.ts";

const PROBE_PATH = "/computeMetadata/v1/project/project-id";
const TIMEOUT_MS = 2000;

const USAGE = `Usage of gce_metadata_server healthcheck:
  -url string
    \tbase URL of the metadata server to probe (default "http://127.0.0.1:8080")
Exits 0 when ${PROBE_PATH} answers 200 within ${TIMEOUT_MS / 1000} s, 1 otherwise.
`;

interface HealthFlags {
  url: string;
  help: boolean;
}

/** Go flag syntax for this command's one flag: `-url v`, `-url=v`, `--url v`, `--url=v`, `-h`. */
export function parseHealthFlags(argv: readonly string[]): HealthFlags {
  const out: HealthFlags = { url: "http://127.0.0.1:8080", help: false };
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
    if (name !== "url") throw new UsageError("USAGE", `flag provided but not defined: -${name}`);
    if (value === undefined) {
      if (i >= argv.length) throw new UsageError("USAGE", "flag needs an argument: -url");
      value = argv[i++]!;
    }
    out.url = value;
  }
  if (i < argv.length) throw new UsageError("USAGE", `unexpected argument ${JSON.stringify(argv[i])}; every option is a -flag`);
  if (!/^https?:\/\/[^/?#\s]+\/?$/.test(out.url))
    throw new UsageError("USAGE", `invalid -url ${JSON.stringify(out.url)}: use the server's base URL, e.g. http://127.0.0.1:8080`);
  return out;
}

/** Why the probe failed, in one line, or undefined when it answered 200. */
async function probe(base: string): Promise<string | undefined> {
  const url = base.replace(/\/$/, "") + PROBE_PATH;
  try {
    const res = await fetch(url, { headers: { "Metadata-Flavor": "Google" }, signal: AbortSignal.timeout(TIMEOUT_MS) });
    await res.arrayBuffer();
    return res.status === 200 ? undefined : `${url} answered ${res.status}`;
  } catch (e) {
    const err = e as Error & { code?: string };
    if (err.name === "TimeoutError" || err.name === "AbortError") return `${url} did not answer within ${TIMEOUT_MS / 1000} s`;
    return `${url}: ${err.code ?? err.message}`;
  }
}

export async function main(argv: string[], _env: Record<string, string | undefined>): Promise<number> {
  let flags: HealthFlags;
  try {
    flags = parseHealthFlags(argv);
  } catch (e) {
    if (!(e instanceof UsageError)) throw e;
    printErr(`${e.message}\n${USAGE}`);
    return 2;
  }
  if (flags.help) {
    printErr(USAGE);
    return 0;
  }
  const failure = await probe(flags.url);
  if (failure) {
    printErr(`unhealthy: ${failure}\n`);
    return 1;
  }
  printOut("healthy\n");
  return 0;
}
