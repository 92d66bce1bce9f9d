/**
 * Block-level reading and rebuilding, for when whole shards are not enough: a shard with one bad
 * 4 KiB block fails a whole-shard read, yet its other blocks are good. Three shards of a 4+2
 * extent each bad in a different block leave only three shards that read whole, but every block
 * position still has five good blocks of six. The engine's last-resort read and scrub both work
 * block by block here.
 *
 * What it keeps true: a block counts as good only when its store verified it against the record
 * (size, seed, CRC); a rebuilt block comes from k good blocks of its own position; nothing is
 * guessed: a position with fewer than k good blocks is reported, never filled.
 */
import {
  ChecksumMismatchError,
  ShardMismatchError,
  ShardNotFoundError,
  checksumBlockBytes,
  expectationOf,
  type Codec,
  type ExtentRecord,
  type Profile,
  type ShardStore,
} from '../core/index.js';
import { rebuildShards } from './degraded.js';

/** One shard as read block by block. */
export interface BlockwiseShard {
  /** The shard's bytes; blocks in `bad` are zeros until rebuilt. */
  readonly bytes: Uint8Array;
  /** Indexes of the blocks that are missing or failed their check. */
  readonly bad: Set<number>;
  readonly state: 'good' | 'corrupt' | 'missing';
}

/** Blocks in a shard of `shardBytes` bytes. */
export function blocksOf(shardBytes: number): number {
  return Math.ceil(shardBytes / checksumBlockBytes);
}

/** Byte span [from, to) of block b of a shard of `shardBytes` bytes. */
export function blockSpan(b: number, shardBytes: number): { from: number; to: number } {
  return { from: b * checksumBlockBytes, to: Math.min(shardBytes, (b + 1) * checksumBlockBytes) };
}

/** A shard with no good block (missing, or not the record's): zeros, every block bad. */
export function shardWithNoGoodBlock(
  shardBytes: number,
  state: Exclude<BlockwiseShard['state'], 'good'>,
): BlockwiseShard {
  const bad = new Set(Array.from({ length: blocksOf(shardBytes) }, (_, b) => b));
  return { bytes: new Uint8Array(shardBytes), bad, state };
}

/**
 * Reads shard i of `rec` whole; when that fails its check, reads it again in halves, quarters, and
 * so on down to single blocks, to learn which blocks are good (a shard with one bad block costs
 * about 2 log2(blocks) reads). A missing shard, or one intact but not the record's, has no good
 * block. Other errors (the target is unreachable) are thrown.
 */
export async function readShardBlocks(store: ShardStore, rec: ExtentRecord, i: number): Promise<BlockwiseShard> {
  const ref = rec.shards[i]!;
  const expect = expectationOf(rec, i);
  const blocks = blocksOf(rec.shardBytes);
  try {
    return { bytes: await store.get(ref.key, undefined, expect), bad: new Set(), state: 'good' };
  } catch (err) {
    if (err instanceof ShardNotFoundError) return shardWithNoGoodBlock(rec.shardBytes, 'missing');
    if (err instanceof ShardMismatchError) return shardWithNoGoodBlock(rec.shardBytes, 'corrupt');
    if (!(err instanceof ChecksumMismatchError)) throw err;
  }
  const bytes = new Uint8Array(rec.shardBytes);
  const bad = new Set<number>();
  const visit = async (first: number, count: number): Promise<void> => {
    const offset = first * checksumBlockBytes;
    const length = Math.min(rec.shardBytes, (first + count) * checksumBlockBytes) - offset;
    try {
      bytes.set(await store.get(ref.key, { offset, length }, expect), offset);
      return;
    } catch (err) {
      if (!(err instanceof ChecksumMismatchError)) throw err;
    }
    if (count === 1) {
      bad.add(first);
      return;
    }
    const half = Math.ceil(count / 2);
    await visit(first, half);
    await visit(first + half, count - half);
  };
  await visit(0, blocks);
  return { bytes, bad, state: 'corrupt' };
}

/** What rebuildBadBlocks() did. */
export interface BlockRebuild {
  /** Shards with at least one block rebuilt. */
  readonly changed: Set<number>;
  readonly blocksRebuilt: number;
  /** Block positions with fewer than k good blocks, with the shards bad there. */
  readonly unfixable: { block: number; good: number; bad: number[] }[];
}

/**
 * Rebuilds, in place, every bad block of the shards in `reads` selected by `which` (default all)
 * from k good blocks of the same position. Shards absent from `reads` (unreachable) count as
 * neither good nor bad.
 */
export async function rebuildBadBlocks(
  codec: Codec,
  profile: Profile,
  shardBytes: number,
  reads: ReadonlyMap<number, BlockwiseShard>,
  which: (shard: number) => boolean = () => true,
): Promise<BlockRebuild> {
  const { k } = profile;
  const changed = new Set<number>();
  const unfixable: BlockRebuild['unfixable'] = [];
  let blocksRebuilt = 0;
  for (let b = 0; b < blocksOf(shardBytes); b++) {
    const wanted = [...reads].filter(([i, r]) => which(i) && r.bad.has(b)).map(([i]) => i);
    if (wanted.length === 0) continue;
    const { from, to } = blockSpan(b, shardBytes);
    const sources = new Map<number, Uint8Array>();
    for (const [i, r] of reads) if (!r.bad.has(b) && sources.size < k) sources.set(i, r.bytes.subarray(from, to));
    if (sources.size < k) {
      unfixable.push({ block: b, good: sources.size, bad: wanted });
      continue;
    }
    const rebuilt = await rebuildShards(codec, profile, to - from, sources, wanted);
    for (const i of wanted) {
      const r = reads.get(i)!;
      r.bytes.set(rebuilt.get(i)!, from);
      r.bad.delete(b);
      changed.add(i);
      blocksRebuilt += 1;
    }
  }
  return { changed, blocksRebuilt, unfixable };
}
