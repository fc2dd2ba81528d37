/**
 * A strict parser of the Prometheus text exposition format (version 0.0.4), for tests: it refuses what a Prometheus
 * server would refuse (samples before their TYPE, bad names, bad escapes, duplicate series, unparseable values), so
 * a scrape that parses here is one Prometheus can ingest.
 */

export interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

export interface Family {
  name: string;
  help: string | undefined;
  type: "counter" | "gauge" | "histogram" | "summary" | "untyped";
  samples: Sample[];
}

const NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*/;
const LABEL = /^[a-zA-Z_][a-zA-Z0-9_]*/;
const TYPES = new Set(["counter", "gauge", "histogram", "summary", "untyped"]);

function parseValue(s: string, line: string): number {
  if (s === "+Inf") return Infinity;
  if (s === "-Inf") return -Infinity;
  if (s === "NaN" || s === "Nan") return NaN;
  const n = Number(s);
  if (s === "" || Number.isNaN(n)) throw new Error(`bad sample value ${JSON.stringify(s)} in ${JSON.stringify(line)}`);
  return n;
}

function parseLabels(s: string, line: string): [Record<string, string>, string] {
  const labels: Record<string, string> = {};
  let rest = s.slice(1);
  for (;;) {
    rest = rest.trimStart();
    if (rest.startsWith("}")) return [labels, rest.slice(1)];
    const m = LABEL.exec(rest);
    if (!m) throw new Error(`bad label name in ${JSON.stringify(line)}`);
    const name = m[0];
    rest = rest.slice(name.length);
    if (!rest.startsWith('="')) throw new Error(`expected =" after label ${name} in ${JSON.stringify(line)}`);
    rest = rest.slice(2);
    let value = "";
    for (;;) {
      const c = rest[0];
      if (c === undefined) throw new Error(`unterminated label value in ${JSON.stringify(line)}`);
      rest = rest.slice(1);
      if (c === '"') break;
      if (c === "\\") {
        const e = rest[0];
        rest = rest.slice(1);
        if (e === "\\") value += "\\";
        else if (e === '"') value += '"';
        else if (e === "n") value += "\n";
        else throw new Error(`bad escape \\${e} in ${JSON.stringify(line)}`);
      } else value += c;
    }
    if (name in labels) throw new Error(`label ${name} repeated in ${JSON.stringify(line)}`);
    labels[name] = value;
    rest = rest.trimStart();
    if (rest.startsWith(",")) rest = rest.slice(1);
    else if (!rest.startsWith("}")) throw new Error(`expected , or } in ${JSON.stringify(line)}`);
  }
}

/** The family a sample name belongs to: histogram and summary samples carry suffixes. */
function familyOf(name: string, families: Map<string, Family>): Family | undefined {
  const direct = families.get(name);
  if (direct) return direct;
  for (const suffix of ["_bucket", "_sum", "_count"]) {
    if (!name.endsWith(suffix)) continue;
    const f = families.get(name.slice(0, -suffix.length));
    if (f && (f.type === "histogram" || (f.type === "summary" && suffix !== "_bucket"))) return f;
  }
  return undefined;
}

export function parsePrometheusText(text: string): Map<string, Family> {
  const families = new Map<string, Family>();
  const seen = new Set<string>();
  const family = (name: string): Family => {
    let f = families.get(name);
    if (!f) {
      f = { name, help: undefined, type: "untyped", samples: [] };
      families.set(name, f);
    }
    return f;
  };
  for (const line of text.split("\n")) {
    if (line.trim() === "") continue;
    if (line.startsWith("#")) {
      const m = /^# (HELP|TYPE) ([a-zA-Z_:][a-zA-Z0-9_:]*)(?: (.*))?$/.exec(line);
      if (!m) continue; // a plain comment
      const f = family(m[2]!);
      if (m[1] === "HELP") {
        if (f.help !== undefined) throw new Error(`second HELP for ${f.name}`);
        f.help = (m[3] ?? "").replace(/\\n/g, "\n").replace(/\\\\/g, "\\");
      } else {
        const type = m[3] ?? "";
        if (!TYPES.has(type)) throw new Error(`bad TYPE ${JSON.stringify(type)} for ${f.name}`);
        if (f.samples.length) throw new Error(`TYPE for ${f.name} after its samples`);
        f.type = type as Family["type"];
      }
      continue;
    }
    const m = NAME.exec(line);
    if (!m) throw new Error(`bad sample line ${JSON.stringify(line)}`);
    const name = m[0];
    let rest = line.slice(name.length);
    let labels: Record<string, string> = {};
    if (rest.startsWith("{")) [labels, rest] = parseLabels(rest, line);
    const parts = rest.trim().split(/\s+/);
    if (parts.length < 1 || parts.length > 2) throw new Error(`bad sample line ${JSON.stringify(line)}`);
    const value = parseValue(parts[0]!, line);
    const f = familyOf(name, families);
    if (!f) throw new Error(`sample ${name} has no TYPE/HELP family before it`);
    const key = `${name}${JSON.stringify(Object.entries(labels).sort())}`;
    if (seen.has(key)) throw new Error(`duplicate series ${key}`);
    seen.add(key);
    f.samples.push({ name, labels, value });
  }
  return families;
}

/** The value of the one sample matching name and labels (all given labels must match), or undefined. */
export function sampleValue(families: Map<string, Family>, name: string, labels: Record<string, string> = {}): number | undefined {
  const f = familyOf(name, families);
  const matches = f?.samples.filter((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v)) ?? [];
  if (matches.length > 1) throw new Error(`${matches.length} samples of ${name} match ${JSON.stringify(labels)}`);
  return matches[0]?.value;
}

/**
 * Check a histogram's series: buckets sorted by `le`, counts never decreasing, +Inf equal to _count. Returns the
 * count per label set (without `le`).
 */
export function checkHistogram(
  families: Map<string, Family>,
  name: string,
): Map<string, { count: number; sum: number; buckets: Array<[number, number]> }> {
  const f = families.get(name);
  if (f?.type !== "histogram") throw new Error(`${name} is not a histogram`);
  const out = new Map<string, { count: number; sum: number; buckets: Array<[number, number]> }>();
  const keyOf = (l: Record<string, string>) =>
    JSON.stringify(
      Object.entries(l)
        .filter(([k]) => k !== "le")
        .sort(),
    );
  const get = (k: string) => {
    let e = out.get(k);
    if (!e) out.set(k, (e = { count: NaN, sum: NaN, buckets: [] }));
    return e;
  };
  for (const s of f.samples) {
    const e = get(keyOf(s.labels));
    if (s.name === `${name}_bucket`) {
      const le = s.labels.le;
      if (le === undefined) throw new Error(`${name}_bucket without le`);
      e.buckets.push([parseValue(le, le), s.value]);
    } else if (s.name === `${name}_count`) e.count = s.value;
    else if (s.name === `${name}_sum`) e.sum = s.value;
  }
  for (const [k, e] of out) {
    for (let i = 1; i < e.buckets.length; i++) {
      const [le0, c0] = e.buckets[i - 1]!;
      const [le1, c1] = e.buckets[i]!;
      if (!(le1 > le0)) throw new Error(`${name}${k}: bucket le ${le1} after ${le0}`);
      if (c1 < c0) throw new Error(`${name}${k}: bucket le=${le1} count ${c1} below le=${le0} count ${c0}`);
    }
    const inf = e.buckets.at(-1);
    if (!inf || inf[0] !== Infinity) throw new Error(`${name}${k}: no +Inf bucket`);
    if (inf[1] !== e.count) throw new Error(`${name}${k}: +Inf bucket ${inf[1]} differs from _count ${e.count}`);
    if (!(e.sum >= 0)) throw new Error(`${name}${k}: bad _sum ${e.sum}`);
  }
  return out;
}
