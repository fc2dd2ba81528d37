/**
 * What the server reports to metrics, without metrics: the hooks request handling calls, their no-op set, and the
 * token-event plumbing. prom-client and the Metrics class (observability/metrics.ts) load only when metrics are on,
 * so a server without `-metricsEnabled` never loads them (about 2 ms and 180 KB of code at start-up).
 */
import type { TokenCacheEvents } from "../credentials/token-cache.ts";

/** What request handling, wait_for_change and reload code call; cheap no-ops when metrics are off. */
export interface MetricsHooks {
  /**
   * Hanging GETs (`wait_for_change=true`): `inc()` when a request starts waiting, `dec()` exactly once when it stops
   * (change, timeout, or client gone). `hang()` in http/handler.ts already does this around `WaitService.wait`, so
   * a WaitService implementation must not count again.
   */
  readonly waiting: { inc(): void; dec(): void };
  /**
   * Config reloads, one call per attempt: `succeeded()` after a new config went live, `failed()` when a changed
   * config is rejected and the old snapshot keeps serving. `MetadataServer.applyConfigText` (the file watcher) and
   * `MetadataServer.replaceClaims` (library, control API `PUT /emulator/v1/config`) already report both; control-API
   * edits of single values are not reloads. New code that loads a whole config some other way calls these itself.
   */
  readonly reloads: { succeeded(): void; failed(): void };
}

const noop = () => {};

/** Hooks for a server without metrics: every call is a no-op. */
export const NO_METRICS: MetricsHooks = Object.freeze({
  waiting: Object.freeze({ inc: noop, dec: noop }),
  reloads: Object.freeze({ succeeded: noop, failed: noop }),
});

/** Label for requests whose path is not in the snapshot or among the server's other routes. */
export const OTHER_ROUTE = "{other}";

/** Both sets of token-cache events, for a caller that brings its own and metrics that need theirs. */
export function fanOut(a: TokenCacheEvents | undefined, b: TokenCacheEvents | undefined): TokenCacheEvents | undefined {
  if (!a || !b) return a ?? b;
  return {
    hit: (k) => {
      a.hit?.(k);
      b.hit?.(k);
    },
    miss: (k) => {
      a.miss?.(k);
      b.miss?.(k);
    },
    upstream: (k, s, ok) => {
      a.upstream?.(k, s, ok);
      b.upstream?.(k, s, ok);
    },
    refreshFailed: (k, e) => {
      a.refreshFailed?.(k, e);
      b.refreshFailed?.(k, e);
    },
    failed: (k, e, s, source) => {
      a.failed?.(k, e, s, source);
      b.failed?.(k, e, s, source);
    },
  };
}

/** Token-cache events delivered to whatever `current()` returns when they happen (metrics made after the cache). */
export function lateEvents(current: () => TokenCacheEvents | undefined): TokenCacheEvents {
  return {
    hit: (k) => current()?.hit?.(k),
    miss: (k) => current()?.miss?.(k),
    upstream: (k, s, ok) => current()?.upstream?.(k, s, ok),
    refreshFailed: (k, e) => current()?.refreshFailed?.(k, e),
    failed: (k, e, s, source) => current()?.failed?.(k, e, s, source),
  };
}
