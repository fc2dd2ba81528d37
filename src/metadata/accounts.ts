/**
 * The service accounts a tree defines, as snapshots compile them (`instance/service-accounts/<name>/` with an
 * `email`), and what a change to the tree does to them. The control API refuses account changes while real
 * credentials mint the tokens: a new account there would be a token for any account the operator's credentials
 * can reach.
 */
import type { Tree } from "./tree.ts";
import { nodeAt } from "./edit.ts";

export interface AccountEntry {
  email: string;
  scopes: readonly string[];
}

/** Path name (`default`, each e-mail) → e-mail and scopes. */
export function accountsOf(tree: Tree): Map<string, AccountEntry> {
  const out = new Map<string, AccountEntry>();
  const dir = nodeAt(tree, ["instance", "service-accounts"]);
  if (dir?.k !== "dir") return out;
  for (const e of dir.entries) {
    const email = nodeAt(e.node, ["email"]);
    if (email?.k !== "scalar" || !email.text) continue;
    const scopes = nodeAt(e.node, ["scopes"]);
    out.set(e.name, { email: email.text, scopes: scopes?.k === "values" ? scopes.items : [] });
  }
  return out;
}

/** The first account `next` creates, renames or gives a scope it did not have, described; undefined if none. */
export function accountChange(previous: Tree, next: Tree): string | undefined {
  const before = accountsOf(previous);
  for (const [name, a] of accountsOf(next)) {
    const b = before.get(name);
    if (!b) return `it creates the service account ${JSON.stringify(name)}`;
    if (b.email !== a.email) return `it changes the e-mail of service account ${JSON.stringify(name)} to ${JSON.stringify(a.email)}`;
    const added = a.scopes.filter((s) => !b.scopes.includes(s));
    if (added.length) return `it adds the scope ${added[0]} to service account ${JSON.stringify(name)}`;
  }
  return undefined;
}
