/**
 * The metrics listener, apart from the metadata listener (as in the Go emulator): the Prometheus text at the metrics
 * path, plus `/healthz` (the process answers) and `/readyz` (the metadata listener is up and a snapshot is loaded).
 * Plain HTTP, no Metadata-Flavor rule; bind it to an address only the scraper reaches (default 127.0.0.1).
 *
 * @example
 * const server = serveMetrics(metrics, { bindInterface: "127.0.0.1", port: 9000, path: "/metrics" }, () => undefined);
 * // curl http://127.0.0.1:9000/metrics ; curl http://127.0.0.1:9000/readyz
 */
import type { Server } from "bun";
import { ListenError, UsageError } from "../errors.ts";
import { parsePort } from "../address.ts";
import { splitUrl } from "../metadata/path.ts";
import type { Metrics } from "./metrics.ts";

export interface MetricsListenOptions {
  /** Address to bind (default 127.0.0.1). */
  bindInterface?: string;
  /** Port, `9000` or `:9000`; 0 picks a free one (default 9000). */
  port?: number | string;
  /** Path of the Prometheus text (default /metrics). */
  path?: string;
}

const TEXT = { "Content-Type": "text/plain; charset=utf-8" };

/**
 * Start the listener. `notReady` returns why the server is not ready, or undefined when it is.
 */
export function serveMetrics(metrics: Metrics, options: MetricsListenOptions, notReady: () => string | undefined): Server<unknown> {
  const hostname = options.bindInterface || "127.0.0.1";
  const p = options.port === undefined ? 9000 : parsePort(options.port, "metrics port");
  const path = options.path || "/metrics";
  if (!path.startsWith("/")) throw new UsageError("USAGE", `invalid metrics path ${JSON.stringify(path)}: it must start with /`);
  try {
    return Bun.serve({
      hostname,
      port: p,
      reusePort: false,
      development: false,
      async fetch(req) {
        const reqPath = splitUrl(req.url).path;
        if (req.method !== "GET" && req.method !== "HEAD")
          return new Response("method not allowed\n", { status: 405, headers: { ...TEXT, Allow: "GET, HEAD" } });
        if (reqPath === path) return new Response(await metrics.text(), { headers: { "Content-Type": metrics.contentType } });
        if (reqPath === "/healthz") return new Response("ok\n", { headers: TEXT });
        if (reqPath === "/readyz") {
          const reason = notReady();
          return reason === undefined
            ? new Response("ready\n", { headers: TEXT })
            : new Response(`not ready: ${reason}\n`, { status: 503, headers: TEXT });
        }
        return new Response(`not found; metrics are at ${path}, health at /healthz and /readyz\n`, { status: 404, headers: TEXT });
      },
    });
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    const why =
      code === "EADDRINUSE"
        ? "address already in use"
        : code === "EADDRNOTAVAIL"
          ? "no such local address"
          : code === "EACCES"
            ? "permission denied"
            : (e as Error).message;
    throw new ListenError(
      "METRICS_LISTEN",
      `cannot listen for metrics on ${hostname.includes(":") ? `[${hostname}]` : hostname}:${p}: ${why}; choose another -metricsInterface/-metricsPort`,
      {
        cause: e,
      },
    );
  }
}
