/**
 * A strict JSON parser that keeps what JSON.parse throws away: the exact text of every number (instance ids exceed
 * 2^53) and the line and column of a syntax error, so a bad config file is reported precisely. Nesting is capped
 * ({@link MAX_JSON_DEPTH}) before anything recursive runs, so no document can exhaust the stack.
 */
import { ConfigError } from "./errors.ts";

/**
 * Deepest nesting of arrays and objects accepted. The real tree is about 8 levels deep; documents under free-form
 * keys add a few more. Recursion over values (parsing, tree building, rendering) stays far from the stack limit.
 */
export const MAX_JSON_DEPTH = 100;

const tooDeep = (where: string): ConfigError =>
  new ConfigError("CONFIG_TOO_DEEP", `${where}nested deeper than ${MAX_JSON_DEPTH} levels of arrays and objects; flatten it`);

/** A JSON number kept as its literal text. */
export class JsonNumber {
  constructor(readonly raw: string) {}
  get isInteger(): boolean {
    return /^-?\d+$/.test(this.raw);
  }
}

export type JsonValue = string | boolean | null | JsonNumber | JsonValue[] | JsonObject;
/** Objects keep insertion order; a null prototype so keys such as `__proto__` are plain data. */
export type JsonObject = { [key: string]: JsonValue };

export class JsonSyntaxError extends Error {
  constructor(
    message: string,
    readonly line: number,
    readonly column: number,
  ) {
    super(`line ${line}, column ${column}: ${message}`);
  }
}

const NUMBER = /-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?/y;

/** Native JSON.parse keeping each number's source text (JSC passes it to the reviver); null-prototype objects. */
function reviver(this: unknown, _key: string, value: unknown, context?: { source?: string }): unknown {
  if (typeof value === "number") return new JsonNumber(context?.source ?? String(value));
  if (value !== null && typeof value === "object" && !Array.isArray(value)) return Object.assign(Object.create(null), value);
  return value;
}

/**
 * Parse JSON text. The native parser does the work; when it refuses the text, the parser below runs to say where,
 * by line and column. Duplicate keys: the last one wins, as with JSON.parse and Go's decoder.
 */
export function parseJson(text: string): JsonValue {
  checkDepth(text);
  const body = text.charCodeAt(0) === 0xfeff ? text.slice(1) : text;
  let v: JsonValue;
  try {
    v = JSON.parse(body, reviver as (key: string, value: unknown) => unknown) as JsonValue;
  } catch {
    v = parsePositioned(text);
  }
  if (typeof v === "object" && v !== null) parsed.add(v);
  return v;
}

/** Values parseJson returned: JsonValue throughout, so they need no conversion by fromPlain. */
const parsed = new WeakSet<object>();

/** Whether `v` is a document parseJson returned (and so JsonValue all the way down, unless changed since). */
export function isParsedJson(v: unknown): v is JsonValue {
  return typeof v === "object" && v !== null && parsed.has(v);
}

/**
 * Whether the text holds at most MAX_JSON_DEPTH opening brackets, so it cannot nest deeper. Native `indexOf` steps
 * from bracket to bracket: a typical config is accepted in a few dozen steps instead of a pass over every character
 * (which at start-up also costs a JIT compile).
 */
function fewBrackets(text: string): boolean {
  let n = 0;
  for (const open of ["{", "["]) {
    for (let i = text.indexOf(open); i >= 0; i = text.indexOf(open, i + 1)) if (++n > MAX_JSON_DEPTH) return false;
  }
  return true;
}

/** Throws CONFIG_TOO_DEEP when brackets outside strings nest past the cap; one linear pass, no recursion. */
function checkDepth(text: string): void {
  if (fewBrackets(text)) return;
  let depth = 0;
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (inString) {
      if (c === 92)
        i++; // backslash: skip the escaped character
      else if (c === 34) inString = false;
    } else if (c === 34) inString = true;
    else if (c === 123 || c === 91) {
      if (++depth > MAX_JSON_DEPTH) {
        let line = 1;
        let lineStart = 0;
        for (let k = 0; k < i; k++) {
          if (text.charCodeAt(k) === 10) {
            line++;
            lineStart = k + 1;
          }
        }
        throw tooDeep(`line ${line}, column ${i - lineStart + 1}: `);
      }
    } else if (c === 125 || c === 93) depth--;
  }
}

function parsePositioned(text: string): JsonValue {
  let i = 0;
  // A UTF-8 byte-order mark is common in files written on Windows.
  if (text.charCodeAt(0) === 0xfeff) i = 1;

  const fail = (message: string, at = i): never => {
    let line = 1;
    let lineStart = 0;
    for (let k = 0; k < at && k < text.length; k++) {
      if (text.charCodeAt(k) === 10) {
        line++;
        lineStart = k + 1;
      }
    }
    throw new JsonSyntaxError(message, line, at - lineStart + 1);
  };

  const describe = (at: number): string => {
    if (at >= text.length) return "end of file";
    return JSON.stringify(text[at]);
  };

  const skip = (): void => {
    for (;;) {
      const c = text.charCodeAt(i);
      if (c === 32 || c === 9 || c === 10 || c === 13) i++;
      else return;
    }
  };

  const parseString = (): string => {
    const start = i;
    i++; // opening quote
    let out = "";
    let chunk = i;
    for (;;) {
      if (i >= text.length) fail("unterminated string", start);
      const c = text.charCodeAt(i);
      if (c === 34) {
        out += text.slice(chunk, i);
        i++;
        return out;
      }
      if (c < 0x20) fail("control character in string (escape newlines as \\n)");
      if (c === 92) {
        out += text.slice(chunk, i);
        const e = text[i + 1];
        switch (e) {
          case '"':
          case "\\":
          case "/":
            out += e;
            i += 2;
            break;
          case "b":
            out += "\b";
            i += 2;
            break;
          case "f":
            out += "\f";
            i += 2;
            break;
          case "n":
            out += "\n";
            i += 2;
            break;
          case "r":
            out += "\r";
            i += 2;
            break;
          case "t":
            out += "\t";
            i += 2;
            break;
          case "u": {
            const hex = text.slice(i + 2, i + 6);
            if (!/^[0-9a-fA-F]{4}$/.test(hex)) fail("bad \\u escape");
            out += String.fromCharCode(parseInt(hex, 16));
            i += 6;
            break;
          }
          default:
            fail(`bad escape \\${e ?? ""}`);
        }
        chunk = i;
        continue;
      }
      i++;
    }
  };

  const parseValue = (): JsonValue => {
    skip();
    const c = text[i];
    if (c === "{") {
      i++;
      const obj: JsonObject = Object.create(null);
      skip();
      if (text[i] === "}") {
        i++;
        return obj;
      }
      for (;;) {
        skip();
        if (text[i] !== '"') fail(`expected a quoted key, found ${describe(i)}`);
        const key = parseString();
        skip();
        if (text[i] !== ":") fail(`expected ':' after key ${JSON.stringify(key)}, found ${describe(i)}`);
        i++;
        obj[key] = parseValue();
        skip();
        if (text[i] === ",") {
          i++;
          skip();
          if (text[i] === "}") fail("trailing comma before '}'");
          continue;
        }
        if (text[i] === "}") {
          i++;
          return obj;
        }
        fail(`expected ',' or '}', found ${describe(i)}`);
      }
    }
    if (c === "[") {
      i++;
      const arr: JsonValue[] = [];
      skip();
      if (text[i] === "]") {
        i++;
        return arr;
      }
      for (;;) {
        arr.push(parseValue());
        skip();
        if (text[i] === ",") {
          i++;
          skip();
          if (text[i] === "]") fail("trailing comma before ']'");
          continue;
        }
        if (text[i] === "]") {
          i++;
          return arr;
        }
        fail(`expected ',' or ']', found ${describe(i)}`);
      }
    }
    if (c === '"') return parseString();
    if (text.startsWith("true", i)) {
      i += 4;
      return true;
    }
    if (text.startsWith("false", i)) {
      i += 5;
      return false;
    }
    if (text.startsWith("null", i)) {
      i += 4;
      return null;
    }
    NUMBER.lastIndex = i;
    const m = NUMBER.exec(text);
    if (m) {
      i += m[0].length;
      return new JsonNumber(m[0]);
    }
    return fail(`unexpected ${describe(i)}`);
  };

  const value = parseValue();
  skip();
  if (i < text.length) fail(`unexpected ${describe(i)} after the end of the document`);
  return value;
}

export function isJsonObject(v: JsonValue | undefined): v is JsonObject {
  return typeof v === "object" && v !== null && !Array.isArray(v) && !(v instanceof JsonNumber);
}

/** Convert plain JavaScript data (numbers included) into a JsonValue tree; bigint keeps its digits. */
export function fromPlain(v: unknown, depth = 0): JsonValue {
  if (v === null || v === undefined) return null;
  if (typeof v === "string" || typeof v === "boolean") return v;
  if (typeof v === "number") {
    if (!Number.isFinite(v)) throw new ConfigError("CONFIG_SHAPE", `${v} is not a JSON number`);
    return new JsonNumber(String(v));
  }
  if (typeof v === "bigint") return new JsonNumber(v.toString());
  if (v instanceof JsonNumber) return v;
  // Objects also catch cycles here: a cyclic value is infinitely deep.
  if (typeof v === "object" && depth >= MAX_JSON_DEPTH) throw tooDeep("");
  if (Array.isArray(v)) return v.map((x) => fromPlain(x, depth + 1));
  if (typeof v === "object") {
    const o: JsonObject = Object.create(null);
    for (const [k, val] of Object.entries(v as Record<string, unknown>)) {
      if (val !== undefined) o[k] = fromPlain(val, depth + 1);
    }
    return o;
  }
  throw new ConfigError("CONFIG_SHAPE", `a ${typeof v} cannot be represented in JSON`);
}

/** Serialise a JsonValue compactly, numbers verbatim. */
export function stringify(v: JsonValue): string {
  if (v === null) return "null";
  if (typeof v === "string") return JSON.stringify(v);
  if (typeof v === "boolean") return v ? "true" : "false";
  if (v instanceof JsonNumber) return v.raw;
  if (Array.isArray(v)) return `[${v.map(stringify).join(",")}]`;
  return `{${Object.keys(v)
    .map((k) => `${JSON.stringify(k)}:${stringify(v[k]!)}`)
    .join(",")}}`;
}

/** Serialise a JsonValue for people to read: `indent` spaces per level, numbers verbatim, key order kept. */
export function stringifyIndented(v: JsonValue, indent = 2, depth = 0): string {
  if (v === null || typeof v !== "object" || v instanceof JsonNumber) return stringify(v);
  const pad = " ".repeat(indent * (depth + 1));
  const close = " ".repeat(indent * depth);
  if (Array.isArray(v)) {
    if (v.length === 0) return "[]";
    return `[\n${v.map((x) => pad + stringifyIndented(x, indent, depth + 1)).join(",\n")}\n${close}]`;
  }
  const keys = Object.keys(v);
  if (keys.length === 0) return "{}";
  return `{\n${keys.map((k) => `${pad}${JSON.stringify(k)}: ${stringifyIndented(v[k]!, indent, depth + 1)}`).join(",\n")}\n${close}}`;
}
