/**
 * Per-request observation: latency and status into the metrics, and one log line per request at debug level
 * (`-v 1` and up). It wraps the listener's whole fetch handler, so it sees every answer — metadata, redirects,
 * errors, OpenID and control routes, the app's own 404s — with its real status. It is installed only when metrics or request logging
 * are on; otherwise requests run exactly the code they ran before.
 *
 * Labels and log fields carry the route template and the path without its query string: query values (audiences,
 * scopes) and response bodies (tokens) never reach a metric or a log line.
 */
import type { Entry, Snapshot } from "../metadata/snapshot.ts";
import { entryTemplate } from "../metadata/template.ts";
import { normalisePath, splitUrl } from "../metadata/path.ts";
import type { Logger } from "../log.ts";
import { OTHER_ROUTE } from "./hooks.ts";
import type { Metrics, RouteInstruments } from "./metrics.ts";

/** A listener's fetch handler; the second argument (Bun's server) is passed through untouched. */
export type Fetch<S = never> = (request: Request, server: S) => Response | Promise<Response>;

export interface InstrumentOptions<S = never> {
  /** The snapshot a request was answered from (swapped on reload; per caller with `-callers`). */
  snapshot(request: Request, server: S): Snapshot;
  metrics?: Metrics;
  /** Logs one line per request when it is enabled for debug. */
  log?: Logger;
  /** The label of a path served beside the metadata tree (http/routes.ts), or undefined: `{other}`. */
  routeBeside?: (path: string) => string | undefined;
}

interface Route {
  template: string;
  instruments: RouteInstruments | undefined;
}

const MAX_LOGGED_PATH = 256;

/** Wrap a fetch handler; returns it unchanged when there is nothing to observe. */
export function instrument<S>(fetch: Fetch<S>, options: InstrumentOptions<S>): Fetch<S> {
  const { metrics } = options;
  const log = options.log?.enabled("debug") ? options.log : undefined;
  if (!metrics && !log) return fetch;

  const byEntry = new WeakMap<Entry, Route>();
  const byTemplate = new Map<string, Route>();
  const route = (template: string): Route => {
    let r = byTemplate.get(template);
    if (r === undefined) {
      r = { template, instruments: metrics?.route(template) };
      byTemplate.set(template, r);
    }
    return r;
  };
  const beside = options.routeBeside ?? (() => undefined);
  const other = route(OTHER_ROUTE);

  function resolve(path: string, snapshot: Snapshot): Route {
    let entry = snapshot.lookup(path);
    if (entry === undefined) {
      const label = beside(path);
      if (label !== undefined) return route(label);
      // Paths the handler also serves after normalising (`//`, percent-escapes); rare, so only on a miss.
      const n = path.startsWith("/computeMetadata") ? normalisePath(path) : undefined;
      entry = n !== undefined && n !== path ? snapshot.lookup(n) : undefined;
      if (entry === undefined) return other;
    }
    let r = byEntry.get(entry);
    if (r === undefined) {
      r = route(entryTemplate(entry, (p) => snapshot.lookup(p)) ?? OTHER_ROUTE);
      byEntry.set(entry, r);
    }
    return r;
  }

  function logLine(req: Request, path: string, r: Route, res: Response, ms: number): void {
    const fields = {
      method: req.method,
      path: path.length > MAX_LOGGED_PATH ? `${path.slice(0, MAX_LOGGED_PATH)}…` : path,
      route: r.template,
      status: res.status,
      ms: Math.round(ms * 1000) / 1000,
    };
    // Bodies here are strings; a clone is the one portable way to count bytes without touching the original.
    res
      .clone()
      .arrayBuffer()
      .then(
        (b) => log!.debug("request", { ...fields, bytes: b.byteLength }),
        () => log!.debug("request", fields),
      );
  }

  function done(req: Request, server: S, res: Response, t0: number): Response {
    const ms = performance.now() - t0;
    const path = splitUrl(req.url).path;
    const r = resolve(path, options.snapshot(req, server));
    r.instruments?.record(res.status, ms / 1000);
    if (log) logLine(req, path, r, res, ms);
    return res;
  }

  return function instrumented(req: Request, server: S): Response | Promise<Response> {
    const t0 = performance.now();
    const res = fetch(req, server);
    if (res instanceof Promise) {
      return res.then(
        (v) => done(req, server, v, t0),
        (e: unknown) => {
          done(req, server, new Response(null, { status: 500 }), t0);
          throw e;
        },
      );
    }
    return done(req, server, res, t0);
  };
}
