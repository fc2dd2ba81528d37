/**
 * Reading another metadata server over HTTP, as a client library does: `Metadata-Flavor: Google` on every request,
 * and an answer counts only when it carries that header back. Used by `capture`, `-upstream` (the tree and the
 * tokens) and `doctor`.
 *
 * @example
 * const base = metadataBaseUrl("127.0.0.1:8080"); // "http://127.0.0.1:8080"
 * const r = await metadataGet(base, "/computeMetadata/v1/?recursive=true", { timeoutMs: 5000 });
 */
import { UsageError } from "../errors.ts";

/** Where GCE clients look when nothing names a server. */
export const DEFAULT_METADATA_HOST = "metadata.google.internal";

/**
 * `http://host:port` from a URL or from `GCE_METADATA_HOST`'s `host[:port]` form; a UsageError for anything with a
 * path, a query or another scheme. `what` names the setting in the message.
 */
export function metadataBaseUrl(text: string, what = "the metadata server URL"): string {
  const given = text.trim();
  const withScheme = /^[a-z][a-z0-9+.-]*:\/\//i.test(given) ? given : `http://${given}`;
  let url: URL | undefined;
  try {
    url = new URL(withScheme);
  } catch {
    // reported below
  }
  if (!url || (url.protocol !== "http:" && url.protocol !== "https:") || url.host === "") {
    throw new UsageError("BAD_URL", `${what} ${JSON.stringify(text)} is not an http(s) URL or host:port (e.g. http://169.254.169.254)`);
  }
  if ((url.pathname !== "/" && url.pathname !== "") || url.search || url.hash || url.username || url.password) {
    throw new UsageError(
      "BAD_URL",
      `${what} ${JSON.stringify(text)} must name only a server, without a path or query (e.g. http://169.254.169.254)`,
    );
  }
  return `${url.protocol}//${url.host}`;
}

/** One answer of a metadata server. */
export interface MetadataAnswer {
  status: number;
  body: string;
  etag: string | null;
  contentType: string | null;
  /** The answer carried `Metadata-Flavor: Google`, as every answer of a metadata server does. */
  flavor: boolean;
  /** `Location` of a redirect (only with `redirect: "manual"`). */
  location: string | null;
}

export interface MetadataGetOptions {
  signal?: AbortSignal;
  /** Give up after this long (default 10 s). */
  timeoutMs?: number;
  /** Send `Metadata-Flavor: Google` (default true; Go's on-GCE probe of `/` sends none). */
  flavor?: boolean;
  /** Follow redirects (default) or report them. */
  redirect?: "follow" | "manual";
}

/** GET `base + path`; rejects only when no HTTP answer came (connection refused, timeout, abort). */
export async function metadataGet(base: string, path: string, options: MetadataGetOptions = {}): Promise<MetadataAnswer> {
  const timeout = AbortSignal.timeout(options.timeoutMs ?? 10_000);
  const signal = options.signal ? AbortSignal.any([options.signal, timeout]) : timeout;
  const res = await fetch(base + path, {
    headers: options.flavor === false ? {} : { "Metadata-Flavor": "Google" },
    redirect: options.redirect ?? "follow",
    signal,
  });
  const body = await res.text();
  const h = res.headers;
  return {
    status: res.status,
    body,
    etag: h.get("etag"),
    contentType: h.get("content-type"),
    flavor: h.get("metadata-flavor") === "Google",
    location: h.get("location"),
  };
}

/** The first line of an answer's body, shortened: enough to say what a server refused, never a whole page. */
export function firstLine(body: string, max = 160): string {
  const line = body
    .replace(/<(style|title)[^>]*>[\s\S]*?<\/\1>/gi, " ")
    .replace(/<[^>]*>/g, " ")
    .replace(/\s+/g, " ")
    .trim();
  return line.length > max ? `${line.slice(0, max)}…` : line;
}

/** An account's path segment: its e-mail as is (the real server refuses `%40` in paths), anything else escaped. */
export function accountSegment(email: string): string {
  return encodeURIComponent(email).replace(/%40/g, "@");
}
