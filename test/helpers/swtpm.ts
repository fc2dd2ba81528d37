/**
 * Start a throwaway software TPM (swtpm) on loopback for a test, with fresh state.
 *
 * @example
 *   const tpm = await startSwtpm();
 *   await openTpmSigner({ path: tpm.path, ... });
 *   await tpm.stop();
 */
import { mkdtemp, rm } from "node:fs/promises";
import { createConnection, createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";

export interface Swtpm {
  /** TPM command port; the control port is port + 1. */
  port: number;
  /** TCTI config for tpm2-tools and tpm2-tss: "swtpm:host=127.0.0.1,port=P". */
  tcti: string;
  /** The signer's `path`: "127.0.0.1:P". */
  path: string;
  /** The swtpm state directory (removed by stop). */
  dir: string;
  /** SIGSTOP: the TPM stops answering (its sockets stay open), as a wedged TPM would. */
  pause(): void;
  /** SIGCONT: it answers again, starting with what was sent while paused. */
  resume(): void;
  stop(): Promise<void>;
}

const DEBIAN_PACKAGES = "swtpm swtpm-tools tpm2-tools libtss2-tcti-swtpm0";

/** Throws, naming the Debian packages, when a tool the TPM tests need is not installed. */
export function requireTpmTools(tools: readonly string[] = ["swtpm", "tpm2_createprimary", "tpm2_import", "openssl"]): void {
  const missing = tools.filter((t) => !Bun.which(t));
  if (missing.length) {
    throw new Error(
      `TPM tests need ${missing.join(", ")} on PATH: install the Debian packages (apt-get install -y ${DEBIAN_PACKAGES} openssl)`,
    );
  }
}

function listen(port: number): Promise<import("node:net").Server | undefined> {
  return new Promise((resolve) => {
    const s = createServer();
    s.once("error", () => resolve(undefined));
    s.listen({ port, host: "127.0.0.1", exclusive: true }, () => resolve(s));
  });
}

function closeServer(s: import("node:net").Server): Promise<void> {
  return new Promise((resolve) => s.close(() => resolve()));
}

/** A port P with P and P+1 both free on 127.0.0.1 (they are released before returning). */
async function twoFreePorts(): Promise<number> {
  for (let i = 0; i < 50; i++) {
    const a = await listen(0);
    if (!a) continue;
    const port = (a.address() as import("node:net").AddressInfo).port;
    const b = port < 65535 ? await listen(port + 1) : undefined;
    await closeServer(a);
    if (b) {
      await closeServer(b);
      return port;
    }
  }
  throw new Error("no two consecutive free TCP ports on 127.0.0.1");
}

function accepts(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const c = createConnection({ port, host: "127.0.0.1" });
    c.once("connect", () => {
      c.destroy();
      resolve(true);
    });
    c.once("error", () => resolve(false));
  });
}

export async function startSwtpm(): Promise<Swtpm> {
  requireTpmTools(["swtpm"]);
  let lastError = "";
  for (let attempt = 0; attempt < 5; attempt++) {
    const port = await twoFreePorts();
    const dir = await mkdtemp(join(tmpdir(), "swtpm-"));
    const proc = Bun.spawn(
      [
        "swtpm",
        "socket",
        "--tpm2",
        "--server",
        `type=tcp,port=${port},bindaddr=127.0.0.1`,
        "--ctrl",
        `type=tcp,port=${port + 1},bindaddr=127.0.0.1`,
        "--flags",
        "not-need-init,startup-clear",
        "--tpmstate",
        `dir=${dir}`,
      ],
      { stdout: "ignore", stderr: "pipe" },
    );
    const deadline = Date.now() + 10_000;
    let up = false;
    while (Date.now() < deadline && proc.exitCode === null) {
      if ((await accepts(port + 1)) && (await accepts(port))) {
        up = true;
        break;
      }
      await Bun.sleep(20);
    }
    const stop = async (): Promise<void> => {
      if (proc.exitCode === null && proc.signalCode === null) {
        proc.kill("SIGCONT"); // a paused swtpm would not act on SIGTERM
        proc.kill("SIGTERM");
        const exited = await Promise.race([proc.exited.then(() => true), Bun.sleep(3000).then(() => false)]);
        if (!exited) {
          proc.kill("SIGKILL");
          await proc.exited;
        }
      }
      await rm(dir, { recursive: true, force: true });
    };
    if (up) {
      return {
        port,
        tcti: `swtpm:host=127.0.0.1,port=${port}`,
        path: `127.0.0.1:${port}`,
        dir,
        pause: () => proc.kill("SIGSTOP"),
        resume: () => proc.kill("SIGCONT"),
        stop,
      };
    }
    lastError = proc.exitCode !== null ? await new Response(proc.stderr).text() : "did not accept connections in 10 s";
    await stop();
  }
  throw new Error(`swtpm did not start: ${lastError.trim()}`);
}
