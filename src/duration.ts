/**
 * Go durations (`time.ParseDuration`), the syntax every duration flag and control-API field takes: `300ms`,
 * `30s`, `2m`, `1h30m`, `1.5h`, `-5m`; units ns, us (µs), ms, s, m, h. A bare number means seconds.
 *
 * @example
 * parseDuration("1h30m"); // 5_400_000 (milliseconds)
 */
import { UsageError } from "./errors.ts";

const UNIT_MS: Record<string, number> = { ns: 1e-6, us: 1e-3, µs: 1e-3, μs: 1e-3, ms: 1, s: 1000, m: 60_000, h: 3_600_000 };
const PART = /^(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)/;

/** Milliseconds (fractional below 1 ms); a UsageError names the text and shows the syntax. */
export function parseDuration(text: string): number {
  const bad = () =>
    new UsageError("BAD_DURATION", `invalid duration ${JSON.stringify(text)}: use a Go duration such as 30s, 2m, 1h30m or 500ms`);
  let rest = text.trim();
  if (/^\d+(\.\d+)?$/.test(rest)) return Number(rest) * 1000;
  let sign = 1;
  if (rest.startsWith("-") || rest.startsWith("+")) {
    if (rest[0] === "-") sign = -1;
    rest = rest.slice(1);
  }
  if (rest === "0") return 0;
  if (rest === "") throw bad();
  let total = 0;
  while (rest !== "") {
    const m = PART.exec(rest);
    if (!m) throw bad();
    total += Number(m[1]) * UNIT_MS[m[2]!]!;
    rest = rest.slice(m[0].length);
  }
  return sign * total;
}
