/**
 * Changes to the metadata tree: read, set, merge and delete at a path, checked against the schema and against the
 * shape the tree already has. Trees are never mutated: an edit copies the nodes along the path and shares the rest,
 * and the caller compiles the result into a new snapshot.
 *
 * Paths are metadata paths relative to /computeMetadata/v1/ (`instance/attributes/foo`, `instance/disks/0/`);
 * values use the config file's naming (camelCase Google keys, verbatim user keys).
 *
 * @example
 * const next = setAt(snapshot.tree, "instance/attributes/foo", "bar");
 */
import { ConfigError, EditError } from "../errors.ts";
import { isJsonObject, JsonNumber, type JsonObject, type JsonValue, parseJson, stringify } from "../json.ts";
import { buildTree, type Tree, type TreeEntry } from "./tree.ts";
import { kebab, v1Schema, type Schema } from "./schema.ts";

export interface EditOptions {
  /**
   * Platform edits (lifecycle events, guest attributes) may add or remove Google-defined keys; user edits may not.
   * Schema types are checked either way.
   */
  platform?: boolean;
  /**
   * Google's reference emulator's shape rule: a free-form directory's or list's new children must have the shape
   * of its first existing child.
   */
  strictTemplates?: boolean;
}

/** `instance/attributes/foo/` → ["instance", "attributes", "foo"]; empty segments are skipped, as the reference does. */
export function splitPath(path: string): string[] {
  let p = path;
  if (p.startsWith("/computeMetadata/v1")) p = p.slice("/computeMetadata/v1".length);
  return p.split("/").filter((s) => s !== "");
}

const display = (segs: readonly string[]): string => (segs.length ? segs.join("/") : "(root)");

/** The schema of a child named `name` (path spelling) and its JSON key; undefined when nothing can live there. */
export function childSchema(schema: Schema, name: string): { schema: Schema; jsonKey: string } | undefined {
  switch (schema.t) {
    case "dir": {
      for (const [key, field] of Object.entries(schema.keys)) {
        if ((field.path ?? kebab(key)) === name) return { schema: field.schema, jsonKey: key };
      }
      // Keys Google does not define are user keys, served verbatim.
      return { schema: { t: "any" }, jsonKey: name };
    }
    case "free":
      return { schema: schema.value, jsonKey: name };
    case "list":
      return /^\d+$/.test(name) ? { schema: schema.item, jsonKey: name } : undefined;
    case "any":
      return { schema: { t: "any" }, jsonKey: name };
    default:
      return undefined;
  }
}

/** The tree node at a path, or undefined. */
export function nodeAt(tree: Tree, segs: readonly string[]): Tree | undefined {
  let t: Tree | undefined = tree;
  for (const s of segs) {
    if (!t) return undefined;
    if (t.k === "dir") t = t.entries.find((e) => e.name === s)?.node;
    else if (t.k === "list") t = /^\d+$/.test(s) ? t.items[Number(s)] : undefined;
    else return undefined;
  }
  return t;
}

/**
 * Why there is no node at `segs`, as an edit there would say it (PUT, PATCH and DELETE name the first node that is
 * missing): the control API's GET answers the same message.
 */
export function notFoundAt(tree: Tree, segs: readonly string[]): EditError {
  let t: Tree = tree;
  for (let i = 0; i < segs.length; i++) {
    const name = segs[i]!;
    const next = nodeAt(t, [name]);
    if (next) {
      t = next;
      continue;
    }
    const here = segs.slice(0, i + 1);
    const hasChildren = t.k === "dir" || (t.k === "list" && /^\d+$/.test(name));
    return new EditError(
      "EDIT_NOT_FOUND",
      hasChildren ? `${display(here)}: no such node` : `${display(segs.slice(0, i))}: has no children; ${display(here)} cannot exist`,
    );
  }
  return new EditError("EDIT_NOT_FOUND", `${display(segs)}: no such node`);
}

/** A tree node as config JSON (camelCase Google keys, verbatim user keys, numbers kept exactly). */
export function treeToValue(t: Tree): JsonValue {
  switch (t.k) {
    case "dir": {
      const o: JsonObject = Object.create(null);
      for (const e of t.entries) o[e.jsonKey] = treeToValue(e.node);
      return o;
    }
    case "list":
      return t.items.map(treeToValue);
    case "values":
      return [...t.items];
    case "scalar":
      if (t.json.startsWith('"')) return t.text;
      if (t.json === "true" || t.json === "false") return t.json === "true";
      return new JsonNumber(t.json);
    case "doc":
      return parseJson(t.json);
  }
}

/** Compact config JSON of a node. */
export function treeToJson(t: Tree): string {
  return stringify(treeToValue(t));
}

/** What an edit function sees at the target position. */
export interface Target {
  old: Tree | undefined;
  /** The directory or list holding the target; undefined at the root. */
  parent: Tree | undefined;
  schema: Schema;
  /** The path for messages (`instance/scheduling/preemptible`). */
  at: string;
}

/**
 * Rebuild the tree with the node at `segs` replaced by `fn(target)`; `undefined` from `fn` deletes it. The parent
 * must exist; list positions may be replaced, or appended at `len`.
 */
export function updateAt(tree: Tree, segs: readonly string[], fn: (t: Target) => Tree | undefined, createParents = false): Tree {
  if (segs.length === 0) {
    const next = fn({ old: tree, parent: undefined, schema: v1Schema, at: "(root)" });
    if (!next) throw new EditError("EDIT_FIXED_KEYS", "(root): the metadata root cannot be deleted");
    return next;
  }
  const go = (t: Tree, schema: Schema, i: number): Tree => {
    const name = segs[i]!;
    const here = segs.slice(0, i + 1);
    const cs = childSchema(schema, name);
    const last = i === segs.length - 1;
    if (t.k === "dir" && cs) {
      const idx = t.entries.findIndex((e) => e.name === name);
      const old = idx >= 0 ? t.entries[idx] : undefined;
      let replacement: TreeEntry | undefined;
      if (last) {
        const node = fn({ old: old?.node, parent: t, schema: cs.schema, at: display(here) });
        replacement = node ? { name, jsonKey: old?.jsonKey ?? cs.jsonKey, node } : undefined;
      } else {
        const parent = old?.node ?? (createParents && creatable(cs.schema, t) ? EMPTY_DIR : undefined);
        if (!parent) throw new EditError("EDIT_NOT_FOUND", `${display(here)}: no such node`);
        replacement = { name, jsonKey: old?.jsonKey ?? cs.jsonKey, node: go(parent, cs.schema, i + 1) };
      }
      const entries = t.entries.slice();
      if (idx >= 0 && replacement) entries[idx] = replacement;
      else if (idx >= 0) entries.splice(idx, 1);
      else if (replacement) entries.push(replacement);
      return { ...t, entries };
    }
    if (t.k === "list" && cs) {
      const n = Number(name);
      const items = t.items.slice();
      if (last) {
        if (n > items.length) {
          throw new EditError(
            "EDIT_BAD_INDEX",
            `${display(here)}: position ${n} is past the end of the list (length ${items.length}); append at ${items.length}`,
          );
        }
        const node = fn({ old: items[n], parent: t, schema: cs.schema, at: display(here) });
        if (node) items[n] = node;
        else if (n < items.length) items.splice(n, 1);
      } else {
        const old = items[n];
        if (!old) throw new EditError("EDIT_NOT_FOUND", `${display(here)}: no such node`);
        items[n] = go(old, cs.schema, i + 1);
      }
      return { ...t, items };
    }
    throw new EditError("EDIT_NOT_FOUND", `${display(segs.slice(0, i))}: has no children; ${display(here)} cannot exist`);
  };
  return go(tree, v1Schema, 0);
}

const EMPTY_DIR: Tree = { k: "dir", fixed: false, entries: [] };

/**
 * Whether a missing directory on the way to an edit may be made (empty) for it: a free-form directory
 * (`guest-attributes/`, a guest namespace, `partner-attributes/`, `attributes/`), or a key of one whose schema
 * leaves the shape open (a partner namespace). A Google-defined directory with fixed keys never is.
 */
function creatable(schema: Schema, parent: Tree): boolean {
  if (schema.t === "free") return true;
  return schema.t === "any" && parent.k === "dir" && !parent.fixed;
}

const kindName = (t: Tree): string =>
  t.k === "dir"
    ? "a directory (JSON object)"
    : t.k === "list"
      ? "a list (JSON array)"
      : t.k === "values"
        ? "a list of strings"
        : t.k === "doc"
          ? "a JSON document"
          : t.json.startsWith('"')
            ? "a string"
            : "a number or boolean";

/**
 * The new node must have the old one's shape: same kind, and every fixed-key directory the same set of keys.
 * Free-form directories and lists may grow and shrink; their children are compared with the child of the same
 * name or position (or, with `strict`, with the first existing child, as Google's reference emulator does).
 */
export function checkShape(old: Tree, neu: Tree, at: string, strict = false): void {
  const scalarKind = (t: Tree) => (t.k === "scalar" ? (t.json.startsWith('"') ? "s" : "n") : t.k);
  if (old.k !== neu.k || (strict && scalarKind(old) !== scalarKind(neu))) {
    throw new EditError("CONFIG_SHAPE", `${at}: expected ${kindName(old)}, found ${kindName(neu)}`);
  }
  if (old.k === "dir" && neu.k === "dir") {
    if (old.fixed) {
      const before = new Set(old.entries.map((e) => e.name));
      const after = new Set(neu.entries.map((e) => e.name));
      const added = [...after].filter((n) => !before.has(n));
      const removed = [...before].filter((n) => !after.has(n));
      if (added.length || removed.length) {
        const parts = [added.length ? `adds ${added.join(", ")}` : "", removed.length ? `removes ${removed.join(", ")}` : ""].filter(
          Boolean,
        );
        throw new EditError("EDIT_FIXED_KEYS", `${at}: the keys of this directory are fixed; the change ${parts.join(" and ")}`);
      }
    }
    for (const e of neu.entries) {
      const template = old.fixed || !strict ? old.entries.find((o) => o.name === e.name)?.node : old.entries[0]?.node;
      if (template) checkShape(template, e.node, `${at}/${e.name}`, strict);
    }
  } else if (old.k === "list" && neu.k === "list") {
    neu.items.forEach((item, i) => {
      const template = strict ? old.items[0] : (old.items[i] ?? old.items[0]);
      if (template) checkShape(template, item, `${at}/${i}`, strict);
    });
  }
}

function guardFixed(t: Target, adding: boolean, options: EditOptions): void {
  if (options.platform) return;
  if (t.parent?.k === "dir" && t.parent.fixed) {
    throw new EditError(
      "EDIT_FIXED_KEYS",
      `${t.at}: cannot ${adding ? "add" : "remove"} a key of a fixed-key directory; only attributes and other free-form directories gain or lose keys`,
    );
  }
}

/** buildTree for an edit: a wrong type is an EditError like every other refused edit. */
export function buildChecked(value: JsonValue, schema: Schema, at: string): Tree {
  try {
    return buildTree(value, schema, at, at.slice(at.lastIndexOf("/") + 1));
  } catch (e) {
    if (e instanceof ConfigError && !(e instanceof EditError)) throw new EditError("CONFIG_SHAPE", e.message, { cause: e });
    throw e;
  }
}

/**
 * What a new child of a free-form directory or list must look like: a sibling, when the child is a directory with
 * Google-defined keys (a disk, a service account, a licence), so it has the keys its siblings have.
 */
function siblingOf(t: Target, neu: Tree): { node: Tree; name: string } | undefined {
  if (neu.k !== "dir" || !neu.fixed) return undefined;
  const p = t.parent;
  if (p?.k === "list" && p.items[0]) return { node: p.items[0], name: "0" };
  if (p?.k === "dir" && !p.fixed && p.entries[0]) return p.entries[0];
  return undefined;
}

/** Place a checked value: build it against the schema, then compare it with what was there (or with a sibling). */
function place(t: Target, value: JsonValue, options: EditOptions): Tree {
  if (t.old === undefined) guardFixed(t, true, options);
  const neu = buildChecked(value, t.schema, t.at);
  if (options.platform) return neu;
  if (t.old) {
    checkShape(t.old, neu, t.at, options.strictTemplates);
    return neu;
  }
  const sibling = siblingOf(t, neu);
  if (!sibling) return neu;
  try {
    checkShape(sibling.node, neu, t.at, options.strictTemplates);
  } catch (e) {
    if (!(e instanceof EditError) || e.code !== "EDIT_FIXED_KEYS") throw e;
    const at = `${t.at.slice(0, t.at.lastIndexOf("/") + 1)}${sibling.name}`;
    throw new EditError("EDIT_FIXED_KEYS", `${e.message} (a new entry must have the keys of ${at})`, { cause: e });
  }
  return neu;
}

/**
 * Set (replace or create) the value at a path. Missing free-form directories on the way are made (a new guest
 * namespace, a partner namespace), so a value can be set key by key.
 */
export function setAt(tree: Tree, path: string, value: JsonValue, options: EditOptions = {}): Tree {
  return updateAt(tree, splitPath(path), (t) => place(t, value, options), !options.strictTemplates);
}

/** RFC 7396 JSON merge patch: objects merge key by key, `null` deletes a key, anything else replaces. */
export function mergePatch(target: JsonValue | undefined, patch: JsonValue): JsonValue | undefined {
  if (!isJsonObject(patch)) return patch;
  const out: JsonObject = Object.create(null);
  if (isJsonObject(target)) for (const k of Object.keys(target)) out[k] = target[k]!;
  for (const k of Object.keys(patch)) {
    const v = patch[k]!;
    if (v === null) delete out[k];
    else out[k] = mergePatch(out[k], v)!;
  }
  return out;
}

/** Merge a patch into the value at a path (created if absent, where keys may be added). */
export function mergeAt(tree: Tree, path: string, patch: JsonValue, options: EditOptions = {}): Tree {
  return updateAt(
    tree,
    splitPath(path),
    (t) => {
      const merged = mergePatch(t.old ? treeToValue(t.old) : undefined, patch);
      if (merged === undefined || merged === null) {
        if (!t.old) throw new EditError("EDIT_NOT_FOUND", `${t.at}: no such node`);
        guardFixed(t, false, options);
        return undefined;
      }
      return place(t, merged, options);
    },
    !options.strictTemplates,
  );
}

/** Delete the node at a path: a key of a free-form directory, or a list position (later items move up). */
export function deleteAt(tree: Tree, path: string, options: EditOptions = {}): Tree {
  return updateAt(tree, splitPath(path), (t) => {
    if (!t.old) throw new EditError("EDIT_NOT_FOUND", `${t.at}: no such node`);
    guardFixed(t, false, options);
    return undefined;
  });
}

/** Replace the node at a path with an already-built tree (platform edits; no checks). */
export function putTree(tree: Tree, path: string, node: Tree | undefined): Tree {
  return updateAt(tree, splitPath(path), () => node);
}
