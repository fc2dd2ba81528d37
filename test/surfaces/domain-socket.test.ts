/**
 * `-domainsocket PATH` / `serverConfig.domainSocket`: the server listens on the unix socket only, with the documented
 * file mode; a stale socket from a crashed run is replaced, while a path that is not a socket, or a socket another
 * server answers on, is refused and left alone.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync, mkdirSync } from "node:fs";
import { connect } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ListenError, MetadataServer } from "../../src/index.ts";
import { runCli, runCliToExit } from "../helpers/cli.ts";

const dir = mkdtempSync(join(tmpdir(), "mds-socket-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
let n = 0;
const sockPath = () => join(dir, `s${++n}.sock`);

const ID_PATH = "/computeMetadata/v1/instance/id";
const get = (socket: string, path = ID_PATH, headers: Record<string, string> = { "Metadata-Flavor": "Google" }) =>
  fetch(`http://metadata.google.internal${path}`, { unix: socket, headers, keepalive: false });

/** curl in its own process, awaited (a synchronous spawn would block the in-process server it talks to). */
async function curl(socket: string, path: string, ...extra: string[]) {
  const p = Bun.spawn(["curl", "-sS", "--max-time", "5", "--unix-socket", socket, ...extra, `http://metadata.google.internal${path}`], {
    stdout: "pipe",
    stderr: "pipe",
  });
  const [out, err, code] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text(), p.exited]);
  return { code, out, err };
}

/** Is anything accepting TCP connections on 127.0.0.1:port? */
function tcpOpen(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect({ host: "127.0.0.1", port });
    s.once("connect", () => {
      s.destroy();
      resolve(true);
    });
    s.once("error", () => resolve(false));
  });
}

async function freePort(): Promise<number> {
  const s = Bun.serve({ hostname: "127.0.0.1", port: 0, fetch: () => new Response() });
  const p = s.port!;
  await s.stop(true);
  return p;
}

describe("library: serverConfig.domainSocket", () => {
  let server: MetadataServer;
  let path: string;
  beforeAll(async () => {
    path = sockPath();
    server = new MetadataServer({ serverConfig: { domainSocket: path } });
  });
  afterAll(() => server.stop());

  test("start reports the socket, not a TCP address", async () => {
    const a = await server.start();
    expect(a.socketPath).toBe(path);
    expect(a.port).toBe(0);
    expect(a.url).toBe(`http+unix://${encodeURIComponent(path)}`);
    expect(statSync(path).isSocket()).toBe(true);
  });

  test("serves metadata to fetch({ unix })", async () => {
    const res = await get(path);
    expect(res.status).toBe(200);
    expect(res.headers.get("metadata-flavor")).toBe("Google");
    expect(await res.text()).toBe(server.snapshot.text("instance/id")!);
  });

  test("serves metadata to curl --unix-socket, and applies the same admission rules", async () => {
    const ok = await curl(path, ID_PATH, "-H", "Metadata-Flavor: Google");
    expect(ok.code).toBe(0);
    expect(ok.out).toBe(server.snapshot.text("instance/id")!);
    const refused = await curl(path, ID_PATH, "-o", "/dev/null", "-w", "%{http_code}");
    expect(refused.out).toBe("403");
    const root = await curl(path, "/");
    expect(root.out).toBe("computeMetadata/\n");
  });

  test("the socket file has mode 0660 by default", () => {
    expect(statSync(path).mode & 0o777).toBe(0o660);
  });

  test("applyEnv refuses: client libraries cannot reach a unix socket through GCE_METADATA_HOST", () => {
    expect(() => server.applyEnv({})).toThrow(/unix socket/);
  });

  test("stop removes the socket file", async () => {
    const p = sockPath();
    const s = new MetadataServer({ serverConfig: { domainSocket: p } });
    await s.start();
    expect(existsSync(p)).toBe(true);
    await s.stop();
    expect(existsSync(p)).toBe(false);
  });

  test("domainSocketMode sets another mode", async () => {
    const p = sockPath();
    const s = new MetadataServer({ serverConfig: { domainSocket: p, domainSocketMode: 0o666 } });
    await s.start();
    try {
      expect(statSync(p).mode & 0o777).toBe(0o666);
    } finally {
      await s.stop();
    }
  });
});

describe("what is already at the path", () => {
  test("a stale socket left by a crashed (SIGKILLed) server is removed and replaced", async () => {
    const p = sockPath();
    const crashed = Bun.spawn(
      [process.execPath, "-e", `Bun.serve({ unix: ${JSON.stringify(p)}, fetch: () => new Response("old") }); console.log("up")`],
      {
        stdout: "pipe",
      },
    );
    const reader = (crashed.stdout as ReadableStream<Uint8Array>).getReader();
    await reader.read(); // "up"
    crashed.kill("SIGKILL");
    await crashed.exited;
    expect(statSync(p).isSocket()).toBe(true); // left behind
    await expect(get(p)).rejects.toThrow(); // and dead

    const s = new MetadataServer({ serverConfig: { domainSocket: p } });
    await s.start();
    try {
      const res = await get(p);
      expect(res.status).toBe(200);
    } finally {
      await s.stop();
    }
  });

  test("a regular file is refused and left untouched", async () => {
    const p = sockPath();
    writeFileSync(p, "precious data\n");
    const s = new MetadataServer({ serverConfig: { domainSocket: p } });
    const err = await s.start().then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(ListenError);
    expect((err as ListenError).code).toBe("SOCKET_PATH");
    expect((err as Error).message).toContain("is a regular file, not a socket; refusing to remove it");
    expect(readFileSync(p, "utf8")).toBe("precious data\n");
  });

  test("a directory is refused and left untouched", async () => {
    const p = sockPath();
    mkdirSync(p);
    const s = new MetadataServer({ serverConfig: { domainSocket: p } });
    await expect(s.start()).rejects.toThrow(/is a directory, not a socket/);
    expect(statSync(p).isDirectory()).toBe(true);
  });

  test("a socket another live server answers on is refused, and that server keeps serving", async () => {
    const p = sockPath();
    const first = new MetadataServer({ serverConfig: { domainSocket: p } });
    await first.start();
    try {
      const second = new MetadataServer({ serverConfig: { domainSocket: p } });
      const err = await second.start().then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(err).toBeInstanceOf(ListenError);
      expect((err as ListenError).code).toBe("SOCKET_IN_USE");
      expect((await get(p)).status).toBe(200);
    } finally {
      await first.stop();
    }
  });

  test("a missing parent directory is a clear listen error", async () => {
    const s = new MetadataServer({ serverConfig: { domainSocket: join(dir, "no-such-dir", "s.sock") } });
    await expect(s.start()).rejects.toThrow(/cannot listen on the unix socket .*no-such-dir/);
  });
});

describe("command line: -domainsocket", () => {
  test("listens on the socket only: the -port given is not opened", async () => {
    const p = sockPath();
    const port = await freePort();
    const cli = runCli(["-domainsocket", p, "-port", `:${port}`]);
    try {
      await cli.waitFor(/metadata server listening socket=/);
      expect(cli.stderr()).toContain("-interface and -port are ignored with -domainsocket");
      const out = await curl(p, ID_PATH, "-H", "Metadata-Flavor: Google");
      expect(out.code).toBe(0);
      expect(out.out).toMatch(/^\d+$/);
      expect(await tcpOpen(port)).toBe(false);
      expect(statSync(p).mode & 0o777).toBe(0o660);
    } finally {
      expect(await cli.stop()).toBe(0);
    }
    expect(existsSync(p)).toBe(false);
  });

  test("-domainsocketMode 0666", async () => {
    const p = sockPath();
    const cli = runCli(["-domainsocket", p, "-domainsocketMode", "0666"]);
    try {
      await cli.waitFor(/metadata server listening socket=/);
      expect(statSync(p).mode & 0o777).toBe(0o666);
    } finally {
      await cli.stop();
    }
  });

  test("a path that is not a socket: exit 1 with the reason, file kept", async () => {
    const p = sockPath();
    writeFileSync(p, "x");
    const r = await runCliToExit(["-domainsocket", p]);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(`${p} exists and is a regular file, not a socket; refusing to remove it`);
    expect(readFileSync(p, "utf8")).toBe("x");
  });

  test("with -usemTLS: usage error, exit 2", async () => {
    const r = await runCliToExit(["-domainsocket", sockPath(), "-usemTLS"]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain("-domainsocket and -usemTLS cannot be combined");
  });

  test("a bad -domainsocketMode: usage error, exit 2", async () => {
    const r = await runCliToExit(["-domainsocket", sockPath(), "-domainsocketMode", "rw-rw----"]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain("invalid -domainsocketMode");
  });
});
