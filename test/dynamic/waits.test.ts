/** wait_for_change: every rule of spec §5.3, through real HTTP against a started server. */
import { defaultMaxWaiters, openFileLimit } from "../../src/changes/limit.ts";
import { afterEach, beforeEach, describe, expect, test } from "bun:test";
import { MetaNode } from "../../src/metadata/snapshot.ts";
import { read, settlesWithin, start, until, V1, type Started } from "./helpers.ts";

let s: Started;
beforeEach(async () => {
  s = await start();
});
afterEach(async () => {
  await s.server.stop();
});

const ZONE = `${V1}instance/zone`;

describe("leaf waits", () => {
  test("hangs until the value changes, then answers the new value with its new ETag", async () => {
    const before = await read(await s.get(ZONE));
    const waiting = s.get(`${ZONE}?wait_for_change=true`).then(read);
    expect(await settlesWithin(waiting, 150)).toBe(false);
    expect(s.server.changes.size).toBe(1);
    s.server.set("instance/zone", "projects/123456789012/zones/europe-west1-b");
    const after = await waiting;
    expect(after.status).toBe(200);
    expect(after.body).toBe("projects/123456789012/zones/europe-west1-b");
    expect(after.etag).not.toBe(before.etag);
    expect(after.etag).toBe((await read(await s.get(ZONE))).etag);
    expect(s.server.changes.size).toBe(0);
  });

  test("a change elsewhere, or a write of the same value, does not wake it", async () => {
    const waiting = s.get(`${ZONE}?wait_for_change=true&timeout_sec=1`).then(read);
    s.server.set("instance/attributes/other", "x");
    s.server.set("instance/zone", "projects/123456789012/zones/us-central1-a");
    const t0 = Date.now();
    const r = await waiting;
    expect(Date.now() - t0).toBeGreaterThan(700);
    expect(r.status).toBe(200);
    expect(r.body).toBe("projects/123456789012/zones/us-central1-a");
  });

  test("alt=json on a waiting leaf answers JSON", async () => {
    const waiting = s.get(`${V1}instance/id?wait_for_change=true&alt=json`).then(read);
    await until(() => s.server.changes.size === 1);
    s.server.set("instance/id", 42);
    const r = await waiting;
    expect(r.body).toBe("42");
    expect(r.type).toBe("application/json");
  });
});

describe("last_etag", () => {
  test("different from the current ETag: answers at once", async () => {
    const r = await read(await s.get(`${ZONE}?wait_for_change=true&last_etag=0123456789abcdef`));
    expect(r.status).toBe(200);
    expect(r.body).toBe("projects/123456789012/zones/us-central1-a");
  });

  test("0 and NONE are never real ETags: answer at once", async () => {
    for (const tag of ["0", "NONE"]) {
      const p = s.get(`${V1}?recursive=true&alt=json&wait_for_change=true&last_etag=${tag}&timeout_sec=60`).then(read);
      expect(await settlesWithin(p, 1000)).toBe(true);
      const r = await p;
      expect(r.status).toBe(200);
      expect(JSON.parse(r.body).project.projectId).toBe("example-project");
    }
  });

  test("equal to the current ETag: hangs until the next change", async () => {
    const { etag } = await read(await s.get(ZONE));
    const waiting = s.get(`${ZONE}?wait_for_change=true&last_etag=${etag}`).then(read);
    expect(await settlesWithin(waiting, 150)).toBe(false);
    s.server.set("instance/zone", "projects/1/zones/asia-east1-a");
    expect((await waiting).body).toBe("projects/1/zones/asia-east1-a");
  });

  test("a stale last_etag (change happened between two requests) answers at once: no change is lost", async () => {
    const { etag } = await read(await s.get(ZONE));
    s.server.set("instance/zone", "projects/1/zones/asia-east1-b");
    const r = await read(await s.get(`${ZONE}?wait_for_change=true&last_etag=${etag}`));
    expect(r.body).toBe("projects/1/zones/asia-east1-b");
  });
});

describe("recursive directory waits", () => {
  test("wake on any change in the subtree and answer the whole subtree", async () => {
    const before = await read(await s.get(`${V1}instance/disks/?recursive=true`));
    const waiting = s.get(`${V1}instance/disks/?recursive=true&wait_for_change=true&last_etag=${before.etag}`).then(read);
    expect(await settlesWithin(waiting, 100)).toBe(false);
    s.server.set("instance/disks/0/device-name", "data-disk");
    const r = await waiting;
    expect(r.type).toBe("application/json");
    expect(JSON.parse(r.body)[0].deviceName).toBe("data-disk");
    expect(r.etag).not.toBe(before.etag);
  });

  test("the recursive ETag is what last_etag is compared with", async () => {
    const listing = await read(await s.get(`${V1}instance/attributes/`));
    const rec = await read(await s.get(`${V1}instance/attributes/?recursive=true`));
    expect(listing.etag).not.toBe(rec.etag);
    // The listing's ETag is not the recursive one: answers at once.
    const now = await read(await s.get(`${V1}instance/attributes/?recursive=true&wait_for_change=true&last_etag=${listing.etag}`));
    expect(now.body).toBe(rec.body);
    // The recursive ETag hangs; a value change (listing unchanged) wakes it.
    const waiting = s.get(`${V1}instance/attributes/?recursive=true&wait_for_change=true&last_etag=${rec.etag}`).then(read);
    expect(await settlesWithin(waiting, 100)).toBe(false);
    s.server.set("instance/attributes/enable-oslogin", "TRUE");
    expect(JSON.parse((await waiting).body)["enable-oslogin"]).toBe("TRUE");
  });

  test("recursive alt=text wait answers text lines", async () => {
    const waiting = s.get(`${V1}instance/scheduling/?recursive=true&alt=text&wait_for_change=true`).then(read);
    await until(() => s.server.changes.size === 1);
    s.server.set("instance/scheduling/preemptible", "TRUE");
    const r = await waiting;
    expect(r.type).toBe("application/text");
    expect(r.body).toContain("preemptible TRUE\n");
  });

  test("the guest agent's whole-tree watch wakes on any change", async () => {
    const first = await read(await s.get(`${V1}?recursive=true&alt=json&wait_for_change=true&last_etag=NONE&timeout_sec=60`));
    const waiting = s.get(`${V1}?recursive=true&alt=json&wait_for_change=true&last_etag=${first.etag}&timeout_sec=60`).then(read);
    expect(await settlesWithin(waiting, 100)).toBe(false);
    s.server.set("project/attributes/ssh-keys", "alice:ssh-ed25519 AAAA alice");
    expect(JSON.parse((await waiting).body).project.attributes["ssh-keys"]).toBe("alice:ssh-ed25519 AAAA alice");
  });
});

describe("refusals", () => {
  test("400 on a directory without recursive=true", async () => {
    expect((await s.get(`${V1}project/?wait_for_change=true`)).status).toBe(400);
  });
  test("400 on token and identity", async () => {
    expect((await s.get(`${V1}instance/service-accounts/default/token?wait_for_change=true`)).status).toBe(400);
    expect((await s.get(`${V1}instance/service-accounts/default/identity?audience=x&wait_for_change=true`)).status).toBe(400);
  });
  test("400 on a non-integer timeout_sec", async () => {
    for (const t of ["abc", "1.5", "-1"]) expect((await s.get(`${ZONE}?wait_for_change=true&timeout_sec=${t}`)).status).toBe(400);
  });
  test("a slashless directory redirects before any wait", async () => {
    const r = await s.get(`${V1}instance/disks?recursive=true&wait_for_change=true`, { redirect: "manual" });
    expect(r.status).toBe(301);
  });
  test("wait_for_change=false does not wait", async () => {
    const p = s.get(`${ZONE}?wait_for_change=false`);
    expect(await settlesWithin(p, 500)).toBe(true);
  });
});

describe("timeouts, deletion, disconnects, stop", () => {
  test("timeout_sec: 200 with the current content and ETag", async () => {
    const cur = await read(await s.get(ZONE));
    const t0 = Date.now();
    const r = await read(await s.get(`${ZONE}?wait_for_change=true&timeout_sec=1`));
    const took = Date.now() - t0;
    expect(took).toBeGreaterThanOrEqual(950);
    expect(took).toBeLessThan(3000);
    expect(r.status).toBe(200);
    expect(r.body).toBe(cur.body);
    expect(r.etag).toBe(cur.etag);
    expect(s.server.changes.size).toBe(0);
  });

  test("timeout_sec=0 answers at once", async () => {
    const p = s.get(`${ZONE}?wait_for_change=true&timeout_sec=0`);
    expect(await settlesWithin(p, 500)).toBe(true);
  });

  test("a node deleted while waited on answers 404", async () => {
    s.server.set("instance/attributes/doomed", "x");
    const waiting = s.get(`${V1}instance/attributes/doomed?wait_for_change=true`);
    await until(() => s.server.changes.size === 1);
    s.server.delete("instance/attributes/doomed");
    const r = await waiting;
    expect(r.status).toBe(404);
    expect(await r.text()).toContain("/computeMetadata/v1/instance/attributes/doomed");
  });

  test("a recursive wait on a directory whose key is deleted answers the smaller subtree", async () => {
    s.server.set("instance/attributes/gone", "x");
    const waiting = s.get(`${V1}instance/attributes/?recursive=true&wait_for_change=true`).then(read);
    await until(() => s.server.changes.size === 1);
    s.server.delete("instance/attributes/gone");
    const body = JSON.parse((await waiting).body);
    expect(body.gone).toBeUndefined();
    expect(body["enable-oslogin"]).toBe("FALSE");
  });

  test("a client that disconnects frees its waiter at once", async () => {
    const ac = new AbortController();
    const p = s.get(`${ZONE}?wait_for_change=true`, { signal: ac.signal }).catch((e: Error) => e.name);
    await until(() => s.server.changes.size === 1);
    ac.abort();
    expect(await p).toBe("AbortError");
    await until(() => s.server.changes.size === 0, 1000);
    expect(s.server.changes.bucketCount).toBe(0);
  });

  test("stop answers every waiting request with the current content", async () => {
    const waits = Array.from({ length: 20 }, (_, i) =>
      s.get(i % 2 ? `${ZONE}?wait_for_change=true` : `${V1}instance/?recursive=true&wait_for_change=true`).then(read),
    );
    await until(() => s.server.changes.size === 20);
    const t0 = Date.now();
    await s.server.stop();
    const answers = await Promise.all(waits);
    expect(Date.now() - t0).toBeLessThan(1500);
    for (const a of answers) expect(a.status).toBe(200);
    expect(answers[1]!.body).toBe("projects/123456789012/zones/us-central1-a");
    expect(JSON.parse(answers[0]!.body).name).toBe("vm-1");
  });

  test("maxWaiters caps hanging requests with 503 (by default half the open-file limit)", async () => {
    const capped = await start({ maxWaiters: 2 });
    try {
      const a = capped.get(`${ZONE}?wait_for_change=true`);
      const b = capped.get(`${ZONE}?wait_for_change=true`);
      await until(() => capped.server.changes.size === 2);
      const c = await capped.get(`${ZONE}?wait_for_change=true`);
      expect(c.status).toBe(503);
      capped.server.set("instance/zone", "z");
      expect((await a).status).toBe(200);
      expect((await b).status).toBe(200);
    } finally {
      await capped.server.stop();
    }
    expect(s.server.changes.maxWaiters).toBe(defaultMaxWaiters(openFileLimit()));
    expect(s.server.changes.maxWaiters).toBeGreaterThan(0);
    const unlimited = await start({ maxWaiters: 0 });
    expect(unlimited.server.changes.maxWaiters).toBe(0);
    await unlimited.server.stop();
  });

  test("a wait longer than Bun's default 10 s idle timeout is held to its end", async () => {
    const t0 = Date.now();
    const r = await read(await s.get(`${ZONE}?wait_for_change=true&timeout_sec=12`));
    expect(r.status).toBe(200);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(11_900);
  }, 20_000);
});

describe("ETags change exactly where content changed", () => {
  test("a value change: the node, and its ancestors' recursive ETags; nothing else", async () => {
    const a = s.server.snapshot;
    s.server.set("instance/attributes/enable-oslogin", "TRUE");
    const b = s.server.snapshot;
    const changed: string[] = [];
    for (const [path, e] of a.entries) {
      if (!(e instanceof MetaNode) || (e.kind !== "leaf" && e.kind !== "dir")) continue;
      const n = b.entries.get(path) as MetaNode;
      if (n.plain.etag !== e.plain.etag) changed.push(`plain ${path}`);
      if (n.recursive?.etag !== e.recursive?.etag) changed.push(`recursive ${path}`);
    }
    expect(changed.sort()).toEqual(
      [
        `plain ${V1}instance/attributes/enable-oslogin`,
        `recursive ${V1}instance/attributes/`,
        `recursive ${V1}instance/`,
        `recursive ${V1}`,
        "recursive /computeMetadata/",
      ].sort(),
    );
  });

  test("adding a key also changes the parent listing; restoring brings every ETag back", async () => {
    const a = s.server.snapshot;
    const listing = (a.lookup(`${V1}instance/attributes/`) as MetaNode).plain.etag;
    s.server.set("instance/attributes/new-key", "v");
    expect((s.server.snapshot.lookup(`${V1}instance/attributes/`) as MetaNode).plain.etag).not.toBe(listing);
    s.server.delete("instance/attributes/new-key");
    const c = s.server.snapshot;
    for (const [path, e] of a.entries) {
      if (e instanceof MetaNode && (e.kind === "leaf" || e.kind === "dir")) {
        expect((c.entries.get(path) as MetaNode).plain.etag).toBe(e.plain.etag);
      }
    }
  });
});
