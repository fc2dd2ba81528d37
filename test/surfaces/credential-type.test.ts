/**
 * The `credential_type` metric names the source actually serving, in every credential mode, with the environment's
 * static tokens laid over it exactly once (one composition root: `static+emulated`, never `static+static+…`).
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type CredentialSpec, MetadataServer, type MetadataServerOptions } from "../../src/index.ts";
import { type FakeGoogle, makeExternalAccount, makeServiceAccountKey, startFakeGoogle } from "../fakes/google.ts";
import { runCli } from "../helpers/cli.ts";
import { requireTpmTools, startSwtpm, type Swtpm } from "../helpers/swtpm.ts";
import { Tpm2Tools } from "../helpers/tpm2-tools.ts";
import { parsePrometheusText } from "./prom-text.ts";

const HANDLE = 0x81008011;
let fake: FakeGoogle;
let tpm: Swtpm;
let dir: string;
let keyFile: string;
let externalAccount: string;

beforeAll(async () => {
  requireTpmTools();
  [fake, tpm] = await Promise.all([startFakeGoogle(), startSwtpm()]);
  dir = mkdtempSync(join(tmpdir(), "credential-type-"));
  keyFile = (await makeServiceAccountKey(fake)).path;
  const tools = await Tpm2Tools.on(tpm);
  await tools.persistKey(await tools.generateRsaKey("sa"), HANDLE);
  externalAccount = await makeExternalAccount(fake, dir);
}, 120_000);

afterAll(async () => {
  await Promise.all([fake?.stop(), tpm?.stop()]);
  rmSync(dir, { recursive: true, force: true });
});

/** The one `credential_type` label value of a started server. */
async function credentialType(options: MetadataServerOptions): Promise<string[]> {
  const server = new MetadataServer({ ...options, serverConfig: { port: 0, metrics: { port: 0 } } });
  await server.start();
  try {
    const text = await (await fetch(`${server.metricsUrl}/metrics`)).text();
    return parsePrometheusText(text)
      .get("credential_type")!
      .samples.map((s) => s.labels.type!);
  } finally {
    await server.stop();
  }
}

const ACCESS = { GOOGLE_ACCESS_TOKEN: "ya29.static-access" };
const ID = { GOOGLE_ID_TOKEN: "eyJhbGciOiJSUzI1NiJ9.e30.sig" };

describe("credential_type", () => {
  const cases: Array<[string, CredentialSpec | undefined, Record<string, string>, string]> = [
    ["the emulated issuer by default", undefined, {}, "emulated"],
    ["the emulated issuer as a spec", { type: "emulated" }, {}, "emulated"],
    ["GOOGLE_ACCESS_TOKEN over the emulated issuer", { type: "emulated" }, ACCESS, "static+emulated"],
    ["GOOGLE_ID_TOKEN over the emulated issuer", undefined, ID, "static+emulated"],
    ["both static tokens", { type: "emulated" }, { ...ACCESS, ...ID }, "static"],
    ["a service account key", { type: "serviceAccountKey", keyFile: "" }, {}, "serviceAccountKey"],
    ["GOOGLE_ID_TOKEN over a service account key", { type: "serviceAccountKey", keyFile: "" }, ID, "static+serviceAccountKey"],
    ["impersonation", { type: "impersonated" }, {}, "impersonated"],
    ["federation", { type: "federated" }, {}, "federated"],
    ["a TPM key", { type: "tpm", tpm: { path: "", persistentHandle: HANDLE } }, {}, "tpm"],
    ["GOOGLE_ACCESS_TOKEN over a TPM key", { type: "tpm", tpm: { path: "", persistentHandle: HANDLE } }, ACCESS, "static+tpm"],
  ];
  for (const [name, spec, env, expected] of cases) {
    test(`${name}: ${expected}`, async () => {
      // Paths known only once the fixtures exist.
      let credentials = spec;
      if (spec?.type === "serviceAccountKey") credentials = { ...spec, keyFile };
      if (spec?.type === "tpm") credentials = { ...spec, tpm: { ...spec.tpm, path: tpm.path } };
      const adc = spec?.type === "impersonated" ? { GOOGLE_APPLICATION_CREDENTIALS: keyFile } : {};
      const wif = spec?.type === "federated" ? { GOOGLE_APPLICATION_CREDENTIALS: externalAccount } : {};
      const labels = await credentialType({ ...(credentials ? { credentials } : {}), env: { ...env, ...adc, ...wif } });
      expect(labels).toEqual([expected]);
    });
  }
});

test("the command line lays GOOGLE_ACCESS_TOKEN over its source once: static+emulated", async () => {
  const cli = runCli(["-port", ":0", "-metricsEnabled", "-metricsPort", ":0"], { env: ACCESS });
  try {
    const [, url] = await cli.waitFor(/metrics listening url=(\S+)/);
    const text = await (await fetch(url!)).text();
    expect(
      parsePrometheusText(text)
        .get("credential_type")!
        .samples.map((s) => s.labels.type),
    ).toEqual(["static+emulated"]);
  } finally {
    await cli.stop();
  }
});
