#!/usr/bin/env bun
/**
 * The test command (`npm test`): make sure the Debian packages the tests use are installed, run `bun test`, and
 * end with one line `N passed, M failed`.
 *
 *   npm test                      the whole suite
 *   npm test -- test/http         arguments go to `bun test` (path filters, -t NAME, --bail, …)
 *
 * Missing packages are installed with apt-get when running as root (after `apt-get update` if the first attempt
 * fails); otherwise one line names them and the suite runs anyway (tests that need them fail and say why).
 * Exits non-zero when a test failed, when Bun reported errors outside tests, or when no test ran.
 *
 * A whole-suite run first runs the type check and Biome's lint and format check; each counts as one test.
 *
 * Environment: TEST_STATIC=1 runs those checks on a filtered run too; TEST_SKIP_APT=1 skips the package step;
 * TEST_TIMEOUT_MS sets the per-test timeout (default 60000); TEST_TOTAL_TIMEOUT_MIN stops the whole run after that
 * many minutes (default 45).
 */
import { join, resolve } from "node:path";

const ROOT = resolve(import.meta.dir, "..");

/** Debian 12 packages the suite needs, with what needs them. */
export const DEBIAN_PACKAGES = [
  "swtpm", // software TPM (test/tpm, test/helpers/swtpm.ts)
  "swtpm-tools", // swtpm_setup
  "tpm2-tools", // key import and checks in TPM tests
  "libtss2-esys-3.0.2-0", // bun:ffi TPM signer (src/tpm)
  "libtss2-tctildr0",
  "libtss2-tcti-swtpm0",
  "libtss2-mu0",
  "libtss2-rc0",
  "libtss2-sys1",
  "libtss2-tcti-device0", // the image's TCTIs (scripts/image-contents.ts, test/distribution/rootfs.test.ts)
  "libtss2-tcti-mssim0",
  "netbase", // distroless base contents for `npm run rootfs` (taken from the installed packages)
  "media-types",
  "tzdata",
  "ca-certificates",
  "libgomp1",
  "qemu-user-static", // runs the arm64 image tree (test/distribution/rootfs.test.ts)
  "wrk", // benchmarks (bench/)
  "curl", // and the action's release download (test/distribution/ci.test.ts)
  "openssl", // test keys and certificates
  "iproute2", // link-local tests in network namespaces
  "python3-google-auth", // test/clients: Python google-auth
  "python3-requests", // its HTTP transport (only Recommended by python3-google-auth, and we skip Recommends)
  "golang-go", // test/clients: Go compute/metadata
  "golang-google-cloud-compute-metadata-dev",
  "golang-golang-x-oauth2-google-dev", // examples/go: oauth2/google
  "golang-google-api-dev", // examples/go: idtoken
  "libgoogle-auth-java", // examples/java: google-auth-library-java
  "openjdk-17-jdk-headless", // examples/java: java runs the source file (needs the compiler)
] as const;

async function run(cmd: string[], opts: { quiet?: boolean } = {}): Promise<{ code: number; out: string }> {
  const p = Bun.spawn(cmd, {
    stdin: "ignore",
    stdout: opts.quiet ? "pipe" : "inherit",
    stderr: opts.quiet ? "pipe" : "inherit",
    env: { ...process.env, DEBIAN_FRONTEND: "noninteractive" },
  });
  const out = opts.quiet
    ? (await new Response(p.stdout as ReadableStream).text()) + (await new Response(p.stderr as ReadableStream).text())
    : "";
  return { code: await p.exited, out };
}

/** Packages from `wanted` that dpkg does not report as installed. */
export async function missingPackages(wanted: readonly string[]): Promise<string[]> {
  if (!Bun.which("dpkg-query")) return [];
  // biome-ignore lint/suspicious/noTemplateCurlyInString: dpkg-query's own format syntax
  const { out } = await run(["dpkg-query", "-W", "-f=${Package} ${db:Status-Status}\\n", ...wanted], { quiet: true });
  const installed = new Set(
    out
      .split("\n")
      .map((l) => l.trim().split(" "))
      .filter(([, status]) => status === "installed")
      .map(([name]) => name!.replace(/:.*$/, "")),
  );
  return wanted.filter((p) => !installed.has(p));
}

async function ensurePackages(): Promise<void> {
  if (process.env.TEST_SKIP_APT === "1") return;
  if (!Bun.which("dpkg-query")) {
    say(`not a Debian system: make sure these are installed: ${DEBIAN_PACKAGES.join(" ")}`);
    return;
  }
  const missing = await missingPackages(DEBIAN_PACKAGES);
  if (missing.length === 0) return;
  if (process.getuid?.() !== 0) {
    say(`missing Debian packages (tests that need them will fail): sudo apt-get install -y ${missing.join(" ")}`);
    return;
  }
  say(`installing Debian packages: ${missing.join(" ")}`);
  const install = ["apt-get", "install", "-y", "--no-install-recommends", ...missing];
  if ((await run(install)).code !== 0) {
    await run(["apt-get", "update"]);
    if ((await run(install)).code !== 0) say(`apt-get could not install ${missing.join(" ")}; running the tests anyway`);
  }
}

export interface Summary {
  pass: number;
  fail: number;
  errors: number;
}

/** Bun's closing summary (" 12 pass", " 1 fail", "2 errors"); the last occurrence wins. */
export function parseSummary(text: string): Summary {
  const last = (re: RegExp): number => {
    let n = 0;
    for (const m of text.matchAll(re)) n = Number(m[1]);
    return n;
  };
  return {
    pass: last(/^\s*(\d+) pass\s*$/gm),
    fail: last(/^\s*(\d+) fail\s*$/gm),
    errors: last(/^\s*(\d+) errors?\s*$/gm),
  };
}

/** Forward a stream to one of our own while keeping its tail for the summary. */
async function tee(stream: ReadableStream<Uint8Array>, sink: NodeJS.WriteStream, keep: string[]): Promise<void> {
  const decoder = new TextDecoder();
  for await (const chunk of stream) {
    sink.write(chunk);
    keep.push(decoder.decode(chunk, { stream: true }));
    // Only the end matters; keep memory bounded on long, chatty runs.
    if (keep.length > 4096) keep.splice(0, keep.length - 2048);
  }
}

const say = (line: string) => process.stdout.write(`${line}\n`);

/** The static checks the test command runs first: each is one more failure when it reports anything. */
const CHECKS: Array<{ name: string; cmd: string[] }> = [
  { name: "type check (tsc --noEmit)", cmd: [join(ROOT, "node_modules/.bin/tsc"), "--noEmit", "-p", ROOT] },
  { name: "lint and format (biome check)", cmd: [join(ROOT, "node_modules/.bin/biome"), "check", "--error-on-warnings", ROOT] },
];

/** Run the static checks; returns how many failed (their output is shown only then). */
async function staticChecks(): Promise<number> {
  let failed = 0;
  for (const c of CHECKS) {
    const r = await run(c.cmd, { quiet: true });
    if (r.code === 0) {
      say(`(pass) ${c.name}`);
      continue;
    }
    failed++;
    say(`(fail) ${c.name}\n${r.out.trimEnd()}`);
  }
  return failed;
}

export async function main(args: string[]): Promise<number> {
  await ensurePackages();
  // Only for a whole-suite run (or TEST_STATIC=1): a run filtered to some files is about those tests.
  const withChecks = args.length === 0 || process.env.TEST_STATIC === "1";
  const checkFailures = withChecks ? await staticChecks() : 0;
  const timeout = process.env.TEST_TIMEOUT_MS ?? "60000";
  const totalMin = Number(process.env.TEST_TOTAL_TIMEOUT_MIN ?? "45");
  const cmd = [process.execPath, "test", "--timeout", timeout, ...args];
  say(`$ bun ${cmd.slice(1).join(" ")}`);
  const p = Bun.spawn(cmd, {
    cwd: ROOT,
    stdin: "ignore",
    stdout: "pipe",
    stderr: "pipe",
    env: { ...process.env, FORCE_COLOR: "0", NO_COLOR: "1" },
  });
  let timedOut = false;
  const watchdog = setTimeout(() => {
    timedOut = true;
    process.stderr.write(`\nthe test run exceeded ${totalMin} minutes: stopping it\n`);
    p.kill("SIGKILL");
  }, totalMin * 60_000);
  const forward = (signal: NodeJS.Signals) => process.once(signal, () => p.kill(signal));
  forward("SIGINT");
  forward("SIGTERM");
  const kept: string[] = [];
  await Promise.all([tee(p.stdout, process.stdout, kept), tee(p.stderr, process.stderr, kept)]);
  const code = await p.exited;
  clearTimeout(watchdog);
  const s = parseSummary(kept.join(""));
  // Errors outside tests (an unhandled rejection, a file that fails to load) count as failures.
  const failed = s.fail + s.errors + (timedOut ? 1 : 0) + checkFailures;
  const passed = s.pass + (withChecks ? CHECKS.length - checkFailures : 0);
  say(`${passed} passed, ${failed} failed`);
  if (s.pass === 0) return 1;
  return failed > 0 || code !== 0 ? 1 : 0;
}

if (import.meta.main) process.exit(await main(process.argv.slice(2)));
