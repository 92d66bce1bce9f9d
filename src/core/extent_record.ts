/**
 * The extent-record vocabulary: what a published generation of one extent is, and how its shard
 * objects are named. The metadata adapters store these records, the engine reads and publishes
 * them, repair moves their shards; none of them owns the type, so it lives here.
 *
 * What it keeps true: a record names exactly k+m shards, shard i of the profile at position i; a
 * shard key is derived from (volume id, extent, generation, shard) alone, so two generations never
 * share an object and a key says what it holds.
 */

/** Where one shard of a published generation lives: a target name and the object key there. */
export interface ExtentShardRef {
  readonly target: string;
  readonly key: string;
}

/** A published, immutable generation of one extent. */
export interface ExtentRecord {
  /** epoch * 2^32 + a per-writer counter: unique across writers and crashes. */
  readonly generation: number;
  /** Bytes in each of the k+m shards (the extent's bytes / k, rounded up). */
  readonly shardBytes: number;
  readonly shards: readonly ExtentShardRef[];
  /**
   * The highest journal LSN whose bytes this generation holds for this extent: replaying the
   * journal skips this extent in records up to it. Absent for a volume without a journal.
   */
  readonly journalLsn?: number;
}

/**
 * The key of shard `shard` of `extent` at `generation` of volume `volumeId`, e.g.
 * `v7f3a/17/8589934593/4`. Stores check keys at their edge; this shape always passes.
 */
export function shardKey(volumeId: string, extent: number, generation: number, shard: number): string {
  return `${volumeId}/${extent}/${generation}/${shard}`;
}
