/**
 * Shard targets with seeded faults: each SimTarget wraps a MemoryShardStore and can be down
 * (crashed node, lost zone), flaky (calls reject with UnavailableError with some probability,
 * sometimes after the put landed: a lost reply), slow (every call waits a seeded number of
 * simulated milliseconds, which also reorders completions), corrupted (a bit flipped in a stored
 * shard, or a shard replaced by other bytes that pass the target's own checks), missing one
 * shard (deleted from a live target) or wiped (its disk replaced). The volume engine reaches them through SimTargets, one per
 * frontend process, so a call made by a process that has since crashed never completes.
 *
 * What it keeps true:
 * - Every injected failure is logged (target, key, why) so the checker can tell a justified
 *   failure (more than m shards of an extent unavailable) from a bug.
 * - A call never fails for a reason the world did not inject; when the memory store itself
 *   fails in a way the world did not cause (a checksum mismatch on a shard nobody flipped, a
 *   published shard missing, a published shard deleted), that is reported as an anomaly.
 * - All randomness comes from the world's store stream, drawn in call order; the scheduler makes
 *   call order the same on every run.
 * What it leaves out: partial writes (a put lands whole or not at all, as the port promises),
 * list() faults, and latency of head()/list().
 */
import {
  ChecksumMismatchError,
  ShardNotFoundError,
  UnavailableError,
  type ByteRange,
  type ShardExpectation,
  type ShardPutOptions,
  type ShardStat,
  type ShardStore,
  type ShardStoreCapabilities,
} from '../core/index.js';
import { MemoryShardStore } from '../shard/index.js';
import type { TargetStores } from '../volume/index.js';
import type { Prng } from './prng.js';
import type { SimClock } from './sim_clock.js';

/** Why a store call failed, as the checker sees it. */
export type FailReason =
  /** The target is down (node crash or zone loss). */
  | 'down'
  /** The target's flakiness rejected the call. */
  | 'flaky'
  /** A put that landed but whose reply was lost. */
  | 'lost-reply'
  /** A checksum mismatch on a shard the world corrupted. */
  | 'checksum'
  /** A shard the world knows is gone: wiped, or never stored before its record was published. */
  | 'lost'
  /** A shard of a generation no longer published (garbage collected after its grace). */
  | 'superseded'
  /** Anything else: never justified. */
  | 'other';

export interface StoreEvent {
  readonly seq: number;
  readonly op: 'get' | 'put' | 'delete' | 'head' | 'list';
  readonly target: string;
  readonly key: string;
  readonly reason: FailReason;
}

/** What the targets need from the world around them. */
export interface StoreEnv {
  readonly clock: SimClock;
  /** The store stream: delays and flakiness. */
  readonly rng: Prng;
  /** Failures the world injected, by identity, so the checker can recognise them later. */
  readonly injected: WeakSet<object>;
  logFailure(event: Omit<StoreEvent, 'seq'>): void;
  anomaly(message: string): void;
  /** Classifies a missing shard: permanently lost, superseded, or (anomaly) a published one. */
  classifyMissing(target: string, key: string): 'lost' | 'superseded' | 'published';
  /** True when `key` belongs to the currently published generation of its extent. */
  isPublished(key: string): boolean;
  /** The planted bug 'skip-end-to-end-check': reads do not pass the record's expectation on. */
  readonly skipEndToEndCheck?: boolean;
}

/** One shard target and its fault switches. */
export class SimTarget {
  /** Why the target is down, e.g. "crash" or "zone a lost"; up when empty. */
  readonly downCauses = new Set<string>();
  /** Probability that a call fails while flaky. */
  flakyP = 0;
  /** Extra latency per call, uniform in [0, slowMs], while slow. */
  slowMs = 0;
  /** As the topology (lease registry) sees it: lags the truth by the lease expiry. */
  registeredUp = true;
  inner: MemoryShardStore;
  /** Keys stored on `inner`, so a wipe knows what it lost and corruption picks real shards. */
  readonly keys = new Set<string>();
  /** Keys whose stored bytes the world flipped a bit in. */
  readonly corrupted = new Set<string>();

  constructor(
    readonly name: string,
    readonly zone: string,
    readonly usedBytes: number,
  ) {
    this.inner = new MemoryShardStore(name);
  }

  get up(): boolean {
    return this.downCauses.size === 0;
  }

  /** The disk is replaced: every shard on it is gone. Returns the keys lost. */
  wipe(): string[] {
    const lost = [...this.keys];
    this.keys.clear();
    this.corrupted.clear();
    this.inner = new MemoryShardStore(this.name);
    return lost;
  }

  /**
   * A wrong shard that looks valid: its data with one byte changed, stored as a plain PUT would
   * store it (seed 0). This target's own checks pass; only the record's check catches it.
   */
  async substitute(key: string, at: number): Promise<void> {
    const data = await this.inner.get(key);
    const i = at % Math.max(1, data.length);
    if (data.length > 0) data[i] = data[i]! ^ 0x01;
    this.inner.replace(key, data);
    this.corrupted.add(key);
  }

  /** Bit rot: flips bit `bit` of framed byte `at` of the stored shard `key`. */
  corrupt(key: string, at: number, bit: number): void {
    this.inner.corrupt(key, at, bit);
    this.corrupted.add(key);
  }
}

/** The liveness of one frontend process, as its store calls see it. */
export interface ProcessLife {
  readonly alive: boolean;
}

/** Never settles: what a call made by a crashed process looks like from beyond the crash. */
export function hang<T>(): Promise<T> {
  return new Promise<T>(() => undefined);
}

/** Jitter every call gets even on a healthy target, so completions interleave in varied orders. */
export interface LatencyOptions {
  readonly jitterMs: number;
}

/** The targets as one frontend process reaches them. */
export class SimTargets implements TargetStores {
  private readonly views = new Map<string, ShardStore>();

  constructor(
    private readonly env: StoreEnv,
    private readonly targets: ReadonlyMap<string, SimTarget>,
    private readonly life: ProcessLife,
    private readonly latency: LatencyOptions,
  ) {}

  zoneOf(target: string): string | undefined {
    return this.targets.get(target)?.zone;
  }

  store(target: string): ShardStore {
    let view = this.views.get(target);
    if (view === undefined) {
      const t = this.targets.get(target);
      if (t === undefined) throw new UnavailableError(`No shard target named "${target}"`);
      view = new FaultyShardStore(this.env, t, this.life, this.latency);
      this.views.set(target, view);
    }
    return view;
  }
}

/** One process's view of one SimTarget: applies the target's faults to every call. */
export class FaultyShardStore implements ShardStore {
  readonly description: string;

  constructor(
    private readonly env: StoreEnv,
    private readonly target: SimTarget,
    private readonly life: ProcessLife,
    private readonly latency: LatencyOptions,
  ) {
    this.description = `sim target "${target.name}" (zone ${target.zone})`;
  }

  capabilities(): ShardStoreCapabilities {
    return { rangeRead: true, atomicCreate: true };
  }

  /** Fails (logged, injected) when the target is down or, by chance, flaky. */
  private refuse(op: StoreEvent['op'], key: string): UnavailableError | undefined {
    const t = this.target;
    let reason: FailReason | undefined;
    if (!t.up) reason = 'down';
    else if (t.flakyP > 0 && this.env.rng.chance(t.flakyP)) reason = 'flaky';
    if (reason === undefined) return undefined;
    const why = reason === 'down' ? `it is down (${[...t.downCauses].join(', ')})` : 'the request timed out';
    const err = new UnavailableError(`Cannot ${op} shard ${key} on ${this.description}: ${why}`);
    this.env.injected.add(err);
    this.env.logFailure({ op, target: t.name, key, reason });
    return err;
  }

  /**
   * The start of every call: a down target refuses at once (connection refused); otherwise the
   * call waits its latency and is checked again, since the target may have gone down meanwhile.
   * Resolves false when the calling process died during the wait: the caller must then hang.
   */
  private async arrive(op: StoreEvent['op'], key: string): Promise<boolean> {
    await Promise.resolve();
    if (!this.life.alive) return false;
    if (!this.target.up) throw this.refuse(op, key)!;
    const maxMs = this.latency.jitterMs + this.target.slowMs;
    const delayMs = maxMs > 0 ? this.env.rng.int(maxMs + 1) : 0;
    if (delayMs > 0) await this.env.clock.sleep(delayMs);
    if (!this.life.alive) return false;
    const refused = this.refuse(op, key);
    if (refused !== undefined) throw refused;
    return true;
  }

  async put(key: string, data: Uint8Array, options?: ShardPutOptions): Promise<void> {
    if (!(await this.arrive('put', key))) return hang();
    // A flaky target sometimes stores the shard and then loses the reply.
    const lostReply = this.target.flakyP > 0 && this.env.rng.chance(this.target.flakyP / 2);
    try {
      await this.target.inner.put(key, data, options);
    } catch (err) {
      this.env.logFailure({ op: 'put', target: this.target.name, key, reason: 'other' });
      throw err;
    }
    this.target.keys.add(key);
    if (lostReply) {
      const err = new UnavailableError(`Cannot put shard ${key} on ${this.description}: the reply was lost`);
      this.env.injected.add(err);
      this.env.logFailure({ op: 'put', target: this.target.name, key, reason: 'lost-reply' });
      throw err;
    }
  }

  async get(key: string, range?: ByteRange, expect?: ShardExpectation): Promise<Uint8Array> {
    if (!(await this.arrive('get', key))) return hang();
    try {
      // The planted bug 'skip-end-to-end-check': the store checks the shard against itself only.
      return await this.target.inner.get(key, range, this.env.skipEndToEndCheck === true ? undefined : expect);
    } catch (err) {
      let reason: FailReason = 'other';
      if (err instanceof ChecksumMismatchError) {
        reason = 'checksum';
        if (!this.target.corrupted.has(key)) {
          reason = 'other';
          this.env.anomaly(`checksum mismatch on shard ${key} of ${this.description}, which nobody corrupted`);
        }
      } else if (err instanceof ShardNotFoundError) {
        const kind = this.env.classifyMissing(this.target.name, key);
        reason = kind === 'published' ? 'other' : kind;
        if (kind === 'published') this.env.anomaly(`published shard ${key} is missing from ${this.description}`);
      }
      this.env.logFailure({ op: 'get', target: this.target.name, key, reason });
      throw err;
    }
  }

  async head(key: string): Promise<ShardStat | null> {
    if (!(await this.arrive('head', key))) return hang();
    return this.target.inner.head(key);
  }

  async delete(key: string): Promise<void> {
    if (!(await this.arrive('delete', key))) return hang();
    if (this.target.keys.has(key) && this.env.isPublished(key)) {
      this.env.anomaly(`shard ${key} on ${this.description} is deleted while its generation is published`);
    }
    await this.target.inner.delete(key);
    this.target.keys.delete(key);
  }

  async list(prefix: string, options?: { startAfter?: string; limit?: number }): Promise<string[]> {
    if (!(await this.arrive('list', prefix))) return hang();
    return this.target.inner.list(prefix, options);
  }
}
