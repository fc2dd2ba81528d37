/**
 * The shape of the real metadata tree: which keys Google defines, their value types, and which directories hold
 * free-form keys. Config files use the JSON spelling (camelCase); paths use kebab-case for the keys defined here and
 * the exact spelling for everything else (attributes, e-mails, partner namespaces, keys a user adds).
 */

import type { JsonValue } from "../json.ts";

export type Schema =
  /**
   * A directory with Google-defined keys; keys not listed are user keys, served verbatim. `defaults` gives the
   * values of keys a directory named `name` always has on a VM, filled in where it is created without them.
   */
  | { t: "dir"; keys: Readonly<Record<string, Field>>; defaults?: (name: string) => Record<string, JsonValue> }
  /** A directory of user-chosen keys (attributes, service accounts, partner namespaces). */
  | { t: "free"; value: Schema }
  /** An array addressable element by element: `disks/0/`, `forwarded-ips/1`. */
  | { t: "list"; item: Schema }
  /** An array served whole as one leaf: one item per line, a JSON array with alt=json (`scopes`, `tags`). */
  | { t: "values" }
  /** A leaf rendered as a JSON string. */
  | { t: "string" }
  /** A service account's e-mail: a string that must be an address (it goes into IAM URLs and token requests). */
  | { t: "email" }
  /** A leaf rendered as a JSON number (`id`, `mtu`); digits only, any size. */
  | { t: "int" }
  /** A leaf holding a JSON document, served as application/json; `indent` for the workload-certificate style. */
  | { t: "doc"; indent?: number; snakeKeys?: boolean }
  /** Anything: the type follows the config value. */
  | { t: "any" };

export interface Field {
  schema: Schema;
  /** Path segment when it is not the kebab-case of the JSON key. */
  path?: string;
}

const S = { t: "string" } as const satisfies Schema;
const I = { t: "int" } as const satisfies Schema;
const V = { t: "values" } as const satisfies Schema;
const ANY = { t: "any" } as const satisfies Schema;
const f = (schema: Schema, path?: string): Field => (path ? { schema, path } : { schema });
const dir = (keys: Record<string, Field>): Schema => ({ t: "dir", keys });
const strings = (...names: string[]): Record<string, Field> => Object.fromEntries(names.map((n) => [n, f(S)]));

/**
 * A service account lists `aliases`, `email`, `scopes` (and the `identity` and `token` endpoints) on every VM, so an
 * account given without some of them gets them: the alias `default` for the default account (none for others), its
 * path name as e-mail (the `default` account's must be given), and no scopes.
 */
export const serviceAccountSchema: Schema = {
  t: "dir",
  keys: { aliases: f(V), email: f({ t: "email" }), scopes: f(V) },
  defaults: (name): Record<string, JsonValue> =>
    name === "default" ? { aliases: ["default"], scopes: [] } : { aliases: [], email: name, scopes: [] },
};

const networkInterface = dir({
  accessConfigs: f({ t: "list", item: dir({ ...strings("externalIp", "type"), externalIpv6: f(S) }) }),
  dnsServers: f(V),
  forwardedIps: f({ t: "list", item: S }),
  forwardedIpv6s: f({ t: "list", item: S }),
  ipAliases: f({ t: "list", item: S }),
  ipv6s: f(V),
  mtu: f(I),
  targetInstanceIps: f(V),
  ...strings("gateway", "ip", "mac", "network", "subnetmask", "ipv6Gateway", "ipv6Prefix"),
});

const instance = dir({
  attributes: f({ t: "free", value: S }),
  credentials: f({ t: "free", value: ANY }),
  disks: f({
    t: "list",
    item: dir({ index: f(I), ...strings("deviceName", "interface", "mode", "type") }),
  }),
  gceWorkloadCertificates: f(
    dir({
      configStatus: f({ t: "doc", indent: 1 }),
      trustAnchors: f({ t: "doc", indent: 1 }),
      workloadIdentities: f({ t: "doc", indent: 1 }),
    }),
  ),
  guestAttributes: f({ t: "free", value: { t: "free", value: S } }),
  id: f(I),
  legacyEndpointAccess: f({ t: "free", value: I }),
  licenses: f({ t: "list", item: dir({ id: f(S) }) }),
  networkInterfaces: f({ t: "list", item: networkInterface }),
  partnerAttributes: f({ t: "free", value: ANY }),
  remainingCpuTime: f(I),
  scheduling: f(
    dir({
      ...strings(
        "automaticRestart",
        "onHostMaintenance",
        "preemptible",
        "provisioningModel",
        "instanceTerminationAction",
        "terminationTime",
        "availabilityDomain",
      ),
    }),
  ),
  serviceAccounts: f({ t: "free", value: serviceAccountSchema }),
  shutdownDetails: f(dir({ maxDuration: f(I), requestTimestamp: f(S, "request-timestamp"), ...strings("stopState", "targetState") })),
  tags: f(V),
  upcomingMaintenance: f({ t: "doc", snakeKeys: true }),
  virtualClock: f(dir({ driftToken: f(S) })),
  workloadCertificatesConfigStatus: f({ t: "doc", indent: 1 }),
  workloadIdentities: f({ t: "doc", indent: 1 }),
  workloadTrustedRootCerts: f({ t: "doc", indent: 1 }),
  ...strings("cpuPlatform", "description", "hostname", "image", "machineType", "maintenanceEvent", "name", "preempted", "zone"),
});

const project = dir({
  attributes: f({ t: "free", value: S }),
  numericProjectId: f(I),
  projectId: f(S),
});

/** `computeMetadata.v1` of the config file. */
export const v1Schema: Schema = dir({
  instance: f(instance),
  oslogin: f({ t: "free", value: ANY }),
  project: f(project),
  universe: f(dir({ universeDomain: f(S) })),
});

/** `fooBarBaz` → `foo-bar-baz`; the path spelling of a Google-defined JSON key. */
export function kebab(key: string): string {
  return key.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`);
}

/** `latestWindowStartTime` → `latest_window_start_time`. */
export function snake(key: string): string {
  return key.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);
}
