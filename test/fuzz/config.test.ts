/**
 * The config fuzzer's quick run (fixed seed): mutated configs as reloads, through the control API and at start-up,
 * never throw out of a reload, never replace the last good config when refused, never answer 5xx; and on the
 * command line a refused config is one line and exit 1. `npm run fuzz` runs more with a fresh seed.
 */
import { expect, test } from "bun:test";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { runCliToExit } from "../helpers/cli.ts";
import { tempDir } from "../dynamic/helpers.ts";
import { fuzzConfig } from "./config-fuzz.ts";

test("150 mutated configs (seed 20261202): no finding; refused ones are one line and exit 1 at start-up", async () => {
  const dir = tempDir();
  const report = await fuzzConfig({ seed: 20261202, iterations: 150, startupEvery: 5, dir });
  expect(report.findings).toEqual([]);
  expect(report.accepted).toBeGreaterThan(0);
  expect(report.refused.length).toBeGreaterThan(2);
  for (const [i, text] of report.refused.slice(0, 3).entries()) {
    const file = join(dir, `refused-${i}.json`);
    writeFileSync(file, text);
    const r = await runCliToExit(["-port", ":0", "-configFile", file]);
    expect(r.code).toBe(1);
    expect(r.stderr.split("\n").filter((l) => l.trim() !== "")).toHaveLength(1);
  }
}, 120_000);
