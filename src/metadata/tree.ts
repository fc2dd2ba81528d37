/**
 * The metadata tree as data: config JSON checked against the schema and normalised into nodes that know their
 * path names, JSON keys and renderings. Snapshots compile from it; the control API edits it.
 */
import { ConfigError } from "../errors.ts";
import { isJsonObject, JsonNumber, type JsonValue, stringify } from "../json.ts";
import { accountEmailProblem } from "./identity.ts";
import { kebab, snake, type Schema } from "./schema.ts";

export type Tree =
  | { k: "dir"; fixed: boolean; entries: TreeEntry[] }
  | { k: "list"; items: Tree[] }
  | { k: "values"; items: string[] }
  | { k: "scalar"; text: string; json: string }
  | { k: "doc"; json: string };

export interface TreeEntry {
  /** Path segment and listing name. */
  name: string;
  /** Key in JSON renderings. */
  jsonKey: string;
  node: Tree;
}

/** `a.b[0]["odd key"]` — the location of a value in the config file, for error messages. */
export function jsonPath(parent: string, key: string | number): string {
  if (typeof key === "number") return `${parent}[${key}]`;
  return /^[A-Za-z_$][\w$]*$/.test(key) ? `${parent}.${key}` : `${parent}[${JSON.stringify(key)}]`;
}

function describe(v: JsonValue): string {
  if (v === null) return "null";
  if (Array.isArray(v)) return "an array";
  if (v instanceof JsonNumber) return `the number ${v.raw}`;
  if (typeof v === "object") return "an object";
  if (typeof v === "boolean") return `the boolean ${v}`;
  return `the string ${JSON.stringify(v.length > 40 ? `${v.slice(0, 40)}…` : v)}`;
}

const wrong = (at: string, expected: string, got: JsonValue): ConfigError =>
  new ConfigError("CONFIG_SHAPE", `${at}: expected ${expected}, found ${describe(got)}`);

function scalarText(v: JsonValue, at: string, expected: string): string {
  if (typeof v === "string") return v;
  if (v instanceof JsonNumber) return v.raw;
  throw wrong(at, expected, v);
}

function checkName(name: string, at: string): void {
  if (name === "" || name.includes("/")) {
    throw new ConfigError("CONFIG_SHAPE", `${at}: key ${JSON.stringify(name)} cannot be a path segment (empty or contains '/')`);
  }
}

function renderDoc(v: JsonValue, indent: number | undefined, snakeKeys: boolean | undefined): string {
  const convert = (x: JsonValue): unknown => {
    if (x instanceof JsonNumber) return x;
    if (Array.isArray(x)) return x.map(convert);
    if (isJsonObject(x)) {
      // Null prototype: a `__proto__` key in the document stays data, as every other key.
      const out: Record<string, unknown> = Object.create(null);
      for (const key of Object.keys(x).sort()) out[snakeKeys ? snake(key) : key] = convert(x[key]!);
      return out;
    }
    return x;
  };
  const plain = convert(v);
  if (!indent) return stringify(plain as JsonValue);
  // JSON.stringify cannot print JsonNumber verbatim; swap in placeholders and put the digits back.
  const raws: string[] = [];
  const text = JSON.stringify(plain, (_k, x) => (x instanceof JsonNumber ? `\u0000${raws.push(x.raw) - 1}\u0000` : x), indent);
  return text.replace(/"\\u0000(\d+)\\u0000"/g, (_m, n: string) => raws[Number(n)]!);
}

/** `v` with the keys `defaults` gives that it lacks (a copy; null prototype, so any key stays data). */
function withDefaults(v: JsonValue, defaults: Record<string, JsonValue>): JsonValue {
  if (!isJsonObject(v)) return v;
  const out = Object.assign(Object.create(null), v) as Record<string, JsonValue>;
  for (const [key, value] of Object.entries(defaults)) if (out[key] === undefined || out[key] === null) out[key] = value;
  return out as JsonValue;
}

/**
 * Build a tree from config JSON against a schema. `at` names the value's place in the file; `name` is the node's
 * path name where its schema fills in defaults (a service account).
 */
export function buildTree(value: JsonValue, schema: Schema, at: string, name?: string): Tree {
  const v = schema.t === "dir" && schema.defaults && name !== undefined ? withDefaults(value, schema.defaults(name)) : value;
  switch (schema.t) {
    case "string": {
      const text = scalarText(v, at, "a string");
      return { k: "scalar", text, json: JSON.stringify(text) };
    }
    case "email": {
      const text = scalarText(v, at, "an e-mail address");
      const problem = accountEmailProblem(text);
      if (problem) throw new ConfigError("CONFIG_SHAPE", `${at}: ${problem}`);
      return { k: "scalar", text, json: JSON.stringify(text) };
    }
    case "int": {
      const raw = v instanceof JsonNumber ? v.raw : typeof v === "string" ? v.trim() : undefined;
      if (raw === undefined || !/^-?\d+$/.test(raw)) throw wrong(at, "an integer", v);
      const digits = raw.replace(/^(-?)0+(?=\d)/, "$1");
      return { k: "scalar", text: digits, json: digits };
    }
    case "values": {
      if (!Array.isArray(v)) throw wrong(at, "an array of strings", v);
      return { k: "values", items: v.map((x, i) => scalarText(x, jsonPath(at, i), "a string")) };
    }
    case "doc":
      return { k: "doc", json: renderDoc(v, schema.indent, schema.snakeKeys) };
    case "list": {
      if (!Array.isArray(v)) throw wrong(at, "an array", v);
      return { k: "list", items: v.map((x, i) => buildTree(x, schema.item, jsonPath(at, i))) };
    }
    case "free": {
      if (!isJsonObject(v)) throw wrong(at, "an object", v);
      const entries: TreeEntry[] = [];
      for (const key of Object.keys(v)) {
        const child = v[key]!;
        if (child === null) continue;
        const childAt = jsonPath(at, key);
        checkName(key, childAt);
        entries.push({ name: key, jsonKey: key, node: buildTree(child, schema.value, childAt, key) });
      }
      return { k: "dir", fixed: false, entries };
    }
    case "dir": {
      if (!isJsonObject(v)) throw wrong(at, "an object", v);
      const entries: TreeEntry[] = [];
      const known = Object.keys(schema.keys);
      const seen = new Map<string, string>();
      for (const key of Object.keys(v)) {
        const child = v[key]!;
        if (child === null) continue;
        const childAt = jsonPath(at, key);
        // Go's encoding/json matches struct keys case-insensitively, so Go-emulator configs may say "TargetState".
        // Own keys only: `constructor` or `__proto__` in the config are user keys, not the schema's inherited ones.
        const jsonKey = Object.hasOwn(schema.keys, key) ? key : known.find((k) => k.toLowerCase() === key.toLowerCase());
        if (jsonKey === undefined) {
          checkName(key, childAt);
          entries.push({ name: key, jsonKey: key, node: buildTree(child, { t: "any" }, childAt) });
          continue;
        }
        const earlier = seen.get(jsonKey);
        if (earlier !== undefined) {
          throw new ConfigError("CONFIG_SHAPE", `${childAt}: ${JSON.stringify(earlier)} and ${JSON.stringify(key)} are the same key`);
        }
        seen.set(jsonKey, key);
        const field = schema.keys[jsonKey]!;
        entries.push({ name: field.path ?? kebab(jsonKey), jsonKey, node: buildTree(child, field.schema, childAt) });
      }
      return { k: "dir", fixed: true, entries };
    }
    case "any": {
      if (typeof v === "string") return { k: "scalar", text: v, json: JSON.stringify(v) };
      if (v instanceof JsonNumber) return { k: "scalar", text: v.raw, json: v.raw };
      if (typeof v === "boolean") return { k: "scalar", text: String(v), json: String(v) };
      if (Array.isArray(v)) {
        const scalars = v.every((x) => typeof x === "string" || x instanceof JsonNumber);
        if (scalars) return buildTree(v, { t: "values" }, at);
        return buildTree(v, { t: "list", item: { t: "any" } }, at);
      }
      if (isJsonObject(v)) return buildTree(v, { t: "free", value: { t: "any" } }, at);
      throw wrong(at, "a value", v);
    }
  }
}
