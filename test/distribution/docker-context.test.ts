/**
 * The Dockerfile's build stage runs `bun scripts/rootfs.ts` in a build context that .dockerignore cuts down to an
 * allow-list. Every file that script imports, directly or not, must be on it, or the image build fails where no
 * test here runs Docker.
 */
import { expect, test } from "bun:test";
import { existsSync, readFileSync } from "node:fs";
import { dirname, join, relative, resolve } from "node:path";

const ROOT = resolve(import.meta.dir, "../..");

/** The paths .dockerignore lets in: it ignores everything (`*`) and re-includes `!path` and `!dir/` entries. */
function allowed(): (path: string) => boolean {
  const lines = readFileSync(join(ROOT, ".dockerignore"), "utf8")
    .split("\n")
    .map((l) => l.trim())
    .filter((l) => l !== "" && !l.startsWith("#"));
  expect(lines[0]).toBe("*");
  const keep = lines.slice(1).map((l) => {
    expect(l.startsWith("!")).toBe(true);
    return l.slice(1);
  });
  return (path) => keep.some((k) => (k.endsWith("/") ? path.startsWith(k) : path === k));
}

/** Every project file reached from `entry` by relative imports (static or dynamic). */
function reached(entry: string): string[] {
  const transpiler = new Bun.Transpiler({ loader: "ts" });
  const seen = new Set<string>();
  const visit = (file: string) => {
    if (seen.has(file)) return;
    seen.add(file);
    if (!file.endsWith(".ts")) return;
    const source = readFileSync(file, "utf8").replace(/^#!.*\n/, "");
    for (const { path } of transpiler.scanImports(source)) {
      if (!path.startsWith(".")) continue;
      const target = resolve(dirname(file), path);
      expect({ from: relative(ROOT, file), path, exists: existsSync(target) }).toEqual({ from: relative(ROOT, file), path, exists: true });
      visit(target);
    }
  };
  visit(join(ROOT, entry));
  return [...seen].map((f) => relative(ROOT, f)).sort();
}

test("every file the image build imports is in the Docker build context", () => {
  const inContext = allowed();
  const files = reached("scripts/rootfs.ts");
  // rootfs.ts builds through build.ts, which records a start through spawn.ts (bench/ is not in the context).
  expect(files).toEqual(expect.arrayContaining(["scripts/build.ts", "scripts/image-contents.ts", "scripts/spawn.ts"]));
  expect(files.filter((f) => !inContext(f))).toEqual([]);
});
