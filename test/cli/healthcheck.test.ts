/** `gce_metadata_server healthcheck`: the image's HEALTHCHECK, run as a user (or Docker) runs it. */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { MetadataServer } from "../../src/index.ts";
import { parseHealthFlags } from "../../src/cli/healthcheck.ts";
import { runCliToExit } from "../helpers/cli.ts";

const run = (args: string[]) => runCliToExit(["healthcheck", ...args]);

let server: MetadataServer;
beforeAll(async () => {
  server = new MetadataServer({ serverConfig: { port: 0 } });
  await server.start();
});
afterAll(() => server.stop());

/** A throwaway listener on a free port answering with `handler`. */
async function withServer(handler: (req: Request) => Response | Promise<Response>, fn: (url: string) => Promise<void>) {
  const s = Bun.serve({ hostname: "127.0.0.1", port: 0, fetch: handler });
  try {
    await fn(`http://127.0.0.1:${s.port}`);
  } finally {
    await s.stop(true);
  }
}

describe("healthcheck", () => {
  test("exits 0 when project/project-id answers 200 (the header is sent: the real server refuses requests without it)", async () => {
    const r = await run(["-url", server.url]);
    expect(r.stderr).toBe("");
    expect(r.stdout).toBe("healthy\n");
    expect(r.code).toBe(0);
    // Every Go flag form, and a trailing slash.
    for (const args of [[`-url=${server.url}/`], ["--url", server.url], [`--url=${server.url}`]]) expect((await run(args)).code).toBe(0);
  });

  test("probes exactly project/project-id with Metadata-Flavor: Google", async () => {
    const seen: string[] = [];
    await withServer(
      (req) => {
        seen.push(`${new URL(req.url).pathname} ${req.headers.get("metadata-flavor")}`);
        return new Response("p");
      },
      async (url) => expect((await run(["-url", url])).code).toBe(0),
    );
    expect(seen).toEqual(["/computeMetadata/v1/project/project-id Google"]);
  });

  test("exits 1 on any other status, naming it", async () => {
    await withServer(
      () => new Response("no", { status: 503 }),
      async (url) => {
        const r = await run(["-url", url]);
        expect(r.code).toBe(1);
        expect(r.stderr).toBe(`unhealthy: ${url}/computeMetadata/v1/project/project-id answered 503\n`);
      },
    );
  });

  test("exits 1 when nothing listens", async () => {
    const s = Bun.serve({ hostname: "127.0.0.1", port: 0, fetch: () => new Response("") });
    const url = `http://127.0.0.1:${s.port}`;
    await s.stop(true);
    const r = await run(["-url", url]);
    expect(r.code).toBe(1);
    expect(r.stderr).toStartWith(`unhealthy: ${url}/computeMetadata/v1/project/project-id: `);
  });

  test("exits 1 when the answer takes longer than 2 s", async () => {
    await withServer(
      async () => {
        await Bun.sleep(6000);
        return new Response("late");
      },
      async (url) => {
        const r = await run(["-url", url]);
        expect(r.code).toBe(1);
        expect(r.stderr).toBe(`unhealthy: ${url}/computeMetadata/v1/project/project-id did not answer within 2 s\n`);
      },
    );
  }, 20_000);

  test("bad flags exit 2 with the usage; -h exits 0", async () => {
    for (const args of [["-bogus"], ["-url"], ["-url", "127.0.0.1:8080"], ["extra"], ["-url", "http://h:1/path"]]) {
      const r = await run(args);
      expect(r.code).toBe(2);
      expect(r.stderr).toContain("Usage of gce_metadata_server healthcheck:");
    }
    expect((await run(["-url", "ftp://x"])).stderr).toStartWith('invalid -url "ftp://x": use the server\'s base URL');
    const h = await run(["-h"]);
    expect(h.code).toBe(0);
    expect(h.stderr).toContain("-url string");
  });

  test("the default URL is the server's default listener", () => {
    expect(parseHealthFlags([]).url).toBe("http://127.0.0.1:8080");
  });
});
