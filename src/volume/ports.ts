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
   * Publishes new records (null: the extent becomes a hole). Each extent switches atomically
   * from its old record to its new one, but a commit of many extents may be applied in several
   * batches, in the order given: a failure part-way leaves the earlier extents published.
   *
   * Fenced: rejects with FencedError when the writer no longer holds the volume's lock; nothing
   * of the refused batch or after it is published, and the error's `published` lists the extents
   * of earlier batches that were. Any other failure rejects with a retryable CairnError; when
   * earlier batches landed it is a PartialCommitError listing them (the failing batch's outcome
   * is unknown). publishedBefore(err) reads the list from either.
   */
  commit(updates: readonly { readonly index: number; readonly record: ExtentRecord | null }[]): Promise<void>;
  /**
   * Present on a store that looks records up on demand (the map tree): its load() returns no
   * records, and the engine asks it for the extents it is about to use.
   */
  readonly onDemand?: OnDemandExtentMap;
}

/** An extent map read on demand: what the engine needs without holding every record. */
export interface OnDemandExtentMap {
  /** The published records of `extents` (undefined: never written), in order. */
  lookup(extents: readonly number[]): Promise<(ExtentRecord | undefined)[]>;
  /** The highest journal LSN a published record holds (0 when none does). */
  readonly highestJournalLsn: number;
  /** Extents whose published record holds data. */
  readonly writtenExtents: number;
  /**
   * Calls `listener` when someone else (a repair) published the map, with the extents whose
   * records changed (undefined when unknown: any record held may be stale).
   */
  onRootMoved(listener: (changed: readonly number[] | undefined) => void): void;
}

/** Shard stores by target name, and the zone each target is in. */
export interface TargetStores {
  /** The store of `target`; throws UnavailableError naming it when the target is unknown. */
  store(target: string): ShardStore;
  /**
   * The zone `target` is registered in, or undefined when the target is unknown. Synchronous and
   * without I/O (the answer comes from what the stores last learnt); never throws. Reads use it
   * to prefer shards in the reader's own zone.
   */
  zoneOf(target: string): string | undefined;
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

/** Where a run of an encrypted extent's bytes sits: extent, the generation written, byte offset. */
export interface CipherPosition {
  readonly extent: number;
  readonly generation: number;
  /** Byte offset within the extent: a multiple of unitBytes. */
  readonly offset: number;
}

/**
 * An encrypted volume's cipher (crypt/VolumeCipher). The engine enciphers each new generation's
 * bytes before the erasure code sees them and deciphers what it reads, so shards hold ciphertext
 * only. Lengths and offsets are whole units; the engine widens reads to them.
 */
export interface ExtentCipher {
  readonly unitBytes: number;
  /** Enciphers `bytes` in place; they sit at `at`. */
  encrypt(bytes: Uint8Array, at: CipherPosition): Promise<void>;
  /** Deciphers `bytes` in place; they sit at `at`. */
  decrypt(bytes: Uint8Array, at: CipherPosition): Promise<void>;
}
