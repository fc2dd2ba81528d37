/**
 * Request bodies read with a size cap. A declared `Content-Length` over the cap is refused before anything is read;
 * a chunked body is read until it passes the cap and refused then. Bun's own `maxRequestBodySize` (set on every
 * listener, see listen.ts) stays above these caps as a last bound, so the answer a client sees is this one, with
 * the standard headers, whenever its body fits under that bound.
 *
 * @example
 * const body = await readCapped(req, 262_144); // a string, or TooLarge
 */

/** What `readCapped` returns for a body over the cap: how large it was known to be, if declared. */
export class TooLarge {
  constructor(
    readonly limit: number,
    readonly declared: number | undefined,
  ) {}
}

/** The body as text (UTF-8), or TooLarge when it exceeds `limit` bytes. */
export async function readCapped(req: Request, limit: number): Promise<string | TooLarge> {
  const declared = req.headers.get("content-length");
  if (declared !== null) {
    const n = Number(declared);
    if (Number.isFinite(n) && n > limit) return new TooLarge(limit, n);
  }
  const body = req.body;
  if (body === null) return "";
  const chunks: Uint8Array[] = [];
  let size = 0;
  const reader = body.getReader();
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    size += value.byteLength;
    if (size > limit) {
      void reader.cancel().catch(() => {});
      return new TooLarge(limit, undefined);
    }
    chunks.push(value);
  }
  return new TextDecoder().decode(chunks.length === 1 ? chunks[0] : Buffer.concat(chunks));
}

/** `262144` → `256 KiB`, for messages. */
export function sizeText(bytes: number): string {
  if (bytes >= 1 << 20 && bytes % (1 << 20) === 0) return `${bytes / (1 << 20)} MiB`;
  if (bytes >= 1024 && bytes % 1024 === 0) return `${bytes / 1024} KiB`;
  return `${bytes} bytes`;
}
