/** Route templates: user-chosen path segments become placeholders; Google-defined names stay. */
import { describe, expect, test } from "bun:test";
import { claimsFromDocument, parseConfigText } from "../../src/config/claims.ts";
import { DEFAULT_CONFIG_TEXT } from "../../src/index.ts";
import { Snapshot } from "../../src/metadata/snapshot.ts";
import { entryTemplate } from "../../src/metadata/template.ts";

const doc = parseConfigText(DEFAULT_CONFIG_TEXT, "default") as { computeMetadata: { v1: Record<string, Record<string, unknown>> } };
const v1 = doc.computeMetadata.v1;
v1.instance!.guestAttributes = { hostkeys: { "ssh-rsa": "AAAA" } };
v1.instance!.partnerAttributes = { "vendor.example.com": { setting: "x" } };
v1.instance!.customKey = "a user key in a Google-defined directory";
v1.project!.attributes = { "ssh-keys": "alice:ssh-rsa AAAA", "enable-guest-attributes": "TRUE" };
const snapshot = new Snapshot(claimsFromDocument(doc, {}));

const V1 = "/computeMetadata/v1/";
const t = (path: string) => {
  const e = snapshot.lookup(path);
  if (!e) throw new Error(`no entry ${path}`);
  return entryTemplate(e, (p) => snapshot.lookup(p));
};

describe("route templates", () => {
  test("fixed paths are themselves", () => {
    for (const p of [
      "/",
      "/computeMetadata/",
      V1,
      `${V1}instance/`,
      `${V1}instance/id`,
      `${V1}project/project-id`,
      `${V1}instance/scheduling/preemptible`,
    ]) {
      expect(t(p)).toBe(p);
    }
  });

  test("attributes, accounts, namespaces and list indices become placeholders", () => {
    expect(t(`${V1}instance/attributes/enable-oslogin`)).toBe(`${V1}instance/attributes/{key}`);
    expect(t(`${V1}instance/attributes/startup-script`)).toBe(`${V1}instance/attributes/{key}`);
    expect(t(`${V1}project/attributes/ssh-keys`)).toBe(`${V1}project/attributes/{key}`);
    expect(t(`${V1}instance/service-accounts/default/token`)).toBe(`${V1}instance/service-accounts/{account}/token`);
    expect(t(`${V1}instance/service-accounts/123456789012-compute@developer.gserviceaccount.com/identity`)).toBe(
      `${V1}instance/service-accounts/{account}/identity`,
    );
    expect(t(`${V1}instance/service-accounts/default/`)).toBe(`${V1}instance/service-accounts/{account}/`);
    expect(t(`${V1}instance/service-accounts/default/email`)).toBe(`${V1}instance/service-accounts/{account}/email`);
    expect(t(`${V1}instance/network-interfaces/0/access-configs/0/external-ip`)).toBe(
      `${V1}instance/network-interfaces/{index}/access-configs/{index}/external-ip`,
    );
    expect(t(`${V1}instance/disks/0/device-name`)).toBe(`${V1}instance/disks/{index}/device-name`);
    expect(t(`${V1}instance/guest-attributes/hostkeys/ssh-rsa`)).toBe(`${V1}instance/guest-attributes/{namespace}/{key}`);
    expect(t(`${V1}instance/partner-attributes/vendor.example.com/setting`)).toBe(`${V1}instance/partner-attributes/{namespace}/{key}`);
  });

  test("a redirect is its directory's template without the slash", () => {
    expect(t(`${V1}instance`)).toBe(`${V1}instance`);
    expect(t(`${V1}instance/service-accounts/default`)).toBe(`${V1}instance/service-accounts/{account}`);
    expect(t(`${V1}instance/network-interfaces/0`)).toBe(`${V1}instance/network-interfaces/{index}`);
  });

  test("a user key in a Google-defined directory keeps its name (the config, not a client, chose it)", () => {
    expect(t(`${V1}instance/customKey`)).toBe(`${V1}instance/customKey`);
  });

  test("every node's template is bounded by the tree's shape: the default config has few distinct templates", () => {
    const templates = new Set<string>();
    for (const e of snapshot.entries.values()) templates.add(entryTemplate(e, (p) => snapshot.lookup(p))!);
    expect(templates.size).toBeLessThan(snapshot.entries.size);
    expect([...templates].filter((x) => x.includes("attributes/{key}")).length).toBe(2);
  });
});
