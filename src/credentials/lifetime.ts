/**
 * The lifetime of the tokens this server mints itself (`-tokenLifetime`), and the token cache's margins scaled to
 * it: the real server refreshes five minutes ahead of an hour's expiry and never hands out a token with less than
 * four minutes left, so a two-minute lifetime refreshes 10 s ahead and keeps 8 s: the real hour, compressed.
 *
 * @example
 * const ms = tokenLifetimeMs("2m"); // 120_000
 * refreshMargins(ms);               // { refreshAheadMs: 10_000, minRemainingMs: 8_000 }
 */
import { parseDuration } from "../duration.ts";
import { UsageError } from "../errors.ts";

export const DEFAULT_TOKEN_LIFETIME_MS = 3600_000;

/** A Go duration (`"2m"`) or milliseconds, checked: whole seconds, at least 1 s; undefined is the default hour. */
export function tokenLifetimeMs(value: string | number | undefined): number {
  if (value === undefined) return DEFAULT_TOKEN_LIFETIME_MS;
  const ms = typeof value === "number" ? value : parseDuration(value);
  if (!(ms >= 1000) || ms % 1000 !== 0) {
    throw new UsageError(
      "USAGE",
      `invalid token lifetime ${JSON.stringify(String(value))}: use whole seconds of at least 1s, such as 2m or 1h`,
    );
  }
  return ms;
}

/** The cache's margins for a lifetime: refresh 5/60 of it ahead, never hand out a token with less than 4/60 left. */
export function refreshMargins(lifetimeMs: number): { refreshAheadMs: number; minRemainingMs: number } {
  return { refreshAheadMs: (lifetimeMs * 5) / 60, minRemainingMs: (lifetimeMs * 4) / 60 };
}
