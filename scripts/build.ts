#!/usr/bin/env bun
/**
 * Build single-file executables with `bun build --compile`.
 *
 *   bun scripts/build.ts                 dist/gce_metadata_server for this host
 *   bun scripts/build.ts --all           every release target into dist/ plus dist/SHA256SUMS
 *   bun scripts/build.ts --target linux-arm64 [--target …]
 *   bun scripts/build.ts --outdir DIR --no-bytecode
 *
 * Version facts (src/version.ts) come from the environment when set, else from package.json and git:
 * BUILD_VERSION, BUILD_DATE_ISO (default: the commit's date, so rebuilding a commit gives the same bytes
 * where Bun allows it; "now" when not in git), BUILD_COMMIT.
 *
 * Minification: whitespace and syntax only. Elysia compiles its request handlers from source text at run time
 * (its AOT composer), which has broken under identifier renaming before; `--minify-identifiers` buys ~0.3 MB of
 * a ~110 MB file and nothing measurable at start-up, so it is not worth the risk.
 * Bytecode: `--bytecode` stores precompiled JavaScriptCore bytecode and cuts start-up (see bench/startup.ts).
 * Start-up JIT policy: the executable starts with JavaScriptCore's tier-up thresholds scaled by START_JIT_POLICY, so
 * code that runs only while it starts (flags, config compile) stays in the interpreter instead of paying for ~16
 * baseline compiles; the CLI sets the normal policy back once it listens.
 * Release builds (`buildHost`, `buildTargets`, the image) are laid out by a recorded start (`--bytecode-order`): one
 * build is run once, and the next puts the bytecode that run used first.
 */
import { $ } from "bun";
import { mkdir, mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { startListening } from "./spawn.ts";

const ROOT = resolve(import.meta.dir, "..");

/** Release targets: name suffix → Bun target. */
export const TARGETS = {
  "linux-x64": "bun-linux-x64",
  "linux-x64-baseline": "bun-linux-x64-baseline",
  "linux-arm64": "bun-linux-arm64",
  "darwin-x64": "bun-darwin-x64",
  "darwin-arm64": "bun-darwin-arm64",
  "windows-x64": "bun-windows-x64",
} as const;
export type TargetName = keyof typeof TARGETS;

export const BINARY_NAME = "gce_metadata_server";

/**
 * JavaScriptCore's tier-up thresholds are this many times the normal ones until the server listens (src/cli.ts sets
 * 1 then). At 10 nothing the server runs before its first answer is compiled; measured in bench/startup.ts, that
 * is about 9% of the start-up time and 2 MB of memory.
 */
export const START_JIT_POLICY = 10;

export interface VersionFacts {
  version: string;
  date: string;
  commit: string;
}

async function git(...args: string[]): Promise<string | undefined> {
  const r = await $`git ${args}`.cwd(ROOT).quiet().nothrow();
  return r.exitCode === 0 ? r.stdout.toString().trim() : undefined;
}

/** Version facts from the environment, else package.json and git. */
export async function versionFacts(env: Record<string, string | undefined> = process.env): Promise<VersionFacts> {
  const pkg = (await Bun.file(join(ROOT, "package.json")).json()) as { version: string };
  const commit = env.BUILD_COMMIT || (await git("rev-parse", "--short=12", "HEAD")) || "unknown";
  const date =
    env.BUILD_DATE_ISO ||
    (await git("show", "-s", "--format=%cI", "HEAD").then((d) => (d ? new Date(d).toISOString() : undefined))) ||
    new Date().toISOString();
  return { version: env.BUILD_VERSION || pkg.version, date, commit };
}

export interface CompileOptions {
  entry?: string;
  outfile: string;
  /** Bun target such as bun-linux-arm64; omitted builds for this host. */
  target?: string;
  bytecode?: boolean;
  /** Values for `--define NAME=JSON`. */
  defines?: Record<string, string>;
  quiet?: boolean;
  /** A file `recordBytecodeOrder` wrote: the bytecode that run used is laid out first. */
  bytecodeOrder?: string;
}

/** One `bun build --compile`; throws with Bun's output when it fails. */
export async function compile(o: CompileOptions): Promise<string> {
  const args = [
    "build",
    "--compile",
    "--minify-whitespace",
    "--minify-syntax",
    "--sourcemap=none",
    // ESM with code splitting: modules reached only through import() stay out of the start-up path.
    "--format=esm",
    "--splitting",
    ...(o.bytecode === false ? [] : ["--bytecode"]),
    ...(o.bytecode !== false && o.bytecodeOrder ? [`--bytecode-order=${o.bytecodeOrder}`] : []),
    `--compile-jit-policy=${START_JIT_POLICY}`,
    // A server reads its settings from flags and the environment it is given, as the Go emulator does: never a
    // `.env` or `bunfig.toml` (which can preload code) that happens to sit in its working directory.
    "--no-compile-autoload-dotenv",
    "--no-compile-autoload-bunfig",
    ...(o.target ? [`--target=${o.target}`] : []),
    ...Object.entries(o.defines ?? {}).flatMap(([k, v]) => ["--define", `${k}=${JSON.stringify(v)}`]),
    // The TPM worker is an entry point of its own: a compiled executable finds a Worker's code only there.
    ...(o.entry ? [o.entry] : [join(ROOT, "src/cli.ts"), join(ROOT, "src/tpm/worker.ts")]),
    "--outfile",
    o.outfile,
  ];
  const proc = Bun.spawn([process.execPath, ...args], { cwd: ROOT, stdout: "pipe", stderr: "pipe" });
  const [out, err, code] = await Promise.all([new Response(proc.stdout).text(), new Response(proc.stderr).text(), proc.exited]);
  if (code !== 0) throw new Error(`bun build --compile ${o.target ?? "(host)"} failed (exit ${code}):\n${out}${err}`);
  if (!o.quiet) process.stderr.write(`built ${o.outfile}${o.target ? ` (${o.target})` : ""}\n`);
  // Bun appends .exe for Windows targets when the name has none.
  return o.target?.includes("windows") && !o.outfile.endsWith(".exe") ? `${o.outfile}.exe` : o.outfile;
}

/**
 * Start `exe` as most people do (no config file: the bundled VM), read one value, stop it, and leave the record of
 * the bytecode it used in `file` (Bun's BUN_BYTECODE_ORDER_OUT). Throws when the run or the record fails.
 */
export async function recordBytecodeOrder(exe: string, file: string): Promise<void> {
  const cwd = await mkdtemp(join(tmpdir(), "gce-order-run-"));
  try {
    const { url, proc } = await startListening([exe, "-port", ":0"], cwd, exe, { BUN_BYTECODE_ORDER_OUT: file });
    const r = await fetch(`${url}/computeMetadata/v1/project/project-id`, { headers: { "Metadata-Flavor": "Google" } });
    await r.arrayBuffer();
    proc.kill("SIGINT");
    const code = await proc.exited;
    if (r.status !== 200 || code !== 0) throw new Error(`${exe}: the recorded start answered ${r.status} and exited ${code}`);
  } finally {
    await rm(cwd, { recursive: true, force: true });
  }
  if (!(await Bun.file(file).exists())) throw new Error(`${exe} wrote no bytecode order to ${file}`);
}

/**
 * Run `build` with the bytecode order of a recorded start of this host's executable (built from the same sources
 * into a temporary directory, which goes afterwards). Without bytecode there is no order to record; where the
 * recording run cannot work (no loopback interface, say), the build goes on without an order and says so.
 */
export async function withStartupOrder<T>(
  base: Omit<CompileOptions, "outfile" | "target">,
  build: (bytecodeOrder: string | undefined) => Promise<T>,
): Promise<T> {
  if (base.bytecode === false) return build(undefined);
  const dir = await mkdtemp(join(tmpdir(), "gce-order-"));
  try {
    const exe = await compile({ ...base, outfile: join(dir, BINARY_NAME), quiet: true });
    const order = join(dir, "bytecode-order");
    try {
      await recordBytecodeOrder(exe, order);
    } catch (e) {
      process.stderr.write(`no recorded start (${(e as Error).message.split("\n")[0]}): building without a bytecode order\n`);
      return await build(undefined);
    }
    return await build(order);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/** Defines that bake version facts into src/version.ts. */
export function versionDefines(v: VersionFacts): Record<string, string> {
  return { BUILD_VERSION: v.version, BUILD_DATE_ISO: v.date, BUILD_COMMIT: v.commit };
}

/** Build the host executable at `outdir/gce_metadata_server`. */
export async function buildHost(
  opts: { outdir?: string; bytecode?: boolean; version?: VersionFacts; quiet?: boolean } = {},
): Promise<string> {
  const outdir = opts.outdir ?? join(ROOT, "dist");
  await mkdir(outdir, { recursive: true });
  const v = opts.version ?? (await versionFacts());
  const base = { defines: versionDefines(v), ...(opts.bytecode === undefined ? {} : { bytecode: opts.bytecode }) };
  return withStartupOrder(base, (bytecodeOrder) =>
    compile({
      ...base,
      outfile: join(outdir, BINARY_NAME),
      ...(bytecodeOrder ? { bytecodeOrder } : {}),
      ...(opts.quiet === undefined ? {} : { quiet: opts.quiet }),
    }),
  );
}

async function sha256(path: string): Promise<string> {
  const h = new Bun.CryptoHasher("sha256");
  const stream = Bun.file(path).stream();
  for await (const chunk of stream) h.update(chunk);
  return h.digest("hex");
}

/** Build release targets into `outdir` as gce_metadata_server-<target>[.exe] and write SHA256SUMS. */
export async function buildTargets(names: TargetName[], opts: { outdir?: string; bytecode?: boolean } = {}): Promise<string[]> {
  const outdir = opts.outdir ?? join(ROOT, "dist");
  await mkdir(outdir, { recursive: true });
  const v = await versionFacts();
  const files: string[] = [];
  // Bytecode is generated by this host's JavaScriptCore; Bun supports it for cross targets of the same Bun
  // version, but keep the option to turn it off if a target ever refuses it. One recorded start orders them all.
  const base = { defines: versionDefines(v), ...(opts.bytecode === undefined ? {} : { bytecode: opts.bytecode }) };
  await withStartupOrder(base, async (bytecodeOrder) => {
    // One at a time: each compile may download a target runtime and holds ~100 MB in memory.
    for (const name of names) {
      const outfile = join(outdir, `${BINARY_NAME}-${name}${name.startsWith("windows") ? ".exe" : ""}`);
      await rm(outfile, { force: true });
      files.push(await compile({ ...base, outfile, target: TARGETS[name], ...(bytecodeOrder ? { bytecodeOrder } : {}) }));
    }
  });
  const lines: string[] = [];
  for (const f of files) lines.push(`${await sha256(f)}  ${f.slice(outdir.length + 1)}`);
  await Bun.write(join(outdir, "SHA256SUMS"), `${lines.join("\n")}\n`);
  process.stderr.write(`wrote ${join(outdir, "SHA256SUMS")} (${files.length} files)\n`);
  return files;
}

function parseArgs(argv: string[]) {
  const o = { all: false, targets: [] as TargetName[], outdir: undefined as string | undefined, bytecode: true };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const value = () => {
      const v = argv[++i];
      if (v === undefined) throw new Error(`${a} needs a value`);
      return v;
    };
    if (a === "--all") o.all = true;
    else if (a === "--no-bytecode") o.bytecode = false;
    else if (a === "--outdir") o.outdir = resolve(value());
    else if (a === "--target") {
      const t = value();
      if (!(t in TARGETS)) throw new Error(`unknown target ${t}; known: ${Object.keys(TARGETS).join(", ")}`);
      o.targets.push(t as TargetName);
    } else throw new Error(`unknown argument ${a}; usage: bun scripts/build.ts [--all | --target NAME…] [--outdir DIR] [--no-bytecode]`);
  }
  return o;
}

if (import.meta.main) {
  try {
    const o = parseArgs(process.argv.slice(2));
    const opts = { bytecode: o.bytecode, ...(o.outdir ? { outdir: o.outdir } : {}) };
    if (o.all || o.targets.length) await buildTargets(o.all ? (Object.keys(TARGETS) as TargetName[]) : o.targets, opts);
    else await buildHost(opts);
  } catch (e) {
    process.stderr.write(`${(e as Error).message}\n`);
    process.exit(1);
  }
}
