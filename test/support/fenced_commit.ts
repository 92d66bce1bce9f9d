/**
 * One scenario, run against both extent maps (the in-memory twin and real etcd): a writer persists
 * more extents than fit in one commit batch and is fenced between two batches. Every extent the
 * map then holds must read back as written, because a new owner reads exactly that map.
 */
import { expect } from 'chai';
import type { Codec } from '../../src/core/index.js';
import { PersistError, VolumeEngine, type ExtentMapStore } from '../../src/volume/index.js';
import { MemoryTargets, roundRobinPlacer } from '../../src/sim/index.js';

export const fencedCommitVolume = {
  id: 'vfence',
  name: 'fence',
  extentBytes: 4096,
  k: 2,
  profile: { k: 2, m: 1 },
};

/** The bytes written to extent e: e in every byte, then a marker so no two extents match. */
export function extentImage(e: number): Uint8Array {
  const out = new Uint8Array(fencedCommitVolume.extentBytes).fill(e & 0xff);
  new DataView(out.buffer).setUint32(0, e);
  return out;
}

/**
 * Persists `extents` extents through `map`, whose commit must be fenced between two batches (the
 * caller arranges it), then checks: the persist failed as fenced, its PersistError names as
 * committed exactly the extents the map now holds, and every one of them reads back as written
 * through a new engine after the old engine deleted everything it meant to delete.
 */
export async function checkFencedMultiBatchCommit(options: {
  readonly map: ExtentMapStore;
  /** The map as a new owner loads it, after the fence. */
  readonly reload: () => Promise<ReadonlyMap<number, unknown>>;
  readonly codec: Codec;
  readonly extents: number;
}): Promise<{ published: number }> {
  const names = ['t0', 't1', 't2', 't3'];
  const targets = new MemoryTargets(names);
  const volume = { ...fencedCommitVolume, sizeBytes: options.extents * fencedCommitVolume.extentBytes };
  const engine = await VolumeEngine.open({
    volume,
    map: options.map,
    targets,
    placer: roundRobinPlacer(names, 3),
    pool: options.codec,
    epoch: 1,
    oldShardGraceMs: 0,
  });
  const images = Array.from({ length: options.extents }, (_, e) => ({ extent: e, data: extentImage(e) }));
  const err = await engine.persist(images).then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err, 'the persist must fail: it was fenced').to.be.instanceOf(PersistError);
  const persistError = err as PersistError;
  // Whatever the old writer deletes on its way out, it deletes now.
  await engine.close({ deletePendingNow: true });

  const published = await options.reload();
  expect(published.size, 'the first batch was published before the fence').to.be.greaterThan(0);
  expect(published.size, 'the fence stopped a later batch').to.be.lessThan(options.extents);
  const reader = await VolumeEngine.open({
    volume,
    map: {
      load: async () => new Map((await options.map.load()).entries()),
      commit: () => Promise.reject(new Error('read-only')),
    },
    targets,
    placer: roundRobinPlacer(names, 3),
    pool: options.codec,
    epoch: 0,
  });
  try {
    for (const e of published.keys()) {
      expect(reader.isHole(e)).to.equal(false);
      const bytes = await reader.readWhole(e);
      expect(Buffer.from(bytes).equals(Buffer.from(extentImage(e))), `extent ${e} reads as written`).to.equal(true);
    }
    expect(reader.stats.degradedReads, 'no published shard was deleted').to.equal(0);
  } finally {
    await reader.close();
  }
  // And the writer knows what it published, so its cache does not keep those extents dirty.
  expect([...persistError.committed].sort((a, b) => a - b)).to.deep.equal([...published.keys()].sort((a, b) => a - b));
  for (const e of published.keys()) expect(persistError.failed.has(e)).to.equal(false);

  return { published: published.size };
}
