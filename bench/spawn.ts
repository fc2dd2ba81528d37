/**
 * Start a server process for a benchmark and wait for the URL it logs (`… listening url=http://…` on stderr, as the
 * server and bench/baseline-server.ts print it). Standard error keeps being drained, so a chatty server never blocks
 * on a full pipe. Every process started is in `running`, for the bench to stop.
 */
import type { Subprocess } from "bun";

export const running: Subprocess[] = [];

/** Spawn `cmd` in `cwd` and resolve with its URL once logged; throws with what it printed when it never is. */
export async function startListening(
  cmd: string[],
  cwd: string,
  what = "the server",
  env?: Record<string, string>,
): Promise<{ url: string; proc: Subprocess }> {
  const proc = Bun.spawn(cmd, {
    cwd,
    stdin: "ignore",
    stdout: "ignore",
    stderr: "pipe",
    ...(env ? { env: { ...process.env, ...env } } : {}),
  });
  running.push(proc);
  const reader = proc.stderr.getReader();
  const decoder = new TextDecoder();
  let text = "";
  const deadline = Date.now() + 15_000;
  while (Date.now() < deadline) {
    const { value, done } = await reader.read();
    if (done) break;
    text += decoder.decode(value, { stream: true });
    const m = /listening url=(http:\/\/\S+)/.exec(text);
    if (m) {
      void (async () => {
        while (!(await reader.read()).done);
      })().catch(() => {});
      return { url: m[1]!, proc };
    }
  }
  proc.kill();
  throw new Error(`${what} did not log its URL:\n${text}`);
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
