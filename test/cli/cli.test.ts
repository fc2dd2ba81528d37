/** The command line as a user runs it: Go flag syntax, defaults, clear errors and exit codes. */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseFlags, parseGoInt } from "../../src/cli/flags.ts";
import { makeServiceAccountKey, startFakeGoogle, type FakeGoogle } from "../fakes/google.ts";
import { runCliToExit, serveCli } from "../helpers/cli.ts";

const ROOT = join(import.meta.dir, "../..");
const dir = mkdtempSync(join(tmpdir(), "gce-cli-"));

/** Run the CLI to completion (for flags that exit). */
const run = (args: string[], env: Record<string, string> = {}, cwd = dir) => runCliToExit(args, { env: { HOME: dir, ...env }, cwd });

/** Start the CLI as a server on a free port; resolves once it logs its URL. */
const serve = (args: string[], env: Record<string, string> = {}, cwd = dir) => serveCli(args, { env: { HOME: dir, ...env }, cwd });

describe("flag parsing (Go syntax)", () => {
  test("every form Go accepts", () => {
    for (const argv of [
      ["-port", ":9", "-interface", "0.0.0.0"],
      ["-port=:9", "-interface=0.0.0.0"],
      ["--port", ":9", "--interface", "0.0.0.0"],
      ["--port=:9", "--interface=0.0.0.0"],
    ]) {
      const f = parseFlags(argv);
      expect([f.port, f.interface]).toEqual([":9", "0.0.0.0"]);
    }
    expect(parseFlags(["-tpm"]).tpm).toBe(true);
    expect(parseFlags(["-tpm=false"]).tpm).toBe(false);
    expect(parseFlags(["--logtostderr", "-v", "10"]).v).toBe(10);
    expect(parseFlags(["-persistentHandle", "0x81010002"]).persistentHandle).toBe(0x81010002);
    expect(parseFlags(["-configFile", "-"]).configFile).toBe("-");
  });

  test("defaults are the Go emulator's", () => {
    const f = parseFlags([]);
    expect([f.configFile, f.interface, f.port, f.metricsPort, f.metricsPath, f["tpm-path"], f.rootCAmTLS]).toEqual([
      "config.json",
      "127.0.0.1",
      ":8080",
      "9000",
      "/metrics",
      "/dev/tpmrm0",
      "certs/root.crt",
    ]);
  });

  test("Go's integer syntax", () => {
    expect([parseGoInt("10"), parseGoInt("0x1F"), parseGoInt("010"), parseGoInt("0b11"), parseGoInt("1_000"), parseGoInt("-3")]).toEqual([
      10, 31, 8, 3, 1000, -3,
    ]);
    expect(parseGoInt("12a")).toBeUndefined();
  });
});

describe("exits", () => {
  test("-version prints version, date and commit, exit 0", async () => {
    const r = await run(["-version"]);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^Version: \S+\nDate: \S+\nCommit: \S+\n$/);
  });

  test("-h prints usage, exit 0", async () => {
    const r = await run(["-h"]);
    expect(r.code).toBe(0);
    expect(r.stderr).toContain("-configFile string");
  });

  test("an unknown flag prints Go's message and usage, exit 2", async () => {
    const r = await run(["-nosuchflag"]);
    expect(r.code).toBe(2);
    expect(r.stderr).toStartWith("flag provided but not defined: -nosuchflag\nUsage of gce_metadata_server:");
  });

  test("a value after a boolean flag is explained, exit 2", async () => {
    const r = await run(["-logtostderr", "true"]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain("-logtostderr is a boolean flag: write -logtostderr=true");
  });

  test("a flag missing its value, exit 2", async () => {
    const r = await run(["-port"]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain("flag needs an argument: -port");
  });

  test("a missing config file named on the command line, exit 1 naming it", async () => {
    const r = await run(["-configFile", join(dir, "absent.json")]);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(`${join(dir, "absent.json")}: cannot read the config file (no such file)`);
  });

  test("malformed config: one line naming the file and the position, exit 1", async () => {
    const bad = join(dir, "bad.json");
    writeFileSync(bad, '{\n  "computeMetadata": {\n    "v1": { "project": { "projectId": "x", } }\n  }\n}\n');
    const r = await run(["-configFile", bad]);
    expect(r.code).toBe(1);
    const errors = r.stderr.split("\n").filter((l) => l.includes("ERROR"));
    expect(errors).toHaveLength(1);
    expect(errors[0]).toContain(`${bad}: invalid JSON at line 3, column 44: trailing comma before '}'`);
  });

  test("wrong shape: the JSON path at fault, exit 1", async () => {
    const bad = join(dir, "shape.json");
    writeFileSync(
      bad,
      JSON.stringify({
        computeMetadata: { v1: { instance: { serviceAccounts: { default: { email: "a@b" } }, mtu: 1, disks: [{ index: "zero" }] } } },
      }),
    );
    const r = await run(["-configFile", bad]);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('computeMetadata.v1.instance.disks[0].index: expected an integer, found the string "zero"');
  });

  test("a config without a default service account is refused, as by the Go emulator", async () => {
    const bad = join(dir, "nodefault.json");
    writeFileSync(bad, JSON.stringify({ computeMetadata: { v1: { project: { projectId: "p" } } } }));
    const r = await run(["-configFile", bad]);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain("the config must define a default service account");
  });

  test("a bad service account key file, exit 1 saying what is wrong", async () => {
    const key = join(dir, "key.json");
    writeFileSync(key, JSON.stringify({ type: "authorized_user" }));
    const r = await run(["-serviceAccountFile", key]);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(`${key}: "type" is "authorized_user", expected "service_account"`);
  });

  test("a bad -issuerKey file stops start-up, exit 1", async () => {
    const key = join(dir, "issuer.pem");
    writeFileSync(key, "garbage");
    const r = await run(["-issuerKey", key, "-port", ":0"]);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(`${key}: not an RSA private key in PKCS#8 PEM`);
  });

  test("an invalid port, exit 2", async () => {
    const r = await run(["-port", ":99999"]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('invalid port ":99999"');
  });
});

describe("serving", () => {
  let fake: FakeGoogle;
  beforeAll(async () => {
    fake = await startFakeGoogle();
  });
  afterAll(() => fake.stop());

  test("no config in the working directory: the bundled default and the emulated issuer, with one warning", async () => {
    const s = await serve([]);
    try {
      expect(await (await s.get("/computeMetadata/v1/project/project-id")).text()).toBe("example-project");
      const tok = (await (await s.get("/computeMetadata/v1/instance/service-accounts/default/token")).json()) as any;
      expect(tok.access_token).toStartWith("ya29.");
      expect(s.log().match(/not valid at Google/g)).toHaveLength(1);
    } finally {
      expect(await s.stop()).toBe(0);
    }
  });

  test("-configFile and the Go emulator's environment overrides", async () => {
    const cfg = join(dir, "config.json");
    writeFileSync(cfg, await Bun.file(join(ROOT, "config.json")).text());
    const s = await serve(["-configFile", cfg], {
      GOOGLE_PROJECT_ID: "env-project",
      GOOGLE_NUMERIC_PROJECT_ID: "42",
      GOOGLE_SERVICE_ACCOUNT: "env-sa@env-project.iam.gserviceaccount.com",
      GOOGLE_ACCESS_TOKEN: "ya29.from-the-environment",
      GOOGLE_ID_TOKEN: "header.payload.signature",
    });
    try {
      expect(await (await s.get("/computeMetadata/v1/project/project-id")).text()).toBe("env-project");
      expect(await (await s.get("/computeMetadata/v1/project/numeric-project-id")).text()).toBe("42");
      expect(await (await s.get("/computeMetadata/v1/instance/service-accounts/default/email")).text()).toBe(
        "env-sa@env-project.iam.gserviceaccount.com",
      );
      const tok = (await (await s.get("/computeMetadata/v1/instance/service-accounts/default/token")).json()) as any;
      expect(tok).toMatchObject({ access_token: "ya29.from-the-environment", token_type: "Bearer" });
      expect(await (await s.get("/computeMetadata/v1/instance/service-accounts/default/identity?audience=x")).text()).toBe(
        "header.payload.signature",
      );
      expect(s.log()).not.toContain("ya29.from-the-environment");
    } finally {
      await s.stop();
    }
  });

  test("-serviceAccountFile: tokens from the key's token_uri", async () => {
    const key = await makeServiceAccountKey(fake, {
      email: "cli-sa@example-project.iam.gserviceaccount.com",
      projectId: "example-project",
    });
    const s = await serve(["-serviceAccountFile", key.path, "--v=1"]);
    try {
      const tok = (await (await s.get("/computeMetadata/v1/instance/service-accounts/default/token")).json()) as any;
      expect(fake.isIssuedAccessToken(tok.access_token)).toBe(true);
      expect(fake.lastAssertion?.payload.iss).toBe("cli-sa@example-project.iam.gserviceaccount.com");
      expect(s.log()).not.toContain(tok.access_token);
    } finally {
      await s.stop();
    }
  });

  test("a port already in use: exit 1 naming the address", async () => {
    const s = await serve([]);
    try {
      const port = new URL(s.url).port;
      const r = await run(["-port", `:${port}`]);
      expect(r.code).toBe(1);
      expect(r.stderr).toContain(`cannot listen on 127.0.0.1:${port}`);
    } finally {
      await s.stop();
    }
  });
});
