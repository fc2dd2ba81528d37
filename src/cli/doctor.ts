/**
 * `gce_metadata_server doctor`: checks, from a client's side, that Google's SDKs here would use the metadata
 * server. It reads the environment as they do (no `-url`): the `GCE_METADATA_*` variables, whether
 * `GOOGLE_APPLICATION_CREDENTIALS` or gcloud's ADC file would win over the server, what `metadata.google.internal`
 * resolves to, and whether the server answers with the right headers and serves tokens. One line per finding,
 * problems with their fix; the exit code is 1 when it found a problem. No token is ever printed.
 */
import { join } from "node:path";
import { readEnvironment } from "../environment.ts";
import { DEFAULT_METADATA_HOST, firstLine, type MetadataAnswer, metadataBaseUrl, metadataGet } from "../metadata/client.ts";
import { type FlagSpec, parseCommandFlags } from "./flags.ts";
import { printOut } from "./print.ts";

const FLAGS = {} as const satisfies Record<string, FlagSpec>;
const PROGRAM = "gce_metadata_server doctor";
const V1 = "/computeMetadata/v1/";
const FIX_ENV = `eval "$(gce_metadata_server env -url http://HOST)"`;
const VARIABLES = ["GCE_METADATA_HOST", "GCE_METADATA_IP", "GCE_METADATA_ROOT"] as const;
/** Who reads each variable (spec §8.1). */
const READERS: Record<(typeof VARIABLES)[number], string> = {
  GCE_METADATA_HOST: "Python, Go, Java and .NET read the server's address from it",
  GCE_METADATA_IP: "Node's gcp-metadata prefers it, and Python's google-auth probes it to decide it runs on GCE",
  GCE_METADATA_ROOT: "gcloud reads metadata through it",
};

type Level = "ok" | "note" | "PROBLEM";

export interface Finding {
  level: Level;
  text: string;
  fix?: string;
}

export interface DoctorOptions {
  /** Time allowed for each request and for the DNS lookup (default 5 s). */
  timeoutMs?: number;
  platform?: string;
  /** Resolve a host name (default: the system resolver, as clients use it). */
  lookup?: (host: string) => Promise<string[]>;
}

const ok = (text: string): Finding => ({ level: "ok", text });
const note = (text: string, fix?: string): Finding => ({ level: "note", text, ...(fix ? { fix } : {}) });
const problem = (text: string, fix: string): Finding => ({ level: "PROBLEM", text, fix });

/** The variables: set, alike, and the switches that turn the server off. */
function variables(env: Record<string, string | undefined>): { findings: Finding[]; host: string | undefined } {
  const findings: Finding[] = [];
  const values = VARIABLES.map((n) => [n, env[n] || undefined] as const);
  const set = values.filter(([, v]) => v !== undefined);
  const host = env.GCE_METADATA_HOST || env.GCE_METADATA_IP || env.GCE_METADATA_ROOT || undefined;
  if (set.length === 0) {
    findings.push(note(`${VARIABLES.join(", ")} are unset: clients look for ${DEFAULT_METADATA_HOST} (and 169.254.169.254)`));
  } else {
    const distinct = new Set(set.map(([, v]) => v));
    if (distinct.size > 1) {
      findings.push(
        problem(
          `the variables name different servers (${set.map(([n, v]) => `${n}=${v}`).join(", ")}): each SDK reads a different one`,
          `give all three the same host:port: ${FIX_ENV.replace("HOST", host!)}`,
        ),
      );
    } else if (set.length === VARIABLES.length) {
      findings.push(ok(`${VARIABLES.join(", ")} all name ${host}`));
    }
    for (const [name, v] of values) {
      if (v === undefined)
        findings.push(problem(`${name} is unset: ${READERS[name]}`, `export ${name}=${host} (or ${FIX_ENV.replace("HOST", host!)})`));
    }
    for (const [name, v] of set) {
      try {
        metadataBaseUrl(v!, name);
      } catch (e) {
        findings.push(problem((e as Error).message, `set ${name} to the server's host:port, e.g. 127.0.0.1:8080`));
      }
    }
  }
  const detection = env.METADATA_SERVER_DETECTION;
  if (detection === "assume-present")
    findings.push(ok("METADATA_SERVER_DETECTION=assume-present: gcp-metadata uses the server without probing"));
  else if (detection === "none") {
    findings.push(
      problem(
        "METADATA_SERVER_DETECTION=none: gcp-metadata never uses a metadata server",
        "export METADATA_SERVER_DETECTION=assume-present",
      ),
    );
  } else if (detection) {
    findings.push(
      note(
        `METADATA_SERVER_DETECTION=${detection}: gcp-metadata probes as that says`,
        "export METADATA_SERVER_DETECTION=assume-present to skip the probe",
      ),
    );
  } else {
    findings.push(
      note(
        "METADATA_SERVER_DETECTION is unset: gcp-metadata probes for the server first",
        "export METADATA_SERVER_DETECTION=assume-present to skip the probe",
      ),
    );
  }
  if (/^true$/i.test(env.NO_GCE_CHECK ?? "")) {
    findings.push(problem("NO_GCE_CHECK=true: Python's google-auth and Java's library never use a metadata server", "unset NO_GCE_CHECK"));
  }
  return { findings, host };
}

/** A credentials file's `type`, without reading anything else out of it. */
async function fileType(path: string): Promise<string> {
  try {
    const json = JSON.parse(await Bun.file(path).text()) as { type?: unknown };
    return typeof json.type === "string" ? json.type : "no type";
  } catch (e) {
    const code = (e as { code?: string }).code;
    return code === "ENOENT" ? "no such file" : code === "EACCES" ? "unreadable" : "not JSON";
  }
}

/** Application Default Credentials that would win over the metadata server. */
async function credentials(env: Record<string, string | undefined>, platform: string): Promise<Finding[]> {
  const findings: Finding[] = [];
  const e = readEnvironment(env, platform);
  if (e.credentialsFile) {
    findings.push(
      problem(
        `GOOGLE_APPLICATION_CREDENTIALS=${e.credentialsFile} (${await fileType(e.credentialsFile)}): every SDK's Application Default Credentials use it before the metadata server`,
        "unset GOOGLE_APPLICATION_CREDENTIALS",
      ),
    );
  }
  const dir = e.gcloudConfigDir;
  const wellKnown = dir ? join(dir, "application_default_credentials.json") : undefined;
  if (wellKnown && (await Bun.file(wellKnown).exists())) {
    findings.push(
      problem(
        `gcloud's ADC file ${wellKnown} (${await fileType(wellKnown)}) exists: every SDK's Application Default Credentials use it before the metadata server`,
        `gcloud auth application-default revoke, or move the file away, or point CLOUDSDK_CONFIG at another directory`,
      ),
    );
  }
  if (findings.length === 0) {
    findings.push(
      ok(
        `no GOOGLE_APPLICATION_CREDENTIALS and no gcloud ADC file${wellKnown ? ` (${wellKnown})` : ""}: Application Default Credentials fall through to the metadata server`,
      ),
    );
  }
  return findings;
}

async function systemLookup(host: string): Promise<string[]> {
  const { lookup } = await import("node:dns/promises");
  return (await lookup(host, { all: true })).map((a) => a.address);
}

/** What `metadata.google.internal` resolves to, and whether that matters with the variables as they are. */
async function resolution(host: string | undefined, options: Required<Pick<DoctorOptions, "timeoutMs" | "lookup">>): Promise<Finding> {
  let addresses: string[] | undefined;
  let why = "";
  try {
    addresses = await Promise.race([
      options.lookup(DEFAULT_METADATA_HOST),
      Bun.sleep(options.timeoutMs).then(() => Promise.reject(new Error(`no answer within ${options.timeoutMs} ms`))),
    ]);
  } catch (e) {
    why = (e as { code?: string }).code ?? (e as Error).message;
  }
  if (addresses?.length) {
    const text = `${DEFAULT_METADATA_HOST} resolves to ${addresses.join(", ")}`;
    return host ? note(`${text}: clients that ignore GCE_METADATA_HOST (java-core's MetadataConfig) go there, not to ${host}`) : ok(text);
  }
  if (host) {
    return note(
      `${DEFAULT_METADATA_HOST} does not resolve (${why}): clients that ignore GCE_METADATA_HOST (java-core's MetadataConfig) find no server`,
      `map ${DEFAULT_METADATA_HOST} to the server in /etc/hosts if you use them`,
    );
  }
  return problem(
    `${DEFAULT_METADATA_HOST} does not resolve (${why}) and GCE_METADATA_HOST is unset: clients find no metadata server`,
    FIX_ENV.replace("HOST", "127.0.0.1:8080"),
  );
}

/** The server as clients reach it: the probes, the headers, a token and an identity token. */
async function server(host: string | undefined, timeoutMs: number): Promise<Finding[]> {
  let base: string;
  try {
    base = metadataBaseUrl(host ?? DEFAULT_METADATA_HOST, "GCE_METADATA_HOST");
  } catch {
    return []; // already reported with the variables
  }
  const get = (path: string, flavor = true): Promise<MetadataAnswer> => metadataGet(base, path, { timeoutMs, flavor });
  const findings: Finding[] = [];
  let root: MetadataAnswer;
  try {
    root = await get("/", false);
  } catch (e) {
    return [
      problem(
        `nothing answers at ${base}/ (${(e as Error).message})`,
        `start the server there (gce_metadata_server -port …), or point the variables at it: ${FIX_ENV.replace("HOST", "127.0.0.1:8080")}`,
      ),
    ];
  }
  if (root.status !== 200 || !root.flavor) {
    return [
      problem(
        `${base}/ answered ${root.status}${root.flavor ? "" : " without Metadata-Flavor: Google"}: it is not a metadata server, and SDKs decide they are not on GCE`,
        "point the variables at the metadata server's host:port",
      ),
    ];
  }
  findings.push(ok(`${base}/ answers with Metadata-Flavor: Google (the on-GCE probe of Go, Python, Java and .NET)`));

  const tries: Array<[string, (a: MetadataAnswer) => string | undefined, string]> = [
    [
      `${V1}instance`,
      (a) => (a.status === 200 && a.flavor ? undefined : `answered ${a.status}`),
      "gcp-metadata's probe (redirected to instance/)",
    ],
    [
      `${V1}project/project-id`,
      (a) =>
        a.status !== 200 || !a.flavor
          ? `answered ${a.status} ${firstLine(a.body)}`
          : a.contentType !== "application/text"
            ? `has Content-Type ${a.contentType}, not application/text`
            : undefined,
      "project/project-id",
    ],
    [
      `${V1}project/numeric-project-id`,
      (a) => (a.status === 200 && /^\d+$/.test(a.body) ? undefined : `is ${JSON.stringify(firstLine(a.body, 40))}, not digits only`),
      "gcloud's probe (numeric-project-id, digits only)",
    ],
  ];
  let project = "";
  for (const [path, wrong, what] of tries) {
    let a: MetadataAnswer;
    try {
      a = await get(path);
    } catch (e) {
      findings.push(problem(`${what}: ${(e as Error).message}`, "check that the server is up and reachable"));
      continue;
    }
    const bad = wrong(a);
    if (bad) findings.push(problem(`${what} ${bad}`, "check the server's config (project.projectId, project.numericProjectId)"));
    else if (path === `${V1}project/project-id`) project = a.body;
  }
  if (project) findings.push(ok(`the server answers as a metadata server: project ${project}`));

  try {
    const open = await get(`${V1}project/project-id`, false);
    if (open.status === 200) {
      findings.push(
        problem(
          `${base} answers without Metadata-Flavor: Google, so any request forgery can read it`,
          "serve it with this server, which refuses such requests (403) as GCE does",
        ),
      );
    }
  } catch {
    // reported above
  }

  try {
    const email = await get(`${V1}instance/service-accounts/default/email`);
    if (email.status !== 200) {
      findings.push(
        problem(
          `the default service account answered ${email.status}: clients get no token`,
          "give the config an instance.serviceAccounts.default",
        ),
      );
      return findings;
    }
    const t = await get(`${V1}instance/service-accounts/default/token`);
    let body: { access_token?: unknown; expires_in?: unknown; token_type?: unknown } = {};
    try {
      body = JSON.parse(t.body);
    } catch {
      // judged below
    }
    if (
      t.status === 200 &&
      t.contentType === "application/json" &&
      typeof body.access_token === "string" &&
      body.access_token !== "" &&
      typeof body.expires_in === "number" &&
      body.expires_in > 0 &&
      body.token_type === "Bearer"
    ) {
      findings.push(ok(`access tokens are served for ${email.body} (expires in ${body.expires_in} s)`));
    } else {
      findings.push(
        problem(
          `the token request for ${email.body} answered ${t.status}${t.status === 200 ? " with no usable token" : `: ${firstLine(t.body)}`}`,
          "see the server's log for why the credential source failed",
        ),
      );
    }
    const id = await get(`${V1}instance/service-accounts/default/identity?audience=https://doctor.invalid&format=full`);
    if (id.status === 200 && /^[\w-]+\.[\w-]+\.[\w-]*$/.test(id.body.trim()))
      findings.push(ok(`identity tokens are served for ${email.body}`));
    else
      findings.push(
        problem(
          `the identity request for ${email.body} answered ${id.status}${id.status === 200 ? " with no JWT" : `: ${firstLine(id.body)}`}`,
          "see the server's log for why the credential source failed",
        ),
      );
  } catch (e) {
    findings.push(problem(`token requests failed: ${(e as Error).message}`, "check that the server is up and reachable"));
  }
  return findings;
}

/** Every finding, in the order they are printed. */
export async function diagnose(env: Record<string, string | undefined>, options: DoctorOptions = {}): Promise<Finding[]> {
  const timeoutMs = options.timeoutMs ?? 5000;
  const { findings, host } = variables(env);
  findings.push(...(await credentials(env, options.platform ?? process.platform)));
  const resolved = await resolution(host, { timeoutMs, lookup: options.lookup ?? systemLookup });
  findings.push(resolved);
  // With no variable and no name to reach, there is no server to ask (the line above says so).
  if (host || resolved.level !== "PROBLEM") findings.push(...(await server(host, timeoutMs)));
  return findings;
}

/** `ok      …`, `note    …; …`, `PROBLEM …; fix: …`. */
export function formatFinding(f: Finding): string {
  const fix = f.fix ? (f.level === "PROBLEM" ? `; fix: ${f.fix}` : `; ${f.fix}`) : "";
  return `${f.level.padEnd(7)} ${f.text}${fix}`;
}

export async function main(argv: string[], env: Record<string, string | undefined>): Promise<number> {
  const flags = parseCommandFlags(argv, FLAGS, PROGRAM);
  if (typeof flags === "number") return flags;
  const findings = await diagnose(env);
  printOut(`${findings.map(formatFinding).join("\n")}\n`);
  return findings.some((f) => f.level === "PROBLEM") ? 1 : 0;
}
