/**
 * The metadata request path: admission rules (X-Forwarded-For and Forwarded, Metadata-Flavor, method), one snapshot lookup,
 * query parameters, and the cached bytes of the chosen representation. Token and identity requests go to the
 * token cache. Requests outside the metadata tree return undefined and fall through to the app's other routes.
 */
import {
  MetaNode,
  Redirect,
  type Rendering,
  type Snapshot,
  BASE_HEADERS,
  GUEST_ATTRIBUTES,
  JSON_TYPE,
  TEXT,
} from "../metadata/snapshot.ts";
import { scopeNotHeld } from "../credentials/scopes.ts";
import { CachedToken, MAX_AUDIENCE_LENGTH, type TokenCache } from "../credentials/token-cache.ts";
import { UpstreamError } from "../errors.ts";
import {
  badRequest,
  callerDenied,
  forwarded,
  guestAttributesDisabled,
  methodNotAllowed,
  missingFlavor,
  notFound,
  plain,
  proxyHeader,
  redirect,
  safeHost,
} from "./pages.ts";
import { flag, parseQuery, type Params } from "./query.ts";
import { normalisePath, pathAndQuery, splitUrl } from "../metadata/path.ts";
import { redact, type Logger } from "../log.ts";
import type { Account } from "../credentials/source.ts";
import type { MetricsHooks } from "../observability/hooks.ts";
import type { WaitService } from "../changes/hub.ts";

/** What one request is answered from: a snapshot, and the waits held on it. */
export interface View {
  snapshot: Snapshot;
  waits?: WaitService;
}

/** `-callers`: the view for a request's caller (http/callers.ts); null refuses the request. */
export interface CallerSelector {
  select(req: Request, server: ServerHooks | undefined): View | null;
}

/** What the handler reads on every request; `snapshot` is swapped whole on reload. */
export interface ServingState {
  snapshot: Snapshot;
  tokens: TokenCache;
  log: Logger;
  /** Accept the legacy `X-Google-Metadata-Request: True` in place of Metadata-Flavor. */
  legacyHeader: boolean;
  scheme: "http" | "https";
  /** Hanging GETs; absent until wired. */
  waits?: WaitService;
  /** PUT/DELETE under /computeMetadata (guest attributes); undefined for paths it does not serve (then 405). */
  writes?: (req: Request, path: string) => Handled;
  /** Where waits and reloads are counted (observability/metrics.ts); absent or no-ops without metrics. */
  metrics?: MetricsHooks;
  /** Per-caller views (`-callers`); absent, every request is answered from `snapshot`. */
  callers?: CallerSelector;
  /** The server's clock (virtual: see clock.ts) in ms, for `expires_in`; Date.now when absent. */
  now?: () => number;
  /** Fault injection (faults.ts): set only while rules exist, so without rules it costs one field check. */
  faults?: FaultHook | undefined;
  /** The listener's own `host:port`: redirects use it when a request's Host is not a well-formed host[:port]. */
  host?: string;
}

/**
 * Fault injection's hook, run on admitted requests before the lookup: an answer, or undefined to serve as usual.
 * `handle` is this handler, for a rule that only delays the real answer (the hook lets the request through then).
 */
export type FaultHook = (req: Request, path: string, server: ServerHooks | undefined, handle: MetadataHandler) => Handled;

export type MetadataHandler = (req: Request, server?: ServerHooks) => Handled;

/** What the handler needs from the server (Bun's Server) for long requests. */
export interface ServerHooks {
  timeout?(request: Request, seconds: number): void;
  /** The peer's address (Bun's `server.requestIP`); null on a unix socket. */
  requestIP?(request: Request): { address: string } | null;
}

/** Beyond the upstream deadline, time to write the answer before the connection's own idle timeout may close it. */
const ANSWER_MARGIN_S = 5;

const TOKEN_INIT: ResponseInit = { headers: new Headers({ ...BASE_HEADERS, "Content-Type": JSON_TYPE }) };
const IDENTITY_INIT: ResponseInit = { headers: new Headers({ ...BASE_HEADERS, "Content-Type": TEXT }) };
const bareToken = (t: CachedToken): string => t.token;
const DEFAULT_HOST = "metadata.google.internal";

export type Handled = Response | Promise<Response> | undefined;

export function createMetadataHandler(state: ServingState): MetadataHandler {
  const now = state.now ?? Date.now;
  const accessTokenBody = (t: CachedToken): string => t.accessTokenBody(now());

  function respond(r: Rendering): Response {
    return new Response(r.body, r.init);
  }

  /**
   * Answer from the token cache: at once when a fresh token is cached (no closure or promise made), else when the
   * source answers. The cache never throws; a source's failure arrives as the promise's rejection, already logged
   * once by the server: a 503 when it may pass (timeout, refused, reset, 429, 5xx upstream), else a 500.
   */
  function issue(
    what: string,
    account: Account,
    t: CachedToken | Promise<CachedToken>,
    body: (t: CachedToken) => string,
    init: ResponseInit,
    req: Request,
    server: ServerHooks | undefined,
  ): Handled {
    if (t instanceof CachedToken) return new Response(body(t), init);
    // Waiting on an upstream outlasts Bun's idle timeout (~10 s) when the deadline is near it: give this request
    // the deadline and a margin, so the client always gets the answer rather than a closed connection.
    server?.timeout?.(req, Math.ceil(state.tokens.deadlineMs / 1000) + ANSWER_MARGIN_S);
    return t.then(
      (v) => new Response(body(v), init),
      (e: unknown) => {
        const reason = redact(e instanceof Error ? e.message : String(e)).replace(/\s*\n\s*/g, " ");
        const status = e instanceof UpstreamError && e.transient ? 503 : 500;
        return plain(status, `Failed to obtain ${what} for ${account.email}: ${reason}\n`);
      },
    );
  }

  /** A source holding one account's key serves that account and the default one; others are unknown here (404). */
  function servesAccount(account: Account, snapshot: Snapshot): boolean {
    const own = state.tokens.source.ownAccount;
    return own === undefined || account.email === own || account.email === snapshot.accounts.get("default")?.email;
  }

  function token(node: MetaNode, params: Params | undefined, snapshot: Snapshot, req: Request, server: ServerHooks | undefined): Handled {
    const account = node.account!;
    if (params && flag(params, "wait_for_change")) return badRequest("wait_for_change is not supported for the token endpoint");
    if (!servesAccount(account, snapshot)) return notFound(pathAndQuery(splitUrl(req.url)));
    const requested = params?.get("scopes");
    let scopes = account.scopes;
    if (requested) {
      scopes = requested
        .split(",")
        .map((s) => s.trim())
        .filter(Boolean);
      const missing = scopeNotHeld(account.scopes, scopes);
      if (missing !== undefined) {
        const held = account.scopes.length ? `it holds ${account.scopes.join(", ")}` : "it holds no scopes";
        return plain(
          403,
          `${account.email} does not hold the scope ${missing} (${held}); ask for those, or give the account the scope in the config\n`,
        );
      }
    }
    return issue("an access token", account, state.tokens.accessToken(account, scopes), accessTokenBody, TOKEN_INIT, req, server);
  }

  function identity(
    node: MetaNode,
    params: Params | undefined,
    snapshot: Snapshot,
    req: Request,
    server: ServerHooks | undefined,
  ): Handled {
    const account = node.account!;
    const audience = params?.get("audience");
    if (!audience) return badRequest("non-empty audience parameter required");
    if (audience.length > MAX_AUDIENCE_LENGTH) {
      return badRequest(`audience is ${audience.length} characters long; at most ${MAX_AUDIENCE_LENGTH} are accepted`);
    }
    if (!servesAccount(account, snapshot)) return notFound(pathAndQuery(splitUrl(req.url)));
    if (flag(params!, "wait_for_change")) return badRequest("wait_for_change is not supported for the identity endpoint");
    const format = (params!.get("format") || "standard").toLowerCase();
    if (format !== "standard" && format !== "full") return badRequest(`invalid format ${JSON.stringify(format)}: use standard or full`);
    // licenses only means something with format=full.
    const licenses = format === "full" && flag(params!, "licenses");
    const t = state.tokens.idToken({ account, audience, format, licenses, instance: snapshot.identity });
    return issue("an identity token", account, t, bareToken, IDENTITY_INIT, req, server);
  }

  /** Pick the representation for a node and query; a string is a 400 reason. */
  function choose(node: MetaNode, params: Params, recursive: boolean): Rendering | string {
    const alt = params.get("alt") || undefined;
    if (alt !== undefined && alt !== "json" && alt !== "text") return `invalid alt value ${JSON.stringify(alt)}: use json or text`;
    if (node.isDir) {
      if (!recursive) {
        if (alt) return "alt is only supported with recursive=true on a directory";
        return node.plain;
      }
      return alt === "text" ? node.recursiveText : node.recursive!;
    }
    return alt === "json" ? node.altJson : alt === "text" ? node.altText : node.plain;
  }

  async function hang(
    view: View,
    node: MetaNode,
    params: Params,
    recursive: boolean,
    req: Request,
    server: ServerHooks | undefined,
  ): Promise<Response> {
    const waits = view.waits;
    if (!waits) return badRequest("wait_for_change is not supported by this server");
    const timeoutRaw = params.get("timeout_sec");
    let timeoutSec: number | undefined;
    if (timeoutRaw !== undefined && timeoutRaw !== "") {
      if (!/^\d+$/.test(timeoutRaw)) return badRequest(`timeout_sec must be a non-negative integer, found ${JSON.stringify(timeoutRaw)}`);
      timeoutSec = Number(timeoutRaw);
    }
    const first = choose(node, params, recursive);
    if (typeof first === "string") return badRequest(first);
    server?.timeout?.(req, 0);
    const metrics = state.metrics;
    metrics?.waiting.inc();
    try {
      await waits.wait(
        { path: node.path, recursive: recursive && node.isDir, lastEtag: params.get("last_etag"), timeoutSec, signal: req.signal },
        first.etag,
      );
    } catch (e) {
      return plain(503, `${(e as Error).message}\n`);
    } finally {
      metrics?.waiting.dec();
    }
    // Answer with whatever is current now; the node may have gone.
    const snapshot = view.snapshot;
    const now = snapshot.lookup(node.path);
    if (!(now instanceof MetaNode)) return absent(snapshot, node.path, pathAndQuery(splitUrl(req.url)));
    if (now.kind === "disabled") return guestAttributesDisabled();
    const r = choose(now, params, recursive);
    return typeof r === "string" ? badRequest(r) : respond(r);
  }

  function handle(req: Request, server?: ServerHooks): Handled {
    const u = splitUrl(req.url);
    const { path, query } = u;
    const headers = req.headers;

    const proxy = proxyHeader(headers);
    if (proxy !== undefined) return forwarded(pathAndQuery(u), proxy);

    // -callers: the caller's own view of the tree; without it, one field check and the one snapshot.
    const view = state.callers === undefined ? state : state.callers.select(req, server);
    if (view === null) return callerDenied(pathAndQuery(u));

    const method = req.method;
    const readOnly = method === "GET" || method === "HEAD";
    const snapshot = view.snapshot;
    if (path === "/") {
      if (!readOnly) return methodNotAllowed(method, path, "GET, HEAD");
      if (state.faults !== undefined) {
        const fault = state.faults(req, path, server, handle);
        if (fault !== undefined) return fault;
      }
      // The one path served without Metadata-Flavor (Go's OnGCE probe sends none); its query is ignored.
      return respond((snapshot.lookup("/") as MetaNode).plain);
    }
    if (!path.startsWith("/computeMetadata")) return undefined;

    if (headers.get("metadata-flavor") !== "Google") {
      const legacy = state.legacyHeader && headers.get("x-google-metadata-request")?.toLowerCase() === "true";
      if (!legacy) return missingFlavor(pathAndQuery(u));
    }
    // Fault injection, after admission and before the lookup: one field check while no rule is set.
    if (state.faults !== undefined) {
      const fault = state.faults(req, path, server, handle);
      if (fault !== undefined) return fault;
    }
    if (!readOnly) return state.writes?.(req, path) ?? methodNotAllowed(method, path, "GET, HEAD");

    let entry = snapshot.lookup(path);
    if (entry === undefined) {
      const normal = normalisePath(path);
      if (normal !== undefined && normal !== path) entry = snapshot.lookup(normal);
      if (entry === undefined) return absent(snapshot, normal ?? path, pathAndQuery(u));
    }
    if (entry instanceof Redirect) {
      return redirect(entry.target, query, safeHost(headers.get("host"), state.host ?? DEFAULT_HOST), state.scheme);
    }
    const node = entry;
    if (node.kind === "leaf" || node.kind === "dir") {
      if (query === "") return respond(node.plain);
      const params = parseQuery(query);
      const recursive = flag(params, "recursive");
      if (flag(params, "wait_for_change")) {
        if (node.isDir && !recursive) return badRequest("wait_for_change on a directory requires recursive=true");
        return hang(view, node, params, recursive, req, server);
      }
      const r = choose(node, params, recursive);
      return typeof r === "string" ? badRequest(r) : respond(r);
    }
    if (node.kind === "disabled") return guestAttributesDisabled();
    const params = query === "" ? undefined : parseQuery(query);
    return node.kind === "token" ? token(node, params, snapshot, req, server) : identity(node, params, snapshot, req, server);
  }
  return handle;
}

/** A path with no node: 404, or 403 under guest attributes while they are disabled. */
function absent(snapshot: Snapshot, path: string, shown = path): Response {
  if (!snapshot.guestAttributes && path.startsWith(GUEST_ATTRIBUTES)) return guestAttributesDisabled();
  return notFound(shown);
}
