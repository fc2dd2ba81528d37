/**
 * A snapshot is the metadata tree compiled for serving: every addressable path maps to a node that already holds
 * its listing or value, its JSON, and their ETags. A request is one map lookup; a reload builds a new snapshot.
 *
 * A change confined to one subtree (a guest-attribute write) makes a successor instead ({@link Snapshot.withChange}):
 * it compiles only the changed subtree and rebuilds its ancestors' listings, and shares every other node and the
 * path map itself. The map is updated in place; the predecessor keeps what was overwritten (`undo`), so it still
 * answers exactly as before, and becomes garbage when nothing holds it. A directory's recursive JSON is made on
 * first use, so a write costs the changed directory's size, not the tree's.
 */
import type { Account, InstanceIdentity } from "./identity.ts";
import type { Tree, TreeEntry } from "./tree.ts";
import { etagOf } from "./etag.ts";

export const V1 = "/computeMetadata/v1/";
/** Guest attributes: served only when `enable-guest-attributes` is TRUE (instance attribute first, then project). */
export const GUEST_ATTRIBUTES = `${V1}instance/guest-attributes/`;
const INSTANCE = `${V1}instance/`;

/** Headers every response carries, as on the real server. */
export const BASE_HEADERS = {
  "Metadata-Flavor": "Google",
  Server: "Metadata Server for VM",
  "X-XSS-Protection": "0",
  "X-Frame-Options": "SAMEORIGIN",
} as const;

export const TEXT = "application/text";
export const JSON_TYPE = "application/json";

/**
 * One servable representation: body, type, ETag and the complete header set. The ETag (an MD5) and the headers are
 * made on first use and kept, so compiling a snapshot hashes nothing that is never asked for.
 */
export class Rendering {
  private _etag: string | undefined;
  private _init: ResponseInit | undefined;
  constructor(
    readonly body: string,
    readonly contentType: string,
    /** Whose ETag this carries: its own body's (default), another rendering's (alt forms), or none (""). */
    private readonly etagFrom?: Rendering | "",
  ) {}

  get etag(): string {
    if (this._etag !== undefined) return this._etag;
    const from = this.etagFrom;
    return (this._etag = from === "" ? "" : from ? from.etag : etagOf(this.body));
  }

  get init(): ResponseInit {
    if (this._init) return this._init;
    const headers: Record<string, string> = { ...BASE_HEADERS, "Content-Type": this.contentType };
    const etag = this.etag;
    if (etag) headers.ETag = etag;
    // A Headers instance, not a plain object: Bun copies it into each Response far more cheaply.
    return (this._init = { headers: new Headers(headers) });
  }
}

export type NodeKind = "dir" | "leaf" | "token" | "identity" | "disabled";

/** What recursive JSON and listings need to know about a child. */
interface Child {
  name: string;
  jsonKey: string;
  node: MetaNode;
  /** Served at its path but left out of the parent's listing and JSON (`universe/` at the v1 root). */
  hidden?: boolean;
}

export class MetaNode {
  /** Children in listing order; empty for leaves. */
  children: Child[] = [];
  /** For token and identity endpoints: the account they serve. */
  account: Account | undefined;
  private _plain: Rendering | undefined;
  private _json: string | undefined;
  private _recursive: Rendering | undefined;
  private _altJson: Rendering | undefined;
  private _altText: Rendering | undefined;
  private _recursiveText: Rendering | undefined;

  constructor(
    /** Full request path; directories end in "/". */
    readonly path: string,
    readonly kind: NodeKind,
    readonly source: Tree | undefined,
  ) {}

  get isDir(): boolean {
    return this.kind === "dir";
  }

  /** Non-recursive default representation: the listing of a directory (made on first use) or the value of a leaf. */
  get plain(): Rendering {
    if (this._plain !== undefined) return this._plain;
    let listing = "";
    for (const c of this.children) if (!c.hidden) listing += c.node.kind === "dir" ? `${c.name}/\n` : `${c.name}\n`;
    return (this._plain = new Rendering(listing, TEXT));
  }

  set plain(r: Rendering) {
    this._plain = r;
  }

  /** JSON of the whole subtree (recursive document); "" for endpoints. Directories make it on first use. */
  get json(): string {
    if (this._json !== undefined) return this._json;
    return (this._json = this.kind === "dir" ? dirJson(this) : "");
  }

  set json(text: string) {
    this._json = text;
  }

  /** Directories: the recursive JSON document (made on first use); undefined for other nodes. */
  get recursive(): Rendering | undefined {
    if (this._recursive !== undefined || this.kind !== "dir") return this._recursive;
    // The top listing `/` carries no ETag on the real server, recursive or not.
    return (this._recursive = new Rendering(this.json, JSON_TYPE, this.path === "/" ? "" : undefined));
  }

  /** Leaves with alt=json: the node's JSON value. */
  get altJson(): Rendering {
    return (this._altJson ??= new Rendering(this.json, JSON_TYPE, this.plain));
  }

  /** Leaves with alt=text: scalars as text, lists one item per line. */
  get altText(): Rendering {
    if (this._altText) return this._altText;
    const s = this.source;
    const body = s?.k === "values" ? lines(s.items) : this.plain.body;
    return (this._altText = new Rendering(body, TEXT, this.plain));
  }

  /** Directories with recursive=true&alt=text: `path value` lines relative to this node. */
  get recursiveText(): Rendering {
    if (this._recursiveText) return this._recursiveText;
    const out: string[] = [];
    textLines(this, "", out);
    return (this._recursiveText = new Rendering(lines(out), TEXT, this.recursive!));
  }
}

export type Entry = MetaNode | Redirect;

/** A directory asked for without its trailing slash. */
export class Redirect {
  /** Body: the redirected path and a newline, as the real server sends. */
  readonly body: string;
  constructor(readonly target: string) {
    this.body = `${target}\n`;
  }
}

const lines = (items: readonly string[]): string => {
  let s = "";
  for (const item of items) s += `${item}\n`;
  return s;
};

function textLines(node: MetaNode, prefix: string, out: string[]): void {
  const s = node.source;
  if (node.kind === "dir") {
    const isList = s?.k === "list";
    for (const c of node.children) {
      if (c.hidden || c.node.kind === "token" || c.node.kind === "identity") continue;
      // Elements of a list of scalars keep the list's own path (one address per line for forwarded-ips/).
      const scalarItem = isList && c.node.kind === "leaf";
      textLines(c.node, scalarItem ? prefix : prefix ? `${prefix}/${c.name}` : c.name, out);
    }
    return;
  }
  if (!s) return;
  const line = (v: string) => out.push(prefix ? `${prefix} ${v}` : v);
  if (s.k === "values") for (const item of s.items) line(item);
  else if (s.k === "scalar") line(s.text);
  else if (s.k === "doc") line(s.json);
}

export interface SnapshotOptions {
  /** Unix seconds reported as `instance_creation_timestamp` in full ID tokens. */
  instanceCreationTimestamp?: number;
}

/** Where a successor starts: the predecessor and the changed subtree's path below /computeMetadata/v1/. */
interface Change {
  from: Snapshot;
  segs: readonly string[];
}

export class Snapshot {
  /** Path → entry; shared with a successor made by withChange, which then owns it. */
  private map: Map<string, Entry>;
  /** Set once a successor took over `map`: what it overwrote, so this snapshot still answers as before. */
  private undo: Map<string, Entry | undefined> | undefined;
  private successor: Snapshot | undefined;
  /** Accounts by path name (`default` and each e-mail). */
  readonly accounts: Map<string, Account>;
  readonly identity: InstanceIdentity;
  readonly root: MetaNode;
  /** Whether `instance/guest-attributes/` is served; when off it lists as an empty directory and reads are refused. */
  readonly guestAttributes: boolean;
  private readonly options: SnapshotOptions;
  /** While a successor is built: what it overwrites in the shared map. */
  private building: Map<string, Entry | undefined> | undefined;

  constructor(
    readonly tree: Tree,
    options: SnapshotOptions = {},
    change?: Change,
  ) {
    if (tree.k !== "dir") throw new TypeError("the v1 tree must be a directory");
    this.options = options;
    this.guestAttributes = guestAttributesEnabled(tree);
    if (change) {
      const { from } = change;
      this.map = from.map;
      this.accounts = from.accounts;
      this.building = new Map();
      this.root = this.recompile(from, change.segs);
      this.top(this.root);
      from.undo = this.building;
      from.successor = this;
      this.building = undefined;
    } else {
      this.map = new Map();
      this.accounts = new Map();
      this.root = this.compile(tree, V1);
      this.top(this.root);
    }
    this.identity = this.instanceIdentity(options.instanceCreationTimestamp ?? 0);
  }

  /**
   * The snapshot of `tree`, which differs from this one's only under `segs` (relative to /computeMetadata/v1/,
   * e.g. `["instance", "guest-attributes", "hostkeys", "ssh-rsa"]`). Nodes outside that subtree are shared; where
   * sharing cannot be exact (accounts, the guest-attribute switch, a predecessor already replaced) it compiles
   * everything, as the constructor does.
   */
  withChange(tree: Tree, segs: readonly string[]): Snapshot {
    const changed = this.changedSegs(tree, segs);
    if (!changed) return new Snapshot(tree, this.options);
    return new Snapshot(tree, this.options, { from: this, segs: changed });
  }

  lookup(path: string): Entry | undefined {
    if (this.successor === undefined) return this.map.get(path);
    let s: Snapshot = this;
    while (s.successor !== undefined) {
      if (s.undo!.has(path)) return s.undo!.get(path);
      s = s.successor;
    }
    return s.map.get(path);
  }

  /** Every path and its entry, as this snapshot serves them. */
  get entries(): ReadonlyMap<string, Entry> {
    if (this.successor === undefined) return this.map;
    const out = new Map(this.map);
    const undos: Array<Map<string, Entry | undefined>> = [];
    for (let s: Snapshot = this; s.successor !== undefined; s = s.successor) undos.push(s.undo!);
    for (const undo of undos.reverse()) {
      for (const [path, e] of undo) {
        if (e === undefined) out.delete(path);
        else out.set(path, e);
      }
    }
    return out;
  }

  /** The node at a path relative to /computeMetadata/v1/ (`instance/id`, `project/`). */
  node(relative: string): MetaNode | undefined {
    const e = this.lookup(V1 + relative);
    return e instanceof MetaNode ? e : undefined;
  }

  /** Scalar text at a relative path, or undefined. */
  text(relative: string): string | undefined {
    const n = this.node(relative);
    return n && n.kind === "leaf" ? n.plain.body : undefined;
  }

  /** Every write to the map goes through here, so a successor records what it overwrites. */
  private put(path: string, entry: Entry | undefined): void {
    const b = this.building;
    if (b !== undefined && !b.has(path)) b.set(path, this.map.get(path));
    if (entry === undefined) this.map.delete(path);
    else this.map.set(path, entry);
  }

  /** `/` and `/computeMetadata/` above the v1 root. */
  private top(v1: MetaNode): void {
    const top = new MetaNode("/", "dir", undefined);
    const cm = new MetaNode("/computeMetadata/", "dir", undefined);
    addChild(top, "computeMetadata", "computeMetadata", cm);
    addChild(cm, "v1", "v1", v1);
    // The top listing carries no ETag on the real server.
    top.plain = new Rendering("computeMetadata/\n", TEXT, "");
    this.put("/", top);
    this.put("/computeMetadata/", cm);
    this.put("/computeMetadata", new Redirect("/computeMetadata/"));
  }

  /**
   * The path of the subtree a successor recompiles: `segs` cut at the first node missing on either side (a new or
   * deleted namespace) and at the first list (its positions shift); undefined when only a full compile is exact.
   */
  private changedSegs(tree: Tree, segs: readonly string[]): string[] | undefined {
    if (this.successor !== undefined || guestAttributesEnabled(tree) !== this.guestAttributes) return undefined;
    let oldT: Tree | undefined = this.tree;
    let newT: Tree | undefined = tree;
    const out: string[] = [];
    for (const seg of segs) {
      if (oldT?.k !== "dir" || newT?.k !== "dir") {
        // A list (or a leaf turned into a directory): the list itself is the changed node.
        if (oldT?.k === "list" || newT?.k === "list") break;
        if (oldT?.k !== newT?.k) return undefined;
      }
      out.push(seg);
      oldT = oldT?.k === "dir" ? oldT.entries.find((e) => e.name === seg)?.node : undefined;
      newT = newT?.k === "dir" ? newT.entries.find((e) => e.name === seg)?.node : undefined;
      if (oldT === undefined || newT === undefined) break;
    }
    // Below the v1 root's own children only (oslogin and universe are special there), outside accounts (they feed
    // token endpoints), and not inside disabled guest attributes (compiled as a placeholder).
    if (out.length < 2) return undefined;
    if (out[0] === "instance" && out[1] === "service-accounts") return undefined;
    if (!this.guestAttributes && out[0] === "instance" && out[1] === "guest-attributes") return undefined;
    return out;
  }

  /** Compile the subtree at `segs` anew and rebuild its ancestors; everything else is `from`'s. */
  private recompile(from: Snapshot, segs: readonly string[]): MetaNode {
    const dirs: MetaNode[] = [from.root];
    const sources: Tree[] = [this.tree];
    let path = V1;
    for (let i = 0; i < segs.length - 1; i++) {
      path += `${segs[i]}/`;
      dirs.push(from.map.get(path) as MetaNode);
      const parent = sources[i]!;
      sources.push((parent as Extract<Tree, { k: "dir" }>).entries.find((e) => e.name === segs[i])!.node);
    }
    const name = segs[segs.length - 1]!;
    const parentSource = sources[sources.length - 1] as Extract<Tree, { k: "dir" }>;
    const entry = parentSource.entries.find((e) => e.name === name);
    const old = dirs[dirs.length - 1]!.children.find((c) => c.name === name);
    if (old) this.remove(old.node);
    let child: Child | undefined;
    if (entry) {
      const isDir = entry.node.k === "dir" || entry.node.k === "list";
      child = { name, jsonKey: entry.jsonKey, node: this.compile(entry.node, path + name + (isDir ? "/" : "")) };
    }
    // Ancestors, deepest first: each a new node over the old one's children with the one child replaced.
    for (let i = dirs.length - 1; i >= 0; i--) {
      const before = dirs[i]!;
      const dir = new MetaNode(before.path, "dir", i === 0 ? this.tree : sources[i]);
      const children = before.children.slice();
      dir.children = children;
      // Children are sorted by name: find the replaced one's place by bisection.
      const key = segs[i]!;
      let lo = 0;
      let hi = children.length;
      while (lo < hi) {
        const mid = (lo + hi) >>> 1;
        if (children[mid]!.name < key) lo = mid + 1;
        else hi = mid;
      }
      const present = lo < children.length && children[lo]!.name === key;
      if (child) children.splice(lo, present ? 1 : 0, child);
      else if (present) children.splice(lo, 1);
      this.put(dir.path, dir);
      const keep = i > 0 ? dirs[i - 1]!.children.find((c) => c.node === before) : undefined;
      child = keep ? { ...keep, node: dir } : { name: segs[i - 1] ?? "", jsonKey: segs[i - 1] ?? "", node: dir };
    }
    return child!.node;
  }

  /** Drop a node and everything below it from the map. */
  private remove(node: MetaNode): void {
    this.put(node.path, undefined);
    if (node.path.endsWith("/")) this.put(node.path.slice(0, -1), undefined);
    for (const c of node.children) this.remove(c.node);
  }

  private compile(t: Tree, path: string): MetaNode {
    if (path === GUEST_ATTRIBUTES && !this.guestAttributes) {
      // Listed, and `{}` in recursive JSON, as on a VM without the feature; the path itself is refused.
      const shown = new MetaNode(path, "dir", { k: "dir", fixed: false, entries: [] });
      this.put(path, new MetaNode(path, "disabled", undefined));
      this.put(path.slice(0, -1), new Redirect(path));
      return shown;
    }
    if (t.k === "dir" || t.k === "list") {
      const node = new MetaNode(path, "dir", t);
      this.put(path, node);
      if (path.length > 1) this.put(path.slice(0, -1), new Redirect(path));
      const entries: TreeEntry[] =
        t.k === "list" ? t.items.map((item, i) => ({ name: String(i), jsonKey: String(i), node: item })) : [...t.entries];
      // Enabled guest attributes list as a directory before the first write, as on a VM.
      if (path === INSTANCE && this.guestAttributes && !entries.some((e) => e.name === "guest-attributes")) {
        entries.push({ name: "guest-attributes", jsonKey: "guestAttributes", node: { k: "dir", fixed: false, entries: [] } });
      }
      if (t.k === "dir") entries.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
      for (const e of entries) {
        const childDir = e.node.k === "dir" || e.node.k === "list";
        const child = this.compile(e.node, path + e.name + (childDir ? "/" : ""));
        const c = addChild(node, e.name, e.jsonKey, child);
        if (path === V1 && e.name === "universe") c.hidden = true;
      }
      if (path === V1 && !node.children.some((c) => c.name === "oslogin")) {
        addChild(node, "oslogin", "oslogin", this.compile({ k: "dir", fixed: false, entries: [] }, `${V1}oslogin/`));
        node.children.sort((a, b) => (a.name < b.name ? -1 : 1));
      }
      if (path.startsWith(`${V1}instance/service-accounts/`) && path.split("/").length === 7) this.addAccount(node);
      return node;
    }
    const node = new MetaNode(path, "leaf", t);
    this.put(path, node);
    switch (t.k) {
      case "scalar":
        node.json = t.json;
        node.plain = new Rendering(t.text, TEXT);
        break;
      case "values": {
        node.json = JSON.stringify(t.items);
        // instance/tags is JSON by default; other lists are lines.
        node.plain = path === `${V1}instance/tags` ? new Rendering(node.json, JSON_TYPE) : new Rendering(lines(t.items), TEXT);
        break;
      }
      case "doc":
        node.json = t.json;
        node.plain = new Rendering(t.json, JSON_TYPE);
        break;
    }
    return node;
  }

  /** `service-accounts/<name>/` gains its token and identity endpoints. */
  private addAccount(dir: MetaNode): void {
    const email = childText(dir, "email");
    if (!email) return;
    const scopesNode = dir.children.find((c) => c.name === "scopes")?.node.source;
    const account: Account = { email, scopes: scopesNode?.k === "values" ? scopesNode.items : [] };
    const name = dir.path.split("/").at(-2)!;
    this.accounts.set(name, account);
    for (const kind of ["identity", "token"] as const) {
      const endpoint = new MetaNode(dir.path + kind, kind, undefined);
      endpoint.account = account;
      this.put(endpoint.path, endpoint);
      addChild(dir, kind, kind, endpoint);
    }
    dir.children.sort((a, b) => (a.name < b.name ? -1 : 1));
  }

  private instanceIdentity(created: number): InstanceIdentity {
    const licenses = this.node("instance/licenses/");
    const zone = this.text("instance/zone") ?? "";
    return {
      projectId: this.text("project/project-id") ?? "",
      projectNumber: this.text("project/numeric-project-id") ?? "",
      instanceId: this.text("instance/id") ?? "",
      instanceName: this.text("instance/name") ?? "",
      zone: zone.slice(zone.lastIndexOf("/") + 1),
      instanceCreationTimestamp: created,
      licenseIds: licenses ? licenses.children.map((c) => childText(c.node, "id")).filter((x): x is string => !!x) : [],
    };
  }
}

/** A directory's recursive JSON: a list's members in order, a directory's keys ascending (as the real server). */
function dirJson(node: MetaNode): string {
  const members = node.children.filter((c) => !c.hidden && (c.node.kind === "dir" || c.node.kind === "leaf"));
  if (node.source?.k === "list") return `[${members.map((c) => c.node.json).join(",")}]`;
  members.sort((a, b) => (a.jsonKey < b.jsonKey ? -1 : a.jsonKey > b.jsonKey ? 1 : 0));
  return `{${members.map((c) => `${JSON.stringify(c.jsonKey)}:${c.node.json}`).join(",")}}`;
}

const ON = /^(true|t|1|y|yes)$/i;

/** `enable-guest-attributes` of the instance attributes, else of the project attributes. */
export function guestAttributesEnabled(v1: Tree): boolean {
  const attr = (scope: string): string | undefined => {
    const dir = v1.k === "dir" ? v1.entries.find((e) => e.name === scope)?.node : undefined;
    const attrs = dir?.k === "dir" ? dir.entries.find((e) => e.name === "attributes")?.node : undefined;
    const v = attrs?.k === "dir" ? attrs.entries.find((e) => e.name === "enable-guest-attributes")?.node : undefined;
    return v?.k === "scalar" ? v.text.trim() : undefined;
  };
  const value = attr("instance") ?? attr("project");
  return value !== undefined && ON.test(value);
}

function addChild(parent: MetaNode, name: string, jsonKey: string, node: MetaNode): Child {
  const c: Child = { name, jsonKey, node };
  parent.children.push(c);
  return c;
}

function childText(dir: MetaNode, name: string): string | undefined {
  const c = dir.children.find((x) => x.name === name)?.node;
  return c?.kind === "leaf" && c.source?.k === "scalar" ? c.source.text : undefined;
}
