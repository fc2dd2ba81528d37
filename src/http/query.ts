/** Query-string parsing for metadata requests: values URL-decoded, the first of a repeated key wins. */

/** Parsed parameters; shared between requests with the same query string (see parseQuery), so read-only. */
export type Params = ReadonlyMap<string, string>;

function decode(s: string): string {
  if (!s.includes("%") && !s.includes("+")) return s;
  try {
    return decodeURIComponent(s.replace(/\+/g, " "));
  } catch {
    return s;
  }
}

function parse(query: string): Params {
  const out = new Map<string, string>();
  for (const part of query.split("&")) {
    if (part === "") continue;
    const eq = part.indexOf("=");
    const key = decode(eq < 0 ? part : part.slice(0, eq));
    if (!out.has(key)) out.set(key, eq < 0 ? "" : decode(part.slice(eq + 1)));
  }
  return out;
}

/**
 * Clients repeat a handful of query strings (`recursive=true`, `alt=json`, `audience=…`), so parsed results are
 * kept: a hit allocates nothing, which is ~10% of the throughput of `?recursive=true` GETs (bench/http.ts). Bounded
 * in count and length, and emptied when full, so unique queries cost a parse as before and never grow memory.
 */
const MEMO_ENTRIES = 256;
const MEMO_MAX_LENGTH = 512;
const memo = new Map<string, Params>();

export function parseQuery(query: string): Params {
  if (query.length > MEMO_MAX_LENGTH) return parse(query);
  let params = memo.get(query);
  if (params === undefined) {
    params = parse(query);
    if (memo.size >= MEMO_ENTRIES) memo.clear();
    memo.set(query, params);
  }
  return params;
}

const TRUE = new Set(["true", "1", "yes", "on"]);

/** Clients send `true`, `True`, `TRUE` (and .NET `true`); other spellings count as false, as on both emulators. */
export function flag(params: Params, key: string): boolean {
  const v = params.get(key);
  return v !== undefined && TRUE.has(v.toLowerCase());
}
