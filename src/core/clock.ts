/**
 * Time as a port: the cache's background flusher and the simulator's schedules ask a Clock, never
 * Date or setTimeout directly, so tests and seeded simulations can drive time by hand.
 */
export interface Clock {
  /** Milliseconds on a monotonic scale. */
  now(): number;
  /** Calls `fn` every `intervalMs` until the returned function is called. */
  every(intervalMs: number, fn: () => void): () => void;
}

export const systemClock: Clock = {
  now: () => performance.now(),
  every(intervalMs, fn) {
    const timer = setInterval(fn, intervalMs);
    timer.unref();
    return () => clearInterval(timer);
  },
};

/** A clock that moves only when told: advance() runs due callbacks in order. */
export class ManualClock implements Clock {
  private time = 0;
  private timers: { at: number; intervalMs: number; fn: () => void; live: boolean }[] = [];

  now(): number {
    return this.time;
  }

  every(intervalMs: number, fn: () => void): () => void {
    const timer = { at: this.time + intervalMs, intervalMs, fn, live: true };
    this.timers.push(timer);
    return () => {
      timer.live = false;
    };
  }

  advance(ms: number): void {
    const until = this.time + ms;
    for (;;) {
      const due = this.timers.filter((t) => t.live && t.at <= until).sort((a, b) => a.at - b.at)[0];
      if (due === undefined) break;
      this.time = due.at;
      due.at += due.intervalMs;
      due.fn();
    }
    this.time = until;
    this.timers = this.timers.filter((t) => t.live);
  }
}

/** Resolves after `ms` on `clock` (a manual clock resolves it when advanced past). */
export function sleepOn(clock: Clock, ms: number): Promise<void> {
  return new Promise((resolve) => {
    const stop = clock.every(Math.max(1, ms), () => {
      stop();
      resolve();
    });
  });
}
