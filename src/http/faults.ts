/**
 * Fault injection: rules that make the metadata server misbehave the way real ones do (a 503 while booting, a 429
 * burst, a dropped connection, a slow probe), so apps and SDKs can be tested against it. Rules apply to requests
 * the guard (handler.ts) has admitted and before the snapshot lookup; the first rule that fires answers.
 *
 * A rule's `path` is a glob over the metadata path after `/computeMetadata/v1/`: `*` alone matches every request
 * (the root `/` included), and inside a pattern `*` matches within one path segment
 * (`instance/service-accounts/*\/token`, `project/*`). A pattern starting with `/` is matched against the whole
 * request path instead (`/` is the probe Python, Java and .NET send).
 *
 * Actions: `respond` (the default) answers `status` with `body` and `headers`, or, without a status, lets the real
 * answer through (late, with `delay`); `reset` closes the connection with no HTTP bytes at all; `hang` holds the
 * request until the client gives up (at most `delay`, else {@link HANG_LIMIT_MS}), then closes it with no answer.
 * When it fires: `after` skips the first N matches, then `every` N-th match, with `probability`, at most `times`
 * times, during `for` since the rule was added. A rule whose `times` are spent, or whose `for` is over, stays listed
 * and no longer matches, so later rules apply.
 *
 * @example
 * const faults = new FaultRules();
 * faults.add({ path: "instance/service-accounts/*\/token", status: 503, times: 2 });
 * faults.add(parseFaultSpec("path=*,status=503,for=10s")); // a server still booting
 */
import { parseDuration } from "../duration.ts";
import { UsageError } from "../errors.ts";
import type { Logger } from "../log.ts";
import { BASE_HEADERS, TEXT } from "../metadata/snapshot.ts";
import type { Handled, MetadataHandler, ServerHooks } from "./handler.ts";

export type FaultAction = "respond" | "reset" | "hang";

/** A rule as given: JSON from the control API, the library, or a `-fault` flag. Durations are Go durations or ms. */
export interface FaultSpec {
  path: string;
  action?: FaultAction;
  status?: number;
  body?: string;
  headers?: Record<string, string>;
  delay?: string | number;
  times?: number;
  every?: number;
  probability?: number;
  after?: number;
  for?: string | number;
}

/** A rule as listed: its id, the fields it was given, how often it fired, and whether it can still fire. */
export interface FaultRuleView extends FaultSpec {
  id: string;
  action: FaultAction;
  hits: number;
  active: boolean;
}

/** The longest a `hang` holds a request when the rule gives no `delay`. */
export const HANG_LIMIT_MS = 10 * 60_000;

const FIELDS = ["path", "action", "status", "body", "headers", "delay", "times", "every", "probability", "after", "for"] as const;
const V1 = "/computeMetadata/v1/";

const bad = (message: string) => new UsageError("BAD_FAULT", message);

/** A whole number in range, from JSON or flag text. */
function integer(field: string, v: unknown, min: number): number {
  const n = typeof v === "string" && /^\d+$/.test(v.trim()) ? Number(v) : v;
  if (typeof n !== "number" || !Number.isInteger(n) || n < min)
    throw bad(`fault ${field}: expected a whole number ≥ ${min}, found ${JSON.stringify(v)}`);
  return n;
}

function duration(field: string, v: unknown): { text: string; ms: number } {
  if (typeof v === "number") {
    if (!Number.isFinite(v) || v < 0) throw bad(`fault ${field}: expected a duration ≥ 0, found ${v}`);
    return { text: `${v}ms`, ms: v };
  }
  if (typeof v !== "string") throw bad(`fault ${field}: expected a Go duration such as 3s or 500ms, found ${JSON.stringify(v)}`);
  const ms = parseDuration(v);
  if (ms < 0) throw bad(`fault ${field}: a duration cannot be negative (${JSON.stringify(v)})`);
  return { text: v.trim(), ms };
}

/**
 * Check a rule given as an object (control API, library); throws UsageError (code BAD_FAULT or BAD_DURATION) naming
 * the field. Returns the rule with numbers as numbers and nothing it was not given.
 */
export function faultFrom(o: Record<string, unknown>): FaultSpec {
  if (typeof o !== "object" || o === null || Array.isArray(o)) throw bad('a fault is a JSON object such as {"path":"*","status":503}');
  for (const k of Object.keys(o)) {
    if (!(FIELDS as readonly string[]).includes(k)) throw bad(`fault: unknown field ${JSON.stringify(k)}; fields: ${FIELDS.join(", ")}`);
  }
  if (typeof o.path !== "string" || o.path.trim() === "") {
    throw bad('fault path: required, a glob over the path after /computeMetadata/v1/ such as "instance/service-accounts/*/token" or "*"');
  }
  const spec: FaultSpec = { path: o.path.trim() };
  if (o.action !== undefined) {
    if (o.action !== "respond" && o.action !== "reset" && o.action !== "hang") {
      throw bad(`fault action: expected respond, reset or hang, found ${JSON.stringify(o.action)}`);
    }
    spec.action = o.action;
  }
  if (o.status !== undefined) {
    const s = integer("status", o.status, 200);
    if (s > 599) throw bad(`fault status: expected an HTTP status from 200 to 599, found ${s}`);
    spec.status = s;
  }
  if (o.body !== undefined) {
    if (typeof o.body !== "string") throw bad("fault body: expected a string");
    spec.body = o.body;
  }
  if (o.headers !== undefined) {
    const h = o.headers;
    if (typeof h !== "object" || h === null || Array.isArray(h) || Object.values(h).some((v) => typeof v !== "string")) {
      throw bad('fault headers: expected an object of strings, such as {"Retry-After":"2"}');
    }
    try {
      new Headers(h as Record<string, string>);
    } catch (e) {
      throw bad(`fault headers: ${(e as Error).message}`);
    }
    spec.headers = { ...(h as Record<string, string>) };
  }
  const action = spec.action ?? "respond";
  if (action !== "respond" && (spec.status !== undefined || spec.body !== undefined || spec.headers !== undefined)) {
    throw bad(`fault: a ${action} sends no answer, so status, body and headers do not apply`);
  }
  if ((spec.body !== undefined || spec.headers !== undefined) && spec.status === undefined) {
    throw bad("fault: body and headers need a status (without one the real answer is sent)");
  }
  if (spec.status !== undefined && spec.body !== undefined && [204, 205, 304].includes(spec.status)) {
    throw bad(`fault body: a ${spec.status} answer has no body`);
  }
  if (o.delay !== undefined) spec.delay = duration("delay", o.delay).text;
  if (o.times !== undefined) spec.times = integer("times", o.times, 1);
  if (o.every !== undefined) spec.every = integer("every", o.every, 1);
  if (o.after !== undefined) spec.after = integer("after", o.after, 0);
  if (o.probability !== undefined) {
    const p = typeof o.probability === "string" ? Number(o.probability) : o.probability;
    if (typeof p !== "number" || !(p >= 0 && p <= 1))
      throw bad(`fault probability: expected a number from 0 to 1, found ${JSON.stringify(o.probability)}`);
    spec.probability = p;
  }
  if (o.for !== undefined) {
    const f = duration("for", o.for);
    if (f.ms === 0) throw bad("fault for: expected a duration above 0 (omit it for a rule without an end)");
    spec.for = f.text;
  }
  return spec;
}

/**
 * `-fault` text: comma-separated `key=value` with the same fields; headers as `header=Name: value` (repeatable).
 * Values cannot contain commas (use the control API for such bodies).
 *
 * @example
 * parseFaultSpec("path=instance/service-accounts/*\/token,status=429,header=Retry-After: 2,times=1");
 */
export function parseFaultSpec(text: string): FaultSpec {
  const o: Record<string, unknown> = {};
  const headers: Record<string, string> = {};
  for (const part of text.split(",")) {
    if (part.trim() === "") continue;
    const eq = part.indexOf("=");
    const key = (eq < 0 ? part : part.slice(0, eq)).trim();
    const value = eq < 0 ? "" : part.slice(eq + 1).trim();
    if (key === "header" || key === "headers") {
      const colon = value.indexOf(":");
      if (colon <= 0) throw bad(`-fault ${JSON.stringify(text)}: write a header as header=Name: value`);
      headers[value.slice(0, colon).trim()] = value.slice(colon + 1).trim();
      continue;
    }
    if (!(FIELDS as readonly string[]).includes(key)) {
      throw bad(`-fault ${JSON.stringify(text)}: unknown field ${JSON.stringify(key)}; fields: ${FIELDS.join(", ")}, header`);
    }
    if (eq < 0) throw bad(`-fault ${JSON.stringify(text)}: ${key} needs a value (${key}=…)`);
    o[key] = value;
  }
  if (Object.keys(headers).length > 0) o.headers = headers;
  try {
    return faultFrom(o);
  } catch (e) {
    if (e instanceof UsageError) throw new UsageError(e.code, `-fault ${JSON.stringify(text)}: ${e.message}`);
    throw e;
  }
}

/** `*` within one segment; a pattern not starting with `/` is relative to /computeMetadata/v1/. */
function compileGlob(pattern: string): (path: string) => boolean {
  if (pattern === "*") return () => true;
  const absolute = pattern.startsWith("/");
  const source = pattern
    .split("*")
    .map((s) => s.replace(/[.+?^${}()|[\]\\]/g, "\\$&"))
    .join("[^/]*");
  const re = new RegExp(`^${absolute ? "" : V1.replace(/[.]/g, "\\.")}${source}$`);
  return (path) => re.test(path);
}

class Rule {
  readonly matches: (path: string) => boolean;
  readonly delayMs: number;
  /** Real time (performance.now) after which the rule no longer fires. */
  readonly until: number;
  matched = 0;
  hits = 0;
  private readonly init: ResponseInit | undefined;

  constructor(
    readonly id: string,
    readonly spec: FaultSpec,
    addedAt: number,
  ) {
    this.matches = compileGlob(spec.path);
    this.delayMs = spec.delay === undefined ? 0 : duration("delay", spec.delay).ms;
    this.until = spec.for === undefined ? Number.POSITIVE_INFINITY : addedAt + duration("for", spec.for).ms;
    if (spec.status !== undefined) {
      // The rule's headers replace the server's own of the same name, whatever their case.
      const headers = new Headers({ ...BASE_HEADERS, "Content-Type": TEXT });
      for (const [k, v] of Object.entries(spec.headers ?? {})) headers.set(k, v);
      this.init = { status: spec.status, headers };
    }
  }

  get action(): FaultAction {
    return this.spec.action ?? "respond";
  }

  /** The rule's own answer; undefined when it passes the real one through. */
  answer(): Response | undefined {
    return this.init && new Response(this.spec.body ?? null, this.init);
  }

  active(now: number): boolean {
    return now < this.until && (this.spec.times === undefined || this.hits < this.spec.times);
  }

  view(now: number): FaultRuleView {
    const { path, action: _, ...rest } = this.spec;
    return { id: this.id, path, action: this.action, ...rest, hits: this.hits, active: this.active(now) };
  }
}

/** No HTTP bytes: Bun closes the connection when a body stream fails before its first chunk. 444 as nginx names it. */
export function connectionReset(): Response {
  return new Response(
    new ReadableStream({
      start(c) {
        // No argument: Bun prints an error passed here; undefined closes quietly.
        c.error();
      },
    }),
    { status: 444 },
  );
}

export interface FaultRulesOptions {
  /** Told whether any rule is set, so the guard can skip faults with one field check when none is. */
  onChange?(active: boolean): void;
  /** Real time in ms for `for` windows (default performance.now). */
  now?: () => number;
  /** For `probability` (default Math.random). */
  random?: () => number;
  log?: Logger;
}

/** The rules of one server. `apply` is the guard's hook (see handler.ts `ServingState.faults`). */
export class FaultRules {
  private rules: Rule[] = [];
  private seq = 0;
  private readonly now: () => number;
  private readonly random: () => number;
  /** Requests held by a delay or a hang: released (closed) on close(). */
  private readonly held = new Set<() => void>();
  /** Requests a rule let through late: the handler runs again for them, and no rule judges them twice. */
  private readonly passed = new WeakSet<Request>();

  constructor(private readonly options: FaultRulesOptions = {}) {
    this.now = options.now ?? (() => performance.now());
    this.random = options.random ?? Math.random;
  }

  /** Add a rule (checked as faultFrom checks it); its `for` counts from now. Returns the rule as listed. */
  add(spec: FaultSpec): FaultRuleView {
    const checked = faultFrom(spec as unknown as Record<string, unknown>);
    const rule = new Rule(`fault-${++this.seq}`, checked, this.now());
    this.rules = [...this.rules, rule];
    this.options.onChange?.(true);
    return rule.view(this.now());
  }

  list(): FaultRuleView[] {
    const now = this.now();
    return this.rules.map((r) => r.view(now));
  }

  /** Remove one rule; returns it as it was, or undefined for an unknown id. */
  remove(id: string): FaultRuleView | undefined {
    const rule = this.rules.find((r) => r.id === id);
    if (!rule) return undefined;
    this.rules = this.rules.filter((r) => r !== rule);
    if (this.rules.length === 0) this.options.onChange?.(false);
    return rule.view(this.now());
  }

  /** Remove every rule; returns how many there were. */
  clear(): number {
    const n = this.rules.length;
    this.rules = [];
    this.options.onChange?.(false);
    return n;
  }

  get size(): number {
    return this.rules.length;
  }

  /** Let go of every held request (server stop): each is closed with no answer. */
  close(): void {
    for (const release of [...this.held]) release();
  }

  /**
   * The guard's hook: the answer of the first rule that fires for this admitted request, or undefined (serve it as
   * usual). `handle` is the guard, run again for a request a rule only delays.
   */
  readonly apply = (req: Request, path: string, server: ServerHooks | undefined, handle: MetadataHandler): Handled => {
    if (this.passed.has(req)) return undefined;
    const now = this.now();
    for (const r of this.rules) {
      if (!r.matches(path) || !r.active(now)) continue;
      r.matched++;
      const n = r.matched - (r.spec.after ?? 0);
      if (n <= 0) continue;
      if (r.spec.every !== undefined && n % r.spec.every !== 0) continue;
      if (r.spec.probability !== undefined && !(this.random() < r.spec.probability)) continue;
      r.hits++;
      const log = this.options.log;
      if (log?.enabled("debug")) log.debug("fault injected", { rule: r.id, path, action: r.action, status: r.spec.status });
      return this.act(r, req, server, handle);
    }
    return undefined;
  };

  private act(r: Rule, req: Request, server: ServerHooks | undefined, handle: MetadataHandler): Handled {
    if (r.action === "hang") return this.hold(req, server, r.delayMs > 0 ? r.delayMs : HANG_LIMIT_MS, connectionReset);
    const through = () => {
      this.passed.add(req);
      return handle(req, server) ?? connectionReset();
    };
    const answer = r.action === "reset" ? connectionReset : () => r.answer() ?? through();
    return r.delayMs > 0 ? this.hold(req, server, r.delayMs, answer) : answer();
  }

  /**
   * Answer after `ms` of real time. A client that leaves first gets nothing (its connection is gone). The request's
   * idle timeout is lifted, as for hanging GETs, so only the client or the rule ends the wait.
   */
  private hold(req: Request, server: ServerHooks | undefined, ms: number, answer: () => Response | Promise<Response>): Promise<Response> {
    server?.timeout?.(req, 0);
    const signal = req.signal;
    const { promise, resolve } = Promise.withResolvers<Response>();
    let timer: ReturnType<typeof setTimeout> | undefined;
    const finish = (how: () => Response | Promise<Response>) => {
      if (!this.held.delete(release)) return;
      clearTimeout(timer);
      signal.removeEventListener("abort", gone);
      resolve(how());
    };
    const release = () => finish(connectionReset);
    const gone = () => finish(connectionReset);
    this.held.add(release);
    timer = setTimeout(() => finish(answer), ms);
    if (signal.aborted) gone();
    else signal.addEventListener("abort", gone, { once: true });
    return promise;
  }
}
