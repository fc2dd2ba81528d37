/**
 * ETags: the last 16 hex digits of the MD5 of a node's default representation, as Google's reference emulator
 * computes them. A pure function of content, so identical config gives identical ETags on every replica.
 */
const hasher = new Bun.CryptoHasher("md5");

export function etagOf(body: string): string {
  hasher.update(body);
  return hasher.digest("hex").slice(16);
}
