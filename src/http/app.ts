/**
 * What the listener runs: the metadata guard first on every request, answering everything under /computeMetadata
 * (and /) from the snapshot; the Elysia app behind it serves the routes of routes.ts on the same listener.
 *
 * Why the tree is not an Elysia route: measured here, Elysia in front of a cached answer costs about 5% of leaf
 * throughput through `onRequest` (about 15% as a route, 27% through `mount`), and importing it costs about 4.5 ms of
 * start-up. So the guard answers the tree, and Elysia is loaded on the first request outside it.
 */
import { CredentialError, MetadataError, RequestError } from "../errors.ts";
import { BASE_HEADERS, JSON_TYPE } from "../metadata/snapshot.ts";
import { pathAndQuery, splitUrl } from "../metadata/path.ts";
import type { ControlTarget } from "./control.ts";
import { createMetadataHandler, type ServerHooks, type ServingState } from "./handler.ts";
import { notFound, plain } from "./pages.ts";
import { ROUTES } from "./routes.ts";

export interface AppOptions {
  /** Serve the control API under /emulator/v1/ (see control.ts). */
  control?: ControlTarget;
}

const JSON_INIT: ResponseInit = { headers: { ...BASE_HEADERS, "Content-Type": JSON_TYPE } };
const CONTROL_PREFIX = "/emulator/v1/";

/** The listener's fetch handler: the guard, then the app's routes. */
export function createFetch(
  state: ServingState,
  options: AppOptions = {},
): (req: Request, server: ServerHooks) => Response | Promise<Response> {
  const guard = createMetadataHandler(state);
  // In the compiled executable a dynamic import keeps Elysia in its own chunk, off the start-up path.
  let app: ReturnType<typeof createApp> | undefined;
  return (req, server) => guard(req, server) ?? (app ??= createApp(state, options)).then((a) => a.handle(withHost(req)));
}

/** Elysia routes on the URL's path after a host; a request Bun handed over without one gets the metadata host. */
function withHost(req: Request): Request {
  return req.url.charCodeAt(0) === 47 ? new Request(`http://metadata.google.internal${req.url}`, req) : req;
}

/** `{"error":{"code","message"}}` with a status: how the control API reports what it refused. */
export function errorAnswer(status: number, code: string, message: string): Response {
  return new Response(JSON.stringify({ error: { code, message } }), { ...JSON_INIT, status });
}

/** The status for an error a route threw: what the client got wrong is 4xx, the rest 500. */
function statusOf(e: MetadataError): number {
  if (e instanceof RequestError) return e.status;
  if (e.code === "EDIT_NOT_FOUND") return 404;
  if (e instanceof CredentialError) return 500;
  return 400;
}

/** Routes beside the metadata tree. */
export async function createApp(state: ServingState, options: AppOptions = {}) {
  const { Elysia } = await import("elysia");
  const [{ controlRoutes }, { testingRoutes }] = await Promise.all([import("./control.ts"), import("./control-testing.ts")]);
  const app = new Elysia({ strictPath: true })
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
        return options.control && path.startsWith(CONTROL_PREFIX)
          ? errorAnswer(404, "NOT_FOUND", `no route ${request.method} ${path}`)
          : notFound(pathAndQuery(splitUrl(request.url)));
      }
      if (code === "PARSE") return errorAnswer(400, "BAD_REQUEST", `request body: ${(error as Error).message}`);
      state.log.error("request failed", { path, error });
      return plain(500, "Internal Server Error\n");
    })
    // OpenID discovery for the issuer that signs ID tokens here (emulated issuer), so apps verify them offline.
    .get(ROUTES.openidConfiguration, ({ request }) => {
      const openid = state.tokens.source.openid;
      if (!openid) return notFound(pathAndQuery(splitUrl(request.url)));
      const host = request.headers.get("host") || "metadata.google.internal";
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
      const openid = state.tokens.source.openid;
      if (!openid) return notFound(pathAndQuery(splitUrl(request.url)));
      try {
        return new Response(JSON.stringify(await openid.jwks()), JSON_INIT);
      } catch (e) {
        return plain(500, `signing keys unavailable: ${(e as Error).message}\n`);
      }
    });
  return options.control ? app.use(controlRoutes(options.control, state.log)).use(testingRoutes(options.control)) : app;
}
