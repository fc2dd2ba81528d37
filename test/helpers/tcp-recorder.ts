/**
 * A loopback TCP relay in front of a swtpm that records every byte sent to and from the TPM command port, so a
 * test can check what would be visible on the bus (e.g. that parameter encryption hides a digest).
 *
 * It runs in its own process: the signer's ESAPI calls block this process's event loop while they wait for the
 * TPM, so an in-process relay would deadlock.
 *
 * @example
 *   const rec = await startRecorder(tpm.port);
 *   await openTpmSigner({ path: rec.path, ... });
 *   contains(await rec.sent(), digest);
 */
import { appendFileSync, writeFileSync } from "node:fs";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { createConnection, createServer, type Server, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";

export interface Recorder {
  /** Relay command port (control port is port + 1). */
  port: number;
  /** The signer's `path` through the relay. */
  path: string;
  /** Everything the client sent to the TPM command port so far. */
  sent(): Promise<Uint8Array>;
  /** Everything the TPM answered on the command port so far. */
  received(): Promise<Uint8Array>;
  stop(): Promise<void>;
}

/** True when `needle` occurs in `haystack`. */
export function contains(haystack: Uint8Array, needle: Uint8Array): boolean {
  return Buffer.from(haystack.buffer, haystack.byteOffset, haystack.byteLength).indexOf(Buffer.from(needle)) >= 0;
}

export async function startRecorder(targetPort: number): Promise<Recorder> {
  const dir = await mkdtemp(join(tmpdir(), "tpm-recorder-"));
  const sentFile = join(dir, "sent.bin");
  const receivedFile = join(dir, "received.bin");
  const proc = Bun.spawn([process.execPath, import.meta.path, String(targetPort), sentFile, receivedFile], {
    stdout: "pipe",
    stderr: "inherit",
  });
  const reader = proc.stdout.getReader();
  let line = "";
  const deadline = Date.now() + 10_000;
  while (!line.includes("\n")) {
    if (Date.now() > deadline) throw new Error("TCP recorder did not start");
    const { value, done } = await reader.read();
    if (done) throw new Error("TCP recorder exited before it was ready");
    line += new TextDecoder().decode(value);
  }
  reader.releaseLock();
  const port = Number(/ready (\d+)/.exec(line)?.[1]);
  return {
    port,
    path: `127.0.0.1:${port}`,
    sent: async () => new Uint8Array(await readFile(sentFile)),
    received: async () => new Uint8Array(await readFile(receivedFile)),
    stop: async () => {
      proc.kill("SIGTERM");
      await proc.exited;
      await rm(dir, { recursive: true, force: true });
    },
  };
}

function listen(port: number, onConnection: (s: Socket) => void): Promise<Server | undefined> {
  return new Promise((resolve) => {
    const s = createServer(onConnection);
    s.once("error", () => resolve(undefined));
    s.listen({ port, host: "127.0.0.1", exclusive: true }, () => resolve(s));
  });
}

function relay(targetPort: number, record?: { sent: string; received: string }) {
  return (client: Socket): void => {
    const upstream = createConnection({ port: targetPort, host: "127.0.0.1" });
    client.on("data", (d) => {
      if (record) appendFileSync(record.sent, d);
      upstream.write(d);
    });
    upstream.on("data", (d) => {
      if (record) appendFileSync(record.received, d);
      client.write(d);
    });
    client.on("close", () => upstream.destroy());
    upstream.on("close", () => client.destroy());
    client.on("error", () => upstream.destroy());
    upstream.on("error", () => client.destroy());
  };
}

async function main(): Promise<void> {
  const [target, sent, received] = process.argv.slice(2);
  const targetPort = Number(target);
  writeFileSync(sent!, new Uint8Array());
  writeFileSync(received!, new Uint8Array());
  for (let i = 0; i < 50; i++) {
    const command = await listen(0, relay(targetPort, { sent: sent!, received: received! }));
    if (!command) continue;
    const port = (command.address() as import("node:net").AddressInfo).port;
    const control = await listen(port + 1, relay(targetPort + 1));
    if (control) {
      process.stdout.write(`ready ${port}\n`);
      return;
    }
    command.close();
  }
  throw new Error("no two consecutive free ports");
}

if (import.meta.main) await main();
