/**
 * Reproducible builds: the host executable built twice from one commit, in two checkouts at different paths (as
 * two machines would), with the version facts scripts/build.ts takes from git, is the same file byte for byte.
 */
import { afterAll, expect, test } from "bun:test";
import { $ } from "bun";
import { mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { versionFacts } from "../../scripts/build.ts";

const ROOT = join(import.meta.dir, "../..");
const work = mkdtempSync(join(tmpdir(), "gce-repro-"));
afterAll(() => rmSync(work, { recursive: true, force: true }));

/** A checkout of HEAD at `dir` (git archive: the commit, not the working tree) with the installed packages. */
async function checkout(dir: string): Promise<void> {
  mkdirSync(dir, { recursive: true });
  const tar = await $`git -C ${ROOT} archive --format=tar HEAD`.quiet().arrayBuffer();
  await $`tar -x -C ${dir} < ${new Response(tar)}`.quiet();
  // Hard links: the same packages without copying 300 MB (a real clone runs npm ci from the same lockfile).
  const linked = await $`cp -al ${join(ROOT, "node_modules")} ${join(dir, "node_modules")}`.quiet().nothrow();
  if (linked.exitCode !== 0) await $`cp -a ${join(ROOT, "node_modules")} ${join(dir, "node_modules")}`.quiet();
}

async function sha256(path: string): Promise<string> {
  return new Bun.CryptoHasher("sha256").update(await Bun.file(path).arrayBuffer()).digest("hex");
}

test("two builds of one commit, in checkouts at different paths, are byte-identical", async () => {
  // The facts a build in a git checkout bakes in: package version, the commit, the commit's date (not "now").
  const facts = await versionFacts({});
  expect(facts.commit).toMatch(/^[0-9a-f]{12}$/);
  const digests: string[] = [];
  for (const name of ["a", "second-checkout"]) {
    const dir = join(work, name);
    await checkout(dir);
    const p = Bun.spawn([process.execPath, "scripts/build.ts", "--outdir", join(dir, "out")], {
      cwd: dir,
      env: { PATH: process.env.PATH ?? "", HOME: process.env.HOME ?? work, BUILD_COMMIT: facts.commit, BUILD_DATE_ISO: facts.date },
      stdout: "pipe",
      stderr: "pipe",
    });
    const [err, code] = await Promise.all([new Response(p.stderr).text(), p.exited]);
    if (code !== 0) throw new Error(`build in ${dir} failed: ${err}`);
    digests.push(await sha256(join(dir, "out", "gce_metadata_server")));
  }
  expect(digests[0]).toMatch(/^[0-9a-f]{64}$/);
  expect(digests[1]).toBe(digests[0]!);
  const version = await $`${join(work, "a", "out", "gce_metadata_server")} -version`.quiet().text();
  expect(version).toBe(`Version: ${facts.version}\nDate: ${facts.date}\nCommit: ${facts.commit}\n`);
}, 120_000);
