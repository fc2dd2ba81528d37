/** The fuzz server (fuzz-server.ts) as a child process: its port, whether it is alive, the error lines it wrote. */
import { join } from "node:path";

export interface ServerProcess {
  port: number;
  alive(): boolean;
  /** Lines at WARN or ERROR level (and anything that is not a log line, such as a crash's trace). */
  errors(): string[];
  stop(): Promise<number>;
}

export async function startFuzzServer(configFile?: string): Promise<ServerProcess> {
  const child = Bun.spawn([process.execPath, join(import.meta.dir, "fuzz-server.ts"), ...(configFile ? [configFile] : [])], {
    stdin: "ignore",
    stdout: "pipe",
    stderr: "pipe",
  });
  let exited = false;
  void child.exited.then(() => {
    exited = true;
  });
  let err = "";
  void (async () => {
    const decoder = new TextDecoder();
    for await (const chunk of child.stderr as ReadableStream<Uint8Array>) err += decoder.decode(chunk, { stream: true });
  })();
  const reader = (child.stdout as ReadableStream<Uint8Array>).getReader();
  let text = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) throw new Error(`the fuzz server exited before it was ready:\n${err}`);
    text += new TextDecoder().decode(value);
    const m = /READY (\d+)/.exec(text);
    if (m) {
      return {
        port: Number(m[1]),
        alive: () => !exited,
        errors: () => err.split("\n").filter((l) => l.trim() !== ""),
        stop: async () => {
          if (!exited) child.kill("SIGTERM");
          return child.exited;
        },
      };
    }
  }
}
