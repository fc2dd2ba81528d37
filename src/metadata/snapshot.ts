/**
 * A snapshot is the metadata tree compiled for serving: every addressable path maps to a node that already holds
 * its listing or value, its JSON, and their ETags. A request is one map lookup; a reload builds a new snapshot.
 */
import type { Account, InstanceIdentity } from "./identity.ts";
import type { Tree, TreeEntry } from "./tree.ts";
import { etagOf } from "./etag.ts";

export const V1 = "/computeMetadata/v1/";
/** Guest attributes: served only when `enable-guest-attributes` is TRUE (instance attribute first, then project). */
export const GUEST_ATTRIBUTES = `${V1}instance/guest-attributes/`;

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
  parent: MetaNode | undefined;
  /** Children in listing order; empty for leaves. */
  readonly children: Child[] = [];
  /** For token and identity endpoints: the account they serve. */
  account: Account | undefined;
  /** JSON of the whole subtree (recursive document); undefined for endpoints. */
  json = "";
  /** Non-recursive default representation: the listing of a directory or the value of a leaf. */
  plain!: Rendering;
  /** Directories: the recursive JSON document. */
  recursive: Rendering | undefined;
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

export class Snapshot {
  readonly entries = new Map<string, Entry>();
  /** Accounts by path name (`default` and each e-mail). */
  readonly accounts = new Map<string, Account>();
  readonly identity: InstanceIdentity;
  readonly root: MetaNode;
  /** Whether `instance/guest-attributes/` is served; when off it lists as an empty directory and reads are refused. */
  readonly guestAttributes: boolean;

  constructor(
    readonly tree: Tree,
    options: SnapshotOptions = {},
  ) {
    if (tree.k !== "dir") throw new TypeError("the v1 tree must be a directory");
    this.guestAttributes = guestAttributesEnabled(tree);
    const top = new MetaNode("/", "dir", undefined);
    const cm = new MetaNode("/computeMetadata/", "dir", undefined);
    this.root = this.compile(tree, V1);
    addChild(top, "computeMetadata", "computeMetadata", cm);
    addChild(cm, "v1", "v1", this.root);
    this.finishDir(cm);
    // The top listing carries no ETag on the real server.
    top.json = `{"computeMetadata":${cm.json}}`;
    top.plain = new Rendering("computeMetadata/\n", TEXT, "");
    top.recursive = new Rendering(top.json, JSON_TYPE, "");
    this.entries.set("/", top);
    this.entries.set("/computeMetadata/", cm);
    this.entries.set("/computeMetadata", new Redirect("/computeMetadata/"));
    this.identity = this.instanceIdentity(options.instanceCreationTimestamp ?? 0);
  }

  lookup(path: string): Entry | undefined {
    return this.entries.get(path);
  }

  /** The node at a path relative to /computeMetadata/v1/ (`instance/id`, `project/`). */
  node(relative: string): MetaNode | undefined {
    const e = this.entries.get(V1 + relative);
    return e instanceof MetaNode ? e : undefined;
  }

  /** Scalar text at a relative path, or undefined. */
  text(relative: string): string | undefined {
    const n = this.node(relative);
    return n && n.kind === "leaf" ? n.plain.body : undefined;
  }

  private compile(t: Tree, path: string): MetaNode {
    if (path === GUEST_ATTRIBUTES && !this.guestAttributes) {
      // Listed, and `{}` in recursive JSON, as on a VM without the feature; the path itself is refused.
      const shown = new MetaNode(path, "dir", { k: "dir", fixed: false, entries: [] });
      this.finishDir(shown);
      this.entries.set(path, new MetaNode(path, "disabled", undefined));
      this.entries.set(path.slice(0, -1), new Redirect(path));
      return shown;
    }
    if (t.k === "dir" || t.k === "list") {
      const node = new MetaNode(path, "dir", t);
      this.entries.set(path, node);
      if (path.length > 1) this.entries.set(path.slice(0, -1), new Redirect(path));
      const entries: TreeEntry[] =
        t.k === "list" ? t.items.map((item, i) => ({ name: String(i), jsonKey: String(i), node: item })) : [...t.entries];
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
      this.finishDir(node);
      return node;
    }
    const node = new MetaNode(path, "leaf", t);
    this.entries.set(path, node);
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
      this.entries.set(endpoint.path, endpoint);
      addChild(dir, kind, kind, endpoint);
    }
    dir.children.sort((a, b) => (a.name < b.name ? -1 : 1));
  }

  private finishDir(node: MetaNode): void {
    const isList = node.source?.k === "list";
    let listing = "";
    const members: string[] = [];
    for (const c of node.children) {
      if (c.hidden) continue;
      listing += c.node.kind === "dir" ? `${c.name}/\n` : `${c.name}\n`;
      if (c.node.kind === "dir" || c.node.kind === "leaf")
        members.push(isList ? c.node.json : `${JSON.stringify(c.jsonKey)}:${c.node.json}`);
    }
    if (isList) {
      node.json = `[${members.join(",")}]`;
    } else {
      // JSON keys in ascending order, as the real server prints them.
      const keyed = node.children
        .filter((c) => !c.hidden && (c.node.kind === "dir" || c.node.kind === "leaf"))
        .sort((a, b) => (a.jsonKey < b.jsonKey ? -1 : a.jsonKey > b.jsonKey ? 1 : 0));
      node.json = `{${keyed.map((c) => `${JSON.stringify(c.jsonKey)}:${c.node.json}`).join(",")}}`;
    }
    node.plain = new Rendering(listing, TEXT);
    node.recursive = new Rendering(node.json, JSON_TYPE);
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
  node.parent = parent;
  const c: Child = { name, jsonKey, node };
  parent.children.push(c);
  return c;
}

function childText(dir: MetaNode, name: string): string | undefined {
  const c = dir.children.find((x) => x.name === name)?.node;
  return c?.kind === "leaf" && c.source?.k === "scalar" ? c.source.text : undefined;
}
