/**
 * Limits: every route that reads a body answers 413 past its cap (declared or chunked), guest attributes are
 * bounded in value size, keys, namespaces and total bytes, and slow clients (headers a byte at a time, or an answer
 * never read) are dropped within a bound while everyone else is served.
 */
import { afterEach, describe, expect, test } from "bun:test";
import { join } from "node:path";
import { DEFAULT_GUEST_LIMITS } from "../../src/metadata/guest.ts";
import { listeningUrl, ROOT, runCli } from "../helpers/cli.ts";
import { config, FLAVOR, read, type Started, start, V1 } from "../dynamic/helpers.ts";

let s: Started | undefined;
afterEach(async () => {
  await s?.server.stop();
  s = undefined;
});

const GA = `${V1}instance/guest-attributes/`;

function guestConfig() {
  const c = config();
  c.computeMetadata.v1.instance.attributes["enable-guest-attributes"] = "TRUE";
  return c;
}

/** A body sent chunked (no Content-Length), so only reading it tells its size. */
function chunked(text: string): ReadableStream<Uint8Array> {
  const bytes = new TextEncoder().encode(text);
  return new ReadableStream({
    start(c) {
      for (let i = 0; i < bytes.length; i += 16_384) c.enqueue(bytes.subarray(i, i + 16_384));
      c.close();
    },
  });
}

const send = (method: string, path: string, body: string | ReadableStream<Uint8Array>, headers: Record<string, string> = {}) =>
  fetch(s!.url + path, { method, body, headers: { ...FLAVOR, ...headers }, duplex: "half" } as RequestInit);

describe("guest attributes are bounded", () => {
  test("the defaults are at most 256 KiB a value and 1,000 keys a namespace", () => {
    expect(DEFAULT_GUEST_LIMITS.maxValueBytes).toBeLessThanOrEqual(256 * 1024);
    expect(DEFAULT_GUEST_LIMITS.maxKeys).toBeLessThanOrEqual(1000);
  });

  test("a value over the cap is 413 with the standard headers, declared or chunked; at the cap it is stored", async () => {
    s = await start({ claims: guestConfig() });
    const max = DEFAULT_GUEST_LIMITS.maxValueBytes;
    for (const body of ["x".repeat(max + 1), chunked("x".repeat(max + 1))]) {
      const r = await send("PUT", `${GA}big/k`, body);
      expect(r.status).toBe(413);
      expect(r.headers.get("metadata-flavor")).toBe("Google");
      expect(await r.text()).toContain(`over the limit of ${max} bytes per guest attribute (-maxGuestValueBytes)`);
    }
    expect((await s.get(`${GA}big/k`)).status).toBe(404);
    expect((await send("PUT", `${GA}big/k`, "x".repeat(max))).status).toBe(200);
    expect((await read(await s.get(`${GA}big/k`))).body).toHaveLength(max);
  });

  test("keys per namespace, namespaces and total bytes: 400 or 413 past each, updates and deletes still work", async () => {
    s = await start({ claims: guestConfig(), guestAttributeLimits: { maxKeys: 2, maxNamespaces: 2, maxTotalBytes: 20 } });
    expect((await send("PUT", `${GA}a/1`, "12345")).status).toBe(200);
    expect((await send("PUT", `${GA}a/2`, "12345")).status).toBe(200);
    const keys = await send("PUT", `${GA}a/3`, "1");
    expect(keys.status).toBe(400);
    expect(await keys.text()).toContain("namespace a already has 2 keys, the limit (-maxGuestKeys)");
    expect((await send("PUT", `${GA}a/2`, "changed")).status).toBe(200);
    expect((await send("PUT", `${GA}b/1`, "1")).status).toBe(200);
    const namespaces = await send("PUT", `${GA}c/1`, "1");
    expect(namespaces.status).toBe(400);
    expect(await namespaces.text()).toContain("-maxGuestNamespaces");
    // 5 + 7 + 1 = 13 bytes held; 8 more would make 21.
    const total = await send("PUT", `${GA}b/2`, "12345678");
    expect(total.status).toBe(413);
    expect(await total.text()).toContain("would hold 21 bytes, over the limit of 20 bytes in all (-maxGuestBytes)");
    expect((await send("PUT", `${GA}b/2`, "1234567")).status).toBe(200);
    expect((await s.req("DELETE", `${GA}a/1`)).status).toBe(200);
    expect((await send("PUT", `${GA}a/3`, "1")).status).toBe(200);
  });

  test("Bun's own bound sits above the caps: a body past it is refused too, and the connection goes on", async () => {
    s = await start({ claims: guestConfig() });
    const r = await send("PUT", `${GA}huge/k`, "x".repeat(DEFAULT_GUEST_LIMITS.maxValueBytes + 2 * 1024 * 1024));
    expect(r.status).toBe(413);
    expect((await s.get(`${V1}project/project-id`)).status).toBe(200);
  });
});

describe("control API bodies are capped", () => {
  test("every route that reads a body answers 413 past -maxControlBodyBytes, declared or chunked", async () => {
    s = await start({ controlApi: true, maxControlBodyBytes: 1000 });
    const big = JSON.stringify("x".repeat(2000));
    const routes: Array<[string, string, string]> = [
      ["PUT", "/emulator/v1/metadata/instance/attributes/x", big],
      ["PATCH", "/emulator/v1/metadata/instance/attributes", `{"x":${big}}`],
      ["PUT", "/emulator/v1/config", `{"computeMetadata":${big}}`],
      ["POST", "/emulator/v1/update/instance/attributes/x", "x".repeat(2000)],
      ["POST", "/emulator/v1/lifecycle/maintenance", `in=30s,${"x".repeat(2000)}`],
      ["POST", "/emulator/v1/lifecycle/preemption", `{"in":${big}}`],
    ];
    for (const [method, path, body] of routes) {
      for (const sent of [body, chunked(body)]) {
        const r = await send(method, path, sent);
        expect(`${method} ${path} ${r.status}`).toBe(`${method} ${path} 413`);
        const e = (await r.json()) as { error: { code: string; message: string } };
        expect(e.error.code).toBe("TOO_LARGE");
        expect(e.error.message).toContain("1000 bytes (-maxControlBodyBytes)");
      }
    }
    expect((await send("PUT", "/emulator/v1/metadata/instance/attributes/x", '"small"')).status).toBe(200);
  });
});

describe("slow clients are dropped and delay no one", () => {
  test("headers a byte at a time, and an answer never read: both closed within 30 s; other requests answer at once", async () => {
    const c = config();
    // A recursive answer far larger than the socket buffers, so a client that never reads leaves it unsent.
    c.computeMetadata.v1.instance.attributes.big = "x".repeat(8 * 1024 * 1024);
    s = await start({ claims: c });
    const port = s.server.port;
    const t0 = Date.now();

    // Slow headers: one byte every 400 ms, never finished in time.
    const trickles = Array.from({ length: 4 }, async () => {
      let closed = false;
      const sock = await Bun.connect({
        hostname: "127.0.0.1",
        port,
        socket: {
          data() {},
          close() {
            closed = true;
          },
          error() {
            closed = true;
          },
        },
      });
      const request = `GET ${V1}project/project-id HTTP/1.1\r\nHost: x\r\nMetadata-Flavor: Google\r\nX-Pad: ${"p".repeat(200)}\r\n\r\n`;
      for (let i = 0; i < request.length && !closed && Date.now() - t0 < 40_000; i++) {
        sock.write(request[i]!);
        await Bun.sleep(400);
      }
      return { closed, after: Date.now() - t0 };
    });

    // A reader that never reads: the answer stays in the server's buffers until the idle timeout ends it.
    const { createConnection } = require("node:net") as typeof import("node:net");
    const stuck = createConnection({ host: "127.0.0.1", port }, () =>
      stuck.write(`GET ${V1}?recursive=true HTTP/1.1\r\nHost: x\r\nMetadata-Flavor: Google\r\n\r\n`),
    );
    stuck.pause();
    stuck.on("error", () => {});
    const bun = (s.server as unknown as { server: { pendingRequests: number } }).server;
    const deadline = Date.now() + 5000;
    while (bun.pendingRequests === 0 && Date.now() < deadline) await Bun.sleep(20);
    expect(bun.pendingRequests).toBe(1);

    // Meanwhile everyone else is served promptly.
    for (let i = 0; i < 20; i++) {
      const t = performance.now();
      expect((await s.get(`${V1}project/project-id`)).status).toBe(200);
      expect(performance.now() - t).toBeLessThan(1000);
      await Bun.sleep(250);
    }

    for (const r of await Promise.all(trickles)) {
      expect(r.closed).toBe(true);
      expect(r.after).toBeLessThan(30_000);
    }
    while (bun.pendingRequests > 0 && Date.now() - t0 < 30_000) await Bun.sleep(100);
    expect(bun.pendingRequests).toBe(0);
    stuck.destroy();
  }, 60_000);
});

describe("hanging requests cannot take every descriptor", () => {
  test("with ulimit -n 128 the default cap is 64: the 65th wait is 503 and ordinary requests are served", async () => {
    const cli = runCli([], {
      command: ["sh", "-c", `ulimit -n 128 && exec "${process.execPath}" "${join(ROOT, "src", "cli.ts")}" -port :0`],
    });
    const sockets: Array<{ end(): void }> = [];
    try {
      const url = await listeningUrl(cli);
      const port = Number(new URL(url).port);
      const answers: string[] = [];
      const wait = `GET ${V1}project/project-id?wait_for_change=true HTTP/1.1\r\nHost: x\r\nMetadata-Flavor: Google\r\n\r\n`;
      for (let i = 0; i < 70; i++) {
        sockets.push(
          await Bun.connect({
            hostname: "127.0.0.1",
            port,
            socket: {
              open: (sock) => void sock.write(wait),
              data: (_sock, d) => void answers.push(Buffer.from(d).toString().slice(0, 12)),
            },
          }),
        );
      }
      const deadline = Date.now() + 10_000;
      while (answers.length < 6 && Date.now() < deadline) await Bun.sleep(20);
      expect(answers).toEqual(Array(6).fill("HTTP/1.1 503"));
      for (let i = 0; i < 20; i++) {
        const r = await fetch(`${url}${V1}project/project-id`, { headers: FLAVOR });
        expect(r.status).toBe(200);
      }
    } finally {
      for (const sock of sockets) sock.end();
      await cli.stop();
    }
  }, 30_000);
});
