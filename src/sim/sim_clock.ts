/**
 * Simulated time: a Clock that moves only when the scheduler moves it, one timer at a time, and
 * a per-process view of it whose timers die with the process.
 *
 * What it keeps true: timers fire in (due time, creation order) order, so the same schedule of
 * calls gives the same order of firings; time never goes backwards; nothing here waits on the
 * wall clock. What it leaves out: running due timers by itself (the scheduler calls fireNext()
 * and drains the microtasks each firing starts before the next one, which ManualClock.advance()
 * cannot do because it runs every due callback in one synchronous loop).
 */
import { assert, type Clock } from '../core/index.js';

interface Timer {
  at: number;
  readonly seq: number;
  readonly intervalMs: number;
  readonly fn: () => void;
  live: boolean;
}

/** Pending timers, beyond which something schedules without bound (a bug in the sim or below). */
export const simTimersMax = 100_000;

export class SimClock implements Clock {
  private time = 0;
  private seq = 0;
  private timers: Timer[] = [];

  now(): number {
    return this.time;
  }

  every(intervalMs: number, fn: () => void): () => void {
    assert(intervalMs > 0, `every() needs a positive interval, got ${intervalMs}`);
    return this.add(intervalMs, intervalMs, fn);
  }

  /** Calls `fn` once, `delayMs` from now (0: at the next firing, after timers already due). */
  after(delayMs: number, fn: () => void): () => void {
    assert(delayMs >= 0, `after() needs a non-negative delay, got ${delayMs}`);
    return this.add(delayMs, 0, fn);
  }

  /** A promise resolved `delayMs` of simulated time from now. */
  sleep(delayMs: number): Promise<void> {
    return new Promise((resolve) => this.after(delayMs, resolve));
  }

  private add(delayMs: number, intervalMs: number, fn: () => void): () => void {
    assert(this.timers.length < simTimersMax, `more than ${simTimersMax} simulated timers pending`);
    const timer: Timer = { at: this.time + delayMs, seq: this.seq++, intervalMs, fn, live: true };
    this.timers.push(timer);
    return () => {
      timer.live = false;
    };
  }

  /** Due time of the earliest live timer, or undefined when none is pending. */
  nextDueMs(): number | undefined {
    return this.earliest()?.at;
  }

  private earliest(): Timer | undefined {
    let best: Timer | undefined;
    const live: Timer[] = [];
    for (const t of this.timers) {
      if (!t.live) continue;
      live.push(t);
      if (best === undefined || t.at < best.at || (t.at === best.at && t.seq < best.seq)) best = t;
    }
    this.timers = live;
    return best;
  }

  /**
   * Fires the earliest timer if it is due at or before `limitMs`, moving time to its due time;
   * returns whether one fired. A periodic timer is re-armed before its callback runs.
   */
  fireNext(limitMs: number): boolean {
    const t = this.earliest();
    if (t === undefined || t.at > limitMs) return false;
    this.time = Math.max(this.time, t.at);
    if (t.intervalMs > 0) {
      t.at += t.intervalMs;
    } else {
      t.live = false;
    }
    t.fn();
    return true;
  }

  /** Moves time forward to `timeMs` without firing anything (the caller fired what was due). */
  moveTo(timeMs: number): void {
    assert(timeMs >= this.time, `time cannot go back from ${this.time} to ${timeMs}`);
    this.time = timeMs;
  }
}

/**
 * The clock one frontend process sees. When the process dies its timers stop, as a crashed
 * process's intervals do; the shared simulated time goes on.
 */
export class ProcessClock implements Clock {
  private readonly stops: (() => void)[] = [];
  private dead = false;

  constructor(private readonly clock: SimClock) {}

  now(): number {
    return this.clock.now();
  }

  every(intervalMs: number, fn: () => void): () => void {
    if (this.dead) return () => undefined;
    const stop = this.clock.every(intervalMs, fn);
    this.stops.push(stop);
    return stop;
  }

  /** Cancels every timer this process registered; later registrations are ignored. */
  kill(): void {
    this.dead = true;
    for (const stop of this.stops) stop();
    this.stops.length = 0;
  }
}
