/** The real server's HTTP rules (shared/spec/gce-metadata-server.md), checked over real HTTP. */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { createRemoteJWKSet, decodeJwt, decodeProtectedHeader, jwtVerify } from "jose";
import { FLAVOR, rawRequest, startServer, V1, type Started } from "../helpers/server.ts";
import { missingFlavor, notFound } from "../../src/http/pages.ts";

let s: Started;
beforeAll(async () => {
  s = await startServer();
});
afterAll(() => s.stop());

const text = async (path: string, headers?: Record<string, string>) => {
  const r = await s.get(path, headers);
  return { r, body: await r.text() };
};

function expectStandardHeaders(r: Response): void {
  expect(r.headers.get("metadata-flavor")).toBe("Google");
  expect(r.headers.get("server")).toBe("Metadata Server for VM");
  expect(r.headers.get("x-xss-protection")).toBe("0");
  expect(r.headers.get("x-frame-options")).toBe("SAMEORIGIN");
  expect(r.headers.get("date")).toMatch(/GMT$/);
}

describe("admission", () => {
  test("/ answers without Metadata-Flavor, with the real listing and no ETag", async () => {
    const { r, body } = await text("/", {});
    expect(r.status).toBe(200);
    expect(body).toBe("computeMetadata/\n");
    expect(r.headers.get("content-type")).toBe("application/text");
    expect(r.headers.get("content-length")).toBe("17");
    expect(r.headers.get("etag")).toBeNull();
    expectStandardHeaders(r);
  });

  test("/ answers even with a wrong Metadata-Flavor, and ignores its query", async () => {
    const { r, body } = await text("/?recursive=true", { "Metadata-Flavor": "Not Google" });
    expect(r.status).toBe(200);
    expect(body).toBe("computeMetadata/\n");
  });

  test("a metadata path without the header is 403 with Google's page", async () => {
    const { r, body } = await text(`${V1}instance/name?alt=text`, {});
    expect(r.status).toBe(403);
    expect(r.headers.get("content-type")).toBe("text/html; charset=UTF-8");
    expect(body).toContain("<title>Error 403 (Forbidden)!!1</title>");
    expect(body).toContain(
      `Your client does not have permission to get URL <code>${V1}instance/name?alt=text</code> from this server. Missing Metadata-Flavor:Google header.`,
    );
    expectStandardHeaders(r);
  });

  test("a wrong header value is refused like a missing one", async () => {
    for (const value of ["Not Google", "google", ""]) {
      const { r } = await text(`${V1}project/project-id`, { "Metadata-Flavor": value });
      expect(r.status).toBe(403);
    }
  });

  test("the legacy X-Google-Metadata-Request: True is accepted", async () => {
    const { r, body } = await text(`${V1}project/project-id`, { "X-Google-Metadata-Request": "True" });
    expect(r.status).toBe(200);
    expect(body).toBe("example-project");
  });

  test("X-Forwarded-For is refused, with the header and on /", async () => {
    for (const path of [`${V1}project/project-id`, "/"]) {
      const { r, body } = await text(path, { ...FLAVOR, "X-Forwarded-For": "10.0.0.1" });
      expect(r.status).toBe(403);
      expect(body).toContain("X-Forwarded-For");
      expectStandardHeaders(r);
    }
  });

  test("methods other than GET and HEAD are 405 with Allow", async () => {
    for (const method of ["POST", "PUT", "DELETE", "PATCH"]) {
      const r = await fetch(`${s.base}${V1}instance/name`, { method, headers: FLAVOR });
      expect(r.status).toBe(405);
      expect(r.headers.get("allow")).toBe("GET, HEAD");
      expect(await r.text()).toContain(`<code>${method}</code>`);
    }
  });

  test("HEAD answers the GET headers without a body", async () => {
    const r = await fetch(`${s.base}${V1}project/project-id`, { method: "HEAD", headers: FLAVOR });
    expect(r.status).toBe(200);
    expect(r.headers.get("content-length")).toBe(String("example-project".length));
    expect(r.headers.get("etag")).toMatch(/^[0-9a-f]{16}$/);
    expect(await r.text()).toBe("");
  });

  test("a request without a Host header is served and redirected to the listener's own address", async () => {
    const root = await rawRequest(s.server.port, "GET / HTTP/1.0\r\n\r\n");
    expect(root).toStartWith("HTTP/1.1 200");
    expect(root).toEndWith("\r\n\r\ncomputeMetadata/\n");
    const dir = await rawRequest(s.server.port, `GET ${V1}instance HTTP/1.0\r\nMetadata-Flavor: Google\r\n\r\n`);
    expect(dir).toStartWith("HTTP/1.1 301");
    expect(dir).toContain(`\r\nLocation: http://127.0.0.1:${s.server.port}/computeMetadata/v1/instance/\r\n`);
  });
});

describe("values", () => {
  test("leaves are raw text without a trailing newline", async () => {
    const cases: Record<string, string> = {
      "project/project-id": "example-project",
      "project/numeric-project-id": "123456789012",
      "instance/id": "4520031799277581759",
      "instance/zone": "projects/123456789012/zones/us-central1-a",
      "instance/hostname": "vm-1.us-central1-a.c.example-project.internal",
      "instance/description": "",
      "instance/remaining-cpu-time": "-1",
      "instance/disks/0/index": "0",
      "instance/network-interfaces/0/mtu": "1460",
      "instance/network-interfaces/0/access-configs/0/external-ip": "203.0.113.10",
      "instance/licenses/0/id": "2147286739765738111",
      "instance/virtual-clock/drift-token": "0",
      "instance/scheduling/on-host-maintenance": "MIGRATE",
      "instance/attributes/startup-script": "#!/bin/bash\necho hello",
      "universe/universe-domain": "googleapis.com",
    };
    for (const [path, want] of Object.entries(cases)) {
      const { r, body } = await text(V1 + path);
      expect({ path, status: r.status, body }).toEqual({ path, status: 200, body: want });
      expect(r.headers.get("content-type")).toBe("application/text");
      expect(r.headers.get("content-length")).toBe(String(Buffer.byteLength(want)));
      expect(r.headers.get("etag")).toMatch(/^[0-9a-f]{16}$/);
      expectStandardHeaders(r);
    }
  });

  test("tags are JSON by default and lines with alt=text; scopes the other way round", async () => {
    let t = await text(`${V1}instance/tags`);
    expect(t.body).toBe('["http-server"]');
    expect(t.r.headers.get("content-type")).toBe("application/json");
    t = await text(`${V1}instance/tags?alt=text`);
    expect(t.body).toBe("http-server\n");
    expect(t.r.headers.get("content-type")).toBe("application/text");
    t = await text(`${V1}instance/service-accounts/default/scopes`);
    expect(t.body).toBe("https://www.googleapis.com/auth/cloud-platform\n");
    t = await text(`${V1}instance/service-accounts/default/scopes?alt=json`);
    expect(t.body).toBe('["https://www.googleapis.com/auth/cloud-platform"]');
  });

  test("alt=json on a leaf is its JSON value: numbers stay numbers, exactly", async () => {
    expect((await text(`${V1}instance/id?alt=json`)).body).toBe("4520031799277581759");
    expect((await text(`${V1}project/project-id?alt=json`)).body).toBe('"example-project"');
    expect((await text(`${V1}instance/licenses/0/id?alt=json`)).body).toBe('"2147286739765738111"');
    const { r } = await text(`${V1}instance/id?alt=json`);
    expect(r.headers.get("content-type")).toBe("application/json");
  });

  test("universe_domain with an underscore is 404, as on current VMs", async () => {
    const { r, body } = await text(`${V1}universe/universe_domain`);
    expect(r.status).toBe(404);
    expect(r.headers.get("content-length")).toBe("1604");
    expect(body).toContain(`<code>${V1}universe/universe_domain</code> was not found on this server.  <ins>`);
  });
});

describe("directories", () => {
  test("listings: sorted, slashes on directories, every line ends in a newline", async () => {
    const cases: Record<string, string> = {
      "/computeMetadata/": "v1/\n",
      [V1]: "instance/\noslogin/\nproject/\n",
      [`${V1}project/`]: "attributes/\nnumeric-project-id\nproject-id\n",
      [`${V1}instance/`]:
        "attributes/\ncpu-platform\ndescription\ndisks/\nguest-attributes/\nhostname\nid\nimage\nlicenses/\nmachine-type\nmaintenance-event\nname\nnetwork-interfaces/\npreempted\nremaining-cpu-time\nscheduling/\nservice-accounts/\ntags\nvirtual-clock/\nzone\n",
      [`${V1}instance/service-accounts/`]: "123456789012-compute@developer.gserviceaccount.com/\ndefault/\n",
      [`${V1}instance/service-accounts/default/`]: "aliases\nemail\nidentity\nscopes\ntoken\n",
      [`${V1}instance/disks/`]: "0/\n",
      [`${V1}instance/network-interfaces/0/`]:
        "access-configs/\ndns-servers\nforwarded-ips/\ngateway\nip\nip-aliases/\nmac\nmtu\nnetwork\nsubnetmask\ntarget-instance-ips\n",
      [`${V1}instance/network-interfaces/0/forwarded-ips/`]: "",
      [`${V1}universe/`]: "universe-domain\n",
    };
    for (const [path, want] of Object.entries(cases)) {
      const { r, body } = await text(path);
      expect({ path, body }).toEqual({ path, body: want });
      expect(r.headers.get("content-type")).toBe("application/text");
      expect(r.headers.get("etag")).toMatch(/^[0-9a-f]{16}$/);
    }
  });

  test("a directory without its slash is 301 to the slashed path, query kept after the slash", async () => {
    const { r, body } = await text(`${V1}instance`);
    expect(r.status).toBe(301);
    expect(r.headers.get("location")).toBe(`${s.base}${V1}instance/`);
    expect(r.headers.get("content-type")).toBe("text/html");
    expect(body).toBe(`${V1}instance/\n`);
    expect(r.headers.get("etag")).toBeNull();
    expectStandardHeaders(r);
    const q = await s.get(`${V1}instance/disks?recursive=true&alt=json`);
    expect(q.headers.get("location")).toBe(`${s.base}${V1}instance/disks/?recursive=true&alt=json`);
    for (const [from, to] of [
      ["/computeMetadata/v1", V1],
      ["/computeMetadata", "/computeMetadata/"],
    ] as const) {
      const x = await s.get(from);
      expect(x.status).toBe(301);
      expect(x.headers.get("location")).toBe(s.base + to);
    }
  });

  test("the Location keeps the Host the client used, trailing dot included", async () => {
    const r = await rawRequest(
      s.server.port,
      `GET ${V1}instance HTTP/1.1\r\nHost: metadata.google.internal.\r\nMetadata-Flavor: Google\r\nConnection: close\r\n\r\n`,
    );
    expect(r).toMatch(/\r\nLocation: http:\/\/metadata\.google\.internal\.\/computeMetadata\/v1\/instance\/\r\n/i);
  });

  test("Node's availability probe: /instance redirects and the target answers with the header", async () => {
    const r = await fetch(`${s.base}${V1}instance`, { headers: FLAVOR });
    expect(r.status).toBe(200);
    expect(r.redirected).toBe(true);
    expect(r.headers.get("metadata-flavor")).toBe("Google");
  });

  test("recursive=true gives compact JSON with camelCase keys in ascending order", async () => {
    const { r, body } = await text(`${V1}instance/disks/?recursive=true`);
    expect(r.headers.get("content-type")).toBe("application/json");
    expect(body).toBe('[{"deviceName":"persistent-disk-0","index":0,"interface":"SCSI","mode":"READ_WRITE","type":"PERSISTENT"}]');
    const sa = await text(`${V1}instance/service-accounts/default/?recursive=true`);
    expect(sa.body).toBe(
      '{"aliases":["default"],"email":"123456789012-compute@developer.gserviceaccount.com","scopes":["https://www.googleapis.com/auth/cloud-platform"]}',
    );
  });

  test("the whole tree: project, instance (exact big id), oslogin; no universe, no tokens", async () => {
    const { r, body } = await text(`${V1}?recursive=true`);
    expect(r.status).toBe(200);
    expect(Number(r.headers.get("content-length"))).toBeLessThan(512 * 1024);
    expect(body).toContain('"id":4520031799277581759,');
    const doc = JSON.parse(body);
    expect(Object.keys(doc)).toEqual(["instance", "oslogin", "project"]);
    expect(doc.project.projectId).toBe("example-project");
    expect(doc.instance.zone).toBe("projects/123456789012/zones/us-central1-a");
    expect(doc.instance.serviceAccounts.default).toEqual({
      aliases: ["default"],
      email: "123456789012-compute@developer.gserviceaccount.com",
      scopes: ["https://www.googleapis.com/auth/cloud-platform"],
    });
    expect(Object.keys(doc.instance)).toEqual([...Object.keys(doc.instance)].sort());
  });

  test("recursive alt=text: relative kebab-case paths and values", async () => {
    const { r, body } = await text(`${V1}instance/disks/?recursive=true&alt=text`);
    expect(r.headers.get("content-type")).toBe("application/text");
    expect(body).toBe("0/device-name persistent-disk-0\n0/index 0\n0/interface SCSI\n0/mode READ_WRITE\n0/type PERSISTENT\n");
    const sa = await text(`${V1}instance/service-accounts/default/?recursive=true&alt=text`);
    expect(sa.body).toBe(
      "aliases default\nemail 123456789012-compute@developer.gserviceaccount.com\nscopes https://www.googleapis.com/auth/cloud-platform\n",
    );
  });

  test("recursive on a leaf changes nothing", async () => {
    expect((await text(`${V1}instance/name?recursive=true`)).body).toBe("vm-1");
  });

  test("boolean spellings clients use all work", async () => {
    for (const v of ["true", "True", "TRUE", "1"]) {
      const { r } = await text(`${V1}project/?recursive=${v}`);
      expect(r.headers.get("content-type")).toBe("application/json");
    }
    const { r } = await text(`${V1}project/?recursive=false`);
    expect(r.headers.get("content-type")).toBe("application/text");
  });

  test("unknown query parameters are ignored", async () => {
    const { r, body } = await text(`${V1}project/project-id?foo=bar&last_etag=abc&timeout_sec=5`);
    expect(r.status).toBe(200);
    expect(body).toBe("example-project");
  });
});

describe("errors", () => {
  test("404 page: exact template, path and query in <code>, 1560 bytes plus the URL", async () => {
    const url = `${V1}instance/nope?alt=json`;
    const { r, body } = await text(url);
    expect(r.status).toBe(404);
    expect(r.headers.get("content-type")).toBe("text/html; charset=UTF-8");
    expect(Buffer.byteLength(body)).toBe(1560 + url.length);
    expect(body).toStartWith("<!DOCTYPE html>\n<html lang=en>\n  <meta charset=utf-8>\n");
    expect(body).toContain("<title>Error 404 (Not Found)!!1</title>");
    expect(body).toEndWith(`<p>The requested URL <code>${url}</code> was not found on this server.  <ins>That’s all we know.</ins>\n`);
    expect(r.headers.get("etag")).toBeNull();
    expectStandardHeaders(r);
  });

  test("a leaf with a trailing slash, a bad index, a child of a leaf, legacy APIs: all 404", async () => {
    for (const path of [
      `${V1}project/project-id/`,
      `${V1}instance/disks/1/`,
      `${V1}instance/disks/x/`,
      `${V1}instance/tags/0`,
      `${V1}instance/service-accounts/default/scopes/0`,
      `${V1}instance/service-accounts/nobody@example.com/`,
      `${V1}instance/service-accounts/default/token/`,
      "/0.1/meta-data/project-id",
      "/computeMetadata/v1beta1/project/project-id",
    ]) {
      expect({ path, status: (await s.get(path)).status }).toEqual({ path, status: 404 });
    }
  });

  test("the error pages escape markup in the URL they show", async () => {
    // Bun percent-encodes request targets, so markup cannot arrive through HTTP; the pages escape it regardless.
    for (const page of [notFound('/x"><script>y</script>'), missingFlavor('/x"><script>y</script>')]) {
      const body = await page.text();
      expect(body).not.toContain("<script>");
      expect(body).toContain("<code>/x&quot;&gt;&lt;script&gt;y&lt;/script&gt;</code>");
    }
  });

  test("empty segments collapse; percent escapes decode except the ones GCE rejects", async () => {
    expect((await text(`${V1}project//project-id`)).body).toBe("example-project");
    expect((await text(`${V1}project/project%2Did`)).body).toBe("example-project");
    expect((await s.get(`${V1}instance/service-accounts/123456789012-compute%40developer.gserviceaccount.com/email`)).status).toBe(404);
    expect((await text(`${V1}instance/service-accounts/123456789012-compute@developer.gserviceaccount.com/email`)).body).toBe(
      "123456789012-compute@developer.gserviceaccount.com",
    );
  });

  test("alt on a non-recursive directory and unknown alt values are 400", async () => {
    for (const path of [`${V1}project/?alt=json`, `${V1}project/?alt=text`, `${V1}project/project-id?alt=xml`]) {
      const r = await s.get(path);
      expect({ path, status: r.status }).toEqual({ path, status: 400 });
      expect(r.headers.get("metadata-flavor")).toBe("Google");
    }
  });
});

describe("ETags", () => {
  test("same ETag for default, alt=json and alt=text of a leaf; different for recursive vs listing", async () => {
    const tags = await Promise.all(["", "?alt=json", "?alt=text"].map((q) => s.get(`${V1}instance/tags${q}`)));
    const etags = tags.map((r) => r.headers.get("etag"));
    expect(new Set(etags).size).toBe(1);
    const listing = (await s.get(`${V1}instance/disks/`)).headers.get("etag");
    const recursive = (await s.get(`${V1}instance/disks/?recursive=true`)).headers.get("etag");
    const recursiveText = (await s.get(`${V1}instance/disks/?recursive=true&alt=text`)).headers.get("etag");
    expect(listing).not.toBe(recursive);
    expect(recursiveText).toBe(recursive);
  });

  test("ETags are a pure function of content: a second server gives the same ones", async () => {
    const other = await startServer();
    try {
      for (const path of [`${V1}instance/id`, `${V1}?recursive=true`, `${V1}instance/`]) {
        const a = (await s.get(path)).headers.get("etag");
        const b = (await other.get(path)).headers.get("etag");
        expect(a).toMatch(/^[0-9a-f]{16}$/);
        expect(b).toBe(a);
      }
    } finally {
      await other.stop();
    }
  });

  test("the ETag is the last 16 hex digits of the MD5 of the default representation", async () => {
    const r = await s.get(`${V1}project/project-id`);
    const md5 = new Bun.CryptoHasher("md5").update("example-project").digest("hex");
    expect(r.headers.get("etag")).toBe(md5.slice(16));
  });
});

describe("service accounts", () => {
  const SA = `${V1}instance/service-accounts/`;

  test("token: the real body shape, cached, counting down", async () => {
    const r1 = await s.get(`${SA}default/token`);
    expect(r1.status).toBe(200);
    expect(r1.headers.get("content-type")).toBe("application/json");
    expectStandardHeaders(r1);
    const raw = await r1.text();
    expect(raw).toMatch(/^\{"access_token":"ya29\.[\w-]+","expires_in":\d+,"token_type":"Bearer"\}$/);
    const t1 = JSON.parse(raw);
    expect(t1.expires_in).toBeGreaterThan(3500);
    expect(t1.expires_in).toBeLessThanOrEqual(3600);
    const t2 = (await (await s.get(`${SA}default/token`)).json()) as any;
    expect(t2.access_token).toBe(t1.access_token);
    expect(t2.expires_in).toBeLessThanOrEqual(t1.expires_in);
    // The e-mail form of the path is the same account.
    const t3 = (await (await s.get(`${SA}123456789012-compute@developer.gserviceaccount.com/token`)).json()) as any;
    expect(t3.access_token).toBe(t1.access_token);
  });

  test("token: scopes select a different token; encoded and plain commas are the same request", async () => {
    const def = (await (await s.get(`${SA}default/token`)).json()) as any;
    const a = (await (
      await s.get(`${SA}default/token?scopes=https://www.googleapis.com/auth/a,https://www.googleapis.com/auth/b`)
    ).json()) as any;
    const b = (await (
      await s.get(`${SA}default/token?scopes=https%3A%2F%2Fwww.googleapis.com%2Fauth%2Fa%2Chttps%3A%2F%2Fwww.googleapis.com%2Fauth%2Fb`)
    ).json()) as any;
    expect(a.access_token).not.toBe(def.access_token);
    expect(b.access_token).toBe(a.access_token);
  });

  test("token: wait_for_change is 400; unknown account 404", async () => {
    expect((await s.get(`${SA}default/token?wait_for_change=true`)).status).toBe(400);
    expect((await s.get(`${SA}someone@example.com/token`)).status).toBe(404);
  });

  test("identity: missing audience is 400 with the known text; bad format is 400", async () => {
    const r = await s.get(`${SA}default/identity`);
    expect(r.status).toBe(400);
    expect(await r.text()).toContain("non-empty audience parameter required");
    expect((await s.get(`${SA}default/identity?audience=`)).status).toBe(400);
    expect((await s.get(`${SA}default/identity?audience=x&format=weird`)).status).toBe(400);
  });

  test("identity: standard format, verifiable with the served JWKS", async () => {
    const r = await s.get(`${SA}default/identity?audience=https://service.example.com/api`);
    expect(r.status).toBe(200);
    expect(r.headers.get("content-type")).toBe("application/text");
    expectStandardHeaders(r);
    const jwt = await r.text();
    expect(decodeProtectedHeader(jwt)).toMatchObject({ alg: "RS256", typ: "JWT" });
    const discovery = (await (await fetch(`${s.base}/.well-known/openid-configuration`)).json()) as any;
    expect(discovery.issuer).toBe("https://accounts.google.com");
    const { payload } = await jwtVerify(jwt, createRemoteJWKSet(new URL(discovery.jwks_uri)), {
      issuer: "https://accounts.google.com",
      audience: "https://service.example.com/api",
    });
    expect(Object.keys(payload).sort()).toEqual(["aud", "azp", "exp", "iat", "iss", "sub"]);
    expect(payload.sub).toMatch(/^\d{21}$/);
    expect(payload.azp).toBe(payload.sub);
    expect(payload.exp! - payload.iat!).toBe(3600);
  });

  test("identity: format=full carries the compute_engine claims; licenses=TRUE the licence ids", async () => {
    const full = decodeJwt(await (await s.get(`${SA}default/identity?audience=aud1&format=full`)).text());
    expect(full.email).toBe("123456789012-compute@developer.gserviceaccount.com");
    expect(full.email_verified).toBe(true);
    const ce = (full.google as { compute_engine: Record<string, unknown> }).compute_engine;
    expect(ce).toMatchObject({
      instance_id: "4520031799277581759",
      instance_name: "vm-1",
      project_id: "example-project",
      project_number: 123456789012,
      zone: "us-central1-a",
    });
    expect(typeof ce.instance_creation_timestamp).toBe("number");
    expect(ce.license_id).toBeUndefined();
    const lic = decodeJwt(await (await s.get(`${SA}default/identity?audience=aud1&format=full&licenses=TRUE`)).text());
    expect((lic.google as { compute_engine: Record<string, unknown> }).compute_engine.license_id).toEqual(["2147286739765738111"]);
    // licenses without format=full is ignored, as documented.
    const std = decodeJwt(await (await s.get(`${SA}default/identity?audience=aud1&licenses=TRUE`)).text());
    expect(std.google).toBeUndefined();
  });
});
