/**
 * Admission of control-API requests, without Elysia: the listener's fetch runs it before the app routes (and parses)
 * a request, and the routes run it again on whatever path spelling Elysia matched (control.ts).
 */
import type { ControlTarget } from "./control.ts";
import { errorAnswer, forwarded, missingFlavor, proxyHeader } from "./pages.ts";
import { pathAndQuery, splitUrl } from "../metadata/path.ts";

/** The control API as served: what it drives and how it is guarded. */
export interface ControlOptions {
  target: ControlTarget;
  /** Every request must carry `Authorization: Bearer <token>`. */
  token?: string;
  /** Largest request body, in bytes (413 beyond). */
  maxBodyBytes: number;
}

/** The control API's default body cap: a whole config document with room to spare. */
export const DEFAULT_CONTROL_BODY_BYTES = 4 * 1024 * 1024;

const sha256 = (s: string): Uint8Array => new Bun.CryptoHasher("sha256").update(s).digest();

/**
 * A check of `Authorization: Bearer <token>` in constant time: SHA-256 digests of the guess and the token are
 * compared byte by byte without an early exit, so neither the token's length nor its prefix shows in the timing.
 */
function tokenCheck(token: string | undefined): (header: string | null) => boolean {
  if (token === undefined) return () => true;
  const want = sha256(token);
  return (header) => {
    const got = sha256(header !== null && /^Bearer /i.test(header) ? header.slice(7).trim() : "");
    let diff = 0;
    for (let i = 0; i < want.length; i++) diff |= want[i]! ^ got[i]!;
    return diff === 0;
  };
}

/**
 * Admission of a control request: refused when proxied (403), without the token (401), without Metadata-Flavor
 * (403) or with a declared body over the cap (413); undefined when it may go on.
 */
export function controlGate(options: ControlOptions): (req: Request) => Response | undefined {
  const authorized = tokenCheck(options.token);
  return (req) => {
    const h = req.headers;
    const proxy = proxyHeader(h);
    if (proxy) return forwarded(pathAndQuery(splitUrl(req.url)), proxy);
    if (!authorized(h.get("authorization"))) {
      return errorAnswer(401, "UNAUTHORIZED", "the control API needs Authorization: Bearer <the token in -controlTokenFile>", {
        "WWW-Authenticate": 'Bearer realm="control API"',
      });
    }
    if (h.get("metadata-flavor") !== "Google") return missingFlavor(pathAndQuery(splitUrl(req.url)));
    const length = Number(h.get("content-length") ?? 0);
    if (length > options.maxBodyBytes) return tooLarge(length, options.maxBodyBytes);
    return undefined;
  };
}

const tooLarge = (size: number | undefined, limit: number): Response =>
  errorAnswer(
    413,
    "TOO_LARGE",
    `the request body is ${size !== undefined ? `${size} bytes` : "larger than that"}, over the control API's limit of ${limit} bytes (-maxControlBodyBytes)`,
  );
