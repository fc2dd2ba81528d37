/**
 * Route templates: the path of a snapshot node with every user-chosen segment replaced by a placeholder, so that
 * metrics and logs group `instance/attributes/foo` and `instance/attributes/bar` under one
 * `/computeMetadata/v1/instance/attributes/{key}`. A node's template follows from the tree's shape (free-form
 * directories and lists), is computed once per node, and never depends on what a client puts in a request.
 *
 * @example
 * entryTemplate(snapshot.lookup("/computeMetadata/v1/instance/service-accounts/default/token")!, (p) => snapshot.lookup(p))
 * // "/computeMetadata/v1/instance/service-accounts/{account}/token"
 */
import { MetaNode, type Redirect, type Entry } from "./snapshot.ts";

/** Placeholder for the children of a free-form directory, named after the directory. */
const PLACEHOLDER: Record<string, string> = {
  "service-accounts": "{account}",
  "guest-attributes": "{namespace}",
  "partner-attributes": "{namespace}",
};

const cache = new WeakMap<MetaNode, string>();

type Lookup = (path: string) => Entry | undefined;

/** The route template of a node of the snapshot `lookup` reads; directories keep their trailing slash. */
export function routeTemplate(node: MetaNode, lookup: Lookup): string {
  let t = cache.get(node);
  if (t === undefined) {
    t = compute(node, lookup);
    cache.set(node, t);
  }
  return t;
}

/** The template of any entry: a redirect is its target's template without the slash. */
export function entryTemplate(entry: Entry, lookup: Lookup): string | undefined {
  if (entry instanceof MetaNode) return routeTemplate(entry, lookup);
  const target = lookup((entry as Redirect).target);
  return target instanceof MetaNode ? routeTemplate(target, lookup).slice(0, -1) : undefined;
}

function compute(node: MetaNode, lookup: Lookup): string {
  const dir = node.path.endsWith("/");
  const end = dir ? node.path.length - 1 : node.path.length;
  const cut = node.path.lastIndexOf("/", end - 1);
  // The parent is found by path, not by a pointer: snapshots share nodes, and a node's parent is rebuilt when a
  // sibling changes (its path and shape stay the same, so the template does too).
  const parent = cut < 0 ? undefined : lookup(node.path.slice(0, cut + 1));
  if (!(parent instanceof MetaNode) || parent === node) return node.path;
  const name = node.path.slice(cut + 1, end);
  const src = parent.source;
  let segment = name;
  if (src?.k === "list") segment = "{index}";
  else if (src?.k === "dir" && !src.fixed) {
    const p = parent.path;
    const parentName = p.slice(p.lastIndexOf("/", p.length - 2) + 1, -1);
    // Own keys only: a namespace named `constructor` is a user's name, not Object's.
    segment = Object.hasOwn(PLACEHOLDER, parentName) ? PLACEHOLDER[parentName]! : "{key}";
  }
  return routeTemplate(parent, lookup) + segment + (dir ? "/" : "");
}
