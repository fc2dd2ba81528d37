/**
 * What the listener runs: the metadata guard first on every request, answering everything under /computeMetadata
 * (and /) from the snapshot; the Elysia app behind it serves the routes of routes.ts on the same listener.
 *
 * Why the tree is not an Elysia route: measured here, Elysia in front of a cached answer costs about 5% of leaf
 * throughput through `onRequest` (about 15% as a route, 27% through `mount`), and importing it costs about 4.5 ms of
 * start-up. So the guard answers the tree, and Elysia is loaded on the first request outside it.
 */
import { CredentialError, MetadataError, RequestError } from "../errors.ts";
import { pathAndQuery, splitUrl } from "../metadata/path.ts";
import { BASE_HEADERS, JSON_TYPE } from "../metadata/snapshot.ts";
import { type ControlOptions, controlGate } from "./control-gate.ts";
import { createMetadataHandler, type ServerHooks, type ServingState } from "./handler.ts";
import { errorAnswer, notFound, plain, safeHost } from "./pages.ts";
import { ROUTES } from "./routes.ts";

export { errorAnswer } from "./pages.ts";

export interface AppOptions {
  /** Serve the control API under /emulator/v1/ on this listener (see control.ts). */
  control?: ControlOptions;
}

const JSON_INIT: ResponseInit = { headers: { ...BASE_HEADERS, "Content-Type": JSON_TYPE } };
const DEFAULT_HOST = "metadata.google.internal";
const CONTROL_PREFIX = "/emulator/";

/** The metadata listener's fetch handler: the guard, then the app's routes. */
export function createFetch(
  state: ServingState,
  options: AppOptions = {},
): (req: Request, server: ServerHooks) => Response | Promise<Response> {
  const guard = createMetadataHandler(state);
  const gate = options.control ? controlGate(options.control) : undefined;
  // In the compiled executable a dynamic import keeps Elysia in its own chunk, off the start-up path.
  let app: ReturnType<typeof createApp> | undefined;
  return (req, server) => {
    let answered: ReturnType<typeof guard>;
    try {
      answered = guard(req, server);
    } catch (error) {
      // A bug, not the client's fault: the standard 500 and one line, never Bun's bare error page.
      state.log.error("request failed", { method: req.method, path: splitUrl(req.url).path, error });
      return plain(500, "Internal Server Error\n");
    }
    if (answered !== undefined) return req.method === "HEAD" ? dated(answered) : answered;
    // Control requests are admitted before the app parses their bodies.
    if (gate && splitUrl(req.url).path.startsWith(CONTROL_PREFIX)) {
      const refused = gate(req);
      if (refused) return refused;
    }
    const routed = (app ??= createApp(state, options)).then((a) => a.handle(withHost(req)));
    return req.method === "HEAD" ? dated(routed) : routed;
  };
}

/**
 * Bun adds `Date` to every answer but a HEAD's; the real server's answers all carry one, so HEAD answers get it
 * here (GET answers are left to Bun, which caches the formatted date).
 */
function dated(answer: Response | Promise<Response>): Response | Promise<Response> {
  if (answer instanceof Promise) return answer.then(dated);
  if (!answer.headers.has("date")) answer.headers.set("Date", new Date().toUTCString());
  return answer;
}

/** The control listener's fetch handler (`-controlListen`): the control API alone, admitted first. */
export function createControlFetch(state: ServingState, control: ControlOptions): (req: Request) => Response | Promise<Response> {
  const gate = controlGate(control);
  let app: ReturnType<typeof createApp> | undefined;
  return (req) => {
    const answer = gate(req) ?? (app ??= createApp(state, { control }, false)).then((a) => a.handle(withHost(req)));
    return req.method === "HEAD" ? dated(answer) : answer;
  };
}

/** Elysia routes on the URL's path after a host; a request Bun handed over without one gets the metadata host. */
function withHost(req: Request): Request {
  return req.url.charCodeAt(0) === 47 ? new Request(`http://metadata.google.internal${req.url}`, req) : req;
}

/** The status for an error a route threw: what the client got wrong is 4xx, the rest 500. */
function statusOf(e: MetadataError): number {
  if (e instanceof RequestError) return e.status;
  if (e.code === "EDIT_NOT_FOUND") return 404;
  if (e instanceof CredentialError) return 500;
  return 400;
}

/** Routes beside the metadata tree. */
export async function createApp(state: ServingState, options: AppOptions = {}, discovery = true) {
  const { Elysia } = await import("elysia");
  const [{ controlRoutes }, { testingRoutes }] = await Promise.all([import("./control.ts"), import("./control-testing.ts")]);
  const base = new Elysia({ strictPath: true })
    // First, and global: it answers for every route below, the control API's included.
    .onError({ as: "global" }, ({ code, error, request }) => {
      const path = splitUrl(request.url).path;
      if (error instanceof MetadataError) return errorAnswer(statusOf(error), error.code, error.message);
      if (code === "VALIDATION") {
        const first = (error as { all?: Array<{ path?: string; summary?: string; message?: string }> }).all?.[0];
        const where = first?.path ? `request body${first.path.replaceAll("/", ".")}` : "request body";
        return errorAnswer(400, "BAD_REQUEST", `${where}: ${first?.summary ?? first?.message ?? "does not have the expected shape"}`);
      }
      if (code === "NOT_FOUND") {
        return options.control && (path.startsWith(CONTROL_PREFIX) || !discovery)
          ? errorAnswer(404, "NOT_FOUND", `no route ${request.method} ${path}`)
          : notFound(pathAndQuery(splitUrl(request.url)));
      }
      if (code === "PARSE") {
        // Elysia wraps what a parser throws: the body's own error (too large, bad JSON) is the answer.
        const cause = (error as Error).cause;
        if (cause instanceof MetadataError) return errorAnswer(statusOf(cause), cause.code, cause.message);
        return errorAnswer(400, "BAD_REQUEST", `request body: ${(error as Error).message}`);
      }
      state.log.error("request failed", { method: request.method, path, error });
      return plain(500, "Internal Server Error\n");
    });
  // Not on the control listener, which serves the control API alone.
  const absent = (request: Request) =>
    discovery
      ? notFound(pathAndQuery(splitUrl(request.url)))
      : errorAnswer(404, "NOT_FOUND", `no route ${request.method} ${splitUrl(request.url).path}`);
  const app = base
    // OpenID discovery for the issuer that signs ID tokens here (emulated issuer), so apps verify them offline.
    .get(ROUTES.openidConfiguration, ({ request }) => {
      const openid = discovery ? state.tokens.source.openid : undefined;
      if (!openid) return absent(request);
      const host = safeHost(request.headers.get("host"), state.host ?? DEFAULT_HOST);
      const doc = {
        issuer: openid.issuer,
        jwks_uri: `${state.scheme}://${host}${ROUTES.jwks}`,
        response_types_supported: ["id_token"],
        subject_types_supported: ["public"],
        id_token_signing_alg_values_supported: ["RS256"],
        claims_supported: ["aud", "azp", "email", "email_verified", "exp", "google", "iat", "iss", "sub"],
      };
      return new Response(JSON.stringify(doc), JSON_INIT);
    })
    .get(ROUTES.jwks, async ({ request }) => {
      const openid = discovery ? state.tokens.source.openid : undefined;
      if (!openid) return absent(request);
      try {
        return new Response(JSON.stringify(await openid.jwks()), JSON_INIT);
      } catch (e) {
        return plain(500, `signing keys unavailable: ${(e as Error).message}\n`);
      }
    });
  return options.control ? app.use(controlRoutes(options.control, state.log)).use(testingRoutes(options.control)) : app;
}
