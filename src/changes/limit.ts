/**
 * The default cap on hanging requests, from the open-file limit: every hanging GET holds a socket, so without a cap
 * enough of them would leave no descriptor for ordinary requests, config reads or upstream calls. Half the soft
 * RLIMIT_NOFILE goes to waiters (at most 10,000: about 50 MB), the other half stays for everything else. With the
 * common limit of 1,024 that is 512, about what the live server reportedly allows (500).
 */
/** Waiters allowed when the limit cannot be read (not Linux). */
const UNKNOWN_LIMIT_WAITERS = 512;
export const MAX_DEFAULT_WAITERS = 10_000;

const LIMITS = "/proc/self/limits";

/** The soft open-file limit of this process (`ulimit -n`), from /proc/self/limits; undefined when unknown. */
export function openFileLimit(limits?: string): number | undefined {
  let text = limits;
  if (text === undefined) {
    try {
      text = (require("node:fs") as typeof import("node:fs")).readFileSync(LIMITS, "utf8");
    } catch {
      return undefined;
    }
  }
  const m = /^Max open files\s+(\S+)/m.exec(text);
  if (!m) return undefined;
  return m[1] === "unlimited" ? Number.POSITIVE_INFINITY : Number(m[1]);
}

/** The default `maxWaiters` for a soft open-file limit (see the file's header). */
export function defaultMaxWaiters(limit: number | undefined): number {
  if (limit === undefined || Number.isNaN(limit)) return UNKNOWN_LIMIT_WAITERS;
  return Math.max(1, Math.min(MAX_DEFAULT_WAITERS, Math.floor(limit / 2)));
}
