/**
 * The committed test PKI in certs/ is what its README promises: the server certificate covers the names the
 * metadata server is reached by, the client certificate passes an mTLS listener trusting root.crt, and a client
 * from the other root is refused.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { X509Certificate, createPrivateKey } from "node:crypto";
import { readFileSync } from "node:fs";
import { join } from "node:path";

const dir = join(import.meta.dir, "..", "..", "certs");
const pem = (name: string) => readFileSync(join(dir, name), "utf8");
const cert = (name: string) => new X509Certificate(pem(name));
const YEAR_MS = 365.25 * 24 * 3600 * 1000;

describe("certs/ files", () => {
  test("roots are marked fake, self-signed CAs, and unrelated to each other", () => {
    for (const name of ["root.crt", "other-root.crt"]) {
      const root = cert(name);
      expect(root.ca).toBe(true);
      expect(root.subject).toMatch(/FAKE\\?, DO NOT TRUST/);
      expect(root.verify(root.publicKey)).toBe(true);
    }
    expect(cert("root.crt").fingerprint256).not.toBe(cert("other-root.crt").fingerprint256);
  });

  test("leaves chain to their root, match their PKCS#8 keys and are valid for 20 years", () => {
    const pairs = [
      ["server", "root.crt"],
      ["client", "root.crt"],
      ["other-client", "other-root.crt"],
    ] as const;
    for (const [leaf, root] of pairs) {
      const c = cert(`${leaf}.crt`);
      expect(c.ca).toBe(false);
      expect(c.checkIssued(cert(root))).toBe(true);
      expect(c.verify(cert(root).publicKey)).toBe(true);
      expect(pem(`${leaf}.key`)).toStartWith("-----BEGIN PRIVATE KEY-----");
      expect(c.checkPrivateKey(createPrivateKey(pem(`${leaf}.key`)))).toBe(true);
      const lifetime = Date.parse(c.validTo) - Date.parse(c.validFrom);
      expect(lifetime).toBeGreaterThan(19.9 * YEAR_MS);
    }
    expect(cert("other-client.crt").checkIssued(cert("root.crt"))).toBe(false);
  });

  test("server certificate names metadata.google.internal, localhost and 127.0.0.1", () => {
    const server = cert("server.crt");
    expect(server.checkHost("metadata.google.internal")).toBe("metadata.google.internal");
    expect(server.checkHost("localhost")).toBe("localhost");
    expect(server.checkIP("127.0.0.1")).toBe("127.0.0.1");
    expect(server.checkHost("metadata.google.internal.evil.test")).toBeUndefined();
  });

  const openssl = (...args: string[]) => Bun.spawnSync(["openssl", ...args], { cwd: dir, stderr: "pipe", stdout: "pipe" });

  test.skipIf(!Bun.which("openssl"))("openssl verify accepts each leaf for its purpose and refuses the rest", () => {
    expect(openssl("verify", "-purpose", "sslserver", "-CAfile", "root.crt", "server.crt").exitCode).toBe(0);
    expect(openssl("verify", "-purpose", "sslclient", "-CAfile", "root.crt", "client.crt").exitCode).toBe(0);
    expect(openssl("verify", "-purpose", "sslclient", "-CAfile", "other-root.crt", "other-client.crt").exitCode).toBe(0);
    expect(openssl("verify", "-CAfile", "root.crt", "other-client.crt").exitCode).not.toBe(0);
    expect(openssl("verify", "-purpose", "sslclient", "-CAfile", "root.crt", "server.crt").exitCode).not.toBe(0);
    expect(openssl("verify", "-purpose", "sslserver", "-CAfile", "root.crt", "client.crt").exitCode).not.toBe(0);
  });
});

describe("mTLS with Bun.serve", () => {
  let server: ReturnType<typeof Bun.serve>;
  let origin: string;

  beforeAll(() => {
    server = Bun.serve({
      hostname: "127.0.0.1",
      port: 0,
      tls: { key: pem("server.key"), cert: pem("server.crt"), ca: pem("root.crt"), requestCert: true, rejectUnauthorized: true },
      fetch: () => new Response("hello, trusted client"),
    });
    origin = `https://127.0.0.1:${server.port}`;
  });
  afterAll(() => server.stop(true));

  /** One request on its own connection, so a refused handshake cannot hide behind a pooled one. */
  const get = (client: "client" | "other-client" | null, serverName?: string) =>
    fetch(origin, {
      keepalive: false,
      tls: {
        ca: pem("root.crt"),
        ...(client ? { cert: pem(`${client}.crt`), key: pem(`${client}.key`) } : {}),
        ...(serverName ? { serverName } : {}),
      },
    });

  test("accepts the client certificate signed by root.crt, under every server name", async () => {
    for (const name of [undefined, "localhost", "metadata.google.internal"]) {
      const res = await get("client", name);
      expect(res.status).toBe(200);
      expect(await res.text()).toBe("hello, trusted client");
    }
  });

  test("refuses a client certificate from the other root", async () => {
    await expect(get("other-client")).rejects.toThrow();
  });

  test("refuses a client without a certificate", async () => {
    await expect(get(null)).rejects.toThrow();
  });

  test("control: without requestCert the same listener serves both, so the refusals above are mTLS", async () => {
    const open = Bun.serve({
      hostname: "127.0.0.1",
      port: 0,
      tls: { key: pem("server.key"), cert: pem("server.crt"), ca: pem("root.crt") },
      fetch: () => new Response("open"),
    });
    try {
      for (const client of ["other-client", null] as const) {
        const res = await fetch(`https://127.0.0.1:${open.port}`, {
          keepalive: false,
          tls: { ca: pem("root.crt"), ...(client ? { cert: pem(`${client}.crt`), key: pem(`${client}.key`) } : {}) },
        });
        expect(res.status).toBe(200);
      }
    } finally {
      open.stop(true);
    }
  });

  test("a client trusting only the other root refuses the server", async () => {
    const res = fetch(origin, {
      keepalive: false,
      tls: { ca: pem("other-root.crt"), cert: pem("client.crt"), key: pem("client.key") },
    });
    await expect(res).rejects.toThrow();
  });
});
