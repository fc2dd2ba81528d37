/** The control API: Google's reference emulator's update routes exactly, this server's JSON routes, the library API. */
import { afterEach, beforeEach, describe, expect, test } from "bun:test";
import { EditError } from "../../src/index.ts";
import { decodeJwt } from "jose";
import { startServer } from "../helpers/server.ts";
import { read, start, until, V1, type Started } from "./helpers.ts";

let s: Started;
beforeEach(async () => {
  s = await start({ controlApi: true });
});
afterEach(async () => {
  await s.server.stop();
});

const HTML = "text/html; charset=UTF-8";
/** The reference test suite's client: the value URL-encoded with quote_plus, sent as application/text. */
const quotePlus = (v: string) => encodeURIComponent(v).replace(/%20/g, "+");
const update = (path: string, value: string) =>
  s.req("POST", `/emulator/v1/update/${path}`, quotePlus(value), { "Content-Type": "application/text" });
const remove = (path: string) => s.req("DELETE", `/emulator/v1/update/${path}`);
const body = async (path: string) => (await read(await s.get(V1 + path))).body;

async function expectAnswer(r: Response, status: number, text: string, type: string) {
  expect(r.status).toBe(status);
  expect(r.headers.get("content-type")).toBe(type);
  expect(r.headers.get("metadata-flavor")).toBe("Google");
  expect(r.headers.get("etag")).toBeNull();
  expect(await r.text()).toBe(text);
}

describe("reference emulator update routes", () => {
  test("a string leaf (spaces arrive as +)", async () => {
    await expectAnswer(await update("instance/cpu-platform", "Intel Ivy Bridge"), 200, "Update successful", "application/text");
    expect(await body("instance/cpu-platform")).toBe("Intel Ivy Bridge");
  });

  test("an integer leaf from its digits stays a JSON number", async () => {
    await expectAnswer(await update("instance/id", "43985743985"), 200, "Update successful", "application/text");
    expect(await body("instance/id")).toBe("43985743985");
    expect(await body("instance/id?alt=json")).toBe("43985743985");
  });

  test("an indexed list replaced whole, a whole-value list, a free-form directory", async () => {
    expect((await update("instance/licenses", '[{"id":"42"},{"id":"43587"}]')).status).toBe(200);
    expect(await body("instance/licenses/")).toBe("0/\n1/\n");
    expect(await body("instance/licenses/1/id")).toBe("43587");
    expect((await update("instance/tags", '["tag1","tag2"]')).status).toBe(200);
    const tags = await read(await s.get(`${V1}instance/tags`));
    expect(tags.body).toBe('["tag1","tag2"]');
    expect(tags.type).toBe("application/json");
    expect((await update("instance/attributes", '{"abc":"1","xyz":"2"}')).status).toBe(200);
    expect(await body("instance/attributes/?recursive=true")).toBe('{"abc":"1","xyz":"2"}');
  });

  test("a directory body uses the path naming (kebab-case keys)", async () => {
    expect(
      (await update("instance/disks/0", '{"device-name":"d","index":3,"interface":"NVME","mode":"READ_ONLY","type":"PERSISTENT"}')).status,
    ).toBe(200);
    expect(await body("instance/disks/0/device-name")).toBe("d");
    expect(JSON.parse(await body("instance/disks/?recursive=true"))[0].deviceName).toBe("d");
  });

  test("new attribute keys; a dash stays a dash in JSON", async () => {
    expect((await update("instance/attributes/foo", "bar")).status).toBe(200);
    expect((await update("instance/attributes/foo-bar", "baz")).status).toBe(200);
    expect(JSON.parse(await body("instance/attributes/?recursive=true"))["foo-bar"]).toBe("baz");
    expect(await body("instance/attributes/foo")).toBe("bar");
  });

  test("adding a key of a fixed-key directory: 400 Cannot add or remove", async () => {
    await expectAnswer(await update("instance/foo", "bar"), 400, "Cannot add or remove data at the specified path", HTML);
  });

  test("wrong shapes: 400 Updated data does not have the correct format", async () => {
    await expectAnswer(await update("instance/attributes/foo", "x"), 200, "Update successful", "application/text");
    await expectAnswer(
      await update("instance/attributes", '{"foo":{"nested":"x"}}'),
      400,
      "Updated data does not have the correct format",
      HTML,
    );
    await expectAnswer(await update("instance/id", "not-a-number"), 400, "Updated data does not have the correct format", HTML);
    await expectAnswer(
      await update("instance/scheduling", '{"automatic-restart":"TRUE"}'),
      400,
      "Updated data does not have the correct format",
      HTML,
    );
    await expectAnswer(await update("instance/licenses", "not json"), 400, "Updated data does not have the correct format", HTML);
    expect(await body("instance/id")).toBe("4520031799277581759");
  });

  test("an empty body: 400 no content", async () => {
    await expectAnswer(
      await s.req("POST", "/emulator/v1/update/instance/cpu-platform", ""),
      400,
      "Error: no content specified with the POST request.",
      HTML,
    );
  });

  test("a missing parent: 404", async () => {
    await expectAnswer(await update("instance/nothing/here", "x"), 404, "Error: Not found", HTML);
    await expectAnswer(await remove("instance/nothing/here"), 404, "Error: Not found", HTML);
  });

  test("lists: set at len appends, past len is refused, delete shifts later items down", async () => {
    expect((await update("instance/licenses", '[{"id":"0"},{"id":"1"}]')).status).toBe(200);
    expect((await update("instance/licenses/2", '{"id":"2"}')).status).toBe(200);
    expect((await update("instance/licenses/9", '{"id":"9"}')).status).toBe(400);
    expect(await body("instance/licenses/?recursive=true")).toBe('[{"id":"0"},{"id":"1"},{"id":"2"}]');
    await expectAnswer(await remove("instance/licenses/1"), 200, "Update successful", "application/text");
    expect(await body("instance/licenses/?recursive=true")).toBe('[{"id":"0"},{"id":"2"}]');
    await expectAnswer(await remove("instance/licenses/5"), 400, "Updated data does not have the correct format", HTML);
  });

  test("delete: a key of a fixed-key parent is refused, a missing key is a format error", async () => {
    await expectAnswer(await remove("instance/attributes"), 400, "Cannot add or remove data at the specified path", HTML);
    await expectAnswer(await remove("instance/attributes/absent"), 400, "Updated data does not have the correct format", HTML);
    await update("instance/attributes/foo", "x");
    await expectAnswer(await remove("instance/attributes/foo"), 200, "Update successful", "application/text");
    expect((await s.get(`${V1}instance/attributes/foo`)).status).toBe(404);
  });

  test("the whole tree: replaced when it has the current shape, refused otherwise", async () => {
    const tree = JSON.parse(await (await s.get("/emulator/v1/metadata/")).text());
    const kebabbed = {
      ...tree,
      instance: { ...tree.instance, "cpu-platform": "AMD Rome" },
    };
    delete kebabbed.instance.cpuPlatform;
    // Only the top-level key changes naming in this test; nested Google keys keep working in camelCase too.
    expect((await s.req("POST", "/emulator/v1/update/", quotePlus(JSON.stringify(kebabbed)))).status).toBe(200);
    expect(await body("instance/cpu-platform")).toBe("AMD Rome");
    delete kebabbed.instance.zone;
    await expectAnswer(
      await s.req("POST", "/emulator/v1/update/", quotePlus(JSON.stringify(kebabbed))),
      400,
      "Updated data does not have the correct format",
      HTML,
    );
  });

  test("behind the Metadata-Flavor guard", async () => {
    const r = await fetch(`${s.url}/emulator/v1/update/instance/cpu-platform`, { method: "POST", body: "x" });
    expect(r.status).toBe(403);
    expect(await r.text()).toContain("Missing Metadata-Flavor:Google header.");
    const f = await s.req("POST", "/emulator/v1/update/instance/cpu-platform", "x", { "X-Forwarded-For": "1.2.3.4" });
    expect(f.status).toBe(403);
    expect(await body("instance/cpu-platform")).toBe("Intel Broadwell");
  });

  test("waiters wake on updates: the reference suite's descendant and delete waits", async () => {
    const onDisks = s.get(`${V1}instance/disks?recursive=True&wait_for_change=true`).then(read);
    const onAttrs = s.get(`${V1}instance/attributes/?recursive=true&wait_for_change=true`).then(read);
    await update("instance/attributes/k", "v");
    // onAttrs may be woken by this first update; re-arm a wait for the delete.
    await onAttrs;
    const afterDelete = s.get(`${V1}instance/attributes/?recursive=true&wait_for_change=true`).then(read);
    await until(() => s.server.changes.size >= 1);
    await remove("instance/attributes/k");
    expect(JSON.parse((await afterDelete).body).k).toBeUndefined();
    // The disks wait went through the redirect; wake it through a descendant.
    await until(() => s.server.changes.bucketCount >= 1);
    await update("instance/disks/0/device-name", "renamed");
    expect(JSON.parse((await onDisks).body)[0].deviceName).toBe("renamed");
  });
});

describe("JSON routes", () => {
  const api = (method: string, path: string, b?: unknown) =>
    s.req(method, `/emulator/v1/metadata/${path}`, b === undefined ? undefined : typeof b === "string" ? b : JSON.stringify(b));

  test("GET gives config JSON (camelCase), numbers exact", async () => {
    const r = await api("GET", "instance/scheduling/");
    expect(r.headers.get("content-type")).toBe("application/json");
    expect(await r.text()).toBe('{"automaticRestart":"TRUE","onHostMaintenance":"MIGRATE","preemptible":"FALSE"}');
    expect(await (await api("GET", "instance/id")).text()).toBe("4520031799277581759");
    expect((await api("GET", "instance/nothing")).status).toBe(404);
  });

  test("PUT sets and creates attributes; answers the new value", async () => {
    const r = await api("PUT", "instance/attributes/startup-script", "echo hi");
    expect(r.status).toBe(400); // the body is JSON: a string value is quoted
    const ok = await api("PUT", "instance/attributes/startup-script", '"echo hi"');
    expect(ok.status).toBe(200);
    expect(await ok.text()).toBe('"echo hi"');
    expect(await body("instance/attributes/startup-script")).toBe("echo hi");
    expect((await api("PUT", "project/attributes/new", "v")).status).toBe(400);
    expect((await api("PUT", "project/attributes/new", '"v"')).status).toBe(200);
    expect((await api("PUT", "instance/id", "123456789012345678901234567890")).status).toBe(200);
    expect(await body("instance/id")).toBe("123456789012345678901234567890");
  });

  test("type mismatches: 400 naming the path", async () => {
    const r = await api("PUT", "instance/disks/0", {
      deviceName: 5,
      index: "x",
      interface: "SCSI",
      mode: "READ_WRITE",
      type: "PERSISTENT",
    });
    expect(r.status).toBe(400);
    const e = (await r.json()) as { error: { code: string; message: string } };
    expect(e.error.code).toBe("CONFIG_SHAPE");
    expect(e.error.message).toContain("instance/disks/0.index: expected an integer");
    const nested = (await (await api("PUT", "instance/attributes/x", { a: "b" })).json()) as { error: { message: string } };
    expect(nested.error.message).toBe("instance/attributes/x: expected a string, found an object");
    const list = (await (await api("PUT", "instance/tags", '"one"')).json()) as { error: { message: string } };
    expect(list.error.message).toContain("instance/tags: expected an array of strings");
    expect((await api("PUT", "instance/tags", "[not json")).status).toBe(400);
  });

  test("fixed-key directories cannot gain or lose keys; attributes can", async () => {
    const add = (await (await api("PUT", "instance/scheduling/new-key", '"x"')).json()) as { error: { code: string; message: string } };
    expect(add.error.code).toBe("EDIT_FIXED_KEYS");
    expect(add.error.message).toContain("instance/scheduling/new-key");
    const del = await api("DELETE", "instance/scheduling/preemptible");
    expect(del.status).toBe(400);
    const patchAdd = (await (await api("PATCH", "instance/scheduling", { extra: "x" })).json()) as { error: { message: string } };
    expect(patchAdd.error.message).toContain("adds extra");
    const patchDel = (await (await api("PATCH", "instance/", { scheduling: { preemptible: null } })).json()) as {
      error: { message: string };
    };
    expect(patchDel.error.message).toContain("instance/scheduling: the keys of this directory are fixed; the change removes preemptible");
    const replace = await api("PUT", "instance/scheduling", { automaticRestart: "FALSE" });
    expect(replace.status).toBe(400);
    expect((await api("PATCH", "instance/attributes", { a: "1", "enable-oslogin": null })).status).toBe(200);
    expect(await body("instance/attributes/")).toBe("a\nstartup-script\n");
    expect((await api("DELETE", "instance/attributes/a")).status).toBe(204);
    expect((await api("DELETE", "instance/attributes/a")).status).toBe(404);
  });

  test("PATCH merges: keys kept, changed, deleted with null", async () => {
    const r = await api("PATCH", "instance/scheduling", { preemptible: "TRUE" });
    expect(await r.text()).toBe('{"automaticRestart":"TRUE","onHostMaintenance":"MIGRATE","preemptible":"TRUE"}');
    expect((await api("PATCH", "project", { attributes: { "ssh-keys": "k" } })).status).toBe(200);
    expect(await body("project/attributes/ssh-keys")).toBe("k");
    expect(await body("project/attributes/google-compute-default-zone")).toBe("us-central1-a");
  });

  test("lists: append at len, delete shifts", async () => {
    expect((await api("PUT", "instance/network-interfaces/0/forwarded-ips/0", '"10.0.0.9"')).status).toBe(200);
    expect(await body("instance/network-interfaces/0/forwarded-ips/")).toBe("0\n");
    expect((await api("PUT", "instance/network-interfaces/0/forwarded-ips/5", '"10.0.0.9"')).status).toBe(400);
    expect((await api("DELETE", "instance/network-interfaces/0/forwarded-ips/0")).status).toBe(204);
    expect(await body("instance/network-interfaces/0/forwarded-ips/")).toBe("");
  });

  test("config: the whole document, replaced like a new file", async () => {
    const doc = JSON.parse(await (await s.req("GET", "/emulator/v1/config")).text());
    expect(doc.computeMetadata.v1.instance.name).toBe("vm-1");
    doc.computeMetadata.v1.instance.name = "replaced";
    doc.computeMetadata.v1.instance.scheduling = { preemptible: "TRUE" }; // a new file may have any shape
    const r = await s.req("PUT", "/emulator/v1/config", JSON.stringify(doc));
    expect(r.status).toBe(200);
    expect(await body("instance/name")).toBe("replaced");
    expect(await body("instance/scheduling/")).toBe("preemptible\n");
    const bad = await s.req("PUT", "/emulator/v1/config", '{"computeMetadata":{"v1":{"instance":{"id":"x"}}}}');
    expect(bad.status).toBe(400);
    expect(await bad.text()).toContain("computeMetadata.v1.instance.id: expected an integer");
  });

  test("a waiter sees a JSON-route change", async () => {
    const waiting = s.get(`${V1}instance/attributes/watched?wait_for_change=true&last_etag=NONE`).then((r) => r.status);
    expect(await waiting).toBe(404);
    await api("PUT", "instance/attributes/watched", '"1"');
    const w2 = s.get(`${V1}instance/attributes/watched?wait_for_change=true`).then(read);
    await until(() => s.server.changes.size === 1);
    await api("PUT", "instance/attributes/watched", '"2"');
    expect((await w2).body).toBe("2");
  });

  test("status reports waiters", async () => {
    const w = s.get(`${V1}instance/name?wait_for_change=true&timeout_sec=2`);
    await until(() => s.server.changes.size === 1);
    const st = (await (await s.req("GET", "/emulator/v1/status")).json()) as { waiters: number };
    expect(st.waiters).toBe(1);
    s.server.set("instance/name", "n");
    await w;
  });
});

describe("off by default; library API", () => {
  test("without controlApi the routes do not exist", async () => {
    const plain = await start();
    try {
      expect((await plain.req("POST", "/emulator/v1/update/instance/cpu-platform", "x")).status).toBe(404);
      expect((await plain.req("GET", "/emulator/v1/metadata/instance/")).status).toBe(404);
    } finally {
      await plain.server.stop();
    }
  });

  test("get, set, merge, delete, replaceClaims", async () => {
    const srv = s.server;
    expect(srv.get("instance/scheduling/")).toEqual({ automaticRestart: "TRUE", onHostMaintenance: "MIGRATE", preemptible: "FALSE" });
    srv.set("instance/attributes/foo", "bar");
    expect(await body("instance/attributes/foo")).toBe("bar");
    srv.merge("instance/scheduling", { preemptible: "TRUE" });
    expect(await body("instance/scheduling/preemptible")).toBe("TRUE");
    srv.delete("instance/attributes/foo");
    expect(srv.get("instance/attributes/foo")).toBeUndefined();
    expect(() => srv.set("instance/scheduling/bogus", "x")).toThrow(EditError);
    expect(() => srv.set("instance/id", { a: 1 })).toThrow("instance/id: expected an integer");
    expect(() => srv.delete("instance/nothing/x")).toThrow("instance/nothing: no such node");
    srv.replaceClaims({ computeMetadata: { v1: { instance: { name: "only" }, project: { projectId: "p" } } } });
    expect(await body("instance/name")).toBe("only");
    expect((await s.get(`${V1}instance/zone`)).status).toBe(404);
  });
});

describe("ID tokens follow the instance", () => {
  test("a project change drops cached full ID tokens; access tokens stay", async () => {
    const s = await startServer();
    try {
      const SA = "/computeMetadata/v1/instance/service-accounts/default/";
      const id1 = await (await s.get(`${SA}identity?audience=a&format=full`)).text();
      const tok1 = await (await s.get(`${SA}token`)).text();
      s.server.set("project/project-id", "renamed-project");
      const id2 = await (await s.get(`${SA}identity?audience=a&format=full`)).text();
      const tok2 = await (await s.get(`${SA}token`)).text();
      const ce = (t: string) => (decodeJwt(t).google as { compute_engine: { project_id: string } }).compute_engine.project_id;
      expect(ce(id1)).toBe("example-project");
      expect(ce(id2)).toBe("renamed-project");
      expect(JSON.parse(tok2).access_token).toBe(JSON.parse(tok1).access_token);
    } finally {
      await s.stop();
    }
  });
});
