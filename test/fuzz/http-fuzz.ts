/**
 * An HTTP fuzzer over raw sockets. Each case is one connection carrying one request, two or three pipelined ones, or
 * one cut short; requests mix dot segments, encoded slashes, `%00`, bad UTF-8, very long paths, queries and headers,
 * repeated and conflicting parameters, duplicate and case-varied Metadata-Flavor, X-Forwarded-For and Forwarded
 * variants, every method, bodies (declared, chunked, mis-declared) and bare-LF framing.
 *
 * The oracle knows what it sent, and checks every answer:
 *   - no 5xx;
 *   - no answer skipped the admission rules: a request with a proxy header, or without an exact
 *     `Metadata-Flavor: Google` (or the legacy header), gets no 2xx or 3xx, except the public answers (`/`, OpenID
 *     discovery and its JWKS);
 *   - no hang: the server answers and closes each connection within a bound;
 *   - a single, plainly valid request gets an answer (pipelined ones may not: see `owed` in judge);
 * and the server process is still up, and serving, at the end.
 *
 * @example
 * const report = await fuzzHttp({ port, seed: 1, requests: 2000 });
 */
import { Random } from "./random.ts";

/** What one request was, as the oracle sees it. */
interface Sent {
  method: string;
  path: string;
  admitted: boolean;
  proxied: boolean;
  /** The next bytes after it are not a request boundary the oracle can trust (a body shorter than declared). */
  desync: boolean;
  /**
   * Plainly valid HTTP/1.1 (a known method in capitals, CRLF lines, valid headers, under 8 KB): an answer is owed.
   * Bun's parser closes the connection without one on some malformed requests, and on everything pipelined with them.
   */
  wellFormed: boolean;
}

export interface Case {
  bytes: Buffer;
  requests: Sent[];
  /** The connection is cut after a partial request: no answer is owed for it. */
  truncated: boolean;
}

export interface Finding {
  kind: "5xx" | "admission" | "hang" | "unanswered" | "malformed" | "crash";
  detail: string;
  /** The bytes sent, escaped, cut to 600 characters. */
  request: string;
}

export interface Report {
  seed: number;
  requests: number;
  cases: number;
  byStatus: Map<number, number>;
  findings: Finding[];
}

const BASES = [
  "/",
  "/computeMetadata",
  "/computeMetadata/",
  "/computeMetadata/v1",
  "/computeMetadata/v1/",
  "/computeMetadata/v1/instance",
  "/computeMetadata/v1/instance/",
  "/computeMetadata/v1/instance/id",
  "/computeMetadata/v1/instance/hostname",
  "/computeMetadata/v1/project/project-id",
  "/computeMetadata/v1/project/",
  "/computeMetadata/v1/instance/attributes/",
  "/computeMetadata/v1/instance/attributes/enable-oslogin",
  "/computeMetadata/v1/instance/network-interfaces/0/ip",
  "/computeMetadata/v1/instance/network-interfaces/0/forwarded-ips/",
  "/computeMetadata/v1/instance/disks/0/",
  "/computeMetadata/v1/instance/tags",
  "/computeMetadata/v1/instance/scheduling/preemptible",
  "/computeMetadata/v1/instance/service-accounts/",
  "/computeMetadata/v1/instance/service-accounts/default/",
  "/computeMetadata/v1/instance/service-accounts/default/email",
  "/computeMetadata/v1/instance/service-accounts/default/token",
  "/computeMetadata/v1/instance/service-accounts/default/identity",
  "/computeMetadata/v1/instance/guest-attributes/",
  "/computeMetadata/v1/instance/guest-attributes/fuzz/key",
  "/computeMetadata/v1/instance/guest-attributes/constructor/toString",
  "/computeMetadata/v1/universe/universe-domain",
  "/computeMetadata/v1/oslogin/",
  "/computeMetadata/v1beta1/",
  "/0.1/meta-data/",
  "/emulator/v1/status",
  "/emulator/v1/config",
  "/emulator/v1/metadata/instance/attributes/fuzz",
  "/emulator/v1/metadata/instance/guest-attributes",
  "/emulator/v1/update/instance/attributes/fuzz",
  "/emulator/v1/lifecycle",
  "/.well-known/openid-configuration",
  "/oauth2/v3/certs",
  "/favicon.ico",
];

const METHODS = [
  "GET",
  "GET",
  "GET",
  "GET",
  "GET",
  "GET",
  "HEAD",
  "PUT",
  "PUT",
  "DELETE",
  "POST",
  "PATCH",
  "OPTIONS",
  "TRACE",
  "get",
  "PROPFIND",
  "X",
];

/** Bytes that are not UTF-8, as latin1 characters (the request is encoded latin1: one character, one byte). */
const BAD_UTF8 = ["\xff", "\xc3\x28", "\xed\xa0\x80", "\xf8\x88\x80\x80\x80", "\x80"];

function mutatePath(r: Random, path: string): string {
  let p = path;
  const rounds = r.chance(0.5) ? 0 : 1 + r.int(3);
  for (let i = 0; i < rounds; i++) {
    const at = (() => {
      const slashes = [...p.matchAll(/\//g)].map((m) => m.index!);
      return slashes.length ? r.pick(slashes) : 0;
    })();
    switch (r.int(14)) {
      case 0:
        p = `${p.slice(0, at)}/.${p.slice(at)}`;
        break;
      case 1:
        p = `${p.slice(0, at)}/x/..${p.slice(at)}`;
        break;
      case 2:
        p = `${p.slice(0, at)}/%2e%2e${p.slice(at)}`;
        break;
      case 3:
        p = `${p.slice(0, at)}/${p.slice(at)}`;
        break;
      case 4:
        p = `${p.slice(0, at)}${r.pick(["%2F", "%2f", "%5C", "\\"])}${p.slice(at + 1)}`;
        break;
      case 5:
        p = `${p.slice(0, at)}${r.pick(["%00", "%00/", "\x00"])}${p.slice(at)}`;
        break;
      case 6: {
        // Percent-encode one ordinary character.
        const i2 = r.int(p.length);
        const c = p[i2];
        if (c !== undefined && c !== "%") p = `${p.slice(0, i2)}%${c.charCodeAt(0).toString(16).padStart(2, "0")}${p.slice(i2 + 1)}`;
        break;
      }
      case 7:
        p += r.pick(["%", "%z", "%zz", "%4", "%ff%fe", "%c3%28", "%e2%82"]);
        break;
      case 8:
        p += r.pick(BAD_UTF8);
        break;
      case 9:
        p += `/${"seg/".repeat(r.pick([10, 500, 2100, 17_000]))}`;
        break;
      case 10:
        p += Buffer.from(r.pick(["é", "日本", "💥", "\u202e"]), "utf8").toString("latin1");
        break;
      case 11:
        p = p.toUpperCase();
        break;
      case 12:
        p =
          r.pick(["*", "http://metadata.google.internal/computeMetadata/v1/project/project-id", "//computeMetadata/v1/", ""]) +
          (r.chance(0.5) ? "" : p);
        break;
      default:
        p += r.pick(["/", ";jsessionid=1", "#frag", " ", "/%20"]);
    }
  }
  return p;
}

const QUERY_KEYS = ["recursive", "alt", "last_etag", "scopes", "audience", "format", "licenses", "timeout_sec", "x"];
const QUERY_VALUES: Record<string, string[]> = {
  recursive: ["true", "True", "TRUE", "1", "false", "", "yes", "%74rue"],
  alt: ["json", "text", "xml", "", "JSON"],
  last_etag: ["0", "NONE", "abc", "d41d8cd98f00b204", ""],
  scopes: ["https://www.googleapis.com/auth/cloud-platform", "a,b,c", "", ",,,", "%2C"],
  audience: ["https://example.com", "", "x", "%zz", "a".repeat(3000)],
  format: ["full", "standard", "FULL", "weird", ""],
  licenses: ["TRUE", "false", "x"],
  timeout_sec: ["abc", "-1", "1.5", "99999999999999999999999", ""],
  x: ["y", "%", "%zz", "%ff", "\xff", "a".repeat(9000)],
};

function query(r: Random): string {
  if (r.chance(0.4)) return "";
  if (r.chance(0.05)) return "?";
  const parts: string[] = [];
  const n = 1 + r.int(5);
  let waits = false;
  for (let i = 0; i < n; i++) {
    if (r.chance(0.15)) {
      waits = true;
      parts.push(`${r.pick(["wait_for_change", "wait%5Ffor%5Fchange", "WAIT_FOR_CHANGE"])}=${r.pick(["true", "True", "1", "false"])}`);
      continue;
    }
    const key = r.pick(QUERY_KEYS);
    parts.push(r.chance(0.1) ? key : `${key}=${r.pick(QUERY_VALUES[key]!)}`);
  }
  // Conflicting repeats: the first of a key wins.
  if (r.chance(0.15)) parts.push(`${r.pick(QUERY_KEYS)}=${r.pick(["", "other", "true"])}`);
  // A wait always carries a short timeout first, so no request can legitimately hang.
  if (waits) parts.unshift(`timeout_sec=${r.pick(["0", "1"])}`);
  return `?${parts.join(r.chance(0.05) ? ";" : "&")}`;
}

interface Header {
  name: string;
  value: string;
  /** The line as sent, instead of `name: value`; `name` and `value` are then what a parser reads from it, if valid. */
  raw?: string;
  /** A raw line no parser may read as a header (space before the colon, no colon). */
  invalid?: boolean;
}

const FLAVOR_VARIANTS: Array<Header[]> = [
  [],
  [{ name: "metadata-flavor", value: "Google" }],
  [{ name: "METADATA-FLAVOR", value: "Google" }],
  [{ name: "Metadata-Flavor", value: "google" }],
  [{ name: "Metadata-Flavor", value: "Google " }],
  [{ name: "Metadata-Flavor", value: " Google" }],
  [{ name: "Metadata-Flavor", value: "Not Google" }],
  [
    { name: "Metadata-Flavor", value: "Google" },
    { name: "Metadata-Flavor", value: "Google" },
  ],
  [
    { name: "Metadata-Flavor", value: "Google" },
    { name: "metadata-flavor", value: "Other" },
  ],
  [{ name: "Metadata-Flavor", value: "Google,Google" }],
  [{ name: "Metadata-Flavor", value: "Google\x00" }],
  [{ name: "Metadata-Flavor", value: "Google", raw: "Metadata-Flavor : Google", invalid: true }],
  [{ name: "Metadata-Flavor", value: "Google", raw: "Metadata-Flavor:Google" }],
  [{ name: "Metadata_Flavor", value: "Google" }],
];

const PROXY_VARIANTS: Header[] = [
  { name: "X-Forwarded-For", value: "203.0.113.7" },
  { name: "x-forwarded-for", value: "" },
  { name: "X-FORWARDED-FOR", value: "a, b, c" },
  { name: "X-Forwarded-For", value: "\xff" },
  { name: "Forwarded", value: "for=192.0.2.60;proto=http;by=203.0.113.43" },
  { name: "forwarded", value: "" },
  { name: "FORWARDED", value: 'for="[2001:db8::1]"' },
];

function headers(r: Random, port: number): Header[] {
  const out: Header[] = [];
  const host = r.chance(0.8)
    ? "metadata.google.internal"
    : r.pick([undefined, `127.0.0.1:${port}`, "[::1]:8080", "evil@x.example", "a".repeat(300), "", "x:99999", "metadata.google.internal."]);
  if (host !== undefined) out.push({ name: "Host", value: host });
  if (r.chance(0.03)) out.push({ name: "Host", value: "second.example" });
  out.push(...(r.chance(0.6) ? [{ name: "Metadata-Flavor", value: "Google" }] : r.pick(FLAVOR_VARIANTS)));
  if (r.chance(0.08)) out.push({ name: "X-Google-Metadata-Request", value: r.pick(["True", "true", "False", "yes"]) });
  if (r.chance(0.1)) out.push(r.pick(PROXY_VARIANTS));
  if (r.chance(0.05)) out.push({ name: "X-Pad", value: "p".repeat(r.pick([100, 9000, 70_000])) });
  if (r.chance(0.03))
    out.push({
      name: "",
      value: "",
      invalid: true,
      raw: r.pick(["Junk", " folded continuation", ":novalue", "Bad Header: x", "X-Null: a\x00b"]),
    });
  if (r.chance(0.05)) out.push({ name: "Authorization", value: r.pick(["Bearer x", "Basic eA==", "Bearer"]) });
  if (r.chance(0.02)) out.push({ name: "Expect", value: "100-continue" });
  if (r.chance(0.05)) out.push({ name: r.text(1 + r.int(20)), value: r.text(r.int(40)) });
  return out;
}

/** Whether the headers admit the request the way the server reads them (names case-insensitive, values joined). */
function admission(hs: Header[]): { admitted: boolean; proxied: boolean } {
  const values = (name: string) => hs.filter((h) => !h.invalid && h.name.toLowerCase() === name).map((h) => h.value.trim());
  const flavor = values("metadata-flavor");
  const legacy = values("x-google-metadata-request");
  const ok = (flavor.length > 0 && flavor.join(", ") === "Google") || (legacy.length > 0 && legacy.join(", ").toLowerCase() === "true");
  const proxied = hs.some((h) => !h.invalid && (h.name.toLowerCase() === "x-forwarded-for" || h.name.toLowerCase() === "forwarded"));
  return { admitted: ok, proxied };
}

function body(r: Random, method: string): string | undefined {
  const writes = method === "PUT" || method === "POST" || method === "PATCH";
  if (!writes && !r.chance(0.03)) return undefined;
  if (r.chance(0.03)) return "v".repeat(300_000);
  return r.pick(['"value"', "value", "{}", '{"a":1}', "[", "", r.text(r.int(2000)), "in=30s", "\xff\xfe"]);
}

const hasByte = (s: string, test: (code: number) => boolean): boolean => {
  for (let i = 0; i < s.length; i++) if (test(s.charCodeAt(i))) return true;
  return false;
};

/** One request as text (latin1), and what the oracle needs to know about it. */
function request(r: Random, port: number, last: boolean): { text: string; sent: Sent } {
  const method = r.pick(METHODS);
  const path = mutatePath(r, r.chance(0.03) ? `/${r.text(1 + r.int(30))}` : r.pick(BASES)) + query(r);
  const hs = headers(r, port);
  const { admitted, proxied } = admission(hs);
  const b = body(r, method);
  // A body on a method that takes none may be read as the next request (Bun does for HEAD).
  let desync = b !== undefined && !["PUT", "POST", "PATCH", "DELETE"].includes(method);
  let framing = "";
  let payload = "";
  if (b !== undefined) {
    const bytes = Buffer.byteLength(b, "latin1");
    switch (r.int(6)) {
      case 0:
        framing = `Transfer-Encoding: chunked\r\n`;
        payload = `${bytes.toString(16)}\r\n${b}\r\n0\r\n\r\n`;
        break;
      case 1:
        // Declared shorter than sent: the rest reads as the next request.
        framing = `Content-Length: ${Math.max(0, bytes - 1 - r.int(5))}\r\n`;
        payload = b;
        desync = true;
        break;
      case 2:
        framing = `Content-Length: ${bytes}\r\nTransfer-Encoding: chunked\r\n`;
        payload = b;
        desync = true;
        break;
      case 3:
        framing = `Content-Length: ${bytes}\r\nContent-Length: ${bytes + 1}\r\n`;
        payload = b;
        desync = true;
        break;
      default:
        framing = `Content-Length: ${bytes}\r\n`;
        payload = b;
    }
  }
  const version = r.chance(0.92) ? "HTTP/1.1" : r.pick(["HTTP/1.0", "HTTP/2.0", "HTTP/9", "HTTP/1.1 extra"]);
  let head = `${method} ${path} ${version}\r\n`;
  for (const h of hs) head += `${h.raw ?? `${h.name}: ${h.value}`}\r\n`;
  head += framing;
  if (last) head += "Connection: close\r\n";
  let text = `${head}\r\n${payload}`;
  const bareLf = r.chance(0.03);
  if (bareLf) text = text.replace(/\r\n/g, "\n");
  const wellFormed =
    KNOWN_METHODS.has(method) &&
    version === "HTTP/1.1" &&
    !bareLf &&
    !desync &&
    !hs.some((h) => h.invalid || hasByte(h.value, (c) => c < 0x20 || c === 0x7f)) &&
    !hasByte(path, (c) => c <= 0x20 || c >= 0x7f) &&
    text.length < 8000;
  return { text, sent: { method: method.toUpperCase(), path, admitted, proxied, desync, wellFormed } };
}

/** One connection's worth of bytes. */
export function makeCase(r: Random, port: number): Case {
  const kind = r.next();
  if (kind < 0.08) {
    // Cut short: a prefix of one request, then the end of the connection.
    const { text } = request(r, port, true);
    const cut = 1 + r.int(Math.max(1, text.length - 1));
    return { bytes: Buffer.from(text.slice(0, cut), "latin1"), requests: [], truncated: true };
  }
  const n = kind < 0.8 ? 1 : 2 + r.int(2);
  const parts = Array.from({ length: n }, (_, i) => request(r, port, i === n - 1));
  return {
    bytes: Buffer.from(parts.map((p) => p.text).join(""), "latin1"),
    requests: parts.map((p) => p.sent),
    truncated: false,
  };
}

interface Answer {
  status: number;
  headers: Map<string, string>;
  body: Buffer;
}

const KNOWN_METHODS = new Set(["GET", "HEAD", "PUT", "DELETE", "POST", "PATCH", "OPTIONS", "TRACE", "PROPFIND"]);

/** Split what the server sent into answers (1xx skipped); `rest` is what did not parse as a whole answer. */
function parseAnswers(data: Buffer, methods: string[]): { answers: Answer[]; rest: number } {
  const answers: Answer[] = [];
  let at = 0;
  while (at < data.length) {
    const end = data.indexOf("\r\n\r\n", at);
    if (end < 0) break;
    const head = data.subarray(at, end).toString("latin1").split("\r\n");
    const m = /^HTTP\/1\.[01] (\d{3})/.exec(head[0]!);
    if (!m) break;
    const status = Number(m[1]);
    const hs = new Map<string, string>();
    for (const line of head.slice(1)) {
      const c = line.indexOf(":");
      if (c > 0) hs.set(line.slice(0, c).trim().toLowerCase(), line.slice(c + 1).trim());
    }
    let next = end + 4;
    let body: Buffer = Buffer.alloc(0);
    if (status >= 100 && status < 200) {
      at = next;
      continue;
    }
    const method = methods[answers.length] ?? "GET";
    if (method !== "HEAD" && status !== 204 && status !== 304) {
      if (hs.get("transfer-encoding")?.toLowerCase() === "chunked") {
        const chunks: Buffer[] = [];
        for (;;) {
          const le = data.indexOf("\r\n", next);
          if (le < 0) return { answers, rest: at };
          const size = Number.parseInt(data.subarray(next, le).toString("latin1"), 16);
          if (Number.isNaN(size)) return { answers, rest: at };
          next = le + 2;
          if (size === 0) {
            next += 2;
            break;
          }
          chunks.push(data.subarray(next, next + size));
          next += size + 2;
        }
        body = Buffer.concat(chunks);
      } else if (hs.has("content-length")) {
        const n = Number(hs.get("content-length"));
        if (next + n > data.length) return { answers, rest: at };
        body = data.subarray(next, next + n);
        next += n;
      } else {
        // No framing: the body runs to the end of the connection.
        body = data.subarray(next);
        next = data.length;
      }
    }
    answers.push({ status, headers: hs, body });
    at = next;
  }
  return { answers, rest: at };
}

const PUBLIC_BODY = /^(?:computeMetadata\/\n$|\{"issuer":|\{"keys":)/;

/** The findings one case's answers show. */
function judge(c: Case, data: Buffer, hung: boolean, byStatus: Map<number, number>): Finding[] {
  const shown = printable(c.bytes);
  const out: Finding[] = [];
  if (hung) out.push({ kind: "hang", detail: "the connection was neither answered nor closed in time", request: shown });
  const { answers, rest } = parseAnswers(
    data,
    c.requests.map((q) => q.method),
  );
  for (const [i, a] of answers.entries()) {
    byStatus.set(a.status, (byStatus.get(a.status) ?? 0) + 1);
    // Bun's parser answers an unsupported HTTP version with a bare 505 before any handler runs: a protocol answer.
    const protocol = a.status === 505 && !a.headers.has("server");
    if (a.status >= 500 && !protocol) {
      out.push({ kind: "5xx", detail: `${a.status}: ${a.body.toString("latin1").slice(0, 200)}`, request: shown });
    }
    const q = c.requests[i];
    // After a desynchronising body the rest of the bytes are not requests the oracle made.
    if (!q || c.requests.slice(0, i).some((p) => p.desync)) continue;
    const success = a.status >= 200 && a.status < 400;
    if (!success) continue;
    const text = a.body.toString("latin1");
    const isPublic =
      PUBLIC_BODY.test(text) || (q.method === "HEAD" && (a.headers.get("content-length") === "17" || /well-known|oauth2|%/i.test(q.path)));
    if (q.proxied) out.push({ kind: "admission", detail: `${a.status} to a proxied request`, request: shown });
    else if (!q.admitted && !isPublic) {
      out.push({ kind: "admission", detail: `${a.status} without Metadata-Flavor: ${text.slice(0, 120)}`, request: shown });
    }
  }
  if (rest < data.length && !c.requests.some((q) => q.desync)) {
    out.push({ kind: "malformed", detail: `unparsable bytes: ${printable(data.subarray(rest, rest + 200))}`, request: shown });
  }
  // Pipelined requests are owed nothing: Bun (1.4.5) closes a connection, unanswered, when a request arrives behind
  // one whose answer is still pending (uWS "denying async pipelining"; oven-sh/bun#33664, #38128).
  const owed = !c.truncated && c.requests.length === 1 && c.requests[0]!.wellFormed ? 1 : 0;
  if (answers.length < owed && !hung) {
    out.push({ kind: "unanswered", detail: "the connection closed without an answer", request: shown });
  }
  return out;
}

function printable(b: Buffer): string {
  const s = JSON.stringify(b.subarray(0, 600).toString("latin1"));
  return b.length > 600 ? `${s}…(${b.length} bytes)` : s;
}

/** Send one case on its own connection; resolve with what came back, or flag a hang after `timeoutMs`. */
function exchange(port: number, c: Case, timeoutMs: number): Promise<{ data: Buffer; hung: boolean }> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    let done = false;
    const finish = (hung: boolean) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      resolve({ data: Buffer.concat(chunks), hung });
    };
    const timer = setTimeout(() => {
      finish(true);
      sock?.end();
    }, timeoutMs);
    let sock: Bun.Socket<undefined> | undefined;
    let off = 0;
    const pump = (s: Bun.Socket<undefined>) => {
      while (off < c.bytes.length) {
        const n = s.write(c.bytes.subarray(off));
        if (n <= 0) return;
        off += n;
      }
      if (c.truncated) s.shutdown();
    };
    Bun.connect({
      hostname: "127.0.0.1",
      port,
      socket: {
        open(s) {
          sock = s;
          pump(s);
        },
        drain(s) {
          pump(s);
        },
        data(_s, d) {
          chunks.push(Buffer.from(d));
        },
        close() {
          finish(false);
        },
        error() {
          finish(false);
        },
      },
    }).catch(() => finish(false));
  });
}

export interface FuzzOptions {
  port: number;
  seed: number;
  /** Requests to send (pipelined ones each count). */
  requests: number;
  /** Connections in flight at once (default 32). */
  concurrency?: number;
  /** Bound on one connection (default 20 s: above the listener's ~12 s header timeout). */
  timeoutMs?: number;
  /** Called now and then with the requests sent so far. */
  progress?: (sent: number) => void;
  /** Whether the server is still up (a child process that has not exited). */
  alive?: () => boolean;
}

export async function fuzzHttp(o: FuzzOptions): Promise<Report> {
  const r = new Random(o.seed);
  const report: Report = { seed: o.seed, requests: 0, cases: 0, byStatus: new Map(), findings: [] };
  const timeoutMs = o.timeoutMs ?? 20_000;
  let lastProgress = 0;
  const worker = async () => {
    while (report.requests < o.requests) {
      if (o.alive && !o.alive()) return;
      const c = makeCase(r, o.port);
      report.requests += Math.max(1, c.requests.length);
      report.cases++;
      const { data, hung } = await exchange(o.port, c, timeoutMs);
      report.findings.push(...judge(c, data, hung, report.byStatus));
      if (o.progress && report.requests - lastProgress >= 10_000) {
        lastProgress = report.requests;
        o.progress(report.requests);
      }
    }
  };
  await Promise.all(Array.from({ length: o.concurrency ?? 32 }, worker));
  if (o.alive && !o.alive()) report.findings.push({ kind: "crash", detail: "the server process exited", request: "" });
  return report;
}
