/**
 * Guest attributes in the tree: `instance/guest-attributes/<namespace>/<key>`, written by the guest with PUT and
 * DELETE. They are metadata the VM owns, so a config reload keeps them unless the reloaded file itself changes its
 * `guestAttributes`. Writes are bounded ({@link GuestAttributeLimits}): any process on the VM may make them.
 */
import type { Tree } from "./tree.ts";
import { nodeAt, putTree, treeToJson } from "./edit.ts";

/** Namespace and key names: letters, digits, `_` and `-`. */
export const GUEST_NAME = /^[A-Za-z0-9_-]+$/;

export const GUEST = ["instance", "guest-attributes"] as const;
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

/** Bounds on what guests may write; values already in the config count, but are never removed. */
export interface GuestAttributeLimits {
  /** Largest value, in bytes of UTF-8 (default 256 KiB). */
  maxValueBytes: number;
  /** Most keys in one namespace (default 1,000). */
  maxKeys: number;
  /** Most namespaces (default 100). */
  maxNamespaces: number;
  /** Most bytes of all values together (default 16 MiB). */
  maxTotalBytes: number;
}

export const DEFAULT_GUEST_LIMITS: Readonly<GuestAttributeLimits> = {
  maxValueBytes: 256 * 1024,
  maxKeys: 1000,
  maxNamespaces: 100,
  maxTotalBytes: 16 * 1024 * 1024,
};

/** Bytes of each value and each namespace, kept per tree node: nodes are immutable and shared between writes. */
const sizes = new WeakMap<Tree, number>();

function bytesOf(t: Tree): number {
  let n = sizes.get(t);
  if (n !== undefined) return n;
  if (t.k === "scalar") n = Buffer.byteLength(t.text);
  else if (t.k === "dir") n = t.entries.reduce((sum, e) => sum + bytesOf(e.node), 0);
  else n = 0;
  sizes.set(t, n);
  return n;
}

/** A refused write: the status to answer and why, naming the limit and its flag. */
export interface Refusal {
  status: 400 | 413;
  message: string;
}

/** Why writing `valueBytes` at `<ns>/<key>` would pass a limit, or undefined when it fits. */
export function checkGuestWrite(
  tree: Tree,
  ns: string,
  key: string,
  valueBytes: number,
  limits: GuestAttributeLimits,
): Refusal | undefined {
  if (valueBytes > limits.maxValueBytes) {
    return {
      status: 413,
      message: `the value is ${valueBytes} bytes, over the limit of ${limits.maxValueBytes} bytes per guest attribute (-maxGuestValueBytes)`,
    };
  }
  const all = nodeAt(tree, GUEST);
  const namespaces = all?.k === "dir" ? all.entries : [];
  const dir = namespaces.find((e) => e.name === ns)?.node;
  const old = dir?.k === "dir" ? dir.entries.find((e) => e.name === key)?.node : undefined;
  if (!dir && namespaces.length >= limits.maxNamespaces) {
    return {
      status: 400,
      message: `there are already ${namespaces.length} guest attribute namespaces, the limit (-maxGuestNamespaces); delete one first`,
    };
  }
  if (dir?.k === "dir" && !old && dir.entries.length >= limits.maxKeys) {
    return {
      status: 400,
      message: `namespace ${ns} already has ${dir.entries.length} keys, the limit (-maxGuestKeys); delete one first`,
    };
  }
  const total = namespaces.reduce((sum, e) => sum + bytesOf(e.node), 0) - (old ? bytesOf(old) : 0) + valueBytes;
  if (total > limits.maxTotalBytes) {
    return {
      status: 413,
      message: `guest attributes would hold ${total} bytes, over the limit of ${limits.maxTotalBytes} bytes in all (-maxGuestBytes); delete some first`,
    };
  }
  return undefined;
}
