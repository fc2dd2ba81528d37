/**
 * Request paths: the one place a request URL is split into path and query, and where a metadata path is
 * normalised the way the real server reads it. Never `new URL()`: Bun can hand over a request whose URL has no host
 * (just the path), and the split is on every request's hot path.
 *
 * @example
 * splitUrl("http://127.0.0.1:8080/computeMetadata/v1/?recursive=true"); // { path: "/computeMetadata/v1/", query: "recursive=true" }
 */

export interface SplitUrl {
  /** The path as sent, `/` when empty. */
  path: string;
  /** The query without its `?`, `""` when there is none. */
  query: string;
  /** Whether the URL had a `?` (an empty query still counts). */
  hasQuery: boolean;
}

/** Path and query of a request URL, absolute (`http://h/p?q`) or host-less (`/p?q`). */
export function splitUrl(url: string): SplitUrl {
  let p0 = 0;
  if (url.charCodeAt(0) !== 47) {
    const scheme = url.indexOf("://");
    p0 = scheme < 0 ? 0 : url.indexOf("/", scheme + 3);
    if (p0 < 0) p0 = url.length;
  }
  const q = url.indexOf("?", p0);
  const path = q < 0 ? url.slice(p0) : url.slice(p0, q);
  return { path: path === "" ? "/" : path, query: q < 0 ? "" : url.slice(q + 1), hasQuery: q >= 0 };
}

/** The path and query as a client sent them, for error pages and logs. */
export function pathAndQuery(u: SplitUrl): string {
  return u.hasQuery ? `${u.path}?${u.query}` : u.path;
}

/** Percent-escapes the real server refuses in paths (`!$'()*,@`). */
const FORBIDDEN_IN_PATH = /%(?:21|24|27|28|29|2a|2c|40)/i;

/** Collapse `//` and decode percent-escapes; undefined for the escapes the real server rejects in paths. */
export function normalisePath(path: string): string | undefined {
  let p = path;
  if (p.includes("%")) {
    if (FORBIDDEN_IN_PATH.test(p)) return undefined;
    try {
      p = decodeURIComponent(p);
    } catch {
      return undefined;
    }
  }
  if (p.includes("//")) p = p.replace(/\/{2,}/g, "/");
  return p;
}
