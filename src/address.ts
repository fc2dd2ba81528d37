/** Listen addresses as the operator gives them: the Go emulator's `:8080` port form. */
import { UsageError } from "./errors.ts";

/** Parse the Go emulator's ":8080" or a number. */
export function parsePort(port: number | string | undefined, what = "port"): number {
  if (port === undefined) return 8080;
  const n = typeof port === "number" ? port : Number(port.startsWith(":") ? port.slice(1) : port);
  if (!Number.isInteger(n) || n < 0 || n > 65535 || (typeof port === "string" && !/^:?\d+$/.test(port))) {
    throw new UsageError("BAD_PORT", `invalid ${what} ${JSON.stringify(port)}: use :8080, 8080 or 0`);
  }
  return n;
}
