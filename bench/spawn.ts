/** Servers started for a benchmark, kept so the bench stops them however it ends (`runBench`, `stopAll`). */
import type { Subprocess } from "bun";
import { startListening as listen } from "../scripts/spawn.ts";

const running: Subprocess[] = [];

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

/** Stop every server the bench started and wait for them to exit. */
export async function stopAll(): Promise<void> {
  for (const p of running) p.kill();
  await Promise.all(running.map((p) => p.exited));
}

/**
 * A bench's entry point: exit with what `main` returns; on an error (its message, exit 1), SIGINT or SIGTERM
 * (exit 130) the servers it started are killed first.
 */
export async function runBench(main: (argv: string[]) => Promise<number>): Promise<never> {
  const kill = () => {
    for (const p of running) p.kill();
  };
  const interrupted = () => {
    kill();
    process.exit(130);
  };
  process.once("SIGINT", interrupted);
  process.once("SIGTERM", interrupted);
  try {
    process.exit(await main(process.argv.slice(2)));
  } catch (e) {
    console.error((e as Error).message);
    kill();
    process.exit(1);
  }
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
