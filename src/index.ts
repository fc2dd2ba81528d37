/**
 * gce-metadata-server as a library: start an emulated GCE metadata server inside a test or an app.
 *
 * @example
 * const server = new MetadataServer({ serverConfig: { port: 0 } });
 * await server.start();
 * const restore = server.applyEnv(); // GCE_METADATA_HOST, GCE_METADATA_IP, GCE_METADATA_ROOT
 * // ... code under test talks to the metadata server ...
 * restore();
 * await server.stop();
 */
import type { Server } from "bun";
import { claimsFromDocument, parseConfigText, readConfigText } from "./config/claims.ts";
import { Snapshot } from "./metadata/snapshot.ts";
import type { Tree } from "./metadata/tree.ts";
import { TokenCache, type TokenCacheEvents } from "./credentials/token-cache.ts";
import type { CredentialSource } from "./credentials/source.ts";
import { EmulatedIssuer } from "./credentials/emulated.ts";
import { overlayStatic, type StaticTokens } from "./credentials/static.ts";
import { createFetch } from "./http/app.ts";
import type { ServingState } from "./http/handler.ts";
import { silentLogger, type Logger } from "./observability/log.ts";
import { ConfigError } from "./errors.ts";
import { fromPlain } from "./config/json.ts";
import { ConfigWatcher } from "./config/watch.ts";
import { ChangeHub } from "./changes/hub.ts";
import { Lifecycle, type LifecycleEvent, type MaintenanceSpec, type PreemptionSpec } from "./changes/lifecycle.ts";
import { deleteAt, mergeAt, nodeAt, setAt, splitPath, treeToJson } from "./metadata/edit.ts";
import { carryGuestAttributes } from "./metadata/guest.ts";
import { createGuestWrites } from "./http/guest.ts";
import { Metrics, NO_METRICS, fanOut, type MetricsHooks } from "./observability/metrics.ts";
import { serveMetrics, type MetricsListenOptions } from "./observability/metrics-server.ts";
import { instrument } from "./observability/requests.ts";
import { listen, type TlsFiles } from "./http/listen.ts";
import { UsageError } from "./errors.ts";
import { VERSION } from "./version.ts";
import defaultConfigText from "../config.json" with { type: "text" };

export { ConfigError, CredentialError, ListenError, MetadataError, UsageError } from "./errors.ts";
export type { MetricsHooks } from "./observability/metrics.ts";
export type { MetricsListenOptions } from "./observability/metrics-server.ts";
export type { TlsFiles } from "./http/listen.ts";
export type { Account, CredentialSource, IdTokenRequest, InstanceIdentity, IssuedToken } from "./credentials/source.ts";
export { EmulatedIssuer } from "./credentials/emulated.ts";
export { StaticSource } from "./credentials/static.ts";
export { Snapshot } from "./metadata/snapshot.ts";
export { EditError } from "./metadata/edit.ts";
export { TooManyWaiters } from "./changes/hub.ts";
export type { LifecycleEvent, MaintenanceSpec, PreemptionSpec } from "./changes/lifecycle.ts";

/** The config bundled with the program: a VM in project `example-project`. */
// Imported as text (Bun embeds it in the compiled executable); TypeScript types the import as the parsed JSON.
export const DEFAULT_CONFIG_TEXT = defaultConfigText as unknown as string;

export interface ServerConfig {
  /** Address to bind (default 127.0.0.1). */
  bindInterface?: string;
  /** Port: a number, or the Go emulator's ":8080" form; 0 picks a free port (default 8080). */
  port?: number | string;
  /** Listen only on this unix socket; TCP is off (`-domainsocket`). A stale socket left by a crashed run is removed. */
  domainSocket?: string;
  /** Mode of the socket file (default 0o660: owner and group may connect; see docs/serving.md). */
  domainSocketMode?: number;
  /** Serve HTTPS on the TCP listener and require a client certificate signed by `rootCA` (`-usemTLS`). */
  tls?: TlsFiles;
  /** Serve Prometheus metrics, /healthz and /readyz on their own listener (`-metricsEnabled`). */
  metrics?: MetricsListenOptions;
}

export interface MetadataServerOptions {
  serverConfig?: ServerConfig;
  /** The config document (`{"computeMetadata":{"v1":{…}}}`); default: the bundled config. */
  claims?: object;
  /** A config file to read instead of `claims`. */
  configFile?: string;
  /** Where tokens come from: a source, static tokens, or (default) the emulated issuer. */
  credentials?: CredentialSource | StaticTokens;
  /** Environment for the Go emulator's overrides (GOOGLE_PROJECT_ID, …); the library reads none unless given. */
  env?: Record<string, string | undefined>;
  /** The Go emulator refuses a config without a default service account; off for the library by default. */
  requireDefaultAccount?: boolean;
  /** Accept `X-Google-Metadata-Request: True` in place of Metadata-Flavor (default true). */
  legacyHeader?: boolean;
  log?: Logger;
  tokenEvents?: TokenCacheEvents;
  /** Unix seconds for `instance_creation_timestamp` in full ID tokens (default: construction time). */
  instanceCreationTimestamp?: number;
  /** Reload `configFile` whenever it changes on disk (default false; the CLI turns it on). */
  watchConfig?: boolean;
  /** Serve the control API under /emulator/v1/ (default false). */
  controlApi?: boolean;
  /** Most wait_for_change requests held at once; 0 (default) means no limit; over it a wait answers 503. */
  maxWaiters?: number;
}

/** Outcome counters of config-file reloads. */
export interface ReloadStats {
  reloads: number;
  failures: number;
  lastError: string | undefined;
}

function isSource(c: CredentialSource | StaticTokens): c is CredentialSource {
  return typeof (c as CredentialSource).accessToken === "function";
}

/** Exact paths the app serves beside the metadata tree, labelled as themselves in metrics (http/app.ts, control.ts). */
const APP_ROUTES = [
  "/.well-known/openid-configuration",
  "/oauth2/v3/certs",
  "/emulator/v1/config",
  "/emulator/v1/status",
  "/emulator/v1/lifecycle",
];
/** Control API routes with a path or id in them, and their metrics label. */
const APP_PREFIXES = [
  ["/emulator/v1/update/", "/emulator/v1/update/{path}"],
  ["/emulator/v1/metadata/", "/emulator/v1/metadata/{path}"],
  ["/emulator/v1/lifecycle/", "/emulator/v1/lifecycle/{event}"],
] as const;

/** Parse the Go emulator's ":8080" or a number. */
export function parsePort(port: number | string | undefined): number {
  if (port === undefined) return 8080;
  const n = typeof port === "number" ? port : Number(port.startsWith(":") ? port.slice(1) : port);
  if (!Number.isInteger(n) || n < 0 || n > 65535) throw new RangeError(`invalid port ${JSON.stringify(port)}: use :8080, 8080 or 0`);
  return n;
}

export class MetadataServer {
  readonly state: ServingState;
  private server: Server<unknown> | undefined;
  private readonly metricsRecorder: Metrics | undefined;
  private metricsServer: Server<unknown> | undefined;
  private readonly options: MetadataServerOptions;
  private readonly createdAt = Math.floor(Date.now() / 1000);
  /** Hanging GETs, woken by every swap. */
  readonly changes: ChangeHub;
  /** Simulated maintenance and preemption events. */
  readonly lifecycle: Lifecycle;
  readonly reloadStats: ReloadStats = { reloads: 0, failures: 0, lastError: undefined };
  /** The tree as the config (file or claims) last gave it, before control-API and guest changes. */
  private fileTree: Tree | undefined;
  private configText: string | undefined;
  private watcher: ConfigWatcher | undefined;

  constructor(options: MetadataServerOptions = {}) {
    this.options = options;
    const env = options.env ?? {};
    const sc = options.serverConfig ?? {};
    if (sc.domainSocket && sc.tls) {
      throw new UsageError(
        "USAGE",
        "a unix socket (-domainsocket) and mTLS (-usemTLS) cannot be combined: the Go emulator serves plain HTTP on the socket; choose one",
      );
    }
    this.metricsRecorder = sc.metrics ? new Metrics({ version: VERSION }) : undefined;
    const events = fanOut(options.tokenEvents, this.metricsRecorder?.tokenEvents);
    const base =
      options.credentials === undefined
        ? new EmulatedIssuer()
        : isSource(options.credentials)
          ? options.credentials
          : overlayStatic(options.credentials, new EmulatedIssuer());
    const source = overlayStatic({ accessToken: env.GOOGLE_ACCESS_TOKEN, idToken: env.GOOGLE_ID_TOKEN }, base);
    const tree =
      options.configFile === undefined
        ? claimsFromDocument(options.claims ?? parseConfigText(DEFAULT_CONFIG_TEXT, "default config"), this.claimsOptions())
        : undefined;
    this.fileTree = tree;
    this.changes = new ChangeHub({ maxWaiters: options.maxWaiters ?? 0 });
    this.state = {
      snapshot: tree ? this.compile(tree) : (undefined as unknown as Snapshot),
      tokens: new TokenCache(source, events ? { events } : {}),
      log: options.log ?? silentLogger,
      legacyHeader: options.legacyHeader ?? true,
      scheme: sc.tls ? "https" : "http",
      waits: this.changes,
      metrics: this.metricsRecorder ?? NO_METRICS,
    };
    this.state.writes = createGuestWrites(this);
    this.lifecycle = new Lifecycle({
      tree: () => this.snapshot.tree,
      edit: (fn) => {
        try {
          this.editTree(fn);
        } catch (e) {
          this.state.log.error("simulated event could not be applied", { error: e });
        }
      },
      log: this.state.log,
    });
  }

  private claimsOptions() {
    return {
      env: this.options.env ?? {},
      requireDefaultAccount: this.options.requireDefaultAccount ?? false,
      ...(this.options.configFile ? { source: this.options.configFile } : {}),
    };
  }

  private compile(tree: Tree): Snapshot {
    return new Snapshot(tree, { instanceCreationTimestamp: this.options.instanceCreationTimestamp ?? this.createdAt });
  }

  /** The snapshot being served. */
  get snapshot(): Snapshot {
    return this.state.snapshot;
  }

  /** Swap in a new snapshot built from a config document; waiters on changed nodes wake. */
  replaceClaims(claims: object): void {
    let tree: Tree;
    try {
      tree = claimsFromDocument(claims, this.claimsOptions());
    } catch (e) {
      this.metrics.reloads.failed();
      throw e;
    }
    this.loadTree(tree);
    this.metrics.reloads.succeeded();
  }

  /** The single place a new snapshot goes live: waiters whose watched ETag changed wake. */
  protected swap(next: Snapshot): void {
    const before = this.state.snapshot?.identity;
    this.state.snapshot = next;
    // Full ID tokens carry instance and project facts: drop the ones minted from facts that changed.
    if (before && JSON.stringify(before) !== JSON.stringify(next.identity)) this.state.tokens.clear("identity");
    this.changes.publish(next);
    this.metricsRecorder?.serviceAccount(this.defaultEmail());
  }

  /** Where wait_for_change and reload code report (no-ops when metrics are off); see observability/metrics.ts. */
  get metrics(): MetricsHooks {
    return this.metricsRecorder ?? NO_METRICS;
  }

  private defaultEmail(): string | undefined {
    return this.state.snapshot?.accounts.get("default")?.email ?? this.state.tokens.source.describe().email;
  }

  /** Why the server is not ready (for /readyz), or undefined. */
  private notReady(): string | undefined {
    if (!this.state.snapshot) return "no config snapshot loaded yet";
    if (!this.server) return "the metadata listener is not up";
    return undefined;
  }

  /** A whole new config: replaces control-API changes; the guest's own writes carry over (see metadata/guest.ts). */
  private loadTree(tree: Tree): void {
    const previous = this.fileTree;
    this.fileTree = tree;
    this.swap(this.compile(this.snapshot ? carryGuestAttributes(previous, tree, this.snapshot.tree) : tree));
  }

  /** Change the tree and serve the result; nothing happens when `fn` returns the same tree. */
  editTree(fn: (tree: Tree) => Tree): void {
    if (!this.state.snapshot) throw new Error("start() the server first: its config file is read when it starts");
    const current = this.snapshot.tree;
    const next = fn(current);
    if (next !== current) this.swap(this.compile(next));
  }

  /** The value at a metadata path (`instance/attributes/foo`) as config JSON text, or undefined. */
  getJson(path: string): string | undefined {
    const node = nodeAt(this.snapshot.tree, splitPath(path));
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

  /** JSON merge patch (RFC 7396) at a path: objects merge, `null` deletes a key. */
  merge(path: string, patch: unknown): void {
    this.editTree((t) => mergeAt(t, path, fromPlain(patch)));
  }

  /** Delete an attribute (or any key of a free-form directory) or a list position. */
  delete(path: string): void {
    this.editTree((t) => deleteAt(t, path));
  }

  /** The whole current config document, `{"computeMetadata":{"v1":{…}}}`. */
  configDocument(): string {
    return `{"computeMetadata":{"v1":${treeToJson(this.snapshot.tree)}}}`;
  }

  /** Schedule a simulated host maintenance event (see changes/lifecycle.ts). */
  simulateMaintenance(spec: MaintenanceSpec): LifecycleEvent {
    return this.lifecycle.scheduleMaintenance(spec);
  }

  /** Schedule a simulated preemption. */
  simulatePreemption(spec: PreemptionSpec): LifecycleEvent {
    return this.lifecycle.schedulePreemption(spec);
  }

  /** Apply config-file text: a valid file goes live, an invalid one is logged and counted, the last good stays. */
  applyConfigText(text: string): boolean {
    const file = this.options.configFile ?? "config";
    try {
      const tree = claimsFromDocument(parseConfigText(text, file), this.claimsOptions());
      this.configText = text;
      this.loadTree(tree);
      this.reloadStats.reloads++;
      this.metrics.reloads.succeeded();
      this.state.log.info("config reloaded", { file });
      return true;
    } catch (e) {
      if (!(e instanceof ConfigError)) throw e;
      this.reloadStats.failures++;
      this.metrics.reloads.failed();
      this.reloadStats.lastError = e.message;
      this.state.log.error(`config reload failed, still serving the last good config: ${e.message}`);
      return false;
    }
  }

  /** Start listening. Resolves with the bound address; port 0 reports the port picked. */
  async start(): Promise<{ url: string; host: string; port: number; socketPath?: string }> {
    if (this.server) return this.address();
    const sc = this.options.serverConfig ?? {};
    const recorder = this.metricsRecorder;
    // Metrics first, so /readyz answers (not ready) while the config loads.
    if (recorder && !this.metricsServer) this.metricsServer = serveMetrics(recorder, sc.metrics!, () => this.notReady());
    try {
      if (!this.state.snapshot) {
        const file = this.options.configFile!;
        this.configText = await readConfigText(file);
        this.fileTree = claimsFromDocument(parseConfigText(this.configText, file), this.claimsOptions());
        this.state.snapshot = this.compile(this.fileTree);
      }
      recorder?.describeCredentials(this.state.tokens.source.describe(), this.defaultEmail());
      this.changes.reopen();
      if (this.options.watchConfig && this.options.configFile && !this.watcher) {
        this.watcher = new ConfigWatcher(this.options.configFile, (text) => void this.applyConfigText(text), {
          onError: (e) => this.state.log.warn("config file not readable; keeping the current config", { error: e.message }),
        });
        await this.watcher.start(this.configText);
      }
      const state = this.state;
      // Observation wraps the handler only when metrics or per-request logs are on; otherwise nothing is added.
      const fetch = instrument(createFetch(state, this.options.controlApi ? { control: this } : {}), {
        snapshot: () => state.snapshot,
        metrics: recorder,
        log: state.log,
        routes: APP_ROUTES,
        prefixes: APP_PREFIXES,
      });
      this.server = await listen(fetch, {
        hostname: sc.bindInterface ?? "127.0.0.1",
        port: parsePort(sc.port),
        domainSocket: sc.domainSocket,
        domainSocketMode: sc.domainSocketMode,
        tls: sc.tls,
      });
    } catch (e) {
      this.watcher?.close();
      this.watcher = undefined;
      await this.metricsServer?.stop(true);
      this.metricsServer = undefined;
      throw e;
    }
    return this.address();
  }

  private address(): { url: string; host: string; port: number; socketPath?: string } {
    const s = this.server!;
    const socketPath = this.options.serverConfig?.domainSocket;
    if (socketPath) return { url: `http+unix://${encodeURIComponent(socketPath)}`, host: "metadata.google.internal", port: 0, socketPath };
    const hostname = s.hostname ?? "127.0.0.1";
    const host = hostname.includes(":") ? `[${hostname}]:${s.port}` : `${hostname}:${s.port}`;
    return { url: `${this.state.scheme}://${host}`, host, port: s.port ?? 0 };
  }

  /** Base URL of the metrics listener (`http://127.0.0.1:9000`), when metrics are on and started. */
  get metricsUrl(): string | undefined {
    const m = this.metricsServer;
    if (!m) return undefined;
    const h = m.hostname ?? "127.0.0.1";
    return `http://${h.includes(":") ? `[${h}]` : h}:${m.port}`;
  }

  get port(): number {
    return this.server?.port ?? 0;
  }

  /** `host:port` as clients' GCE_METADATA_HOST wants it. */
  get host(): string {
    return this.address().host;
  }

  get url(): string {
    return this.address().url;
  }

  /** Point Google's client libraries at this server; returns a function that restores the previous values. */
  applyEnv(target: Record<string, string | undefined> = process.env): () => void {
    if (this.options.serverConfig?.domainSocket)
      throw new UsageError(
        "USAGE",
        "client libraries cannot reach a unix socket through GCE_METADATA_HOST; connect to the socket directly",
      );
    const names = ["GCE_METADATA_HOST", "GCE_METADATA_IP", "GCE_METADATA_ROOT"] as const;
    const saved = names.map((n) => [n, target[n]] as const);
    for (const n of names) target[n] = this.host;
    return () => {
      for (const [n, v] of saved) {
        if (v === undefined) delete target[n];
        else target[n] = v;
      }
    };
  }

  async stop(): Promise<void> {
    const s = this.server;
    this.server = undefined;
    this.watcher?.close();
    this.watcher = undefined;
    this.lifecycle.close();
    // Hanging requests answer with the current content; give them a moment to be written before closing sockets.
    this.changes.close();
    if (s) {
      await Promise.race([s.stop(false), Bun.sleep(1000)]);
      await s.stop(true);
    }
    const m = this.metricsServer;
    this.metricsServer = undefined;
    if (m) await m.stop(true);
    await this.state.tokens.source.close?.();
  }
}
