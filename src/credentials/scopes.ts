/**
 * Which scopes an account may be given tokens for: the ones the config lists for it, and any scope at all when it
 * holds cloud-platform (which covers every Google API, as on a real VM). The token endpoint refuses others with 403,
 * the status client libraries explain as "insufficient scopes".
 *
 * @example
 *   scopeNotHeld(["https://www.googleapis.com/auth/devstorage.read_only"], [CLOUD_PLATFORM_SCOPE]); // the cloud-platform URL
 */
import { CLOUD_PLATFORM_SCOPE } from "./google.ts";

/** The first requested scope the account does not hold, or undefined when it holds them all. */
export function scopeNotHeld(held: readonly string[], requested: readonly string[]): string | undefined {
  if (held.includes(CLOUD_PLATFORM_SCOPE)) return undefined;
  return requested.find((s) => !held.includes(s));
}
