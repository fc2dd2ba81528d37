/**
 * The routes served beside the metadata tree, named once. The Elysia app (app.ts, control.ts) declares its routes
 * with these patterns, and metrics and request logs label requests by them, so the two cannot drift apart. Plain
 * data: the metrics side must not load Elysia, which is loaded on the first request outside the tree.
 *
 * Pattern syntax is Elysia's: `:name` is one segment, `*` is the rest of the path. A label is the pattern with
 * `{name}` and `{path}` in their place.
 */
export const ROUTES = {
  openidConfiguration: "/.well-known/openid-configuration",
  jwks: "/oauth2/v3/certs",
  // Google's reference emulator's update routes.
  update: "/emulator/v1/update/*",
  // This server's own control routes.
  metadataRoot: "/emulator/v1/metadata",
  metadata: "/emulator/v1/metadata/*",
  config: "/emulator/v1/config",
  status: "/emulator/v1/status",
  lifecycle: "/emulator/v1/lifecycle",
  maintenance: "/emulator/v1/lifecycle/maintenance",
  preemption: "/emulator/v1/lifecycle/preemption",
  lifecycleEvent: "/emulator/v1/lifecycle/:event",
  clock: "/emulator/v1/clock",
  faults: "/emulator/v1/faults",
  fault: "/emulator/v1/faults/:id",
} as const;

/** Every pattern, in declaration order. */
export const APP_ROUTES: readonly string[] = Object.values(ROUTES);

/** `/emulator/v1/lifecycle/:event` → `/emulator/v1/lifecycle/{event}`; `/x/*` → `/x/{path}`. */
export function routeLabel(pattern: string): string {
  return pattern.replace(/:(\w+)/g, "{$1}").replace(/\*$/, "{path}");
}

/** A matcher from request path to route label; undefined when no route matches. Exact patterns win. */
export function routeMatcher(patterns: readonly string[]): (path: string) => string | undefined {
  const exact = new Map<string, string>();
  const shaped: Array<[RegExp, string]> = [];
  // Built at the first match: a server without metrics or request logs never needs the tables.
  let built = false;
  const build = () => {
    built = true;
    for (const p of patterns) {
      if (!p.includes(":") && !p.includes("*")) exact.set(p, routeLabel(p));
      else {
        const source = p
          .split("/")
          .map((seg) => (seg === "*" ? ".*" : seg.startsWith(":") ? "[^/]+" : seg.replace(/[.+?^${}()|[\]\\]/g, "\\$&")))
          .join("/");
        shaped.push([new RegExp(`^${source}$`), routeLabel(p)]);
      }
    }
  };
  return (path) => {
    if (!built) build();
    const e = exact.get(path);
    if (e !== undefined) return e;
    for (const [re, label] of shaped) if (re.test(path)) return label;
    return undefined;
  };
}
