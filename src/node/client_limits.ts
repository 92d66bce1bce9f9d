/**
 * Shared bookkeeping for the node's limits (limits.ts): a budget with a per-client share (of
 * bytes, or of connections), and a log that says when a limit bites without
 * writing a line per refused request. A client is a remote address (no port): what one host or
 * NAT can open many connections from.
 *
 * What it keeps true: every take() is matched by exactly one give() of the same bytes by its
 * caller; counts never go negative (asserted), and a client whose share drops to zero is
 * forgotten, so the maps hold only clients with something in flight.
 * What it leaves out: time. Rates and timeouts live with the servers that measure them.
 */
import type { Socket } from 'node:net';
import { performance } from 'node:perf_hooks';
import { assert } from '../core/index.js';
import { nodeLimitLogIntervalMs, type NodeLimitName } from './limits.js';

/** The client a socket belongs to: its remote address, without the port. */
export function clientOf(socket: Socket): string {
  return socket.remoteAddress ?? 'unknown';
}

/** Which bound refused a take(): the whole budget, or the client's share of it. */
export type BudgetRefusal = 'total' | 'client';

/**
 * Units (bytes, or connections) held at once across all clients (`max`), and by any one client
 * (`perClientMax`). A connection cap is a budget whose connections take one unit each.
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
 * Says when a limit bites: one log line per limit per interval, with how many more times it bit
 * since the last line; every hit reaches `onHit` (the metric) whether or not it was logged.
 */
export class LimitLog {
  private readonly lastLineMs = new Map<NodeLimitName, number>();
  private readonly unlogged = new Map<NodeLimitName, number>();

  constructor(
    private readonly log: (line: string) => void,
    private readonly onHit: ((limit: NodeLimitName) => void) | undefined,
    private readonly intervalMs = nodeLimitLogIntervalMs,
  ) {}

  /** One hit of `limit`; `line` is what happened, logged unless this limit logged recently. */
  hit(limit: NodeLimitName, line: string): void {
    this.onHit?.(limit);
    const now = performance.now();
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
