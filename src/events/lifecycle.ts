/**
 * Simulated platform events, so apps that watch `maintenance-event`, `preempted` and `upcoming-maintenance` with
 * `wait_for_change` can be tested. Each transition is one snapshot swap, so every waiter sees each step.
 *
 * Host maintenance (`type` MIGRATE or TERMINATE):
 *   scheduling  → `instance/upcoming-maintenance` = {type:"SCHEDULED", maintenance_status:"PENDING", window times…}
 *   start       → `instance/maintenance-event` = MIGRATE_ON_HOST_MAINTENANCE | TERMINATE_ON_HOST_MAINTENANCE,
 *                 `upcoming-maintenance.maintenance_status` = "ONGOING"
 *   start+duration → `maintenance-event` = NONE, `upcoming-maintenance` back to what it was before (absent: removed)
 * Overlapping maintenances: `upcoming-maintenance` shows the soonest one still scheduled or ongoing, and
 * `maintenance-event` the earliest ongoing one; the config's value comes back when the last one ends.
 * Preemption:
 *   at the time → `instance/preempted` = TRUE and `instance/shutdown-details/` filled in
 *                 (`stop-state` PENDING_STOP, `target-state` TERMINATED or DELETED, `request-timestamp`, `max-duration`)
 *
 * @example
 * const lc = new Lifecycle(host);
 * lc.scheduleMaintenance(parseMaintenanceSpec("in=30s,type=MIGRATE,duration=60s"));
 */
import { parseDuration } from "../duration.ts";
import { UsageError } from "../errors.ts";
import { fromPlain, type JsonValue } from "../json.ts";
import type { Tree } from "../metadata/tree.ts";
import { nodeAt, putTree, setAt, treeToValue } from "../metadata/edit.ts";
import type { Logger } from "../log.ts";

export type MaintenanceType = "MIGRATE" | "TERMINATE";

export interface MaintenanceSpec {
  type: MaintenanceType;
  /** Milliseconds from now until `maintenance-event` changes (default 0); or `at`. */
  inMs?: number;
  /** Wall-clock time the event starts. */
  at?: Date;
  /** Milliseconds the event lasts before `maintenance-event` goes back to NONE (default 60 s). */
  durationMs?: number;
}

export interface PreemptionSpec {
  inMs?: number;
  at?: Date;
  /** Seconds reported as `shutdown-details/max-duration` (the shutdown grace; default 30). */
  graceSec?: number;
}

export interface LifecycleEvent {
  id: string;
  kind: "maintenance" | "preemption";
  type?: MaintenanceType;
  state: "scheduled" | "ongoing" | "done" | "cancelled";
  startsAt: string;
  endsAt?: string;
}

export interface LifecycleHost {
  tree(): Tree;
  /** Apply a platform edit and swap in the new snapshot. */
  edit(fn: (tree: Tree) => Tree): void;
  log: Logger;
  /** The server's clock (virtual, see clock.ts) in ms; event times follow it. Date.now by default. */
  now?: () => number;
}

function parseTime(s: string): Date {
  const d = new Date(s);
  if (Number.isNaN(d.getTime()))
    throw new UsageError("USAGE", `invalid time ${JSON.stringify(s)}: use RFC 3339, e.g. 2030-01-02T15:04:05Z`);
  return d;
}

/** `key=value,key=value` into a map; unknown keys are refused. */
function fields(spec: string, allowed: readonly string[], what: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const part of spec.split(",")) {
    if (part.trim() === "") continue;
    const eq = part.indexOf("=");
    const key = (eq < 0 ? part : part.slice(0, eq)).trim();
    if (!allowed.includes(key)) {
      throw new UsageError(
        "USAGE",
        `${what}: unknown field ${JSON.stringify(key)} in ${JSON.stringify(spec)}; fields: ${allowed.join(", ")}`,
      );
    }
    out.set(key, eq < 0 ? "" : part.slice(eq + 1).trim());
  }
  return out;
}

function maintenanceType(v: string | undefined): MaintenanceType {
  const t = (v || "MIGRATE").toUpperCase();
  if (t === "MIGRATE" || t === "MIGRATE_ON_HOST_MAINTENANCE") return "MIGRATE";
  if (t === "TERMINATE" || t === "TERMINATE_ON_HOST_MAINTENANCE") return "TERMINATE";
  throw new UsageError("USAGE", `maintenance type ${JSON.stringify(v)}: use MIGRATE or TERMINATE`);
}

/** `in=30s,type=MIGRATE,duration=60s` or `at=2030-01-02T15:04:05Z,type=TERMINATE,duration=2m`. */
export function parseMaintenanceSpec(spec: string): MaintenanceSpec {
  const f = fields(spec, ["in", "at", "type", "duration"], "-simulateMaintenance");
  return maintenanceFrom(Object.fromEntries(f));
}

/** `in=2m` or `at=2030-01-02T15:04:05Z`, optionally `grace=30s`. */
export function parsePreemptionSpec(spec: string): PreemptionSpec {
  const f = fields(spec, ["in", "at", "grace"], "-simulatePreemption");
  return preemptionFrom(Object.fromEntries(f));
}

/** Unknown keys of a JSON body are refused, as unknown fields of the flag's text are. */
function onlyKeys(o: Record<string, unknown>, allowed: readonly string[], what: string): void {
  for (const key of Object.keys(o)) {
    if (!allowed.includes(key)) {
      throw new UsageError("USAGE", `${what}: unknown field ${JSON.stringify(key)}; fields: ${allowed.join(", ")}`);
    }
  }
}

/** The same fields from a control-API JSON body (strings, or numbers of seconds). */
export function maintenanceFrom(o: Record<string, unknown>): MaintenanceSpec {
  onlyKeys(o, ["in", "at", "type", "duration"], "maintenance");
  const spec: MaintenanceSpec = { type: maintenanceType(str(o.type)) };
  applyWhen(spec, o);
  if (o.duration !== undefined) spec.durationMs = parseDuration(String(o.duration));
  return spec;
}

export function preemptionFrom(o: Record<string, unknown>): PreemptionSpec {
  onlyKeys(o, ["in", "at", "grace"], "preemption");
  const spec: PreemptionSpec = {};
  applyWhen(spec, o);
  if (o.grace !== undefined) spec.graceSec = Math.round(parseDuration(String(o.grace)) / 1000);
  return spec;
}

const str = (v: unknown): string | undefined => (v === undefined || v === null ? undefined : String(v));

function applyWhen(spec: { inMs?: number; at?: Date }, o: Record<string, unknown>): void {
  if (o.in !== undefined && o.at !== undefined) throw new UsageError("USAGE", "give either in= or at=, not both");
  if (o.in !== undefined) spec.inMs = parseDuration(String(o.in));
  if (o.at !== undefined) spec.at = parseTime(String(o.at));
}

/** setTimeout caps delays at about 24.8 days; longer ones are re-armed. */
const MAX_DELAY = 2 ** 31 - 1;

/** A step waiting for its time on the server's clock. */
interface Step {
  when: number;
  fn: () => void;
  timer?: ReturnType<typeof setTimeout>;
}

interface Scheduled {
  event: LifecycleEvent;
  steps: Set<Step>;
}

const eventValue = (e: LifecycleEvent): string =>
  e.type === "TERMINATE" ? "TERMINATE_ON_HOST_MAINTENANCE" : "MIGRATE_ON_HOST_MAINTENANCE";

/** `upcoming-maintenance` for a simulated event, as GCE documents it. */
const notice = (e: LifecycleEvent) => ({
  can_reschedule: false,
  latest_window_start_time: e.startsAt,
  maintenance_status: e.state === "ongoing" ? "ONGOING" : "PENDING",
  type: "SCHEDULED",
  window_end_time: e.endsAt,
  window_start_time: e.startsAt,
});

export class Lifecycle {
  private readonly events = new Map<string, Scheduled>();
  /** While simulated maintenances are pending or ongoing: what `upcoming-maintenance` held before the first. */
  private beforeMaintenance: { upcoming: JsonValue | undefined } | undefined;
  private seq = 0;
  private readonly now: () => number;

  constructor(private readonly host: LifecycleHost) {
    this.now = host.now ?? Date.now;
  }

  /** Events not yet finished or cancelled, and the finished ones, oldest first. */
  list(): LifecycleEvent[] {
    return [...this.events.values()].map((s) => ({ ...s.event }));
  }

  scheduleMaintenance(spec: MaintenanceSpec): LifecycleEvent {
    const start = this.startTime(spec);
    const end = start + (spec.durationMs ?? 60_000);
    const s: Scheduled = {
      event: {
        id: this.nextId("maintenance"),
        kind: "maintenance",
        type: spec.type,
        state: "scheduled",
        startsAt: new Date(start).toISOString(),
        endsAt: new Date(end).toISOString(),
      },
      steps: new Set(),
    };
    this.events.set(s.event.id, s);
    this.host.edit((t) => {
      // The config's own notice, kept while simulated maintenances are pending or ongoing and put back after.
      if (!this.beforeMaintenance) {
        const old = nodeAt(t, ["instance", "upcoming-maintenance"]);
        this.beforeMaintenance = { upcoming: old ? treeToValue(old) : undefined };
      }
      return this.showMaintenance(t, false);
    });
    this.at(s, start, () => {
      s.event.state = "ongoing";
      this.host.log.info("simulated host maintenance begins", { id: s.event.id, event: eventValue(s.event), until: s.event.endsAt });
      this.host.edit((t) => this.showMaintenance(t, false));
      this.at(s, end, () => this.endMaintenance(s));
    });
    this.host.log.info("simulated host maintenance scheduled", { id: s.event.id, type: spec.type, start: s.event.startsAt });
    return { ...s.event };
  }

  /**
   * `upcoming-maintenance` and `maintenance-event` for the maintenances still scheduled or ongoing: the notice of the
   * soonest one, and the event of the earliest ongoing one. With none left, the config's notice comes back (removed
   * if it had none), and `maintenance-event` is NONE after one has ended.
   */
  private showMaintenance(t: Tree, ended: boolean): Tree {
    const active = [...this.events.values()]
      .map((s) => s.event)
      .filter((e) => e.kind === "maintenance" && (e.state === "scheduled" || e.state === "ongoing"))
      .sort((a, b) => (a.startsAt < b.startsAt ? -1 : a.startsAt > b.startsAt ? 1 : 0));
    const ongoing = active.find((e) => e.state === "ongoing");
    let next = t;
    if (ongoing) next = setAt(next, "instance/maintenance-event", eventValue(ongoing), { platform: true });
    else if (ended && nodeAt(next, ["instance", "maintenance-event"]))
      next = setAt(next, "instance/maintenance-event", "NONE", { platform: true });
    const soonest = active[0];
    if (soonest) return setAt(next, "instance/upcoming-maintenance", fromPlain(notice(soonest)), { platform: true });
    const before = this.beforeMaintenance;
    if (!before) return next;
    this.beforeMaintenance = undefined;
    if (before.upcoming !== undefined) return setAt(next, "instance/upcoming-maintenance", before.upcoming, { platform: true });
    return nodeAt(next, ["instance", "upcoming-maintenance"]) ? putTree(next, "instance/upcoming-maintenance", undefined) : next;
  }

  schedulePreemption(spec: PreemptionSpec): LifecycleEvent {
    const start = this.startTime(spec);
    const s: Scheduled = {
      event: { id: this.nextId("preemption"), kind: "preemption", state: "scheduled", startsAt: new Date(start).toISOString() },
      steps: new Set(),
    };
    this.events.set(s.event.id, s);
    this.at(s, start, () => {
      s.event.state = "done";
      this.host.log.info("simulated preemption", { id: s.event.id });
      this.host.edit((t) => {
        const action = nodeAt(t, ["instance", "scheduling", "instance-termination-action"]);
        const details = {
          maxDuration: spec.graceSec ?? 30,
          requestTimestamp: new Date(this.now()).toISOString(),
          stopState: "PENDING_STOP",
          targetState: action?.k === "scalar" && action.text.toUpperCase() === "DELETE" ? "DELETED" : "TERMINATED",
        };
        const next = setAt(t, "instance/preempted", "TRUE", { platform: true });
        return setAt(next, "instance/shutdown-details", fromPlain(details), { platform: true });
      });
    });
    this.host.log.info("simulated preemption scheduled", { id: s.event.id, at: s.event.startsAt });
    return { ...s.event };
  }

  /** Cancel a scheduled or ongoing event: pending steps are dropped, an ongoing maintenance ends now. */
  cancel(id: string): LifecycleEvent | undefined {
    const s = this.events.get(id);
    if (!s || s.event.state === "done" || s.event.state === "cancelled") return undefined;
    for (const step of s.steps) clearTimeout(step.timer);
    s.steps.clear();
    if (s.event.kind === "maintenance") this.endMaintenance(s, "cancelled");
    else s.event.state = "cancelled";
    return { ...s.event };
  }

  /** Drop every pending timer (server stop). */
  close(): void {
    for (const s of this.events.values()) {
      for (const step of s.steps) clearTimeout(step.timer);
      s.steps.clear();
    }
  }

  /** The clock moved: re-arm every pending step on the new time (steps now in the past run at once). */
  retime(): void {
    for (const s of this.events.values()) {
      for (const step of [...s.steps]) {
        clearTimeout(step.timer);
        this.arm(s, step);
      }
    }
  }

  /** A maintenance ends (its time is up, or it is cancelled): the next one, if any, shows. */
  private endMaintenance(s: Scheduled, state: "done" | "cancelled" = "done"): void {
    const wasOngoing = s.event.state === "ongoing";
    s.event.state = state;
    this.host.log.info(state === "done" ? "simulated host maintenance ends" : "simulated host maintenance cancelled", { id: s.event.id });
    this.host.edit((t) => this.showMaintenance(t, wasOngoing));
  }

  private startTime(spec: { inMs?: number; at?: Date }): number {
    if (spec.at) return spec.at.getTime();
    return this.now() + Math.max(0, spec.inMs ?? 0);
  }

  private nextId(kind: string): string {
    return `${kind}-${++this.seq}`;
  }

  /** Run `fn` at time `when` (ms) on the server's clock, immediately if it has passed. */
  private at(s: Scheduled, when: number, fn: () => void): void {
    const step: Step = { when, fn };
    s.steps.add(step);
    this.arm(s, step);
  }

  private arm(s: Scheduled, step: Step): void {
    const delay = Math.max(0, step.when - this.now());
    step.timer = setTimeout(
      () => {
        if (delay > MAX_DELAY) return this.arm(s, step);
        s.steps.delete(step);
        step.fn();
      },
      Math.min(delay, MAX_DELAY),
    );
  }
}
