/** Query-string parsing for metadata requests: values URL-decoded, the first of a repeated key wins. */

export type Params = Map<string, string>;

function decode(s: string): string {
  if (!s.includes("%") && !s.includes("+")) return s;
  try {
    return decodeURIComponent(s.replace(/\+/g, " "));
  } catch {
    return s;
  }
}

export function parseQuery(query: string): Params {
  const out: Params = new Map();
  for (const part of query.split("&")) {
    if (part === "") continue;
    const eq = part.indexOf("=");
    const key = decode(eq < 0 ? part : part.slice(0, eq));
    if (!out.has(key)) out.set(key, eq < 0 ? "" : decode(part.slice(eq + 1)));
  }
  return out;
}

const TRUE = new Set(["true", "1", "yes", "on"]);

/** Clients send `true`, `True`, `TRUE` (and .NET `true`); other spellings count as false, as on both emulators. */
export function flag(params: Params, key: string): boolean {
  const v = params.get(key);
  return v !== undefined && TRUE.has(v.toLowerCase());
}
