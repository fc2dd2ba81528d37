/**
 * The real address: `-interface 169.254.169.254 -port :80`, inside a network namespace this test creates with the
 * link-local address on its loopback, queried from inside the namespace the way a VM's clients do (by IP, by
 * metadata.google.internal through a hosts entry, and Go's header-less OnGCE probe of `/`).
 *
 * Namespaces need root (CAP_SYS_ADMIN and CAP_NET_ADMIN) and the `ip` tool; where they cannot be made the test is
 * skipped and its name says exactly why.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { runCli, type CliProcess } from "../helpers/cli.ts";

const NS = `mds-test-${process.pid}`;

function ip(...args: string[]) {
  const r = Bun.spawnSync(["ip", ...args], { stdout: "pipe", stderr: "pipe" });
  return { ok: r.exitCode === 0, err: r.stderr.toString().trim() };
}

/** Make the namespace; undefined when done, otherwise the reason it cannot be made here. */
function makeNamespace(): string | undefined {
  if (process.platform !== "linux") return `network namespaces are Linux-only (platform ${process.platform})`;
  if (!Bun.which("ip")) return "the ip tool (iproute2) is not installed";
  if (process.getuid?.() !== 0) return `not root (uid ${process.getuid?.()}): ip netns add needs CAP_SYS_ADMIN and CAP_NET_ADMIN`;
  const add = ip("netns", "add", NS);
  if (!add.ok) return `ip netns add failed (no CAP_SYS_ADMIN/CAP_NET_ADMIN in this container?): ${add.err}`;
  for (const step of [
    ["-n", NS, "link", "set", "lo", "up"],
    ["-n", NS, "addr", "add", "169.254.169.254/32", "dev", "lo"],
  ]) {
    const r = ip(...step);
    if (!r.ok) {
      ip("netns", "del", NS);
      return `ip ${step.join(" ")} failed: ${r.err}`;
    }
  }
  return undefined;
}

const cannot = makeNamespace();
const inNs = (...argv: string[]) => ["ip", "netns", "exec", NS, ...argv];

async function curlInNs(...args: string[]) {
  const p = Bun.spawn(inNs("curl", "-sS", "--max-time", "5", ...args), { stdout: "pipe", stderr: "pipe" });
  const [out, err, code] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text(), p.exited]);
  return { code, out, err };
}

describe.skipIf(cannot !== undefined)(
  cannot === undefined ? "link-local 169.254.169.254:80 in a network namespace" : `link-local 169.254.169.254:80 (skipped: ${cannot})`,
  () => {
    let cli: CliProcess;
    beforeAll(async () => {
      cli = runCli(["-interface", "169.254.169.254", "-port", ":80"], { prefix: ["ip", "netns", "exec", NS] });
      await cli.waitFor(/metadata server listening url=http:\/\/169\.254\.169\.254:80/);
    });
    afterAll(async () => {
      if (cli) await cli.stop();
      if (cannot === undefined) ip("netns", "del", NS);
    });

    test("serves metadata at http://169.254.169.254/ from inside the namespace", async () => {
      const r = await curlInNs("-H", "Metadata-Flavor: Google", "http://169.254.169.254/computeMetadata/v1/project/project-id");
      expect(r.err).toBe("");
      expect(r.out).toBe("example-project");
    });

    test("Go's OnGCE probe: GET / without Metadata-Flavor answers 200 with the header set", async () => {
      const r = await curlInNs("-i", "http://169.254.169.254");
      expect(r.out).toStartWith("HTTP/1.1 200");
      expect(r.out.toLowerCase()).toContain("metadata-flavor: google");
    });

    test("by the name metadata.google.internal (what an /etc/hosts entry does)", async () => {
      const r = await curlInNs(
        "--resolve",
        "metadata.google.internal:80:169.254.169.254",
        "-H",
        "Metadata-Flavor: Google",
        "http://metadata.google.internal/computeMetadata/v1/instance/zone",
      );
      expect(r.out).toBe("projects/123456789012/zones/us-central1-a");
    });

    test("the listener is inside the namespace only: the host has no 169.254.169.254:80 from this server", async () => {
      const host = Bun.spawn(
        ["curl", "-sS", "--max-time", "2", "-H", "Metadata-Flavor: Google", "http://169.254.169.254/computeMetadata/v1/project/project-id"],
        {
          stdout: "pipe",
          stderr: "pipe",
        },
      );
      const [out] = await Promise.all([new Response(host.stdout).text(), host.exited]);
      expect(out).not.toBe("example-project");
    });
  },
);

if (cannot !== undefined) {
  // Say why in the run's output as well as in the skipped suite's name.
  console.warn(`link-local test skipped: ${cannot}`);
}
