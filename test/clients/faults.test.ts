/**
 * What each SDK really does when the metadata server fails, run unchanged against fault rules and the virtual clock:
 * gcp-metadata and google-auth-library (npm, under Bun), Python's google-auth and Go's compute/metadata and
 * oauth2/google (Debian's packages). Each scenario runs in a fresh process (test/clients/fixtures/faults_*), so no
 * library cache carries over. docs/faults.md tabulates these results; keep the two in step.
 *
 * Requests are counted with the rules themselves: a rule without status or delay lets the request through and
 * counts it, so "hits of the fault rule + hits of the counter" is every request the library sent.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type FaultSpec, MetadataServer } from "../../src/index.ts";

const FIXTURES = join(import.meta.dir, "fixtures");
const TOKEN = "instance/service-accounts/*/token";
const scratch: string[] = [];
const tempDir = (prefix: string) => {
  const d = mkdtempSync(join(tmpdir(), prefix));
  scratch.push(d);
  return d;
};

type Lang = "node" | "python" | "go";
let server: MetadataServer;
/** -tokenLifetime 2m */
let short: MetadataServer;
let goBinary: string;
let home: string;

interface Call {
  ok: boolean;
  ms: number;
  value?: string;
  error?: { name?: string; type?: string; message: string; code?: number | string; status?: number };
}
interface Run {
  calls: Call[];
  warnings?: string[];
  valid?: boolean;
  expiresInMs?: number;
}

beforeAll(async () => {
  [server, short] = [
    new MetadataServer({ serverConfig: { port: 0 }, controlApi: true }),
    new MetadataServer({ serverConfig: { port: 0 }, controlApi: true, tokenLifetime: "2m" }),
  ];
  await Promise.all([server.start(), short.start()]);
  home = tempDir("faults-clients-");
  if (!Bun.which("go")) throw new Error("go is not installed (the test command installs golang-go)");
  const gopath = tempDir("gopath-");
  goBinary = join(gopath, "faults_go");
  const build = Bun.spawn(["go", "build", "-o", goBinary, join(FIXTURES, "faults_go.go")], {
    env: {
      PATH: process.env.PATH ?? "/usr/bin:/bin",
      HOME: home,
      GOPATH: `/usr/share/gocode:${gopath}`,
      GO111MODULE: "off",
      GOCACHE: join(gopath, "cache"),
      GOFLAGS: "",
    },
    stdout: "pipe",
    stderr: "pipe",
  });
  if ((await build.exited) !== 0) {
    throw new Error(
      `go build of the fixture failed (the test command installs golang-google-cloud-compute-metadata-dev and golang-golang-x-oauth2-google-dev): ${await new Response(build.stderr).text()}`,
    );
  }
}, 120_000);

afterAll(async () => {
  await Promise.all([server.stop(), short.stop()]);
  for (const d of scratch) {
    Bun.spawnSync(["chmod", "-R", "u+w", d]);
    rmSync(d, { recursive: true, force: true });
  }
});

/** Fresh state on `s` (no rules, real time, no cached tokens), then these rules; returns their ids. */
function prepare(s: MetadataServer, rules: FaultSpec[]): string[] {
  s.faults.clear();
  s.clock.reset();
  s.state.tokens.clear();
  return rules.map((r) => s.faults.add(r).id);
}

const hits = (s: MetadataServer, id: string) => s.faults.list().find((r) => r.id === id)!.hits;

async function run(lang: Lang, scenario: string, arg?: string, s: MetadataServer = server): Promise<Run> {
  const cmd = {
    node: [process.execPath, join(FIXTURES, "faults_node.ts")],
    python: ["/usr/bin/python3", join(FIXTURES, "faults_py.py")],
    go: [goBinary],
  }[lang];
  const p = Bun.spawn([...cmd, scenario, ...(arg ? [arg] : [])], {
    env: {
      PATH: process.env.PATH ?? "/usr/bin:/bin",
      HOME: home,
      GCE_METADATA_HOST: s.host,
      GCE_METADATA_IP: s.host,
      GCE_METADATA_ROOT: s.host,
      // An empty gcloud configuration, so no credentials of this machine are found first.
      CLOUDSDK_CONFIG: join(home, "gcloud"),
    },
    cwd: join(import.meta.dir, "..", ".."),
    stdout: "pipe",
    stderr: "pipe",
  });
  const [stdout, stderr, code] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text(), p.exited]);
  if (code !== 0 || !stdout.trim()) throw new Error(`${lang} ${scenario} exited ${code}: ${stderr}`);
  return JSON.parse(stdout) as Run;
}

const PY_NAME = "google.auth.exceptions.";

describe("503 twice on the token", () => {
  const rules = (): FaultSpec[] => [{ path: TOKEN, status: 503, times: 2 }, { path: TOKEN }];

  for (const [lang, scenario, name] of [
    ["node", "token", "gcp-metadata"],
    ["node", "auth-token", "google-auth-library"],
  ] as const) {
    test(`${name} retries with backoff (100 ms, 500 ms) and gets the token on the third request`, async () => {
      const [fault, counter] = prepare(server, rules());
      const { calls } = await run(lang, scenario);
      expect(calls[0]).toMatchObject({ ok: true, value: expect.stringMatching(/^ya29\./) });
      expect(calls[0]!.ms).toBeGreaterThanOrEqual(550);
      expect([hits(server, fault!), hits(server, counter!)]).toEqual([2, 1]);
    });
  }

  test("Python google-auth does not retry: RefreshError with the status, after one request", async () => {
    const [fault, counter] = prepare(server, rules());
    const { calls } = await run("python", "token");
    expect(calls[0]).toMatchObject({ ok: false, error: { name: `${PY_NAME}RefreshError` } });
    expect(calls[0]!.error!.message).toContain("Status: 503");
    expect([hits(server, fault!), hits(server, counter!)]).toEqual([1, 0]);
  });

  for (const [scenario, name] of [
    ["token", "compute/metadata Get"],
    ["auth-token", "oauth2/google ComputeTokenSource"],
  ] as const) {
    test(`Go ${name} does not retry: *metadata.Error with code 503, after one request`, async () => {
      const [fault, counter] = prepare(server, rules());
      const { calls } = await run("go", scenario);
      expect(calls[0]).toMatchObject({ ok: false, error: { type: "*metadata.Error", code: 503, message: "compute: Received 503 ``" } });
      expect([hits(server, fault!), hits(server, counter!)]).toEqual([1, 0]);
    });
  }
});

describe("429 with Retry-After", () => {
  // Retry-After: 10, so a retry that honoured it could not finish within the bound below.
  const rules = (): FaultSpec[] => [{ path: TOKEN, status: 429, headers: { "Retry-After": "10" }, times: 1 }, { path: TOKEN }];

  for (const [scenario, name] of [
    ["token", "gcp-metadata"],
    ["auth-token", "google-auth-library"],
  ] as const) {
    test(`${name} retries after 100 ms, ignoring Retry-After`, async () => {
      const [fault, counter] = prepare(server, rules());
      const { calls } = await run("node", scenario);
      expect(calls[0]).toMatchObject({ ok: true, value: expect.stringMatching(/^ya29\./) });
      expect(calls[0]!.ms).toBeGreaterThanOrEqual(90);
      expect(calls[0]!.ms).toBeLessThan(5000);
      expect([hits(server, fault!), hits(server, counter!)]).toEqual([1, 1]);
    });
  }

  test("Python google-auth fails at once: RefreshError with status 429", async () => {
    const [fault, counter] = prepare(server, rules());
    const { calls } = await run("python", "token");
    expect(calls[0]).toMatchObject({ ok: false, error: { name: `${PY_NAME}RefreshError` } });
    expect(calls[0]!.error!.message).toContain("Status: 429");
    expect([hits(server, fault!), hits(server, counter!)]).toEqual([1, 0]);
  });

  for (const scenario of ["token", "auth-token"] as const) {
    test(`Go ${scenario === "token" ? "compute/metadata" : "oauth2/google"} fails at once: *metadata.Error code 429`, async () => {
      const [fault, counter] = prepare(server, rules());
      const { calls } = await run("go", scenario);
      expect(calls[0]).toMatchObject({ ok: false, error: { type: "*metadata.Error", code: 429 } });
      expect([hits(server, fault!), hits(server, counter!)]).toEqual([1, 0]);
    });
  }
});

describe("a reset (connection closed with no answer)", () => {
  const rules = (): FaultSpec[] => [{ path: TOKEN, action: "reset", times: 1 }, { path: TOKEN }];

  for (const [scenario, name] of [
    ["token", "gcp-metadata"],
    ["auth-token", "google-auth-library"],
  ] as const) {
    test(`${name} retries it as a request without a response (after 100 ms) and gets the token`, async () => {
      const [fault, counter] = prepare(server, rules());
      const { calls } = await run("node", scenario);
      expect(calls[0]).toMatchObject({ ok: true, value: expect.stringMatching(/^ya29\./) });
      expect(calls[0]!.ms).toBeGreaterThanOrEqual(90);
      expect([hits(server, fault!), hits(server, counter!)]).toEqual([1, 1]);
    });
  }

  test("Python google-auth: RefreshError wrapping ConnectionResetError, no retry", async () => {
    const [fault, counter] = prepare(server, rules());
    const { calls } = await run("python", "token");
    expect(calls[0]).toMatchObject({ ok: false, error: { name: `${PY_NAME}RefreshError` } });
    expect(calls[0]!.error!.message).toMatch(/Connection aborted.*ConnectionResetError/);
    expect([hits(server, fault!), hits(server, counter!)]).toEqual([1, 0]);
  });

  for (const scenario of ["token", "auth-token"] as const) {
    test(`Go ${scenario === "token" ? "compute/metadata" : "oauth2/google"}: *url.Error "connection reset by peer", no retry`, async () => {
      const [fault, counter] = prepare(server, rules());
      const { calls } = await run("go", scenario);
      expect(calls[0]).toMatchObject({ ok: false, error: { type: "*url.Error" } });
      expect(calls[0]!.error!.message).toMatch(/token": read tcp .*: read: connection reset by peer/);
      expect([hits(server, fault!), hits(server, counter!)]).toEqual([1, 0]);
    });
  }
});

describe("a delay on the detection probe, either side of the libraries' 3 s probe timeout", () => {
  // Node probes …/instance, Python / (GCE_METADATA_IP). A delay of exactly 3 s races the client's own 3 s timer
  // (which answer wins depends on scheduling), so each library is shown at 2.5 s and at 3.5 s.
  const rules = (delay: string): FaultSpec[] => [
    { path: "instance", delay },
    { path: "/", delay },
  ];

  test("gcp-metadata: isAvailable() waits out 2.5 s and says true; at 3.5 s it gives up at 3 s, says false and warns", async () => {
    const [node, root] = prepare(server, rules("2500ms"));
    const late = await run("node", "detect");
    expect(late.calls[0]).toMatchObject({ ok: true, value: "true" });
    expect(late.calls[0]!.ms).toBeGreaterThanOrEqual(2400);
    expect([hits(server, node!), hits(server, root!)]).toEqual([1, 0]);
    prepare(server, rules("3500ms"));
    const gone = await run("node", "detect");
    expect(gone.calls[0]).toMatchObject({ ok: true, value: "false" });
    expect(gone.calls[0]!.ms).toBeGreaterThanOrEqual(2900);
    expect(gone.warnings).toEqual(["MetadataLookupWarning: received unexpected error = The operation timed out. code = ETIMEDOUT"]);
  });

  test("google-auth-library: at 3.5 s Application Default Credentials fail after 3 s (no metadata server found)", async () => {
    prepare(server, rules("3500ms"));
    const { calls } = await run("node", "auth-detect");
    expect(calls[0]).toMatchObject({ ok: false, error: { message: expect.stringMatching(/^Could not load the default credentials/) } });
    expect(calls[0]!.ms).toBeGreaterThanOrEqual(2900);
  });

  test("Python google-auth: google.auth.default() waits out 2.5 s; at 3.5 s its probe of / times out at 3 s: DefaultCredentialsError", async () => {
    const [node, root] = prepare(server, rules("2500ms"));
    const late = await run("python", "auth-detect");
    expect(late.calls[0]).toMatchObject({ ok: true, value: expect.stringMatching(/^ya29\./) });
    expect(late.calls[0]!.ms).toBeGreaterThanOrEqual(2400);
    expect([hits(server, node!), hits(server, root!)]).toEqual([0, 1]);
    prepare(server, rules("3500ms"));
    const gone = await run("python", "auth-detect");
    expect(gone.calls[0]).toMatchObject({ ok: false, error: { name: `${PY_NAME}DefaultCredentialsError` } });
    expect(gone.calls[0]!.ms).toBeGreaterThanOrEqual(2900);
  });

  test("Go: with GCE_METADATA_HOST set there is no probe; OnGCE() is true at once and ADC gets a token", async () => {
    const [node, root] = prepare(server, rules("3500ms"));
    const detect = await run("go", "detect");
    expect(detect.calls[0]).toMatchObject({ ok: true, value: "true" });
    const adc = await run("go", "auth-detect");
    expect(adc.calls[0]).toMatchObject({ ok: true, value: expect.stringMatching(/^ya29\./) });
    expect(adc.calls[0]!.ms).toBeLessThan(2500);
    expect([hits(server, node!), hits(server, root!)]).toEqual([0, 0]);
  });
});

describe('a server booting for 5 s (every path 503, as -fault "path=*,status=503,for=5s")', () => {
  const rules = (): FaultSpec[] => [{ path: "*", status: 503, for: "5s" }];

  test("Node: detection retries 3 times (~2.1 s), says no, and remembers it for the process; a new GoogleAuth after resetIsAvailableCache() works", async () => {
    prepare(server, rules());
    const { calls, warnings } = await run("node", "boot", "5000");
    const [probe, auth, probeLater, authLater, probeReset, authNew] = calls;
    expect(probe).toMatchObject({ ok: true, value: "false" });
    expect(probe!.ms).toBeGreaterThanOrEqual(2000);
    expect(warnings).toEqual(["MetadataLookupWarning: received unexpected error =  code = 503"]);
    expect(auth).toMatchObject({ ok: false, error: { message: expect.stringMatching(/^Could not load the default credentials/) } });
    // After the boot: still "not on GCE", from the caches of gcp-metadata and of the GoogleAuth object.
    expect(probeLater).toMatchObject({ ok: true, value: "false" });
    expect(authLater).toMatchObject({ ok: false, error: { message: expect.stringMatching(/^Could not load the default credentials/) } });
    expect(probeReset).toMatchObject({ ok: true, value: "true" });
    expect(authNew).toMatchObject({ ok: true, value: expect.stringMatching(/^ya29\./) });
  }, 20_000);

  test("Python google-auth: fails at once (the probe needs a 200), and works once the server is up: nothing is cached", async () => {
    prepare(server, rules());
    const { calls } = await run("python", "boot", "5000");
    const [adc, refresh, adcLater, refreshLater] = calls;
    expect(adc).toMatchObject({ ok: false, error: { name: `${PY_NAME}DefaultCredentialsError` } });
    expect(adc!.ms).toBeLessThan(2500);
    expect(refresh).toMatchObject({ ok: false, error: { name: `${PY_NAME}RefreshError` } });
    expect(refresh!.error!.message).toContain("Status: 503");
    expect(adcLater).toMatchObject({ ok: true, value: "Credentials" });
    expect(refreshLater).toMatchObject({ ok: true, value: expect.stringMatching(/^ya29\./) });
  }, 20_000);

  test("Go: compute/metadata and oauth2/google fail at once with code 503 and work once it is up (errors are not cached)", async () => {
    prepare(server, rules());
    const { calls } = await run("go", "boot", "5000");
    const [project, token, projectLater, tokenLater] = calls;
    expect(project).toMatchObject({ ok: false, error: { type: "*metadata.Error", code: 503 } });
    expect(token).toMatchObject({ ok: false, error: { type: "*metadata.Error", code: 503 } });
    expect(projectLater).toMatchObject({ ok: true, value: "example-project" });
    expect(tokenLater).toMatchObject({ ok: true, value: expect.stringMatching(/^ya29\./) });
  }, 20_000);
});

describe("a short -tokenLifetime (2m): who asks the server how often", () => {
  const rules = (): FaultSpec[] => [{ path: TOKEN }];
  const sameToken = (calls: Call[]) => {
    expect(calls.every((c) => c.ok)).toBe(true);
    expect(new Set(calls.map((c) => c.value)).size).toBe(1);
  };

  test("gcp-metadata and Go compute/metadata keep no token: three calls are three requests (the server's cache answers)", async () => {
    for (const lang of ["node", "go"] as const) {
      const [counter] = prepare(short, rules());
      const { calls } = await run(lang, "metadata-reuse", undefined, short);
      sameToken(calls);
      expect(hits(short, counter!)).toBe(3);
    }
  });

  test("google-auth-library refreshes on every use: its 5-minute eager-refresh margin exceeds the lifetime", async () => {
    const [counter] = prepare(short, rules());
    const { calls, expiresInMs } = await run("node", "reuse", undefined, short);
    sameToken(calls);
    expect(hits(short, counter!)).toBe(3);
    expect(expiresInMs).toBeLessThanOrEqual(120_000);
    expect(expiresInMs).toBeGreaterThan(100_000);
  });

  test("Python google-auth: credentials are never valid (5-minute clock skew > lifetime), so it refreshes before every request", async () => {
    const [counter] = prepare(short, rules());
    const { calls, valid } = await run("python", "reuse", undefined, short);
    sameToken(calls);
    expect(valid).toBe(false);
    expect(hits(short, counter!)).toBe(3);
  });

  test("Go oauth2/google reuses the token until 10 s before its expiry: three calls, one request", async () => {
    const [counter] = prepare(short, rules());
    const { calls, expiresInMs } = await run("go", "reuse", undefined, short);
    sameToken(calls);
    expect(hits(short, counter!)).toBe(1);
    expect(expiresInMs).toBeGreaterThan(100_000);
  });
});

describe("the server's clock advanced past the token's expiry (61 m)", () => {
  const rules = (): FaultSpec[] => [{ path: TOKEN }];

  test("libraries without a token cache get the server's new token at once", async () => {
    for (const lang of ["node", "go"] as const) {
      const [counter] = prepare(server, rules());
      const { calls } = await run(lang, "metadata-clock", "61m");
      expect(calls.every((c) => c.ok)).toBe(true);
      expect(calls[1]!.value).not.toBe(calls[0]!.value);
      expect(hits(server, counter!)).toBe(2);
    }
  });

  for (const lang of ["node", "python", "go"] as const) {
    const name = { node: "google-auth-library", python: "Python google-auth", go: "Go oauth2/google" }[lang];
    test(`${name} keeps its token (expiry is judged on the client's clock); new credentials get the new one`, async () => {
      const [counter] = prepare(server, rules());
      const { calls } = await run(lang, "clock", "61m");
      const [first, again, fresh] = calls;
      expect(calls.every((c) => c.ok)).toBe(true);
      expect(again!.value).toBe(first!.value);
      expect(fresh!.value).not.toBe(first!.value);
      expect(hits(server, counter!)).toBe(2);
      // The server re-minted on its own clock: the new token has a full hour.
      const t = (await (
        await fetch(`${server.url}/computeMetadata/v1/instance/service-accounts/default/token`, {
          headers: { "Metadata-Flavor": "Google" },
        })
      ).json()) as { access_token: string; expires_in: number };
      expect(t.access_token).toBe(fresh!.value!);
      expect(t.expires_in).toBeGreaterThanOrEqual(3590);
    });
  }
});
