/**
 * What README.md and docs/*.md say in prose, checked against the product: each test quotes or reads the claim it
 * holds to, so the two cannot drift apart. (The shell examples run in examples.test.ts.)
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { type CachedToken, TokenCache } from "../../src/credentials/token-cache.ts";
import { refreshMargins } from "../../src/credentials/lifetime.ts";
import { FLAGS, usage } from "../../src/cli/flags.ts";
import { EditError, MetadataServer } from "../../src/index.ts";
import { LATENCY_BUCKETS } from "../../src/observability/metrics.ts";
import { runCliToExit, serveCli } from "../helpers/cli.ts";
import { FLAVOR, startServer, V1 } from "../helpers/server.ts";
import { codeSpan, DOC_FILES, docText, ROOT } from "./markdown.ts";

const README = docText("README.md");
const bundled = () => JSON.parse(readFileSync(join(ROOT, "config.json"), "utf8"));
const withV1 = (edit: (v1: any) => void) => {
  const c = bundled();
  edit(c.computeMetadata.v1);
  return c;
};
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function until(cond: () => boolean | Promise<boolean>, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error("condition not reached in time");
    await sleep(10);
  }
}

describe("README: Fidelity", () => {
  let s: Awaited<ReturnType<typeof startServer>>;
  beforeAll(async () => {
    s = await startServer({ controlApi: true });
  });
  afterAll(() => s.stop());

  test("every response, HEAD included, carries Metadata-Flavor, Server, X-XSS-Protection, X-Frame-Options, Date and Content-Length", async () => {
    const paths = [
      "/",
      `${V1}project/project-id`,
      `${V1}instance`,
      `${V1}instance/nope`,
      `${V1}instance/service-accounts/default/token`,
      "/oauth2/v3/certs",
      "/nowhere",
      "/emulator/v1/status",
    ];
    for (const method of ["GET", "HEAD"]) {
      for (const p of paths) {
        const r = await fetch(s.base + p, { method, headers: FLAVOR, redirect: "manual" });
        const where = `${method} ${p} (${r.status})`;
        expect({ where, flavor: r.headers.get("metadata-flavor") }).toEqual({ where, flavor: "Google" });
        expect({ where, server: r.headers.get("server") }).toEqual({ where, server: "Metadata Server for VM" });
        expect({ where, xss: r.headers.get("x-xss-protection"), frame: r.headers.get("x-frame-options") }).toEqual({
          where,
          xss: "0",
          frame: "SAMEORIGIN",
        });
        expect({ where, date: r.headers.get("date") }).toEqual({
          where,
          date: expect.stringMatching(/^\w{3}, \d\d \w{3} \d{4} \d\d:\d\d:\d\d GMT$/),
        });
        expect({ where, length: r.headers.get("content-length") }).toEqual({ where, length: expect.stringMatching(/^\d+$/) });
        await r.arrayBuffer();
      }
    }
  });

  test("answered without Metadata-Flavor: GET /, the discovery document and JWKS; any other path outside /computeMetadata/ is 404", async () => {
    expect(README).toContain("Three paths answer without it: `GET /`");
    for (const p of ["/", "/.well-known/openid-configuration", "/oauth2/v3/certs"]) expect((await s.get(p, {})).status).toBe(200);
    expect((await s.get(`${V1}project/project-id`, {})).status).toBe(403);
    expect((await s.get("/emulator/v1/status", {})).status).toBe(403);
    for (const headers of [{}, FLAVOR]) {
      const r = await s.get("/nowhere/at/all?x=1", headers);
      expect(r.status).toBe(404);
      expect(await r.text()).toContain("<code>/nowhere/at/all?x=1</code>");
    }
  });

  test("newlines: single values and JSON have none; whatever is served as lines ends every line with one", async () => {
    const body = async (p: string) => (await s.get(V1 + p)).text();
    // single values and JSON
    expect(await body("instance/zone")).toBe("projects/123456789012/zones/us-central1-a");
    expect(await body("instance/id")).toBe("4520031799277581759");
    expect(await body("instance/tags")).toBe('["http-server"]');
    expect(await body("instance/id?alt=json")).toBe("4520031799277581759");
    expect(await body("project/?recursive=true")).toEndWith("}");
    // lines
    expect(await body("instance/disks/")).toBe("0/\n");
    expect(await body("instance/tags?alt=text")).toBe("http-server\n");
    expect(await body("instance/service-accounts/default/scopes")).toBe("https://www.googleapis.com/auth/cloud-platform\n");
    expect(await body("instance/service-accounts/default/aliases")).toBe("default\n");
    expect(await body("instance/network-interfaces/0/dns-servers")).toBe("169.254.169.254\n");
    expect(await body("instance/disks/?recursive=true&alt=text")).toEndWith("0/type PERSISTENT\n");
    expect(await (await s.get("/", {})).text()).toBe("computeMetadata/\n");
  });

  test("boolean parameters take true, 1, yes and on in any case; anything else is false", async () => {
    for (const v of ["true", "True", "TRUE", "1", "yes", "YES", "on", "On"]) {
      expect((await s.get(`${V1}project/?recursive=${v}`)).headers.get("content-type")).toBe("application/json");
    }
    for (const v of ["t", "y", "false", "0", ""]) {
      expect((await s.get(`${V1}project/?recursive=${v}`)).headers.get("content-type")).toBe("application/text");
    }
  });

  test("licenses=TRUE adds license_id with format=full, and is ignored without it", async () => {
    const jwt = async (q: string) => {
      const t = await (await s.get(`${V1}instance/service-accounts/default/identity?audience=a&${q}`)).text();
      return JSON.parse(Buffer.from(t.split(".")[1]!, "base64url").toString());
    };
    const alone = await jwt("licenses=TRUE");
    expect(alone.google).toBeUndefined();
    expect(alone.email).toBeUndefined();
    expect((await jwt("format=full&licenses=TRUE")).google.compute_engine.license_id).toEqual(["2147286739765738111"]);
    expect((await jwt("format=full")).google.compute_engine.license_id).toBeUndefined();
  });

  test("a wait_for_change whose node is deleted gets the 404 page with its path and query", async () => {
    s.server.set("instance/attributes/doomed", "x");
    const query = "wait_for_change=true&timeout_sec=30";
    const waiting = s.get(`${V1}instance/attributes/doomed?${query}`);
    await until(() => s.server.changes.size > 0);
    s.server.delete("instance/attributes/doomed");
    const r = await waiting;
    expect(r.status).toBe(404);
    expect(await r.text()).toContain(`<code>${V1}instance/attributes/doomed?wait_for_change=true&amp;timeout_sec=30</code>`);
  });
});

describe("README: Config file", () => {
  test("each account lists aliases, email, identity, scopes, token, however it was made", async () => {
    const listing = "aliases\nemail\nidentity\nscopes\ntoken\n";
    const other = "other@example-project.iam.gserviceaccount.com";
    const s = await startServer({
      controlApi: true,
      claims: withV1((v1) => {
        v1.instance.serviceAccounts[other] = { scopes: [] }; // no aliases, no email
      }),
      callers: {
        callers: [
          {
            match: { cidr: "127.0.0.1/32" },
            overlay: { instance: { serviceAccounts: { default: { email: "caller@p.iam.gserviceaccount.com" } } } },
          },
        ],
      },
    });
    try {
      // A -callers overlay's account, as 127.0.0.1 sees it.
      expect(await (await s.get(`${V1}instance/service-accounts/default/`)).text()).toBe(listing);
      expect(await (await s.get(`${V1}instance/service-accounts/default/aliases`)).text()).toBe("default\n");
      expect(await (await s.get(`${V1}instance/service-accounts/caller@p.iam.gserviceaccount.com/`)).text()).toBe(listing);
      // The config's and the control API's, in the served tree.
      const added = "added@example-project.iam.gserviceaccount.com";
      const put = await fetch(`${s.base}/emulator/v1/metadata/instance/service-accounts/${added}`, {
        method: "PUT",
        headers: FLAVOR,
        body: "{}",
      });
      expect(await put.json()).toEqual({ aliases: [], email: added, scopes: [] });
      const tree = s.server.snapshot;
      for (const name of [other, added]) {
        expect(tree.node(`instance/service-accounts/${name}/`)!.plain.body).toBe(listing);
        expect(tree.text(`instance/service-accounts/${name}/email`)).toBe(name);
      }
    } finally {
      await s.stop();
    }
  });

  test("a number where a string belongs is its digits, a string of digits where an integer belongs is that integer, in the config and the control API alike", async () => {
    const s = await startServer({
      controlApi: true,
      claims: withV1((v1) => {
        v1.instance.attributes.port = 8080;
        v1.instance.tags = ["a", 1];
        v1.instance.id = "7";
      }),
    });
    try {
      const body = async (p: string) => (await s.get(V1 + p)).text();
      expect([await body("instance/attributes/port"), await body("instance/tags"), await body("instance/id?alt=json")]).toEqual([
        "8080",
        '["a","1"]',
        "7",
      ]);
      const put = (p: string, v: string) => fetch(`${s.base}/emulator/v1/metadata/${p}`, { method: "PUT", headers: FLAVOR, body: v });
      expect(await (await put("instance/attributes/n", "5")).text()).toBe('"5"');
      expect(await (await put("instance/tags", '["b",2]')).text()).toBe('["b","2"]');
      expect(await (await put("instance/id", '"9"')).text()).toBe("9");
      // Anything else is refused, naming the path: a boolean where a string belongs.
      const refused = await put("instance/attributes/b", "true");
      expect(refused.status).toBe(400);
      expect(((await refused.json()) as any).error.code).toBe("CONFIG_SHAPE");
    } finally {
      await s.stop();
    }
    expect(() => new MetadataServer({ claims: withV1((v1) => (v1.instance.attributes.b = true)) })).toThrow(
      "computeMetadata.v1.instance.attributes.b: expected a string, found the boolean true",
    );
  });
});

describe("docs/dynamic.md: the control API", () => {
  let s: Awaited<ReturnType<typeof startServer>>;
  const call = (method: string, path: string, body?: string) =>
    fetch(`${s.base}/emulator/v1/${path}`, { method, headers: FLAVOR, ...(body === undefined ? {} : { body }) });
  const error = async (r: Response) => ({ status: r.status, ...((await r.json()) as any).error });
  beforeAll(async () => {
    s = await startServer({ controlApi: true, requireDefaultAccount: true });
  });
  afterAll(() => s.stop());

  test("the error table names every code the control API answers with", () => {
    const dynamic = docText("docs/dynamic.md");
    const errors = readFileSync(join(ROOT, "src", "errors.ts"), "utf8");
    const union = (name: string) => {
      const start = errors.indexOf(`export type ${name} =`);
      const text = errors.slice(start, errors.indexOf("\nexport ", start + 1)).replace(/\/\*\*[\s\S]*?\*\//g, "");
      return [...text.matchAll(/"([A-Z_]+)"/g)].map((m) => m[1]!);
    };
    const codes = [...union("RequestErrorCode"), ...union("EditErrorCode"), "CONFIG_SYNTAX", "CONFIG_NO_DEFAULT_ACCOUNT", "USAGE"];
    expect(codes.length).toBeGreaterThan(10);
    for (const code of codes) expect({ code, listed: dynamic.includes(`\`${code}\``) }).toEqual({ code, listed: true });
  });

  test("a lifecycle event that is finished is 404 NOT_FOUND; PUT config without a default account is CONFIG_NO_DEFAULT_ACCOUNT, named as the request body", async () => {
    const event = (await (await call("POST", "lifecycle/preemption", '{"in":"0s"}')).json()) as { id: string };
    await until(async () =>
      ((await (await call("GET", "lifecycle")).json()) as any[]).some((e) => e.id === event.id && e.state === "done"),
    );
    expect(await error(await call("DELETE", `lifecycle/${event.id}`))).toMatchObject({ status: 404, code: "NOT_FOUND" });
    const noDefault = await error(await call("PUT", "config", '{"computeMetadata":{"v1":{"instance":{"serviceAccounts":{}}}}}'));
    expect(noDefault).toMatchObject({ status: 400, code: "CONFIG_NO_DEFAULT_ACCOUNT" });
    expect(noDefault.message).toStartWith("request body: computeMetadata.v1.instance.serviceAccounts.default: missing");
    // An event body with a field the event does not take is refused, not dropped.
    expect(await error(await call("POST", "lifecycle/maintenance", '{"in":"1h","kind":"MIGRATE"}'))).toMatchObject({
      status: 400,
      code: "USAGE",
      message: 'maintenance: unknown field "kind"; fields: in, at, type, duration',
    });
    const shape = await error(await call("PUT", "config", JSON.stringify(withV1((v1) => (v1.instance.id = "x")))));
    expect(shape.message).toStartWith("request body: computeMetadata.v1.instance.id: expected an integer");
    s.server.replaceClaims(bundled()); // the preemption changed the tree
  });

  test("EDIT_NOT_FOUND names the first missing node alike on GET, PUT, PATCH and DELETE", async () => {
    for (const path of ["instance/nope/deeper", "instance/attributes/nope"]) {
      const first = path === "instance/attributes/nope" ? path : "instance/nope";
      const answers = [
        await error(await call("GET", `metadata/${path}`)),
        await error(await call("DELETE", `metadata/${path}`)),
        await error(await call("PATCH", `metadata/${path}`, "null")),
      ];
      if (path !== "instance/attributes/nope") answers.push(await error(await call("PUT", `metadata/${path}`, '"x"')));
      for (const a of answers) expect(a).toEqual({ status: 404, code: "EDIT_NOT_FOUND", message: `${first}: no such node` });
    }
    expect(await error(await call("GET", "metadata/instance/id/x"))).toEqual({
      status: 404,
      code: "EDIT_NOT_FOUND",
      message: "instance/id: has no children; instance/id/x cannot exist",
    });
  });

  test("a new disk or account must have its first sibling's keys, as the reference routes require", async () => {
    const disk = { deviceName: "d1", index: 1, interface: "SCSI", mode: "READ_WRITE", type: "PERSISTENT" };
    const extra = await error(await call("PUT", "metadata/instance/disks/1", JSON.stringify({ ...disk, extra: "x" })));
    expect(extra).toMatchObject({ status: 400, code: "EDIT_FIXED_KEYS" });
    expect(extra.message).toContain("adds extra (a new entry must have the keys of instance/disks/0)");
    const account = await error(await call("PUT", "metadata/instance/service-accounts/x@p.iam.gserviceaccount.com", '{"color":"red"}'));
    expect(account).toMatchObject({ status: 400, code: "EDIT_FIXED_KEYS" });
    // The reference route refuses the same append.
    const ref = await fetch(`${s.base}/emulator/v1/update/instance/disks/1`, {
      method: "POST",
      headers: FLAVOR,
      body: encodeURIComponent(
        JSON.stringify({ "device-name": "d1", index: 1, interface: "SCSI", mode: "READ_WRITE", type: "PERSISTENT", extra: "x" }),
      ),
    });
    expect([ref.status, await ref.text()]).toEqual([400, "Updated data does not have the correct format"]);
    // With the same keys it is appended.
    expect((await call("PUT", "metadata/instance/disks/1", JSON.stringify(disk))).status).toBe(200);
    expect(await (await s.get(`${V1}instance/disks/`)).text()).toBe("0/\n1/\n");
    expect((await call("DELETE", "metadata/instance/disks/1")).status).toBe(204);
  });

  test("guest and partner namespaces are made key by key", async () => {
    s.server.set("instance/attributes/enable-guest-attributes", "TRUE");
    expect((await call("PUT", "metadata/instance/guest-attributes/hostkeys/ssh-rsa", '"AAAA"')).status).toBe(200);
    expect(await (await s.get(`${V1}instance/guest-attributes/hostkeys/ssh-rsa`)).text()).toBe("AAAA");
    expect((await call("PUT", "metadata/instance/partner-attributes/iam.googleapis.com/key_algorithm", '"RSA"')).status).toBe(200);
    expect(await (await s.get(`${V1}instance/partner-attributes/iam.googleapis.com/key_algorithm`)).text()).toBe("RSA");
    // A Google-defined directory is not made: its keys are fixed.
    expect(await error(await call("PUT", "metadata/instance/scheduling2/x", '"y"'))).toMatchObject({ status: 404, code: "EDIT_NOT_FOUND" });
    s.server.replaceClaims(bundled());
  });

  test("server.set throws EditError for a wrong type too", () => {
    let thrown: unknown;
    try {
      s.server.set("instance/id", "not a number");
    } catch (e) {
      thrown = e;
    }
    expect(thrown).toBeInstanceOf(EditError);
    expect((thrown as EditError).code).toBe("CONFIG_SHAPE");
    expect(docText("docs/dynamic.md")).toContain("// a bad change (a wrong type too) throws EditError");
  });
});

describe("docs/dynamic.md: guest attributes and simulated events", () => {
  test("enabled with no guestAttributes key: listed, and an empty directory until the first write", async () => {
    const s = await startServer({
      claims: withV1((v1) => {
        v1.instance.attributes["enable-guest-attributes"] = "TRUE";
        delete v1.instance.guestAttributes;
      }),
    });
    try {
      expect(await (await s.get(`${V1}instance/`)).text()).toContain("guest-attributes/\n");
      const empty = await s.get(`${V1}instance/guest-attributes/`);
      expect([empty.status, await empty.text()]).toEqual([200, ""]);
      expect(await (await s.get(`${V1}instance/guest-attributes/?recursive=true`)).text()).toBe("{}");
      const put = await fetch(`${s.base}${V1}instance/guest-attributes/ns/k`, { method: "PUT", headers: FLAVOR, body: "v" });
      expect(put.status).toBe(200);
      expect(await (await s.get(`${V1}instance/guest-attributes/?recursive=true`)).text()).toBe('{"ns":{"k":"v"}}');
      await fetch(`${s.base}${V1}instance/guest-attributes/ns/k`, { method: "DELETE", headers: FLAVOR });
      expect(await (await s.get(`${V1}instance/guest-attributes/`)).text()).toBe("");
    } finally {
      await s.stop();
    }
  });

  test("overlapping maintenances: upcoming-maintenance shows the soonest still scheduled or ongoing; ending one keeps the other's", async () => {
    const s = await startServer();
    const upcoming = () =>
      s.server.get("instance/upcoming-maintenance") as { window_start_time: string; maintenance_status: string } | undefined;
    const event = () => s.server.snapshot.text("instance/maintenance-event");
    try {
      const late = s.server.simulateMaintenance({ type: "TERMINATE", inMs: 600_000, durationMs: 600_000 });
      const soon = s.server.simulateMaintenance({ type: "MIGRATE", inMs: 300_000, durationMs: 60_000 });
      expect(upcoming()).toMatchObject({ window_start_time: soon.startsAt, maintenance_status: "PENDING" });
      s.server.clock.advance("5m");
      await until(() => event() === "MIGRATE_ON_HOST_MAINTENANCE");
      expect(upcoming()).toMatchObject({ window_start_time: soon.startsAt, maintenance_status: "ONGOING" });
      s.server.clock.advance("1m"); // the soon one ends
      await until(() => event() === "NONE");
      expect(upcoming()).toMatchObject({ window_start_time: late.startsAt, maintenance_status: "PENDING" });
      s.server.clock.advance("4m"); // the late one starts
      await until(() => event() === "TERMINATE_ON_HOST_MAINTENANCE");
      // A third, scheduled during it and overlapping it, does not hide the ongoing one.
      const third = s.server.simulateMaintenance({ type: "MIGRATE", inMs: 60_000, durationMs: 60_000 });
      expect(upcoming()).toMatchObject({ window_start_time: late.startsAt, maintenance_status: "ONGOING" });
      s.server.clock.advance("1m");
      await until(() => upcoming()?.window_start_time === late.startsAt && event() === "TERMINATE_ON_HOST_MAINTENANCE");
      s.server.clock.advance("1m"); // the third ends inside the late one
      await until(() => s.server.lifecycle.list().find((e) => e.id === third.id)?.state === "done");
      expect(event()).toBe("TERMINATE_ON_HOST_MAINTENANCE");
      expect(upcoming()).toMatchObject({ window_start_time: late.startsAt, maintenance_status: "ONGOING" });
      s.server.clock.advance("10m");
      await until(() => event() === "NONE");
      expect(upcoming()).toBeUndefined(); // the bundled config has none
    } finally {
      await s.stop();
    }
  });
});

describe("README: Command line", () => {
  /** Rows of every `| flag | default | meaning |` table in a page: each flag named in the first cell, and its default. */
  const flagRows = (text: string) => {
    const rows = new Map<string, string>();
    let inTable = false;
    for (const line of text.split("\n")) {
      if (/^\| flag \| default \|/.test(line)) inTable = true;
      else if (!line.startsWith("|")) inTable = false;
      if (!inTable) continue;
      const cells = line.split(/(?<!\\)\|/).map((c) => c.trim());
      const names = [...(cells[1] ?? "").matchAll(/`-([\w-]+)`/g)].map((x) => x[1]!);
      const defaults = [...(cells[2] ?? "").matchAll(/`([^`]*)`/g)].map((x) => x[1]!);
      for (const [i, n] of names.entries()) rows.set(n, defaults.length === names.length ? defaults[i]! : (defaults[0] ?? ""));
    }
    return rows;
  };

  test("every flag appears in a README table with its real default, and the other pages' flag tables agree", () => {
    const problems: string[] = [];
    const expectedOf = (spec: (typeof FLAGS)[keyof typeof FLAGS]) =>
      Array.isArray(spec.default) || spec.default === "" ? "" : String(spec.default);
    // Zero values may be left blank, as Go's usage leaves them.
    const agrees = (shown: string, expected: string) => shown === expected || (shown === "" && ["false", "0"].includes(expected));
    const readme = flagRows(README);
    for (const [name, spec] of Object.entries(FLAGS)) {
      const shown = readme.get(name);
      if (shown === undefined) problems.push(`README.md: -${name} is in no flag table`);
      else if (!agrees(shown, expectedOf(spec)))
        problems.push(`README.md: -${name} shows "${shown}", the default is "${expectedOf(spec)}"`);
    }
    for (const file of DOC_FILES.filter((f) => f !== "README.md")) {
      for (const [name, shown] of flagRows(docText(file))) {
        const spec = (FLAGS as Record<string, (typeof FLAGS)[keyof typeof FLAGS]>)[name];
        if (spec && !agrees(shown, expectedOf(spec)))
          problems.push(`${file}: -${name} shows "${shown}", the default is "${expectedOf(spec)}"`);
      }
    }
    expect(problems).toEqual([]);
  });

  test("-h shows (default true) for booleans that are on unless turned off, as Go's flag package does", () => {
    const text = usage();
    for (const [name, spec] of Object.entries(FLAGS)) {
      if (spec.kind !== "bool") continue;
      const line = text.slice(text.indexOf(`  -${name}\n`)).split("\n")[1]!;
      expect({ name, shows: line.endsWith("(default true)") }).toEqual({ name, shows: spec.default === true });
    }
    expect(text).toContain('(default "config.json")');
    expect(text).not.toContain("(default false)");
  });

  test("-version: the version, the commit's date under Date:, and the commit; unknown from a checkout", async () => {
    const r = await runCliToExit(["-version"]);
    expect(r.code).toBe(0);
    expect(r.stdout).toBe(
      `Version: ${JSON.parse(readFileSync(join(ROOT, "package.json"), "utf8")).version}-dev\nDate: unknown\nCommit: unknown\n`,
    );
    expect(README).toContain("the date of the commit it was built from (`Date:`");
  });

  test("exit codes: 2 for a bad flag value, 1 for an address that cannot be listened on", async () => {
    for (const port of ["abc", ":99999"]) {
      const r = await runCliToExit(["-port", port]);
      expect({ port, code: r.code }).toEqual({ port, code: 2 });
    }
    const taken = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } });
    try {
      const r = await runCliToExit(["-port", `:${taken.port}`]);
      expect(r.code).toBe(1);
      expect(r.errors[0]).toContain(`ERROR cannot listen on 127.0.0.1:${taken.port}: `);
    } finally {
      taken.stop(true);
    }
    expect(README).toContain("`2` a bad flag or flag value (an unknown flag, `-port abc`,\n`-port :99999`");
  });

  test("-interface: loopback unless another address is given", async () => {
    const s = await serveCli([]);
    try {
      expect(s.url).toStartWith("http://127.0.0.1:");
    } finally {
      await s.stop();
    }
    expect(README).toContain("| `-interface` | `127.0.0.1` | address to bind. Loopback by default: give `169.254.169.254`");
  });

  test("docs/serving.md: the EADDRNOTAVAIL line is the one printed, without a trailing syscall word", async () => {
    const shown = codeSpan("docs/serving.md", "cannot listen on 169.254.169.254:80");
    const r = await runCliToExit(["-interface", "169.254.169.254", "-port", ":80"]);
    expect(r.code).toBe(1);
    expect(r.errors[0]!.replace(/^\S+\s+ERROR\s+/, "")).toBe(shown);
  });

  test("both static tokens set: no line about the emulated issuer; one of them: the line", async () => {
    const both = await serveCli([], { env: { GOOGLE_ACCESS_TOKEN: "ya29.static", GOOGLE_ID_TOKEN: "eyJ.static.token" } });
    const one = await serveCli([], { env: { GOOGLE_ACCESS_TOKEN: "ya29.static" } });
    try {
      expect(both.log()).not.toContain("using the emulated issuer");
      expect(one.log()).toContain("no credentials given: using the emulated issuer");
    } finally {
      await Promise.all([both.stop(), one.stop()]);
    }
  });

  test("the -tokenURL warning is the one the README quotes", async () => {
    const shown = codeSpan("README.md", "-tokenURL is ignored");
    const s = await serveCli(["-tokenURL", "http://127.0.0.1:1/token"]);
    try {
      expect(s.log()).toContain(`WARN  ${shown}\n`);
    } finally {
      await s.stop();
    }
  });

  test("README: the EBADENGINE warning names every installed package that asks for a newer Node", () => {
    const lock = JSON.parse(readFileSync(join(ROOT, "package-lock.json"), "utf8")) as {
      packages: Record<string, { engines?: { node?: string } }>;
    };
    const newer = Object.entries(lock.packages)
      .filter(([, p]) => /^>=\s*2[2-9]/.test(p.engines?.node ?? ""))
      .map(([path]) => path.slice(path.lastIndexOf("node_modules/") + "node_modules/".length))
      .sort();
    expect(newer.length).toBeGreaterThan(0);
    const from = README.indexOf("`npm warn EBADENGINE`");
    const paragraph = README.slice(from, README.indexOf("\n\n", from));
    for (const name of newer) expect({ name, named: paragraph.includes(name) }).toEqual({ name, named: true });
  });
});

test("README: the rooms of the code, in the order test/project/layering.test.ts enforces", () => {
  // Read, not imported: importing a test file would run its tests here too.
  const layering = readFileSync(join(ROOT, "test", "project", "layering.test.ts"), "utf8");
  const table = layering.slice(
    layering.indexOf("export const LAYERS = ["),
    layering.indexOf("] as const", layering.indexOf("export const LAYERS")),
  );
  const LAYERS = [...table.matchAll(/\[([^[\]]*)\]/g)].map((m) => [...m[1]!.matchAll(/"([^"]+)"/g)].map((x) => x[1]!));
  const section = README.slice(README.indexOf("The code, in rooms."), README.indexOf("`test/` is grouped"));
  const items = section.split(/\n(?=\d+\. )/).slice(1);
  expect(items.length).toBe(LAYERS.length);
  LAYERS.forEach((rooms, i) => {
    for (const room of rooms)
      expect({ item: i + 1, room, named: items[i]!.includes(`\`${room}`) }).toEqual({ item: i + 1, room, named: true });
  });
});

test("README: Library use names every MetadataServerOptions option", () => {
  const index = readFileSync(join(ROOT, "src", "index.ts"), "utf8");
  const start = index.indexOf("export interface MetadataServerOptions {");
  const body = index.slice(start, index.indexOf("\n}\n", start));
  const options = [...body.matchAll(/^ {2}(\w+)\??:/gm)].map((m) => m[1]!);
  expect(options.length).toBeGreaterThan(20);
  const section = README.slice(README.indexOf("## Library use"), README.indexOf("## Security model"));
  for (const o of options) expect({ option: o, named: section.includes(`\`${o}\``) }).toEqual({ option: o, named: true });
});

describe("the library's log option", () => {
  test("a minimal logger (console's shape) and createLogger both work, and neither gets a token", async () => {
    const lines: string[] = [];
    const minimal = {
      error: (m: string, f?: object) => lines.push(`error ${m} ${JSON.stringify(f ?? {})}`),
      warn: (m: string, f?: object) => lines.push(`warn ${m} ${JSON.stringify(f ?? {})}`),
      info: (m: string, f?: object) => lines.push(`info ${m} ${JSON.stringify(f ?? {})}`),
    };
    const s = await startServer({ log: minimal, controlApi: true });
    await s.get(`${V1}instance/service-accounts/default/token`);
    s.server.simulatePreemption({ inMs: 0 });
    await until(() => lines.some((l) => l.startsWith("info simulated preemption ")));
    await s.stop();
    expect(lines.join("\n")).not.toContain("ya29.");

    const { createLogger } = await import("../../src/index.ts");
    const written: string[] = [];
    const t = await startServer({ log: createLogger("info", (l) => written.push(l)) });
    t.server.simulatePreemption({ inMs: 0 });
    await until(() => written.some((l) => / INFO {2}simulated preemption /.test(l)));
    await t.stop();
    expect(README).toContain("`log` (type `LoggerLike`)");
  });
});

describe("docs/credentials.md: when tokens are refreshed", () => {
  const source = (lifetimeMs: number, clock: { now: number }) => ({
    describe: () => ({ type: "test" }),
    accessToken: async () => ({ token: "t", expiresAt: clock.now + lifetimeMs }),
    idToken: async () => ({ token: "i", expiresAt: clock.now + lifetimeMs }),
  });
  const margins = async (lifetimeMs: number, options: { refreshAheadMs?: number; minRemainingMs?: number } = {}) => {
    const clock = { now: 1_000_000 };
    const cache = new TokenCache(source(lifetimeMs, clock), { now: () => clock.now, ...options });
    const t = (await cache.accessToken({ email: "a@b.iam.gserviceaccount.com", scopes: [] }, [])) as CachedToken;
    return { refresh: (t.expiresAt - t.refreshAt) / 1000, floor: (t.expiresAt - t.floorAt) / 1000 };
  };

  test("min(5 min, L/2) and min(4 min, L/4) before expiry; with -tokenLifetime, 5/60 and 4/60 of it", async () => {
    expect(await margins(3600_000)).toEqual({ refresh: 300, floor: 240 });
    expect(await margins(120_000)).toEqual({ refresh: 60, floor: 30 });
    expect(await margins(600_000)).toEqual({ refresh: 300, floor: 150 });
    const compressed = refreshMargins(120_000);
    expect(compressed).toEqual({ refreshAheadMs: 10_000, minRemainingMs: 8_000 });
    expect(await margins(3600_000, compressed)).toEqual({ refresh: 10, floor: 8 });
    const doc = docText("docs/credentials.md");
    expect(doc).toContain("`min(5 min, L/2)` before expiry");
    expect(doc).toContain("`min(4 min, L/4)` before expiry");
    expect(doc).toContain("a 2-minute\ntoken is refreshed when 1 minute is left and handed out until 30 s are left");
  });
});

describe("docs/figures.md: measured figures live in one place", () => {
  test("no other page quotes memory, request rates or microseconds; they link to figures.md", () => {
    const measured = /\d[\d,.]*\s?(?:MB|req\/s|requests\/s|µs)\b/;
    for (const file of DOC_FILES) {
      if (file === "docs/figures.md") continue;
      const lines = docText(file)
        .split("\n")
        .filter((l) => measured.test(l));
      expect({ file, lines }).toEqual({ file, lines: [] });
    }
    for (const file of ["README.md", "docs/dynamic.md", "docs/serving.md", "docs/callers.md", "docs/upstream.md", "docs/tpm.md"]) {
      expect({ file, links: /\]\((?:docs\/)?figures\.md/.test(docText(file)) }).toEqual({ file, links: true });
    }
  });

  test("figures.md says where absolute numbers were measured and quotes ratios in the benches' words", () => {
    const figures = docText("docs/figures.md");
    expect(figures).toContain("Quote the ratios");
    expect(figures.replace(/\s+/g, " ")).toContain("2-core x86-64 Firecracker virtual machine");
    // bench/startup.ts and bench/waiters.ts print these lines; the page quotes them as printed.
    const startup = readFileSync(join(ROOT, "bench", "startup.ts"), "utf8");
    expect(startup).toContain("ratio server/baseline $" + "{fmt(ratio, 2)}x");
    const target = /const TARGET_RATIO = ([\d.]+);/.exec(startup)![1]!.replace(".", "\\.");
    expect(figures).toMatch(new RegExp(` {2}ratio server/baseline \\d\\.\\d\\dx {2}\\(target <= ${target}x: \\w+\\)`));
    const waiters = readFileSync(join(ROOT, "bench", "waiters.ts"), "utf8");
    expect(waiters).toContain("server memory added by");
    expect(figures).toMatch(/PASS {2}server memory added by 10000 hanging requests: [\d.]+ MB \([\d.]+ kB each\)/);
  });

  test("the latency buckets serving.md names are the ones served: Go's defaults and the finer ones in front", () => {
    const named = /five finer buckets in front \(([^)]*) ms\)/.exec(docText("docs/serving.md").replace(/\n/g, " "))![1]!;
    const finer = named.split(/, | and /).map((x) => Number(x) / 1000);
    const go = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];
    expect(LATENCY_BUCKETS).toEqual([...finer, ...go]);
  });
});
