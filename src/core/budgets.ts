/**
 * Budgets that many users share, and a log for when one bites. ClientBudget refuses: units
 * (bytes, or connections) held at once overall and by any one client, for limits that answer
 * "no" at once. WaitingBudget makes callers wait instead (back-pressure): bytes held at once,
 * handed out first come, first served. LimitLog says when a limit bit without writing a line
 * per refusal.
 *
 * What they keep true: every take is matched by exactly one give of the same units by its
 * caller; counts never go negative (asserted); a client whose share drops to zero is forgotten,
 * so the maps hold only clients with something held. A WaitingBudget never starves a large
 * request behind a stream of small ones (waiters are served in order), and never deadlocks on a
 * request larger than the whole budget (it runs alone).
 * What they leave out: time (rates and timeouts live with whoever measures them) and I/O.
 */
import { performance } from 'node:perf_hooks';
import { assert } from './assert.js';
import { InvalidArgumentError } from './errors.js';

/** Which bound refused a take(): the whole budget, or the client's share of it. */
export type BudgetRefusal = 'total' | 'client';

/**
 * Units held at once across all clients (`max`), and by any one client (`perClientMax`). A
 * connection cap is a budget whose connections take one unit each.
 */
export class ClientBudget {
  private used = 0;
  private readonly byClient = new Map<string, number>();

  constructor(
    readonly max: number,
    readonly perClientMax: number,
  ) {
    assert(Number.isSafeInteger(max) && max > 0 && perClientMax > 0 && perClientMax <= max);
  }

  /** Takes `units` for `client`; undefined when taken, else which bound refused (nothing taken). */
  take(client: string, units: number): BudgetRefusal | undefined {
    assert(Number.isSafeInteger(units) && units >= 0);
    const mine = this.byClient.get(client) ?? 0;
    if (mine + units > this.perClientMax) return 'client';
    if (this.used + units > this.max) return 'total';
    this.used += units;
    this.byClient.set(client, mine + units);
    return undefined;
  }

  /** Gives back units an earlier take() for `client` took. */
  give(client: string, units: number): void {
    const mine = (this.byClient.get(client) ?? 0) - units;
    this.used -= units;
    assert(mine >= 0 && this.used >= 0, 'a client budget went negative');
    if (mine === 0) this.byClient.delete(client);
    else this.byClient.set(client, mine);
  }

  /** Units held now, across clients. */
  get inUse(): number {
    return this.used;
  }

  /** Units `client` holds now. */
  usedBy(client: string): number {
    return this.byClient.get(client) ?? 0;
  }
}

/**
 * Bytes held at once by many users, who wait for room rather than being refused. Waiters are
 * served in the order they asked; a request larger than `max` is granted once nothing else is
 * held, so it runs alone instead of never.
 *
 * @example
 * const budget = new WaitingBudget(64 * MiB);
 * const release = await budget.take(image.length);
 * try { await encodeAndStore(image); } finally { release(); }
 */
export class WaitingBudget {
  private used = 0;
  private readonly waiters: { readonly bytes: number; readonly grant: () => void }[] = [];

  constructor(readonly max: number) {
    assert(Number.isSafeInteger(max) && max > 0, 'a budget needs a positive size');
  }

  /** Bytes held now. */
  get inUse(): number {
    return this.used;
  }

  /** Callers waiting for room now. */
  get waiting(): number {
    return this.waiters.length;
  }

  /**
   * Takes `bytes` now if nobody waits ahead and they fit; else queues `granted`, which runs once
   * they were taken for the caller, and returns false. cancel() withdraws a queued request.
   */
  tryTake(bytes: number, granted: () => void): boolean {
    assert(Number.isSafeInteger(bytes) && bytes >= 0);
    if (this.waiters.length === 0 && this.fits(bytes)) {
      this.used += bytes;
      return true;
    }
    this.waiters.push({ bytes, grant: granted });
    return false;
  }

  /**
   * Resolves once `bytes` are taken; the function it resolves to gives them back (once).
   * `onWait` runs, at once, when the caller has to wait.
   */
  take(bytes: number, onWait?: () => void): Promise<() => void> {
    let given = false;
    const release = (): void => {
      if (given) return;
      given = true;
      this.give(bytes);
    };
    return new Promise((resolve) => {
      if (this.tryTake(bytes, () => resolve(release))) resolve(release);
      else onWait?.();
    });
  }

  /** Withdraws a request queued by tryTake() that was not granted yet; true when it was queued. */
  cancel(granted: () => void): boolean {
    const i = this.waiters.findIndex((w) => w.grant === granted);
    if (i < 0) return false;
    this.waiters.splice(i, 1);
    this.grantWaiting();
    return true;
  }

  /** Gives back bytes taken earlier, and grants waiting requests that now fit, in order. */
  give(bytes: number): void {
    this.used -= bytes;
    assert(this.used >= 0, 'a waiting budget went negative');
    this.grantWaiting();
  }

  private fits(bytes: number): boolean {
    return this.used + bytes <= this.max || this.used === 0;
  }

  private grantWaiting(): void {
    for (let head = this.waiters[0]; head !== undefined && this.fits(head.bytes); head = this.waiters[0]) {
      this.waiters.shift();
      this.used += head.bytes;
      head.grant();
    }
  }
}

/**
 * Says when a limit bites: one log line per limit per interval, with how many more times it bit
 * since the last line; every hit reaches `onHit` (the metric) whether or not it was logged.
 */
export class LimitLog<Name extends string = string> {
  private readonly lastLineMs = new Map<Name, number>();
  private readonly unlogged = new Map<Name, number>();

  constructor(
    private readonly log: (line: string) => void,
    private readonly onHit: ((limit: Name) => void) | undefined,
    private readonly intervalMs: number,
    private readonly nowMs: () => number = () => performance.now(),
  ) {}

  /** One hit of `limit`; `line` is what happened, logged unless this limit logged recently. */
  hit(limit: Name, line: string): void {
    this.onHit?.(limit);
    const now = this.nowMs();
    const last = this.lastLineMs.get(limit);
    if (last !== undefined && now - last < this.intervalMs) {
      this.unlogged.set(limit, (this.unlogged.get(limit) ?? 0) + 1);
      return;
    }
    const more = this.unlogged.get(limit) ?? 0;
    this.unlogged.delete(limit);
    this.lastLineMs.set(limit, now);
    this.log(`limit ${limit}: ${line}${more > 0 ? ` (and ${more} more times since the last line)` : ''}`);
  }
}

/**
 * A set of limits (`given` over `defaults`), checked: every one a whole number above 0, and each
 * client share (the first of a pair) at most its whole (the second). Throws InvalidArgumentError
 * naming the field; `what` says whose limits they are ("node", "NBD").
 */
export function completeLimits<T extends Record<keyof T, number>>(
  what: string,
  defaults: T,
  given: Partial<T>,
  shares: readonly (readonly [keyof T & string, keyof T & string])[],
): T {
  const full: T = { ...defaults, ...given };
  for (const [name, value] of Object.entries(full) as [string, number][]) {
    if (!Number.isSafeInteger(value) || value <= 0)
      throw new InvalidArgumentError(`Invalid ${what} limit ${name}: ${value} (expected a whole number above 0)`);
  }
  for (const [part, whole] of shares) {
    if (full[part] > full[whole])
      throw new InvalidArgumentError(
        `Invalid ${what} limits: ${part} (${full[part]}) is above ${whole} (${full[whole]})`,
      );
  }
  return full;
}
