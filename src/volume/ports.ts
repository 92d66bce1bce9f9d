/**
 * The ports the volume engine is built on. Real adapters (etcd, nodes, S3, placement over the
 * live topology) are wired in frontend/; the in-memory twins live in sim/ for tests and the
 * simulator.
 */
import type { ExtentRecord, ShardStore } from '../core/index.js';

/** The published extent map of one volume. */
export interface ExtentMapStore {
  /** Every published extent record, read once when the volume is opened. */
  load(): Promise<Map<number, ExtentRecord>>;
  /**
   * Publishes new records (null: the extent becomes a hole). Fenced: rejects with FencedError,
   * publishing nothing of that batch, when the writer no longer holds the volume's lock. Each
   * extent switches atomically from its old record to its new one.
   */
  commit(updates: readonly { readonly index: number; readonly record: ExtentRecord | null }[]): Promise<void>;
}

/** Shard stores by target name. */
export interface TargetStores {
  /** The store of `target`; throws UnavailableError naming it when the target is unknown. */
  store(target: string): ShardStore;
}

/** Where the shards of a new generation of an extent go: one target name per shard, k+m long. */
export interface ShardPlacer {
  place(extent: number): readonly string[];
  /**
   * Told that storing a shard on `target` failed with `err`. A placer may leave the target out of
   * its next answers for a while, so a retried persist goes elsewhere (a full disk, a dead node
   * whose lease has not expired yet). Optional; never throws.
   */
  refused?(target: string, err: unknown): void;
}
