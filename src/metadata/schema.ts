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

// The tree is written as literal data, no helper calls: it is built at start-up, where every first call of a
// function or builtin costs (about 0.5 ms here for the helper-built version). Fields are read-only, so one object
// serves every key of its kind.
const STR: Field = { schema: S };
const INT: Field = { schema: I };
const VALUES: Field = { schema: V };
const STR_LIST: Field = { schema: { t: "list", item: S } };
const DOC_INDENT_1: Field = { schema: { t: "doc", indent: 1 } };
const FREE_STR: Field = { schema: { t: "free", value: S } };
const FREE_ANY: Field = { schema: { t: "free", value: ANY } };

/**
 * A service account lists `aliases`, `email`, `scopes` (and the `identity` and `token` endpoints) on every VM, so an
 * account given without some of them gets them: the alias `default` for the default account (none for others), its
 * path name as e-mail (the `default` account's must be given), and no scopes.
 */
export const serviceAccountSchema: Schema = {
  t: "dir",
  keys: { aliases: VALUES, email: { schema: { t: "email" } }, scopes: VALUES },
  defaults: (name): Record<string, JsonValue> =>
    name === "default" ? { aliases: ["default"], scopes: [] } : { aliases: [], email: name, scopes: [] },
};

const networkInterface: Schema = {
  t: "dir",
  keys: {
    accessConfigs: { schema: { t: "list", item: { t: "dir", keys: { externalIp: STR, type: STR, externalIpv6: STR } } } },
    dnsServers: VALUES,
    forwardedIps: STR_LIST,
    forwardedIpv6s: STR_LIST,
    ipAliases: STR_LIST,
    ipv6s: VALUES,
    mtu: INT,
    targetInstanceIps: VALUES,
    gateway: STR,
    ip: STR,
    mac: STR,
    network: STR,
    subnetmask: STR,
    ipv6Gateway: STR,
    ipv6Prefix: STR,
  },
};

const instance: Schema = {
  t: "dir",
  keys: {
    attributes: FREE_STR,
    credentials: FREE_ANY,
    disks: {
      schema: { t: "list", item: { t: "dir", keys: { index: INT, deviceName: STR, interface: STR, mode: STR, type: STR } } },
    },
    gceWorkloadCertificates: {
      schema: { t: "dir", keys: { configStatus: DOC_INDENT_1, trustAnchors: DOC_INDENT_1, workloadIdentities: DOC_INDENT_1 } },
    },
    guestAttributes: { schema: { t: "free", value: { t: "free", value: S } } },
    id: INT,
    legacyEndpointAccess: { schema: { t: "free", value: I } },
    licenses: { schema: { t: "list", item: { t: "dir", keys: { id: STR } } } },
    networkInterfaces: { schema: { t: "list", item: networkInterface } },
    partnerAttributes: FREE_ANY,
    remainingCpuTime: INT,
    scheduling: {
      schema: {
        t: "dir",
        keys: {
          automaticRestart: STR,
          onHostMaintenance: STR,
          preemptible: STR,
          provisioningModel: STR,
          instanceTerminationAction: STR,
          terminationTime: STR,
          availabilityDomain: STR,
        },
      },
    },
    serviceAccounts: { schema: { t: "free", value: serviceAccountSchema } },
    shutdownDetails: {
      schema: {
        t: "dir",
        keys: { maxDuration: INT, requestTimestamp: { schema: S, path: "request-timestamp" }, stopState: STR, targetState: STR },
      },
    },
    tags: VALUES,
    upcomingMaintenance: { schema: { t: "doc", snakeKeys: true } },
    virtualClock: { schema: { t: "dir", keys: { driftToken: STR } } },
    workloadCertificatesConfigStatus: DOC_INDENT_1,
    workloadIdentities: DOC_INDENT_1,
    workloadTrustedRootCerts: DOC_INDENT_1,
    cpuPlatform: STR,
    description: STR,
    hostname: STR,
    image: STR,
    machineType: STR,
    maintenanceEvent: STR,
    name: STR,
    preempted: STR,
    zone: STR,
  },
};

const project: Schema = { t: "dir", keys: { attributes: FREE_STR, numericProjectId: INT, projectId: STR } };

/** `computeMetadata.v1` of the config file. */
export const v1Schema: Schema = {
  t: "dir",
  keys: {
    instance: { schema: instance },
    oslogin: FREE_ANY,
    project: { schema: project },
    universe: { schema: { t: "dir", keys: { universeDomain: STR } } },
  },
};

/** `fooBarBaz` → `foo-bar-baz`; the path spelling of a Google-defined JSON key. */
export function kebab(key: string): string {
  return key.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`);
}

/** `latestWindowStartTime` → `latest_window_start_time`. */
export function snake(key: string): string {
  return key.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);
}
