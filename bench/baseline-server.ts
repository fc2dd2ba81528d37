#!/usr/bin/env bun
/**
 * The baseline for the benchmarks: a bare `Bun.serve` answering every request with a fixed body. It takes the
 * server's `-port` / `-interface` flags (Go syntax, `-port :0` picks a free port) and logs its URL on stderr in
 * the same words, so bench scripts drive both the same way.
 */
export {}; // a module, so its names stay its own

function flag(name: string, fallback: string): string {
  const argv = process.argv.slice(2);
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    for (const prefix of [`-${name}`, `--${name}`]) {
      if (a === prefix && i + 1 < argv.length) return argv[i + 1]!;
      if (a.startsWith(`${prefix}=`)) return a.slice(prefix.length + 1);
    }
  }
  return fallback;
}

const port = Number(flag("port", ":8080").replace(/^:/, ""));
const hostname = flag("interface", "127.0.0.1");
const body = "example-project";

const server = Bun.serve({ hostname, port, fetch: () => new Response(body) });
// console.error, not process.stderr.write: the latter builds Node's stream machinery (~7 ms, ~6 MB in a compiled binary).
console.error(`metadata server listening url=http://${hostname}:${server.port}`);
for (const signal of ["SIGINT", "SIGTERM"] as const) process.once(signal, () => void server.stop(true).then(() => process.exit(0)));
