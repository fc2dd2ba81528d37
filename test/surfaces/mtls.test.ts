/**
 * `-usemTLS` / `serverConfig.tls`: HTTPS that serves only clients presenting a certificate signed by the given root.
 * Checked with Bun's fetch, node:https and curl; plus the start-up errors for unusable certificate files.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { request as httpsRequest } from "node:https";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ListenError, MetadataServer } from "../../src/index.ts";
import { CERTS, listeningUrl, runCli, runCliToExit } from "../helpers/cli.ts";

const cert = (name: string) => join(CERTS, name);
const pem = (name: string) => readFileSync(cert(name), "utf8");
const TLS = { rootCA: cert("root.crt"), serverCert: cert("server.crt"), serverKey: cert("server.key") };
const ID_PATH = "/computeMetadata/v1/instance/id";
const H = { "Metadata-Flavor": "Google" };

/** One request on its own connection, so a refused handshake cannot hide behind a pooled one. */
const get = (url: string, client: "client" | "other-client" | null, init: RequestInit = {}) =>
  fetch(url, {
    keepalive: false,
    redirect: "manual",
    headers: H,
    ...init,
    tls: { ca: pem("root.crt"), ...(client ? { cert: pem(`${client}.crt`), key: pem(`${client}.key`) } : {}) },
  });

async function curl(...args: string[]) {
  const p = Bun.spawn(["curl", "-sS", "--max-time", "5", "--cacert", cert("root.crt"), ...args], { stdout: "pipe", stderr: "pipe" });
  const [out, err, code] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text(), p.exited]);
  return { code, out, err };
}

describe("library: serverConfig.tls", () => {
  let server: MetadataServer;
  let url: string;
  let port: number;
  beforeAll(async () => {
    server = new MetadataServer({ serverConfig: { port: 0, tls: TLS } });
    ({ url, port } = await server.start());
  });
  afterAll(() => server.stop());

  test("the address is https", () => {
    expect(url).toBe(`https://127.0.0.1:${port}`);
    expect(server.state.scheme).toBe("https");
  });

  test("a client certificate signed by the root is served", async () => {
    const res = await get(url + ID_PATH, "client");
    expect(res.status).toBe(200);
    expect(await res.text()).toBe(server.snapshot.text("instance/id")!);
  });

  test("under the name metadata.google.internal too: the server certificate covers it (curl --resolve)", async () => {
    const c = await curl(
      "--resolve",
      `metadata.google.internal:${port}:127.0.0.1`,
      "--cert",
      cert("client.crt"),
      "--key",
      cert("client.key"),
      "-H",
      "Metadata-Flavor: Google",
      `https://metadata.google.internal:${port}${ID_PATH}`,
    );
    expect(c.err).toBe("");
    expect(c.code).toBe(0);
    expect(c.out).toBe(server.snapshot.text("instance/id")!);
  });

  test("redirects say https", async () => {
    const res = await get(`${url}/computeMetadata/v1/instance`, "client");
    expect(res.status).toBe(301);
    expect(res.headers.get("location")).toBe(`https://127.0.0.1:${port}/computeMetadata/v1/instance/`);
  });

  test("no client certificate: refused", async () => {
    await expect(get(url + ID_PATH, null)).rejects.toThrow();
  });

  test("a client certificate from another root: refused", async () => {
    await expect(get(url + ID_PATH, "other-client")).rejects.toThrow();
  });

  test("plain HTTP on the TLS port gets no metadata", async () => {
    const res = await fetch(`http://127.0.0.1:${port}${ID_PATH}`, { headers: H, keepalive: false }).then(
      (r) => r.status,
      () => "refused",
    );
    expect(res).not.toBe(200);
  });

  test("node:https: served with the client certificate, refused without", async () => {
    const call = (withCert: boolean) =>
      new Promise<{ status?: number; body?: string; error?: string }>((resolve) => {
        const req = httpsRequest(
          {
            host: "127.0.0.1",
            port,
            path: ID_PATH,
            headers: H,
            ca: pem("root.crt"),
            agent: false,
            ...(withCert ? { cert: pem("client.crt"), key: pem("client.key") } : {}),
          },
          (res) => {
            let body = "";
            res.on("data", (c) => (body += c));
            res.on("end", () => resolve({ status: res.statusCode, body }));
          },
        );
        req.on("error", (e) => resolve({ error: e.message }));
        req.end();
      });
    const ok = await call(true);
    expect(ok.status).toBe(200);
    expect(ok.body).toBe(server.snapshot.text("instance/id")!);
    const refused = await call(false);
    expect(refused.status).toBeUndefined();
    expect(refused.error).toBeDefined();
  });

  test("curl: served with --cert/--key, refused without or with the other root's certificate", async () => {
    const ok = await curl("--cert", cert("client.crt"), "--key", cert("client.key"), "-H", "Metadata-Flavor: Google", url + ID_PATH);
    expect(ok.code).toBe(0);
    expect(ok.out).toBe(server.snapshot.text("instance/id")!);
    const none = await curl("-H", "Metadata-Flavor: Google", url + ID_PATH);
    expect(none.code).not.toBe(0);
    expect(none.out).toBe("");
    const other = await curl(
      "--cert",
      cert("other-client.crt"),
      "--key",
      cert("other-client.key"),
      "-H",
      "Metadata-Flavor: Google",
      url + ID_PATH,
    );
    expect(other.code).not.toBe(0);
    expect(other.out).toBe("");
  });
});

describe("start-up errors for certificate files", () => {
  const dir = mkdtempSync(join(tmpdir(), "mds-tls-"));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  const garbage = join(dir, "garbage.pem");
  writeFileSync(garbage, "this is not PEM\n");

  const startWith = async (tls: Partial<typeof TLS>) => {
    const s = new MetadataServer({ serverConfig: { port: 0, tls: { ...TLS, ...tls } } });
    try {
      await s.start();
    } catch (e) {
      return e as ListenError;
    }
    await s.stop();
    throw new Error("started");
  };

  test("a missing file names itself and its role", async () => {
    const e = await startWith({ serverCert: join(dir, "missing.crt") });
    expect(e).toBeInstanceOf(ListenError);
    expect(e.code).toBe("TLS_FILE_UNREADABLE");
    expect(e.message).toBe(`cannot read the server certificate (-serverCert) ${join(dir, "missing.crt")}: no such file`);
  });

  test("an unreadable path (a directory)", async () => {
    const e = await startWith({ rootCA: dir });
    expect(e.code).toBe("TLS_FILE_UNREADABLE");
    expect(e.message).toContain(`client CA certificate (-rootCAmTLS) ${dir}: it is a directory`);
  });

  test("a file that is not PEM", async () => {
    const e = await startWith({ rootCA: garbage });
    expect(e.code).toBe("TLS_FILE_INVALID");
    expect(e.message).toContain("holds no PEM certificate");
    const k = await startWith({ serverKey: garbage });
    expect(k.code).toBe("TLS_FILE_INVALID");
    expect(k.message).toContain("is not an unencrypted PEM private key");
  });

  test("a key that does not belong to the certificate", async () => {
    const e = await startWith({ serverKey: cert("client.key") });
    expect(e.code).toBe("TLS_KEY_MISMATCH");
    expect(e.message).toContain(`the server key ${cert("client.key")} does not belong to the server certificate ${cert("server.crt")}`);
  });

  test("command line: each is exit 1 with the message", async () => {
    for (const [args, message] of [
      [["-serverCert", join(dir, "missing.crt")], "no such file"],
      [["-serverKey", cert("client.key")], "does not belong to the server certificate"],
      [["-rootCAmTLS", garbage], "holds no PEM certificate"],
    ] as const) {
      const r = await runCliToExit(["-usemTLS", "-port", ":0", ...args]);
      expect(r.code).toBe(1);
      expect(r.stderr).toContain(message);
    }
  });
});

describe("command line: -usemTLS", () => {
  test("with the default certs/ paths, serves the trusted client only", async () => {
    const cli = runCli(["-usemTLS", "-port", ":0"]);
    try {
      const url = await listeningUrl(cli);
      expect(url).toStartWith("https://127.0.0.1:");
      expect((await get(url + ID_PATH, "client")).status).toBe(200);
      await expect(get(url + ID_PATH, "other-client")).rejects.toThrow();
      await expect(get(url + ID_PATH, null)).rejects.toThrow();
    } finally {
      expect(await cli.stop()).toBe(0);
    }
  });

  test("-serverCert without -usemTLS is ignored with a warning (plain HTTP)", async () => {
    const cli = runCli(["-serverCert", cert("server.crt"), "-port", ":0"]);
    try {
      const url = await listeningUrl(cli);
      expect(url).toStartWith("http://");
      expect(cli.stderr()).toContain("-serverCert is ignored without -usemTLS");
    } finally {
      await cli.stop();
    }
  });
});
