/**
 * Google's reference emulator's update API (`/emulator/v1/update/…`), kept exactly: bodies in the URL's naming
 * (kebab-case keys), a string for leaves and JSON for directories and lists, shape-checked against a template node
 * (the node itself in a fixed-key directory, else the first child), and every mismatch answered as a format error.
 *
 * @example
 * const next = referenceSet(snapshot.tree, "instance/attributes/foo", "bar");
 */
import { EditError } from "../errors.ts";
import { isJsonObject, JsonNumber, type JsonObject, type JsonValue, parseJson } from "../json.ts";
import { buildChecked, checkShape, childSchema, splitPath, type Target, treeToValue, updateAt } from "./edit.ts";
import { serviceAccountSchema, v1Schema, type Schema } from "./schema.ts";
import type { Tree } from "./tree.ts";

// a string for leaves and JSON for directories and lists, shape-checked against a template node.

/** Config naming from path naming: a fixed-key directory's `device-name` becomes `deviceName`. */
export function fromPathNaming(v: JsonValue, schema: Schema): JsonValue {
  if (schema.t === "dir" && isJsonObject(v)) {
    const out: JsonObject = Object.create(null);
    for (const key of Object.keys(v)) {
      // A service account's `token` is a node of the reference's data, not of ours.
      if (schema === serviceAccountSchema && (key === "token" || key === "identity")) continue;
      const cs = childSchema(schema, key)!;
      out[cs.jsonKey] = fromPathNaming(v[key]!, cs.schema);
    }
    return out;
  }
  if (schema.t === "free" && isJsonObject(v)) {
    const out: JsonObject = Object.create(null);
    for (const key of Object.keys(v)) out[key] = fromPathNaming(v[key]!, schema.value);
    return out;
  }
  if (schema.t === "list" && Array.isArray(v)) return v.map((x) => fromPathNaming(x, schema.item));
  return v;
}

const isDirLike = (t: Tree | undefined): boolean => !!t && t.k !== "scalar";

/** The reference's template for a position: the node itself in a fixed-key directory, else the first child. */
function templateOf(t: Target): Tree | undefined {
  const p = t.parent;
  if (!p) return t.old;
  if (p.k === "dir") return p.fixed ? t.old : (p.entries[0]?.node ?? t.old);
  if (p.k === "list") return p.items[0] ?? t.old;
  return t.old;
}

const EMPTY_STRING: Tree = { k: "scalar", text: "", json: '""' };

/** The reference's value from a decoded body: JSON when the template is a directory or list, else the string. */
function referenceValue(body: string, template: Tree, schema: Schema, at: string): JsonValue {
  if (isDirLike(template)) {
    try {
      return fromPathNaming(parseJson(body), schema);
    } catch (e) {
      if (e instanceof EditError) throw e;
      throw new EditError("CONFIG_SHAPE", `${at}: the new value must be JSON (${(e as Error).message})`);
    }
  }
  // A string that reads as an integer becomes one where the template is a number.
  if (template.k === "scalar" && !template.json.startsWith('"') && /^-?\d+$/.test(body.trim())) return new JsonNumber(body.trim());
  return body;
}

/** `POST /emulator/v1/update/<path>`: set the node from a decoded body, as the reference does. */
export function referenceSet(tree: Tree, path: string, body: string): Tree {
  const segs = splitPath(path);
  if (segs.length === 0) return referenceReplaceAll(tree, body);
  return updateAt(tree, segs, (t) => {
    if (t.old === undefined && t.parent?.k === "dir" && t.parent.fixed) {
      throw new EditError("EDIT_FIXED_KEYS", `${t.at}: cannot add a key of a fixed-key directory`);
    }
    const template = templateOf(t) ?? EMPTY_STRING;
    const neu = buildChecked(referenceValue(body, template, t.schema, t.at), t.schema, t.at);
    referenceShape(template, neu, t.at);
    return neu;
  });
}

/** `DELETE /emulator/v1/update/<path>`. */
export function referenceDelete(tree: Tree, path: string): Tree {
  return updateAt(tree, splitPath(path), (t) => {
    if (t.parent?.k === "dir" && t.parent.fixed) {
      throw new EditError("EDIT_FIXED_KEYS", `${t.at}: cannot remove a key of a fixed-key directory`);
    }
    if (!t.old) throw new EditError("CONFIG_SHAPE", `${t.at}: no such key or position`);
    return undefined;
  });
}

/** `POST /emulator/v1/update/`: the whole v1 tree in path naming, checked against the current shape. */
export function referenceReplaceAll(tree: Tree, body: string): Tree {
  let v: JsonValue;
  try {
    v = fromPathNaming(parseJson(body), v1Schema);
  } catch (e) {
    throw new EditError("CONFIG_SHAPE", `(root): the new tree must be JSON (${(e as Error).message})`);
  }
  // Nodes this server adds by itself (universe/, oslogin/) carry over when the new tree lacks them.
  if (isJsonObject(v) && tree.k === "dir") {
    for (const e of tree.entries)
      if ((e.name === "universe" || e.name === "oslogin") && v[e.jsonKey] === undefined) v[e.jsonKey] = treeToValue(e.node);
  }
  const neu = buildChecked(v, v1Schema, "(root)");
  referenceShape(tree, neu, "(root)");
  return neu;
}

/** The reference answers every shape mismatch of the new value, key sets included, as a format error. */
function referenceShape(template: Tree, neu: Tree, at: string): void {
  try {
    checkShape(template, neu, at, true);
  } catch (e) {
    if (e instanceof EditError && e.code === "EDIT_FIXED_KEYS") throw new EditError("CONFIG_SHAPE", e.message, { cause: e });
    throw e;
  }
}
