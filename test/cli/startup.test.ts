/**
 * One-line start-up errors: whatever the operator gave that is wrong (config, key file, credential file, certificate,
 * TPM setting, control token) is the one line printed, with exit 1, and nothing is printed before it; bad flags exit
 * 2. The server checks everything it was given before it logs anything else.
 */
import { beforeAll, describe, expect, test } from "bun:test";
import { copyFileSync, mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { CERTS, ROOT, runCliToExit } from "../helpers/cli.ts";

let dir: string;
let good: string;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), "gce-md-startup-"));
  good = join(dir, "good.json");
  copyFileSync(join(ROOT, "config.json"), good);
});

const file = (name: string, text: string) => {
  const p = join(dir, name);
  writeFileSync(p, text);
  return p;
};

/** Exit code and the non-empty lines of standard error. */
async function startup(args: string[], env: Record<string, string> = {}) {
  const r = await runCliToExit(["-port", ":0", ...args], { env });
  return { code: r.code, lines: r.stderr.split("\n").filter((l) => l.trim() !== "") };
}

function expectOneLine(r: { code: number; lines: string[] }, text: string) {
  expect(r.lines).toEqual([expect.stringContaining(text)]);
  expect(r.lines[0]).toMatch(/^\S+Z ERROR /);
  expect(r.code).toBe(1);
}

describe("exactly one line and exit 1", () => {
  test("a truncated config", async () => {
    const cfg = file("truncated.json", readFileSync(good, "utf8").slice(0, 300));
    expectOneLine(await startup(["-configFile", cfg]), `${cfg}: invalid JSON at line`);
  });

  test("a config nested 10,000 deep", async () => {
    const deep = file("deep.json", `{"computeMetadata":{"v1":{"instance":${"[".repeat(10_000)}${"]".repeat(10_000)}}}}`);
    expectOneLine(await startup(["-configFile", deep]), "nested deeper than 100 levels");
  });

  test("a truncated config together with a bad key file: the config is the one line", async () => {
    const cfg = file("truncated2.json", '{"computeMetadata":{"v1":');
    const key = file("key-bad.json", "{not json");
    expectOneLine(await startup(["-configFile", cfg, "-serviceAccountFile", key]), `${cfg}: invalid JSON`);
  });

  test("a bad service account key file", async () => {
    const key = file("key.json", "{not json");
    expectOneLine(await startup(["-configFile", good, "-serviceAccountFile", key]), key);
  });

  test("a bad credential file for -impersonate and -federate", async () => {
    const adc = file("adc.json", '{"type":"nonsense"}');
    for (const mode of ["-impersonate", "-federate"]) {
      expectOneLine(await startup(["-configFile", good, mode], { GOOGLE_APPLICATION_CREDENTIALS: adc }), adc);
    }
  });

  test("a bad certificate", async () => {
    const cert = file("server.crt", "not a certificate");
    expectOneLine(
      await startup([
        "-configFile",
        good,
        "-usemTLS",
        "-rootCAmTLS",
        join(CERTS, "root.crt"),
        "-serverCert",
        cert,
        "-serverKey",
        join(CERTS, "server.key"),
      ]),
      `the server certificate (-serverCert) ${cert} holds no PEM certificate`,
    );
  });

  test("a bad TPM setting: -tpm without a handle or a key file", async () => {
    const r = await startup(["-configFile", good, "-tpm"]);
    expect(r.code).toBe(1);
    expect(r.lines).toHaveLength(1);
    expect(r.lines[0]).toMatch(/-persistentHandle|-keyfile/);
  });

  test("an unreadable control token file", async () => {
    expectOneLine(await startup(["-configFile", good, "-controlAPI", "-controlTokenFile", join(dir, "absent")]), "-controlTokenFile");
  });
});

describe("bad flags exit 2, with the reason first", () => {
  test("an unknown flag, a prototype-named flag, a bad boolean, a bad limit", async () => {
    for (const args of [["-nope"], ["-constructor", "x"], ["-usemTLS=constructor"], ["-maxGuestKeys", "0"], ["-maxWaiters", "-5"]]) {
      const r = await startup(args);
      expect(`${args.join(" ")} → ${r.code}`).toBe(`${args.join(" ")} → 2`);
      expect(r.lines[0]).not.toMatch(/ ERROR | INFO | WARN /);
    }
  });
});
