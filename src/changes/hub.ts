/**
 * Hanging GETs (`wait_for_change=true`): waiting requests grouped by what they watch, woken by snapshot swaps.
 *
 * A bucket is one watched representation: a path plus "recursive or not". Every waiter in a bucket waits for the
 * same thing, a change of that representation's ETag away from the bucket's ETag, which always equals the ETag in
 * the snapshot being served (a swap that leaves it equal keeps the waiters; one that changes it wakes the whole
 * bucket). So a swap costs one map lookup per bucket, however many requests hang, and there is no polling.
 *
 * @example
 * const hub = new ChangeHub();
 * state.waits = hub;
 * // on every new snapshot:
 * state.snapshot = next; hub.publish(next);
 */
import { MetadataError } from "../errors.ts";
import { MetaNode, type Snapshot } from "../metadata/snapshot.ts";

/** Thrown by `wait` when the configured limit of hanging requests is reached; the handler answers 503. */
export class TooManyWaiters extends MetadataError<"TOO_MANY_WAITERS"> {
  constructor(readonly limit: number) {
    super("TOO_MANY_WAITERS", `too many hanging requests (limit ${limit}); retry later`);
  }
}

/** What a hanging GET waits for. */
export interface WaitRequest {
  path: string;
  recursive: boolean;
  lastEtag: string | undefined;
  /** Seconds; undefined waits until a change. */
  timeoutSec: number | undefined;
  signal: AbortSignal;
}

/** The contract the request handler holds waits through; the ChangeHub is the implementation. */
export interface WaitService {
  /**
   * Resolves when the node's ETag differs from `lastEtag` (or from the current one), on timeout, or on abort.
   * Rejects (answered 503) when the service refuses to hold another request.
   */
  wait(req: WaitRequest, currentEtag: string): Promise<void>;
}

interface Waiter {
  resolve(): void;
  timer: ReturnType<typeof setTimeout> | undefined;
  signal: AbortSignal;
  onAbort: () => void;
  bucket: Bucket;
}

interface Bucket {
  key: string;
  path: string;
  recursive: boolean;
  /** The watched representation's ETag in the snapshot being served; undefined while the node is absent. */
  etag: string | undefined;
  waiters: Set<Waiter>;
}

export interface ChangeHubOptions {
  /**
   * Most requests that may hang at once; 0 (default) means no limit. The live server reportedly allows 500. A
   * function is called once, at the first wait (or read of `maxWaiters`): the default cap reads the open-file
   * limit, which costs start-up time a server that never holds a request need not pay.
   */
  maxWaiters?: number | (() => number);
}

/** The ETag a waiter compares: recursive JSON for recursive directory waits, the default rendering otherwise. */
export function watchedEtag(snapshot: Snapshot, path: string, recursive: boolean): string | undefined {
  const e = snapshot.lookup(path);
  if (!(e instanceof MetaNode)) return undefined;
  if (recursive) return e.recursive?.etag;
  return e.kind === "leaf" || e.kind === "dir" ? e.plain.etag : undefined;
}

export class ChangeHub implements WaitService {
  private readonly buckets = new Map<string, Bucket>();
  private count = 0;
  private closed = false;
  private cap: number | (() => number);

  constructor(options: ChangeHubOptions = {}) {
    this.cap = options.maxWaiters ?? 0;
  }

  /** Most requests that may hang at once; 0 means no limit. */
  get maxWaiters(): number {
    if (typeof this.cap === "function") this.cap = this.cap();
    return this.cap;
  }

  set maxWaiters(n: number) {
    this.cap = n;
  }

  /** Requests hanging right now. */
  get size(): number {
    return this.count;
  }

  /** Distinct watched representations right now. */
  get bucketCount(): number {
    return this.buckets.size;
  }

  wait(req: WaitRequest, currentEtag: string): Promise<void> {
    // A different last_etag (`0` and `NONE` included: never real ETags) answers at once.
    if (req.lastEtag !== undefined && req.lastEtag !== currentEtag) return Promise.resolve();
    if (req.signal.aborted || req.timeoutSec === 0 || this.closed) return Promise.resolve();
    const max = this.maxWaiters;
    if (max > 0 && this.count >= max) return Promise.reject(new TooManyWaiters(max));
    const key = (req.recursive ? "r" : "p") + req.path;
    let bucket = this.buckets.get(key);
    if (!bucket) {
      bucket = { key, path: req.path, recursive: req.recursive, etag: currentEtag, waiters: new Set() };
      this.buckets.set(key, bucket);
    }
    return new Promise<void>((resolve) => {
      const w: Waiter = {
        resolve,
        timer: undefined,
        signal: req.signal,
        onAbort: () => this.release(w),
        bucket: bucket!,
      };
      if (req.timeoutSec !== undefined) w.timer = setTimeout(w.onAbort, req.timeoutSec * 1000);
      req.signal.addEventListener("abort", w.onAbort, { once: true });
      bucket!.waiters.add(w);
      this.count++;
    });
  }

  /** Remove one waiter (timeout, disconnect) and let its request answer. */
  private release(w: Waiter): void {
    const b = w.bucket;
    if (!b.waiters.delete(w)) return;
    this.count--;
    if (b.waiters.size === 0 && this.buckets.get(b.key) === b) this.buckets.delete(b.key);
    this.finish(w);
  }

  private finish(w: Waiter): void {
    if (w.timer !== undefined) clearTimeout(w.timer);
    w.signal.removeEventListener("abort", w.onAbort);
    w.resolve();
  }

  /** A new snapshot went live: wake every bucket whose watched ETag changed (or whose node is gone). */
  publish(next: Snapshot): number {
    let woken = 0;
    for (const b of this.buckets.values()) {
      const etag = watchedEtag(next, b.path, b.recursive);
      if (etag === b.etag) continue;
      this.buckets.delete(b.key);
      for (const w of b.waiters) this.finish(w);
      woken += b.waiters.size;
      this.count -= b.waiters.size;
      b.waiters.clear();
    }
    return woken;
  }

  /** Server stop: every waiting request answers now with the current content; later waits answer at once. */
  close(): void {
    this.closed = true;
    for (const b of this.buckets.values()) {
      for (const w of b.waiters) this.finish(w);
      b.waiters.clear();
    }
    this.buckets.clear();
    this.count = 0;
  }

  /** Accept waits again after `close` (a stopped server started again). */
  reopen(): void {
    this.closed = false;
  }
}
