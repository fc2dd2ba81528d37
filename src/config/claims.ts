/**
 * Claims: the config file (the real server's `?recursive=true` document under `computeMetadata.v1`) read, checked
 * and adjusted by the Go emulator's environment overrides, ready to compile into a snapshot.
 */
import type { Environment } from "../environment.ts";
import { ConfigError, unreadableReason } from "../errors.ts";
import { fromPlain, isJsonObject, isParsedJson, JsonNumber, JsonSyntaxError, type JsonObject, type JsonValue, parseJson } from "../json.ts";
import { accountEmailProblem } from "../metadata/identity.ts";
import { mergePatch } from "../metadata/edit.ts";
import { buildTree, type Tree } from "../metadata/tree.ts";
import { v1Schema } from "../metadata/schema.ts";

export interface ClaimsOptions {
  /** The Go emulator's environment overrides (project id and number, default account e-mail); default none. */
  overrides?: Pick<Environment, "projectId" | "numericProjectId" | "serviceAccount">;
  /** The Go emulator refuses to start without `instance.serviceAccounts.default`. */
  requireDefaultAccount?: boolean;
  /** Name used in error messages (the file path). */
  source?: string;
}

const ROOT = "computeMetadata.v1";

/** Parse config text; syntax errors name the line and column. */
export function parseConfigText(text: string, source = "config"): JsonValue {
  try {
    return parseJson(text);
  } catch (e) {
    if (e instanceof JsonSyntaxError) {
      throw new ConfigError("CONFIG_SYNTAX", `${source}: invalid JSON at ${e.message}`, { cause: e });
    }
    throw e;
  }
}

/** Read and parse a config file. */
export async function readConfigFile(path: string): Promise<JsonValue> {
  return parseConfigText(await readConfigText(path), path);
}

/** Read a config file's text; an unreadable file is a ConfigError that says why. */
export async function readConfigText(path: string): Promise<string> {
  try {
    return await Bun.file(path).text();
  } catch (e) {
    throw new ConfigError("CONFIG_UNREADABLE", `${path}: cannot read the config file (${unreadableReason(e)}); pass -configFile <path>`, {
      cause: e,
    });
  }
}

/** The config document's `computeMetadata.v1` object, from a whole document or from the v1 object itself. */
function v1Of(doc: JsonValue, source: string): JsonObject {
  if (!isJsonObject(doc)) throw new ConfigError("CONFIG_SHAPE", `${source}: the top level must be a JSON object`);
  const cm = doc.computeMetadata;
  if (cm === undefined) {
    throw new ConfigError(
      "CONFIG_SHAPE",
      `${source}: computeMetadata: missing; the file must have the shape {"computeMetadata":{"v1":{...}}}`,
    );
  }
  if (!isJsonObject(cm)) throw new ConfigError("CONFIG_SHAPE", `${source}: computeMetadata: expected an object`);
  const v1 = cm.v1;
  if (!isJsonObject(v1)) throw new ConfigError("CONFIG_SHAPE", `${source}: ${ROOT}: missing or not an object`);
  return v1;
}

function objectAt(parent: JsonObject, key: string): JsonObject {
  const existing = parent[key];
  if (isJsonObject(existing)) return existing;
  const created: JsonObject = Object.create(null);
  parent[key] = created;
  return created;
}

function applyOverrides(v1: JsonObject, env: NonNullable<ClaimsOptions["overrides"]>, source: string): void {
  const projectId = env.projectId;
  const number = env.numericProjectId;
  if (projectId) objectAt(v1, "project").projectId = projectId;
  if (number) {
    if (!/^\d+$/.test(number)) {
      throw new ConfigError("CONFIG_ENV", `GOOGLE_NUMERIC_PROJECT_ID must be digits only, found ${JSON.stringify(number)}`);
    }
    objectAt(v1, "project").numericProjectId = new JsonNumber(number);
  }
  const email = env.serviceAccount;
  if (!email) return;
  const problem = accountEmailProblem(email);
  if (problem) throw new ConfigError("CONFIG_ENV", `GOOGLE_SERVICE_ACCOUNT: ${problem}`);
  const accounts = objectAt(objectAt(v1, "instance"), "serviceAccounts");
  const def = accounts.default;
  if (!isJsonObject(def)) {
    throw new ConfigError("CONFIG_ENV", `${source}: GOOGLE_SERVICE_ACCOUNT is set but ${ROOT}.instance.serviceAccounts.default is missing`);
  }
  const old = def.email;
  def.email = email;
  if (typeof old === "string" && old !== email && isJsonObject(accounts[old]) && accounts[email] === undefined) {
    const moved = accounts[old] as JsonObject;
    delete accounts[old];
    moved.email = email;
    accounts[email] = moved;
  }
}

/** The default account has an e-mail, and also appears under it (with its alias `default`), as on a real VM. */
function normaliseAccounts(v1: JsonObject, requireDefault: boolean, source: string, root: string): void {
  const instance = v1.instance;
  const accounts = isJsonObject(instance) ? instance.serviceAccounts : undefined;
  const at = `${root}.instance.serviceAccounts`;
  if (accounts === undefined || accounts === null) {
    if (requireDefault) {
      throw new ConfigError(
        "CONFIG_NO_DEFAULT_ACCOUNT",
        `${source}: ${at}.default: missing; the config must define a default service account`,
      );
    }
    return;
  }
  if (!isJsonObject(accounts)) throw new ConfigError("CONFIG_SHAPE", `${source}: ${at}: expected an object`);
  // Other accounts' missing keys (an e-mail: the key) are filled in by the schema (metadata/schema.ts).
  const def = accounts.default;
  if (def === undefined) {
    if (requireDefault) {
      throw new ConfigError(
        "CONFIG_NO_DEFAULT_ACCOUNT",
        `${source}: ${at}.default: missing; the config must define a default service account`,
      );
    }
    return;
  }
  if (!isJsonObject(def)) return;
  if (typeof def.email !== "string" || def.email === "") {
    throw new ConfigError("CONFIG_SHAPE", `${source}: ${at}.default.email: missing; give the default account's e-mail address`);
  }
  if (def.aliases === undefined) def.aliases = ["default"];
  if (accounts[def.email] === undefined) {
    accounts[def.email] = Object.assign(Object.create(null), def);
  }
}

/**
 * A parsed document with fresh copies of the objects applyOverrides and normaliseAccounts write to (the document,
 * `computeMetadata`, `v1`, `project`, `instance`, its `serviceAccounts` and each account); the rest is shared.
 */
function writableCopy(doc: JsonValue): JsonValue {
  const clone = (o: JsonValue | undefined): JsonObject | undefined =>
    isJsonObject(o) ? (Object.assign(Object.create(null), o) as JsonObject) : undefined;
  const top = clone(doc);
  const cm = clone(top?.computeMetadata);
  const v1 = clone(cm?.v1);
  if (!top || !cm || !v1) return top ?? doc;
  top.computeMetadata = cm;
  cm.v1 = v1;
  const project = clone(v1.project);
  if (project) v1.project = project;
  const instance = clone(v1.instance);
  const accounts = clone(instance?.serviceAccounts);
  if (instance) v1.instance = instance;
  if (instance && accounts) {
    instance.serviceAccounts = accounts;
    for (const key of Object.keys(accounts)) accounts[key] = clone(accounts[key]) ?? accounts[key]!;
  }
  return top;
}

/** Check a config document and build the v1 tree from it. Throws ConfigError naming the JSON path at fault. */
export function claimsFromDocument(doc: JsonValue | object, options: ClaimsOptions = {}): Tree {
  const source = options.source ?? "config";
  // Work on a copy: overrides and normalisation must not leak into the caller's object. A parsed document is
  // JsonValue already: only the objects they change are copied, not the whole document.
  const copy = isParsedJson(doc) ? writableCopy(doc) : fromPlain(doc);
  const v1 = v1Of(copy, source);
  applyOverrides(v1, options.overrides ?? {}, source);
  return treeFromV1(v1, { requireDefaultAccount: options.requireDefaultAccount ?? false, source, root: ROOT });
}

/**
 * Build the tree from a `computeMetadata.v1` object, which it normalises in place (accounts, universe). `root` is
 * where the object sits, for messages (`computeMetadata.v1`, `callers[0].overlay`).
 */
export function treeFromV1(v1: JsonObject, options: { requireDefaultAccount: boolean; source: string; root: string }): Tree {
  const { source, root } = options;
  normaliseAccounts(v1, options.requireDefaultAccount, source, root);
  // Every VM answers universe/universe-domain; the public cloud's domain unless the config says otherwise.
  if (v1.universe === undefined) v1.universe = Object.assign(Object.create(null), { universeDomain: "googleapis.com" });
  try {
    return buildTree(v1, v1Schema, root);
  } catch (e) {
    if (e instanceof ConfigError) throw new ConfigError(e.code, `${source}: ${e.message}`, { cause: e });
    throw e;
  }
}

/**
 * A config document laid over another server's `computeMetadata.v1` (`-upstream`): directories merge key by key,
 * anything else replaces, and `null` removes the upstream's key (RFC 7396). The result is a whole config document.
 */
export function overlayDocument(upstream: JsonObject, doc: JsonValue | object, source = "config"): JsonObject {
  const v1 = v1Of(fromPlain(doc), source);
  const merged = mergePatch(upstream, v1) as JsonObject;
  return Object.assign(Object.create(null), {
    computeMetadata: Object.assign(Object.create(null), { v1: merged }),
  });
}

/** Read, check and build a config file in one step. */
export async function loadClaims(path: string, options: ClaimsOptions = {}): Promise<Tree> {
  return claimsFromDocument(await readConfigFile(path), { ...options, source: options.source ?? path });
}
