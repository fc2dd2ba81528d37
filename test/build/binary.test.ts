/**
 * The single executable as released: built by scripts/build.ts (same flags as `npm run build`, with test version
 * facts), started on a free port, answering real values; `-version` prints the baked-in facts.
 *
 * The binary is the one the distribution tests share (test/helpers/executable.ts), reused while its inputs are
 * unchanged.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createRemoteJWKSet, jwtVerify } from "jose";
import { hostExecutable, TEST_FACTS } from "../helpers/executable.ts";
import { makeServiceAccountKey, startFakeGoogle, type FakeGoogle } from "../fakes/google.ts";

const METADATA = { "Metadata-Flavor": "Google" };
const FACTS = TEST_FACTS;
let EXE = "";

async function buildOnce(): Promise<void> {
  EXE = await hostExecutable();
}

interface Running {
  url: string;
  log: () => string;
  get(path: string): Promise<Response>;
  stop(): Promise<number>;
}

/** Start the executable with `-port :0` in `cwd`; resolves with the URL it logs on stderr. */
async function serve(args: string[], cwd: string): Promise<Running> {
  const p = Bun.spawn([EXE, "-port", ":0", ...args], { cwd, env: { PATH: process.env.PATH ?? "" }, stdout: "pipe", stderr: "pipe" });
  const reader = p.stderr.getReader();
  const decoder = new TextDecoder();
  let log = "";
  const deadline = Date.now() + 10_000;
  while (Date.now() < deadline) {
    const { value, done } = await reader.read();
    if (done) throw new Error(`the executable exited (${await p.exited}) before listening:\n${log}`);
    log += decoder.decode(value, { stream: true });
    const m = /metadata server listening url=(http:\/\/127\.0\.0\.1:(\d+))(?:\s|$)/.exec(log);
    if (m) {
      expect(Number(m[2])).toBeGreaterThan(0);
      // Keep reading so the log stays complete and the pipe never fills.
      void (async () => {
        for (;;) {
          const r = await reader.read();
          if (r.done) return;
          log += decoder.decode(r.value, { stream: true });
        }
      })();
      const url = m[1]!;
      return {
        url,
        log: () => log,
        get: (path) => fetch(url + path, { headers: METADATA }),
        stop: async () => {
          p.kill("SIGTERM");
          return p.exited;
        },
      };
    }
  }
  p.kill("SIGKILL");
  throw new Error(`the executable did not log its URL within 10 s:\n${log}`);
}

const TOKEN = "/computeMetadata/v1/instance/service-accounts/default/token";
let cwd: string;

beforeAll(async () => {
  await buildOnce();
  // An empty working directory: no ./config.json, so the bundled config is served.
  cwd = mkdtempSync(join(tmpdir(), "gce-binary-"));
}, 120_000);
afterAll(() => rmSync(cwd, { recursive: true, force: true }));

describe("the compiled executable", () => {
  test("is a file of its own, executable", () => {
    const st = statSync(EXE);
    expect(st.isFile()).toBe(true);
    expect(st.mode & 0o111).not.toBe(0);
  });

  test("-version prints the version facts set at build time", async () => {
    const p = Bun.spawn([EXE, "-version"], { cwd, stdout: "pipe", stderr: "pipe" });
    const [out, code] = await Promise.all([new Response(p.stdout).text(), p.exited]);
    expect(code).toBe(0);
    expect(out).toBe(`Version: ${FACTS.version}\nDate: ${FACTS.date}\nCommit: ${FACTS.commit}\n`);
  });

  test("serves the bundled VM on the port it picked: project id, recursive instance, a token", async () => {
    const s = await serve([], cwd);
    try {
      expect(s.log()).toContain("serving the bundled default config");
      const id = await s.get("/computeMetadata/v1/project/project-id");
      expect(id.status).toBe(200);
      expect(id.headers.get("metadata-flavor")).toBe("Google");
      expect(await id.text()).toBe("example-project");

      const inst = (await (await s.get("/computeMetadata/v1/instance/?recursive=true")).json()) as { zone: string };
      expect(inst.zone).toBe("projects/123456789012/zones/us-central1-a");

      const r = await s.get(TOKEN);
      expect(r.status).toBe(200);
      expect(r.headers.get("content-type")).toBe("application/json");
      const tok = (await r.json()) as { access_token: string; expires_in: number; token_type: string };
      expect(tok.access_token).toStartWith("ya29.");
      expect(tok.expires_in).toBeGreaterThan(3500);
      expect(tok.expires_in).toBeLessThanOrEqual(3600);
      expect(tok.token_type).toBe("Bearer");
      // The cached token again, not a new one.
      expect(((await (await s.get(TOKEN)).json()) as { access_token: string }).access_token).toBe(tok.access_token);

      // Without the header: Google's 403 page.
      expect((await fetch(`${s.url}/computeMetadata/v1/project/project-id`)).status).toBe(403);
    } finally {
      expect(await s.stop()).toBe(0);
    }
  });

  test("a .env or bunfig.toml in its working directory changes nothing (no autoload, no preloaded code)", async () => {
    const dir = mkdtempSync(join(tmpdir(), "gce-exe-autoload-"));
    try {
      await Bun.write(join(dir, ".env"), "GOOGLE_PROJECT_ID=from-dotenv\nGOOGLE_ACCESS_TOKEN=ya29.from-dotenv\n");
      await Bun.write(join(dir, "bunfig.toml"), 'preload = ["./preload.ts"]\n');
      await Bun.write(join(dir, "preload.ts"), 'await Bun.write("preloaded", "yes");\n');
      const s = await serve([], dir);
      try {
        expect(await (await s.get("/computeMetadata/v1/project/project-id")).text()).toBe("example-project");
        const tok = (await (await s.get(TOKEN)).json()) as { access_token: string };
        expect(tok.access_token).not.toBe("ya29.from-dotenv");
      } finally {
        expect(await s.stop()).toBe(0);
      }
      expect(await Bun.file(join(dir, "preloaded")).exists()).toBe(false);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test("ID tokens (jose, loaded lazily inside the executable) verify against the served JWKS", async () => {
    const s = await serve([], cwd);
    try {
      const r = await s.get(
        "/computeMetadata/v1/instance/service-accounts/default/identity?audience=https://binary.example.com&format=full",
      );
      expect(r.status).toBe(200);
      const jwks = createRemoteJWKSet(new URL(`${s.url}/oauth2/v3/certs`));
      const { payload } = await jwtVerify(await r.text(), jwks, {
        audience: "https://binary.example.com",
        issuer: "https://accounts.google.com",
      });
      expect((payload.google as { compute_engine: { project_id: string } }).compute_engine.project_id).toBe("example-project");
    } finally {
      expect(await s.stop()).toBe(0);
    }
  });

  describe("with -serviceAccountFile (google-auth-library, loaded lazily inside the executable)", () => {
    let fake: FakeGoogle;
    beforeAll(async () => {
      fake = await startFakeGoogle();
    });
    afterAll(() => fake.stop());

    test("tokens come from the key's token_uri", async () => {
      const key = await makeServiceAccountKey(fake, {
        email: "binary-sa@example-project.iam.gserviceaccount.com",
        projectId: "example-project",
      });
      const s = await serve(["-serviceAccountFile", key.path], cwd);
      try {
        const tok = (await (await s.get(TOKEN)).json()) as { access_token: string };
        expect(fake.isIssuedAccessToken(tok.access_token)).toBe(true);
        expect(fake.lastAssertion?.payload.iss).toBe("binary-sa@example-project.iam.gserviceaccount.com");
      } finally {
        expect(await s.stop()).toBe(0);
      }
    });
  });
});
