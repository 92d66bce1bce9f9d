/**
 * The extent map with a lock and seeded faults: a MemoryExtentMap (the twin of etcd's extent
 * records) plus the volume lock's epoch, so a commit is fenced exactly as etcd's transaction is
 * (it compares the lock's epoch), and transient commit failures, before the transaction applies
 * (a timeout) or after (a lost reply: the records changed but the writer hears an error).
 *
 * What it keeps true:
 * - Only the holder of the lock epoch publishes; any other writer's commit is refused with
 *   FencedError and publishes nothing from the refused batch on, also when it arrives late (a
 *   crashed writer's commit delayed in flight).
 * - A commit applies in batches of batchExtentsMax, as etcd's transactions do; each batch applies
 *   all its updates or none, and a failure after the first batch names what was published.
 * - Every failure it throws is registered as injected, so the checker can recognise it.
 * - A failpoint (MapEnv.failpoint) may kill the committing process just before a batch applies
 *   (its shards stored, its commit never sent) or just after (committed, reply never heard).
 * What it leaves out: the lock's lease mechanics (the world expires and takes over the lock by
 * setting `lockEpoch`), and load() failures (a frontend that cannot load the map does not start).
 */
import { FencedError, PartialCommitError, UnavailableError, errorMessage, type ExtentRecord } from '../core/index.js';
import { MemoryExtentMap } from './memory_twins.js';
import { type ExtentMapStore } from '../volume/index.js';
import { hang, type ProcessLife } from './faulty_store.js';
import type { Prng } from './prng.js';
import type { SimClock } from './sim_clock.js';

/** Where in a commit batch a failpoint may kill the committing process. */
export type CommitStage = 'before-commit' | 'after-commit';

export interface MapEnv {
  readonly clock: SimClock;
  /** The map stream: commit latency and failures. */
  readonly rng: Prng;
  readonly injected: WeakSet<object>;
  /** Called after a commit applied, before its reply (lost or not) goes back. */
  onCommit(epoch: number, updates: readonly { readonly index: number; readonly record: ExtentRecord | null }[]): void;
  /** Called when a commit is refused or fails, for the trace. */
  onRefused(epoch: number, why: string): void;
  /**
   * Called at both stages of a batch of the writer at `epoch`; returns true when it killed that
   * writer's process there (before: the batch is never sent).
   */
  failpoint?(
    epoch: number,
    stage: CommitStage,
    updates: readonly { readonly index: number; readonly record: ExtentRecord | null }[],
  ): boolean;
}

export class SimExtentMap {
  readonly inner = new MemoryExtentMap();
  /** The epoch holding the volume lock; null while the lease has expired and nobody holds it. */
  lockEpoch: number | null = null;
  /** Probability that a commit times out before it applies. */
  failBeforeP = 0;
  /** Probability that a commit applies and its reply is lost. */
  failAfterP = 0;
  /** Commit latency, uniform in [0, latencyMs], per batch. */
  latencyMs = 0;
  /** Extents per transaction; a commit of more is several batches, each fenced on its own. */
  batchExtentsMax = 100;

  constructor(private readonly env: MapEnv) {}

  /** The published records (what a fresh frontend would load). */
  get records(): ReadonlyMap<number, ExtentRecord> {
    return this.inner.records;
  }

  /** The map as the writer at `epoch` in process `life` reaches it. */
  viewFor(epoch: number, life: ProcessLife): ExtentMapStore {
    return {
      load: () => this.inner.load(),
      commit: (updates) => this.commit(epoch, life, updates),
    };
  }

  private async commit(
    epoch: number,
    life: ProcessLife,
    updates: readonly { readonly index: number; readonly record: ExtentRecord | null }[],
  ): Promise<void> {
    // Batches, each its own transaction as in etcd: a takeover between two of them leaves the
    // first published and refuses the second.
    const published: number[] = [];
    for (let start = 0; start < updates.length; start += this.batchExtentsMax) {
      const batch = updates.slice(start, start + this.batchExtentsMax);
      try {
        await this.commitBatch(epoch, life, batch, published.length > 0);
      } catch (err) {
        if (published.length === 0) throw err;
        const partial =
          err instanceof FencedError
            ? new FencedError(`${err.message} (${published.length} extents published before)`, { published })
            : new PartialCommitError(
                `Cannot commit extents after ${published.length} were published: ${errorMessage(err)}`,
                published,
                err,
              );
        this.env.injected.add(partial);
        throw partial;
      }
      for (const u of batch) published.push(u.index);
    }
  }

  private async commitBatch(
    epoch: number,
    life: ProcessLife,
    updates: readonly { readonly index: number; readonly record: ExtentRecord | null }[],
    later: boolean,
  ): Promise<void> {
    await Promise.resolve();
    if (this.latencyMs > 0) await this.env.clock.sleep(this.env.rng.int(this.latencyMs + 1));
    else if (later) await this.env.clock.sleep(0);
    // The transaction reaches etcd now, whether or not its sender is still alive: fencing is
    // what keeps a dead writer's late commit out.
    if (this.lockEpoch !== epoch) {
      const err = new FencedError(
        `Cannot commit extents: this writer (epoch ${epoch}) no longer holds its lock (lock epoch ${this.lockEpoch ?? 'none'})`,
      );
      this.env.injected.add(err);
      this.env.onRefused(epoch, `fenced (lock epoch ${this.lockEpoch ?? 'none'})`);
      if (!life.alive) return hang();
      throw err;
    }
    if (this.failBeforeP > 0 && this.env.rng.chance(this.failBeforeP)) {
      const err = new UnavailableError(`Cannot commit ${updates.length} extents: etcd did not answer in time`);
      this.env.injected.add(err);
      this.env.onRefused(epoch, 'timed out before applying');
      if (!life.alive) return hang();
      throw err;
    }
    if (this.env.failpoint?.(epoch, 'before-commit', updates) === true) return hang();
    await this.inner.commit(updates);
    this.env.onCommit(epoch, updates);
    this.env.failpoint?.(epoch, 'after-commit', updates);
    if (!life.alive) return hang();
    if (this.failAfterP > 0 && this.env.rng.chance(this.failAfterP)) {
      const err = new UnavailableError(
        `Cannot confirm the commit of ${updates.length} extents: etcd did not answer in time`,
      );
      this.env.injected.add(err);
      this.env.onRefused(epoch, 'applied, reply lost');
      throw err;
    }
  }
}
