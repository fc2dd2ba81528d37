/**
 * `capture`: the round trip. A source server with a tree using every kind of node (big ids, documents, partner
 * namespaces, guest attributes written by the guest, a custom universe, two accounts) is captured with the real
 * command line, the file is served, and both servers answer the same bytes, ETags included; gcp-metadata and
 * Python's google-auth read the same values from both. Also -redact, the secrets warning, and the errors.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { readFileSync, rmSync, statSync } from "node:fs";
import { join } from "node:path";
import * as gcpMetadata from "gcp-metadata";
import { MetadataServer } from "../../src/index.ts";
import { config, FLAVOR, tempDir, V1 } from "../dynamic/helpers.ts";
import { runCliToExit } from "../helpers/cli.ts";

const FIXTURES = join(import.meta.dir, "..", "clients", "fixtures");
const OTHER = "worker@example-project.iam.gserviceaccount.com";

/** A tree using every kind of node this server knows. */
function richConfig() {
  const c = config();
  const i = c.computeMetadata.v1.instance;
  i.attributes["enable-guest-attributes"] = "TRUE";
  i.attributes["startup-script"] = '#!/bin/bash\nif [ 1 < 2 ] && true; then echo "héllo <b>"; fi';
  i.attributes["ssh-keys"] = "alice:ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIA alice";
  i.serviceAccounts[OTHER] = { aliases: [], email: OTHER, scopes: ["https://www.googleapis.com/auth/devstorage.read_only"] };
  i.credentials = {};
  i.gceWorkloadCertificates = {
    configStatus: { partnerMetadataConfigsErrors: {} },
    trustAnchors: {
      trustAnchors: { "example.svc.id.goog": { trustAnchorsPem: "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n" } },
    },
    workloadIdentities: { workloadCredentials: {} },
  };
  i.partnerAttributes = { "iam.googleapis.com": { "workload-identity": "spiffe://p.global.123456789012.workload.id.goog/ns/a/sa/b" } };
  i.upcomingMaintenance = { canReschedule: true, type: "SCHEDULED", windowStartTime: "2030-01-01T00:00:00Z" };
  i.shutdownDetails = { maxDuration: 0, requestTimestamp: "", stopState: "UNSPECIFIED", targetState: "UNSPECIFIED" };
  i.legacyEndpointAccess = { "0.1": 0, v1beta1: 0 };
  i.remainingCpuTime = -1;
  i.id = 4520031799277581759n; // beyond 2^53: a bigint keeps its digits

  i.networkInterfaces[0].forwardedIps = ["198.51.100.7", "198.51.100.8"];
  i.networkInterfaces[0].ipv6s = ["2001:db8::1"];
  i.myKey = { nested: ["a", "b"], flag: true, n: 12345678901234567890n };
  c.computeMetadata.v1.project.attributes["ssh-keys"] = "bob:ssh-rsa AAAAB3 bob";
  c.computeMetadata.v1.universe = { universeDomain: "universe.example.test" };
  return c;
}

const PATHS = [
  "?recursive=true",
  "?recursive=true&alt=text",
  "",
  "instance/",
  "instance/?recursive=true",
  "instance/service-accounts/",
  `instance/service-accounts/${OTHER}/?recursive=true`,
  "instance/gce-workload-certificates/trust-anchors",
  "instance/upcoming-maintenance",
  "instance/guest-attributes/?recursive=true",
  "instance/id",
  "instance/network-interfaces/0/forwarded-ips/?recursive=true&alt=text",
  "universe/universe-domain",
  "project/?recursive=true",
];

let source: MetadataServer;
let served: MetadataServer | undefined;
const dir = tempDir("capture-");
const file = join(dir, "captured.json");
let captureRun: { code: number; stdout: string; stderr: string };

beforeAll(async () => {
  source = new MetadataServer({ serverConfig: { port: 0 }, claims: richConfig() });
  await source.start();
  // A guest attribute written by the guest, as the guest agent writes host keys.
  const put = await fetch(`${source.url}${V1}instance/guest-attributes/hostkeys/ssh-ed25519`, {
    method: "PUT",
    headers: FLAVOR,
    body: "AAAAC3Nza-host-key",
  });
  expect(put.status).toBe(200);
  captureRun = await runCliToExit(["capture", "-source", source.url, "-o", file]);
  expect(captureRun.code).toBe(0);
  served = new MetadataServer({ serverConfig: { port: 0 }, configFile: file, requireDefaultAccount: true });
  await served.start();
});

afterAll(async () => {
  await served?.stop();
  await source.stop();
  rmSync(dir, { recursive: true, force: true });
});

describe("round trip: capture, then serve the file", () => {
  test("the file is written owner-only, and the warning names the attributes kept", () => {
    expect(statSync(file).mode & 0o777).toBe(0o600);
    expect(captureRun.stdout).toBe("");
    expect(captureRun.stderr).toContain(`captured ${source.url} into ${file}`);
    expect(captureRun.stderr).toContain("warning: attributes can hold secrets");
    expect(captureRun.stderr).toContain("instance attributes enable-guest-attributes, enable-oslogin, ssh-keys, startup-script");
    expect(captureRun.stderr).toContain("project attributes google-compute-default-region, google-compute-default-zone, ssh-keys");
    const doc = JSON.parse(readFileSync(file, "utf8"));
    // Never a token: accounts carry e-mail, aliases and scopes.
    expect(Object.keys(doc.computeMetadata.v1.instance.serviceAccounts.default).sort()).toEqual(["aliases", "email", "scopes"]);
    expect(doc.computeMetadata.v1.universe).toEqual({ universeDomain: "universe.example.test" });
    // Exact digits: 4520031799277581759 is beyond 2^53.
    expect(readFileSync(file, "utf8")).toContain('"id": 4520031799277581759');
  });

  for (const path of PATHS) {
    test(`same bytes and ETag: ${path || "(v1 listing)"}`, async () => {
      const [a, b] = await Promise.all([source, served!].map((s) => fetch(`${s.url}${V1}${path}`, { headers: FLAVOR })));
      expect(b!.status).toBe(200);
      expect(b!.status).toBe(a!.status);
      expect(b!.headers.get("content-type")).toBe(a!.headers.get("content-type"));
      expect(b!.headers.get("etag")).toBe(a!.headers.get("etag"));
      expect(await b!.text()).toBe(await a!.text());
    });
  }

  test("gcp-metadata reads the same values from both", async () => {
    const saved = { ...process.env };
    const read = async (s: MetadataServer) => {
      process.env.GCE_METADATA_HOST = s.host;
      process.env.GCE_METADATA_IP = s.host;
      gcpMetadata.resetIsAvailableCache();
      return {
        available: await gcpMetadata.isAvailable(),
        projectId: await gcpMetadata.project("project-id"),
        numeric: String(await gcpMetadata.project("numeric-project-id")),
        id: String(await gcpMetadata.instance("id")),
        zone: await gcpMetadata.instance("zone"),
        tags: await gcpMetadata.instance("tags"),
        startup: await gcpMetadata.instance({ property: "attributes/startup-script" }),
        accounts: await gcpMetadata.instance({ property: "service-accounts/", params: { recursive: "true" } }),
        disks: await gcpMetadata.instance({ property: "disks/", params: { recursive: "true" } }),
        universe: await gcpMetadata.universe("universe-domain"),
        guest: await gcpMetadata.instance({ property: "guest-attributes/hostkeys/ssh-ed25519" }),
      };
    };
    try {
      const a = await read(source);
      const b = await read(served!);
      expect(b).toEqual(a);
      expect(b).toMatchObject({
        available: true,
        projectId: "example-project",
        id: "4520031799277581759",
        universe: "universe.example.test",
        guest: "AAAAC3Nza-host-key",
        startup: '#!/bin/bash\nif [ 1 < 2 ] && true; then echo "héllo <b>"; fi',
      });
      expect(Object.keys(b.accounts).sort()).toEqual(["123456789012-compute@developer.gserviceaccount.com", "default", OTHER]);
    } finally {
      process.env = saved;
      gcpMetadata.resetIsAvailableCache();
    }
  });

  test("Python google-auth reads the same values from both", async () => {
    const paths = [
      "",
      "instance/id",
      "instance/zone",
      "instance/attributes/",
      "instance/disks/",
      "instance/service-accounts/",
      "universe/universe-domain",
    ];
    const read = async (s: MetadataServer) => {
      const p = Bun.spawn(["/usr/bin/python3", join(FIXTURES, "metadata_values_py.py"), ...paths], {
        env: {
          PATH: process.env.PATH ?? "/usr/bin:/bin",
          HOME: dir,
          GCE_METADATA_HOST: s.host,
          GCE_METADATA_IP: s.host,
          GCE_METADATA_ROOT: s.host,
        },
        stdout: "pipe",
        stderr: "pipe",
      });
      const [out, err, code] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text(), p.exited]);
      if (code !== 0) throw new Error(`python3 exited ${code} (the test command installs python3-google-auth): ${err}`);
      return { text: out, value: JSON.parse(out) };
    };
    const a = await read(source);
    const b = await read(served!);
    expect(b.text).toBe(a.text);
    expect(b.value.ping).toBe(true);
    expect(b.value.projectId).toBe("example-project");
    expect(b.value.serviceAccountInfo.email).toBe("123456789012-compute@developer.gserviceaccount.com");
    // Exact digits, in the recursive document and as text.
    expect(b.text).toContain('"id": 4520031799277581759,');
    expect(b.value.paths["instance/id"]).toBe("4520031799277581759");
    expect(b.value.paths[""].instance.attributes["startup-script"]).toContain('echo "héllo <b>"');
    expect(b.value.paths["universe/universe-domain"]).toBe("universe.example.test");
  }, 60_000);
});

describe("capture: redaction, the default source, errors", () => {
  test("-redact blanks the named attributes in both scopes; the keys stay; unknown names are said", async () => {
    const out = await runCliToExit(["capture", "-source", source.url, "-redact", "ssh-keys, startup-script,not-there"]);
    expect(out.code).toBe(0);
    const doc = JSON.parse(out.stdout);
    expect(doc.computeMetadata.v1.instance.attributes["ssh-keys"]).toBe("");
    expect(doc.computeMetadata.v1.instance.attributes["startup-script"]).toBe("");
    expect(doc.computeMetadata.v1.project.attributes["ssh-keys"]).toBe("");
    expect(doc.computeMetadata.v1.instance.attributes["enable-oslogin"]).toBe("FALSE");
    expect(out.stderr).toContain("captured");
    expect(out.stderr).toContain("kept as they are: instance attributes enable-guest-attributes, enable-oslogin;");
    expect(out.stderr).toContain("warning: -redact names no attribute not-there");
  });

  test("without -source it reads GCE_METADATA_HOST", async () => {
    const out = await runCliToExit(["capture"], { env: { GCE_METADATA_HOST: source.host } });
    expect(out.code).toBe(0);
    expect(JSON.parse(out.stdout).computeMetadata.v1.project.projectId).toBe("example-project");
    expect(out.stderr).toContain(`captured http://${source.host} into standard output`);
  });

  test("a source that does not answer: exit 1 and one line naming it", async () => {
    const out = await runCliToExit(["capture", "-source", "http://127.0.0.1:1"]);
    expect(out.code).toBe(1);
    expect(out.stdout).toBe("");
    expect(out.stderr).toMatch(/^cannot read the metadata server at http:\/\/127\.0\.0\.1:1: .+; check that it runs/);
  });

  test("a server that is not a metadata server is refused", async () => {
    const other = Bun.serve({ hostname: "127.0.0.1", port: 0, fetch: () => new Response("{}") });
    try {
      const out = await runCliToExit(["capture", "-source", `http://127.0.0.1:${other.port}`]);
      expect(out.code).toBe(1);
      expect(out.stderr).toContain("no Metadata-Flavor: Google header, so it is not a metadata server");
    } finally {
      await other.stop(true);
    }
  });

  test("bad flags and URLs exit 2", async () => {
    const bad = await runCliToExit(["capture", "-nope"]);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain("flag provided but not defined: -nope");
    expect(bad.stderr).toContain("Usage of gce_metadata_server capture:");
    const path = await runCliToExit(["capture", "-source", "http://127.0.0.1:8080/computeMetadata/v1/"]);
    expect(path.code).toBe(2);
    expect(path.stderr).toContain("must name only a server, without a path");
  });
});
