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
import { claimsFromDocument, loadClaims, parseConfigText } from "./config/claims.ts";
import { Snapshot } from "./metadata/snapshot.ts";
import type { Tree } from "./metadata/tree.ts";
import { TokenCache, type TokenCacheEvents } from "./credentials/token-cache.ts";
import type { CredentialSource } from "./credentials/source.ts";
import { EmulatedIssuer } from "./credentials/emulated.ts";
import { overlayStatic, type StaticTokens } from "./credentials/static.ts";
import { createApp } from "./http/app.ts";
import type { ServingState, WaitService } from "./http/handler.ts";
import { silentLogger, type Logger } from "./observability/log.ts";
import { Metrics, NO_METRICS, fanOut, type MetricsHooks } from "./observability/metrics.ts";
import { serveMetrics, type MetricsListenOptions } from "./observability/metrics-server.ts";
import { elysiaWrapper } from "./observability/requests.ts";
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
}

function isSource(c: CredentialSource | StaticTokens): c is CredentialSource {
  return typeof (c as CredentialSource).accessToken === "function";
}

/** Parse the Go emulator's ":8080" or a number. */
export function parsePort(port: number | string | undefined): number {
  if (port === undefined) return 8080;
  const n = typeof port === "number" ? port : Number(port.startsWith(":") ? port.slice(1) : port);
  if (!Number.isInteger(n) || n < 0 || n > 65535) throw new RangeError(`invalid port ${JSON.stringify(port)}: use :8080, 8080 or 0`);
  return n;
}

/** Exact paths the app serves beside the metadata tree, labelled as themselves in metrics. */
const APP_ROUTES = ["/.well-known/openid-configuration", "/oauth2/v3/certs"];

export class MetadataServer {
  readonly state: ServingState;
  private server: Server<unknown> | undefined;
  private readonly metricsRecorder: Metrics | undefined;
  private metricsServer: Server<unknown> | undefined;
  private readonly options: MetadataServerOptions;
  private readonly createdAt = Math.floor(Date.now() / 1000);

  constructor(options: MetadataServerOptions = {}) {
    this.options = options;
    const env = options.env ?? {};
    const sc = options.serverConfig ?? {};
    if (sc.domainSocket && sc.tls) {
      throw new UsageError("USAGE", "a unix socket (-domainsocket) and mTLS (-usemTLS) cannot be combined: the Go emulator serves plain HTTP on the socket; choose one");
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
    this.state = {
      snapshot: tree ? this.compile(tree) : (undefined as unknown as Snapshot),
      tokens: new TokenCache(source, events ? { events } : {}),
      log: options.log ?? silentLogger,
      legacyHeader: options.legacyHeader ?? true,
      scheme: sc.tls ? "https" : "http",
      metrics: this.metricsRecorder ?? NO_METRICS,
    };
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
    let next: Snapshot;
    try {
      next = this.compile(claimsFromDocument(claims, this.claimsOptions()));
    } catch (e) {
      this.metrics.reloads.failed();
      throw e;
    }
    this.swap(next);
    this.metrics.reloads.succeeded();
  }

  protected swap(next: Snapshot): void {
    this.state.snapshot = next;
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

  set waits(w: WaitService | undefined) {
    this.state.waits = w;
  }

  /** Start listening. Resolves with the bound address; port 0 reports the port picked. */
  async start(): Promise<{ url: string; host: string; port: number; socketPath?: string }> {
    if (this.server) return this.address();
    const sc = this.options.serverConfig ?? {};
    const recorder = this.metricsRecorder;
    // Metrics first, so /readyz answers (not ready) while the config loads.
    if (recorder && !this.metricsServer) this.metricsServer = serveMetrics(recorder, sc.metrics!, () => this.notReady());
    try {
      if (!this.state.snapshot) this.state.snapshot = this.compile(await loadClaims(this.options.configFile!, this.claimsOptions()));
      recorder?.describeCredentials(this.state.tokens.source.describe(), this.defaultEmail());
      const app = createApp(this.state);
      if (recorder || this.state.log.enabled("debug")) {
        const state = this.state;
        const wrapper = elysiaWrapper({ snapshot: () => state.snapshot, metrics: recorder, log: state.log, routes: APP_ROUTES });
        app.wrap(((fetch: (r: Request) => Response | Promise<Response>) => wrapper(fetch)) as never);
      }
      this.server = await listen(app, {
        hostname: sc.bindInterface ?? "127.0.0.1",
        port: parsePort(sc.port),
        domainSocket: sc.domainSocket,
        domainSocketMode: sc.domainSocketMode,
        tls: sc.tls,
      });
    } catch (e) {
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
    if (this.options.serverConfig?.domainSocket) throw new UsageError("USAGE", "client libraries cannot reach a unix socket through GCE_METADATA_HOST; connect to the socket directly");
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
    if (s) await s.stop(true);
    const m = this.metricsServer;
    this.metricsServer = undefined;
    if (m) await m.stop(true);
    await this.state.tokens.source.close?.();
  }
}
