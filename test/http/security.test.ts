/**
 * Regression tests for the security review's findings (each fails on the code before its fix): accounts the control
 * API may not create while real credentials mint tokens, reloads that must never stop the process, `Host` reflected
 * only when well-formed, errors in app routes, linear log redaction, prototype-named keys, and the admission and TLS
 * defaults.
 */
import { afterEach, describe, expect, test } from "bun:test";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { defaultMaxWaiters, openFileLimit } from "../../src/changes/limit.ts";
import type { CredentialSource } from "../../src/index.ts";
import { redact } from "../../src/log.ts";
import { CERTS } from "../helpers/cli.ts";
import { rawRequest } from "../helpers/server.ts";
import { config, FLAVOR, memoryLogger, read, type Started, start, tempDir, until, V1 } from "../dynamic/helpers.ts";

let s: Started | undefined;
afterEach(async () => {
  await s?.server.stop();
  s = undefined;
});

const EMAIL = "evil@attacker.iam.gserviceaccount.com";

/** A source that reports a real credential type and mints recognisable tokens. */
function realSource(type: string): CredentialSource {
  return {
    describe: () => ({ type }),
    accessToken: async ({ account }) => ({ token: `real-token-for-${account.email}`, expiresAt: Date.now() + 3_600_000 }),
    idToken: async ({ account }) => ({ token: `real-id-for-${account.email}`, expiresAt: Date.now() + 3_600_000 }),
  };
}

const json = (r: Response) => r.json() as Promise<{ error: { code: string; message: string } }>;

describe("the control API and real credentials (finding 1)", () => {
  test("with real credentials, creating, renaming or widening an account is refused with 403 naming why", async () => {
    s = await start({ controlApi: true, credentials: realSource("impersonated") });
    const create = await s.req(
      "PUT",
      `/emulator/v1/metadata/instance/service-accounts/${EMAIL}`,
      JSON.stringify({ email: EMAIL, scopes: [] }),
    );
    expect(create.status).toBe(403);
    const body = await json(create);
    expect(body.error.code).toBe("ACCOUNT_CHANGE_REFUSED");
    expect(body.error.message).toContain("creates the service account");
    expect(body.error.message).toContain("real credentials (impersonated)");
    expect((await s.get(`${V1}instance/service-accounts/${EMAIL}/token`)).status).toBe(404);

    const rename = await s.req("PATCH", "/emulator/v1/metadata/instance/service-accounts/default", JSON.stringify({ email: EMAIL }));
    expect(rename.status).toBe(403);
    expect((await json(rename)).error.message).toContain("changes the e-mail");
    const widen = await s.req("PUT", "/emulator/v1/metadata/instance/service-accounts/default/scopes", JSON.stringify(["x", "y"]));
    expect(widen.status).toBe(403);
    // The reference emulator's routes and a whole config are held to the same rule.
    const ref = await s.req("POST", "/emulator/v1/update/instance/service-accounts/default/email", encodeURIComponent(EMAIL));
    expect(ref.status).toBe(403);
    const doc = config();
    doc.computeMetadata.v1.instance.serviceAccounts[EMAIL] = { email: EMAIL, scopes: [] };
    expect((await s.req("PUT", "/emulator/v1/config", JSON.stringify(doc))).status).toBe(403);
    expect(s.server.snapshot.accounts.has(EMAIL)).toBe(false);

    // Everything else still changes; deleting an account or narrowing its scopes is allowed.
    expect((await s.req("PUT", "/emulator/v1/metadata/instance/attributes/x", '"y"')).status).toBe(200);
    expect((await s.req("PUT", "/emulator/v1/metadata/instance/service-accounts/default/scopes", "[]")).status).toBe(200);
  });

  test("with the emulated issuer or static tokens, accounts may be created", async () => {
    for (const credentials of [undefined, { accessToken: "static-a", idToken: "static-i" }]) {
      s = await start({ controlApi: true, ...(credentials ? { credentials } : {}) });
      const r = await s.req(
        "PUT",
        `/emulator/v1/metadata/instance/service-accounts/${EMAIL}`,
        JSON.stringify({ email: EMAIL, scopes: [] }),
      );
      expect(r.status).toBe(200);
      expect((await s.get(`${V1}instance/service-accounts/${EMAIL}/token`)).status).toBe(200);
      await s.server.stop();
      s = undefined;
    }
  });
});

describe("reloads never stop the process (finding 3)", () => {
  /** The bundled config with `key` in instance/ (a directory) and in scheduling/ (a string), as text. */
  const withKey = (key: string) =>
    JSON.stringify(config())
      .replace('"instance":{', `"instance":{"${key}":{"a":"b"},`)
      .replace('"scheduling":{', `"scheduling":{"${key}":"y",`);

  test("keys named like Object.prototype members are user keys, served verbatim", async () => {
    s = await start();
    for (const key of ["constructor", "toString", "__proto__", "hasOwnProperty", "valueOf"]) {
      expect(s.server.applyConfigText(withKey(key))).toBe(true);
      expect((await read(await s.get(`${V1}instance/${key}/a`))).body).toBe("b");
      expect((await read(await s.get(`${V1}instance/scheduling/${key}`))).body).toBe("y");
    }
  });

  test("control-API edits naming prototype members are ordinary edits or clear refusals", async () => {
    s = await start({ controlApi: true });
    for (const key of ["constructor", "__proto__", "toString"]) {
      const fixed = await s.req("PUT", `/emulator/v1/metadata/instance/scheduling/${key}`, '"x"');
      expect(fixed.status).toBe(400);
      expect(((await fixed.json()) as { error: { code: string } }).error.code).toBe("EDIT_FIXED_KEYS");
      expect((await s.req("PUT", `/emulator/v1/metadata/instance/attributes/${key}`, '"v"')).status).toBe(200);
      expect((await read(await s.get(`${V1}instance/attributes/${key}`))).body).toBe("v");
      const ref = await s.req("POST", `/emulator/v1/update/instance/${key}`, "x");
      expect(ref.status).toBe(400);
    }
  });

  test("JSON nested 10,000 deep is refused with one line; the last good config keeps serving", async () => {
    const { log, lines } = memoryLogger();
    s = await start({ log });
    const deep = `{"computeMetadata":{"v1":{"instance":{"attributes":${"[".repeat(10_000)}${"]".repeat(10_000)}}}}}`;
    expect(s.server.applyConfigText(deep)).toBe(false);
    expect(lines).toHaveLength(1);
    expect(lines[0]).toContain("nested deeper than 100 levels");
    expect(s.server.reloadStats.lastError).toContain("line 1, column");
    expect((await s.get(`${V1}project/project-id`)).status).toBe(200);
    // Deep values given to the library are refused the same way, not with a stack overflow.
    let deepValue: unknown = "x";
    for (let i = 0; i < 10_000; i++) deepValue = { a: deepValue };
    expect(() => s!.server.set("instance/attributes/x", deepValue)).toThrow("nested deeper than 100 levels");
    const cyclic: Record<string, unknown> = {};
    cyclic.self = cyclic;
    expect(() => s!.server.replaceClaims(cyclic)).toThrow("nested deeper than 100 levels");
  });

  test("a watcher whose handler throws reports it and keeps watching (no unhandled rejection)", async () => {
    const { ConfigWatcher } = await import("../../src/config/watch.ts");
    const dir = tempDir();
    const file = join(dir, "c.json");
    writeFileSync(file, "one");
    const errors: string[] = [];
    const seen: string[] = [];
    const w = new ConfigWatcher(
      file,
      (text) => {
        seen.push(text);
        throw new Error(`handler failed on ${text}`);
      },
      { onError: (e) => errors.push(e.message) },
    );
    await w.start();
    await w.check();
    writeFileSync(file, "two");
    await w.check();
    w.close();
    expect(seen).toEqual(["one", "two"]);
    expect(errors).toEqual(["handler failed on one", "handler failed on two"]);
  });

  test("the file watcher path: a bad file logs one line and the process keeps serving", async () => {
    const dir = tempDir();
    const file = join(dir, "config.json");
    writeFileSync(file, JSON.stringify(config()));
    const { log, lines } = memoryLogger();
    s = await start({ configFile: file, watchConfig: true, log });
    writeFileSync(file, `{"computeMetadata":{"v1":${"[".repeat(20_000)}`);
    await until(() => s!.server.reloadStats.failures === 1, 5000);
    writeFileSync(file, withKey("constructor"));
    await until(() => s!.server.reloadStats.reloads === 1, 5000);
    expect(lines.filter((l) => l.includes("ERROR"))).toHaveLength(1);
    expect((await read(await s.get(`${V1}instance/constructor/a`))).body).toBe("b");
  });
});

describe("Host reflected only when well-formed (finding 9)", () => {
  const location = (raw: string) => /\r\nLocation: ([^\r]*)\r\n/i.exec(raw)?.[1];
  const redirectWith = (port: number, host: string) =>
    rawRequest(port, `GET ${V1}instance HTTP/1.1\r\nHost: ${host}\r\nMetadata-Flavor: Google\r\nConnection: close\r\n\r\n`);

  test("the 301 Location keeps a good Host and uses the listener's address for any other", async () => {
    s = await start();
    const port = s.server.port;
    const own = `http://127.0.0.1:${port}${V1}instance/`;
    for (const good of ["metadata.google.internal", "metadata.google.internal.", "127.0.0.1:8080", "[::1]:8080", "my_host:80"]) {
      expect(location(await redirectWith(port, good))).toBe(`http://${good}${V1}instance/`);
    }
    for (const bad of ["127.0.0.1:8080@evil.example", "evil.example/x", "a b", "x:99999", "evil.example#", "h:1:2", "[::1", "%65vil"]) {
      expect(location(await redirectWith(port, bad))).toBe(own);
    }
  });

  test("the discovery document's jwks_uri likewise", async () => {
    s = await start();
    const raw = await rawRequest(
      s.server.port,
      "GET /.well-known/openid-configuration HTTP/1.1\r\nHost: 127.0.0.1:1@evil.example\r\nConnection: close\r\n\r\n",
    );
    const doc = JSON.parse(raw.slice(raw.indexOf("\r\n\r\n") + 4));
    expect(doc.jwks_uri).toBe(`http://127.0.0.1:${s.server.port}/oauth2/v3/certs`);
  });
});

describe("errors in app routes (finding 10)", () => {
  test("an unexpected error answers 500 with the standard headers and is logged", async () => {
    const { log, lines } = memoryLogger();
    const broken: CredentialSource = {
      ...realSource("emulated"),
      get openid(): CredentialSource["openid"] {
        throw new Error("boom in a route");
      },
    };
    s = await start({ credentials: broken, log });
    const r = await fetch(`${s.url}/.well-known/openid-configuration`);
    expect(r.status).toBe(500);
    expect(r.headers.get("metadata-flavor")).toBe("Google");
    expect(r.headers.get("server")).toBe("Metadata Server for VM");
    expect(await r.text()).toBe("Internal Server Error\n");
    expect(lines.some((l) => l.includes("request failed") && l.includes("boom in a route"))).toBe(true);
  });
});

describe("log redaction is linear and logged fields are cut (finding 11)", () => {
  test("a 256 KiB run of eyJ takes milliseconds, not seconds", () => {
    const path = `/computeMetadata/v1/${"eyJ".repeat(87_000)}`;
    const t0 = performance.now();
    redact(path);
    expect(performance.now() - t0).toBeLessThan(2000);
  });

  test("each pattern still redacts (the substring pre-checks skip only text it cannot match)", () => {
    expect(redact("token ya29.a0AbC-d_e.f")).toBe("token [redacted]");
    expect(redact("key -----BEGIN RSA PRIVATE KEY-----\nMIIE\n-----END RSA PRIVATE KEY----- done")).toBe("key [redacted] done");
    expect(redact('{"Access_Token": "s3cr3t"}')).toBe('{"Access_Token": "[redacted]"}');
    expect(redact('{"CLIENT_SECRET":"x1"}')).toBe('{"CLIENT_SECRET":"[redacted]"}');
    expect(redact("grant_type=jwt&Assertion=abc.def")).toBe("grant_type=jwt&Assertion=[redacted]");
    expect(redact("subject_TOKEN=zzz")).toBe("subject_TOKEN=[redacted]");
    expect(redact("private_key: abc")).toBe("private_key: [redacted]");
    const plain = "metadata server listening url=http://127.0.0.1:8080 version=1.2.3";
    expect(redact(plain)).toBe(plain);
  });

  test("JWTs are still redacted, whole or cut short; long fields are cut", () => {
    const jwt = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl";
    expect(redact(`a ${jwt} b`)).toBe("a [redacted] b");
    expect(redact(`cut ${jwt.slice(0, 25)}`)).toBe("cut [redacted]");
    const lines: string[] = [];
    const { createLogger } = require("../../src/log.ts") as typeof import("../../src/log.ts");
    createLogger("info", (l) => lines.push(l)).info("x".repeat(100_000), { field: "y".repeat(100_000) });
    expect(lines[0]!.length).toBeLessThan(5000);
    expect(lines[0]).toContain("…(100000 characters)");
  });
});

describe("prototype-named keys (findings 12, 13)", () => {
  test("guest namespaces named like Object.prototype members get the {namespace} metric label", async () => {
    const c = config();
    c.computeMetadata.v1.instance.attributes["enable-guest-attributes"] = "TRUE";
    s = await start({ claims: c, serverConfig: { port: 0, metrics: { port: 0 } } });
    for (const ns of ["constructor", "toString", "__proto__"]) {
      expect((await s.req("PUT", `${V1}instance/guest-attributes/${ns}/k`, "v")).status).toBe(200);
      expect((await read(await s.get(`${V1}instance/guest-attributes/${ns}/k`))).body).toBe("v");
    }
    const text = await (await fetch(`${s.server.metricsUrl}/metrics`)).text();
    expect(text).not.toContain("native code");
    expect(text).toContain('path="/computeMetadata/v1/instance/guest-attributes/{namespace}/{key}"');
  });

  test("a __proto__ key inside a document leaf is kept as data", async () => {
    const c = config();
    c.computeMetadata.v1.instance.upcomingMaintenance = JSON.parse('{"type":"SCHEDULED","__proto__":{"polluted":"yes"}}');
    s = await start({ claims: c });
    const body = (await read(await s.get(`${V1}instance/upcoming-maintenance`))).body;
    expect(body).toBe('{"__proto__":{"polluted":"yes"},"type":"SCHEDULED"}');
    expect(({} as Record<string, unknown>).polluted).toBeUndefined();
  });
});

describe("defaults (finding 14)", () => {
  test("the default cap on hanging requests is half the open-file limit, at most 10,000", () => {
    expect(openFileLimit("Max cpu time  unlimited  unlimited  seconds\nMax open files  1024  4096  files\n")).toBe(1024);
    expect(defaultMaxWaiters(1024)).toBe(512);
    expect(defaultMaxWaiters(1_048_576)).toBe(10_000);
    expect(defaultMaxWaiters(Number.POSITIVE_INFINITY)).toBe(10_000);
    expect(defaultMaxWaiters(undefined)).toBe(512);
    expect(openFileLimit()).toBeGreaterThan(0);
  });

  test("-usemTLS with the bundled test CA logs a warning once the server is up", async () => {
    const { log, lines } = memoryLogger();
    const tls = { rootCA: join(CERTS, "root.crt"), serverCert: join(CERTS, "server.crt"), serverKey: join(CERTS, "server.key") };
    s = await start({ serverConfig: { port: 0, tls }, log });
    expect(lines.filter((l) => l.includes("WARN"))).toEqual([expect.stringContaining("trusts a test CA from this repository")]);
    await s.server.stop();
    // A CA of one's own: no warning.
    lines.length = 0;
    const dir = tempDir();
    const own = Bun.spawnSync(
      ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=own CA", "-days", "1"].concat([
        "-keyout",
        join(dir, "ca.key"),
        "-out",
        join(dir, "ca.crt"),
      ]),
      { stdin: "ignore", stdout: "ignore", stderr: "ignore" },
    );
    expect(own.exitCode).toBe(0);
    s = await start({ serverConfig: { port: 0, tls: { ...tls, rootCA: join(dir, "ca.crt") } }, log });
    expect(lines.filter((l) => l.includes("WARN"))).toEqual([]);
  });

  test("TLS offers no static-RSA or CBC-SHA1 suite, and no TLS 1.0 or 1.1", async () => {
    const tls = { rootCA: join(CERTS, "root.crt"), serverCert: join(CERTS, "server.crt"), serverKey: join(CERTS, "server.key") };
    s = await start({ serverConfig: { port: 0, tls } });
    const handshake = async (...args: string[]) => {
      const p = Bun.spawn(
        [
          "openssl",
          "s_client",
          "-connect",
          `127.0.0.1:${s!.server.port}`,
          "-cert",
          join(CERTS, "client.crt"),
          "-key",
          join(CERTS, "client.key"),
          ...args,
        ],
        { stdin: "ignore", stdout: "pipe", stderr: "pipe" },
      );
      const out = await new Response(p.stdout).text();
      await p.exited;
      return /Cipher is (\S+)/.exec(out)?.[1];
    };
    expect(await handshake("-tls1_2", "-cipher", "ECDHE-RSA-AES128-GCM-SHA256")).toBe("ECDHE-RSA-AES128-GCM-SHA256");
    expect(await handshake("-tls1_3")).toMatch(/^TLS_/);
    for (const weak of ["AES128-SHA", "AES256-GCM-SHA384", "ECDHE-RSA-AES128-SHA", "AES128-SHA256"]) {
      expect(await handshake("-tls1_2", "-cipher", weak)).toBe("(NONE)");
    }
    for (const old of ["-tls1", "-tls1_1"]) expect(await handshake(old, "-cipher", "ALL:@SECLEVEL=0")).toBe("(NONE)");
  });

  test("the legacy header can be turned off", async () => {
    const legacy = { "X-Google-Metadata-Request": "True" };
    s = await start();
    expect((await fetch(`${s.url}${V1}project/project-id`, { headers: legacy })).status).toBe(200);
    await s.server.stop();
    s = await start({ legacyHeader: false });
    expect((await fetch(`${s.url}${V1}project/project-id`, { headers: legacy })).status).toBe(403);
    // On the command line: -legacyHeader=false.
    const { parseFlags } = await import("../../src/cli/flags.ts");
    const { serverOptions } = await import("../../src/cli/options.ts");
    expect(serverOptions(parseFlags(["-legacyHeader=false"]), {}, true).legacyHeader).toBe(false);
    expect(serverOptions(parseFlags([]), {}, true).legacyHeader).toBe(true);
  });

  test("a Forwarded header is refused like X-Forwarded-For: metadata paths, /, the control API", async () => {
    s = await start({ controlApi: true });
    for (const path of [`${V1}project/project-id`, "/", "/emulator/v1/status"]) {
      const r = await fetch(s.url + path, { headers: { ...FLAVOR, Forwarded: "for=192.0.2.60;proto=http;by=203.0.113.43" } });
      expect(r.status).toBe(403);
      expect(await r.text()).toContain("Requests with a Forwarded header are not accepted.");
    }
  });
});
