/** Google's error pages and the other fixed answers, byte for byte where the real server's are known. */
import { BASE_HEADERS } from "../metadata/snapshot.ts";

const STYLE =
  "*{margin:0;padding:0}html,code{font:15px/22px arial,sans-serif}html{background:#fff;color:#222;padding:15px}body{margin:7% auto 0;max-width:390px;min-height:180px;padding:30px 0 15px}* > body{background:url(//www.google.com/images/errors/robot.png) 100% 5px no-repeat;padding-right:205px}p{margin:11px 0 22px;overflow:hidden}ins{color:#777;text-decoration:none}a img{border:0}@media screen and (max-width:772px){body{background:none;margin-top:0;max-width:none;padding-right:0}}#logo{background:url(//www.google.com/images/branding/googlelogo/1x/googlelogo_color_150x54dp.png) no-repeat;margin-left:-5px}@media only screen and (min-resolution:192dpi){#logo{background:url(//www.google.com/images/branding/googlelogo/2x/googlelogo_color_150x54dp.png) no-repeat 0% 0%/100% 100%;-moz-border-image:url(//www.google.com/images/branding/googlelogo/2x/googlelogo_color_150x54dp.png) 0}}@media only screen and (-webkit-min-device-pixel-ratio:2){#logo{background:url(//www.google.com/images/branding/googlelogo/2x/googlelogo_color_150x54dp.png) no-repeat;-webkit-background-size:100% 100%}}#logo{display:inline-block;height:54px;width:150px}";

const HTML = "text/html; charset=UTF-8";

const STATUS_TEXT: Record<number, string> = {
  400: "Bad Request",
  403: "Forbidden",
  404: "Not Found",
  405: "Method Not Allowed",
};

const escapeHtml = (s: string): string =>
  s.replace(/[&<>"]/g, (c) => (c === "&" ? "&amp;" : c === "<" ? "&lt;" : c === ">" ? "&gt;" : "&quot;"));

/** Google's generic error page; `message` is HTML already escaped, with its trailing spaces. */
export function googleErrorPage(status: number, message: string): string {
  return `<!DOCTYPE html>
<html lang=en>
  <meta charset=utf-8>
  <meta name=viewport content="initial-scale=1, minimum-scale=1, width=device-width">
  <title>Error ${status} (${STATUS_TEXT[status] ?? "Error"})!!1</title>
  <style>
    ${STYLE}
  </style>
  <a href=//www.google.com/><span id=logo aria-label=Google></span></a>
  <p><b>${status}.</b> <ins>That’s an error.</ins>
  <p>${message}<ins>That’s all we know.</ins>
`;
}

const htmlInit = (status: number, extra?: Record<string, string>): ResponseInit => ({
  status,
  headers: { ...BASE_HEADERS, "Content-Type": HTML, ...extra },
});

const INIT_404 = htmlInit(404);
const INIT_403 = htmlInit(403);

/** 404 with the path and query in `<code>`, as the live server shows them. */
export function notFound(pathAndQuery: string): Response {
  return new Response(
    googleErrorPage(404, `The requested URL <code>${escapeHtml(pathAndQuery)}</code> was not found on this server.  `),
    INIT_404,
  );
}

/** 403 for a request without `Metadata-Flavor: Google`. */
export function missingFlavor(pathAndQuery: string): Response {
  return new Response(
    googleErrorPage(
      403,
      `Your client does not have permission to get URL <code>${escapeHtml(pathAndQuery)}</code> from this server. Missing Metadata-Flavor:Google header. `,
    ),
    INIT_403,
  );
}

/**
 * 403 for a request carrying X-Forwarded-For, or the standard `Forwarded` (RFC 7239): the server refuses proxied
 * requests, against SSRF (spec §2.4 documents X-Forwarded-For; a proxy that speaks RFC 7239 sends `Forwarded`).
 */
export function forwarded(pathAndQuery: string, header = "X-Forwarded-For"): Response {
  return new Response(
    googleErrorPage(
      403,
      `Your client does not have permission to get URL <code>${escapeHtml(pathAndQuery)}</code> from this server. Requests with ${header === "Forwarded" ? "a" : "an"} ${header} header are not accepted. `,
    ),
    INIT_403,
  );
}

/** The proxy header a request carries (`X-Forwarded-For` or `Forwarded`), or undefined. */
export function proxyHeader(headers: Headers): string | undefined {
  if (headers.get("x-forwarded-for") !== null) return "X-Forwarded-For";
  if (headers.get("forwarded") !== null) return "Forwarded";
  return undefined;
}

const JSON_INIT_HEADERS = { ...BASE_HEADERS, "Content-Type": "application/json" } as const;

/** `{"error":{"code","message"}}` with a status: how the control API reports what it refused. */
export function errorAnswer(status: number, code: string, message: string, extra?: Record<string, string>): Response {
  return new Response(JSON.stringify({ error: { code, message } }), { status, headers: { ...JSON_INIT_HEADERS, ...extra } });
}

/**
 * `Host` as a client sent it, when it is a well-formed `host[:port]` (a name, an IPv4 address or a bracketed IPv6
 * address); else `fallback` (the listener's own address). Reflected into redirects and the discovery document, so
 * `127.0.0.1:8080@evil.example` or a path never gets there.
 */
export function safeHost(host: string | null, fallback: string): string {
  if (host === null || host.length > 261) return fallback;
  const m = HOST.exec(host);
  if (!m || (m[1] !== undefined && Number(m[1]) > 65535)) return fallback;
  return host;
}

const HOST = /^(?:[A-Za-z0-9_](?:[A-Za-z0-9_.-]*)|\[[0-9A-Fa-f:.]+\])(?::(\d{1,5}))?$/;

export function methodNotAllowed(method: string, path: string, allow: string): Response {
  return new Response(
    googleErrorPage(
      405,
      `The request method <code>${escapeHtml(method)}</code> is inappropriate for the URL <code>${escapeHtml(path)}</code>.  `,
    ),
    htmlInit(405, { Allow: allow }),
  );
}

const TEXT_400 = { ...BASE_HEADERS, "Content-Type": "text/plain; charset=utf-8" };

/** 400 for improper query parameters; a short plain-text reason. */
export function badRequest(reason: string): Response {
  return new Response(`${reason}\n`, { status: 400, headers: TEXT_400 });
}

/** A plain-text answer with the standard headers (token failures, disabled endpoints). */
export function plain(status: number, body: string, contentType = "text/plain; charset=utf-8"): Response {
  return new Response(body, { status, headers: { ...BASE_HEADERS, "Content-Type": contentType } });
}

/** 403 for any guest-attribute request while `enable-guest-attributes` is not TRUE (text as captured on a VM). */
export function guestAttributesDisabled(): Response {
  return plain(403, "Guest attributes endpoint access is disabled.");
}

/**
 * Characters a header value cannot carry as they are (controls, space, DEL and everything past ASCII), percent-
 * encoded as UTF-8 (a lone surrogate as U+FFFD), so any query a client sent fits into `Location`.
 */
function headerSafe(s: string): string {
  return /[^\x21-\x7e]/.test(s) ? s.replace(/[^\x21-\x7e]/gu, (c) => encodeURIComponent(c.isWellFormed() ? c : "\ufffd")) : s;
}

/** 301 to the directory's slashed path; `Location` absolute from the request's Host, query kept after the slash. */
export function redirect(target: string, query: string, host: string, scheme: string): Response {
  return new Response(`${target}\n`, {
    status: 301,
    headers: {
      ...BASE_HEADERS,
      "Content-Type": "text/html",
      Location: headerSafe(`${scheme}://${host}${target}${query ? `?${query}` : ""}`),
    },
  });
}

/** 403 for a caller no `-callers` entry matches while the file says `"unmatched": "deny"`. */
export function callerDenied(pathAndQuery: string): Response {
  return new Response(
    googleErrorPage(
      403,
      `Your client does not have permission to get URL <code>${escapeHtml(pathAndQuery)}</code> from this server. No caller entry matches this client. `,
    ),
    INIT_403,
  );
}
