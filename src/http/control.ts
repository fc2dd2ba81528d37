/**
 * The control API (off by default; `-controlAPI`), served under /emulator/v1/ on the metadata listener. It changes
 * what the emulator serves, in memory: every change is a snapshot swap, so hanging GETs wake; nothing is written
 * back to the config file, and the next change of that file replaces these changes.
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
 * Every route needs `Metadata-Flavor: Google` and refuses `X-Forwarded-For`, like the metadata paths.
 */
import { Elysia } from "elysia";
import { ConfigError, UsageError } from "../errors.ts";
import { isJsonObject, parseJson, type JsonValue } from "../config/json.ts";
import { BASE_HEADERS, JSON_TYPE, TEXT, type Snapshot } from "../metadata/snapshot.ts";
import type { Tree } from "../metadata/tree.ts";
import { deleteAt, EditError, mergeAt, referenceDelete, referenceReplaceAll, referenceSet, setAt } from "../metadata/edit.ts";
import {
  maintenanceFrom,
  parseMaintenanceSpec,
  parsePreemptionSpec,
  preemptionFrom,
  type Lifecycle,
  type LifecycleEvent,
} from "../changes/lifecycle.ts";
import type { ChangeHub } from "../changes/hub.ts";
import type { Logger } from "../observability/log.ts";
import { forwarded, missingFlavor } from "./pages.ts";

/** What the control API drives; MetadataServer is one. */
export interface ControlTarget {
  readonly snapshot: Snapshot;
  editTree(fn: (tree: Tree) => Tree): void;
  getJson(path: string): string | undefined;
  configDocument(): string;
  replaceClaims(doc: object): void;
  readonly lifecycle: Lifecycle;
  readonly changes: ChangeHub;
  readonly reloadStats: { reloads: number; failures: number; lastError: string | undefined };
}

const PREFIX = "/emulator/v1/";
const HTML = "text/html; charset=UTF-8";

// The reference emulator's answers, byte for byte.
const ref = (status: number, body: string, type = HTML): Response =>
  new Response(body, { status, headers: { ...BASE_HEADERS, "Content-Type": type } });
const UPDATE_OK = () => ref(200, "Update successful", TEXT);
const NO_CONTENT = () => ref(400, "Error: no content specified with the POST request.");
const BAD_FORMAT = () => ref(400, "Updated data does not have the correct format");
const FIXED_KEYS = () => ref(400, "Cannot add or remove data at the specified path");
const REF_NOT_FOUND = () => ref(404, "Error: Not found");

const json = (status: number, body: string): Response =>
  new Response(body, { status, headers: { ...BASE_HEADERS, "Content-Type": JSON_TYPE } });
const jsonError = (status: number, code: string, message: string): Response => json(status, JSON.stringify({ error: { code, message } }));

function pathOf(url: string): { path: string; query: string } {
  let p0 = 0;
  if (!url.startsWith("/")) {
    const scheme = url.indexOf("://");
    p0 = scheme < 0 ? 0 : url.indexOf("/", scheme + 3);
    if (p0 < 0) p0 = url.length;
  }
  const q = url.indexOf("?", p0);
  return { path: q < 0 ? url.slice(p0) : url.slice(p0, q), query: q < 0 ? "" : url.slice(q + 1) };
}

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

export function controlRoutes(target: ControlTarget, log: Logger) {
  /** Apply a change; map edit errors to the reference's answers. */
  function reference(change: (t: Tree) => Tree): Response {
    try {
      target.editTree(change);
      return UPDATE_OK();
    } catch (e) {
      if (!(e instanceof ConfigError)) throw e;
      log.debug("update refused", { error: e.message });
      if (e.code === "EDIT_NOT_FOUND") return REF_NOT_FOUND();
      if (e.code === "EDIT_FIXED_KEYS") return FIXED_KEYS();
      return BAD_FORMAT();
    }
  }

  /** Apply a change through this server's own routes; errors as JSON naming the path. */
  function own(change: () => Response): Response {
    try {
      return change();
    } catch (e) {
      if (e instanceof EditError && e.code === "EDIT_NOT_FOUND") return jsonError(404, e.code, e.message);
      if (e instanceof ConfigError || e instanceof UsageError) return jsonError(400, e.code, e.message);
      throw e;
    }
  }

  function parseBody(text: string, what: string): JsonValue {
    try {
      return parseJson(text);
    } catch (e) {
      throw new ConfigError("CONFIG_SYNTAX", `${what}: invalid JSON at ${(e as Error).message}`);
    }
  }

  async function handle(request: Request): Promise<Response> {
    const { path: raw } = pathOf(request.url);
    const headers = request.headers;
    if (headers.get("x-forwarded-for") !== null) return forwarded(raw);
    if (headers.get("metadata-flavor") !== "Google") return missingFlavor(raw);
    let rest: string;
    try {
      rest = decodeURIComponent(raw.slice(PREFIX.length));
    } catch {
      return jsonError(400, "BAD_PATH", `malformed percent-encoding in ${raw}`);
    }
    const method = request.method;

    // Google's reference emulator's routes.
    if (rest.startsWith("update/")) {
      const path = rest.slice("update/".length);
      if (method === "DELETE" && path !== "") return reference((t) => referenceDelete(t, path));
      if (method !== "POST") return ref(405, "Method Not Allowed");
      const body = unquotePlus(await request.text());
      if (!body) return NO_CONTENT();
      return reference((t) => (path === "" ? referenceReplaceAll(t, body) : referenceSet(t, path, body)));
    }

    if (rest === "metadata" || rest.startsWith("metadata/")) {
      const path = rest.slice("metadata".length);
      const current = () => {
        const v = target.getJson(path);
        return v === undefined ? jsonError(404, "EDIT_NOT_FOUND", `${path || "/"}: no such node`) : json(200, v);
      };
      switch (method) {
        case "GET":
          return current();
        case "PUT": {
          const text = await request.text();
          return own(() => {
            const value = parseBody(text, "request body");
            target.editTree((t) => setAt(t, path, value));
            return current();
          });
        }
        case "PATCH": {
          const text = await request.text();
          return own(() => {
            const patch = parseBody(text, "request body");
            target.editTree((t) => mergeAt(t, path, patch));
            return target.getJson(path) === undefined ? new Response(null, { status: 204, headers: BASE_HEADERS }) : current();
          });
        }
        case "DELETE":
          return own(() => {
            target.editTree((t) => deleteAt(t, path));
            return new Response(null, { status: 204, headers: BASE_HEADERS });
          });
        default:
          return jsonError(405, "METHOD", `${method} is not supported here: use GET, PUT, PATCH or DELETE`);
      }
    }

    if (rest === "config") {
      if (method === "GET") return json(200, target.configDocument());
      if (method !== "PUT") return jsonError(405, "METHOD", `${method} is not supported here: use GET or PUT`);
      const text = await request.text();
      return own(() => {
        target.replaceClaims(parseBody(text, "request body") as object);
        return json(200, target.configDocument());
      });
    }

    if (rest === "lifecycle" || rest.startsWith("lifecycle/")) {
      const sub = rest.slice("lifecycle".length).replace(/^\//, "");
      if (sub === "" && method === "GET") return json(200, JSON.stringify(target.lifecycle.list()));
      if ((sub === "maintenance" || sub === "preemption") && method === "POST") {
        const text = (await request.text()).trim();
        return own(() => {
          let event: LifecycleEvent;
          if (text.startsWith("{")) {
            let body: unknown;
            try {
              body = JSON.parse(text);
            } catch (e) {
              throw new UsageError("USAGE", `request body: invalid JSON (${(e as Error).message})`);
            }
            if (!isJsonObject(body as JsonValue)) throw new UsageError("USAGE", "the body must be a JSON object");
            const o = body as Record<string, unknown>;
            event =
              sub === "maintenance"
                ? target.lifecycle.scheduleMaintenance(maintenanceFrom(o))
                : target.lifecycle.schedulePreemption(preemptionFrom(o));
          } else {
            event =
              sub === "maintenance"
                ? target.lifecycle.scheduleMaintenance(parseMaintenanceSpec(text))
                : target.lifecycle.schedulePreemption(parsePreemptionSpec(text));
          }
          return json(201, JSON.stringify(event));
        });
      }
      if (sub !== "" && method === "DELETE") {
        const event = target.lifecycle.cancel(sub);
        return event
          ? json(200, JSON.stringify(event))
          : jsonError(404, "NOT_FOUND", `no scheduled or ongoing event ${JSON.stringify(sub)}`);
      }
      return jsonError(404, "NOT_FOUND", `no route ${method} ${raw}`);
    }

    if (rest === "status" && method === "GET") {
      const s = target.reloadStats;
      return json(
        200,
        JSON.stringify({
          waiters: target.changes.size,
          watchedNodes: target.changes.bucketCount,
          configReloads: s.reloads,
          configReloadFailures: s.failures,
          lastReloadError: s.lastError ?? null,
          guestAttributes: target.snapshot.guestAttributes,
        }),
      );
    }
    return jsonError(404, "NOT_FOUND", `no route ${method} ${raw}`);
  }

  return new Elysia({ name: "control-api" }).all("/emulator/v1/*", ({ request }) => handle(request), { parse: "none" });
}
