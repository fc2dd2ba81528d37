/**
 * The callers file (`-callers`): who the callers are and how each one's view of the tree differs, kept apart from
 * the config so `config.json` stays drop-in. Read and checked here; each caller's tree is compiled from the served
 * tree and its overlay (http/callers.ts picks a caller's snapshot per request).
 *
 * ```json
 * {"callers":[{"match":{"cidr":"10.0.0.5/32"},
 *              "overlay":{"instance":{"hostname":"pod-a","serviceAccounts":{"default":{"email":"a@p.iam.gserviceaccount.com"}}}}}],
 *  "unmatched":"allow"}
 * ```
 *
 * `overlay` is in the config file's naming without the `computeMetadata.v1` wrapper. It merges key by key (`null`
 * removes a key), except `instance.serviceAccounts`, which replaces the VM's accounts whole: a workload sees its
 * own accounts only, as a pod does under GKE Workload Identity.
 */
import { Cidr } from "../address.ts";
import { ConfigError } from "../errors.ts";
import { isJsonObject, type JsonObject, type JsonValue } from "../json.ts";
import { mergePatch, treeToValue } from "../metadata/edit.ts";
import { jsonPath, type Tree } from "../metadata/tree.ts";
import { parseConfigText, readConfigText, treeFromV1 } from "./claims.ts";

export interface CallerSpec {
  /** `callers[0]`, for messages. */
  at: string;
  /** `name` from the file, else the CIDR: how logs name the caller. */
  name: string;
  cidr: Cidr;
  overlay: JsonObject;
}

export interface CallersSpec {
  /** The file (for messages). */
  source: string;
  callers: CallerSpec[];
  /** What a request no caller matches gets: the served tree, or 403. */
  unmatched: "allow" | "deny";
}

/** Why certificate matches are refused: said once, in the error and in docs/callers.md. */
export const CERT_MATCH_UNSUPPORTED =
  'matching by mTLS client certificate is not supported: Bun.serve does not hand a request\'s peer certificate to its handler (oven-sh/bun#14097), so the subject and SAN cannot be read; match by "cidr" instead';

const shapeError = (source: string, at: string, what: string) => new ConfigError("CONFIG_SHAPE", `${source}: ${at}: ${what}`);

function onlyKeys(o: JsonObject, allowed: readonly string[], source: string, at: string): void {
  for (const k of Object.keys(o)) {
    if (!allowed.includes(k)) throw shapeError(source, jsonPath(at, k), `unknown key; expected one of ${allowed.join(", ")}`);
  }
}

function parseMatch(v: JsonValue | undefined, source: string, at: string): Cidr {
  if (!isJsonObject(v)) throw shapeError(source, at, 'expected an object such as {"cidr":"10.0.0.5/32"}');
  onlyKeys(v, ["cidr", "certSubject", "certSan"], source, at);
  for (const cert of ["certSubject", "certSan"]) {
    if (v[cert] !== undefined) throw new ConfigError("CONFIG_NOT_SUPPORTED", `${source}: ${jsonPath(at, cert)}: ${CERT_MATCH_UNSUPPORTED}`);
  }
  const text = v.cidr;
  if (typeof text !== "string")
    throw shapeError(source, jsonPath(at, "cidr"), 'missing or not a string; give a range such as "10.0.0.5/32"');
  const cidr = Cidr.parse(text);
  if (!cidr)
    throw shapeError(source, jsonPath(at, "cidr"), `${JSON.stringify(text)} is not an address range such as "10.0.0.5/32" or "fd00::/64"`);
  return cidr;
}

/** Check a callers document; throws ConfigError naming the JSON path at fault. */
export function callersFromDocument(doc: JsonValue, source: string): CallersSpec {
  if (!isJsonObject(doc)) throw shapeError(source, "(top level)", 'expected an object {"callers":[…],"unmatched":"allow"}');
  onlyKeys(doc, ["callers", "unmatched"], source, "(top level)");
  const list = doc.callers;
  if (!Array.isArray(list)) throw shapeError(source, "callers", "missing or not an array");
  const unmatched = doc.unmatched ?? "allow";
  if (unmatched !== "allow" && unmatched !== "deny") throw shapeError(source, "unmatched", 'expected "allow" or "deny"');
  const callers = list.map((entry, i): CallerSpec => {
    const at = `callers[${i}]`;
    if (!isJsonObject(entry)) throw shapeError(source, at, 'expected an object {"match":{…},"overlay":{…}}');
    onlyKeys(entry, ["name", "match", "overlay"], source, at);
    const cidr = parseMatch(entry.match, source, `${at}.match`);
    const overlay = entry.overlay ?? Object.create(null);
    if (!isJsonObject(overlay))
      throw shapeError(source, `${at}.overlay`, "expected an object in the config file's naming, without computeMetadata.v1");
    if (overlay.computeMetadata !== undefined)
      throw shapeError(
        source,
        `${at}.overlay.computeMetadata`,
        "leave out the computeMetadata.v1 wrapper: the overlay starts at instance, project, …",
      );
    const name = typeof entry.name === "string" && entry.name !== "" ? entry.name : cidr.text;
    return { at, name, cidr, overlay };
  });
  return { source, callers, unmatched };
}

/** Parse and check a callers file's text. */
export function parseCallersText(text: string, source: string): CallersSpec {
  return callersFromDocument(parseConfigText(text, source), source);
}

/** Read, parse and check a callers file; the text is returned for the watcher to compare against. */
export async function readCallersFile(path: string): Promise<{ text: string; spec: CallersSpec }> {
  const text = await readConfigText(path);
  return { text, spec: parseCallersText(text, path) };
}

/** A caller's tree: the served tree with the caller's overlay. Throws ConfigError naming `callers[i].overlay…`. */
export function callerTree(served: Tree, caller: CallerSpec, source: string): Tree {
  let v1 = treeToValue(served) as JsonObject;
  const instance = caller.overlay.instance;
  if (isJsonObject(instance) && instance.serviceAccounts !== undefined) {
    v1 = mergePatch(v1, { instance: { serviceAccounts: null } } as unknown as JsonObject) as JsonObject;
  }
  const merged = mergePatch(v1, caller.overlay) as JsonObject;
  return treeFromV1(merged, { requireDefaultAccount: false, source, root: `${caller.at}.overlay` });
}
