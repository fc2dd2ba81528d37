/** Fault injection: rules, globs, when they fire, what they do on the wire, and how they are managed. */
import { afterEach, describe, expect, test } from "bun:test";
import { UsageError } from "../../src/errors.ts";
import { FaultRules, faultFrom, parseFaultSpec } from "../../src/http/faults.ts";
import { rawRequest, startServer, type Started, V1 } from "../helpers/server.ts";

const TOKEN = `${V1}instance/service-accounts/default/token`;
let s: Started | undefined;

afterEach(async () => {
  await s?.stop();
  s = undefined;
});

/** A raw GET on its own connection: the status line and body, or "" when the server sent no bytes. */
async function raw(path: string, headers = "Metadata-Flavor: Google\r\n"): Promise<string> {
  return rawRequest(s!.server.port, `GET ${path} HTTP/1.1\r\nHost: 127.0.0.1\r\n${headers}Connection: close\r\n\r\n`);
}
const statusOf = (rawText: string) => Number(rawText.slice(9, 12));

describe("rules (unit)", () => {
  test("faultFrom keeps what it was given and refuses what cannot work, naming the field", () => {
    expect(faultFrom({ path: " instance/* ", status: "503", times: "2" })).toEqual({ path: "instance/*", status: 503, times: 2 });
    expect(faultFrom({ path: "*", action: "reset", delay: "250ms", for: "10s", probability: 0.5 })).toEqual({
      path: "*",
      action: "reset",
      delay: "250ms",
      for: "10s",
      probability: 0.5,
    });
    const refused: Array<[Record<string, unknown>, RegExp]> = [
      [{ status: 503 }, /fault path: required/],
      [{ path: "*", status: 99 }, /whole number ≥ 200/],
      [{ path: "*", status: 600 }, /from 200 to 599/],
      [{ path: "*", action: "explode" }, /respond, reset or hang/],
      [{ path: "*", action: "reset", status: 503 }, /a reset sends no answer/],
      [{ path: "*", body: "x" }, /need a status/],
      [{ path: "*", status: 503, headers: { "Retry-After": 2 } }, /object of strings/],
      [{ path: "*", delay: "soon" }, /invalid duration "soon"/],
      [{ path: "*", delay: "-1s" }, /cannot be negative/],
      [{ path: "*", times: 0 }, /times: expected a whole number ≥ 1/],
      [{ path: "*", probability: 1.5 }, /from 0 to 1/],
      [{ path: "*", for: "0s" }, /above 0/],
      [{ path: "*", retry: 1 }, /unknown field "retry"/],
    ];
    for (const [o, message] of refused) {
      expect(() => faultFrom(o)).toThrow(message);
      expect(() => faultFrom(o)).toThrow(UsageError);
    }
  });

  test("parseFaultSpec reads the -fault flag's key=value text, headers as header=Name: value", () => {
    expect(parseFaultSpec("path=instance/service-accounts/*/token,status=503,times=2")).toEqual({
      path: "instance/service-accounts/*/token",
      status: 503,
      times: 2,
    });
    expect(parseFaultSpec("path=*,status=429,header=Retry-After: 2,header=X-Why: burst")).toEqual({
      path: "*",
      status: 429,
      headers: { "Retry-After": "2", "X-Why": "burst" },
    });
    expect(() => parseFaultSpec("path=*,stat=503")).toThrow(/-fault "path=\*,stat=503": unknown field "stat"/);
    expect(() => parseFaultSpec("path=*,header=NoColon")).toThrow(/header=Name: value/);
    expect(() => parseFaultSpec("status=503")).toThrow(/-fault "status=503": fault path: required/);
  });

  test("globs: * alone is every path (the root too), inside a pattern one segment; / starts a whole path", () => {
    const fired = (pattern: string, path: string) => {
      const rules = new FaultRules();
      rules.add({ path: pattern, status: 503 });
      return rules.apply(new Request(`http://x${path}`), path, undefined, () => new Response("real")) !== undefined;
    };
    expect(fired("*", "/")).toBe(true);
    expect(fired("*", `${V1}instance/id`)).toBe(true);
    expect(fired("project/*", `${V1}project/project-id`)).toBe(true);
    expect(fired("project/*", `${V1}project/attributes/x`)).toBe(false);
    expect(fired("instance/service-accounts/*/token", TOKEN)).toBe(true);
    expect(fired("instance/service-accounts/*/token", `${V1}instance/service-accounts/default/identity`)).toBe(false);
    expect(fired("instance/attrib*", `${V1}instance/attributes/`)).toBe(false);
    expect(fired("instance/attrib*/", `${V1}instance/attributes/`)).toBe(true);
    expect(fired("instance", `${V1}instance`)).toBe(true);
    expect(fired("instance", `${V1}instance/`)).toBe(false);
    expect(fired("/", "/")).toBe(true);
    expect(fired("/", `${V1}`)).toBe(false);
    expect(fired("/computeMetadata/v1/project/*", `${V1}project/project-id`)).toBe(true);
    expect(fired("project/project.id", `${V1}project/project-id`)).toBe(false);
  });

  test("times, after, every, probability and for decide when a matching rule fires; hits count firings", () => {
    let now = 0;
    let dice = 0.9;
    const rules = new FaultRules({ now: () => now, random: () => dice });
    const run = (path = `${V1}project/project-id`) => {
      const r = rules.apply(new Request(`http://x${path}`), path, undefined, () => new Response("real", { status: 200 }));
      return r instanceof Response ? r.status : r === undefined ? 200 : -1;
    };
    rules.add({ path: "project/*", status: 503, after: 1, times: 2 });
    expect([run(), run(), run(), run()]).toEqual([200, 503, 503, 200]);
    expect(rules.list()[0]).toMatchObject({ hits: 2, active: false });
    rules.clear();

    rules.add({ path: "project/*", status: 429, every: 3 });
    expect([run(), run(), run(), run(), run(), run()]).toEqual([200, 200, 429, 200, 200, 429]);
    rules.clear();

    rules.add({ path: "project/*", status: 500, probability: 0.5 });
    expect(run()).toBe(200);
    dice = 0.1;
    expect(run()).toBe(500);
    rules.clear();

    rules.add({ path: "*", status: 503, for: "10s" });
    now = 9_999;
    expect(run()).toBe(503);
    now = 10_000;
    expect(run()).toBe(200);
    expect(rules.list()[0]).toMatchObject({ hits: 1, active: false, for: "10s" });
  });

  test("the first rule that fires answers; a spent rule stays listed and lets later rules apply", () => {
    const rules = new FaultRules();
    const run = () => {
      const r = rules.apply(new Request("http://x/"), TOKEN, undefined, () => new Response("real"));
      return r instanceof Response ? r.status : 200;
    };
    const a = rules.add({ path: "instance/service-accounts/*/token", status: 503, times: 1 });
    rules.add({ path: "*", status: 429 });
    expect([run(), run(), run()]).toEqual([503, 429, 429]);
    expect(rules.list().map((r) => [r.id, r.hits, r.active])).toEqual([
      [a.id, 1, false],
      ["fault-2", 2, true],
    ]);
    expect(rules.remove(a.id)?.id).toBe(a.id);
    expect(rules.remove(a.id)).toBeUndefined();
    expect(rules.size).toBe(1);
  });

  test("the guard's hook is set only while rules exist", () => {
    const seen: boolean[] = [];
    const rules = new FaultRules({ onChange: (active) => seen.push(active) });
    const { id } = rules.add({ path: "*", status: 503 });
    rules.add({ path: "*", status: 500 });
    rules.remove(id);
    rules.clear();
    expect(seen).toEqual([true, true, false]);
  });
});

describe("on the wire", () => {
  test("respond: status, body and headers, with the metadata server's own headers", async () => {
    s = await startServer();
    s.server.faults.add({ path: "instance/service-accounts/*/token", status: 429, body: "slow down\n", headers: { "Retry-After": "2" } });
    const r = await s.get(TOKEN);
    expect(r.status).toBe(429);
    expect(r.headers.get("retry-after")).toBe("2");
    expect(r.headers.get("metadata-flavor")).toBe("Google");
    expect(await r.text()).toBe("slow down\n");
    s.server.faults.clear();
    s.server.faults.add({ path: "project/*", status: 200, body: "{not json", headers: { "content-type": "application/json" } });
    const corrupt = await s.get(`${V1}project/project-id`);
    expect(corrupt.headers.get("content-type")).toBe("application/json");
    expect(await corrupt.text()).toBe("{not json");
    s.server.faults.clear();
    const other = await s.get(`${V1}project/project-id`);
    expect(await other.text()).toBe("example-project");
  });

  test("faults come after admission: no Metadata-Flavor is still 403, X-Forwarded-For still refused", async () => {
    s = await startServer();
    s.server.faults.add({ path: "*", status: 503 });
    expect((await s.get(`${V1}project/project-id`, {})).status).toBe(403);
    expect((await s.get(`${V1}project/project-id`, { "Metadata-Flavor": "Google", "X-Forwarded-For": "1.2.3.4" })).status).toBe(403);
    expect((await s.get(`${V1}project/project-id`)).status).toBe(503);
    // The root needs no header, as the Go probe sends none; * covers it.
    expect((await s.get("/", {})).status).toBe(503);
    expect(s.server.faults.list()[0]!.hits).toBe(2);
  });

  test("reset: the connection closes with no HTTP bytes at all", async () => {
    s = await startServer();
    s.server.faults.add({ path: "project/*", action: "reset" });
    expect(await raw(`${V1}project/project-id`)).toBe("");
    const delayed = s.server.faults.add({ path: "instance/id", action: "reset", delay: "200ms" });
    const t0 = performance.now();
    expect(await raw(`${V1}instance/id`)).toBe("");
    expect(performance.now() - t0).toBeGreaterThanOrEqual(190);
    expect(s.server.faults.list().find((r) => r.id === delayed.id)!.hits).toBe(1);
    expect(statusOf(await raw(`${V1}instance/zone`))).toBe(200);
  });

  test("delay without a status: the real answer, late", async () => {
    s = await startServer();
    s.server.faults.add({ path: "project/project-id", delay: "300ms" });
    const t0 = performance.now();
    const r = await s.get(`${V1}project/project-id`);
    expect(performance.now() - t0).toBeGreaterThanOrEqual(290);
    expect(r.status).toBe(200);
    expect(await r.text()).toBe("example-project");
    // A token too: the real token, late.
    s.server.faults.add({ path: "instance/service-accounts/*/token", delay: "100ms" });
    const tok = (await (await s.get(TOKEN)).json()) as { access_token: string };
    expect(tok.access_token).toStartWith("ya29.");
  });

  test("delay with a status: the status, late", async () => {
    s = await startServer();
    s.server.faults.add({ path: "*", status: 503, delay: "1200ms" });
    const t0 = performance.now();
    expect((await s.get(`${V1}instance/id`)).status).toBe(503);
    expect(performance.now() - t0).toBeGreaterThanOrEqual(1190);
  });

  test("hang: held until the client gives up, then nothing; bounded by delay", async () => {
    s = await startServer();
    s.server.faults.add({ path: "instance/id", action: "hang" });
    const t0 = performance.now();
    const err = await fetch(`${s.base}${V1}instance/id`, {
      headers: { "Metadata-Flavor": "Google" },
      signal: AbortSignal.timeout(400),
    }).catch((e: Error) => e);
    expect((err as Error).name).toBe("TimeoutError");
    expect(performance.now() - t0).toBeGreaterThanOrEqual(390);
    s.server.faults.clear();
    s.server.faults.add({ path: "instance/id", action: "hang", delay: "300ms" });
    const t1 = performance.now();
    expect(await raw(`${V1}instance/id`)).toBe("");
    expect(performance.now() - t1).toBeGreaterThanOrEqual(290);
  });

  test("stop() lets go of held requests", async () => {
    s = await startServer();
    s.server.faults.add({ path: "*", action: "hang" });
    const held = raw(`${V1}instance/id`);
    await Bun.sleep(100);
    const t0 = performance.now();
    await s.stop();
    s = undefined;
    expect(await held).toBe("");
    expect(performance.now() - t0).toBeLessThan(3000);
  });

  test("no rules: nothing changes, and clearing them restores the real answers", async () => {
    s = await startServer();
    expect(s.server.state.faults).toBeUndefined();
    s.server.faults.add({ path: "*", status: 500 });
    expect(s.server.state.faults).toBeDefined();
    expect((await s.get(`${V1}instance/id`)).status).toBe(500);
    s.server.faults.clear();
    expect(s.server.state.faults).toBeUndefined();
    expect(await (await s.get(`${V1}instance/id`)).text()).toBe("4520031799277581759");
  });
});

describe("control API and metrics", () => {
  const post = (body: string) => ctl("POST", body);
  const ctl = (method: string, body?: string, path = "/emulator/v1/faults") =>
    fetch(s!.base + path, { method, headers: { "Metadata-Flavor": "Google" }, ...(body !== undefined ? { body } : {}) });

  test("POST 201 with the rule, GET lists with hits, DELETE one and all; errors are 400 and 404", async () => {
    s = await startServer({ controlApi: true });
    let r = await post('{"path":"instance/service-accounts/*/token","status":503,"times":2}');
    expect(r.status).toBe(201);
    const rule = (await r.json()) as { id: string };
    expect(rule).toEqual({
      id: expect.stringMatching(/^fault-\d+$/),
      path: "instance/service-accounts/*/token",
      action: "respond",
      status: 503,
      times: 2,
      hits: 0,
      active: true,
    } as never);
    // The flag's text works too.
    r = await post("path=project/*,action=reset");
    expect(r.status).toBe(201);
    expect((await s.get(TOKEN)).status).toBe(503);
    expect((await s.get(TOKEN)).status).toBe(503);
    expect((await s.get(TOKEN)).status).toBe(200);
    r = await ctl("GET");
    const listed = ((await r.json()) as { rules: Array<{ id: string; hits: number; active: boolean }> }).rules;
    expect(listed.map((x) => [x.hits, x.active])).toEqual([
      [2, false],
      [0, true],
    ]);
    r = await ctl("DELETE", undefined, `/emulator/v1/faults/${rule.id}`);
    expect(r.status).toBe(200);
    expect(((await r.json()) as { id: string }).id).toBe(rule.id);
    r = await ctl("DELETE", undefined, `/emulator/v1/faults/${rule.id}`);
    expect(r.status).toBe(404);
    expect(((await r.json()) as { error: { code: string } }).error.code).toBe("NOT_FOUND");
    r = await post('{"path":"*","status":"soon"}');
    expect(r.status).toBe(400);
    expect(await r.json()).toEqual({ error: { code: "BAD_FAULT", message: expect.stringContaining("fault status") } } as never);
    r = await post('{"path":"*","delay":"later"}');
    expect(r.status).toBe(400);
    expect(((await r.json()) as { error: { code: string } }).error.code).toBe("BAD_DURATION");
    r = await ctl("DELETE");
    expect(await r.json()).toEqual({ removed: 1 } as never);
    expect(((await (await ctl("GET")).json()) as { rules: unknown[] }).rules).toEqual([]);
    expect(s.server.state.faults).toBeUndefined();
    expect((await ctl("PATCH", "{}")).status).toBe(405);
    expect((await fetch(`${s.base}/emulator/v1/faults`)).status).toBe(403);
  });

  test("metrics count hits per rule", async () => {
    s = await startServer({ serverConfig: { metrics: { port: 0 } } });
    const { id } = s.server.faults.add({ path: "project/*", status: 503, times: 3 });
    for (let i = 0; i < 4; i++) await s.get(`${V1}project/project-id`);
    const text = await (await fetch(`${s.server.metricsUrl}/metrics`)).text();
    expect(text).toContain("# TYPE metadata_fault_hits_total counter");
    expect(text).toContain(`metadata_fault_hits_total{rule="${id}"} 3`);
    expect(text).toMatch(
      /metadata_endpoint_path_requests\{code="Service Unavailable",path="\/computeMetadata\/v1\/project\/project-id"\} 3/,
    );
  });
});
