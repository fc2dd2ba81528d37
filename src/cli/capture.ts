/**
 * `gce_metadata_server capture [-source URL] [-o FILE] [-redact KEY,…]`: read a metadata server (a real VM's, or
 * any other) and write a config file this server serves as the same VM. The file is the source's
 * `?recursive=true` document, plus `universe`, which that document leaves out; service accounts carry their
 * e-mail, aliases and scopes, never a token. Attributes may hold secrets, so a warning names the ones kept and
 * `-redact` blanks the named ones (the key stays, with an empty value). docs/capture.md lists what differs.
 */
import { ConfigError, MetadataError } from "../errors.ts";
import { isJsonObject, type JsonObject, stringifyIndented } from "../json.ts";
import { DEFAULT_METADATA_HOST, metadataBaseUrl } from "../metadata/client.ts";
import { type FlagSpec, parseCommandFlags } from "./flags.ts";
import { printErr, printOut } from "./print.ts";

const FLAGS = {
  source: {
    kind: "string",
    default: "",
    help: `the metadata server to read (default: GCE_METADATA_HOST, else ${DEFAULT_METADATA_HOST})`,
  },
  o: { kind: "string", default: "", help: "write the config here (mode 0600) instead of standard output" },
  redact: {
    kind: "string",
    default: "",
    help: "project or instance attributes to blank, comma separated (startup-script,ssh-keys): the key stays, with an empty value",
  },
} as const satisfies Record<string, FlagSpec>;

const PROGRAM = "gce_metadata_server capture";

/** The attributes directory of `instance` or `project`, when there is one. */
function attributesOf(v1: JsonObject, scope: "instance" | "project"): JsonObject | undefined {
  const dir = v1[scope];
  const attrs = isJsonObject(dir) ? dir.attributes : undefined;
  return isJsonObject(attrs) ? attrs : undefined;
}

/** Blank the named attributes in both scopes; returns the names found nowhere. */
export function redactAttributes(v1: JsonObject, keys: readonly string[]): string[] {
  const missing: string[] = [];
  for (const key of keys) {
    let found = false;
    for (const scope of ["instance", "project"] as const) {
      const attrs = attributesOf(v1, scope);
      if (attrs && Object.hasOwn(attrs, key)) {
        attrs[key] = "";
        found = true;
      }
    }
    if (!found) missing.push(key);
  }
  return missing;
}

/** Service accounts keep e-mail, aliases and scopes; anything token-like a server might add is dropped. */
function withoutTokens(v1: JsonObject): void {
  const instance = v1.instance;
  const accounts = isJsonObject(instance) ? instance.serviceAccounts : undefined;
  if (!isJsonObject(accounts)) return;
  for (const account of Object.values(accounts)) {
    if (!isJsonObject(account)) continue;
    for (const k of Object.keys(account)) if (/^(token|identity|access_?token|id_?token)$/i.test(k)) delete account[k];
  }
}

export async function main(argv: string[], env: Record<string, string | undefined>): Promise<number> {
  const flags = parseCommandFlags(argv, FLAGS, PROGRAM);
  if (typeof flags === "number") return flags;
  const say = (line: string) => printErr(`${line}\n`);
  const redact = flags.redact
    .split(",")
    .map((k) => k.trim())
    .filter(Boolean);
  let base: string;
  try {
    base = metadataBaseUrl(
      flags.source || env.GCE_METADATA_HOST || DEFAULT_METADATA_HOST,
      flags.source ? "-source" : "the metadata server",
    );
  } catch (e) {
    say(`${(e as Error).message}\n${usageHint()}`);
    return 2;
  }

  try {
    const [{ readUpstreamTree }, { claimsFromDocument }] = await Promise.all([
      import("../config/upstream.ts"),
      import("../config/claims.ts"),
    ]);
    const { v1 } = await readUpstreamTree(base);
    withoutTokens(v1);
    const missing = redactAttributes(v1, redact);
    const doc = { computeMetadata: { v1 } } as unknown as JsonObject;
    // The file must be one this server serves: check it as a config now rather than at the first start.
    try {
      claimsFromDocument(doc, { source: "captured tree" });
    } catch (e) {
      throw new ConfigError("CONFIG_UPSTREAM", `${base} answered a tree this server cannot serve: ${(e as Error).message}`, { cause: e });
    }
    const text = `${stringifyIndented(doc)}\n`;
    if (flags.o) {
      const { writeFileSync, chmodSync } = await import("node:fs");
      writeFileSync(flags.o, text, { mode: 0o600 });
      chmodSync(flags.o, 0o600); // an existing file keeps its mode otherwise
    } else {
      printOut(text);
    }
    const where = flags.o || "standard output";
    const kept = (["instance", "project"] as const)
      .map((scope) => {
        const names = Object.keys(attributesOf(v1, scope) ?? {}).filter((k) => !redact.includes(k));
        return names.length ? `${scope} attributes ${names.join(", ")}` : "";
      })
      .filter(Boolean);
    say(`captured ${base} into ${where}`);
    say(
      `warning: attributes can hold secrets (startup scripts, SSH keys, tokens)${kept.length ? `; kept as they are: ${kept.join("; ")}` : ""}. Review ${where === "standard output" ? "the output" : where} before sharing it; -redact KEY,… blanks attributes`,
    );
    if (missing.length) say(`warning: -redact names no attribute ${missing.join(", ")} (not in instance or project attributes)`);
    return 0;
  } catch (e) {
    if (e instanceof MetadataError) {
      say(e.message);
      return 1;
    }
    const code = (e as { code?: string }).code;
    if (code === "EACCES" || code === "ENOENT" || code === "EISDIR") {
      say(`cannot write ${flags.o}: ${(e as Error).message}`);
      return 1;
    }
    throw e;
  }
}

function usageHint(): string {
  return `run ${PROGRAM} -h for its flags`;
}
