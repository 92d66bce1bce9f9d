/**
 * Degraded reads, shared by the engine (a read that lost a shard) and repair (rebuilding lost
 * shards): read any k verified shards of a generation, then rebuild the ones wanted from them.
 *
 * What it keeps true: a shard counts only when its store verified it and it has exactly the
 * record's shardBytes; at most `concurrency` reads are in flight and no more than k shards are
 * kept; the codec buffer is always released. What it leaves out: choosing which shards are lost
 * (the caller passes `skip`) and publishing anything.
 */
import { assert, errorMessage, type Codec, type ExtentRecord, type Profile } from '../core/index.js';
import type { TargetStores } from './ports.js';

export interface ReadAnyKOptions {
  /** Shard indexes not to read (known lost or being replaced). */
  readonly skip?: ReadonlySet<number>;
  /** The order to try shards in; default data shards first, then parity. */
  readonly order?: readonly number[];
  /** Reads in flight at once; default k. */
  readonly concurrency?: number;
  /** Told of every read attempt and failure, for statistics. */
  readonly onRead?: (ok: boolean) => void;
}

/**
 * Reads whole shards of `rec` until k verified ones are in hand or none are left to try.
 * Never throws for a shard that fails: it is listed in `failures` as `shard i on T: why`.
 */
export async function readAnyK(
  targets: TargetStores,
  rec: ExtentRecord,
  k: number,
  options: ReadAnyKOptions = {},
): Promise<{ shards: Map<number, Uint8Array>; failures: string[] }> {
  const order = (options.order ?? rec.shards.map((_, i) => i)).filter((i) => !(options.skip?.has(i) ?? false));
  const shards = new Map<number, Uint8Array>();
  const failures: string[] = [];
  let next = 0;
  const reader = async (): Promise<void> => {
    while (shards.size < k && next < order.length) {
      const i = order[next++]!;
      const ref = rec.shards[i];
      assert(ref !== undefined, `record has no shard ${i}`);
      try {
        const bytes = await targets.store(ref.target).get(ref.key);
        if (bytes.length !== rec.shardBytes) throw new Error(`has ${bytes.length} bytes, expected ${rec.shardBytes}`);
        options.onRead?.(true);
        if (shards.size < k) shards.set(i, bytes);
      } catch (err) {
        options.onRead?.(false);
        failures.push(`shard ${i} on ${ref.target}: ${errorMessage(err)}`);
      }
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, options.concurrency ?? k) }, reader));
  return { shards, failures };
}

/**
 * The shards `wanted` of an extent, rebuilt on `codec` from `sources` (at least k shards when any
 * wanted shard is missing from them). Returned arrays belong to the caller.
 */
export async function rebuildShards(
  codec: Codec,
  profile: Profile,
  shardBytes: number,
  sources: ReadonlyMap<number, Uint8Array>,
  wanted: readonly number[],
): Promise<Map<number, Uint8Array>> {
  const { k, m } = profile;
  const out = new Map<number, Uint8Array>();
  const toDecode = wanted.filter((i) => {
    const have = sources.get(i);
    if (have !== undefined) out.set(i, have);
    return have === undefined;
  });
  if (toDecode.length === 0) return out;
  assert(sources.size >= k, `rebuild needs ${k} sources, has ${sources.size}`);
  const buf = codec.allocate(profile, shardBytes);
  try {
    const present = Array.from({ length: k + m }, (_, i) => sources.has(i));
    for (const [i, bytes] of sources) buf.shard(i).set(bytes);
    await codec.reconstruct(buf, present, toDecode);
    for (const i of toDecode) out.set(i, buf.shard(i).slice());
  } finally {
    codec.release(buf);
  }
  return out;
}
