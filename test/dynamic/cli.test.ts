/** The command line: the new flags parse, and a started program watches its config, serves the control API and runs events. */
import { afterEach, expect, test } from "bun:test";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import type { Subprocess } from "bun";
import { parseFlags } from "../../src/cli/flags.ts";
import { config, FLAVOR, read, tempDir, V1 } from "./helpers.ts";

const BUN = process.execPath;
const CLI = new URL("../../src/cli.ts", import.meta.url).pathname;
let child: Subprocess<"ignore", "pipe", "pipe"> | undefined;

afterEach(async () => {
  child?.kill("SIGTERM");
  await child?.exited;
  child = undefined;
});

test("flags: defaults and values", () => {
  const d = parseFlags([]);
  expect(d.watchConfig).toBe(true);
  expect(d.controlAPI).toBe(false);
  expect(d.maxWaiters).toBe(-1);
  const f = parseFlags([
    "-controlAPI",
    "-watchConfig=false",
    "-maxWaiters",
    "500",
    "-simulateMaintenance",
    "in=30s,type=MIGRATE,duration=60s",
    "--simulatePreemption=in=2m",
  ]);
  expect(f.controlAPI).toBe(true);
  expect(f.watchConfig).toBe(false);
  expect(f.maxWaiters).toBe(500);
  expect(f.simulateMaintenance).toBe("in=30s,type=MIGRATE,duration=60s");
  expect(f.simulatePreemption).toBe("in=2m");
});

/** Start the program; resolve with its URL from the "listening" log line. */
async function run(args: string[]): Promise<string> {
  child = Bun.spawn([BUN, CLI, "-port", ":0", ...args], { stdin: "ignore", stdout: "pipe", stderr: "pipe" });
  const reader = child.stderr.getReader();
  let text = "";
  const deadline = Date.now() + 10_000;
  while (Date.now() < deadline) {
    const { value, done } = await reader.read();
    if (done) break;
    text += new TextDecoder().decode(value);
    const m = /listening url=(\S+)/.exec(text);
    if (m) {
      reader.releaseLock();
      return m[1]!;
    }
  }
  throw new Error(`the program did not start:\n${text}`);
}

test("a started program reloads its config file, serves the control API and simulates maintenance", async () => {
  const dir = tempDir();
  const file = join(dir, "config.json");
  writeFileSync(file, JSON.stringify(config()));
  const url = await run(["-configFile", file, "-controlAPI", "-simulateMaintenance", "in=400ms,type=TERMINATE,duration=10m"]);
  const get = (p: string) => fetch(url + p, { headers: FLAVOR }).then(read);

  const event = get(`${V1}instance/maintenance-event?wait_for_change=true&timeout_sec=10`);
  expect((await event).body).toBe("TERMINATE_ON_HOST_MAINTENANCE");

  const c = config();
  c.computeMetadata.v1.instance.name = "reloaded";
  const name = get(`${V1}instance/name?wait_for_change=true&timeout_sec=10`);
  await Bun.sleep(100);
  writeFileSync(file, JSON.stringify(c));
  expect((await name).body).toBe("reloaded");

  const r = await fetch(`${url}/emulator/v1/update/instance/attributes/foo`, { method: "POST", body: "bar", headers: FLAVOR });
  expect(await r.text()).toBe("Update successful");
  expect((await get(`${V1}instance/attributes/foo`)).body).toBe("bar");
});

test("a bad event spec exits 2 with the reason", async () => {
  const p = Bun.spawn([BUN, CLI, "-simulatePreemption", "in=later"], { stdin: "ignore", stdout: "pipe", stderr: "pipe" });
  expect(await p.exited).toBe(2);
  expect(await new Response(p.stderr).text()).toContain('invalid duration "later"');
});
