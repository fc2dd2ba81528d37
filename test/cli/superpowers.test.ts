/** -fault (repeatable) and -tokenLifetime on the real command line. */
import { expect, test } from "bun:test";
import { parseFlags, usage } from "../../src/cli/flags.ts";
import { runCliToExit, serveCli } from "../helpers/cli.ts";

const V1 = "/computeMetadata/v1/";

test("flags: -fault repeats and keeps its order; -tokenLifetime defaults to 1h", () => {
  const d = parseFlags([]);
  expect(d.fault).toEqual([]);
  expect(d.tokenLifetime).toBe("1h");
  const f = parseFlags(["-fault", "path=*,status=503,for=10s", "--fault=path=instance/id,action=reset", "-tokenLifetime", "2m"]);
  expect(f.fault).toEqual(["path=*,status=503,for=10s", "path=instance/id,action=reset"]);
  expect(f.tokenLifetime).toBe("2m");
  expect(usage()).toContain("-fault string");
  expect(usage()).toContain("-tokenLifetime string");
});

test('-fault "path=*,status=503,for=10s" is a server still booting: its very first answer is the 503', async () => {
  const s = await serveCli([
    "-fault",
    "path=*,status=503,for=10s",
    "-fault",
    "path=instance/service-accounts/*/token,status=429,header=Retry-After: 3",
    "-tokenLifetime",
    "2m",
  ]);
  try {
    const first = await s.get(`${V1}project/project-id`);
    expect(first.status).toBe(503);
    expect(first.headers.get("metadata-flavor")).toBe("Google");
    const root = await fetch(`${s.url}/`);
    expect(root.status).toBe(503);
    // Admission first: without the header it is still the 403.
    expect((await fetch(`${s.url}${V1}project/project-id`)).status).toBe(403);
    expect(s.log()).not.toMatch(/ERROR/);
    expect(s.log()).toMatch(/WARN +fault injection is on: matching requests fail on purpose rules=2/);
  } finally {
    expect(await s.stop()).toBe(0);
  }
});

test("-tokenLifetime 2m: tokens live two minutes; a times=1 rule with a header answers once", async () => {
  const s = await serveCli(["-tokenLifetime", "2m", "-fault", "path=project/*,status=429,header=Retry-After: 3,times=1"]);
  try {
    const r = await s.get(`${V1}project/project-id`);
    expect(r.status).toBe(429);
    expect(r.headers.get("retry-after")).toBe("3");
    expect(await (await s.get(`${V1}project/project-id`)).text()).toBe("example-project");
    const t = (await (await s.get(`${V1}instance/service-accounts/default/token`)).json()) as { expires_in: number };
    expect([119, 120]).toContain(t.expires_in);
  } finally {
    await s.stop();
  }
});

test("bad -fault and -tokenLifetime values exit 2 with one line naming the problem", async () => {
  const f = await runCliToExit(["-fault", "path=*,status=soon"]);
  expect(f.code).toBe(2);
  expect(f.stderr.trim().split("\n")[0]).toBe('-fault "path=*,status=soon": fault status: expected a whole number ≥ 200, found "soon"');
  const t = await runCliToExit(["-tokenLifetime", "500ms"]);
  expect(t.code).toBe(2);
  expect(t.stderr.trim()).toBe('invalid token lifetime "500ms": use whole seconds of at least 1s, such as 2m or 1h');
});
