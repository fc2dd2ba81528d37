#!/usr/bin/env bun
/**
 * Where the compiled server's start-up goes: tiny entry points, each compiled like the server (scripts/build.ts
 * flags), measured like bench/startup.ts (spawn → first HTTP 200, alternating, medians), against a bare Bun.serve.
 *
 *   node_modules/.bin/bun bench/startup-imports.ts [--runs 15]
 *
 * Each row adds one thing to the bare server: an eagerly imported library (jose, google-auth-library, prom-client,
 * Node built-ins, elysia), an Elysia app behind Bun.serve as src/http/app.ts wires it, the server's own modules and
 * snapshot compile without Elysia (src/http/handler.ts behind Bun.serve), then MetadataServer as a library uses it
 * (src/index.ts, no command line); the last row is the server (src/cli.ts). All are compiled as releases are
 * (scripts/build.ts compile: bytecode, the start-up JIT policy), without the recorded bytecode layout.
 */
import { mkdir, rm } from "node:fs/promises";
import { join, resolve } from "node:path";
import { compile } from "../scripts/build.ts";
import { alternate, describe, median } from "./startup.ts";

const ROOT = resolve(import.meta.dir, "..");
const DIR = join(ROOT, ".tmp", "bench", "imports");

const PORT = `const port = Number((process.argv[process.argv.indexOf("-port") + 1] ?? ":8080").slice(1));\n`;
const BARE = `Bun.serve({ hostname: "127.0.0.1", port, fetch: () => new Response("example-project") });\n`;

/** name → entry source (written under .tmp/, so imports resolve from the project's node_modules). */
const ENTRIES: Record<string, string> = {
  "bare Bun.serve": PORT + BARE,
  "+ import jose": `import * as jose from "jose";\n(globalThis as any).keep = jose;\n` + PORT + BARE,
  "+ import google-auth-library": `import { JWT } from "google-auth-library";\n(globalThis as any).keep = JWT;\n` + PORT + BARE,
  "+ import prom-client": `import * as prom from "prom-client";\n(globalThis as any).keep = prom;\n` + PORT + BARE,
  "+ import node:crypto, net, fs":
    `import * as a from "node:crypto";\nimport * as b from "node:net";\nimport * as c from "node:fs";\n(globalThis as any).keep = [a, b, c];\n` +
    PORT +
    BARE,
  "+ import elysia": `import { Elysia } from "elysia";\n(globalThis as any).keep = Elysia;\n` + PORT + BARE,
  // As src/http/app.ts wires it: Bun.serve answers the tree itself and hands other paths to an Elysia app.
  "elysia app behind Bun.serve":
    `import { Elysia } from "elysia";\n` +
    PORT +
    `const app = new Elysia({ strictPath: true }).get("/a", () => "a").get("/b", () => "b");\n` +
    `Bun.serve({ hostname: "127.0.0.1", port, fetch: (req) => req.url.includes("/computeMetadata/") ? new Response("example-project") : app.handle(req) });\n`,
  "server modules, no elysia": `import { claimsFromDocument, parseConfigText } from "../../../src/config/claims.ts";
import { Snapshot } from "../../../src/metadata/snapshot.ts";
import { TokenCache } from "../../../src/credentials/token-cache.ts";
import { EmulatedIssuer } from "../../../src/credentials/emulated.ts";
import { createMetadataHandler } from "../../../src/http/handler.ts";
import { createLogger } from "../../../src/log.ts";
import { readEnvironment } from "../../../src/environment.ts";
import text from "../../../config.json" with { type: "text" };
${PORT}const log = createLogger("info");
const tree = claimsFromDocument(parseConfigText(text as unknown as string) as object, { overrides: readEnvironment(process.env), requireDefaultAccount: true });
const state = { snapshot: new Snapshot(tree), tokens: new TokenCache(new EmulatedIssuer()), log, legacyHeader: true, scheme: "http" as const };
const guard = createMetadataHandler(state);
const s = Bun.serve({ hostname: "127.0.0.1", port, fetch: (req, server) => guard(req, server) ?? new Response("", { status: 404 }) });
log.info("metadata server listening", { url: "http://127.0.0.1:" + s.port });
Bun.unsafe.setJITPolicy(1);
`,
  // The library's composition root on the bundled config, without the command line.
  "MetadataServer (library), no CLI": `import { MetadataServer } from "../../../src/index.ts";
import { createLogger } from "../../../src/log.ts";
${PORT}const server = new MetadataServer({ serverConfig: { port }, log: createLogger("info") });
await server.start();
Bun.unsafe.setJITPolicy(1);
`,
};

async function main(argv: string[]): Promise<void> {
  const i = argv.indexOf("--runs");
  const runs = i >= 0 ? Math.max(5, Number(argv[i + 1])) : 15;
  await mkdir(DIR, { recursive: true });
  const names = Object.keys(ENTRIES);
  const exes: string[] = [];
  for (const [k, name] of names.entries()) {
    const entry = join(DIR, `entry${k}.ts`);
    await Bun.write(entry, ENTRIES[name]!);
    exes.push(await compile({ entry, outfile: join(DIR, `entry${k}`), quiet: true }));
  }
  names.push("server (src/cli.ts)");
  exes.push(await compile({ outfile: join(DIR, "server"), quiet: true }));
  console.log(`start-up breakdown: ${runs} alternating runs each, compiled with --bytecode and the start-up JIT policy`);
  // ~110 MB per executable: remove them when done.
  const samples = await alternate(exes, runs).finally(() => rm(DIR, { recursive: true, force: true }));
  const base = median(samples[0]!.map((x) => x.ms));
  for (const [k, name] of names.entries()) {
    const m = median(samples[k]!.map((x) => x.ms));
    console.log(`  ${name.padEnd(34)} ${describe(samples[k]!)}   +${(m - base).toFixed(1)} ms over bare`);
  }
}

if (import.meta.main) await main(process.argv.slice(2));
