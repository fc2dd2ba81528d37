/**
 * Subcommands: `gce_metadata_server <command> [flags]`. The command word comes first and Go-style flags follow it.
 * Each is loaded on first use, so serving (no command) and `-version` load none of them.
 */

/** A subcommand's entry point: its own arguments, the environment, and where its output goes; returns the exit code. */
export type CommandMain = (argv: string[], env: Record<string, string | undefined>) => Promise<number>;

/** Command word → loader of its module's `main`. */
export const COMMANDS: Record<string, () => Promise<CommandMain>> = {
  healthcheck: () => import("./healthcheck.ts").then((m) => m.main),
  /** Write a config file from another metadata server (a real VM's). */
  capture: async () => (await import("./capture.ts")).main,
  /** Print the lines that point every SDK at the server. */
  env: async () => (await import("./env.ts")).main,
  /** Check, from a client's side, that SDKs here would use the server. */
  doctor: async () => (await import("./doctor.ts")).main,
};

/** The subcommand named by the first argument, or undefined (serve). Own-property lookup: argv is user input. */
export function commandFor(argv: readonly string[]): (() => Promise<CommandMain>) | undefined {
  const word = argv[0];
  return word !== undefined && Object.hasOwn(COMMANDS, word) ? COMMANDS[word] : undefined;
}
