/**
 * Scrub: reads every shard of every extent (of one volume, or all) whole, verifying every 4 KiB
 * block's CRC-32, and rewrites a corrupt or missing shard in place on its own target, rebuilt from
 * the others; the extent map does not change. Shards on targets that are down are left to repair.
 */
import { ChecksumMismatchError, ShardNotFoundError, errorMessage, expectationOf } from '../core/index.js';
import type { CodecPool } from '../codec/index.js';
import type { EtcdMeta, VolumeRecord } from '../meta/index.js';
import { reachableTargets } from '../api/index.js';
import { rebuildShards } from '../volume/index.js';
import { ByteRateLimiter, type RepairStores } from './repair.js';

export interface ScrubReport {
  readonly extents: number;
  readonly shardsChecked: number;
  readonly bytesRead: number;
  readonly corrupt: number;
  readonly missing: number;
  readonly healed: number;
  readonly unhealed: readonly string[];
}

/**
 * Reads every shard of every extent (of one volume, or all) whole, verifying every block's CRC-32,
 * and rewrites a corrupt or missing shard in place on its own target, rebuilt from the others.
 * Shards on targets that are down are left to repair.
 */
export async function runScrub(
  meta: EtcdMeta,
  stores: RepairStores,
  pool: CodecPool,
  options: { volume?: string; maxBytesPerSecond?: number; onExtent?: (done: number, total: number) => void } = {},
): Promise<ScrubReport> {
  const limiter = new ByteRateLimiter(options.maxBytesPerSecond);
  const up = await reachableTargets(meta);
  const volumes = options.volume === undefined ? await meta.listVolumes() : [await meta.requireVolume(options.volume)];
  let extents = 0;
  let shardsChecked = 0;
  let bytesRead = 0;
  let corrupt = 0;
  let missing = 0;
  let healed = 0;
  const unhealed: string[] = [];
  const all: { v: VolumeRecord; e: number }[] = [];
  for (const v of volumes) for (const e of (await meta.listExtents(v.id)).keys()) all.push({ v, e });
  for (const { v, e } of all) {
    const current = await meta.getExtentWithRevision(v.id, e);
    extents += 1;
    options.onExtent?.(extents, all.length);
    if (current === null) continue;
    const rec = current.record;
    const bad: number[] = [];
    const good = new Map<number, Uint8Array>();
    for (const [i, ref] of rec.shards.entries()) {
      if (!up.has(ref.target)) continue;
      shardsChecked += 1;
      try {
        const bytes = await stores.store(ref.target).get(ref.key, undefined, expectationOf(rec, i));
        bytesRead += bytes.length;
        await limiter.take(bytes.length);
        good.set(i, bytes);
      } catch (err) {
        if (err instanceof ChecksumMismatchError) corrupt += 1;
        else if (err instanceof ShardNotFoundError) missing += 1;
        else continue; // unreachable now: repair's business
        bad.push(i);
      }
    }
    if (bad.length === 0) continue;
    const sources = new Map([...good].slice(0, v.profile.k));
    if (sources.size < v.profile.k) {
      unhealed.push(`volume ${v.name} extent ${e}: shards ${bad.join(', ')} bad and only ${sources.size} good`);
      continue;
    }
    try {
      const rebuilt = await rebuildShards(pool, v.profile, rec.shardBytes, sources, bad);
      // Re-check that the extent is still this generation before touching its objects.
      const still = await meta.getExtentWithRevision(v.id, e);
      if (still?.modRevision !== current.modRevision) continue;
      for (const [i, bytes] of rebuilt) {
        const ref = rec.shards[i]!;
        const store = stores.store(ref.target);
        await store.delete(ref.key);
        await store.put(ref.key, bytes, { seed: expectationOf(rec, i).seed });
        await limiter.take(bytes.length);
        healed += 1;
      }
    } catch (err) {
      unhealed.push(`volume ${v.name} extent ${e}: ${errorMessage(err)}`);
    }
  }
  return { extents, shardsChecked, bytesRead, corrupt, missing, healed, unhealed };
}
