/**
 * Compose a compact RS256 JWT and have any signer sign it: a TPM, a KMS, a software key. The signer gets the
 * signing input (`base64url(header).base64url(payload)`) and returns the RSASSA-PKCS1-v1_5 SHA-256 signature.
 *
 * @example
 *   const jwt = await signJwt({ iss: email, sub: email, iat, exp }, (data) => tpm.sign(data));
 */

/** RS256 over `data`: RSASSA-PKCS1-v1_5 with SHA-256, raw signature bytes. */
export type Rs256Signer = (data: Uint8Array) => Promise<Uint8Array>;

const encoder = new TextEncoder();

function b64url(bytes: Uint8Array | string): string {
  return Buffer.from(typeof bytes === "string" ? encoder.encode(bytes) : bytes).toString("base64url");
}

/**
 * Sign `claims` (serialised in their own key order) under the header `{"alg":"RS256","kid":…,"typ":"JWT"}`,
 * `kid` only when given: Google's and golang-jwt's field order.
 */
export async function signJwt(claims: Record<string, unknown>, sign: Rs256Signer, options: { kid?: string } = {}): Promise<string> {
  const header = options.kid === undefined ? { alg: "RS256", typ: "JWT" } : { alg: "RS256", kid: options.kid, typ: "JWT" };
  const input = `${b64url(JSON.stringify(header))}.${b64url(JSON.stringify(claims))}`;
  const signature = await sign(encoder.encode(input));
  return `${input}.${b64url(signature)}`;
}

/** `exp` of a JWT in milliseconds, without verifying it; undefined if it is not a JWT. */
export function jwtExpiry(token: string): number | undefined {
  const payload = token.split(".")[1];
  if (!payload) return undefined;
  try {
    const exp = JSON.parse(Buffer.from(payload, "base64url").toString("utf8")).exp;
    return typeof exp === "number" ? exp * 1000 : undefined;
  } catch {
    return undefined;
  }
}
