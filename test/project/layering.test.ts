/**
 * Imports run one way: each room of src/ imports only rooms below it in this list (README, "Development"). A room
 * may import itself. Type-only imports count too: a type two rooms share lives in the lower one.
 */
import { expect, test } from "bun:test";
import { readdirSync, readFileSync } from "node:fs";
import { join, relative } from "node:path";

const SRC = join(import.meta.dir, "..", "..", "src");

/** Lowest first. The leaf modules at the top of src/ share the lowest rank. */
export const LAYERS = [
  ["errors", "json", "log", "environment", "duration", "address", "version", "clock"],
  ["tpm"],
  ["metadata"],
  ["config"],
  ["credentials"],
  ["changes"],
  ["events"],
  ["observability"],
  ["http"],
  ["index"],
  ["cli"],
] as const;

function roomOf(file: string): string {
  const rel = relative(SRC, file);
  const first = rel.split("/")[0]!;
  return first.replace(/\.ts$/, "");
}

function rank(room: string): number {
  const i = LAYERS.findIndex((l) => (l as readonly string[]).includes(room));
  if (i < 0) throw new Error(`src/${room} is in no layer: add it to LAYERS here and to the README's list`);
  return i;
}

function files(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((d) =>
    d.isDirectory() ? files(join(dir, d.name)) : d.name.endsWith(".ts") ? [join(dir, d.name)] : [],
  );
}

test("every import in src/ points at the same room or a lower one", () => {
  const upward: string[] = [];
  for (const file of files(SRC)) {
    const from = roomOf(file);
    const text = readFileSync(file, "utf8");
    for (const m of text.matchAll(/(?:from|import)\s*\(?\s*"(\.[^"]+)"/g)) {
      const target = join(file, "..", m[1]!);
      if (!target.startsWith(SRC)) continue; // package.json, config.json
      const to = roomOf(target);
      if (rank(to) > rank(from)) upward.push(`${relative(SRC, file)} -> ${relative(SRC, target)}`);
    }
  }
  expect(upward).toEqual([]);
});
