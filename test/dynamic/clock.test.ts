/** The virtual clock: tokens, ID tokens, simulated events and the cache follow it; -tokenLifetime compresses the hour. */
import { afterEach, describe, expect, test } from "bun:test";
import { decodeJwt } from "jose";
import { Clock } from "../../src/clock.ts";
import { refreshMargins, tokenLifetimeMs } from "../../src/credentials/lifetime.ts";
import { UsageError } from "../../src/errors.ts";
import { FLAVOR, type Started, start, until, V1 } from "./helpers.ts";

const TOKEN = `${V1}instance/service-accounts/default/token`;
const IDENTITY = `${V1}instance/service-accounts/default/identity?audience=https://clock.example.com&format=full`;
let s: Started | undefined;

afterEach(async () => {
  await s?.server.stop();
  s = undefined;
});

async function token(): Promise<{ access_token: string; expires_in: number }> {
  const r = await s!.get(TOKEN);
  expect(r.status).toBe(200);
  return (await r.json()) as { access_token: string; expires_in: number };
}

/** `expires_in` is whole seconds rounded down, so a token read a millisecond after minting shows one less. */
const about = (n: number, full: number) => expect(n === full || n === full - 1).toBe(true);

const control = (method: string, body?: string) => s!.req(method, "/emulator/v1/clock", body);

describe("Clock (unit)", () => {
  test("advance, set and reset move now() by an offset from real time", () => {
    const c = new Clock();
    const moves: number[] = [];
    c.onChange((ms) => moves.push(ms));
    expect(Math.abs(c.now() - Date.now())).toBeLessThan(50);
    expect(c.advance("58m").offsetSeconds).toBe(3480);
    expect(c.now() - Date.now()).toBeGreaterThan(3480_000 - 50);
    c.advance("-30s");
    expect(c.offsetMs).toBe(3450_000);
    const set = c.set("2030-01-01T00:00:00Z");
    expect(Math.abs(Date.parse(set.now) - Date.parse("2030-01-01T00:00:00Z"))).toBeLessThan(50);
    c.reset();
    expect(c.offsetMs).toBe(0);
    expect(moves.slice(0, 2)).toEqual([3480_000, -30_000]);
    expect(moves).toHaveLength(4);
  });

  test("bad input is a UsageError that shows the syntax", () => {
    const c = new Clock();
    expect(() => c.advance("58 minutes")).toThrow(/Go duration such as 30s/);
    expect(() => c.set("next tuesday")).toThrow(/RFC 3339/);
    expect(() => c.set("2030")).toThrow(UsageError);
    expect(c.offsetMs).toBe(0);
  });

  test("-tokenLifetime: whole seconds of at least 1s; margins are 5/60 and 4/60 of it", () => {
    expect(tokenLifetimeMs(undefined)).toBe(3600_000);
    expect(tokenLifetimeMs("2m")).toBe(120_000);
    expect(refreshMargins(120_000)).toEqual({ refreshAheadMs: 10_000, minRemainingMs: 8_000 });
    expect(refreshMargins(3600_000)).toEqual({ refreshAheadMs: 300_000, minRemainingMs: 240_000 });
    expect(() => tokenLifetimeMs("500ms")).toThrow(/whole seconds of at least 1s/);
    expect(() => tokenLifetimeMs("1.5s")).toThrow(UsageError);
    expect(() => tokenLifetimeMs("0")).toThrow(UsageError);
  });
});

describe("control API", () => {
  test("GET, POST advance and set, DELETE; bad bodies are 400 with the syntax", async () => {
    s = await start({ controlApi: true });
    let r = await control("GET");
    expect(r.status).toBe(200);
    let doc = (await r.json()) as { now: string; offsetSeconds: number };
    expect(doc.offsetSeconds).toBe(0);
    expect(Math.abs(Date.parse(doc.now) - Date.now())).toBeLessThan(2000);

    r = await control("POST", '{"advance":"58m"}');
    expect(r.status).toBe(200);
    doc = (await r.json()) as typeof doc;
    expect(doc.offsetSeconds).toBe(3480);
    expect(Date.parse(doc.now) - Date.now()).toBeGreaterThan(3470_000);
    expect(s.server.clock.offsetMs).toBe(3480_000);

    r = await control("POST", '{"set":"2030-01-01T00:00:00Z"}');
    doc = (await r.json()) as typeof doc;
    expect(Math.abs(Date.parse(doc.now) - Date.parse("2030-01-01T00:00:00Z"))).toBeLessThan(2000);
    expect(doc.offsetSeconds).toBeGreaterThan(0);

    r = await control("DELETE");
    expect(r.status).toBe(200);
    expect(((await r.json()) as typeof doc).offsetSeconds).toBe(0);

    for (const [body, message] of [
      ['{"advance":"58 minutes"}', /Go duration/],
      ['{"advance":"1m","set":"2030-01-01T00:00:00Z"}', /exactly one of advance/],
      ["{}", /exactly one of advance/],
      ['{"set":"tomorrow"}', /RFC 3339/],
      ['{"advance":58}', /as a string/],
      ['{"speed":2}', /unknown field "speed"/],
      ["advance=1m", /must be a JSON object/],
    ] as const) {
      r = await control("POST", body);
      expect(r.status).toBe(400);
      expect(((await r.json()) as { error: { message: string } }).error.message).toMatch(message);
    }
    expect(s.server.clock.offsetMs).toBe(0);
    expect((await control("PUT", "{}")).status).toBe(405);
    // Admission as for metadata paths.
    expect((await fetch(`${s.url}/emulator/v1/clock`)).status).toBe(403);
  });
});

describe("tokens follow the clock", () => {
  test("advancing 58m makes the cache re-mint (never under 4 minutes left); 50m does not", async () => {
    s = await start();
    const first = await token();
    about(first.expires_in, 3600);
    s.server.clock.advance("50m");
    const later = await token();
    expect(later.access_token).toBe(first.access_token);
    expect(later.expires_in).toBeGreaterThanOrEqual(599);
    expect(later.expires_in).toBeLessThanOrEqual(600);
    s.server.clock.advance("8m");
    const renewed = await token();
    expect(renewed.access_token).not.toBe(first.access_token);
    about(renewed.expires_in, 3600);
  });

  test("inside the last five minutes the old token is served while a new one is minted behind", async () => {
    s = await start();
    const first = await token();
    s.server.clock.advance("55m30s"); // 270 s left: between the refresh point (300 s) and the floor (240 s)
    const old = await token();
    expect(old.access_token).toBe(first.access_token);
    expect(old.expires_in).toBeLessThanOrEqual(270);
    expect(old.expires_in).toBeGreaterThan(240);
    let next = old;
    for (let i = 0; i < 50 && next.access_token === first.access_token; i++) {
      await Bun.sleep(10);
      next = await token();
    }
    expect(next.access_token).not.toBe(first.access_token);
    about(next.expires_in, 3600);
  });

  test("ID tokens: iat and exp of signed tokens follow the clock, and the cache judges them on it", async () => {
    s = await start();
    const read = async () => decodeJwt(await (await s!.get(IDENTITY)).text());
    const a = await read();
    expect(Math.abs(a.iat! - Date.now() / 1000)).toBeLessThan(5);
    expect(a.exp! - a.iat!).toBe(3600);
    s.server.clock.set("2030-01-01T00:00:00Z");
    const b = await read();
    expect(Math.abs(b.iat! - Date.parse("2030-01-01T00:00:00Z") / 1000)).toBeLessThan(5);
    expect(b.exp! - b.iat!).toBe(3600);
    // Back to real time: tokens minted in the future are dropped, so no token shows more than its lifetime.
    s.server.clock.reset();
    const c = await read();
    expect(Math.abs(c.iat! - Date.now() / 1000)).toBeLessThan(5);
    expect((await token()).expires_in).toBeLessThanOrEqual(3600);
  });

  test("-tokenLifetime 2m: the real hour compressed (refresh 10 s ahead, never under 8 s left)", async () => {
    s = await start({ tokenLifetime: "2m" });
    const first = await token();
    about(first.expires_in, 120);
    const id = decodeJwt(await (await s.get(IDENTITY)).text());
    expect(id.exp! - id.iat!).toBe(120);
    s.server.clock.advance("109s"); // 11 s left: fresh
    expect((await token()).access_token).toBe(first.access_token);
    s.server.clock.advance("2s"); // 9 s left: served, refreshed behind
    const behind = await token();
    expect(behind.access_token).toBe(first.access_token);
    expect(behind.expires_in).toBeGreaterThanOrEqual(8);
    expect(behind.expires_in).toBeLessThanOrEqual(9);
    let next = behind;
    for (let i = 0; i < 50 && next.access_token === first.access_token; i++) {
      await Bun.sleep(10);
      next = await token();
    }
    expect(next.access_token).not.toBe(first.access_token);
    about(next.expires_in, 120);
    s.server.clock.advance("113s"); // 7 s left, under the floor: the request waits for a new token
    const waited = await token();
    expect(waited.access_token).not.toBe(next.access_token);
    about(waited.expires_in, 120);
  });

  test("static tokens: expires_in counts down from -tokenLifetime on the virtual clock", async () => {
    s = await start({ tokenLifetime: "10m", env: { GOOGLE_ACCESS_TOKEN: "ya29.static" } });
    const a = await token();
    expect(a.access_token).toBe("ya29.static");
    about(a.expires_in, 600);
    s.server.clock.advance("5m");
    about((await token()).expires_in, 300);
    s.server.clock.advance("4m40s"); // 20 s left: under the floor (40 s), so the countdown restarts
    about((await token()).expires_in, 600);
  });
});

describe("simulated events follow the clock", () => {
  test("event times are virtual, and advancing past a start runs it", async () => {
    s = await start();
    s.server.clock.set("2030-01-01T00:00:00Z");
    const ev = s.server.simulateMaintenance({ type: "MIGRATE", inMs: 3600_000, durationMs: 60_000 });
    expect(Date.parse(ev.startsAt)).toBeGreaterThanOrEqual(Date.parse("2030-01-01T01:00:00Z"));
    expect(Date.parse(ev.startsAt)).toBeLessThan(Date.parse("2030-01-01T01:00:05Z"));
    const upcoming = JSON.parse(await (await s.get(`${V1}instance/upcoming-maintenance`)).text());
    expect(upcoming.window_start_time).toBe(ev.startsAt);
    expect(await (await s.get(`${V1}instance/maintenance-event`)).text()).toBe("NONE");
    s.server.clock.advance("1h");
    await until(() => s!.server.lifecycle.list()[0]!.state === "ongoing");
    expect(await (await s.get(`${V1}instance/maintenance-event`)).text()).toBe("MIGRATE_ON_HOST_MAINTENANCE");
    s.server.clock.advance("1m");
    await until(() => s!.server.lifecycle.list()[0]!.state === "done");

    const p = s.server.simulatePreemption({ inMs: 10 * 3600_000 });
    s.server.clock.advance("10h");
    await until(() => s!.server.lifecycle.list().find((e) => e.id === p.id)!.state === "done");
    const details = JSON.parse(await (await s.get(`${V1}instance/shutdown-details/?recursive=true`, { headers: FLAVOR })).text());
    expect(Date.parse(details.requestTimestamp)).toBeGreaterThanOrEqual(Date.parse("2030-01-01T11:01:00Z"));
  });
});
