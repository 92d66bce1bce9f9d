/**
 * When a small file operation should run on the event loop's thread instead of libuv's thread
 * pool. fs/promises sends every call through the pool: a submission, a worker wake-up and a
 * completion wake-up around work that often takes microseconds (a pread from the page cache) or
 * one device round trip (an O_DSYNC journal write). On two shared cores those wake-ups cost more
 * than the work. Inline, though, the call blocks the loop while it runs, which a slow device
 * makes long: so calls run inline only while they are fast. A call slower than `slowMs` counts;
 * once several have (a count decayed by 1 % per inline call, past `slowScoreMax`: one alone may
 * only have been preempted), calls go to the pool for `backoffMs`, then one is tried inline
 * again. One call ten times slower than `slowMs` is enough: a device that stalls for long must
 * not hold the loop (a node's lease renewals run on it) for more than one call. On a device
 * whose calls are all slow the loop is so blocked by a few calls at first, then one per
 * `backoffMs`.
 */
export interface InlineIoOptions {
  /** Calls over this many bytes always go to the pool. */
  readonly bytesMax: number;
  /** An inline call slower than this counts as slow. */
  readonly slowMs: number;
  /** Recent slow calls (decayed) past which calls go to the pool for a while (default 3). */
  readonly slowScoreMax?: number;
  /** How long calls stay on the pool after too many slow ones (default 1000 ms). */
  readonly backoffMs?: number;
  /** The clock calls are timed with, in ms (tests pass their own). */
  readonly now?: () => number;
}

export class InlineIo {
  private poolUntilMs = 0;
  private slowScore = 0;
  private readonly now: () => number;
  private readonly slowScoreMax: number;
  private readonly backoffMs: number;

  /** Calls done inline, and how many of them were slow (for tests and the curious). */
  readonly stats = { inline: 0, slow: 0 };

  constructor(private readonly options: InlineIoOptions) {
    this.now = options.now ?? (() => performance.now());
    this.slowScoreMax = options.slowScoreMax ?? 3;
    this.backoffMs = options.backoffMs ?? 1000;
  }

  /** True when a call of `bytes` should run inline now. */
  use(bytes: number): boolean {
    return bytes <= this.options.bytesMax && this.now() >= this.poolUntilMs;
  }

  /** Runs `call` inline, timing it (also when it throws). */
  run<T>(call: () => T): T {
    const started = this.now();
    try {
      return call();
    } finally {
      const took = this.now() - started;
      this.stats.inline += 1;
      this.slowScore *= 0.99;
      if (took > this.options.slowMs) {
        this.stats.slow += 1;
        this.slowScore += 1;
        if (this.slowScore > this.slowScoreMax || took > this.options.slowMs * 10)
          this.poolUntilMs = this.now() + this.backoffMs;
      }
    }
  }
}
