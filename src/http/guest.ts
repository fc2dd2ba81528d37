/**
 * Guest-attribute writes: `PUT` and `DELETE` on `/computeMetadata/v1/instance/guest-attributes/<namespace>/<key>`,
 * the only writes the metadata server takes. The value is the request body; both answer 200 with an empty body.
 * Every write is a snapshot swap, so waiters on guest attributes wake like on any other node; the new snapshot
 * compiles only the written key's namespace (metadata/snapshot.ts, `withChange`). Reads need nothing here: guest
 * attributes are ordinary nodes of the snapshot.
 *
 * Any process on the VM may write, so writes are bounded (metadata/guest.ts): a value over its cap is 413 before
 * the body is read, and the key, namespace and total limits are checked against the tree being served.
 */
import { BASE_HEADERS, GUEST_ATTRIBUTES, TEXT, type Snapshot } from "../metadata/snapshot.ts";
import type { Tree } from "../metadata/tree.ts";
import {
  checkGuestWrite,
  DEFAULT_GUEST_LIMITS,
  deleteGuestAttribute,
  GUEST,
  GUEST_NAME,
  type GuestAttributeLimits,
  putGuestAttribute,
} from "../metadata/guest.ts";
import { badRequest, guestAttributesDisabled, methodNotAllowed, plain } from "./pages.ts";
import type { Handled } from "./handler.ts";
import { normalisePath } from "../metadata/path.ts";
import { readCapped, TooLarge } from "./body.ts";

export interface GuestAttributeStore {
  readonly current: Snapshot;
  /** Apply a platform edit confined to the subtree at `segs` and swap in the new snapshot (none when unchanged). */
  editAt(segs: readonly string[], fn: (tree: Tree) => Tree): void;
}

const OK_INIT: ResponseInit = { headers: { ...BASE_HEADERS, "Content-Type": TEXT } };
const BASE = GUEST_ATTRIBUTES.slice(0, -1);

/** The `writes` hook of the request guard; undefined (405) for paths that are not guest-attribute keys. */
export function createGuestWrites(
  store: GuestAttributeStore,
  limits: GuestAttributeLimits = DEFAULT_GUEST_LIMITS,
): (req: Request, rawPath: string) => Handled {
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
    const segs = [...GUEST, ns, key];
    if (method === "DELETE") {
      store.editAt(segs, (t) => deleteGuestAttribute(t, ns, key));
      return new Response("", OK_INIT);
    }
    return readCapped(req, limits.maxValueBytes).then((value) => {
      if (value instanceof TooLarge) {
        const size = value.declared !== undefined ? `${value.declared} bytes` : "larger than that";
        return plain(413, `the value is ${size}, over the limit of ${value.limit} bytes per guest attribute (-maxGuestValueBytes)\n`);
      }
      // The feature may have been switched off while the body arrived.
      if (!store.current.guestAttributes) return guestAttributesDisabled();
      const refused = checkGuestWrite(store.current.tree, ns, key, Buffer.byteLength(value), limits);
      if (refused) return plain(refused.status, `${refused.message}\n`);
      store.editAt(segs, (t) => putGuestAttribute(t, ns, key, value));
      return new Response("", OK_INIT);
    });
  };
}
