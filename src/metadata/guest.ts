/**
 * Guest attributes in the tree: `instance/guest-attributes/<namespace>/<key>`, written by the guest with PUT and
 * DELETE. They are metadata the VM owns, so a config reload keeps them unless the reloaded file itself changes its
 * `guestAttributes`.
 */
import type { Tree } from "./tree.ts";
import { nodeAt, putTree, treeToJson } from "./edit.ts";

/** Namespace and key names: letters, digits, `_` and `-`. */
export const GUEST_NAME = /^[A-Za-z0-9_-]+$/;

const GUEST = ["instance", "guest-attributes"];
const EMPTY: Tree = { k: "dir", fixed: false, entries: [] };

/** The tree with `<ns>/<key>` set to `value`; the same tree when nothing changes. */
export function putGuestAttribute(tree: Tree, ns: string, key: string, value: string): Tree {
  const old = nodeAt(tree, [...GUEST, ns, key]);
  if (old?.k === "scalar" && old.text === value) return tree;
  let t = tree;
  if (!nodeAt(t, GUEST)) t = putTree(t, GUEST.join("/"), EMPTY);
  if (!nodeAt(t, [...GUEST, ns])) t = putTree(t, [...GUEST, ns].join("/"), EMPTY);
  return putTree(t, [...GUEST, ns, key].join("/"), { k: "scalar", text: value, json: JSON.stringify(value) });
}

/** The tree without `<ns>/<key>` (and without the namespace once it is empty); the same tree if it is absent. */
export function deleteGuestAttribute(tree: Tree, ns: string, key: string): Tree {
  if (!nodeAt(tree, [...GUEST, ns, key])) return tree;
  const t = putTree(tree, [...GUEST, ns, key].join("/"), undefined);
  const left = nodeAt(t, [...GUEST, ns]);
  return left?.k === "dir" && left.entries.length === 0 ? putTree(t, [...GUEST, ns].join("/"), undefined) : t;
}

/**
 * A reloaded config replaces everything but the guest's own writes: when the file's `guestAttributes` are what the
 * previous file said, the current ones (with the guest's writes) carry over into the new tree.
 */
export function carryGuestAttributes(previousFile: Tree | undefined, nextFile: Tree, current: Tree): Tree {
  if (!previousFile) return nextFile;
  const json = (t: Tree) => {
    const n = nodeAt(t, GUEST);
    return n ? treeToJson(n) : undefined;
  };
  const before = json(previousFile);
  if (before !== json(nextFile)) return nextFile;
  const live = nodeAt(current, GUEST);
  if (json(current) === before || !nodeAt(nextFile, ["instance"])) return nextFile;
  return putTree(nextFile, GUEST.join("/"), live);
}
