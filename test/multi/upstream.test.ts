/**
 * `-upstream`: the overlay serves another instance of this server's tree with a partial config merged over it. A
 * change made through the upstream's control API shows through (and wakes the overlay's waiters); tokens go through
 * to the upstream unless a local source is given; an unreachable upstream keeps the last good tree.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { decodeJwt } from "jose";
import { ConfigError, MetadataServer } from "../../src/index.ts";
import { config, FLAVOR, memoryLogger, read, tempDir, until, V1 } from "../dynamic/helpers.ts";
import { runCliToExit, serveCli } from "../helpers/cli.ts";

const dir = tempDir("upstream-");
const overlayFile = join(dir, "overlay.json");
const overlayDoc = (extra: Record<string, unknown> = {}) =>
  JSON.stringify({
    computeMetadata: { v1: { instance: { hostname: "overlay-host", attributes: { local: "yes", "enable-oslogin": null, ...extra } } } },
  });

let upstream: MetadataServer;
let overlay: MetadataServer;
const get = (s: MetadataServer, path: string, init: RequestInit = {}) => fetch(`${s.url}${V1}${path}`, { ...init, headers: FLAVOR });
const text = async (s: MetadataServer, path: string) => (await get(s, path)).text();
const control = (method: string, path: string, body?: unknown) =>
  fetch(`${upstream.url}/emulator/v1/metadata/${path}`, {
    method,
    headers: FLAVOR,
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });

beforeAll(async () => {
  upstream = new MetadataServer({ serverConfig: { port: 0 }, controlApi: true });
  await upstream.start();
  writeFileSync(overlayFile, overlayDoc());
  overlay = new MetadataServer({ serverConfig: { port: 0 }, upstream: upstream.url, configFile: overlayFile, watchConfig: true });
  await overlay.start();
});

afterAll(async () => {
  await overlay.stop();
  await upstream.stop();
  rmSync(dir, { recursive: true, force: true });
});

describe("the upstream's tree with the config laid over it", () => {
  test("directories merge key by key; null removes an upstream key; the rest is the upstream's", async () => {
    expect(JSON.parse(await text(overlay, "instance/attributes/?recursive=true"))).toEqual({
      local: "yes",
      "startup-script": "#!/bin/bash\necho hello",
    });
    expect(await text(overlay, "instance/hostname")).toBe("overlay-host");
    expect(await text(overlay, "instance/id")).toBe("4520031799277581759");
    expect(await text(overlay, "project/?recursive=true")).toBe(await text(upstream, "project/?recursive=true"));
    expect(await text(overlay, "universe/universe-domain")).toBe("googleapis.com");
    expect(await text(overlay, "instance/service-accounts/")).toBe(await text(upstream, "instance/service-accounts/"));
  });

  test("a change through the upstream's control API shows through and wakes the overlay's waiters", async () => {
    const delays: number[] = [];
    for (const value of ["one", "two", "three"]) {
      const waiting = get(overlay, "instance/attributes/?recursive=true&wait_for_change=true&timeout_sec=20").then(read);
      await until(() => overlay.changes.size === 1);
      const t0 = performance.now();
      expect((await control("PUT", "instance/attributes/from-upstream", value)).status).toBe(200);
      const r = await waiting;
      delays.push(performance.now() - t0);
      expect(r.status).toBe(200);
      expect(JSON.parse(r.body)["from-upstream"]).toBe(value);
      expect(JSON.parse(r.body).local).toBe("yes");
    }
    // Measured here for the record; bench/upstream.ts measures it properly.
    console.log(`upstream change seen through the overlay after ${delays.map((d) => `${d.toFixed(1)} ms`).join(", ")}`);
    for (const d of delays) expect(d).toBeLessThan(5000);
    expect((await control("DELETE", "instance/attributes/from-upstream")).status).toBe(204);
    await until(() => !("from-upstream" in (overlay.get("instance/attributes") as object)), 5000);
  });

  test("the overlay file is reloaded over the current upstream tree", async () => {
    expect((await control("PUT", "instance/attributes/kept", "upstream-value")).status).toBe(200);
    await until(() => (overlay.get("instance/attributes") as Record<string, string>).kept === "upstream-value", 5000);
    const waiting = get(overlay, "instance/attributes/local?wait_for_change=true&timeout_sec=20").then(read);
    await until(() => overlay.changes.size === 1);
    writeFileSync(overlayFile, overlayDoc({ local: "changed" }));
    expect((await waiting).body).toBe("changed");
    expect(await text(overlay, "instance/attributes/kept")).toBe("upstream-value");
  });

  test("tokens and identity tokens go through to the upstream, behind the cache", async () => {
    const path = "instance/service-accounts/default/token";
    const [mine, theirs] = await Promise.all([get(overlay, path), get(upstream, path)]);
    const a = (await mine.json()) as { access_token: string; expires_in: number };
    const b = (await theirs.json()) as { access_token: string };
    expect(a.access_token).toBe(b.access_token);
    expect(a.expires_in).toBeGreaterThan(3000);
    const id = await text(overlay, "instance/service-accounts/default/identity?audience=https://aud.example&format=full");
    expect(id).toBe(await text(upstream, "instance/service-accounts/default/identity?audience=https://aud.example&format=full"));
    expect(decodeJwt(id).aud).toBe("https://aud.example");
    // Scopes other than the account's are asked for by name: a different token upstream.
    const scoped = await text(overlay, `${path}?scopes=https://www.googleapis.com/auth/userinfo.email`);
    expect(JSON.parse(scoped).access_token).not.toBe(a.access_token);
  });

  test("an account only the overlay names has no token upstream: 500 with the upstream's answer", async () => {
    const local = new MetadataServer({
      serverConfig: { port: 0 },
      upstream: upstream.url,
      claims: { computeMetadata: { v1: { instance: { serviceAccounts: { "only-here@p.iam.gserviceaccount.com": { scopes: [] } } } } } },
    });
    await local.start();
    try {
      const r = await get(local, "instance/service-accounts/only-here@p.iam.gserviceaccount.com/token");
      expect(r.status).toBe(500);
      expect(await r.text()).toContain("answered 404 to the request for an access token for only-here@p.iam.gserviceaccount.com");
    } finally {
      await local.stop();
    }
  });

  test("with a local credential source the tokens are its own", async () => {
    const local = new MetadataServer({
      serverConfig: { port: 0 },
      upstream: upstream.url,
      credentials: { accessToken: "ya29.local-static" },
    });
    await local.start();
    try {
      const r = (await (await get(local, "instance/service-accounts/default/token")).json()) as { access_token: string };
      expect(r.access_token).toBe("ya29.local-static");
    } finally {
      await local.stop();
    }
  });
});

describe("an upstream that goes away", () => {
  test("the last good tree keeps being served, it is logged, and the upstream's return shows through", async () => {
    let first = new MetadataServer({ serverConfig: { port: 0 } });
    const { port } = await first.start();
    const { log, lines } = memoryLogger();
    const local = new MetadataServer({ serverConfig: { port: 0 }, upstream: `127.0.0.1:${port}`, log });
    await local.start();
    try {
      expect(await text(local, "project/project-id")).toBe("example-project");
      await first.stop();
      await until(() => lines.some((l) => l.includes("upstream metadata server unreachable; still serving the last good tree")), 10_000);
      expect(await text(local, "project/project-id")).toBe("example-project");
      expect((await get(local, "instance/service-accounts/default/email")).status).toBe(200);
      // The upstream comes back, with another project.
      const c = config();
      c.computeMetadata.v1.project.projectId = "after-restart";
      first = new MetadataServer({ serverConfig: { port }, claims: c });
      await first.start();
      await until(() => lines.some((l) => l.includes("upstream metadata server reachable again")), 15_000);
      await until(() => local.get("project/project-id") === "after-restart", 5000);
      expect(await text(local, "project/project-id")).toBe("after-restart");
      expect(lines.filter((l) => l.includes("unreachable")).length).toBe(1);
    } finally {
      await local.stop();
      await first.stop();
    }
  }, 40_000);

  test("an upstream that does not hold waits is polled once a second; its changes still show through", async () => {
    const c = config();
    let project = "polled-1";
    let requests = 0;
    const fake = Bun.serve({
      hostname: "127.0.0.1",
      port: 0,
      fetch(req) {
        const headers = { "Metadata-Flavor": "Google", "Content-Type": "application/json" };
        if (!req.url.includes("recursive=true")) return new Response("not here", { status: 404, headers });
        requests++;
        c.computeMetadata.v1.project.projectId = project;
        return new Response(JSON.stringify(c.computeMetadata.v1), { headers });
      },
    });
    const local = new MetadataServer({ serverConfig: { port: 0 }, upstream: `http://127.0.0.1:${fake.port}` });
    await local.start();
    try {
      expect(await text(local, "project/project-id")).toBe("polled-1");
      // The fake answers 404 for universe-domain: the copy answers what clients assume then.
      expect(await text(local, "universe/universe-domain")).toBe("googleapis.com");
      const before = requests;
      await Bun.sleep(2500);
      expect(requests - before).toBeLessThanOrEqual(4);
      project = "polled-2";
      await until(() => local.get("project/project-id") === "polled-2", 5000);
    } finally {
      await local.stop();
      await fake.stop(true);
    }
  });

  test("an upstream that cannot be read at start is an error naming it", async () => {
    const s = new MetadataServer({ serverConfig: { port: 0 }, upstream: "http://127.0.0.1:1" });
    const e = await s.start().catch((x) => x);
    expect(e).toBeInstanceOf(ConfigError);
    expect(e.code).toBe("CONFIG_UPSTREAM");
    expect(e.message).toMatch(/^cannot read the metadata server at http:\/\/127\.0\.0\.1:1: /);
  });
});

describe("command line", () => {
  test("-upstream with a partial -configFile; tokens from the upstream", async () => {
    const cli = await serveCli(["-upstream", upstream.url, "-configFile", overlayFile]);
    try {
      expect(await (await cli.get(`${V1}instance/hostname`)).text()).toBe("overlay-host");
      expect(await (await cli.get(`${V1}project/project-id`)).text()).toBe("example-project");
      const mine = (await (await cli.get(`${V1}instance/service-accounts/default/token`)).json()) as { access_token: string };
      const theirs = (await (await get(upstream, "instance/service-accounts/default/token")).json()) as { access_token: string };
      expect(mine.access_token).toBe(theirs.access_token);
      expect(cli.log()).toContain(`tokens and identity tokens from the upstream metadata server url=${upstream.url}`);
      await until(
        () => cli.log().includes(`serving the upstream metadata server's tree upstream=${upstream.url} overlay=${overlayFile}`),
        5000,
      );
      expect(cli.log()).not.toContain("bundled");
    } finally {
      await cli.stop();
    }
  });

  test("an unreachable -upstream exits 1 with one line; a malformed one exits 2", async () => {
    const down = await runCliToExit(["-port", ":0", "-upstream", "http://127.0.0.1:1"]);
    expect(down.code).toBe(1);
    expect(down.errors).toHaveLength(1);
    expect(down.errors[0]).toContain("cannot read the metadata server at http://127.0.0.1:1");
    const bad = await runCliToExit(["-port", ":0", "-upstream", "ftp://x"]);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain('-upstream "ftp://x" is not an http(s) URL or host:port');
  });
});
