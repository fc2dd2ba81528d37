/** Guest attributes (spec §4.11): enablement, PUT/GET/DELETE, names, listings, recursive JSON, waiters, methods. */
import { afterEach, describe, expect, test } from "bun:test";
import { config, read, start, until, V1, type Started } from "./helpers.ts";

let s: Started;
afterEach(async () => {
  await s.server.stop();
});

const GA = `${V1}instance/guest-attributes/`;
const DISABLED = "Guest attributes endpoint access is disabled.";

async function withAttributes(instance?: string, project?: string): Promise<Started> {
  const c = config();
  if (instance !== undefined) c.computeMetadata.v1.instance.attributes["enable-guest-attributes"] = instance;
  if (project !== undefined) c.computeMetadata.v1.project.attributes["enable-guest-attributes"] = project;
  s = await start({ claims: c });
  return s;
}

async function expectDisabled(r: Response) {
  expect(r.status).toBe(403);
  expect(await r.text()).toBe(DISABLED);
  expect(r.headers.get("metadata-flavor")).toBe("Google");
}

describe("disabled (the default)", () => {
  test("every read and write is 403; the directory is still listed and {} in recursive JSON", async () => {
    await withAttributes();
    await expectDisabled(await s.get(GA));
    await expectDisabled(await s.get(`${GA}hostkeys/`));
    await expectDisabled(await s.get(`${GA}hostkeys/ssh-rsa`));
    await expectDisabled(await s.get(`${GA}?recursive=true`));
    await expectDisabled(await s.get(`${GA}hostkeys/ssh-rsa?wait_for_change=true`));
    await expectDisabled(await s.req("PUT", `${GA}hostkeys/ssh-rsa`, "AAAA"));
    await expectDisabled(await s.req("DELETE", `${GA}hostkeys/ssh-rsa`));
    expect((await read(await s.get(`${V1}instance/`))).body).toContain("guest-attributes/\n");
    expect(JSON.parse((await read(await s.get(`${V1}instance/?recursive=true`))).body).guestAttributes).toEqual({});
  });

  test("FALSE on the instance beats TRUE on the project", async () => {
    await withAttributes("FALSE", "TRUE");
    await expectDisabled(await s.get(GA));
  });
});

describe("enabled", () => {
  test("by the project attribute, or the instance one (instance wins)", async () => {
    await withAttributes(undefined, "TRUE");
    expect((await s.get(GA)).status).toBe(200);
    await s.server.stop();
    await withAttributes("true", "FALSE");
    expect((await s.get(GA)).status).toBe(200);
  });

  test("PUT, GET, DELETE; listings of namespaces and keys; recursive JSON keeps verbatim keys", async () => {
    await withAttributes("TRUE");
    const put = await s.req("PUT", `${GA}hostkeys/ssh-ed25519`, "ssh-ed25519 AAAAC3Nza host");
    expect(put.status).toBe(200);
    expect(await put.text()).toBe("");
    expect((await s.req("PUT", `${GA}hostkeys/ssh_RSA-2`, "ssh-rsa AAAAB3")).status).toBe(200);
    expect((await s.req("PUT", `${GA}guestInventory/Hostname`, "vm-1")).status).toBe(200);
    const leaf = await read(await s.get(`${GA}hostkeys/ssh-ed25519`));
    expect(leaf.body).toBe("ssh-ed25519 AAAAC3Nza host");
    expect(leaf.type).toBe("application/text");
    expect(leaf.etag).toMatch(/^[0-9a-f]{16}$/);
    expect((await read(await s.get(GA))).body).toBe("guestInventory/\nhostkeys/\n");
    expect((await read(await s.get(`${GA}hostkeys/`))).body).toBe("ssh-ed25519\nssh_RSA-2\n");
    expect(JSON.parse((await read(await s.get(`${GA}?recursive=true`))).body)).toEqual({
      guestInventory: { Hostname: "vm-1" },
      hostkeys: { "ssh-ed25519": "ssh-ed25519 AAAAC3Nza host", "ssh_RSA-2": "ssh-rsa AAAAB3" },
    });
    expect(JSON.parse((await read(await s.get(`${V1}instance/?recursive=true`))).body).guestAttributes.guestInventory).toEqual({
      Hostname: "vm-1",
    });

    expect((await s.req("PUT", `${GA}hostkeys/ssh-ed25519`, "replaced")).status).toBe(200);
    expect((await read(await s.get(`${GA}hostkeys/ssh-ed25519`))).body).toBe("replaced");
    const del = await s.req("DELETE", `${GA}hostkeys/ssh-ed25519`);
    expect(del.status).toBe(200);
    expect(await del.text()).toBe("");
    expect((await s.get(`${GA}hostkeys/ssh-ed25519`)).status).toBe(404);
    expect((await s.req("DELETE", `${GA}hostkeys/ssh-ed25519`)).status).toBe(200);
    // The namespace goes once it is empty.
    expect((await s.req("DELETE", `${GA}guestInventory/Hostname`)).status).toBe(200);
    expect((await read(await s.get(GA))).body).toBe("hostkeys/\n");
  });

  test("an empty value is a value", async () => {
    await withAttributes("TRUE");
    expect((await s.req("PUT", `${GA}ns/empty`, "")).status).toBe(200);
    const r = await read(await s.get(`${GA}ns/empty`));
    expect(r.status).toBe(200);
    expect(r.body).toBe("");
  });

  test("names: letters, digits, _ and -", async () => {
    await withAttributes("TRUE");
    for (const bad of ["host.keys/k", "ns/k.ey", "ns/k%20y", "n%40s/k"]) {
      const r = await s.req("PUT", `${GA}${bad}`, "v");
      expect(r.status).toBe(400);
    }
    expect((await read(await s.get(GA))).body).toBe("");
  });

  test("methods: PUT/DELETE only on key paths; 405 elsewhere", async () => {
    await withAttributes("TRUE");
    expect((await s.req("POST", `${GA}ns/k`, "v")).status).toBe(405);
    expect((await s.req("PUT", `${GA}ns/`, "v")).status).toBe(405);
    expect((await s.req("PUT", GA, "v")).status).toBe(405);
    expect((await s.req("PUT", `${GA}ns/k/deeper`, "v")).status).toBe(405);
    expect((await s.req("PUT", `${V1}instance/attributes/foo`, "v")).status).toBe(405);
    expect((await s.req("DELETE", `${V1}instance/hostname`)).status).toBe(405);
    expect((await s.req("PATCH", `${V1}instance/hostname`, "x")).status).toBe(405);
    const noFlavor = await fetch(`${s.url}${GA}ns/k`, { method: "PUT", body: "v" });
    expect(noFlavor.status).toBe(403);
    expect((await s.get(`${GA}ns/k`)).status).toBe(404);
  });

  test("a PUT wakes waiters like any change; switching the feature off answers them 403", async () => {
    await withAttributes("TRUE");
    expect((await s.req("PUT", `${GA}ns/k`, "1")).status).toBe(200);
    const onKey = s.get(`${GA}ns/k?wait_for_change=true`).then(read);
    const onAll = s.get(`${GA}?recursive=true&wait_for_change=true`).then(read);
    await until(() => s.server.changes.size === 2);
    expect((await s.req("PUT", `${GA}ns/k`, "2")).status).toBe(200);
    expect((await onKey).body).toBe("2");
    expect(JSON.parse((await onAll).body)).toEqual({ ns: { k: "2" } });

    const cut = s.get(`${GA}ns/k?wait_for_change=true`);
    await until(() => s.server.changes.size === 1);
    s.server.set("instance/attributes/enable-guest-attributes", "FALSE");
    await expectDisabled(await cut);
  });
});
