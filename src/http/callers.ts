/**
 * An identity per caller (`-callers`): each entry of the callers file is compiled into its own snapshot when the
 * file is loaded and again whenever the served tree changes, never per request. A request picks its caller's view
 * by source address (Bun's `server.requestIP`), remembered per address, so the hot path is one map lookup; an
 * address no entry matches gets the served tree, or `null` (403) when the file says `"unmatched": "deny"`.
 *
 * Each view has its own waits (a ChangeHub), so a caller's `wait_for_change` compares that caller's ETags and wakes
 * when that caller's answer changes.
 *
 * @example
 * const callers = new Callers({ base: state, maxWaiters: 0, instanceCreationTimestamp, log });
 * callers.install(parseCallersText(text, "callers.json"), store.current);
 * state.callers = callers;
 */
import { ChangeHub } from "../changes/hub.ts";
import { type CallerSpec, type CallersSpec, callerTree } from "../config/callers.ts";
import type { Cidr } from "../address.ts";
import type { Logger } from "../log.ts";
import { Snapshot } from "../metadata/snapshot.ts";
import type { CallerSelector, ServerHooks, View } from "./handler.ts";

/** Addresses remembered at most; past it the memory starts over (a scan from many addresses stays bounded). */
const MAX_REMEMBERED = 4096;

interface Profile {
  spec: CallerSpec;
  cidr: Cidr;
  view: View;
  hub: ChangeHub;
}

export interface CallersOptions {
  /** The served view (the server's state): what unmatched callers get when they are allowed. */
  base: View;
  /** `-maxWaiters`, applied to each caller's waits. */
  maxWaiters: number;
  /** As for the served snapshot: `instance_creation_timestamp` in full ID tokens. */
  instanceCreationTimestamp: number;
  log: Logger;
}

export class Callers implements CallerSelector {
  private profiles: Profile[] = [];
  private deny = false;
  private source = "callers";
  private readonly remembered = new Map<string, View | null>();

  constructor(private readonly options: CallersOptions) {}

  /** The callers in force, by name (for logs and tests). */
  get names(): string[] {
    return this.profiles.map((p) => p.spec.name);
  }

  /** The view a source address gets; null when it is refused. */
  viewFor(address: string | undefined): View | null {
    if (address === undefined) return this.deny ? null : this.options.base;
    const known = this.remembered.get(address);
    if (known !== undefined) return known;
    let view: View | null = this.deny ? null : this.options.base;
    for (const p of this.profiles) {
      if (p.cidr.contains(address)) {
        view = p.view;
        break;
      }
    }
    if (this.remembered.size >= MAX_REMEMBERED) this.remembered.clear();
    this.remembered.set(address, view);
    return view;
  }

  select(req: Request, server: ServerHooks | undefined): View | null {
    return this.viewFor(server?.requestIP?.(req)?.address);
  }

  private compile(spec: CallerSpec, served: Snapshot, source: string): Snapshot {
    return new Snapshot(callerTree(served.tree, spec, source), { instanceCreationTimestamp: this.options.instanceCreationTimestamp });
  }

  /**
   * Serve a callers file, every caller compiled over the served snapshot; throws ConfigError (the file's first
   * problem) and the callers in force stay. A caller whose range was already in force keeps its waits: its waiting
   * requests wake if its answer changed. Waiting requests of callers gone from the file are answered.
   */
  install(spec: CallersSpec, served: Snapshot): void {
    const compiled = spec.callers.map((c) => this.compile(c, served, spec.source));
    const old = new Map(this.profiles.map((p) => [p.cidr.text, p]));
    this.profiles = spec.callers.map((c, i) => {
      const snapshot = compiled[i]!;
      const kept = old.get(c.cidr.text);
      if (kept) {
        old.delete(c.cidr.text);
        kept.view.snapshot = snapshot;
        kept.hub.publish(snapshot);
        return { ...kept, spec: c, cidr: c.cidr };
      }
      const hub = new ChangeHub({ maxWaiters: this.options.maxWaiters });
      return { spec: c, cidr: c.cidr, view: { snapshot, waits: hub }, hub };
    });
    this.deny = spec.unmatched === "deny";
    this.source = spec.source;
    this.remembered.clear();
    for (const gone of old.values()) {
      gone.view.snapshot = served;
      gone.hub.close();
    }
  }

  /** The served tree changed: every caller's snapshot is compiled again over it. One that fails keeps its last. */
  rebuild(served: Snapshot): void {
    for (const p of this.profiles) {
      let next: Snapshot;
      try {
        next = this.compile(p.spec, served, this.source);
      } catch (e) {
        this.options.log.error(
          `caller ${p.spec.name}: its overlay no longer applies, still serving its last tree: ${(e as Error).message}`,
        );
        continue;
      }
      p.view.snapshot = next;
      p.hub.publish(next);
    }
  }

  /** Server stop: the callers' waiting requests are answered. */
  close(): void {
    for (const p of this.profiles) p.hub.close();
  }

  /** Accept waits again after `close` (a stopped server started again). */
  reopen(): void {
    for (const p of this.profiles) p.hub.reopen();
  }
}
