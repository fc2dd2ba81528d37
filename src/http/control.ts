/**
 * The control API (off by default; `-controlAPI`), served under /emulator/v1/ on the metadata listener. It changes
 * what the emulator serves, in memory: every change is a snapshot swap, so hanging GETs wake; nothing is written
 * back to the config file, and the next change of that file replaces these changes. The routes are declared here
 * with the patterns of routes.ts; errors thrown by the handlers are answered by the app's one `onError` (app.ts).
 *
 * Google's reference emulator's update routes, kept exactly (bodies URL-encoded, path naming, its answers):
 *   POST   /emulator/v1/update/<path>   set a node (a string for leaves, JSON for directories and lists)
 *   DELETE /emulator/v1/update/<path>   delete an attribute or a list position
 *   POST   /emulator/v1/update/         replace the whole v1 tree (JSON, checked against the current shape)
 * This server's own routes, with JSON bodies in the config file's naming (camelCase Google keys):
 *   GET    /emulator/v1/metadata/<path>   the value at a metadata path
 *   PUT    /emulator/v1/metadata/<path>   replace it (or create an attribute)
 *   PATCH  /emulator/v1/metadata/<path>   JSON merge patch (RFC 7396; null deletes a key)
 *   DELETE /emulator/v1/metadata/<path>   delete an attribute or list position
 *   GET    /emulator/v1/config            the whole config document; PUT replaces it (as a new config file would)
 *   GET    /emulator/v1/lifecycle         simulated events; POST …/maintenance, POST …/preemption; DELETE …/<id>
 *   GET    /emulator/v1/status            hanging requests, config reload counters
 *   GET    /emulator/v1/clock             the virtual clock; POST {"advance":"58m"} or {"set":"<RFC 3339>"}; DELETE resets
 *   GET    /emulator/v1/faults            fault-injection rules; POST adds one; DELETE …/<id> or all (control-testing.ts)
 * Every route needs `Metadata-Flavor: Google` and refuses `X-Forwarded-For` and `Forwarded`, like the metadata paths;
 * with a token (`-controlTokenFile`), also `Authorization: Bearer <token>` (401 otherwise). Bodies are capped
 * (`-maxControlBodyBytes`, 413 beyond). While real credentials mint the tokens, changes that create or rename a
 * service account, or give one a scope it did not have, are refused (403): such an account would get tokens from
 * the operator's credentials.
 *
 * The checks run twice: in `controlGate`, before the app routes (and parses) a request, and in the routes'
 * `onBeforeHandle`, on whatever path spelling Elysia matched.
 */
import { Elysia, t } from "elysia";
import type { ChangeHub } from "../changes/hub.ts";
import type { Clock } from "../clock.ts";
import type { ConfigStore } from "../config/store.ts";
import { ConfigError, RequestError } from "../errors.ts";
import {
  type Lifecycle,
  type LifecycleEvent,
  maintenanceFrom,
  parseMaintenanceSpec,
  parsePreemptionSpec,
  preemptionFrom,
} from "../events/lifecycle.ts";
import { isJsonObject, type JsonValue, parseJson } from "../json.ts";
import type { Logger } from "../log.ts";
import { referenceDelete, referenceReplaceAll, referenceSet } from "../metadata/reference-update.ts";
import { BASE_HEADERS, JSON_TYPE, TEXT } from "../metadata/snapshot.ts";
import type { Tree } from "../metadata/tree.ts";
import { deleteAt, mergeAt, notFoundAt, setAt, splitPath } from "../metadata/edit.ts";
import type { FaultRules } from "./faults.ts";
import { readCapped, TooLarge } from "./body.ts";
import { type ControlOptions, controlGate } from "./control-gate.ts";
import { accountChange } from "../metadata/accounts.ts";
import { ROUTES } from "./routes.ts";

/** What the control API drives; MetadataServer is one. */
export interface ControlTarget {
  readonly store: ConfigStore;
  readonly lifecycle: Lifecycle;
  readonly changes: ChangeHub;
  readonly clock: Clock;
  readonly faults: FaultRules;
  /** Why account changes are refused now (real credentials), or undefined when they are allowed. */
  accountChangesRefused(): string | undefined;
}

/** A body read under the cap; over it, the 413 is thrown for the app's onError. */
async function cappedText(request: Request, limit: number): Promise<string> {
  const text = await readCapped(request, limit);
  if (text instanceof TooLarge) {
    throw new RequestError(413, "TOO_LARGE", `the request body is over the control API's limit of ${limit} bytes (-maxControlBodyBytes)`);
  }
  return text;
}

const HTML = "text/html; charset=UTF-8";

// The reference emulator's answers, byte for byte.
const ref = (status: number, body: string, type = HTML): Response =>
  new Response(body, { status, headers: { ...BASE_HEADERS, "Content-Type": type } });
const UPDATE_OK = () => ref(200, "Update successful", TEXT);
const NO_CONTENT = () => ref(400, "Error: no content specified with the POST request.");
const BAD_FORMAT = () => ref(400, "Updated data does not have the correct format");
const FIXED_KEYS = () => ref(400, "Cannot add or remove data at the specified path");
const REF_NOT_FOUND = () => ref(404, "Error: Not found");

export const json = (status: number, body: string): Response =>
  new Response(body, { status, headers: { ...BASE_HEADERS, "Content-Type": JSON_TYPE } });
const noContent = () => new Response(null, { status: 204, headers: BASE_HEADERS });

/** Python's unquote_plus: `+` is a space, bad escapes stay as they are. */
function unquotePlus(s: string): string {
  const spaced = s.replace(/\+/g, " ");
  try {
    return decodeURIComponent(spaced);
  } catch {
    return spaced.replace(/%[0-9a-fA-F]{2}/g, (m) => {
      try {
        return decodeURIComponent(m);
      } catch {
        return m;
      }
    });
  }
}

/** The metadata path a wildcard route names, percent-decoded. */
function pathParam(raw: string | undefined): string {
  try {
    return decodeURIComponent(raw ?? "");
  } catch {
    throw new RequestError(400, "BAD_PATH", `malformed percent-encoding in ${JSON.stringify(raw)}`);
  }
}

/** A JSON body, numbers kept exactly (ids beyond 2^53); a syntax error names the line and column. */
async function exactJson(request: Request, limit: number): Promise<JsonValue> {
  const text = await cappedText(request, limit);
  try {
    return parseJson(text);
  } catch (e) {
    if (e instanceof ConfigError) throw new ConfigError(e.code, `request body: ${e.message}`, { cause: e });
    throw new ConfigError("CONFIG_SYNTAX", `request body: invalid JSON at ${(e as Error).message}`, { cause: e });
  }
}

/** A body that is a JSON object, or the matching flag's `key=value,…` text (lifecycle events, faults). */
export async function specBody(request: Request, limit: number): Promise<Record<string, unknown> | string> {
  const text = (await cappedText(request, limit)).trim();
  if (!text.startsWith("{")) return text;
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch (e) {
    throw new RequestError(400, "BAD_REQUEST", `request body: invalid JSON (${(e as Error).message})`);
  }
  if (!isJsonObject(body as JsonValue)) throw new RequestError(400, "BAD_REQUEST", "the body must be a JSON object");
  return body as Record<string, unknown>;
}

/** A route that answers 405 naming the methods it takes. */
export const methods =
  (allowed: string) =>
  ({ request }: { request: Request }): never => {
    throw new RequestError(405, "METHOD", `${request.method} is not supported here: use ${allowed}`);
  };

export function controlRoutes(options: ControlOptions, log: Logger) {
  const { target, maxBodyBytes } = options;
  const { store, lifecycle } = target;
  const gate = controlGate({ ...options, maxBodyBytes: Number.POSITIVE_INFINITY });

  /** Refuse a change that creates, renames or widens an account while real credentials mint the tokens. */
  function checkAccounts(previous: Tree, next: Tree): void {
    const why = target.accountChangesRefused();
    if (why === undefined) return;
    const change = accountChange(previous, next);
    if (change) {
      throw new RequestError(
        403,
        "ACCOUNT_CHANGE_REFUSED",
        `refused: ${change}, and ${why}; change the config file instead (the file is the operator's)`,
      );
    }
  }
  /** Every edit of the tree from this API, checked for account changes. */
  const edit = (change: (t: Tree) => Tree) =>
    store.editTree((t) => {
      const next = change(t);
      if (next !== t) checkAccounts(t, next);
      return next;
    });

  /** Apply a change the reference's way: its fixed answers for its errors. */
  function reference(change: (t: Tree) => Tree): Response {
    try {
      edit(change);
      return UPDATE_OK();
    } catch (e) {
      if (!(e instanceof ConfigError)) throw e;
      log.debug("update refused", { error: e.message });
      if (e.code === "EDIT_NOT_FOUND") return REF_NOT_FOUND();
      if (e.code === "EDIT_FIXED_KEYS") return FIXED_KEYS();
      return BAD_FORMAT();
    }
  }

  const current = (path: string): Response => {
    const v = store.getJson(path);
    // Named as PUT and DELETE name it: the first missing node, no leading or trailing slash.
    if (v === undefined) throw notFoundAt(store.current.tree, splitPath(path));
    return json(200, v);
  };
  const scheduled = (event: LifecycleEvent) => json(201, JSON.stringify(event));

  return (
    new Elysia({ name: "control-api" })
      .parser("exactJson", ({ request }) => exactJson(request, maxBodyBytes))
      .parser("lifecycle", ({ request }) => specBody(request, maxBodyBytes))
      // Admission, as for metadata paths, and the token.
      .onBeforeHandle(({ request }) => gate(request))
      // Google's reference emulator's routes: the body is URL-encoded text.
      .post(
        ROUTES.update,
        async ({ params, request }) => {
          const path = pathParam(params["*"]);
          const body = unquotePlus(await cappedText(request, maxBodyBytes));
          if (!body) return NO_CONTENT();
          return reference((t) => (path === "" ? referenceReplaceAll(t, body) : referenceSet(t, path, body)));
        },
        { parse: "none" },
      )
      .delete(ROUTES.update, ({ params }) => {
        const path = pathParam(params["*"]);
        return path === "" ? ref(405, "Method Not Allowed") : reference((t) => referenceDelete(t, path));
      })
      .all(ROUTES.update, () => ref(405, "Method Not Allowed"))
      // This server's JSON routes.
      .get(ROUTES.metadataRoot, () => current(""))
      .get(ROUTES.metadata, ({ params }) => current(pathParam(params["*"])))
      .put(
        ROUTES.metadata,
        ({ params, body }) => {
          const path = pathParam(params["*"]);
          edit((t) => setAt(t, path, body as JsonValue));
          return current(path);
        },
        { parse: "exactJson" },
      )
      .patch(
        ROUTES.metadata,
        ({ params, body }) => {
          const path = pathParam(params["*"]);
          edit((t) => mergeAt(t, path, body as JsonValue));
          return store.getJson(path) === undefined ? noContent() : current(path);
        },
        { parse: "exactJson" },
      )
      .delete(ROUTES.metadata, ({ params }) => {
        const path = pathParam(params["*"]);
        edit((t) => deleteAt(t, path));
        return noContent();
      })
      .all(ROUTES.metadata, methods("GET, PUT, PATCH or DELETE"))
      .all(ROUTES.metadataRoot, methods("GET"))
      .get(ROUTES.config, () => json(200, store.configDocument()))
      .put(
        ROUTES.config,
        ({ body }) => {
          store.replaceClaims(body, checkAccounts, "request body");
          return json(200, store.configDocument());
        },
        { parse: "exactJson", body: t.Object({}, { additionalProperties: true }) },
      )
      .all(ROUTES.config, methods("GET or PUT"))
      .get(ROUTES.lifecycle, () => json(200, JSON.stringify(lifecycle.list())))
      .post(
        ROUTES.maintenance,
        ({ body }) =>
          scheduled(
            lifecycle.scheduleMaintenance(
              typeof body === "string" ? parseMaintenanceSpec(body) : maintenanceFrom(body as Record<string, unknown>),
            ),
          ),
        // Checked by maintenanceFrom, which refuses unknown fields (a schema here would drop them silently).
        { parse: "lifecycle" },
      )
      .post(
        ROUTES.preemption,
        ({ body }) =>
          scheduled(
            lifecycle.schedulePreemption(
              typeof body === "string" ? parsePreemptionSpec(body) : preemptionFrom(body as Record<string, unknown>),
            ),
          ),
        { parse: "lifecycle" },
      )
      .delete(ROUTES.lifecycleEvent, ({ params }) => {
        const event = lifecycle.cancel(params.event);
        if (!event) throw new RequestError(404, "NOT_FOUND", `no scheduled or ongoing event ${JSON.stringify(params.event)}`);
        return json(200, JSON.stringify(event));
      })
      .get(ROUTES.status, () => {
        const s = store.reloadStats;
        return json(
          200,
          JSON.stringify({
            waiters: target.changes.size,
            watchedNodes: target.changes.bucketCount,
            configReloads: s.reloads,
            configReloadFailures: s.failures,
            lastReloadError: s.lastError ?? null,
            guestAttributes: store.current.guestAttributes,
          }),
        );
      })
  );
}
