/**
 * `gce_metadata_server healthcheck [-url http://127.0.0.1:8080]`: exit 0 when `project/project-id` answers 200
 * within 2 s, else 1. The image declares it as its HEALTHCHECK: distroless has no shell or curl to probe with.
 */
import { UsageError } from "../errors.ts";
import { type FlagSpec, parseGoFlags, usage } from "./flags.ts";
import { printErr, printOut } from "./print.ts";

const PROBE_PATH = "/computeMetadata/v1/project/project-id";
const TIMEOUT_MS = 2000;

/** This command's flag table, in the server's flag syntax (flags.ts). */
export const HEALTHCHECK_FLAGS = {
  url: {
    kind: "string",
    default: "http://127.0.0.1:8080",
    help: `base URL of the metadata server to probe; exit 0 when ${PROBE_PATH} answers 200 within ${TIMEOUT_MS / 1000} s, 1 otherwise`,
  },
} as const satisfies Record<string, FlagSpec>;

const PROGRAM = "gce_metadata_server healthcheck";

/** The probe's base URL from the flags; a UsageError for one that is not a server's base URL. */
export function parseHealthFlags(argv: readonly string[]): { url: string; help: boolean } {
  const flags = parseGoFlags(argv, HEALTHCHECK_FLAGS);
  if (!/^https?:\/\/[^/?#\s]+\/?$/.test(flags.url)) {
    throw new UsageError("USAGE", `invalid -url ${JSON.stringify(flags.url)}: use the server's base URL, e.g. http://127.0.0.1:8080`);
  }
  return flags;
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
  let flags: { url: string; help: boolean };
  try {
    flags = parseHealthFlags(argv);
  } catch (e) {
    if (!(e instanceof UsageError)) throw e;
    printErr(`${e.message}\n${usage(PROGRAM, HEALTHCHECK_FLAGS)}`);
    return 2;
  }
  if (flags.help) {
    printErr(usage(PROGRAM, HEALTHCHECK_FLAGS));
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
