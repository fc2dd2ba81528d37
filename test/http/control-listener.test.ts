/**
 * A guarded control API: on its own listener (`-controlListen host:port` or `unix:/path`, the metadata listener then
 * answering /emulator/v1/… with 404), and behind a bearer token (`-controlTokenFile`, 401 without it), in the
 * library and on the command line.
 */
import { afterEach, describe, expect, test } from "bun:test";
import { statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { ListenError } from "../../src/index.ts";
import { runCli, runCliToExit } from "../helpers/cli.ts";
import { FLAVOR, type Started, start, tempDir, V1 } from "../dynamic/helpers.ts";

let s: Started | undefined;
afterEach(async () => {
  await s?.server.stop();
  s = undefined;
});

const STATUS = "/emulator/v1/status";

describe("its own listener", () => {
  test("TCP: the control API there, 404 for it on the metadata listener, and nothing else there", async () => {
    s = await start({ controlListen: "127.0.0.1:0" });
    const control = s.server.controlUrl!;
    expect(control).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
    expect(control).not.toBe(s.url);
    expect((await fetch(control + STATUS, { headers: FLAVOR })).status).toBe(200);
    const put = await fetch(`${control}/emulator/v1/metadata/instance/attributes/x`, { method: "PUT", body: '"y"', headers: FLAVOR });
    expect(put.status).toBe(200);
    expect(await (await s.get(`${V1}instance/attributes/x`)).text()).toBe("y");

    const onMetadata = await s.get(STATUS);
    expect(onMetadata.status).toBe(404);
    expect(await onMetadata.text()).toContain("was not found on this server");
    for (const path of [`${V1}project/project-id`, "/.well-known/openid-configuration", "/"]) {
      const r = await fetch(control + path, { headers: FLAVOR });
      expect(`${path} ${r.status}`).toBe(`${path} 404`);
    }
    // Admission holds there too.
    expect((await fetch(control + STATUS)).status).toBe(403);
    expect((await fetch(control + STATUS, { headers: { ...FLAVOR, "X-Forwarded-For": "1.2.3.4" } })).status).toBe(403);
  });

  test("a unix socket only its owner may use", async () => {
    const sock = join(tempDir(), "control.sock");
    s = await start({ controlListen: `unix:${sock}` });
    expect(s.server.controlUrl).toBe(`http+unix://${encodeURIComponent(sock)}`);
    expect(statSync(sock).mode & 0o777).toBe(0o600);
    const r = await fetch(`http://localhost${STATUS}`, { unix: sock, headers: FLAVOR } as RequestInit);
    expect(r.status).toBe(200);
    expect(((await r.json()) as { waiters: number }).waiters).toBe(0);
    expect((await s.get(STATUS)).status).toBe(404);
  });

  test("a malformed address is refused when the server is made", async () => {
    await expect(start({ controlListen: "localhost" })).rejects.toThrow('controlListen "localhost": use host:port');
    await expect(start({ controlListen: "unix:" })).rejects.toThrow("give the socket's path");
  });
});

describe("a bearer token", () => {
  const call = (url: string, authorization?: string) =>
    fetch(url + STATUS, { headers: { ...FLAVOR, ...(authorization !== undefined ? { Authorization: authorization } : {}) } });

  test("every control request needs it (401 otherwise), on the metadata listener as on its own", async () => {
    for (const options of [{ controlApi: true }, { controlListen: "127.0.0.1:0" }]) {
      s = await start({ ...options, controlToken: "s3cret-token" });
      const url = s.server.controlUrl ?? s.url;
      for (const bad of [undefined, "", "Bearer", "Bearer wrong", "Bearer s3cret-toke", "Bearer s3cret-tokenX", "Basic s3cret-token"]) {
        const r = await call(url, bad);
        expect(`${bad} ${r.status}`).toBe(`${bad} 401`);
        expect(r.headers.get("www-authenticate")).toBe('Bearer realm="control API"');
        expect(((await r.json()) as { error: { code: string } }).error.code).toBe("UNAUTHORIZED");
      }
      expect((await call(url, "Bearer s3cret-token")).status).toBe(200);
      expect((await call(url, "bearer s3cret-token")).status).toBe(200);
      // A body is not read before the token is checked; a refused write changes nothing.
      const put = await fetch(`${url}/emulator/v1/metadata/instance/attributes/x`, { method: "PUT", body: '"y"', headers: FLAVOR });
      expect(put.status).toBe(401);
      expect((await s.get(`${V1}instance/attributes/x`)).status).toBe(404);
      await s.server.stop();
      s = undefined;
    }
  });

  test("the test superpowers (clock, faults) are control routes: held to the token too", async () => {
    s = await start({ controlApi: true, controlToken: "s3cret-token" });
    const auth = { ...FLAVOR, Authorization: "Bearer s3cret-token" };
    for (const [method, path, body] of [
      ["GET", "/emulator/v1/clock", undefined],
      ["POST", "/emulator/v1/clock", '{"advance":"58m"}'],
      ["GET", "/emulator/v1/faults", undefined],
      ["POST", "/emulator/v1/faults", '{"path":"*","status":503}'],
    ] as const) {
      const refused = await fetch(s.url + path, { method, headers: FLAVOR, ...(body ? { body } : {}) });
      expect(`${method} ${path} ${refused.status}`).toBe(`${method} ${path} 401`);
    }
    // Nothing the refused requests asked for happened.
    expect(((await (await fetch(`${s.url}/emulator/v1/clock`, { headers: auth })).json()) as { offsetSeconds: number }).offsetSeconds).toBe(
      0,
    );
    expect(((await (await fetch(`${s.url}/emulator/v1/faults`, { headers: auth })).json()) as { rules: unknown[] }).rules).toEqual([]);
    expect((await s.get(`${V1}project/project-id`)).status).toBe(200);
  });

  test("path spellings Elysia may route the same way are held to the token too", async () => {
    s = await start({ controlApi: true, controlToken: "s3cret-token" });
    for (const path of ["/%65mulator/v1/status", "/emulator/v1//status", "/emulator%2Fv1/status", "/emulator/v1/status/"]) {
      const r = await fetch(s.url + path, { headers: FLAVOR });
      expect(`${path} ${r.status}`).not.toBe(`${path} 200`);
    }
  });

  test("from a file: its content, trimmed; an empty or missing file stops start-up", async () => {
    const dir = tempDir();
    const file = join(dir, "token");
    writeFileSync(file, "  from-a-file\n", { mode: 0o600 });
    s = await start({ controlApi: true, controlTokenFile: file });
    expect((await call(s.url, "Bearer from-a-file")).status).toBe(200);
    expect((await call(s.url, "Bearer   from-a-file\n")).status).toBe(200);
    expect((await call(s.url)).status).toBe(401);
    await s.server.stop();
    s = undefined;
    writeFileSync(join(dir, "empty"), "\n");
    for (const [path, message] of [
      [join(dir, "empty"), "is empty"],
      [join(dir, "missing"), "no such file"],
    ] as const) {
      const e = await start({ controlApi: true, controlTokenFile: path }).then(
        () => undefined,
        (x: unknown) => x,
      );
      expect(e).toBeInstanceOf(ListenError);
      expect((e as ListenError).code).toBe("CONTROL_TOKEN");
      expect((e as Error).message).toContain(message);
    }
  });
});

describe("command line", () => {
  test("-controlListen with -controlTokenFile", async () => {
    const dir = tempDir();
    const file = join(dir, "token");
    writeFileSync(file, "cli-token\n", { mode: 0o600 });
    const cli = runCli(["-port", ":0", "-controlListen", "127.0.0.1:0", "-controlTokenFile", file]);
    try {
      const url = (await cli.waitFor(/control API listening url=(\S+)\/emulator\/v1\//))[1]!;
      expect((await fetch(url + STATUS, { headers: FLAVOR })).status).toBe(401);
      expect((await fetch(url + STATUS, { headers: { ...FLAVOR, Authorization: "Bearer cli-token" } })).status).toBe(200);
      expect(cli.stderr()).not.toContain("cli-token");
    } finally {
      expect(await cli.stop()).toBe(0);
    }
  });

  test("a malformed -controlListen exits 2; an unreadable token file exits 1; both in one line", async () => {
    const bad = await runCliToExit(["-port", ":0", "-controlListen", "nowhere"]);
    expect(bad.code).toBe(2);
    expect(bad.stderr.trim().split("\n")).toHaveLength(1);
    expect(bad.stderr).toContain("-controlListen");
    const missing = await runCliToExit(["-port", ":0", "-controlAPI", "-controlTokenFile", "/nonexistent/token"]);
    expect(missing.code).toBe(1);
    expect(missing.stderr.trim().split("\n")).toHaveLength(1);
    expect(missing.stderr).toContain("cannot read the control token file (-controlTokenFile) /nonexistent/token: no such file");
  });
});
