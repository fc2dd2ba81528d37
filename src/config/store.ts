/**
 * The metadata being served and every way it changes: a whole config (file, reload, library, control API), an
 * edit at a path, a platform edit (simulated events, guest attributes). Each change compiles a new snapshot and
 * goes live in one place, {@link ConfigStore.install}, which hands it to the server (waiters wake there).
 *
 * @example
 * const store = new ConfigStore({ claims: { requireDefaultAccount: true }, onSwap: (next) => hub.publish(next) });
 * store.loadDocument(JSON.parse(text));
 * store.set("instance/attributes/foo", "bar");
 */
import { ConfigError, EditError } from "../errors.ts";
import { fromPlain, type JsonObject } from "../json.ts";
import { deleteAt, mergeAt, nodeAt, setAt, splitPath, treeToJson } from "../metadata/edit.ts";
import { carryGuestAttributes } from "../metadata/guest.ts";
import { Snapshot } from "../metadata/snapshot.ts";
import type { Tree } from "../metadata/tree.ts";
import type { Logger } from "../log.ts";
import { type ClaimsOptions, claimsFromDocument, overlayDocument, parseConfigText, readConfigText } from "./claims.ts";

/** Outcome counters of config-file reloads. */
export interface ReloadStats {
  reloads: number;
  failures: number;
  lastError: string | undefined;
}

export interface ConfigStoreOptions {
  claims: ClaimsOptions;
  /** Unix seconds for `instance_creation_timestamp` in full ID tokens. */
  instanceCreationTimestamp: number;
  /** A new snapshot went live (`previous` is undefined for the first). */
  onSwap(next: Snapshot, previous: Snapshot | undefined): void;
  /** A whole config was accepted or refused (reload counters in metrics). */
  onReload?(ok: boolean): void;
  log: Logger;
}

export class ConfigStore {
  /** The snapshot being served; undefined until the first config is loaded. */
  snapshot: Snapshot | undefined;
  readonly reloadStats: ReloadStats = { reloads: 0, failures: 0, lastError: undefined };
  /** The tree as the config last gave it, before control-API and guest changes. */
  private fileTree: Tree | undefined;
  /** The config file's text as last read (the watcher compares against it). */
  configText: string | undefined;
  /** `-upstream`: the other server's `computeMetadata.v1`, under the config (then a partial overlay). */
  private upstream: JsonObject | undefined;
  /** The config document last accepted, kept to lay it over a new upstream tree. */
  private document: object | undefined;

  constructor(private readonly options: ConfigStoreOptions) {}

  /** The served snapshot; throws when no config has been loaded yet. */
  get current(): Snapshot {
    if (!this.snapshot)
      throw new EditError("EDIT_NOT_FOUND", "no config is loaded yet: start() the server first (its config file is read when it starts)");
    return this.snapshot;
  }

  /** Check and compile a config document (`{"computeMetadata":{"v1":{…}}}`); throws ConfigError naming the path. */
  private treeOf(doc: object, source = this.options.claims.source): Tree {
    const upstream = this.upstream;
    const whole = upstream ? overlayDocument(upstream, doc, source) : doc;
    return claimsFromDocument(whole, { ...this.options.claims, ...(source === undefined ? {} : { source }) });
  }

  /** The single place a snapshot goes live: compiled whole from `tree`, or made by `make` from the current one. */
  private install(tree: Tree, make?: (current: Snapshot) => Snapshot): void {
    const previous = this.snapshot;
    const next =
      make && previous ? make(previous) : new Snapshot(tree, { instanceCreationTimestamp: this.options.instanceCreationTimestamp });
    this.snapshot = next;
    this.options.onSwap(next, previous);
  }

  /**
   * A whole new config: replaces control-API changes; the guest's own writes carry over (see metadata/guest.ts).
   * `doc` is kept to lay the config over a new upstream tree; `check` may refuse the tree that would go live (it
   * throws); nothing changes then.
   */
  private loadTree(tree: Tree, doc: object, check?: (previous: Tree, next: Tree) => void): void {
    const next = this.snapshot ? carryGuestAttributes(this.fileTree, tree, this.snapshot.tree) : tree;
    if (check && this.snapshot) check(this.snapshot.tree, next);
    this.fileTree = tree;
    this.document = doc;
    this.install(next);
  }

  /** The first config, from a document. Throws ConfigError. */
  loadDocument(doc: object): void {
    this.loadTree(this.treeOf(doc), doc);
  }

  /** The first config, from a file. Throws ConfigError (unreadable, syntax, shape, anything else that fails). */
  async loadFile(path: string): Promise<void> {
    const text = await readConfigText(path);
    try {
      const doc = parseConfigText(text, path) as object;
      const tree = this.treeOf(doc);
      this.configText = text;
      this.loadTree(tree, doc);
    } catch (e) {
      if (e instanceof ConfigError) throw e;
      // A failure no check foresaw is still the file's: one line, exit 1, never a stack trace.
      throw new ConfigError("CONFIG_UNUSABLE", `${path}: cannot be served: ${e instanceof Error ? e.message : String(e)}`, { cause: e });
    }
  }

  /**
   * Swap in a new config document (library, control API); throws ConfigError (or what `check` throws), and the
   * current one stays. `source` names the document in messages (`request body`), not the config file.
   */
  replaceClaims(doc: object, check?: (previous: Tree, next: Tree) => void, source = "claims"): void {
    try {
      this.loadTree(this.treeOf(doc, source), doc, check);
    } catch (e) {
      this.options.onReload?.(false);
      throw e;
    }
    this.options.onReload?.(true);
  }

  /**
   * Config-file text from the watcher: a valid file goes live; anything else (bad JSON, wrong shape, an internal
   * failure) is logged in one line and counted, and the last good config keeps serving. Never throws.
   */
  applyConfigText(text: string, file: string): boolean {
    try {
      const doc = parseConfigText(text, file) as object;
      const tree = this.treeOf(doc);
      this.configText = text;
      this.loadTree(tree, doc);
      this.reloadStats.reloads++;
      this.options.onReload?.(true);
      this.options.log.info("config reloaded", { file });
      return true;
    } catch (e) {
      const message = e instanceof Error ? e.message : String(e);
      this.reloadStats.failures++;
      this.reloadStats.lastError = message;
      this.options.onReload?.(false);
      this.options.log.error(`config reload failed, still serving the last good config: ${message}`);
      return false;
    }
  }

  /**
   * `-upstream`: a new tree from the other server, with the config laid over it. Before the first config this only
   * records it; after, it goes live like a reload (control-API changes are replaced, guest writes carry over). A
   * tree the config cannot be laid over is logged and refused, and the current one stays. Never throws.
   */
  setUpstream(v1: JsonObject): boolean {
    const previous = this.upstream;
    this.upstream = v1;
    const doc = this.document;
    if (!this.snapshot || !doc) return true;
    try {
      this.loadTree(this.treeOf(doc), doc);
      return true;
    } catch (e) {
      this.upstream = previous;
      this.options.log.error(`upstream tree not applied, still serving the last good one: ${(e as Error).message}`);
      return false;
    }
  }

  /** Change the tree and serve the result; nothing happens when `fn` returns the same tree. */
  editTree(fn: (tree: Tree) => Tree): void {
    const current = this.current.tree;
    const next = fn(current);
    if (next !== current) this.install(next);
  }

  /**
   * An edit confined to the subtree at `segs` (below /computeMetadata/v1/): `fn` may change nothing outside it.
   * The next snapshot compiles only that subtree and shares the rest (guest-attribute writes).
   */
  editAt(segs: readonly string[], fn: (tree: Tree) => Tree): void {
    const current = this.current.tree;
    const next = fn(current);
    if (next !== current) this.install(next, (s) => s.withChange(next, segs));
  }

  /** The value at a metadata path (`instance/attributes/foo`) as config JSON text, or undefined. */
  getJson(path: string): string | undefined {
    const node = nodeAt(this.current.tree, splitPath(path));
    return node ? treeToJson(node) : undefined;
  }

  /** The value at a metadata path in the config file's naming (numbers beyond 2^53 lose digits: use getJson). */
  get(path: string): unknown {
    const json = this.getJson(path);
    return json === undefined ? undefined : JSON.parse(json);
  }

  /** Set a value (`set("instance/attributes/foo", "bar")`); throws EditError (shape, fixed keys, missing parent). */
  set(path: string, value: unknown): void {
    this.editTree((t) => setAt(t, path, fromPlain(value)));
  }

  /** JSON merge patch (RFC 7396) at a path: objects merge, `null` deletes a key. Throws EditError. */
  merge(path: string, patch: unknown): void {
    this.editTree((t) => mergeAt(t, path, fromPlain(patch)));
  }

  /** Delete an attribute (or any key of a free-form directory) or a list position. Throws EditError. */
  delete(path: string): void {
    this.editTree((t) => deleteAt(t, path));
  }

  /** The whole current config document, `{"computeMetadata":{"v1":{…}}}`. */
  configDocument(): string {
    return `{"computeMetadata":{"v1":${treeToJson(this.current.tree)}}}`;
  }
}
