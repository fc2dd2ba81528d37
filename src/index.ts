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
import { createFetch } from "./http/app.ts";
import type { ServingState, WaitService } from "./http/handler.ts";
import { silentLogger, type Logger } from "./observability/log.ts";
import defaultConfigText from "../config.json" with { type: "text" };

export { ConfigError, CredentialError, MetadataError, UsageError } from "./errors.ts";
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

export class MetadataServer {
  readonly state: ServingState;
  private server: Server<unknown> | undefined;
  private readonly options: MetadataServerOptions;
  private readonly createdAt = Math.floor(Date.now() / 1000);

  constructor(options: MetadataServerOptions = {}) {
    this.options = options;
    const env = options.env ?? {};
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
      tokens: new TokenCache(source, options.tokenEvents ? { events: options.tokenEvents } : {}),
      log: options.log ?? silentLogger,
      legacyHeader: options.legacyHeader ?? true,
      scheme: "http",
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
    this.swap(this.compile(claimsFromDocument(claims, this.claimsOptions())));
  }

  protected swap(next: Snapshot): void {
    this.state.snapshot = next;
  }

  set waits(w: WaitService | undefined) {
    this.state.waits = w;
  }

  /** Start listening. Resolves with the bound address; port 0 reports the port picked. */
  async start(): Promise<{ url: string; host: string; port: number }> {
    if (this.server) return this.address();
    if (!this.state.snapshot) this.state.snapshot = this.compile(await loadClaims(this.options.configFile!, this.claimsOptions()));
    const hostname = this.options.serverConfig?.bindInterface ?? "127.0.0.1";
    const port = parsePort(this.options.serverConfig?.port);
    // No SO_REUSEPORT: a second server on a taken port must fail, not share it.
    this.server = Bun.serve({ hostname, port, reusePort: false, development: false, fetch: createFetch(this.state) });
    return this.address();
  }

  private address(): { url: string; host: string; port: number } {
    const s = this.server!;
    const hostname = s.hostname ?? "127.0.0.1";
    const host = hostname.includes(":") ? `[${hostname}]:${s.port}` : `${hostname}:${s.port}`;
    return { url: `http://${host}`, host, port: s.port ?? 0 };
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
    await this.state.tokens.source.close?.();
  }
}
