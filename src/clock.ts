/**
 * The server's virtual clock: real time plus an offset. Everything that shows time follows it (`expires_in`, the
 * `iat` and `exp` of ID tokens signed here, simulated event times, the token cache's idea of freshness), so a test
 * can jump an hour ahead instead of waiting. Timeouts of waiting requests and fault windows stay in real time.
 *
 * @example
 * const clock = new Clock();
 * clock.advance("58m"); // cached tokens now have two minutes left: the next request re-mints
 * new Date(clock.now());
 * clock.reset();        // back to real time
 */
import { parseDuration } from "./duration.ts";
import { UsageError } from "./errors.ts";

export interface ClockState {
  /** The virtual time, RFC 3339. */
  now: string;
  /** How far the clock is from real time, in seconds (negative: behind). */
  offsetSeconds: number;
}

export class Clock {
  private offset = 0;
  private readonly listeners = new Set<(movedBy: number) => void>();

  /** The virtual time in milliseconds since the epoch; a bound function, cheap enough for the hot path. */
  readonly now = (): number => Date.now() + this.offset;

  /** Move the clock by a Go duration (`"58m"`, `"-5m"`) or a number of milliseconds. */
  advance(by: string | number): ClockState {
    const ms = typeof by === "number" ? by : parseDuration(by);
    if (!Number.isFinite(ms))
      throw new UsageError("BAD_DURATION", `cannot advance the clock by ${String(by)}: give a Go duration such as 58m`);
    return this.move(ms);
  }

  /** Set the virtual time: a Date, RFC 3339 text, or milliseconds since the epoch. */
  set(to: Date | string | number): ClockState {
    const t = to instanceof Date ? to.getTime() : typeof to === "number" ? to : parseTime(to);
    if (!Number.isFinite(t))
      throw new UsageError("USAGE", `invalid time ${JSON.stringify(String(to))}: use RFC 3339, e.g. 2030-01-01T00:00:00Z`);
    return this.move(t - this.now());
  }

  /** Back to real time. */
  reset(): ClockState {
    return this.move(-this.offset);
  }

  /** Milliseconds ahead of real time (negative: behind). */
  get offsetMs(): number {
    return this.offset;
  }

  state(): ClockState {
    return { now: new Date(this.now()).toISOString(), offsetSeconds: this.offset / 1000 };
  }

  /** Called after every change with how far the clock moved (ms); returns a function that unsubscribes. */
  onChange(listener: (movedBy: number) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  private move(ms: number): ClockState {
    this.offset += ms;
    if (ms !== 0) for (const l of this.listeners) l(ms);
    return this.state();
  }
}

function parseTime(s: string): number {
  // RFC 3339 only: Date.parse also takes forms like "2030" or "March 1", which would be a surprise here.
  if (!/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$/i.test(s.trim())) return Number.NaN;
  return Date.parse(s.trim());
}
