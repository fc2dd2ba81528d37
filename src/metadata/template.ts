/**
 * Route templates: the path of a snapshot node with every user-chosen segment replaced by a placeholder, so that
 * metrics and logs group `instance/attributes/foo` and `instance/attributes/bar` under one
 * `/computeMetadata/v1/instance/attributes/{key}`. A node's template follows from the tree's shape (free-form
 * directories and lists), is computed once per node, and never depends on what a client puts in a request.
 *
 * @example
 * routeTemplate(snapshot.lookup("/computeMetadata/v1/instance/service-accounts/default/token") as MetaNode)
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

/** The route template of a node; directories keep their trailing slash. */
export function routeTemplate(node: MetaNode): string {
  let t = cache.get(node);
  if (t === undefined) {
    t = compute(node);
    cache.set(node, t);
  }
  return t;
}

/** The template of any entry: a redirect is its target's template without the slash. */
export function entryTemplate(entry: Entry, lookup: (path: string) => Entry | undefined): string | undefined {
  if (entry instanceof MetaNode) return routeTemplate(entry);
  const target = lookup((entry as Redirect).target);
  return target instanceof MetaNode ? routeTemplate(target).slice(0, -1) : undefined;
}

function compute(node: MetaNode): string {
  const parent = node.parent;
  if (!parent) return node.path;
  const dir = node.path.endsWith("/");
  const end = dir ? node.path.length - 1 : node.path.length;
  const name = node.path.slice(node.path.lastIndexOf("/", end - 1) + 1, end);
  const src = parent.source;
  let segment = name;
  if (src?.k === "list") segment = "{index}";
  else if (src?.k === "dir" && !src.fixed) {
    const p = parent.path;
    const parentName = p.slice(p.lastIndexOf("/", p.length - 2) + 1, -1);
    segment = PLACEHOLDER[parentName] ?? "{key}";
  }
  return routeTemplate(parent) + segment + (dir ? "/" : "");
}
