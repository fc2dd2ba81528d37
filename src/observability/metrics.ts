/**
 * Prometheus metrics, one private prom-client Registry per server. Metric names follow the Go emulator
 * (`metadata_endpoint_latency_seconds`, `metadata_endpoint_path_requests`, `metadata_server_version`,
 * `service_account_name`, `credential_type`, `service_account_hash`); this server adds token-cache, wait and
 * reload series. The `path` label is always a route template (see metadata/template.ts), never the raw request
 * path, so clients cannot grow the label set; `code` is the status text (`OK`, `Not Found`), as in the Go emulator.
 * The two per-request series count into plain numbers per route (no label hashing on the request path) and are
 * handed to prom-client's Registry as metric objects, which formats them with everything else at scrape time.
 *
 * Other code reports through {@link MetricsHooks}; with metrics off it gets {@link NO_METRICS}, whose calls do nothing.
 *
 * @example
 * const metrics = new Metrics({ version: "1.2.3" });
 * metrics.route("/computeMetadata/v1/instance/id").record(200, 0.0001);
 * metrics.waiting.inc(); // a wait_for_change request starts hanging
 * await metrics.text();  // Prometheus text exposition
 */
import type * as PromClient from "prom-client";
import type { Counter, Gauge, Registry } from "prom-client";
import type { TokenCacheEvents } from "../credentials/token-cache.ts";
import type { SourceDescription } from "../credentials/source.ts";
import { UpstreamError, type UpstreamKind } from "../errors.ts";
import type { MetricsHooks } from "./hooks.ts";

/** `source` label values of upstream failures: the credential modes; anything else is `other`. */
const SOURCE_LABELS = new Set(["emulated", "static", "serviceAccountKey", "impersonated", "federated", "tpm"]);

/** The fixed labels of a failed call to a credential source: its mode, and how it failed (`other`: not an upstream call, e.g. a TPM signature). */
export function failureLabels(source: string, error: unknown): { source: string; kind: UpstreamKind | "other" } {
  const base = source.startsWith("static+") ? source.slice("static+".length) : source;
  return { source: SOURCE_LABELS.has(base) ? base : "other", kind: error instanceof UpstreamError ? error.kind : "other" };
}

/** Go's prometheus.DefBuckets, with sub-millisecond buckets in front: most answers here take microseconds. */
export const LATENCY_BUCKETS = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];
const UPSTREAM_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];

/** Go's http.StatusText for the codes this server sends; others as their number. */
const STATUS_TEXT: Record<number, string> = {
  200: "OK",
  301: "Moved Permanently",
  304: "Not Modified",
  400: "Bad Request",
  403: "Forbidden",
  404: "Not Found",
  405: "Method Not Allowed",
  429: "Too Many Requests",
  500: "Internal Server Error",
  503: "Service Unavailable",
};

export function statusText(status: number): string {
  return STATUS_TEXT[status] ?? String(status);
}

type Kind = "access" | "identity";

/**
 * Latency and status counts of one route template as plain numbers: a request costs a few comparisons and
 * additions, no label hashing. prom-client formats them at scrape time (see {@link RouteSeries}).
 */
export class RouteInstruments {
  /** Non-cumulative counts per latency bucket; the last slot is +Inf. */
  readonly buckets: Float64Array;
  sum = 0;
  count = 0;
  /** Requests per HTTP status. */
  readonly statuses = new Map<number, number>();
  constructor(
    readonly template: string,
    private readonly upper: readonly number[],
  ) {
    this.buckets = new Float64Array(upper.length + 1);
  }

  record(status: number, seconds: number): void {
    const upper = this.upper;
    let i = 0;
    while (i < upper.length && seconds > upper[i]!) i++;
    this.buckets[i]!++;
    this.sum += seconds;
    this.count++;
    this.statuses.set(status, (this.statuses.get(status) ?? 0) + 1);
  }
}

interface MetricValue {
  labels: Record<string, string | number>;
  value: number;
  metricName?: string;
}

/**
 * The per-route series as prom-client metric objects: registered in the Registry like any Counter or Histogram, so
 * HELP, TYPE, escaping and the exposition format are prom-client's; only the counting happens in RouteInstruments.
 */
class RouteSeries {
  readonly aggregator = "sum";
  constructor(
    readonly name: string,
    readonly help: string,
    readonly type: "histogram" | "counter",
    private readonly routes: Map<string, RouteInstruments>,
    private readonly upper: readonly number[],
  ) {}

  async get(): Promise<{ name: string; help: string; type: string; values: MetricValue[]; aggregator: string }> {
    const values: MetricValue[] = [];
    for (const r of this.routes.values()) {
      if (this.type === "counter") {
        for (const [status, n] of r.statuses) values.push({ labels: { code: statusText(status), path: r.template }, value: n });
        continue;
      }
      if (r.count === 0) continue;
      let acc = 0;
      const bucket = `${this.name}_bucket`;
      for (let i = 0; i < this.upper.length; i++) {
        acc += r.buckets[i]!;
        values.push({ labels: { path: r.template, le: this.upper[i]! }, value: acc, metricName: bucket });
      }
      values.push({ labels: { path: r.template, le: "+Inf" }, value: r.count, metricName: bucket });
      values.push({ labels: { path: r.template }, value: r.sum, metricName: `${this.name}_sum` });
      values.push({ labels: { path: r.template }, value: r.count, metricName: `${this.name}_count` });
    }
    return { name: this.name, help: this.help, type: this.type, values, aggregator: this.aggregator };
  }

  reset(): void {
    for (const r of this.routes.values()) {
      r.buckets.fill(0);
      r.sum = 0;
      r.count = 0;
      r.statuses.clear();
    }
  }
}

export interface MetricsOptions {
  /** Reported as `metadata_server_version{version}`. */
  version: string;
}

/**
 * prom-client, loaded when the first Metrics is made. This module itself is reached only through a dynamic import
 * when metrics are on (MetadataServer.start), which keeps both off the start-up path of a server without them.
 */
let prom: typeof PromClient | undefined;
const promClient = (): typeof PromClient => (prom ??= require("prom-client") as typeof PromClient);

export class Metrics implements MetricsHooks {
  /** Private to this server, so many servers (tests) can run in one process. */
  readonly registry: Registry;
  readonly waiting: { inc(): void; dec(): void };
  readonly reloads: { succeeded(): void; failed(): void };
  /** Give to the TokenCache (`new TokenCache(source, { events })`). */
  readonly tokenEvents: TokenCacheEvents;

  private readonly routes = new Map<string, RouteInstruments>();
  private readonly email: Gauge<"email">;
  private readonly credentialType: Gauge<"type">;
  private readonly keyHash: Gauge<"fingerprint">;

  constructor(options: MetricsOptions) {
    const { Counter, Gauge, Histogram, Registry } = promClient();
    this.registry = new Registry();
    const registers = [this.registry];
    const series = (s: RouteSeries) => this.registry.registerMetric(s as unknown as Counter);
    series(new RouteSeries("metadata_endpoint_latency_seconds", "Duration of HTTP requests.", "histogram", this.routes, LATENCY_BUCKETS));
    series(
      new RouteSeries(
        "metadata_endpoint_path_requests",
        "backend status, partitioned by status code and path.",
        "counter",
        this.routes,
        LATENCY_BUCKETS,
      ),
    );
    new Gauge({
      name: "metadata_server_version",
      help: "The current running version of the MetadataServer",
      labelNames: ["version"],
      registers,
    }).set({ version: options.version }, 1);
    this.email = new Gauge({
      name: "service_account_name",
      help: "The current name of the serviceAccount email",
      labelNames: ["email"],
      registers,
    });
    this.credentialType = new Gauge({
      name: "credential_type",
      help: "Type of credentials being used [serviceAccountKey | TPM | Federated | Impersonated | emulated | static]",
      labelNames: ["type"],
      registers,
    });
    this.keyHash = new Gauge({
      name: "service_account_hash",
      help: "The hash of the serviceAccount Public Key",
      labelNames: ["fingerprint"],
      registers,
    });

    const hits = new Counter({
      name: "metadata_token_cache_hits_total",
      help: "Token requests answered from the token cache.",
      labelNames: ["kind"],
      registers,
    });
    const misses = new Counter({
      name: "metadata_token_cache_misses_total",
      help: "Token requests that had to wait for the credential source.",
      labelNames: ["kind"],
      registers,
    });
    const refreshFailures = new Counter({
      name: "metadata_token_refresh_failures_total",
      help: "Background token refreshes that failed (the still-valid token kept being served).",
      labelNames: ["kind"],
      registers,
    });
    const upstream = new Histogram({
      name: "metadata_token_upstream_latency_seconds",
      help: "Duration of calls to the credential source (token endpoint, IAM, STS, TPM), by outcome.",
      labelNames: ["kind", "outcome"],
      buckets: UPSTREAM_BUCKETS,
      registers,
    });
    const upstreamFailures = new Counter({
      name: "metadata_upstream_failures_total",
      help: "Calls to a credential source that failed after their retries, by credential mode and kind of failure (timeout, refused, reset, unreachable, http, malformed, signature, other).",
      labelNames: ["source", "kind"],
      registers,
    });
    const kinds = <T>(f: (k: Kind) => T): Record<Kind, T> => ({ access: f("access"), identity: f("identity") });
    const hit = kinds((k) => hits.labels(k));
    const miss = kinds((k) => misses.labels(k));
    const refreshFailed = kinds((k) => refreshFailures.labels(k));
    const up = kinds((k) => ({ ok: upstream.labels(k, "ok"), error: upstream.labels(k, "error") }));
    // Series exist from the start at 0, so rate() and alerts work before the first token request.
    for (const k of ["access", "identity"] as const) {
      hit[k].inc(0);
      miss[k].inc(0);
      refreshFailed[k].inc(0);
    }
    this.tokenEvents = {
      hit: (k) => hit[k].inc(),
      miss: (k) => miss[k].inc(),
      upstream: (k, seconds, ok) => (ok ? up[k].ok : up[k].error).observe(seconds),
      refreshFailed: (k) => refreshFailed[k].inc(),
      failed: (_k, error, _seconds, source) => upstreamFailures.inc(failureLabels(source, error)),
    };

    const waiting = new Gauge({ name: "metadata_waiting_requests", help: "wait_for_change requests currently hanging.", registers });
    waiting.set(0);
    this.waiting = { inc: () => waiting.inc(), dec: () => waiting.dec() };
    const reloads = new Counter({
      name: "metadata_config_reloads_total",
      help: "Config reloads that swapped in a new snapshot.",
      registers,
    });
    const reloadFailures = new Counter({
      name: "metadata_config_reload_failures_total",
      help: "Config reloads rejected (the previous snapshot kept serving).",
      registers,
    });
    reloads.inc(0);
    reloadFailures.inc(0);
    this.reloads = { succeeded: () => reloads.inc(), failed: () => reloadFailures.inc() };
  }

  /**
   * `metadata_fault_hits_total{rule}`: how often each fault-injection rule fired, read from the rules at scrape time
   * (a removed rule's series goes with it). Rule ids are the server's own (`fault-1`), so the label set stays small.
   */
  faultHits(rules: () => Iterable<{ id: string; hits: number }>): void {
    const series = {
      name: "metadata_fault_hits_total",
      help: "Requests answered by a fault-injection rule, per rule.",
      type: "counter",
      aggregator: "sum",
      get: async () => ({
        name: series.name,
        help: series.help,
        type: series.type,
        aggregator: series.aggregator,
        values: [...rules()].map((r) => ({ labels: { rule: r.id }, value: r.hits })),
      }),
      reset: () => {},
    };
    this.registry.registerMetric(series as unknown as Counter);
  }

  /** The instruments for a route template, created on first use and reused. */
  route(template: string): RouteInstruments {
    let r = this.routes.get(template);
    if (r === undefined) {
      r = new RouteInstruments(template, LATENCY_BUCKETS);
      this.routes.set(template, r);
    }
    return r;
  }

  /** Credential gauges: what the source says about itself, and the account e-mail the config serves as `default`. */
  describeCredentials(source: SourceDescription, defaultEmail: string | undefined): void {
    this.credentialType.reset();
    this.credentialType.set({ type: source.type }, 1);
    this.keyHash.reset();
    // The Go emulator labels the base64 SHA-256 of the public key's DER; sources report it in hex.
    if (source.fingerprint) this.keyHash.set({ fingerprint: Buffer.from(source.fingerprint, "hex").toString("base64") }, 1);
    this.serviceAccount(defaultEmail ?? source.email);
  }

  /** After a reload the default account may have changed. */
  serviceAccount(email: string | undefined): void {
    this.email.reset();
    if (email) this.email.set({ email }, 1);
  }

  get contentType(): string {
    return this.registry.contentType;
  }

  /** The Prometheus text exposition of every metric. */
  text(): Promise<string> {
    return this.registry.metrics();
  }
}
