/**
 * What the listener runs: the metadata guard first on every request, answering everything under /computeMetadata
 * (and /) from the snapshot; the Elysia app behind it serves what lives beside the tree on the same listener.
 */
import { createMetadataHandler, type ServerHooks, type ServingState } from "./handler.ts";
import { notFound, plain } from "./pages.ts";
import { BASE_HEADERS, JSON_TYPE } from "../metadata/snapshot.ts";
import type { ControlTarget } from "./control.ts";

export interface AppOptions {
  /** Serve the control API under /emulator/v1/ (see control.ts). */
  control?: ControlTarget;
}

const JSON_INIT: ResponseInit = { headers: { ...BASE_HEADERS, "Content-Type": JSON_TYPE } };

function pathAndQuery(url: string): string {
  if (url.startsWith("/")) return url;
  const scheme = url.indexOf("://");
  const slash = scheme < 0 ? -1 : url.indexOf("/", scheme + 3);
  return slash < 0 ? "/" : url.slice(slash);
}

/** The listener's fetch handler: the guard, then the app's routes. */
export function createFetch(
  state: ServingState,
  options: AppOptions = {},
): (req: Request, server: ServerHooks) => Response | Promise<Response> {
  const guard = createMetadataHandler(state);
  // Built on the first request outside the tree: Elysia is most of the bundle, and in the compiled executable a
  // dynamic import keeps it in its own chunk, off the start-up path (bench/startup.ts); many runs never need it.
  let app: ReturnType<typeof createApp> | undefined;
  return (req, server) => guard(req, server) ?? (app ??= createApp(state, options)).then((a) => a.handle(req));
}

/** Routes beside the metadata tree. */
export async function createApp(state: ServingState, options: AppOptions = {}) {
  const { Elysia } = await import("elysia");
  const { controlRoutes } = await import("./control.ts");
  return (
    new Elysia({ strictPath: true })
      // OpenID discovery for the issuer that signs ID tokens here (emulated issuer), so apps verify them offline.
      .get("/.well-known/openid-configuration", ({ request }) => {
        const openid = state.tokens.source.openid;
        if (!openid) return notFound(pathAndQuery(request.url));
        const host = request.headers.get("host") || "metadata.google.internal";
        const base = `${state.scheme}://${host}`;
        const doc = {
          issuer: openid.issuer,
          jwks_uri: `${base}/oauth2/v3/certs`,
          response_types_supported: ["id_token"],
          subject_types_supported: ["public"],
          id_token_signing_alg_values_supported: ["RS256"],
          claims_supported: ["aud", "azp", "email", "email_verified", "exp", "google", "iat", "iss", "sub"],
        };
        return new Response(JSON.stringify(doc), JSON_INIT);
      })
      .get("/oauth2/v3/certs", async ({ request }) => {
        const openid = state.tokens.source.openid;
        if (!openid) return notFound(pathAndQuery(request.url));
        try {
          return new Response(JSON.stringify(await openid.jwks()), JSON_INIT);
        } catch (e) {
          return plain(500, `signing keys unavailable: ${(e as Error).message}\n`);
        }
      })
      .use(options.control ? controlRoutes(options.control, state.log) : new Elysia({ name: "control-api-off" }))
      .onError(({ code, request, error }) => {
        if (code === "NOT_FOUND") return notFound(pathAndQuery(request.url));
        state.log.error("request failed", { path: pathAndQuery(request.url), error });
        return plain(500, "Internal Server Error\n");
      })
  );
}
