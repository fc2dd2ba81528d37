/**
 * Snapshot.withChange: a successor that compiles only the changed subtree must serve exactly what a whole compile
 * of the same tree serves (paths, kinds, bodies, ETags, listings, recursive JSON), and every predecessor must keep
 * serving what it served, however many successors follow.
 */
import { describe, expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import { claimsFromDocument } from "../../src/config/claims.ts";
import { fromPlain } from "../../src/json.ts";
import { setAt, deleteAt, splitPath } from "../../src/metadata/edit.ts";
import { deleteGuestAttribute, putGuestAttribute } from "../../src/metadata/guest.ts";
import { MetaNode, Redirect, Snapshot } from "../../src/metadata/snapshot.ts";
import type { Tree } from "../../src/metadata/tree.ts";

const base = JSON.parse(readFileSync(new URL("../../config.json", import.meta.url), "utf8"));
base.computeMetadata.v1.instance.attributes["enable-guest-attributes"] = "TRUE";
const tree0 = claimsFromDocument(base);

/** Everything a snapshot serves, as comparable text per path. */
function served(s: Snapshot): Map<string, string> {
  const out = new Map<string, string>();
  for (const [path, e] of s.entries) {
    if (e instanceof Redirect) out.set(path, `redirect ${e.target}`);
    else if (e.kind === "leaf" || e.kind === "dir") {
      const r = e.recursive;
      out.set(path, `${e.kind} ${e.plain.etag} ${e.plain.body} | ${e.json} | ${r ? `${r.etag} ${r.body}` : "-"} | ${e.recursiveText.body}`);
    } else out.set(path, `${e.kind} ${e.account?.email ?? ""}`);
    if (e instanceof MetaNode && e.path !== path) throw new Error(`${path} holds the node of ${e.path}`);
    if (s.lookup(path) !== e) throw new Error(`lookup(${path}) disagrees with entries`);
  }
  return out;
}

function expectSame(a: Snapshot, b: Snapshot): void {
  const x = served(a);
  const y = served(b);
  expect([...x.keys()].sort()).toEqual([...y.keys()].sort());
  for (const [k, v] of x) expect(`${k}: ${v}`).toBe(`${k}: ${y.get(k)}`);
  expect(a.identity).toEqual(b.identity);
  expect(a.guestAttributes).toBe(b.guestAttributes);
}

/** A small seeded generator, so a failure reproduces. */
function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

describe("withChange", () => {
  test("guest writes: every successor serves what a whole compile serves; predecessors keep their answers", () => {
    const random = rng(7);
    let current = new Snapshot(tree0);
    const history: Array<{ snapshot: Snapshot; fresh: Snapshot }> = [{ snapshot: current, fresh: new Snapshot(tree0) }];
    for (let i = 0; i < 300; i++) {
      const ns = ["hostkeys", "a", "z", "m-1", "constructor"][Math.floor(random() * 5)]!;
      const key = `k${Math.floor(random() * 6)}`;
      const tree: Tree =
        random() < 0.35
          ? deleteGuestAttribute(current.tree, ns, key)
          : putGuestAttribute(current.tree, ns, key, `v${Math.floor(random() * 4)}`);
      if (tree === current.tree) continue;
      current = current.withChange(tree, ["instance", "guest-attributes", ns, key]);
      if (i % 10 === 0) history.push({ snapshot: current, fresh: new Snapshot(tree) });
      expectSame(current, new Snapshot(tree));
    }
    for (const h of history) expectSame(h.snapshot, h.fresh);
  });

  test("edits elsewhere (attributes, a list, a new top-level key): shared where exact, whole compiles where not", () => {
    const edits: Array<[string, unknown] | [string]> = [
      ["instance/attributes/foo", "bar"],
      ["instance/attributes/foo", "baz"],
      ["instance/attributes/foo"],
      ["instance/network-interfaces/0/forwarded-ips/0", "10.0.0.9"],
      ["instance/disks/0/device-name", "boot"],
      ["instance/scheduling/preemptible", "TRUE"],
      ["instance/attributes/enable-guest-attributes", "FALSE"],
      ["instance/attributes/enable-guest-attributes", "TRUE"],
      ["project/attributes/x", "y"],
      ["instance/service-accounts/default/scopes", ["s1"]],
      ["instance/upcoming-maintenance", { type: "SCHEDULED", __proto__x: 1 }],
    ];
    let current = new Snapshot(tree0);
    const all: Array<{ snapshot: Snapshot; tree: Tree }> = [];
    for (const [path, value] of edits) {
      const tree = value === undefined ? deleteAt(current.tree, path) : setAt(current.tree, path, fromPlain(value), { platform: true });
      current = current.withChange(tree, splitPath(path));
      all.push({ snapshot: current, tree });
      expectSame(current, new Snapshot(tree));
    }
    for (const a of all) expectSame(a.snapshot, new Snapshot(a.tree));
    expect(current.accounts.get("default")?.scopes).toEqual(["s1"]);
  });

  test("a successor shares the nodes outside the change and replaces its ancestors", () => {
    const a = new Snapshot(putGuestAttribute(putGuestAttribute(tree0, "one", "k", "1"), "two", "k", "2"));
    const b = a.withChange(putGuestAttribute(a.tree, "one", "k", "changed"), ["instance", "guest-attributes", "one", "k"]);
    const GA = "/computeMetadata/v1/instance/guest-attributes/";
    expect(b.lookup(`${GA}two/`)).toBe(a.lookup(`${GA}two/`)!);
    expect(b.lookup("/computeMetadata/v1/project/")).toBe(a.lookup("/computeMetadata/v1/project/")!);
    expect(b.lookup(`${GA}one/`)).not.toBe(a.lookup(`${GA}one/`)!);
    expect(b.lookup(GA)).not.toBe(a.lookup(GA)!);
    expect((a.lookup(`${GA}one/k`) as MetaNode).plain.body).toBe("1");
    expect((b.lookup(`${GA}one/k`) as MetaNode).plain.body).toBe("changed");
  });
});
