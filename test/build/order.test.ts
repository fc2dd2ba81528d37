/**
 * Release builds are laid out by a recorded start (scripts/build.ts withStartupOrder): the host executable is run
 * once with BUN_BYTECODE_ORDER_OUT and the record goes to the next build; a recording that cannot be made leaves the
 * build unordered, not failed.
 */
import { afterAll, expect, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { versionDefines, withStartupOrder } from "../../scripts/build.ts";
import { TEST_FACTS } from "../helpers/executable.ts";

const work = mkdtempSync(join(tmpdir(), "gce-order-test-"));
afterAll(() => rmSync(work, { recursive: true, force: true }));

test("a start of the server is recorded and handed to the build", async () => {
  const record = await withStartupOrder({ defines: versionDefines(TEST_FACTS), quiet: true }, async (order) => {
    expect(order).toBeString();
    const text = await Bun.file(order!).text();
    return text.split("\n").length;
  });
  // One line per function, module or string the start used: thousands, not a handful.
  expect(record).toBeGreaterThan(1000);
}, 60_000);

test("a program that never listens leaves no record, and the build goes on without one", async () => {
  const entry = join(work, "quiet.ts");
  await Bun.write(entry, 'console.error("not a server");\n');
  const order = await withStartupOrder({ entry, quiet: true }, async (o) => o);
  expect(order).toBeUndefined();
}, 60_000);
