/**
 * The simulator's event loop on top of Node's: runs one client operation to completion by
 * alternately letting every ready promise continuation run, releasing the oldest held codec
 * completion, and firing the earliest simulated timer (store latency, fault ends, the cache's
 * background flusher, the engine's deleter).
 *
 * What it keeps true: between two of its own steps nothing but microtasks run, and each step is
 * chosen from deterministic state (held jobs in submission order, timers in due order), so one
 * seed gives one interleaving. Codec completions go before timers: coding takes no simulated time.
 * What it leaves out: wall-clock time. The only wall-clock wait is setImmediate, which lets the
 * microtask queue drain; it is never used to wait for a condition.
 */
import type { SimCodec } from './codec_gate.js';
import type { SimClock } from './sim_clock.js';

export type Outcome<T> =
  | { readonly ok: true; readonly value: T }
  | { readonly ok: false; readonly error: unknown }
  | { readonly ok: false; readonly hung: true; readonly error: Error };

/** Scheduler steps one operation may take; past it the operation is reported as hung. */
export const stepsPerOperationMax = 200_000;

/** Lets every queued microtask (and those they queue) run. */
function drain(): Promise<void> {
  return new Promise<void>((resolve) => setImmediate(resolve));
}

export class Scheduler {
  /** Scheduler steps taken so far, for the trace and for bounding runaway schedules. */
  steps = 0;

  constructor(
    private readonly clock: SimClock,
    private readonly codec: SimCodec,
  ) {}

  /**
   * Runs until `start()`'s promise settles. Reports it as hung when nothing can run any more
   * before `deadlineMs` of simulated time from now, or after stepsPerOperationMax steps.
   */
  async settle<T>(start: () => Promise<T>, deadlineMs: number): Promise<Outcome<T>> {
    let outcome: Outcome<T> | undefined;
    const until = this.clock.now() + deadlineMs;
    try {
      start().then(
        (value) => (outcome = { ok: true, value }),
        (error: unknown) => (outcome = { ok: false, error }),
      );
    } catch (error) {
      return { ok: false, error };
    }
    for (let steps = 0; steps < stepsPerOperationMax; steps++) {
      await drain();
      if (outcome !== undefined) return outcome;
      this.steps += 1;
      if (this.codec.held > 0) {
        await this.codec.releaseOldest();
        continue;
      }
      if (this.clock.fireNext(until)) continue;
      break;
    }
    const why =
      this.clock.nextDueMs() !== undefined
        ? `did not complete within ${deadlineMs} ms of simulated time (is it waiting on the wall clock, a setTimeout or Date.now, which the simulation does not drive?)`
        : 'nothing can make progress (no timer or codec job pending)';
    return { ok: false, hung: true, error: new Error(`operation hung: ${why}`) };
  }

  /** Lets `ms` of simulated time pass, running everything that falls due meanwhile. */
  async advance(ms: number): Promise<void> {
    const until = this.clock.now() + ms;
    for (let steps = 0; steps < stepsPerOperationMax; steps++) {
      await drain();
      this.steps += 1;
      if (this.codec.held > 0) {
        await this.codec.releaseOldest();
        continue;
      }
      if (this.clock.fireNext(until)) continue;
      break;
    }
    this.clock.moveTo(Math.max(this.clock.now(), until));
    await drain();
  }

  /** Releases every held codec job (at the end of a run, so no pool buffer stays claimed). */
  async releaseAll(): Promise<void> {
    while (this.codec.held > 0) {
      await this.codec.releaseOldest();
      await drain();
    }
  }
}
