/** Simulated maintenance and preemption, each transition seen by an app holding a wait_for_change request. */
import { afterEach, beforeEach, describe, expect, test } from "bun:test";
import { parseDuration } from "../../src/duration.ts";
import { parseMaintenanceSpec, parsePreemptionSpec } from "../../src/events/lifecycle.ts";
import { UsageError } from "../../src/errors.ts";
import { read, start, until, V1, type Started } from "./helpers.ts";

let s: Started;
beforeEach(async () => {
  s = await start({ controlApi: true });
});
afterEach(async () => {
  await s.server.stop();
});

/**
 * What an app does: follow a node with wait_for_change and last_etag, recording each value it is told about (and
 * each stretch of non-200 answers once).
 */
function follow(path: string, count: number): Promise<string[]> {
  return (async () => {
    const seen: string[] = [];
    let etag = "NONE";
    while (seen.length < count) {
      const r = await read(await s.get(`${V1}${path}?wait_for_change=true&last_etag=${etag}&timeout_sec=10`));
      if (r.status !== 200) {
        // A missing node cannot be waited on (404 at once): poll until it appears.
        if (seen.at(-1) !== `status ${r.status}`) seen.push(`status ${r.status}`);
        etag = "NONE";
        await Bun.sleep(5);
        continue;
      }
      if (r.etag === etag) continue; // timeout without change
      seen.push(r.body);
      etag = r.etag!;
    }
    return seen;
  })();
}

describe("host maintenance", () => {
  test("MIGRATE: NONE → MIGRATE_ON_HOST_MAINTENANCE → NONE, with upcoming-maintenance meanwhile", async () => {
    const events = follow("instance/maintenance-event", 3);
    const upcoming = follow("instance/upcoming-maintenance", 4);
    await until(() => s.server.changes.size === 1);
    const t0 = Date.now();
    const ev = s.server.simulateMaintenance(parseMaintenanceSpec("in=200ms,type=MIGRATE,duration=300ms"));
    expect(ev.state).toBe("scheduled");
    expect(await events).toEqual(["NONE", "MIGRATE_ON_HOST_MAINTENANCE", "NONE"]);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(450);
    const notices = await upcoming;
    expect(notices[0]).toBe("status 404");
    const pending = JSON.parse(notices[1]!);
    expect(pending.maintenance_status).toBe("PENDING");
    expect(pending.type).toBe("SCHEDULED");
    expect(pending.window_start_time).toBe(ev.startsAt);
    expect(pending.window_end_time).toBe(ev.endsAt);
    expect(Object.keys(pending)).toEqual([
      "can_reschedule",
      "latest_window_start_time",
      "maintenance_status",
      "type",
      "window_end_time",
      "window_start_time",
    ]);
    expect(JSON.parse(notices[2]!).maintenance_status).toBe("ONGOING");
    expect(notices[3]).toBe("status 404");
    expect(s.server.lifecycle.list()[0]!.state).toBe("done");
  });

  test("TERMINATE through the control API (JSON body); an existing upcoming-maintenance comes back after", async () => {
    s.server.set("instance/attributes/x", "y"); // unrelated change first
    const c = JSON.parse(s.server.configDocument());
    c.computeMetadata.v1.instance.upcomingMaintenance = {};
    s.server.replaceClaims(c);
    expect((await read(await s.get(`${V1}instance/upcoming-maintenance`))).body).toBe("{}");
    const events = follow("instance/maintenance-event", 3);
    await until(() => s.server.changes.size === 1);
    const r = await s.req(
      "POST",
      "/emulator/v1/lifecycle/maintenance",
      JSON.stringify({ in: "50ms", type: "TERMINATE", duration: "100ms" }),
    );
    expect(r.status).toBe(201);
    expect(((await r.json()) as { type: string }).type).toBe("TERMINATE");
    expect(await events).toEqual(["NONE", "TERMINATE_ON_HOST_MAINTENANCE", "NONE"]);
    await until(() => s.server.lifecycle.list()[0]!.state === "done");
    expect((await read(await s.get(`${V1}instance/upcoming-maintenance`))).body).toBe("{}");
  });

  test("at a wall-clock time, in the flag's text form; cancelling an ongoing event ends it", async () => {
    const at = new Date(Date.now() + 100).toISOString();
    const r = await s.req("POST", "/emulator/v1/lifecycle/maintenance", `at=${at},type=MIGRATE,duration=1h`);
    expect(r.status).toBe(201);
    const { id } = (await r.json()) as { id: string };
    const events = follow("instance/maintenance-event", 3);
    await until(() => s.server.get("instance/maintenance-event") === "MIGRATE_ON_HOST_MAINTENANCE", 2000);
    const list = (await (await s.req("GET", "/emulator/v1/lifecycle")).json()) as { state: string }[];
    expect(list[0]!.state).toBe("ongoing");
    expect((await s.req("DELETE", `/emulator/v1/lifecycle/${id}`)).status).toBe(200);
    expect(await events).toEqual(["NONE", "MIGRATE_ON_HOST_MAINTENANCE", "NONE"]);
    expect((await s.req("DELETE", `/emulator/v1/lifecycle/${id}`)).status).toBe(404);
  });

  test("bad specs are refused with a reason", async () => {
    const r = await s.req("POST", "/emulator/v1/lifecycle/maintenance", "in=soon");
    expect(r.status).toBe(400);
    expect(((await r.json()) as { error: { message: string } }).error.message).toContain('invalid duration "soon"');
    expect((await s.req("POST", "/emulator/v1/lifecycle/maintenance", '{"type":"REBOOT"}')).status).toBe(400);
    expect((await s.req("POST", "/emulator/v1/lifecycle/maintenance", "{bad")).status).toBe(400);
    expect(() => parseMaintenanceSpec("in=1s,at=2030-01-01T00:00:00Z")).toThrow(UsageError);
    expect(() => parseMaintenanceSpec("when=1s")).toThrow('unknown field "when"');
    expect(() => parsePreemptionSpec("at=yesterday")).toThrow("invalid time");
    expect(s.server.lifecycle.list()).toEqual([]);
  });
});

describe("preemption", () => {
  test("preempted goes TRUE and shutdown-details/ is filled in", async () => {
    const preempted = follow("instance/preempted", 2);
    const details = s.get(`${V1}instance/shutdown-details/?recursive=true&wait_for_change=true&last_etag=NONE`).then(read);
    expect((await details).status).toBe(404);
    await until(() => s.server.changes.size === 1);
    s.server.simulatePreemption(parsePreemptionSpec("in=100ms,grace=45s"));
    expect(await preempted).toEqual(["FALSE", "TRUE"]);
    const sd = JSON.parse((await read(await s.get(`${V1}instance/shutdown-details/?recursive=true`))).body);
    expect(sd.maxDuration).toBe(45);
    expect(sd.stopState).toBe("PENDING_STOP");
    expect(sd.targetState).toBe("TERMINATED");
    expect(Date.now() - Date.parse(sd.requestTimestamp)).toBeLessThan(5000);
    expect((await read(await s.get(`${V1}instance/shutdown-details/`))).body).toBe(
      "max-duration\nrequest-timestamp\nstop-state\ntarget-state\n",
    );
  });

  test("through the control API; DELETE termination action gives target-state DELETED", async () => {
    const c = JSON.parse(s.server.configDocument());
    c.computeMetadata.v1.instance.scheduling.instanceTerminationAction = "DELETE";
    s.server.replaceClaims(c);
    const r = await s.req("POST", "/emulator/v1/lifecycle/preemption", '{"in":0}');
    expect(r.status).toBe(201);
    await until(() => s.server.get("instance/preempted") === "TRUE");
    expect(s.server.get("instance/shutdown-details/target-state")).toBe("DELETED");
  });
});

test("durations in Go's syntax", () => {
  expect(parseDuration("30s")).toBe(30_000);
  expect(parseDuration("1h30m")).toBe(5_400_000);
  expect(parseDuration("1.5s")).toBe(1500);
  expect(parseDuration("250ms")).toBe(250);
  expect(parseDuration("90")).toBe(90_000);
  expect(() => parseDuration("")).toThrow(UsageError);
  expect(() => parseDuration("5 minutes")).toThrow(UsageError);
});
