/**
 * Watch a config file and hand over its text whenever the content changes. Survives every way files get replaced:
 * writes in place, a temporary file renamed over it, and Kubernetes ConfigMap volumes, where the path is a symlink
 * into `..data/`, itself a symlink that is swapped atomically to a new timestamped directory.
 *
 * It watches the directory holding the path (renames and symlink swaps show up there) and the directory holding the
 * file the path resolves to (writes through a symlink show up only there), re-resolving after every event. Bursts
 * are debounced; identical content (by hash) is not reported again.
 *
 * @example
 * const w = new ConfigWatcher("config.json", (text) => reload(text), { onError: (e) => log.warn(e.message) });
 * w.start(initialText);
 * // later
 * w.close();
 */
import type { FSWatcher } from "node:fs";
import { dirname, resolve } from "node:path";

// node:fs on first use: most runs never watch, and importing it is part of ~2 ms of the compiled server's start-up
// (see http/listen.ts).
const nodeFs = () => require("node:fs") as typeof import("node:fs");
const nodeFsPromises = () => require("node:fs/promises") as typeof import("node:fs/promises");

export interface ConfigWatcherOptions {
  /** Quiet time after the last event before the file is read (default 30 ms). */
  debounceMs?: number;
  /** The file could not be read (it may be mid-swap; the next event retries). */
  onError?: (e: Error) => void;
}

export class ConfigWatcher {
  private readonly path: string;
  private readonly debounceMs: number;
  private readonly watchers = new Map<string, FSWatcher>();
  private timer: ReturnType<typeof setTimeout> | undefined;
  private lastHash: bigint | number | undefined;
  private closed = false;
  private reading: Promise<void> | undefined;
  private again = false;

  constructor(
    path: string,
    private readonly onChange: (text: string) => void | Promise<void>,
    private readonly options: ConfigWatcherOptions = {},
  ) {
    this.path = resolve(path);
    this.debounceMs = options.debounceMs ?? 30;
  }

  /** Begin watching; `currentText` is the content already loaded, so an unchanged file is not reported. */
  async start(currentText?: string): Promise<void> {
    if (currentText !== undefined) this.lastHash = Bun.hash(currentText);
    this.watchDir(dirname(this.path));
    await this.followTarget();
  }

  /** Read the file now (as if an event had arrived). Resolves when any resulting change has been handed over. */
  check(): Promise<void> {
    if (this.reading) {
      this.again = true;
      return this.reading;
    }
    // Nothing a read does may escape as an unhandled rejection: a watcher must never stop the process.
    this.reading = this.read()
      .catch((e: unknown) => this.options.onError?.(e instanceof Error ? e : new Error(String(e))))
      .finally(() => {
        this.reading = undefined;
        if (this.again && !this.closed) {
          this.again = false;
          void this.check();
        }
      });
    return this.reading;
  }

  close(): void {
    this.closed = true;
    if (this.timer) clearTimeout(this.timer);
    for (const w of this.watchers.values()) w.close();
    this.watchers.clear();
  }

  private watchDir(dir: string): void {
    if (this.closed || this.watchers.has(dir)) return;
    try {
      const w = nodeFs().watch(dir, { persistent: false }, () => this.poke());
      // A watched directory that disappears (an old ConfigMap generation) just stops reporting.
      w.on("error", () => {
        w.close();
        this.watchers.delete(dir);
      });
      this.watchers.set(dir, w);
    } catch (e) {
      this.options.onError?.(e as Error);
    }
  }

  /** Watch the directory of the file the path currently resolves to; drop watches of older targets. */
  private async followTarget(): Promise<void> {
    const own = dirname(this.path);
    let target: string | undefined;
    try {
      target = dirname(await nodeFsPromises().realpath(this.path));
    } catch {
      target = undefined;
    }
    for (const [dir, w] of this.watchers) {
      if (dir !== own && dir !== target) {
        w.close();
        this.watchers.delete(dir);
      }
    }
    if (target && target !== own) this.watchDir(target);
  }

  private poke(): void {
    if (this.closed) return;
    if (this.timer) clearTimeout(this.timer);
    this.timer = setTimeout(() => {
      this.timer = undefined;
      void this.check();
    }, this.debounceMs);
  }

  private async read(): Promise<void> {
    if (this.closed) return;
    await this.followTarget();
    let text: string;
    try {
      text = await Bun.file(this.path).text();
    } catch (e) {
      this.options.onError?.(e as Error);
      return;
    }
    const hash = Bun.hash(text);
    if (hash === this.lastHash) return;
    this.lastHash = hash;
    await this.onChange(text);
  }
}
