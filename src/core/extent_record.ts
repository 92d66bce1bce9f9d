/**
 * The extent-record vocabulary: what a published generation of one extent is, and how its shard
 * objects are named. The metadata adapters store these records, the engine reads and publishes
 * them, repair moves their shards; none of them owns the type, so it lives here.
 *
 * What it keeps true: a record names exactly k+m shards, shard i of the profile at position i; a
 * shard key is derived from (volume id, extent, generation, shard) alone, so two generations never
 * share an object and a key says what it holds.
 */
import { assert, assertByteCount } from './assert.js';
import { crc32Of } from './checksum.js';

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
  /**
   * The end-to-end check (u32, never 0): shard i is framed with shardSeed(seed, i, shardBytes),
   * so a reader verifies every block it reads against this record, not only against what a node
   * says. Absent on records written before seeds existed (their shards verify with seed 0).
   */
  readonly seed?: number;
  /**
   * Which 4 KiB blocks of the extent read as zeros (base64 of a bitmap, bit i of byte i >> 3 for
   * block i), when some do and some do not: block status reports them as holes, so a trim inside
   * a written extent shows exactly. Absent: no such block, or every block (or an older record).
   */
  readonly zeroBlocks?: string;
}

/** The size of a block zeroBlocks counts. */
export const zeroBlockBytes = 4096;

/**
 * The zeroBlocks of an extent image: undefined when no 4 KiB block reads as zeros or every one
 * does (then the extent is either plain data or better published as a hole).
 */
export function zeroBlocksOf(data: Uint8Array): string | undefined {
  const blocks = Math.ceil(data.length / zeroBlockBytes);
  const bitmap = new Uint8Array(Math.ceil(blocks / 8));
  let zero = 0;
  const aligned = data.byteOffset % 8 === 0 ? new BigUint64Array(data.buffer, data.byteOffset, data.length >> 3) : null;
  for (let b = 0; b < blocks; b++) {
    const from = b * zeroBlockBytes;
    const to = Math.min(data.length, from + zeroBlockBytes);
    let allZero = true;
    if (aligned !== null && to - from === zeroBlockBytes) {
      for (let w = from >> 3; w < to >> 3; w++)
        if (aligned[w] !== 0n) {
          allZero = false;
          break;
        }
    } else {
      for (let i = from; i < to; i++)
        if (data[i] !== 0) {
          allZero = false;
          break;
        }
    }
    if (allZero) {
      bitmap[b >> 3]! |= 1 << (b & 7);
      zero += 1;
    }
  }
  return zero === 0 || zero === blocks ? undefined : Buffer.from(bitmap).toString('base64');
}

/** True when block `block` of a record's extent reads as zeros by its zeroBlocks. */
export function isZeroBlock(bitmap: Uint8Array, block: number): boolean {
  return ((bitmap[block >> 3] ?? 0) & (1 << (block & 7))) !== 0;
}

/**
 * What a reader that has a shard's extent record knows the shard must be: its size and seed. A
 * store given one checks the shard against it instead of against what the node says.
 */
export interface ShardExpectation {
  readonly dataBytes: number;
  readonly seed: number;
}

/**
 * The seed shard `shard` of a generation with extent seed `extentSeed` is framed with, for
 * shards of `dataBytes` bytes: never 0 (0 means "none"), different for each shard of a stripe
 * and each size. Worked example: extentSeed 0x12345678, shard 2, dataBytes 1048576 gives the
 * CRC-32 of the 16 bytes 78 56 34 12 | 02 00 00 00 | 00 00 10 00 00 00 00 00, or 1 if that is 0.
 */
export function shardSeed(extentSeed: number, shard: number, dataBytes: number): number {
  assert(Number.isInteger(extentSeed) && extentSeed > 0 && extentSeed < 2 ** 32, `extent seed ${extentSeed}`);
  assert(Number.isInteger(shard) && shard >= 0 && shard < 2 ** 32, `shard index ${shard}`);
  assertByteCount(dataBytes);
  const bytes = new Uint8Array(16);
  const view = new DataView(bytes.buffer);
  view.setUint32(0, extentSeed, true);
  view.setUint32(4, shard, true);
  view.setBigUint64(8, BigInt(dataBytes), true);
  return crc32Of(bytes) || 1;
}

/** Expectations already derived, per record (records are immutable): a read path asks per read. */
const expectationsOf = new WeakMap<ExtentRecord, readonly ShardExpectation[]>();

/** What shard `shard` of `rec` must be for a reader: seed 0 for a record written before seeds. */
export function expectationOf(rec: ExtentRecord, shard: number): ShardExpectation {
  assert(Number.isInteger(shard) && shard >= 0 && shard < rec.shards.length, `record has no shard ${shard}`);
  let list = expectationsOf.get(rec);
  if (list === undefined) {
    const { seed, shardBytes } = rec;
    list = rec.shards.map((_, i) => ({
      dataBytes: shardBytes,
      seed: seed === undefined ? 0 : shardSeed(seed, i, shardBytes),
    }));
    expectationsOf.set(rec, list);
  }
  return list[shard]!;
}

/**
 * The key of shard `shard` of `extent` at `generation` of volume `volumeId`, e.g.
 * `v7f3a/17/8589934593/4`. Stores check keys at their edge; this shape always passes.
 */
export function shardKey(volumeId: string, extent: number, generation: number, shard: number): string {
  return `${volumeId}/${extent}/${generation}/${shard}`;
}

/**
 * The inverse of shardKey(): `<volumeId>/<extent>/<generation>/<shard>` to its numbers, or
 * undefined for a key of another shape (not Cairn's).
 */
export function parseShardKey(
  key: string,
): { volumeId: string; extent: number; generation: number; shard: number } | undefined {
  const parts = key.split('/');
  if (parts.length !== 4) return undefined;
  const [extent, generation, shard] = [Number(parts[1]), Number(parts[2]), Number(parts[3])];
  if (!Number.isSafeInteger(extent) || !Number.isSafeInteger(generation) || !Number.isSafeInteger(shard))
    return undefined;
  return { volumeId: parts[0]!, extent, generation, shard };
}
