#!/usr/bin/env bun
/**
 * A reference for bench/http.ts (`--floor`): the least a faithful metadata handler does on Bun.serve, and nothing
 * else. It reads the URL and the two request headers the real server checks (X-Forwarded-For, Metadata-Flavor),
 * looks the path up in a Map, and answers with the real server's header set and the body given for that path.
 * The server's throughput can approach this, not the bare baseline: the gap between baseline and floor is what
 * fidelity costs in Bun itself (request headers materialised, six response headers, the body's size).
 *
 *   bun bench/floor-server.ts -bodies bodies.json -port :0     bodies.json: {"/computeMetadata/v1/…": "body", …}
 */
export {}; // a module, so its names stay its own

function flag(name: string, fallback: string): string {
  const argv = process.argv.slice(2);
  const i = argv.findIndex((a) => a === `-${name}` || a === `--${name}`);
  return i >= 0 && i + 1 < argv.length ? argv[i + 1]! : fallback;
}

const bodies = (await Bun.file(flag("bodies", "bodies.json")).json()) as Record<string, { body: string; type: string }>;
const table = new Map<string, [string, ResponseInit]>();
for (const [path, { body, type }] of Object.entries(bodies)) {
  const headers = new Headers({
    "Metadata-Flavor": "Google",
    Server: "Metadata Server for VM",
    "X-XSS-Protection": "0",
    "X-Frame-Options": "SAMEORIGIN",
    "Content-Type": type,
    ETag: "0123456789abcdef",
  });
  table.set(path, [body, { headers }]);
}

const server = Bun.serve({
  hostname: flag("interface", "127.0.0.1"),
  port: Number(flag("port", ":8080").replace(/^:/, "")),
  fetch(req) {
    const url = req.url;
    const p0 = url.indexOf("/", url.indexOf("://") + 3);
    const q = url.indexOf("?", p0);
    const path = q < 0 ? url.slice(p0) : url.slice(p0, q);
    const headers = req.headers;
    if (headers.get("x-forwarded-for") !== null) return new Response("forwarded\n", { status: 403 });
    if (headers.get("metadata-flavor") !== "Google") return new Response("missing Metadata-Flavor\n", { status: 403 });
    const hit = table.get(path);
    return hit === undefined ? new Response("not found\n", { status: 404 }) : new Response(hit[0], hit[1]);
  },
});
console.error(`metadata server listening url=http://${server.hostname}:${server.port}`);
