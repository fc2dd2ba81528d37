/**
 * `-callers`: an identity per caller. Requests come from 127.0.0.2 and 127.0.0.3 (the client socket bound to that
 * address; Linux routes all of 127/8 to lo) and get their own default account, tokens and tree; an unmatched
 * source is refused with "deny" or sees the served tree with "allow". The file is reloaded like the config, and
 * each caller's waits wake on its own changes.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { request } from "node:http";
import { rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { decodeJwt } from "jose";
import { Cidr } from "../../src/address.ts";
import { ConfigError, MetadataServer } from "../../src/index.ts";
import { memoryLogger, settlesWithin, tempDir, until, V1 } from "../dynamic/helpers.ts";
import { runCliToExit, serveCli } from "../helpers/cli.ts";

const A = "pod-a@example-project.iam.gserviceaccount.com";
const B = "pod-b@example-project.iam.gserviceaccount.com";
const VM = "123456789012-compute@developer.gserviceaccount.com";
const CLOUD = "https://www.googleapis.com/auth/cloud-platform";

function callersDoc(unmatched: "allow" | "deny", hostnameA = "pod-a.example") {
  return {
    callers: [
      {
        name: "pod-a",
        match: { cidr: "127.0.0.2/32" },
        overlay: {
          instance: { hostname: hostnameA, attributes: { role: "a" }, serviceAccounts: { default: { email: A, scopes: [CLOUD] } } },
        },
      },
      {
        match: { cidr: "127.0.0.3" },
        overlay: { instance: { hostname: "pod-b.example", serviceAccounts: { default: { email: B, scopes: [CLOUD] } } } },
      },
    ],
    unmatched,
  };
}

interface Answer {
  status: number;
  body: string;
  etag: string | undefined;
}

/** A GET from a chosen source address on its own connection. */
function from(
  source: string,
  url: string,
  path: string,
  headers: Record<string, string> = { "Metadata-Flavor": "Google" },
): Promise<Answer> {
  const u = new URL(url);
  return new Promise((resolve, reject) => {
    const req = request({ host: u.hostname, port: u.port, path, headers, localAddress: source, agent: false }, (res) => {
      let body = "";
      res.setEncoding("utf8");
      res.on("data", (d) => (body += d));
      res.on("end", () => resolve({ status: res.statusCode!, body, etag: res.headers.etag as string | undefined }));
    });
    req.on("error", reject);
    req.end();
  });
}

const dir = tempDir("callers-");
const file = join(dir, "callers.json");

describe('callers by source address, "unmatched": "deny"', () => {
  let server: MetadataServer;
  const { log, lines } = memoryLogger();
  const get = (source: string, path: string) => from(source, server.url, V1 + path);

  beforeAll(async () => {
    writeFileSync(file, JSON.stringify(callersDoc("deny")));
    server = new MetadataServer({ serverConfig: { port: 0 }, callersFile: file, watchConfig: true, log });
    await server.start();
  });
  afterAll(() => server.stop());

  test("each caller sees its own default account, hostname and attributes; the VM's account is not there", async () => {
    const a = await get("127.0.0.2", "instance/service-accounts/default/email");
    const b = await get("127.0.0.3", "instance/service-accounts/default/email");
    expect(a).toMatchObject({ status: 200, body: A });
    expect(b).toMatchObject({ status: 200, body: B });
    expect((await get("127.0.0.2", "instance/service-accounts/")).body).toBe(`default/\n${A}/\n`);
    expect((await get("127.0.0.2", "instance/hostname")).body).toBe("pod-a.example");
    expect((await get("127.0.0.3", "instance/hostname")).body).toBe("pod-b.example");
    expect(JSON.parse((await get("127.0.0.2", "instance/attributes/?recursive=true")).body)).toEqual({
      "enable-oslogin": "FALSE",
      role: "a",
      "startup-script": "#!/bin/bash\necho hello",
    });
    expect((await get("127.0.0.3", "instance/attributes/role")).status).toBe(404);
    // The rest of the tree is the served one.
    expect((await get("127.0.0.3", "project/project-id")).body).toBe("example-project");
    expect((await get("127.0.0.2", "instance/service-accounts/default/?recursive=true")).body).toBe(
      `{"aliases":["default"],"email":"${A}","scopes":["${CLOUD}"]}`,
    );
  });

  test("different tokens and ID tokens, minted for each caller's own account", async () => {
    const token = async (source: string) =>
      JSON.parse((await get(source, "instance/service-accounts/default/token")).body).access_token as string;
    const [ta, tb] = [await token("127.0.0.2"), await token("127.0.0.3")];
    expect(ta).toStartWith("ya29.");
    expect(tb).toStartWith("ya29.");
    expect(ta).not.toBe(tb);
    expect(await token("127.0.0.2")).toBe(ta); // cached
    const id = async (source: string) =>
      decodeJwt((await get(source, "instance/service-accounts/default/identity?audience=https://x.example&format=full")).body);
    expect((await id("127.0.0.2")).email).toBe(A);
    expect((await id("127.0.0.3")).email).toBe(B);
    // A caller cannot ask for another caller's account, nor for the VM's.
    expect((await get("127.0.0.2", `instance/service-accounts/${B}/token`)).status).toBe(404);
    expect((await get("127.0.0.2", `instance/service-accounts/${VM}/token`)).status).toBe(404);
  });

  test("an unmatched source is refused with 403, the root probe included", async () => {
    const r = await get("127.0.0.1", "project/project-id");
    expect(r.status).toBe(403);
    expect(r.body).toContain("No caller entry matches this client.");
    expect((await from("127.0.0.1", server.url, "/", {})).status).toBe(403);
    expect((await from("127.0.0.4", server.url, "/", {})).status).toBe(403);
  });

  test("a change of the served tree reaches every caller and wakes their waiters", async () => {
    const waiting = get("127.0.0.2", "instance/attributes/?recursive=true&wait_for_change=true&timeout_sec=20");
    await Bun.sleep(50);
    server.set("instance/attributes/shared", "for-everyone");
    expect(JSON.parse((await waiting).body)).toMatchObject({ role: "a", shared: "for-everyone" });
    expect((await get("127.0.0.3", "instance/attributes/shared")).body).toBe("for-everyone");
    server.delete("instance/attributes/shared");
  });

  test("the file is reloaded: a caller's waiter wakes with its new value, the other's does not", async () => {
    const first = await get("127.0.0.2", "instance/hostname");
    const waitA = get("127.0.0.2", `instance/hostname?wait_for_change=true&last_etag=${first.etag}&timeout_sec=20`);
    const b = await get("127.0.0.3", "instance/hostname");
    const waitB = get("127.0.0.3", `instance/hostname?wait_for_change=true&last_etag=${b.etag}&timeout_sec=3`);
    await Bun.sleep(50);
    writeFileSync(file, JSON.stringify(callersDoc("deny", "pod-a-renamed.example")));
    expect((await waitA).body).toBe("pod-a-renamed.example");
    expect(await settlesWithin(waitB, 300)).toBe(false);
    expect((await waitB).body).toBe("pod-b.example");
    expect(lines.some((l) => l.includes("callers reloaded") && l.includes(`callers="pod-a,127.0.0.3"`))).toBe(true);
  });

  test("an invalid file keeps the callers in force and says why in one line", async () => {
    const bad = callersDoc("deny");
    (bad.callers[1]!.match as { cidr: string }).cidr = "127.0.0.300/32";
    writeFileSync(file, JSON.stringify(bad));
    await until(() => lines.some((l) => l.includes("callers reload failed")), 5000);
    const line = lines.find((l) => l.includes("callers reload failed"))!;
    expect(line).toContain(`still serving the last good callers: ${file}: callers[1].match.cidr: "127.0.0.300/32" is not an address range`);
    expect((await get("127.0.0.3", "instance/service-accounts/default/email")).body).toBe(B);
    expect((await get("127.0.0.2", "instance/hostname")).body).toBe("pod-a-renamed.example");
  });
});

describe('"unmatched": "allow", and the command line', () => {
  test("an unmatched source sees the served tree and the VM's account", async () => {
    const server = new MetadataServer({ serverConfig: { port: 0 }, callers: callersDoc("allow") });
    await server.start();
    try {
      expect((await from("127.0.0.1", server.url, `${V1}instance/service-accounts/default/email`)).body).toBe(VM);
      expect((await from("127.0.0.1", server.url, `${V1}instance/hostname`)).body).toBe("vm-1.us-central1-a.c.example-project.internal");
      expect((await from("127.0.0.2", server.url, `${V1}instance/service-accounts/default/email`)).body).toBe(A);
    } finally {
      await server.stop();
    }
  });

  test("metrics label a caller's own account paths by their template", async () => {
    const server = new MetadataServer({ serverConfig: { port: 0, metrics: { port: 0 } }, callers: callersDoc("deny") });
    await server.start();
    try {
      for (const path of [`instance/service-accounts/${A}/token`, `instance/service-accounts/${A}/email`]) {
        expect((await from("127.0.0.2", server.url, V1 + path)).status).toBe(200);
      }
      const text = await (await fetch(`${server.metricsUrl}/metrics`)).text();
      const requests = text.split("\n").filter((l) => l.startsWith("metadata_endpoint_path_requests{"));
      expect(requests.some((l) => l.includes(`path="${V1}instance/service-accounts/{account}/token"`))).toBe(true);
      expect(requests.some((l) => l.includes(`path="${V1}instance/service-accounts/{account}/email"`))).toBe(true);
      expect(requests.filter((l) => l.includes('path="{other}"'))).toEqual([]);
    } finally {
      await server.stop();
    }
  });

  test("-callers FILE", async () => {
    writeFileSync(file, JSON.stringify(callersDoc("deny")));
    const cli = await serveCli(["-callers", file]);
    try {
      await until(() => cli.log().includes(`callers loaded file=${file} callers="pod-a,127.0.0.3"`), 5000);
      expect((await from("127.0.0.3", cli.url, `${V1}instance/service-accounts/default/email`)).body).toBe(B);
      expect((await from("127.0.0.1", cli.url, `${V1}instance/id`)).status).toBe(403);
    } finally {
      await cli.stop();
    }
  });
});

describe("callers files that are refused at load", () => {
  const load = async (doc: unknown) => {
    const server = new MetadataServer({ serverConfig: { port: 0 }, callers: doc as object });
    try {
      await server.start();
    } catch (e) {
      return e as ConfigError;
    } finally {
      await server.stop();
    }
    throw new Error("the server started");
  };

  test("matching by client certificate is not supported, and says why", async () => {
    for (const match of [{ certSubject: "CN=pod-a" }, { certSan: "pod-a.example" }]) {
      const e = await load({ callers: [{ match, overlay: {} }] });
      expect(e).toBeInstanceOf(ConfigError);
      expect(e.code).toBe("CONFIG_NOT_SUPPORTED");
      expect(e.message).toContain(`callers[0].match.${Object.keys(match)[0]}: matching by mTLS client certificate is not supported`);
      expect(e.message).toContain("oven-sh/bun#14097");
    }
  });

  test("shape errors name the JSON path", async () => {
    const cases: Array<[unknown, string]> = [
      [{ callers: {} }, "callers: missing or not an array"],
      [{ callers: [], unmatched: "maybe" }, 'unmatched: expected "allow" or "deny"'],
      [{ callers: [{ match: { cidr: "10.0.0.0/33" } }] }, 'callers[0].match.cidr: "10.0.0.0/33" is not an address range'],
      [{ callers: [{ match: { cidr: "10.0.0.1" }, overlay: { computeMetadata: {} } }] }, "leave out the computeMetadata.v1 wrapper"],
      [
        { callers: [{ match: { cidr: "10.0.0.1" }, overlay: { instance: { disks: "x" } } }] },
        "callers[0].overlay.instance.disks: expected an array",
      ],
      [{ callers: [{ match: { ip: "10.0.0.1" } }] }, "callers[0].match.ip: unknown key"],
    ];
    for (const [doc, message] of cases) expect((await load(doc)).message).toContain(message);
  });

  test("the command line exits 1 with the reason", async () => {
    writeFileSync(file, JSON.stringify({ callers: [{ match: { certSubject: "CN=x" } }] }));
    const out = await runCliToExit(["-port", ":0", "-callers", file]);
    expect(out.code).toBe(1);
    expect(out.errors).toHaveLength(1);
    expect(out.errors[0]).toContain("matching by mTLS client certificate is not supported");
  });
});

describe("address ranges", () => {
  test("IPv4, IPv6 and IPv4-mapped addresses", () => {
    const r = Cidr.parse("127.0.0.0/30")!;
    expect(["127.0.0.1", "127.0.0.3", "::ffff:127.0.0.2"].map((a) => r.contains(a))).toEqual([true, true, true]);
    expect(["127.0.0.4", "10.0.0.1", "::1", "not an address"].map((a) => r.contains(a))).toEqual([false, false, false, false]);
    expect(Cidr.parse("fd00::/8")!.contains("fd12:3456::1")).toBe(true);
    expect(Cidr.parse("fd00::/8")!.contains("fe80::1")).toBe(false);
    expect(Cidr.parse("::1")!.contains("::1")).toBe(true);
    expect(Cidr.parse("0.0.0.0/0")!.contains("203.0.113.9")).toBe(true);
    for (const bad of ["10.0.0.0/33", "10.0.0/8", "1::2::3/64", "10.0.0.01/32", "fd00::/129", ""]) expect(Cidr.parse(bad)).toBeUndefined();
  });
});

afterAll(() => rmSync(dir, { recursive: true, force: true }));
