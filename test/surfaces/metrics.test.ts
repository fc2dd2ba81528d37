/**
 * Prometheus metrics on their own listener: scraped after known traffic and parsed with a strict text-format parser.
 * Every named series appears with HELP and TYPE; counts equal the requests made; histograms are consistent; `path`
 * labels stay route templates whatever clients request; token-cache, wait and reload hooks move their series;
 * /healthz and /readyz tell liveness from readiness.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { DEFAULT_CONFIG_TEXT, MetadataServer, type CredentialSource } from "../../src/index.ts";
import { parseConfigText } from "../../src/config/claims.ts";
import { createLogger } from "../../src/log.ts";
import { instrument } from "../../src/observability/requests.ts";
import { VERSION } from "../../src/version.ts";
import { checkHistogram, parsePrometheusText, sampleValue, type Family } from "./prom-text.ts";
import { metricsUrl as cliMetricsUrl, runCli, runCliToExit } from "../helpers/cli.ts";

const V1 = "/computeMetadata/v1/";
const H = { "Metadata-Flavor": "Google" };
const DEFAULT_EMAIL = "123456789012-compute@developer.gserviceaccount.com";

/** Name → type of every series this server exports. */
const EXPECTED: Record<string, Family["type"]> = {
  metadata_endpoint_latency_seconds: "histogram",
  metadata_endpoint_path_requests: "counter",
  metadata_server_version: "gauge",
  service_account_name: "gauge",
  credential_type: "gauge",
  service_account_hash: "gauge",
  metadata_token_cache_hits_total: "counter",
  metadata_token_cache_misses_total: "counter",
  metadata_token_refresh_failures_total: "counter",
  metadata_token_upstream_latency_seconds: "histogram",
  metadata_waiting_requests: "gauge",
  metadata_config_reloads_total: "counter",
  metadata_config_reload_failures_total: "counter",
};

async function scrape(base: string, path = "/metrics") {
  const res = await fetch(base + path);
  expect(res.status).toBe(200);
  expect(res.headers.get("content-type")).toBe("text/plain; version=0.0.4; charset=utf-8");
  return parsePrometheusText(await res.text());
}

const configDoc = () => parseConfigText(DEFAULT_CONFIG_TEXT, "default config") as { computeMetadata: { v1: any } };

describe("after known traffic", () => {
  let server: MetadataServer;
  let base: string;
  let m: Map<string, Family>;
  /** What we sent: [template, status text] → count. */
  const sent = new Map<string, number>();
  const key = (code: string, template: string) => `${code}\t${template}`;
  const count = (template: string, code: string) => sent.set(key(code, template), (sent.get(key(code, template)) ?? 0) + 1);

  const send = async (path: string, expectStatus: number, template: string, code: string, init: RequestInit = { headers: H }) => {
    const res = await fetch(base + path, { redirect: "manual", ...init });
    await res.arrayBuffer();
    expect(res.status).toBe(expectStatus);
    count(template, code);
  };

  beforeAll(async () => {
    server = new MetadataServer({ serverConfig: { port: 0, metrics: { port: 0 } } });
    ({ url: base } = await server.start());
    for (let i = 0; i < 5; i++) await send(`${V1}instance/attributes/enable-oslogin`, 200, `${V1}instance/attributes/{key}`, "OK");
    for (let i = 0; i < 3; i++) await send(`${V1}instance/attributes/startup-script`, 200, `${V1}instance/attributes/{key}`, "OK");
    for (let i = 0; i < 2; i++) await send(`${V1}instance/id`, 200, `${V1}instance/id`, "OK");
    for (let i = 0; i < 3; i++)
      await send(`${V1}instance/service-accounts/default/token`, 200, `${V1}instance/service-accounts/{account}/token`, "OK");
    await send(
      `${V1}instance/service-accounts/${DEFAULT_EMAIL}/token?scopes=a,b`,
      200,
      `${V1}instance/service-accounts/{account}/token`,
      "OK",
    );
    for (let i = 0; i < 2; i++)
      await send(
        `${V1}instance/service-accounts/default/identity?audience=https://a.example`,
        200,
        `${V1}instance/service-accounts/{account}/identity`,
        "OK",
      );
    await send(`${V1}instance/service-accounts/default/identity`, 400, `${V1}instance/service-accounts/{account}/identity`, "Bad Request");
    await send(`${V1}instance`, 301, `${V1}instance`, "Moved Permanently");
    await send(`${V1}instance/id`, 403, `${V1}instance/id`, "Forbidden", {});
    await send(`${V1}instance/id`, 405, `${V1}instance/id`, "Method Not Allowed", { method: "POST", headers: H });
    for (let i = 0; i < 4; i++) await send(`${V1}instance/attributes/no-such-key-${i}`, 404, "{other}", "Not Found");
    for (let i = 0; i < 2; i++) await send(`/random/junk/${i}`, 404, "{other}", "Not Found");
    await send("/.well-known/openid-configuration", 200, "/.well-known/openid-configuration", "OK");
    await send("/", 200, "/", "OK", {});
    // A path the handler serves after collapsing `//` is labelled like the node it reaches.
    await send("/computeMetadata/v1//instance/id", 200, `${V1}instance/id`, "OK");
    m = await scrape(server.metricsUrl!);
  });
  afterAll(() => server.stop());

  test("every named metric has HELP and the right TYPE", () => {
    for (const [name, type] of Object.entries(EXPECTED)) {
      const f = m.get(name);
      expect(f, name).toBeDefined();
      expect(f!.type, name).toBe(type);
      expect(f!.help, name).toBeTruthy();
    }
  });

  test("metadata_endpoint_path_requests: one count per request, by status text and route template", () => {
    const got = new Map<string, number>();
    for (const s of m.get("metadata_endpoint_path_requests")!.samples) got.set(key(s.labels.code!, s.labels.path!), s.value);
    expect(Object.fromEntries(got)).toEqual(Object.fromEntries(sent));
  });

  test("metadata_endpoint_latency_seconds: buckets monotonic, +Inf = _count = requests per path, sane sums", () => {
    const h = checkHistogram(m, "metadata_endpoint_latency_seconds");
    const perPath = new Map<string, number>();
    for (const [k, n] of sent) {
      const path = k.slice(k.indexOf("\t") + 1);
      perPath.set(path, (perPath.get(path) ?? 0) + n);
    }
    expect(h.size).toBe(perPath.size);
    for (const [path, n] of perPath) {
      const e = h.get(JSON.stringify([["path", path]]));
      expect(e, path).toBeDefined();
      expect(e!.count, path).toBe(n);
      expect(e!.sum, path).toBeGreaterThan(0);
      expect(e!.sum / e!.count, path).toBeLessThan(5); // seconds; nothing here should take long
      expect(e!.buckets.map(([le]) => le)).toContain(0.005); // Go's default buckets are all there
      expect(e!.buckets.map(([le]) => le)).toContain(10);
    }
  });

  test("no client-chosen text in any path label", () => {
    const labels = new Set(m.get("metadata_endpoint_path_requests")!.samples.map((s) => s.labels.path));
    for (const l of labels) expect(l).not.toMatch(/no-such-key|junk|a\.example|scopes|@/);
  });

  test("version, credential type and account gauges are 1", () => {
    expect(sampleValue(m, "metadata_server_version", { version: VERSION })).toBe(1);
    expect(m.get("metadata_server_version")!.samples.length).toBe(1);
    expect(sampleValue(m, "credential_type", { type: "emulated" })).toBe(1);
    expect(m.get("credential_type")!.samples.length).toBe(1);
    expect(sampleValue(m, "service_account_name", { email: DEFAULT_EMAIL })).toBe(1);
    // The emulated issuer holds no service-account key, so there is no key fingerprint.
    expect(m.get("service_account_hash")!.samples.length).toBe(0);
  });

  test("token cache: misses for the first token of each kind and scope set, hits after", () => {
    expect(sampleValue(m, "metadata_token_cache_misses_total", { kind: "access" })).toBe(2); // default scopes, then a,b
    expect(sampleValue(m, "metadata_token_cache_hits_total", { kind: "access" })).toBe(2);
    expect(sampleValue(m, "metadata_token_cache_misses_total", { kind: "identity" })).toBe(1);
    expect(sampleValue(m, "metadata_token_cache_hits_total", { kind: "identity" })).toBe(1);
    expect(sampleValue(m, "metadata_token_refresh_failures_total", { kind: "access" })).toBe(0);
    const up = checkHistogram(m, "metadata_token_upstream_latency_seconds");
    expect(
      up.get(
        JSON.stringify([
          ["kind", "access"],
          ["outcome", "ok"],
        ]),
      )!.count,
    ).toBe(2);
    expect(
      up.get(
        JSON.stringify([
          ["kind", "identity"],
          ["outcome", "ok"],
        ]),
      )!.count,
    ).toBe(1);
  });

  test("idle gauges and counters start at 0", () => {
    expect(sampleValue(m, "metadata_waiting_requests")).toBe(0);
    expect(sampleValue(m, "metadata_config_reloads_total")).toBe(0);
    expect(sampleValue(m, "metadata_config_reload_failures_total")).toBe(0);
  });

  test("a flood of unknown paths adds no label values", async () => {
    const before = new Set(m.get("metadata_endpoint_path_requests")!.samples.map((s) => s.labels.path));
    const paths = [];
    for (let i = 0; i < 300; i++) {
      const r = Math.random().toString(36).slice(2);
      paths.push(
        `${V1}instance/attributes/${r}`,
        `${V1}instance/service-accounts/${r}@x.iam.gserviceaccount.com/token`,
        `${V1}${r}/${r}`,
        `/${r}`,
        `${V1}instance/network-interfaces/${i}/ip`,
      );
    }
    await Promise.all(paths.map((p) => fetch(base + p, { headers: H }).then((r) => r.arrayBuffer())));
    const after = await scrape(server.metricsUrl!);
    const labels = new Set(after.get("metadata_endpoint_path_requests")!.samples.map((s) => s.labels.path));
    // The one new label is network-interfaces/0/ip, which exists and is served under its template.
    expect([...labels].sort()).toEqual([...before, `${V1}instance/network-interfaces/{index}/ip`].sort());
    const other = sampleValue(after, "metadata_endpoint_path_requests", { code: "Not Found", path: "{other}" })!;
    expect(other).toBe(sent.get(key("Not Found", "{other}"))! + paths.length - 1);
    expect(sampleValue(after, "metadata_endpoint_path_requests", { code: "OK", path: `${V1}instance/network-interfaces/{index}/ip` })).toBe(
      1,
    );
  });
});

describe("hooks", () => {
  let server: MetadataServer;
  let murl: string;
  let base: string;
  beforeAll(async () => {
    server = new MetadataServer({ serverConfig: { port: 0, metrics: { port: 0 } } });
    ({ url: base } = await server.start());
    murl = server.metricsUrl!;
  });
  afterAll(() => server.stop());

  test("waiting requests: 1 while a wait_for_change request hangs, 0 after it is answered", async () => {
    const saved = server.state.waits;
    let release!: () => void;
    let started!: () => void;
    const hanging = new Promise<void>((r) => (started = r));
    server.state.waits = {
      wait: () =>
        new Promise<void>((resolve) => {
          release = resolve;
          started();
        }),
    };
    const res = fetch(`${base}${V1}instance/attributes/enable-oslogin?wait_for_change=true`, { headers: H });
    await hanging;
    expect(sampleValue(await scrape(murl), "metadata_waiting_requests")).toBe(1);
    release();
    expect((await res).status).toBe(200);
    expect(sampleValue(await scrape(murl), "metadata_waiting_requests")).toBe(0);
    server.state.waits = saved;
  });

  test("waiting requests: a wait that is refused (too many waiters) still counts down", async () => {
    const saved = server.state.waits;
    server.state.waits = { wait: () => Promise.reject(new Error("too many waiters")) };
    const res = await fetch(`${base}${V1}instance/attributes/enable-oslogin?wait_for_change=true`, { headers: H });
    expect(res.status).toBe(503);
    expect(sampleValue(await scrape(murl), "metadata_waiting_requests")).toBe(0);
    server.state.waits = saved;
  });

  test("reloads: replaceClaims counts successes and failures, and the account gauge follows the new config", async () => {
    const doc = configDoc();
    doc.computeMetadata.v1.instance.serviceAccounts.default.email = "other@example-project.iam.gserviceaccount.com";
    server.replaceClaims(doc);
    expect(() => server.replaceClaims({ computeMetadata: { v1: { instance: { id: "not a number" } } } })).toThrow();
    const m = await scrape(murl);
    expect(sampleValue(m, "metadata_config_reloads_total")).toBe(1);
    expect(sampleValue(m, "metadata_config_reload_failures_total")).toBe(1);
    expect(m.get("service_account_name")!.samples).toEqual([
      { name: "service_account_name", labels: { email: "other@example-project.iam.gserviceaccount.com" }, value: 1 },
    ]);
    // And the hooks are what other code calls directly.
    server.metrics.reloads.failed();
    expect(sampleValue(await scrape(murl), "metadata_config_reload_failures_total")).toBe(2);
  });

  test("a background refresh that fails is counted, and the valid token keeps being served", async () => {
    let calls = 0;
    const source: CredentialSource = {
      describe: () => ({ type: "test" }),
      accessToken: async () => {
        if (++calls > 1) throw new Error("upstream down");
        return { token: "first-token", expiresAt: Date.now() + 2000 };
      },
      idToken: async () => ({ token: "x", expiresAt: Date.now() + 2000 }),
    };
    const s = new MetadataServer({ serverConfig: { port: 0, metrics: { port: 0 } }, credentials: source });
    const { url } = await s.start();
    try {
      const tokenUrl = `${url}${V1}instance/service-accounts/default/token`;
      expect((await fetch(tokenUrl, { headers: H })).status).toBe(200);
      await Bun.sleep(1200); // past half the 2 s lifetime: the next hit refreshes in the background
      const res = await fetch(tokenUrl, { headers: H });
      expect(((await res.json()) as { access_token: string }).access_token).toBe("first-token");
      await Bun.sleep(50);
      const m = await scrape(s.metricsUrl!);
      expect(sampleValue(m, "metadata_token_refresh_failures_total", { kind: "access" })).toBe(1);
      expect(
        checkHistogram(m, "metadata_token_upstream_latency_seconds").get(
          JSON.stringify([
            ["kind", "access"],
            ["outcome", "error"],
          ]),
        )!.count,
      ).toBe(1);
      expect(sampleValue(m, "credential_type", { type: "test" })).toBe(1);
    } finally {
      await s.stop();
    }
  });

  test("a caller's own tokenEvents still fire beside the metrics", async () => {
    const seen: string[] = [];
    const s = new MetadataServer({
      serverConfig: { port: 0, metrics: { port: 0 } },
      tokenEvents: { miss: (k) => seen.push(`miss ${k}`), hit: (k) => seen.push(`hit ${k}`) },
    });
    const { url } = await s.start();
    try {
      for (let i = 0; i < 2; i++)
        await fetch(`${url}${V1}instance/service-accounts/default/token`, { headers: H }).then((r) => r.arrayBuffer());
      expect(seen).toEqual(["miss access", "hit access"]);
      expect(sampleValue(await scrape(s.metricsUrl!), "metadata_token_cache_hits_total", { kind: "access" })).toBe(1);
    } finally {
      await s.stop();
    }
  });
});

describe("hooks with the real wait and reload code", () => {
  let dir: string;
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), "mds-reload-"));
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  test("a real hanging GET (ChangeHub) shows in metadata_waiting_requests until a change wakes it", async () => {
    const server = new MetadataServer({ serverConfig: { port: 0, metrics: { port: 0 } } });
    const { url } = await server.start();
    try {
      const murl = server.metricsUrl!;
      const res = fetch(`${url}${V1}instance/attributes/enable-oslogin?wait_for_change=true`, { headers: H });
      let waiting = 0;
      for (let i = 0; i < 100 && waiting !== 1; i++) {
        waiting = sampleValue(await scrape(murl), "metadata_waiting_requests")!;
        if (waiting !== 1) await Bun.sleep(10);
      }
      expect(waiting).toBe(1);
      server.set("instance/attributes/enable-oslogin", "TRUE");
      const r = await res;
      expect(r.status).toBe(200);
      expect(await r.text()).toBe("TRUE");
      expect(sampleValue(await scrape(murl), "metadata_waiting_requests")).toBe(0);
      // An edit is not a config reload.
      expect(sampleValue(await scrape(murl), "metadata_config_reloads_total")).toBe(0);
    } finally {
      await server.stop();
    }
  });

  test("config file reloads (watchConfig) count successes and failures", async () => {
    const file = join(dir, "config.json");
    await Bun.write(file, DEFAULT_CONFIG_TEXT);
    const server = new MetadataServer({ configFile: file, watchConfig: true, serverConfig: { port: 0, metrics: { port: 0 } } });
    await server.start();
    try {
      const murl = server.metricsUrl!;
      const until = async (name: string, want: number) => {
        let v: number | undefined;
        for (let i = 0; i < 200 && v !== want; i++) {
          v = sampleValue(await scrape(murl), name);
          if (v !== want) await Bun.sleep(10);
        }
        return v;
      };
      await Bun.write(file, DEFAULT_CONFIG_TEXT.replace('"name": "vm-1"', '"name": "vm-2"'));
      expect(await until("metadata_config_reloads_total", 1)).toBe(1);
      await Bun.write(file, "{ not json");
      expect(await until("metadata_config_reload_failures_total", 1)).toBe(1);
      expect(server.reloadStats).toMatchObject({ reloads: 1, failures: 1 });
      expect(server.snapshot.text("instance/name")).toBe("vm-2");
    } finally {
      await server.stop();
    }
  });
});

describe("control API routes", () => {
  test("are labelled by route, not by the path or id in them, and a PUT of the whole config counts as a reload", async () => {
    const server = new MetadataServer({ controlApi: true, serverConfig: { port: 0, metrics: { port: 0 } } });
    const { url } = await server.start();
    try {
      const call = (method: string, path: string, body?: string) =>
        fetch(url + path, { method, headers: H, ...(body === undefined ? {} : { body }) }).then(async (r) => {
          await r.arrayBuffer();
          return r.status;
        });
      expect(await call("PUT", "/emulator/v1/metadata/instance/attributes/color", '"blue"')).toBe(200);
      expect(await call("PUT", "/emulator/v1/metadata/instance/attributes/size", '"xl"')).toBe(200);
      expect(await call("GET", "/emulator/v1/status")).toBe(200);
      expect(await call("PUT", "/emulator/v1/config", DEFAULT_CONFIG_TEXT)).toBe(200);
      const m = await scrape(server.metricsUrl!);
      expect(sampleValue(m, "metadata_endpoint_path_requests", { code: "OK", path: "/emulator/v1/metadata/{path}" })).toBe(2);
      expect(sampleValue(m, "metadata_endpoint_path_requests", { code: "OK", path: "/emulator/v1/status" })).toBe(1);
      expect(sampleValue(m, "metadata_endpoint_path_requests", { code: "OK", path: "/emulator/v1/config" })).toBe(1);
      expect(sampleValue(m, "metadata_config_reloads_total")).toBe(1);
    } finally {
      await server.stop();
    }
  });
});

describe("health and readiness", () => {
  let dir: string;
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), "mds-ready-"));
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  test("/readyz is 503 while the config loads, 200 once serving; /healthz is 200 throughout; both gone after stop", async () => {
    const fifo = join(dir, "config.fifo");
    expect(Bun.spawnSync(["mkfifo", fifo]).exitCode).toBe(0);
    const server = new MetadataServer({ configFile: fifo, serverConfig: { port: 0, metrics: { port: 0 } } });
    const starting = server.start();
    // The metrics listener is up before the config is read (the FIFO blocks until written).
    for (let i = 0; !server.metricsUrl && i < 50; i++) await Bun.sleep(10);
    const murl = server.metricsUrl!;
    const notReady = await fetch(`${murl}/readyz`);
    expect(notReady.status).toBe(503);
    expect(await notReady.text()).toBe("not ready: no config snapshot loaded yet\n");
    expect((await fetch(`${murl}/healthz`)).status).toBe(200);

    const writer = Bun.spawn(["sh", "-c", `cat "$0" > "$1"`, join(import.meta.dir, "..", "..", "config.json"), fifo]);
    await starting;
    await writer.exited;
    const ready = await fetch(`${murl}/readyz`);
    expect(ready.status).toBe(200);
    expect(await ready.text()).toBe("ready\n");
    expect((await fetch(`${murl}/healthz`)).status).toBe(200);

    await server.stop();
    await expect(fetch(`${murl}/healthz`)).rejects.toThrow();
  });

  test("other paths and methods on the metrics listener", async () => {
    const server = new MetadataServer({ serverConfig: { port: 0, metrics: { port: 0, path: "/custom" } } });
    await server.start();
    try {
      const murl = server.metricsUrl!;
      expect((await fetch(`${murl}/custom`)).status).toBe(200);
      expect((await fetch(`${murl}/metrics`)).status).toBe(404);
      expect((await fetch(`${murl}/custom`, { method: "POST" })).status).toBe(405);
    } finally {
      await server.stop();
    }
  });
});

describe("metrics off", () => {
  test("no listener, no-op hooks", async () => {
    const server = new MetadataServer({ serverConfig: { port: 0 } });
    await server.start();
    try {
      expect(server.metricsUrl).toBeUndefined();
      expect(() => {
        server.metrics.waiting.inc();
        server.metrics.waiting.dec();
        server.metrics.reloads.succeeded();
        server.metrics.reloads.failed();
      }).not.toThrow();
    } finally {
      await server.stop();
    }
  });

  test("the request path is left unwrapped: instrument returns the very same function without metrics or debug logs", () => {
    const fetchFn = (_r: Request) => new Response("x");
    const snapshot = () => new MetadataServer().snapshot;
    expect(instrument(fetchFn, { snapshot })).toBe(fetchFn);
    expect(instrument(fetchFn, { snapshot, log: createLogger("info", () => {}) })).toBe(fetchFn);
    expect(instrument(fetchFn, { snapshot, log: createLogger("debug", () => {}) })).not.toBe(fetchFn);
  });
});

describe("command line", () => {
  test("-metricsEnabled -metricsPort 0 -metricsPath /m serves the metrics there", async () => {
    const cli = runCli(["-port", ":0", "-metricsEnabled", "-metricsPort", "0", "-metricsPath", "/m"]);
    try {
      const url = await cliMetricsUrl(cli);
      expect(url).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/m$/);
      const m = await scrape(url.slice(0, -2), "/m");
      expect(sampleValue(m, "metadata_server_version", { version: VERSION })).toBe(1);
      expect((await fetch(url.replace(/\/m$/, "/readyz"))).status).toBe(200);
    } finally {
      expect(await cli.stop()).toBe(0);
    }
  });

  test("a busy metrics port: exit 1, saying which address", async () => {
    const busy = Bun.serve({ hostname: "127.0.0.1", port: 0, fetch: () => new Response() });
    try {
      const r = await runCliToExit(["-port", ":0", "-metricsEnabled", "-metricsPort", String(busy.port)]);
      expect(r.code).toBe(1);
      expect(r.stderr).toContain(`cannot listen for metrics on 127.0.0.1:${busy.port}: address already in use`);
    } finally {
      await busy.stop(true);
    }
  });

  test("-metricsPort without -metricsEnabled: warned, no listener", async () => {
    const cli = runCli(["-port", ":0", "-metricsPort", "0"]);
    try {
      await cli.waitFor(/metadata server listening/);
      expect(cli.stderr()).toContain("-metricsPort is ignored without -metricsEnabled");
      expect(cli.stderr()).not.toContain("metrics listening");
    } finally {
      await cli.stop();
    }
  });
});
