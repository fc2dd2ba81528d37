/** Config parsing and checking: exact numbers, precise error locations, env overrides, naming rules. */
import { describe, expect, test } from "bun:test";
import { type JsonNumber, parseJson, stringify } from "../../src/json.ts";
import { claimsFromDocument, parseConfigText } from "../../src/config/claims.ts";
import { readEnvironment } from "../../src/environment.ts";
import { Snapshot, type MetaNode } from "../../src/metadata/snapshot.ts";
import { ConfigError } from "../../src/errors.ts";
import { DEFAULT_CONFIG_TEXT } from "../../src/index.ts";

const base = () => parseConfigText(DEFAULT_CONFIG_TEXT) as Record<string, any>;
const v1 = (extra: Record<string, unknown>) => ({ computeMetadata: { v1: extra } });
const snap = (doc: object, env: Record<string, string> = {}) => new Snapshot(claimsFromDocument(doc, { overrides: readEnvironment(env) }));
const body = (s: Snapshot, path: string) => (s.lookup(`/computeMetadata/v1/${path}`) as MetaNode).plain.body;

function configError(f: () => unknown): ConfigError {
  try {
    f();
  } catch (e) {
    expect(e).toBeInstanceOf(ConfigError);
    return e as ConfigError;
  }
  throw new Error("expected a ConfigError");
}

describe("JSON parser", () => {
  test("keeps number literals exactly, beyond 2^53", () => {
    const v = parseJson('{"id": 5775171277418378000, "x": -1.5e3}') as Record<string, JsonNumber>;
    expect(v.id!.raw).toBe("5775171277418378000");
    expect(stringify(v)).toBe('{"id":5775171277418378000,"x":-1.5e3}');
  });

  test("reports line and column of syntax errors", () => {
    const cases: [string, RegExp][] = [
      ['{\n  "a": 1,\n}', /line 3, column 1: trailing comma/],
      ['{"a": tru}', /line 1, column 7: unexpected "t"/],
      ['{"a": "x\n"}', /line 1, column 9: control character/],
      ['{"a": 1 "b": 2}', /line 1, column 9: expected ',' or '}'/],
      ["", /line 1, column 1: unexpected end of file/],
      ['{"a": 1} x', /after the end of the document/],
    ];
    for (const [text, re] of cases) expect(() => parseJson(text)).toThrow(re);
  });

  test("a duplicate key: the last one wins, as with JSON.parse and Go", () => {
    expect(stringify(parseJson('{"a": 1, "a": 2}'))).toBe('{"a":2}');
  });

  test("the native fast path keeps number text exactly and yields null-prototype objects", () => {
    const v = parseJson('{"__proto__": {"x": 1}, "n": [1.50, -0, 1e400]}') as Record<string, unknown>;
    expect(Object.getPrototypeOf(v)).toBeNull();
    expect(stringify(v as never)).toBe('{"__proto__":{"x":1},"n":[1.50,-0,1e400]}');
  });

  test("decodes escapes and tolerates a byte-order mark", () => {
    expect(parseJson('\uFEFF{"s":"a\\u00e9\\n\\"b"}')).toEqual({ s: 'aé\n"b' } as never);
  });
});

describe("config checks", () => {
  test("syntax errors name the source, line and column", () => {
    const e = configError(() => parseConfigText('{"computeMetadata": {\n "v1": [}', "my.json"));
    expect(e.code).toBe("CONFIG_SYNTAX");
    expect(e.message).toBe('my.json: invalid JSON at line 2, column 9: unexpected "}"');
  });

  test("shape errors name the JSON path", () => {
    const cases: [object, string][] = [
      [{}, "config: computeMetadata: missing"],
      [v1({ instance: { id: "abc" } }), 'config: computeMetadata.v1.instance.id: expected an integer, found the string "abc"'],
      [
        v1({ instance: { disks: [{ index: {} }] } }),
        "config: computeMetadata.v1.instance.disks[0].index: expected an integer, found an object",
      ],
      [v1({ instance: { tags: "a" } }), 'config: computeMetadata.v1.instance.tags: expected an array of strings, found the string "a"'],
      [
        v1({ project: { attributes: { "startup-script": ["x"] } } }),
        'config: computeMetadata.v1.project.attributes["startup-script"]: expected a string, found an array',
      ],
      [v1({ instance: { attributes: { "a/b": "x" } } }), 'key "a/b" cannot be a path segment'],
    ];
    for (const [doc, message] of cases) expect(configError(() => claimsFromDocument(doc)).message).toContain(message);
  });

  test("the Go emulator's rule: a default service account is required when asked", () => {
    const e = configError(() => claimsFromDocument(v1({ project: { projectId: "p" } }), { requireDefaultAccount: true }));
    expect(e.code).toBe("CONFIG_NO_DEFAULT_ACCOUNT");
    expect(e.message).toContain("computeMetadata.v1.instance.serviceAccounts.default: missing");
  });

  test("numeric strings are accepted for integer keys and print as numbers", () => {
    const s = snap(v1({ instance: { id: "0042" }, project: { numericProjectId: "7" } }));
    expect(s.node("instance/")!.json).toBe('{"id":42}');
    expect(body(s, "project/numeric-project-id")).toBe("7");
  });
});

describe("naming rules", () => {
  test("Google-defined keys are kebab-case in paths, user keys verbatim everywhere", () => {
    const s = snap(v1({ instance: { machineType: "m", myCustomKey: "x", extraDir: { someKey: 1 }, attributes: { FooBar: "v" } } }));
    expect(body(s, "instance/")).toBe("attributes/\nextraDir/\nmachine-type\nmyCustomKey\n");
    expect(body(s, "instance/myCustomKey")).toBe("x");
    expect(body(s, "instance/extraDir/someKey")).toBe("1");
    expect(body(s, "instance/attributes/FooBar")).toBe("v");
    expect(s.node("instance/")!.json).toBe('{"attributes":{"FooBar":"v"},"extraDir":{"someKey":1},"machineType":"m","myCustomKey":"x"}');
  });

  test("Go-emulator configs with differently cased keys are read as Go reads them", () => {
    const s = snap(v1({ instance: { shutdownDetails: { TargetState: "UNKNOWN", StopState: "PENDING_STOP", requestTimeStamp: "t" } } }));
    expect(body(s, "instance/shutdown-details/")).toBe("request-timestamp\nstop-state\ntarget-state\n");
    expect(body(s, "instance/shutdown-details/stop-state")).toBe("PENDING_STOP");
  });

  test("partner attributes keep namespaces with dots and snake_case keys", () => {
    const s = snap(
      v1({
        instance: {
          partnerAttributes: {
            "iam.googleapis.com": { "workload-identity": "spiffe://x" },
            "wc.compute.googleapis.com": { key_algorithm: "ecdsa-p256" },
          },
        },
      }),
    );
    expect(body(s, "instance/partner-attributes/")).toBe("iam.googleapis.com/\nwc.compute.googleapis.com/\n");
    expect(body(s, "instance/partner-attributes/wc.compute.googleapis.com/key_algorithm")).toBe("ecdsa-p256");
    expect(s.lookup("/computeMetadata/v1/instance/partner-attributes/iam.googleapis.com")).toMatchObject({
      target: "/computeMetadata/v1/instance/partner-attributes/iam.googleapis.com/",
    });
  });

  test("upcoming-maintenance is a leaf holding a snake_case JSON object", () => {
    const s = snap(v1({ instance: { upcomingMaintenance: { canReschedule: "TRUE", windowStartTime: "2025-12-01T19:00:00Z" } } }));
    expect(body(s, "instance/")).toBe("upcoming-maintenance\n");
    expect(body(s, "instance/upcoming-maintenance")).toBe('{"can_reschedule":"TRUE","window_start_time":"2025-12-01T19:00:00Z"}');
  });

  test("workload certificate documents are indented one space, as captured", () => {
    const s = snap(v1({ instance: { gceWorkloadCertificates: { configStatus: { partnerMetadataConfigsErrors: {} } } } }));
    expect(body(s, "instance/gce-workload-certificates/config-status")).toBe('{\n "partnerMetadataConfigsErrors": {}\n}');
  });

  test("forwarded-ips: bare indices, one address per line in recursive text", () => {
    const s = snap(v1({ instance: { networkInterfaces: [{ forwardedIps: ["10.0.0.1", "10.0.0.2"], ip: "10.1.1.1" }] } }));
    expect(body(s, "instance/network-interfaces/0/forwarded-ips/")).toBe("0\n1\n");
    expect(body(s, "instance/network-interfaces/0/forwarded-ips/1")).toBe("10.0.0.2");
    const fwd = s.node("instance/network-interfaces/0/forwarded-ips/")!;
    expect(fwd.recursive!.body).toBe('["10.0.0.1","10.0.0.2"]');
    expect(fwd.recursiveText.body).toBe("10.0.0.1\n10.0.0.2\n");
    expect(s.node("instance/network-interfaces/0/")!.recursiveText.body).toBe(
      "forwarded-ips 10.0.0.1\nforwarded-ips 10.0.0.2\nip 10.1.1.1\n",
    );
  });

  test("indices sort numerically past 9", () => {
    const s = snap(v1({ instance: { disks: Array.from({ length: 12 }, (_, i) => ({ index: i })) } }));
    expect(body(s, "instance/disks/")).toBe(Array.from({ length: 12 }, (_, i) => `${i}/\n`).join(""));
  });

  test("no universe in the config still serves universe-domain", () => {
    const s = snap(v1({ project: { projectId: "p" } }));
    expect(body(s, "universe/universe-domain")).toBe("googleapis.com");
  });
});

describe("environment overrides (Go emulator)", () => {
  test("project id and number", () => {
    const s = snap(base(), { GOOGLE_PROJECT_ID: "other-project", GOOGLE_NUMERIC_PROJECT_ID: "99" });
    expect(body(s, "project/project-id")).toBe("other-project");
    expect(body(s, "project/numeric-project-id")).toBe("99");
    expect(s.identity.projectId).toBe("other-project");
  });

  test("a non-numeric project number is refused", () => {
    expect(configError(() => snap(base(), { GOOGLE_NUMERIC_PROJECT_ID: "abc" })).message).toContain(
      "GOOGLE_NUMERIC_PROJECT_ID must be digits only",
    );
  });

  test("GOOGLE_SERVICE_ACCOUNT (and the README's GOOGLE_ACCOUNT_EMAIL) rename the default account", () => {
    for (const name of ["GOOGLE_SERVICE_ACCOUNT", "GOOGLE_ACCOUNT_EMAIL"]) {
      const s = snap(base(), { [name]: "app@my-project.iam.gserviceaccount.com" });
      expect(body(s, "instance/service-accounts/default/email")).toBe("app@my-project.iam.gserviceaccount.com");
      expect(body(s, "instance/service-accounts/")).toBe("app@my-project.iam.gserviceaccount.com/\ndefault/\n");
      expect(s.accounts.get("default")!.email).toBe("app@my-project.iam.gserviceaccount.com");
    }
  });

  test("overrides and normalisation leave the caller's document as it was, parsed or plain", () => {
    const env = {
      GOOGLE_PROJECT_ID: "other-project",
      GOOGLE_NUMERIC_PROJECT_ID: "42",
      GOOGLE_SERVICE_ACCOUNT: "app@other-project.iam.gserviceaccount.com",
    };
    const only = '{"computeMetadata":{"v1":{"instance":{"serviceAccounts":{"default":{"email":"sa@p.iam.gserviceaccount.com"}}}}}}';
    for (const text of [DEFAULT_CONFIG_TEXT, only]) {
      for (const doc of [parseConfigText(text) as object, JSON.parse(text) as object]) {
        const before = JSON.stringify(doc);
        const s = snap(doc, env);
        expect(body(s, "project/project-id")).toBe("other-project");
        expect(body(s, "instance/service-accounts/")).toBe("app@other-project.iam.gserviceaccount.com/\ndefault/\n");
        expect(body(s, "universe/universe-domain")).toBe("googleapis.com");
        expect(JSON.stringify(doc)).toBe(before);
        // The same document compiles the same way again (a reload, an upstream tree laid under it).
        expect(body(snap(doc, env), "instance/service-accounts/default/aliases")).toBe("default\n");
      }
    }
  });

  test("a config with only the default account also serves it under its e-mail", () => {
    const s = snap(v1({ instance: { serviceAccounts: { default: { email: "sa@p.iam.gserviceaccount.com", scopes: ["s"] } } } }));
    expect(body(s, "instance/service-accounts/")).toBe("default/\nsa@p.iam.gserviceaccount.com/\n");
    expect(body(s, "instance/service-accounts/sa@p.iam.gserviceaccount.com/aliases")).toBe("default\n");
  });
});
