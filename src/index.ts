/**
 * gce-metadata-server as a library: start an emulated GCE metadata server inside a test or an app. This is the one
 * place the server is put together from options; the command line only turns flags and environment into options.
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
import defaultConfigText from "../config.json" with { type: "text" };
import { ChangeHub } from "./changes/hub.ts";
import { Clock } from "./clock.ts";
import { defaultMaxWaiters, openFileLimit } from "./changes/limit.ts";
import { parseConfigText } from "./config/claims.ts";
import { ConfigStore, type ReloadStats } from "./config/store.ts";
import type { UpstreamWatch } from "./config/upstream.ts";
import type { ConfigWatcher } from "./config/watch.ts";
import { EmulatedIssuer } from "./credentials/emulated.ts";
import { refreshMargins, tokenLifetimeMs } from "./credentials/lifetime.ts";
import { type CredentialSpec, isCredentialSpec, type Note, openSource } from "./credentials/open.ts";
import type { CredentialSource } from "./credentials/source.ts";
import { overlayStatic, type StaticTokens } from "./credentials/static.ts";
import { DEFAULT_UPSTREAM_TIMEOUT_MS, TokenCache, type TokenCacheEvents } from "./credentials/token-cache.ts";
import { type Environment, readEnvironment } from "./environment.ts";
import { ConfigError, CredentialError, ListenError, UpstreamError, UsageError, unreadableReason } from "./errors.ts";
import { Lifecycle, type LifecycleEvent, type MaintenanceSpec, type PreemptionSpec } from "./events/lifecycle.ts";
import { createControlFetch, createFetch } from "./http/app.ts";
import type { Callers } from "./http/callers.ts";
import { DEFAULT_CONTROL_BODY_BYTES, type ControlOptions } from "./http/control-gate.ts";
import { FaultRules, type FaultSpec } from "./http/faults.ts";
import { createGuestWrites } from "./http/guest.ts";
import type { ServingState } from "./http/handler.ts";
import { parsePort } from "./address.ts";
import { type ListenTarget, listen, loadTls, parseListenAddress, type TlsFiles } from "./http/listen.ts";
import { APP_ROUTES, routeMatcher } from "./http/routes.ts";
import { fromPlain } from "./json.ts";
import { asLogger, type Logger, type LoggerLike, silentLogger } from "./log.ts";
import { metadataBaseUrl } from "./metadata/client.ts";
import { DEFAULT_GUEST_LIMITS, type GuestAttributeLimits } from "./metadata/guest.ts";
import type { Snapshot } from "./metadata/snapshot.ts";
import { fanOut, lateEvents, type MetricsHooks, NO_METRICS } from "./observability/hooks.ts";
import type { Metrics } from "./observability/metrics.ts";
import { type MetricsListenOptions, serveMetrics } from "./observability/metrics-server.ts";
import { instrument } from "./observability/requests.ts";
import { VERSION } from "./version.ts";

export { TooManyWaiters } from "./changes/hub.ts";
export { Clock, type ClockState } from "./clock.ts";
export type { ReloadStats } from "./config/store.ts";
export { EmulatedIssuer } from "./credentials/emulated.ts";
export type { CredentialSpec } from "./credentials/open.ts";
export type { Account, CredentialSource, IdTokenRequest, InstanceIdentity, IssuedToken } from "./credentials/source.ts";
export { StaticSource, type StaticTokens } from "./credentials/static.ts";
export {
  ConfigError,
  CredentialError,
  EditError,
  ListenError,
  MetadataError,
  RequestError,
  UpstreamError,
  type UpstreamKind,
  UsageError,
} from "./errors.ts";
export type { LifecycleEvent, MaintenanceSpec, PreemptionSpec } from "./events/lifecycle.ts";
export { parsePort } from "./address.ts";
export type { TlsFiles } from "./http/listen.ts";
export { type FaultAction, FaultRules, type FaultRuleView, type FaultSpec, parseFaultSpec } from "./http/faults.ts";
export type { GuestAttributeLimits } from "./metadata/guest.ts";
export { createLogger, type Logger, type LoggerLike } from "./log.ts";
export { Snapshot } from "./metadata/snapshot.ts";
export type { MetricsHooks } from "./observability/hooks.ts";
export type { MetricsListenOptions } from "./observability/metrics-server.ts";

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
  /** A config file to read instead of `claims` (read by `start()`). */
  configFile?: string;
  /**
   * Where tokens come from: a source object, static tokens, or a {@link CredentialSpec} opened by `start()`
   * (`{type: "serviceAccountKey", keyFile}`, `{type: "tpm", …}`, …). Default: the emulated issuer.
   */
  credentials?: CredentialSource | StaticTokens | CredentialSpec;
  /**
   * Environment for the Go emulator's variables (GOOGLE_PROJECT_ID, GOOGLE_ACCESS_TOKEN, GOOGLE_APPLICATION_CREDENTIALS,
   * …); the library reads none unless given (pass `process.env` to read the process's).
   */
  env?: Record<string, string | undefined>;
  /** The Go emulator refuses a config without a default service account; off for the library by default. */
  requireDefaultAccount?: boolean;
  /** Accept `X-Google-Metadata-Request: True` in place of Metadata-Flavor (default true). */
  legacyHeader?: boolean;
  /** Where log lines go: a logger from `createLogger`, or any object with `error`, `warn` and `info` (`console`). */
  log?: LoggerLike;
  tokenEvents?: TokenCacheEvents;
  /** Unix seconds for `instance_creation_timestamp` in full ID tokens (default: construction time). */
  instanceCreationTimestamp?: number;
  /** Reload `configFile` whenever it changes on disk (default false; the CLI turns it on). */
  watchConfig?: boolean;
  /** Serve the control API under /emulator/v1/ on the metadata listener (default false); see docs/dynamic.md. */
  controlApi?: boolean;
  /**
   * Serve the control API on a listener of its own instead, `host:port` or `unix:/path` (the metadata listener then
   * answers /emulator/v1/… with 404). Implies the control API.
   */
  controlListen?: string;
  /** Every control request must carry `Authorization: Bearer <token>` (401 otherwise). */
  controlToken?: string;
  /** As `controlToken`, read from this file (its content, trimmed) when the server starts. */
  controlTokenFile?: string;
  /** Largest control-API request body in bytes (default 4 MiB); 413 beyond. */
  maxControlBodyBytes?: number;
  /**
   * Most wait_for_change requests held at once, 503 beyond; 0 means no limit. Default: half the process's open-file
   * limit, at most 10,000 (changes/limit.ts).
   */
  maxWaiters?: number;
  /**
   * Deadline of each upstream call for a token (token endpoint, STS, IAM Credentials, TPM exchange), retries
   * included; past it the request is answered 503 (`-upstreamTimeout`; default 10 s).
   */
  upstreamTimeoutMs?: number;
  /**
   * Another metadata server to serve the tree of (`-upstream`): `http://169.254.169.254` on a VM, or another
   * instance of this server. `configFile` or `claims`, if given, is a partial overlay merged over it key by key.
   * Without `credentials`, token and identity requests go through to it. See docs/upstream.md.
   */
  upstream?: string;
  /** A callers file (`-callers`): a view of the tree, and accounts, per caller address. See docs/callers.md. */
  callersFile?: string;
  /** A callers document, instead of `callersFile` (`{"callers":[…],"unmatched":"allow"}`). */
  callers?: object;
  /**
   * Lifetime of the tokens this server mints itself (emulated issuer, the countdown of static tokens): a Go duration
   * (`"2m"`) or milliseconds; default one hour. The cache's margins scale with it (refresh 5/60 of it ahead, never
   * hand out less than 4/60), so `"2m"` behaves like the real hour, compressed. Whole seconds, at least 1 s.
   */
  tokenLifetime?: string | number;
  /** Fault-injection rules in force from the start (`-fault`); more can be added with `server.faults.add`. */
  faults?: FaultSpec[];
  /** Bounds on guest-attribute writes (defaults: 256 KiB a value, 1,000 keys a namespace, 100 namespaces, 16 MiB). */
  guestAttributeLimits?: Partial<GuestAttributeLimits>;
}

/** The longest `upstreamTimeoutMs`: a token request's connection is kept open this long plus a margin. */
const MAX_UPSTREAM_TIMEOUT_MS = 240_000;

/** Credential types whose tokens are made here: the control API may add accounts only then. */
const LOCAL_TYPES = new Set(["emulated", "static", "static+emulated"]);
const BODY_SLACK = 1 << 20;

/** A source that is opened by start(): until then, token requests say so. */
function unopened(spec: CredentialSpec): CredentialSource {
  const refuse = () =>
    Promise.reject(new CredentialError("NOT_STARTED", `the ${spec.type} credentials are opened by start(): start the server first`));
  return { describe: () => ({ type: spec.type }), accessToken: refuse, idToken: refuse };
}

export class MetadataServer {
  readonly state: ServingState;
  /** The served metadata and its edits (set, merge, delete, whole configs). */
  readonly store: ConfigStore;
  /** Hanging GETs, woken by every swap. */
  readonly changes: ChangeHub;
  /** Simulated maintenance and preemption events. */
  readonly lifecycle: Lifecycle;
  /** The server's clock: real time plus an offset (`advance("58m")`, `set(date)`, `reset()`, `now()`). */
  readonly clock: Clock;
  /** Fault-injection rules (`add({...})`, `list()`, `remove(id)`, `clear()`); see http/faults.ts. */
  readonly faults: FaultRules;
  private server: Server<unknown> | undefined;
  /** Made by start() when `serverConfig.metrics` is set: prom-client loads only then. */
  private metricsRecorder: Metrics | undefined;
  private metricsServer: Server<unknown> | undefined;
  private readonly options: MetadataServerOptions;
  private readonly env: Environment;
  private readonly log: Logger;
  private readonly staticTokens: StaticTokens;
  private readonly tokenEvents: TokenCacheEvents | undefined;
  private readonly upstreamTimeoutMs: number;
  private readonly tokenLifetime: number;
  /** A credential spec still to be opened by start(). */
  private pending: CredentialSpec | undefined;
  private watcher: ConfigWatcher | undefined;
  /** `-upstream`: the other server's base URL, and the watch that keeps its tree fresh once started. */
  private readonly upstreamUrl: string | undefined;
  private upstreamWatch: UpstreamWatch | undefined;
  /** `-callers`: the per-caller views, once loaded, and the watcher of their file. */
  private callers: Callers | undefined;
  private callersWatcher: ConfigWatcher | undefined;
  private callersText: string | undefined;
  private readonly createdAt: number;
  private controlServer: Server<unknown> | undefined;
  private readonly controlAddress: ReturnType<typeof parseListenAddress> | undefined;
  private readonly guestLimits: GuestAttributeLimits;

  constructor(options: MetadataServerOptions = {}) {
    this.options = options;
    this.env = readEnvironment(options.env ?? {});
    this.log = options.log ? asLogger(options.log) : silentLogger;
    const sc = options.serverConfig ?? {};
    if (sc.domainSocket && sc.tls) {
      throw new UsageError(
        "USAGE",
        "a unix socket (-domainsocket) and mTLS (-usemTLS) cannot be combined: the Go emulator serves plain HTTP on the socket; choose one",
      );
    }
    this.upstreamUrl = options.upstream === undefined ? undefined : metadataBaseUrl(options.upstream, "the upstream metadata server");
    this.createdAt = options.instanceCreationTimestamp ?? Math.floor(Date.now() / 1000);
    this.controlAddress = options.controlListen ? parseListenAddress(options.controlListen, "controlListen") : undefined;
    this.guestLimits = { ...DEFAULT_GUEST_LIMITS, ...options.guestAttributeLimits };
    for (const [name, v] of [
      ...Object.entries(this.guestLimits).map(([k, v]) => [`guestAttributeLimits.${k}`, v] as const),
      ["maxControlBodyBytes", options.maxControlBodyBytes ?? 1],
    ] as const) {
      if (!Number.isSafeInteger(v) || v < 1) throw new UsageError("USAGE", `${name} must be a positive integer, found ${v}`);
    }
    const upstreamTimeoutMs = options.upstreamTimeoutMs ?? DEFAULT_UPSTREAM_TIMEOUT_MS;
    if (!(upstreamTimeoutMs > 0 && upstreamTimeoutMs <= MAX_UPSTREAM_TIMEOUT_MS)) {
      throw new UsageError("BAD_DURATION", `upstreamTimeoutMs must be more than 0 and at most ${MAX_UPSTREAM_TIMEOUT_MS} (4 minutes)`);
    }
    this.upstreamTimeoutMs = upstreamTimeoutMs;
    // One line per failed upstream call, however many requests waited on it; never a token (the logger redacts).
    const failureLog: TokenCacheEvents = {
      failed: (kind, e, seconds, source) => {
        const up = e instanceof UpstreamError ? e : undefined;
        this.log.error(`${kind === "access" ? "an access token" : "an identity token"} failed`, {
          source,
          ...(up ? { upstream: up.upstream, host: up.host || undefined, kind: up.kind, attempts: up.attempts } : {}),
          seconds: Number(seconds.toFixed(3)),
          error: e instanceof Error ? e.message : String(e),
        });
      },
    };
    const toMetrics = sc.metrics ? lateEvents(() => this.metricsRecorder?.tokenEvents) : undefined;
    this.tokenEvents = fanOut(fanOut(options.tokenEvents, toMetrics), failureLog);
    this.clock = new Clock();
    this.tokenLifetime = tokenLifetimeMs(options.tokenLifetime);

    // Static tokens: the environment's, then the library's own (which win), laid over the source once.
    // With an upstream and no credentials of its own, the upstream's token endpoints are the source.
    const c: MetadataServerOptions["credentials"] =
      options.credentials ?? (this.upstreamUrl ? { type: "upstream", url: this.upstreamUrl } : undefined);
    const given = c && !isCredentialSpec(c) && typeof (c as CredentialSource).accessToken !== "function" ? (c as StaticTokens) : {};
    this.staticTokens = {
      now: this.clock.now,
      lifetimeSeconds: this.tokenLifetime / 1000,
      ...given,
      accessToken: given.accessToken ?? this.env.accessToken,
      idToken: given.idToken ?? this.env.idToken,
    };
    let base: CredentialSource;
    if (c && isCredentialSpec(c)) {
      this.pending = c;
      base = unopened(c);
    } else if (c && typeof (c as CredentialSource).accessToken === "function") {
      base = c as CredentialSource;
    } else {
      base = new EmulatedIssuer({ now: this.clock.now, lifetimeSeconds: this.tokenLifetime / 1000 });
    }

    // Without a given cap, the first wait derives one from the open-file limit (changes/limit.ts).
    this.changes = new ChangeHub({ maxWaiters: options.maxWaiters ?? (() => defaultMaxWaiters(openFileLimit())) });
    this.store = new ConfigStore({
      claims: {
        overrides: this.env,
        requireDefaultAccount: options.requireDefaultAccount ?? false,
        ...(options.configFile ? { source: options.configFile } : {}),
      },
      instanceCreationTimestamp: this.createdAt,
      onSwap: (next, previous) => this.swapped(next, previous),
      onReload: (ok) => (ok ? this.metrics.reloads.succeeded() : this.metrics.reloads.failed()),
      log: this.log,
    });
    this.state = {
      snapshot: undefined as unknown as Snapshot,
      tokens: this.tokenCache(base),
      log: this.log,
      legacyHeader: options.legacyHeader ?? true,
      scheme: sc.tls ? "https" : "http",
      waits: this.changes,
      metrics: this.metrics,
      now: this.clock.now,
      faults: undefined,
    };
    this.state.writes = createGuestWrites(this.store, this.guestLimits);
    const faults = new FaultRules({ onChange: (active) => (this.state.faults = active ? faults.apply : undefined), log: this.log });
    this.faults = faults;
    for (const f of options.faults ?? []) faults.add(f);
    this.lifecycle = new Lifecycle({
      tree: () => this.store.current.tree,
      edit: (fn) => {
        try {
          this.store.editTree(fn);
        } catch (e) {
          this.log.error("simulated event could not be applied", { error: e });
        }
      },
      log: this.log,
      now: this.clock.now,
    });
    this.clock.onChange((movedBy) => {
      const { now, offsetSeconds } = this.clock.state();
      this.log.info("virtual clock moved", { now, offsetSeconds });
      this.lifecycle.retime();
      // Tokens minted in the clock's future would show more than their lifetime: mint again on the new time.
      if (movedBy < 0) this.state.tokens.clear();
    });
    // Without a file the config is known now, so a library user can read and edit it before start().
    // (With an upstream, it is known once start() has read the upstream's tree.)
    if (options.configFile === undefined && this.upstreamUrl === undefined) {
      this.store.loadDocument(options.claims ?? (parseConfigText(DEFAULT_CONFIG_TEXT, "default config") as object));
    }
  }

  private tokenCache(base: CredentialSource): TokenCache {
    return new TokenCache(overlayStatic(this.staticTokens, base), {
      deadlineMs: this.upstreamTimeoutMs,
      now: this.clock.now,
      ...refreshMargins(this.tokenLifetime),
      ...(this.tokenEvents ? { events: this.tokenEvents } : {}),
    });
  }

  /** Every new snapshot: the handler serves it, waiters whose watched ETag changed wake. */
  private swapped(next: Snapshot, previous: Snapshot | undefined): void {
    this.state.snapshot = next;
    // Full ID tokens carry instance and project facts: drop the ones minted from facts that changed.
    if (previous && JSON.stringify(previous.identity) !== JSON.stringify(next.identity)) this.state.tokens.clear("identity");
    this.changes.publish(next);
    this.callers?.rebuild(next);
    this.metricsRecorder?.serviceAccount(this.defaultEmail());
  }

  /** The snapshot being served. */
  get snapshot(): Snapshot {
    return this.store.current;
  }

  /** Why the control API may not create or rename accounts now: the tokens come from real credentials. */
  accountChangesRefused(): string | undefined {
    const type = this.state.tokens.source.describe().type;
    return LOCAL_TYPES.has(type) ? undefined : `the server mints tokens with real credentials (${type})`;
  }

  /** Outcome counters of config-file reloads. */
  get reloadStats(): ReloadStats {
    return this.store.reloadStats;
  }

  /** Where wait_for_change and reload code report (no-ops when metrics are off); see observability/metrics.ts. */
  get metrics(): MetricsHooks {
    return this.metricsRecorder ?? NO_METRICS;
  }

  private defaultEmail(): string | undefined {
    return this.store.snapshot?.accounts.get("default")?.email ?? this.state.tokens.source.describe().email;
  }

  /** Why the server is not ready (for /readyz), or undefined. */
  private notReady(): string | undefined {
    if (!this.store.snapshot) return "no config snapshot loaded yet";
    if (!this.server) return "the metadata listener is not up";
    return undefined;
  }

  // The edit API, kept on the server for library users; the store does the work.

  /** The value at a metadata path (`instance/attributes/foo`) as config JSON text, or undefined. */
  getJson(path: string): string | undefined {
    return this.store.getJson(path);
  }

  /** The value at a metadata path in the config file's naming (numbers beyond 2^53 lose digits: use getJson). */
  get(path: string): unknown {
    return this.store.get(path);
  }

  /** Set a value (`set("instance/attributes/foo", "bar")`); throws EditError (shape, fixed keys, missing parent). */
  set(path: string, value: unknown): void {
    this.store.set(path, value);
  }

  /** JSON merge patch (RFC 7396) at a path: objects merge, `null` deletes a key. Throws EditError. */
  merge(path: string, patch: unknown): void {
    this.store.merge(path, patch);
  }

  /** Delete an attribute (or any key of a free-form directory) or a list position. Throws EditError. */
  delete(path: string): void {
    this.store.delete(path);
  }

  /** The whole current config document, `{"computeMetadata":{"v1":{…}}}`. */
  configDocument(): string {
    return this.store.configDocument();
  }

  /** Swap in a new config document; throws ConfigError and keeps the current one. Waiters on changed nodes wake. */
  replaceClaims(claims: object): void {
    this.store.replaceClaims(claims);
  }

  /** Apply config-file text as the watcher does: a valid file goes live, an invalid one is logged and counted. */
  applyConfigText(text: string): boolean {
    return this.store.applyConfigText(text, this.options.configFile ?? "config");
  }

  /**
   * Apply callers-file text as its watcher does: a valid file goes live (every caller compiled), an invalid one is
   * logged in one line and the callers in force stay. False also when the server runs without callers.
   */
  async applyCallersText(text: string): Promise<boolean> {
    const callers = this.callers;
    const file = this.options.callersFile ?? "callers";
    if (!callers) return false;
    try {
      const { parseCallersText } = await import("./config/callers.ts");
      callers.install(parseCallersText(text, file), this.store.current);
    } catch (e) {
      this.log.error(`callers reload failed, still serving the last good callers: ${(e as Error).message}`);
      return false;
    }
    this.callersText = text;
    // Full ID tokens carry the caller's instance facts, which may have changed.
    this.state.tokens.clear("identity");
    this.log.info("callers reloaded", { file, callers: callers.names.join(",") });
    return true;
  }

  /** The callers in force (`-callers`), by name; empty without callers. */
  get callerNames(): string[] {
    return this.callers?.names ?? [];
  }

  /** Schedule a simulated host maintenance event (see events/lifecycle.ts). */
  simulateMaintenance(spec: MaintenanceSpec): LifecycleEvent {
    return this.lifecycle.scheduleMaintenance(spec);
  }

  /** Schedule a simulated preemption. */
  simulatePreemption(spec: PreemptionSpec): LifecycleEvent {
    return this.lifecycle.schedulePreemption(spec);
  }

  /**
   * Start: read the config file, open the credentials, bind the listeners, in that order, so the first thing the
   * operator gave that is wrong is the one error (ConfigError, CredentialError, UsageError, TpmError, ListenError).
   * Resolves with the bound address; port 0 reports the port picked. Lines about the credentials are logged once
   * the server is up.
   */
  async start(): Promise<{ url: string; host: string; port: number; socketPath?: string }> {
    if (this.server) return this.address();
    const sc = this.options.serverConfig ?? {};
    const notes: Note[] = [];
    let opened: CredentialSource | undefined;
    try {
      if (sc.metrics && !this.metricsRecorder) {
        const { Metrics } = await import("./observability/metrics.ts");
        const m = new Metrics({ version: VERSION });
        m.faultHits(() => this.faults.list());
        this.metricsRecorder = m;
        this.state.metrics = m;
      }
      const recorder = this.metricsRecorder;
      // Metrics first, so /readyz answers (not ready) while the config loads and the credentials open.
      if (recorder && !this.metricsServer) this.metricsServer = serveMetrics(recorder, sc.metrics!, () => this.notReady());
      if (this.upstreamUrl && !this.upstreamWatch) await this.readUpstream(this.upstreamUrl);
      if (!this.store.snapshot) {
        if (this.options.configFile) await this.store.loadFile(this.options.configFile);
        else this.store.loadDocument(this.options.claims ?? { computeMetadata: { v1: {} } });
      }
      if ((this.options.callersFile || this.options.callers) && !this.callers) await this.loadCallers();
      this.callers?.reopen();
      // Every file the operator gave is checked before the credentials open (a TPM is slow to open and to close).
      const tls = sc.tls ? await loadTls(sc.tls) : undefined;
      const control = await this.controlOptions(notes);
      if (this.pending) {
        const spec = this.pending;
        const quiet = !!(this.staticTokens.accessToken && this.staticTokens.idToken);
        const r = await openSource(spec, {
          env: this.env,
          quiet,
          timeoutMs: this.upstreamTimeoutMs,
          defaultEmail: () => this.requireDefaultEmail(spec),
          now: this.clock.now,
          tokenLifetimeMs: this.tokenLifetime,
        });
        opened = r.source;
        notes.push(...r.notes);
        this.state.tokens = this.tokenCache(opened);
        this.pending = undefined;
      }
      if (this.staticTokens.accessToken || this.staticTokens.idToken) {
        notes.push({ level: "info", message: "serving static tokens from GOOGLE_ACCESS_TOKEN / GOOGLE_ID_TOKEN" });
      }
      if (tls?.testCa) {
        notes.push({
          level: "warn",
          message: `-usemTLS trusts a test CA from this repository (${sc.tls!.rootCA}, the Go emulator's default): its private key is public, so anyone can make a client certificate it accepts; pass -rootCAmTLS with your own CA`,
        });
      }
      recorder?.describeCredentials(this.state.tokens.source.describe(), this.defaultEmail());
      this.changes.reopen();
      if (this.options.watchConfig && this.options.configFile && !this.watcher) {
        const { ConfigWatcher } = await import("./config/watch.ts");
        const file = this.options.configFile;
        this.watcher = new ConfigWatcher(file, (text) => void this.store.applyConfigText(text, file), {
          onError: (e) => this.log.warn("config file not readable; keeping the current config", { error: e.message }),
        });
        await this.watcher.start(this.store.configText);
      }
      const callersFile = this.options.callersFile;
      if (this.options.watchConfig && callersFile && this.callers && !this.callersWatcher) {
        const { ConfigWatcher } = await import("./config/watch.ts");
        this.callersWatcher = new ConfigWatcher(callersFile, (text) => this.applyCallersText(text).then(() => {}), {
          onError: (e) => this.log.warn("callers file not readable; keeping the current callers", { error: e.message }),
        });
        await this.callersWatcher.start(this.callersText);
      }
      const state = this.state;
      const sameListener = control && !this.controlAddress ? control : undefined;
      // Observation wraps the handler only when metrics or per-request logs are on; otherwise nothing is added.
      const fetch = instrument(createFetch(state, sameListener ? { control: sameListener } : {}), {
        // A caller's own account paths are labelled from its own snapshot.
        snapshot: (req, server) => (state.callers?.select(req, server) ?? state).snapshot,
        metrics: recorder,
        log: state.log,
        routeBeside: routeMatcher(APP_ROUTES),
      });
      const target: ListenTarget = {
        hostname: sc.bindInterface ?? "127.0.0.1",
        port: parsePort(sc.port),
        ...(sc.domainSocket ? { domainSocket: sc.domainSocket } : {}),
        ...(sc.domainSocketMode !== undefined ? { domainSocketMode: sc.domainSocketMode } : {}),
        ...(tls ? { tls } : {}),
        maxRequestBodySize: Math.max(this.guestLimits.maxValueBytes, sameListener?.maxBodyBytes ?? 0) + BODY_SLACK,
      };
      this.server = await listen(fetch, target);
      state.host = sc.domainSocket ? "metadata.google.internal" : this.address().host;
      if (control && this.controlAddress) this.controlServer = await this.listenControl(control, this.controlAddress);
      this.upstreamWatch?.start();
    } catch (e) {
      this.watcher?.close();
      this.watcher = undefined;
      this.callersWatcher?.close();
      this.callersWatcher = undefined;
      await this.upstreamWatch?.close();
      this.upstreamWatch = undefined;
      await this.server?.stop(true);
      this.server = undefined;
      await this.metricsServer?.stop(true);
      this.metricsServer = undefined;
      await opened?.close?.(); // release a TPM key and its sessions
      throw e;
    }
    for (const n of notes) this.log[n.level](n.message, n.fields);
    return this.address();
  }

  /** `-upstream`: read the other server's tree (a ConfigError when it cannot be read), and prepare its watch. */
  private async readUpstream(url: string): Promise<void> {
    const { readUpstreamTree, UpstreamWatch } = await import("./config/upstream.ts");
    const first = await readUpstreamTree(url);
    this.store.setUpstream(first.v1);
    this.upstreamWatch = new UpstreamWatch(url, first, { log: this.log, onChange: (v1) => this.store.setUpstream(v1) });
  }

  /** `-callers`: read and compile the callers over the served snapshot; a ConfigError names the file's first problem. */
  private async loadCallers(): Promise<void> {
    const [{ Callers }, { readCallersFile, callersFromDocument }] = await Promise.all([
      import("./http/callers.ts"),
      import("./config/callers.ts"),
    ]);
    const callers = new Callers({
      base: this.state,
      maxWaiters: this.changes.maxWaiters,
      instanceCreationTimestamp: this.createdAt,
      log: this.log,
    });
    const file = this.options.callersFile;
    if (file) {
      const { text, spec } = await readCallersFile(file);
      callers.install(spec, this.store.current);
      this.callersText = text;
    } else {
      callers.install(callersFromDocument(fromPlain(this.options.callers), "callers"), this.store.current);
    }
    this.callers = callers;
    this.state.callers = callers;
  }

  /** The control API's options, its token read from its file; undefined when the control API is off. */
  private async controlOptions(notes: Note[]): Promise<ControlOptions | undefined> {
    const o = this.options;
    if (!o.controlApi && !o.controlListen) return undefined;
    let token = o.controlToken;
    if (o.controlTokenFile) {
      const file = o.controlTokenFile;
      let text: string;
      try {
        text = await Bun.file(file).text();
      } catch (e) {
        throw new ListenError("CONTROL_TOKEN", `cannot read the control token file (-controlTokenFile) ${file}: ${unreadableReason(e)}`, {
          cause: e,
        });
      }
      token = text.trim();
      if (!token)
        throw new ListenError(
          "CONTROL_TOKEN",
          `the control token file (-controlTokenFile) ${file} is empty; put a long random secret in it`,
        );
      const mode = (await Bun.file(file).stat()).mode;
      if (mode & 0o077) {
        notes.push({
          level: "warn",
          message: `the control token file ${file} is readable by other users (mode ${(mode & 0o777).toString(8)}); chmod 600 it`,
        });
      }
    }
    if (token !== undefined && token.trim() === "") throw new UsageError("USAGE", "controlToken is empty; give a long random secret");
    return {
      target: this,
      ...(token !== undefined ? { token: token.trim() } : {}),
      maxBodyBytes: o.maxControlBodyBytes ?? DEFAULT_CONTROL_BODY_BYTES,
    };
  }

  /** The control API's own listener (`controlListen`): TCP or a unix socket only its owner may use. */
  private async listenControl(control: ControlOptions, at: NonNullable<typeof this.controlAddress>): Promise<Server<unknown>> {
    const fetch = createControlFetch(this.state, control);
    const maxRequestBodySize = control.maxBodyBytes + BODY_SLACK;
    try {
      if ("unix" in at)
        return await listen(fetch, { hostname: "", port: 0, domainSocket: at.unix, domainSocketMode: 0o600, maxRequestBodySize });
      return await listen(fetch, { hostname: at.hostname, port: at.port, maxRequestBodySize });
    } catch (e) {
      if (e instanceof ListenError) throw e;
      const where = "unix" in at ? at.unix : `${at.hostname}:${at.port}`;
      throw new ListenError("LISTEN", `cannot listen on ${where} (-controlListen): ${(e as Error).message.replace(/, listen$/, "")}`, {
        cause: e,
      });
    }
  }

  /** Base URL of the control listener (`http://127.0.0.1:8081`, `http+unix://…`), when it has its own and is up. */
  get controlUrl(): string | undefined {
    const c = this.controlServer;
    const at = this.controlAddress;
    if (!c || !at) return undefined;
    if ("unix" in at) return `http+unix://${encodeURIComponent(at.unix)}`;
    const h = c.hostname ?? at.hostname;
    return `http://${h.includes(":") ? `[${h}]` : h}:${c.port}`;
  }

  private requireDefaultEmail(spec: CredentialSpec): string {
    const email = this.store.current.accounts.get("default")?.email;
    if (!email) {
      throw new ConfigError(
        "CONFIG_NO_DEFAULT_ACCOUNT",
        `${this.options.configFile ?? "config"}: computeMetadata.v1.instance.serviceAccounts.default: missing; ${spec.type} credentials belong to the default service account`,
      );
    }
    return email;
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
    if (this.options.serverConfig?.domainSocket) {
      throw new UsageError(
        "USAGE",
        "client libraries cannot reach a unix socket through GCE_METADATA_HOST; connect to the socket directly",
      );
    }
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
    this.callersWatcher?.close();
    this.callersWatcher = undefined;
    await this.upstreamWatch?.close();
    this.upstreamWatch = undefined;
    this.lifecycle.close();
    this.callers?.close();
    this.faults.close();
    // Hanging requests answer with the current content; give them a moment to be written before closing sockets.
    this.changes.close();
    if (s) {
      await Promise.race([s.stop(false), Bun.sleep(1000)]);
      await s.stop(true);
    }
    const c = this.controlServer;
    this.controlServer = undefined;
    if (c) await c.stop(true);
    const m = this.metricsServer;
    this.metricsServer = undefined;
    if (m) await m.stop(true);
    await this.state.tokens.source.close?.();
  }
}
