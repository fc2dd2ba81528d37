/**
 * Start a server process and wait for the URL it logs (`… listening url=http://…` on stderr, as the server and
 * bench/baseline-server.ts print it). Standard error keeps being drained, so a chatty server never blocks on a full
 * pipe. The build uses it to record a start (scripts/build.ts), the benches to drive servers (bench/spawn.ts).
 */
import type { Subprocess } from "bun";

/** Spawn `cmd` in `cwd` and resolve with its URL once logged; throws with what it printed when it never is. */
export async function startListening(
  cmd: string[],
  cwd: string,
  what = "the server",
  env?: Record<string, string>,
): Promise<{ url: string; proc: Subprocess<"ignore", "ignore", "pipe"> }> {
  const proc = Bun.spawn(cmd, {
    cwd,
    stdin: "ignore",
    stdout: "ignore",
    stderr: "pipe",
    ...(env ? { env: { ...process.env, ...env } } : {}),
  });
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
