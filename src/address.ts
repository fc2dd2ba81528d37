/** Listen addresses as the operator gives them: the Go emulator's `:8080` port form. */
import { UsageError } from "./errors.ts";

/** Parse the Go emulator's ":8080" or a number. */
export function parsePort(port: number | string | undefined, what = "port"): number {
  if (port === undefined) return 8080;
  const n = typeof port === "number" ? port : Number(port.startsWith(":") ? port.slice(1) : port);
  if (!Number.isInteger(n) || n < 0 || n > 65535 || (typeof port === "string" && !/^:?\d+$/.test(port))) {
    throw new UsageError("BAD_PORT", `invalid ${what} ${JSON.stringify(port)}: use :8080, 8080 or 0`);
  }
  return n;
}

/** An address as bytes: 4 for IPv4 (IPv4-mapped IPv6 included, as dual-stack sockets report them), 16 for IPv6. */
export function addressBytes(address: string): Uint8Array | undefined {
  const v4 = ipv4Bytes(address);
  if (v4) return v4;
  const v6 = ipv6Bytes(address);
  if (!v6) return undefined;
  const mapped = v6.subarray(0, 10).every((b) => b === 0) && v6[10] === 0xff && v6[11] === 0xff;
  return mapped ? v6.slice(12) : v6;
}

function ipv4Bytes(s: string): Uint8Array | undefined {
  const parts = s.split(".");
  if (parts.length !== 4) return undefined;
  const out = new Uint8Array(4);
  for (let i = 0; i < 4; i++) {
    const p = parts[i]!;
    if (!/^(0|[1-9]\d{0,2})$/.test(p) || Number(p) > 255) return undefined;
    out[i] = Number(p);
  }
  return out;
}

function ipv6Bytes(s: string): Uint8Array | undefined {
  const text = s.startsWith("[") && s.endsWith("]") ? s.slice(1, -1) : s;
  if (!text.includes(":") || text.includes("%")) return undefined;
  const halves = text.split("::");
  if (halves.length > 2) return undefined;
  const groups = (h: string): number[] | undefined => {
    if (h === "") return [];
    const out: number[] = [];
    const parts = h.split(":");
    for (let i = 0; i < parts.length; i++) {
      const p = parts[i]!;
      if (i === parts.length - 1 && p.includes(".")) {
        const v4 = ipv4Bytes(p);
        if (!v4) return undefined;
        out.push((v4[0]! << 8) | v4[1]!, (v4[2]! << 8) | v4[3]!);
      } else if (/^[0-9a-fA-F]{1,4}$/.test(p)) out.push(Number.parseInt(p, 16));
      else return undefined;
    }
    return out;
  };
  const head = groups(halves[0]!);
  const tail = halves.length === 2 ? groups(halves[1]!) : [];
  if (!head || !tail) return undefined;
  const missing = 8 - head.length - tail.length;
  if (halves.length === 2 ? missing < 1 : missing !== 0) return undefined;
  const all = [...head, ...new Array<number>(missing).fill(0), ...tail];
  const bytes = new Uint8Array(16);
  all.forEach((g, i) => {
    bytes[2 * i] = g >> 8;
    bytes[2 * i + 1] = g & 0xff;
  });
  return bytes;
}

/**
 * An address range (`10.0.0.0/8`, `127.0.0.2/32`, `fd00::/8`; a bare address is one host). IPv4 ranges also hold
 * the IPv4-mapped IPv6 form of their addresses.
 *
 * @example
 * Cidr.parse("127.0.0.0/30")!.contains("::ffff:127.0.0.2"); // true
 */
export class Cidr {
  private constructor(
    readonly text: string,
    private readonly network: Uint8Array,
    private readonly prefix: number,
  ) {}

  /** undefined when `text` is not a CIDR or an address. */
  static parse(text: string): Cidr | undefined {
    const slash = text.indexOf("/");
    const bytes = addressBytes(slash < 0 ? text : text.slice(0, slash));
    if (!bytes) return undefined;
    const bits = bytes.length * 8;
    const prefixText = slash < 0 ? String(bits) : text.slice(slash + 1);
    if (!/^\d{1,3}$/.test(prefixText) || Number(prefixText) > bits) return undefined;
    const prefix = Number(prefixText);
    const network = bytes.map((b, i) => b & maskByte(prefix, i));
    return new Cidr(text, network, prefix);
  }

  /** Whether an address (as Bun's `requestIP` reports it) lies in the range. */
  contains(address: string): boolean {
    const bytes = addressBytes(address);
    if (!bytes || bytes.length !== this.network.length) return false;
    for (let i = 0; i < bytes.length; i++) if ((bytes[i]! & maskByte(this.prefix, i)) !== this.network[i]) return false;
    return true;
  }
}

function maskByte(prefix: number, i: number): number {
  const left = prefix - i * 8;
  return left >= 8 ? 0xff : left <= 0 ? 0 : (0xff << (8 - left)) & 0xff;
}
