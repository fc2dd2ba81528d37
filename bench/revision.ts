/**
 * The source tree at a git revision, for A/B benchmarks measured in one run: exported with `git archive` into
 * .tmp/bench/rev-<rev>, sharing this checkout's node_modules.
 */
import { mkdir, rm, symlink } from "node:fs/promises";
import { join, resolve } from "node:path";

const ROOT = resolve(import.meta.dir, "..");

export async function exportRevision(rev: string): Promise<string> {
  const dir = join(ROOT, ".tmp", "bench", `rev-${rev.replace(/[^\w.-]/g, "_")}`);
  await rm(dir, { recursive: true, force: true });
  await mkdir(dir, { recursive: true });
  const archive = Bun.spawn(["git", "-C", ROOT, "archive", rev], { stdout: "pipe", stderr: "pipe" });
  const untar = Bun.spawn(["tar", "-x", "-C", dir], { stdin: archive.stdout, stderr: "pipe" });
  const [a, t] = await Promise.all([archive.exited, untar.exited]);
  if (a !== 0 || t !== 0) throw new Error(`cannot export git revision ${rev}: ${await new Response(archive.stderr).text()}`);
  await symlink(join(ROOT, "node_modules"), join(dir, "node_modules"));
  return dir;
}
