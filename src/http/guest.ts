/**
 * Guest-attribute writes: `PUT` and `DELETE` on `/computeMetadata/v1/instance/guest-attributes/<namespace>/<key>`,
 * the only writes the metadata server takes. The value is the request body; both answer 200 with an empty body.
 * Every write is a snapshot swap, so waiters on guest attributes wake like on any other node. Reads need nothing
 * here: guest attributes are ordinary nodes of the snapshot.
 */
import { BASE_HEADERS, GUEST_ATTRIBUTES, TEXT, type Snapshot } from "../metadata/snapshot.ts";
import type { Tree } from "../metadata/tree.ts";
import { deleteGuestAttribute, GUEST_NAME, putGuestAttribute } from "../metadata/guest.ts";
import { badRequest, guestAttributesDisabled, methodNotAllowed } from "./pages.ts";
import type { Handled } from "./handler.ts";
import { normalisePath } from "../metadata/path.ts";

export interface GuestAttributeStore {
  readonly current: Snapshot;
  /** Apply a platform edit and swap in the new snapshot (no swap when the tree is returned unchanged). */
  editTree(fn: (tree: Tree) => Tree): void;
}

const OK_INIT: ResponseInit = { headers: { ...BASE_HEADERS, "Content-Type": TEXT } };
const BASE = GUEST_ATTRIBUTES.slice(0, -1);

/** The `writes` hook of the request guard; undefined (405) for paths that are not guest-attribute keys. */
export function createGuestWrites(store: GuestAttributeStore): (req: Request, rawPath: string) => Handled {
  return (req, rawPath) => {
    // Escapes the server refuses in paths stay as they are, and fail the name check below.
    const path = normalisePath(rawPath) ?? rawPath;
    if (path !== BASE && !path.startsWith(GUEST_ATTRIBUTES)) return undefined;
    const parts = path.slice(GUEST_ATTRIBUTES.length).split("/");
    if (parts.length !== 2 || parts[0] === "" || parts[1] === "") return undefined;
    const method = req.method;
    if (method !== "PUT" && method !== "DELETE") return methodNotAllowed(method, path, "GET, HEAD, PUT, DELETE");
    if (!store.current.guestAttributes) return guestAttributesDisabled();
    const [ns, key] = parts as [string, string];
    for (const [what, name] of [
      ["namespace", ns],
      ["key", key],
    ] as const) {
      if (!GUEST_NAME.test(name))
        return badRequest(`invalid guest attribute ${what} ${JSON.stringify(name)}: use letters, digits, '_' and '-'`);
    }
    if (method === "DELETE") {
      store.editTree((t) => deleteGuestAttribute(t, ns, key));
      return new Response("", OK_INIT);
    }
    return req.text().then((value) => {
      // The feature may have been switched off while the body arrived.
      if (!store.current.guestAttributes) return guestAttributesDisabled();
      store.editTree((t) => putGuestAttribute(t, ns, key, value));
      return new Response("", OK_INIT);
    });
  };
}
