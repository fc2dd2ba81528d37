/**
 * The tree of another metadata server (`-upstream`, `capture`): its `?recursive=true` document, which is this
 * server's config format, plus `universe/universe-domain`, which that document leaves out. {@link UpstreamWatch}
 * keeps it fresh with a recursive `wait_for_change`, so a change upstream arrives one round trip after it is made;
 * while the upstream cannot be reached, the last good tree stays and one line says so (and one when it is back).
 *
 * @example
 * const first = await readUpstreamTree("http://169.254.169.254");
 * const watch = new UpstreamWatch("http://169.254.169.254", first, { log, onChange: (v1) => store.setUpstream(v1) });
 * watch.start();
 */
import { ConfigError } from "../errors.ts";
import { isJsonObject, type JsonObject, parseJson } from "../json.ts";
import type { Logger } from "../log.ts";
import { firstLine, metadataGet } from "../metadata/client.ts";

const RECURSIVE = "/computeMetadata/v1/?recursive=true";
const UNIVERSE = "/computeMetadata/v1/universe/universe-domain";

/** A metadata server's tree as read once. */
export interface UpstreamTree {
  /** `computeMetadata.v1` in the config file's naming, `universe` included when the server answers it. */
  v1: JsonObject;
  /** The recursive document's ETag (what the next `wait_for_change` compares). */
  etag: string | null;
  /** The recursive document as served. */
  text: string;
  /** `universe.universeDomain`, or undefined when the server answers 404 for it. */
  universeDomain: string | undefined;
}

const unreachable = (base: string, why: string) =>
  new ConfigError(
    "CONFIG_UPSTREAM",
    `cannot read the metadata server at ${base}: ${why}; check that it runs and answers ${base}${RECURSIVE} with Metadata-Flavor: Google`,
  );

/** Parse a recursive document; a ConfigError naming the server when it is not a JSON object. */
function parseTree(base: string, text: string): JsonObject {
  let doc: unknown;
  try {
    doc = parseJson(text);
  } catch (e) {
    throw unreachable(base, `its recursive document is not JSON (${(e as Error).message})`);
  }
  if (!isJsonObject(doc as JsonObject)) throw unreachable(base, "its recursive document is not a JSON object");
  return doc as JsonObject;
}

function withUniverse(v1: JsonObject, domain: string | undefined): JsonObject {
  if (domain === undefined || v1.universe !== undefined) return v1;
  const universe: JsonObject = Object.assign(Object.create(null), { universeDomain: domain });
  return Object.assign(Object.create(null), v1, { universe });
}

/** Read a metadata server's whole tree once; throws ConfigError (CONFIG_UPSTREAM) saying what went wrong. */
export async function readUpstreamTree(base: string, options: { timeoutMs?: number } = {}): Promise<UpstreamTree> {
  const get = async (path: string) => {
    try {
      return await metadataGet(base, path, { timeoutMs: options.timeoutMs ?? 10_000 });
    } catch (e) {
      throw unreachable(base, (e as Error).message);
    }
  };
  const r = await get(RECURSIVE);
  if (r.status !== 200) throw unreachable(base, `it answered ${r.status} ${firstLine(r.body)}`);
  if (!r.flavor) throw unreachable(base, "its answer has no Metadata-Flavor: Google header, so it is not a metadata server");
  const tree = parseTree(base, r.body);
  const u = await get(UNIVERSE);
  // 404 on servers that predate universes; clients then assume googleapis.com, and so does this server.
  const universeDomain = u.status === 200 && u.flavor ? u.body : undefined;
  return { v1: withUniverse(tree, universeDomain), etag: r.etag, text: r.body, universeDomain };
}

export interface UpstreamWatchOptions {
  log: Logger;
  /** The upstream's tree changed (the whole new `computeMetadata.v1`). */
  onChange(v1: JsonObject): void;
  /** `timeout_sec` of each hanging request (default 60, as the guest agent sends). */
  timeoutSec?: number;
  /** First pause after a failure (default 250 ms); doubled after each further failure, up to `maxRetryMs`. */
  retryMs?: number;
  /** Longest pause between tries while the upstream is down (default 5 s). */
  maxRetryMs?: number;
}

/** Keeps an upstream tree fresh with `?recursive=true&wait_for_change=true&last_etag=…`, one request at a time. */
export class UpstreamWatch {
  private etag: string | null;
  private text: string;
  private readonly universeDomain: string | undefined;
  private readonly abort = new AbortController();
  private running: Promise<void> | undefined;
  /** False while the upstream cannot be reached (the last good tree is served). */
  healthy = true;

  constructor(
    readonly base: string,
    first: UpstreamTree,
    private readonly options: UpstreamWatchOptions,
  ) {
    this.etag = first.etag;
    this.text = first.text;
    this.universeDomain = first.universeDomain;
  }

  start(): void {
    this.running ??= this.loop();
  }

  /** Stop watching; the hanging request is abandoned. */
  async close(): Promise<void> {
    this.abort.abort();
    await this.running;
  }

  private async loop(): Promise<void> {
    const { log } = this.options;
    const timeoutSec = this.options.timeoutSec ?? 60;
    const firstRetry = this.options.retryMs ?? 250;
    const maxRetry = this.options.maxRetryMs ?? 5000;
    let retry = firstRetry;
    const signal = this.abort.signal;
    while (!signal.aborted) {
      const started = Date.now();
      try {
        const path = `${RECURSIVE}&wait_for_change=true&last_etag=${encodeURIComponent(this.etag ?? "NONE")}&timeout_sec=${timeoutSec}`;
        const r = await metadataGet(this.base, path, { signal, timeoutMs: (timeoutSec + 15) * 1000 });
        if (r.status !== 200 || !r.flavor) throw new Error(`it answered ${r.status} ${firstLine(r.body)}`);
        const changed = r.body !== this.text;
        const v1 = changed ? parseTree(this.base, r.body) : undefined;
        if (!this.healthy) {
          this.healthy = true;
          log.info("upstream metadata server reachable again", { url: this.base });
        }
        retry = firstRetry;
        this.etag = r.etag;
        if (v1) {
          this.text = r.body;
          this.deliver(withUniverse(v1, this.universeDomain));
        } else if (Date.now() - started < (timeoutSec * 1000) / 2) {
          // An answer long before the timeout with nothing new: the upstream does not hold waits. Poll gently.
          await sleep(1000, signal);
        }
      } catch (e) {
        if (signal.aborted) break;
        if (this.healthy) {
          this.healthy = false;
          log.warn("upstream metadata server unreachable; still serving the last good tree", {
            url: this.base,
            error: (e as Error).message,
          });
        }
        await sleep(retry, signal);
        retry = Math.min(retry * 2, maxRetry);
      }
    }
  }

  /** Hand a new tree over; a refusal there is the receiver's to report, and the watch goes on. */
  private deliver(v1: JsonObject): void {
    try {
      this.options.onChange(v1);
    } catch (e) {
      this.options.log.error("upstream tree not applied", { url: this.base, error: (e as Error).message });
    }
  }
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(done, ms);
    function done() {
      clearTimeout(timer);
      signal.removeEventListener("abort", done);
      resolve();
    }
    signal.addEventListener("abort", done, { once: true });
  });
}
