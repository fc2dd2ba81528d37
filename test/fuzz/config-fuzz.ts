/**
 * A config fuzzer: the bundled config mutated (truncated, values of the wrong type, keys named like
 * Object.prototype members, deep nesting, huge strings, numbers and arrays, duplicate keys, bad names, random
 * bytes), fed as reloads, as the control API's whole config, and at start-up. Invariants: nothing throws out of a
 * reload, a refused config leaves the last good one serving (the very same snapshot), an accepted one serves without
 * a 5xx, and a start-up either serves or fails with a MetadataError (one line and exit 1 on the command line).
 */
import { readFileSync } from "node:fs";
import { Random } from "./random.ts";

const BASE_TEXT = readFileSync(new URL("../../config.json", import.meta.url), "utf8");

const PROTO_KEYS = ["constructor", "__proto__", "toString", "hasOwnProperty", "valueOf", "isPrototypeOf", "__defineGetter__"];

type Json = null | boolean | number | string | Json[] | { [k: string]: Json };

function randomValue(r: Random, depth = 0): Json {
  switch (r.int(depth > 3 ? 6 : 9)) {
    case 0:
      return r.text(r.int(20));
    case 1:
      return r.pick([0, -1, 1.5, 1e308, -0, Number("4520031799277581759"), 2 ** 53 + 1]);
    case 2:
      return r.chance(0.5);
    case 3:
      return null;
    case 4:
      return r.pick(["", "TRUE", "x".repeat(r.pick([1000, 100_000, 1_000_000])), "\u0000\uffff\ud800", "a/b", "../.."]);
    case 5:
      return Array.from({ length: r.pick([0, 1, 3, 10_000]) }, (_, i) => (r.chance(0.5) ? `v${i}` : i));
    case 6:
      return Array.from({ length: 1 + r.int(3) }, () => randomValue(r, depth + 1));
    default: {
      const o: { [k: string]: Json } = {};
      for (let i = r.int(4); i > 0; i--) o[r.chance(0.3) ? r.pick(PROTO_KEYS) : r.text(1 + r.int(8))] = randomValue(r, depth + 1);
      return o;
    }
  }
}

/** Every object or array in a parsed document, with its parent path, for picking a place to mutate. */
function containers(v: Json, out: Array<{ [k: string]: Json } | Json[]> = []): Array<{ [k: string]: Json } | Json[]> {
  if (Array.isArray(v)) {
    out.push(v);
    for (const x of v) containers(x, out);
  } else if (v !== null && typeof v === "object") {
    out.push(v);
    for (const k of Object.keys(v)) containers(v[k]!, out);
  }
  return out;
}

function nested(depth: number, inner: string): string {
  return "[".repeat(depth) + inner + "]".repeat(depth);
}

/** One mutated config text, and what was done to it. */
export function mutateConfig(r: Random): { text: string; how: string } {
  const doc = JSON.parse(BASE_TEXT) as Json;
  switch (r.int(12)) {
    case 0: {
      const at = r.int(BASE_TEXT.length);
      return { text: BASE_TEXT.slice(0, at), how: `truncated at ${at}` };
    }
    case 1:
    case 2:
    case 3: {
      // A value somewhere replaced by one of another type or size.
      const places = containers(doc);
      const c = r.pick(places);
      const v = randomValue(r);
      if (Array.isArray(c)) c[r.int(c.length + 1)] = v;
      else {
        const keys = Object.keys(c);
        c[keys.length && r.chance(0.8) ? r.pick(keys) : r.text(5)] = v;
      }
      return { text: JSON.stringify(doc), how: "a value replaced" };
    }
    case 4: {
      // A prototype-named key in an object, as text (so __proto__ stays a key).
      const key = r.pick(PROTO_KEYS);
      const anchors = [...BASE_TEXT.matchAll(/\{/g)].map((m) => m.index!);
      const at = r.pick(anchors) + 1;
      const value = JSON.stringify(randomValue(r));
      return { text: `${BASE_TEXT.slice(0, at)}"${key}":${value},${BASE_TEXT.slice(at)}`, how: `key ${key}` };
    }
    case 5: {
      const depth = r.pick([99, 100, 101, 500, 10_000, 50_000]);
      const anchors = [...BASE_TEXT.matchAll(/: "/g)].map((m) => m.index!);
      const at = r.pick(anchors) + 2;
      const end = BASE_TEXT.indexOf('"', at + 1) + 1;
      return { text: `${BASE_TEXT.slice(0, at)}${nested(depth, '"x"')}${BASE_TEXT.slice(end)}`, how: `nested ${depth} deep` };
    }
    case 6:
      return { text: nested(r.pick([1000, 100_000]), ""), how: "only brackets" };
    case 7: {
      const bytes = Array.from({ length: r.int(300) }, () => String.fromCharCode(r.int(256))).join("");
      return { text: r.chance(0.5) ? bytes : `{"computeMetadata":${bytes}`, how: "random bytes" };
    }
    case 8:
      return {
        text: r.pick(["[]", '"x"', "1", "null", "true", "{}", '{"computeMetadata":[]}', '{"computeMetadata":{"v1":[]}}', ""]),
        how: "wrong top level",
      };
    case 9: {
      // Duplicate keys (the last wins) and names that cannot be path segments.
      const key = r.pick(["projectId", "id", "a/b", "", ".", "..", "é", "k\u0000"]);
      const text = BASE_TEXT.replace('"project": {', `"project": {"${key}": 1, "${key}": "two",`);
      return { text, how: `duplicate key ${JSON.stringify(key)}` };
    }
    case 10:
      return { text: `\ufeff${BASE_TEXT}`, how: "byte-order mark" };
    default: {
      const big = r.pick([1000, 20_000]);
      const v1 = (doc as { computeMetadata: { v1: Record<string, Record<string, Json>> } }).computeMetadata.v1;
      v1.instance!.attributes = Object.fromEntries(Array.from({ length: big }, (_, i) => [`k${i}`, r.chance(0.5) ? `v${i}` : i]));
      return { text: JSON.stringify(doc), how: `${big} attributes` };
    }
  }
}

export interface ConfigFinding {
  how: string;
  detail: string;
}

export interface ConfigReport {
  seed: number;
  reloads: number;
  accepted: number;
  startups: number;
  findings: ConfigFinding[];
  /** Mutants that were refused, for start-up checks on the command line. */
  refused: string[];
}

const H = { "Metadata-Flavor": "Google" };
const PROBES = ["/computeMetadata/v1/?recursive=true", "/computeMetadata/v1/instance/", "/computeMetadata/v1/project/project-id", "/"];

/**
 * Reloads (`applyConfigText`), whole configs through the control API, and in-process start-ups from a file, each
 * checked against the invariants above.
 */
export async function fuzzConfig(o: { seed: number; iterations: number; startupEvery?: number; dir: string }): Promise<ConfigReport> {
  const { MetadataServer, MetadataError } = await import("../../src/index.ts");
  const { createLogger } = await import("../../src/log.ts");
  const { writeFileSync } = await import("node:fs");
  const { join } = await import("node:path");
  const r = new Random(o.seed);
  const report: ConfigReport = { seed: o.seed, reloads: 0, accepted: 0, startups: 0, findings: [], refused: [] };
  const lines: string[] = [];
  const server = new MetadataServer({
    serverConfig: { port: 0 },
    controlApi: true,
    requireDefaultAccount: true,
    log: createLogger("info", (l) => lines.push(l)),
  });
  const { url } = await server.start();
  const find = (how: string, detail: string) => report.findings.push({ how, detail });
  try {
    for (let i = 0; i < o.iterations; i++) {
      const { text, how } = mutateConfig(r);
      const before = server.snapshot;
      lines.length = 0;
      let ok: boolean;
      const t0 = performance.now();
      try {
        ok = server.applyConfigText(text);
      } catch (e) {
        find(how, `applyConfigText threw: ${(e as Error).stack ?? e}`);
        continue;
      }
      report.reloads++;
      if (performance.now() - t0 > 5000) find(how, `a reload took ${Math.round(performance.now() - t0)} ms`);
      if (!ok) {
        if (server.snapshot !== before) find(how, "a refused config replaced the snapshot");
        if (lines.length !== 1) find(how, `a refused config logged ${lines.length} lines: ${lines.join(" | ").slice(0, 300)}`);
        if (report.refused.length < 50) report.refused.push(text);
      } else report.accepted++;
      for (const p of PROBES) {
        const res = await fetch(url + p, { headers: H });
        const body = await res.text();
        if (res.status >= 500) find(how, `${p} answered ${res.status}: ${body.slice(0, 200)}`);
      }
      // The same document through the control API, when it is JSON at all.
      let doc: unknown;
      try {
        doc = JSON.parse(text);
      } catch {
        doc = undefined;
      }
      if (doc !== undefined && r.chance(0.3)) {
        const snap = server.snapshot;
        const res = await fetch(`${url}/emulator/v1/config`, { method: "PUT", body: text, headers: H });
        await res.text();
        if (res.status >= 500) find(how, `PUT /emulator/v1/config answered ${res.status}`);
        if (res.status !== 200 && server.snapshot !== snap) find(how, "a refused PUT /emulator/v1/config replaced the snapshot");
      }
      if (o.startupEvery && i % o.startupEvery === 0) {
        const file = join(o.dir, `mutant-${i}.json`);
        writeFileSync(file, text);
        const s = new MetadataServer({ serverConfig: { port: 0 }, configFile: file, requireDefaultAccount: true });
        report.startups++;
        try {
          await s.start();
          await s.stop();
        } catch (e) {
          if (!(e instanceof MetadataError)) find(how, `start-up failed with ${(e as Error).name}: ${(e as Error).message.slice(0, 200)}`);
        }
      }
    }
  } finally {
    await server.stop();
  }
  return report;
}
