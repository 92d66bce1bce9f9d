/**
 * Scrub: proves every extent's shards are the ones its record names and that its stripes are
 * consistent, and heals what is not, block by block, in place on the shards' own targets; the
 * extent map does not change. Shards on targets that are down are left to repair.
 *
 * Per extent:
 * 1. Every shard on a live target is read whole and checked against the record (size, seed and
 *    every 4 KiB block's CRC-32; see shard/format.ts). A shard that fails is read again in halves,
 *    down to single blocks, so its good blocks are known; a missing shard, or one that is intact
 *    but not the record's (ShardMismatchError), has no good block.
 * 2. Each bad block is rebuilt from the same block of k shards where that block is good. Three
 *    shards each bad in a different block still leave every stripe five good blocks of six.
 * 3. With every shard in hand, the parity is encoded again from the data shards and compared block
 *    by block. A block position where it differs holds a shard whose CRCs pass but whose bytes are
 *    wrong (written wrong, or forged). With m >= 2 the culprit is found: the one shard whose
 *    block, rebuilt from the others, makes the stripe consistent. With m = 1, or when no single
 *    shard explains it, the position is reported and left alone.
 * 4. Every shard with a rebuilt block is rewritten whole (delete, then put with the record's
 *    seed), after checking that the extent still has the generation that was read.
 *
 * What it keeps true: scrub never writes a block it could not rebuild from k blocks that verify,
 * and never touches an extent whose generation changed while it worked.
 */
import { checksumBlockBytes, errorMessage, expectationOf, type ExtentRecord, type Profile } from '../core/index.js';
import type { CodecPool } from '../codec/index.js';
import type { EtcdMeta, VolumeRecord } from '../meta/index.js';
import { VolumeMaps, reachableTargets, recordToken } from '../api/index.js';
import {
  blocksOf,
  blockSpan,
  readShardBlocks,
  rebuildBadBlocks,
  shardWithNoGoodBlock,
  rebuildShards,
  type BlockwiseShard,
} from '../volume/index.js';
import { ByteRateLimiter, type RepairStores } from './repair.js';

export interface ScrubReport {
  readonly extents: number;
  readonly shardsChecked: number;
  readonly bytesRead: number;
  /** Shards with at least one block that failed its check against the record. */
  readonly corrupt: number;
  readonly missing: number;
  /** Shards whose blocks all passed their CRCs but whose bytes the parity proved wrong. */
  readonly inconsistent: number;
  /** Extents whose parity was encoded again and compared (all k+m shards were in hand). */
  readonly parityChecked: number;
  /** Blocks rebuilt, over all shards rewritten. */
  readonly blocksRebuilt: number;
  /** Shards rewritten. */
  readonly healed: number;
  readonly unhealed: readonly string[];
}

export interface ScrubOptions {
  readonly volume?: string;
  /** Only these extents, by volume id (a census's findings); every extent when absent. */
  readonly only?: ReadonlyMap<string, ReadonlySet<number>>;
  /**
   * Shard keys a census found missing from their node: rebuilt without being read. A node may
   * still answer reads of a file deleted under it from a file it holds open, until it closes it.
   */
  readonly absent?: ReadonlySet<string>;
  readonly maxBytesPerSecond?: number;
  readonly onExtent?: (done: number, total: number) => void;
}

export async function runScrub(
  meta: EtcdMeta,
  stores: RepairStores,
  pool: CodecPool,
  options: ScrubOptions = {},
): Promise<ScrubReport> {
  const limiter = new ByteRateLimiter(options.maxBytesPerSecond);
  const up = await reachableTargets(meta);
  const volumes = options.volume === undefined ? await meta.listVolumes() : [await meta.requireVolume(options.volume)];
  const report = {
    extents: 0,
    shardsChecked: 0,
    bytesRead: 0,
    corrupt: 0,
    missing: 0,
    inconsistent: 0,
    parityChecked: 0,
    blocksRebuilt: 0,
    healed: 0,
    unhealed: [] as string[],
  };
  const all: { v: VolumeRecord; e: number }[] = [];
  for (const v of volumes) {
    const only = options.only?.get(v.id);
    if (options.only !== undefined && only === undefined) continue;
    for (const e of (await VolumeMaps.of(meta).listExtents(v.id)).keys()) if (only?.has(e) ?? true) all.push({ v, e });
  }
  /** Scrubs one generation (`rec`); `still` says, before any write, that it is still the one read. */
  const scrubRecord = async (
    v: VolumeRecord,
    rec: ExtentRecord,
    where: string,
    still: () => Promise<boolean>,
  ): Promise<void> => {
    const reads = new Map<number, BlockwiseShard>();
    for (const [i, ref] of rec.shards.entries()) {
      if (!up.has(ref.target)) continue;
      report.shardsChecked += 1;
      const read =
        options.absent?.has(ref.key) === true
          ? shardWithNoGoodBlock(rec.shardBytes, 'missing')
          : await readShardBlocks(stores.store(ref.target), rec, i).catch(() => undefined);
      if (read === undefined) continue; // unreachable now: repair's business
      report.bytesRead += read.bytes.length - read.bad.size * checksumBlockBytes;
      await limiter.take(read.bytes.length);
      if (read.state === 'corrupt') report.corrupt += 1;
      if (read.state === 'missing') report.missing += 1;
      reads.set(i, read);
    }
    try {
      const fixed = await healExtent(pool, v.profile, rec, reads, where, report);
      if (fixed.size === 0) return;
      // Re-check that the extent is still this generation before touching its objects.
      if (!(await still())) return;
      for (const i of fixed) {
        const ref = rec.shards[i]!;
        const store = stores.store(ref.target);
        const bytes = reads.get(i)!.bytes;
        await store.delete(ref.key);
        await store.put(ref.key, bytes, { seed: expectationOf(rec, i).seed });
        await limiter.take(bytes.length);
        report.healed += 1;
      }
    } catch (err) {
      report.unhealed.push(`${where}: ${errorMessage(err)}`);
    }
  };
  const maps = VolumeMaps.of(meta);
  for (const { v, e } of all) {
    const current = await maps.getExtentWithRevision(v.id, e);
    report.extents += 1;
    options.onExtent?.(report.extents, all.length);
    if (current === null || current.record.shards.length === 0) continue;
    await scrubRecord(
      v,
      current.record,
      `volume ${v.name} extent ${e}`,
      async () => (await maps.getExtentWithRevision(v.id, e))?.modRevision === current.modRevision,
    );
  }
  // Then the generations only snapshots hold (a full scrub only): each once, however many
  // snapshots share it. Healing rewrites shards in place, so no map changes.
  if (options.only !== undefined) return report;
  for (const v of volumes) {
    const seen = new Set<string>();
    for (const rec of (await maps.listExtents(v.id)).entries()) seen.add(`${rec[0]}/${rec[1].generation}`);
    for (const snapshot of await meta.listSnapshots(v.id)) {
      const tree = maps.tree({ ...v, sizeBytes: snapshot.sizeBytes });
      for await (const item of tree.walk(snapshot.root)) {
        if (!('record' in item) || item.record.shards.length === 0) continue;
        const id = `${item.extent}/${item.record.generation}`;
        if (seen.has(id)) continue;
        seen.add(id);
        report.extents += 1;
        const token = recordToken(item.record);
        await scrubRecord(v, item.record, `snapshot ${v.name}@${snapshot.name} extent ${item.extent}`, async () => {
          // Still in the snapshot as read (a repair may have moved its shards meanwhile).
          const now = await meta.getSnapshot(v.id, snapshot.name);
          if (now === null) return false;
          const rec = await tree.lookup(now.root, item.extent).catch(() => undefined);
          return rec !== undefined && recordToken(rec) === token;
        });
      }
    }
  }
  return report;
}

/**
 * Rebuilds every bad block that k good blocks of its stripe allow, then checks the parity of the
 * whole extent when all k+m shards are in hand and fixes the one shard a wrong position points
 * at. Returns the shards whose bytes changed (to rewrite); reports what it could not fix.
 */
async function healExtent(
  pool: CodecPool,
  profile: Profile,
  rec: ExtentRecord,
  reads: Map<number, BlockwiseShard>,
  where: string,
  report: { unhealed: string[]; blocksRebuilt: number; inconsistent: number; parityChecked: number },
): Promise<Set<number>> {
  const { k, m } = profile;
  const fixed = new Set<number>();
  const span = (b: number) => blockSpan(b, rec.shardBytes);
  const first = await rebuildBadBlocks(pool, profile, rec.shardBytes, reads);
  for (const i of first.changed) fixed.add(i);
  report.blocksRebuilt += first.blocksRebuilt;
  const [worst] = first.unfixable;
  if (worst !== undefined)
    report.unhealed.push(
      `${where}: block ${worst.block} is good on ${worst.good} shards, ${k} needed (shards ${worst.bad.join(', ')} bad there)` +
        (first.unfixable.length > 1 ? `; ${first.unfixable.length} blocks in all cannot be rebuilt` : ''),
    );
  if (first.unfixable.length > 0 || reads.size < k + m) return fixed;

  // Every block of every shard is in hand: encode the parity again and compare.
  report.parityChecked += 1;
  const shards = (b?: number): Map<number, Uint8Array> => {
    const out = new Map<number, Uint8Array>();
    for (const [i, r] of reads) {
      if (b === undefined) out.set(i, r.bytes);
      else out.set(i, r.bytes.subarray(span(b).from, span(b).to));
    }
    return out;
  };
  const wrong = await inconsistentBlocks(pool, profile, shards(), rec.shardBytes);
  for (const b of wrong) {
    const { from, to } = span(b);
    const stripe = shards(b);
    const culprits: { shard: number; bytes: Uint8Array }[] = [];
    // With m = 1 any one shard rebuilt from the others makes the stripe consistent: no culprit.
    if (m >= 2) {
      for (let j = 0; j < k + m; j++) {
        const others = new Map([...stripe].filter(([i]) => i !== j).slice(0, k));
        const candidate = (await rebuildShards(pool, profile, to - from, others, [j])).get(j)!;
        const trial = new Map(stripe);
        trial.set(j, candidate);
        if ((await inconsistentBlocks(pool, profile, trial, to - from)).length === 0)
          culprits.push({ shard: j, bytes: candidate });
      }
    }
    if (culprits.length !== 1) {
      report.unhealed.push(
        `${where}: block ${b} fails its parity check, and ${culprits.length === 0 ? 'no single shard' : `${culprits.length} shards`} could explain it`,
      );
      continue;
    }
    const [{ shard, bytes }] = culprits as [{ shard: number; bytes: Uint8Array }];
    reads.get(shard)!.bytes.set(bytes, from);
    if (!fixed.has(shard)) report.inconsistent += 1;
    fixed.add(shard);
    report.blocksRebuilt += 1;
  }
  return fixed;
}

/** Block positions where the parity encoded again from the data shards differs from the parity read. */
async function inconsistentBlocks(
  pool: CodecPool,
  profile: Profile,
  shards: ReadonlyMap<number, Uint8Array>,
  shardBytes: number,
): Promise<number[]> {
  const { k, m } = profile;
  const data = new Map([...shards].filter(([i]) => i < k));
  const parityIndexes = Array.from({ length: m }, (_, p) => k + p);
  const parity = await rebuildShards(pool, profile, shardBytes, data, parityIndexes);
  const out: number[] = [];
  for (let b = 0; b < blocksOf(shardBytes); b++) {
    const { from, to } = blockSpan(b, shardBytes);
    const differs = parityIndexes.some(
      (p) => !Buffer.from(parity.get(p)!.subarray(from, to)).equals(Buffer.from(shards.get(p)!.subarray(from, to))),
    );
    if (differs) out.push(b);
  }
  return out;
}
