/**
 * `env`: the lines for each shell, and what they do for real clients: after `eval "$(gce_metadata_server env …)"`
 * in bash, Python's google-auth and Node's gcp-metadata find the server, even with GOOGLE_APPLICATION_CREDENTIALS
 * pointing at a key file beforehand.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { MetadataServer } from "../../src/index.ts";
import { tempDir } from "../dynamic/helpers.ts";
import { ROOT, runCliToExit } from "../helpers/cli.ts";

const FIXTURES = join(import.meta.dir, "..", "clients", "fixtures");
const env = (...args: string[]) => runCliToExit(["env", ...args]);

describe("the lines", () => {
  test("sh (the default), with the three variables, the detection switch and the unset", async () => {
    const out = await env("-url", "http://127.0.0.1:8080");
    expect(out.code).toBe(0);
    expect(out.stderr).toBe("");
    expect(out.stdout.split("\n")).toEqual([
      "# point Google's SDKs and gcloud at the metadata server at 127.0.0.1:8080",
      "export GCE_METADATA_HOST=127.0.0.1:8080",
      "export GCE_METADATA_IP=127.0.0.1:8080",
      "export GCE_METADATA_ROOT=127.0.0.1:8080",
      "# gcp-metadata (Node): the server is there, skip the probe",
      "export METADATA_SERVER_DETECTION=assume-present",
      "# GOOGLE_APPLICATION_CREDENTIALS wins over the metadata server in every SDK (gcloud's ADC file too: run gce_metadata_server doctor)",
      "unset GOOGLE_APPLICATION_CREDENTIALS",
      "",
    ]);
    expect((await env()).stdout).toBe(out.stdout);
  });

  test("fish, powershell and cmd", async () => {
    const lines = async (shell: string) =>
      (await env("-shell", shell, "-url", "127.0.0.1:9000")).stdout.split("\n").filter((l) => l && !/^(#|REM )/.test(l));
    expect(await lines("fish")).toEqual([
      "set -gx GCE_METADATA_HOST 127.0.0.1:9000",
      "set -gx GCE_METADATA_IP 127.0.0.1:9000",
      "set -gx GCE_METADATA_ROOT 127.0.0.1:9000",
      "set -gx METADATA_SERVER_DETECTION assume-present",
      "set -e GOOGLE_APPLICATION_CREDENTIALS",
    ]);
    expect(await lines("powershell")).toEqual([
      '$env:GCE_METADATA_HOST = "127.0.0.1:9000"',
      '$env:GCE_METADATA_IP = "127.0.0.1:9000"',
      '$env:GCE_METADATA_ROOT = "127.0.0.1:9000"',
      '$env:METADATA_SERVER_DETECTION = "assume-present"',
      "Remove-Item Env:GOOGLE_APPLICATION_CREDENTIALS -ErrorAction SilentlyContinue",
    ]);
    expect(await lines("cmd")).toEqual([
      "set GCE_METADATA_HOST=127.0.0.1:9000",
      "set GCE_METADATA_IP=127.0.0.1:9000",
      "set GCE_METADATA_ROOT=127.0.0.1:9000",
      "set METADATA_SERVER_DETECTION=assume-present",
      "set GOOGLE_APPLICATION_CREDENTIALS=",
    ]);
    expect((await env("-shell", "cmd")).stdout).toContain("REM point Google's SDKs");
  });

  test("an IPv6 address is quoted for sh, where brackets are a glob", async () => {
    expect((await env("-url", "http://[::1]:8080")).stdout).toContain("export GCE_METADATA_HOST='[::1]:8080'\n");
  });

  test("bad values exit 2 with what to do", async () => {
    const shell = await env("-shell", "zsh");
    expect(shell.code).toBe(2);
    expect(shell.stderr).toBe('invalid -shell "zsh": use sh, fish, powershell or cmd\n');
    const https = await env("-url", "https://127.0.0.1:8443");
    expect(https.code).toBe(2);
    expect(https.stderr).toContain("clients reach GCE_METADATA_HOST over plain HTTP");
    const path = await env("-url", "http://127.0.0.1:8080/computeMetadata/v1");
    expect(path.code).toBe(2);
    expect((await env("-url")).code).toBe(2);
  });
});

describe("what the lines do for real clients", () => {
  let server: MetadataServer;
  const dir = tempDir("env-");
  beforeAll(async () => {
    server = new MetadataServer({ serverConfig: { port: 0 } });
    await server.start();
    writeFileSync(join(dir, "key.json"), JSON.stringify({ type: "service_account", client_email: "x@y", private_key: "not a key" }));
  });
  afterAll(async () => {
    await server.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  test('after eval "$(gce_metadata_server env -url …)", google-auth (Python) and gcp-metadata (Node) use the server', async () => {
    const cli = `${JSON.stringify(process.execPath)} ${JSON.stringify(join(ROOT, "src", "cli.ts"))}`;
    const node = `${JSON.stringify(process.execPath)} -e 'const g = require("gcp-metadata"); g.isAvailable().then(async (a) => console.log(JSON.stringify({ available: a, email: await g.instance("service-accounts/default/email") })))'`;
    const script = `set -e
eval "$(${cli} env -url ${server.url})"
test -z "\${GOOGLE_APPLICATION_CREDENTIALS+set}"
/usr/bin/python3 ${JSON.stringify(join(FIXTURES, "google_auth_py.py"))}
${node}`;
    const p = Bun.spawn(["bash", "-c", script], {
      cwd: ROOT,
      env: {
        PATH: process.env.PATH ?? "/usr/bin:/bin",
        HOME: dir,
        CLOUDSDK_CONFIG: join(dir, "gcloud"),
        // Would win over the metadata server if the lines did not unset it.
        GOOGLE_APPLICATION_CREDENTIALS: join(dir, "key.json"),
      },
      stdout: "pipe",
      stderr: "pipe",
    });
    const [out, err, code] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text(), p.exited]);
    if (code !== 0) throw new Error(`bash exited ${code} (the test command installs python3-google-auth): ${err}`);
    const [python, nodeOut] = out
      .trim()
      .split("\n")
      .map((l) => JSON.parse(l));
    expect(python).toMatchObject({
      ping: true,
      projectId: "example-project",
      defaultType: "google.auth.compute_engine.credentials.Credentials",
      email: "123456789012-compute@developer.gserviceaccount.com",
    });
    expect(python.token).toStartWith("ya29.");
    expect(nodeOut).toEqual({ available: true, email: "123456789012-compute@developer.gserviceaccount.com" });
  }, 60_000);
});
