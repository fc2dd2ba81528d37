/**
 * Text to standard output and standard error for the command line. Not `process.stdout.write`: touching
 * `process.stdout` or `process.stderr` builds Node's stream machinery, which cost the compiled program ~14 ms and
 * ~7 MB before `-version` could answer (bench/startup.ts). `console.log`/`console.error` with one string argument
 * write it verbatim (no format directives) and flush per call.
 */

/** Write `text` to standard output; a trailing newline is added when missing. */
export function printOut(text: string): void {
  if (text !== "") console.log(text.endsWith("\n") ? text.slice(0, -1) : text);
}

/** Write `text` to standard error; a trailing newline is added when missing. */
export function printErr(text: string): void {
  if (text !== "") console.error(text.endsWith("\n") ? text.slice(0, -1) : text);
}
