/** Servers started for a benchmark: every process started is in `running`, for the bench to stop. */
import type { Subprocess } from "bun";
import { startListening as listen } from "../scripts/spawn.ts";

export const running: Subprocess[] = [];

/** scripts/spawn.ts startListening, with the process kept in `running` for the bench to stop. */
export async function startListening(
  cmd: string[],
  cwd: string,
  what = "the server",
  env?: Record<string, string>,
): Promise<{ url: string; proc: Subprocess }> {
  const started = await listen(cmd, cwd, what, env);
  running.push(started.proc);
  return started;
}

/** The port a bench's child server prints as `READY <port>` on its standard output. */
export async function readyPort(stdout: ReadableStream<Uint8Array>): Promise<number> {
  const reader = stdout.getReader();
  const decoder = new TextDecoder();
  let text = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) throw new Error(`the server exited before it was ready:\n${text}`);
    text += decoder.decode(value, { stream: true });
    const m = /READY (\d+)/.exec(text);
    if (m) return Number(m[1]);
  }
}
