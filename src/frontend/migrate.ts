/**
 * `cairnctl migrate`: moves a volume's extent map from per-extent etcd keys (how Cairn kept it
 * before map pages) into its copy-on-write page tree, then deletes the keys. Attach refuses a
 * volume that still has such keys and names this command.
 *
 * Why a migration rather than reading both forms: the per-extent keys are what cap a cluster's
 * size, and a writer that published into the tree while keys remained would leave two maps that
 * disagree. The command is idempotent and resumable: it holds the volume's lock throughout (no
 * writer can attach meanwhile), publishes the records in batches, each batch one root swap, and
 * deletes the keys only after the last swap; a run that stops anywhere is finished by running it
 * again, which publishes the same records over what the earlier run published.
 */
import { errorMessage, type ExtentRecord } from '../core/index.js';
import { extentCount, mapLevelsFor } from '../extent/index.js';
import { VolumeMaps } from '../api/index.js';
import type { EtcdMeta, VolumeRecord } from '../meta/index.js';
import { TreeExtentMapStore } from '../volume/index.js';
import { EtcdMapRoots } from './extent_map.js';

/** Records published per root swap during a migration (each batch is progress that survives a stop). */
export const migrateBatchExtents = 4096;

export interface MigrateProgress {
  readonly volume: string;
  readonly extentsDone: number;
  readonly extentsTotal: number;
}

export interface MigrateResult {
  readonly volume: string;
  /** 'migrated', 'nothing to do' (no per-extent keys), or 'would migrate' (dry run). */
  readonly outcome: 'migrated' | 'nothing to do' | 'would migrate';
  readonly extents: number;
  readonly pagesWritten: number;
}

export async function migrateVolumeMap(
  meta: EtcdMeta,
  volume: VolumeRecord,
  options: { readonly dryRun?: boolean; readonly onProgress?: (p: MigrateProgress) => void } = {},
): Promise<MigrateResult> {
  if (!(await meta.hasExtentKeys(volume.id)))
    return { volume: volume.name, outcome: 'nothing to do', extents: 0, pagesWritten: 0 };
  const records = await meta.listExtents(volume.id);
  if (options.dryRun) return { volume: volume.name, outcome: 'would migrate', extents: records.size, pagesWritten: 0 };
  const lock = await meta.acquireLock(volume.name, `cairnctl migrate (pid ${process.pid})`);
  try {
    const maps = VolumeMaps.of(meta);
    await maps.refreshTargets();
    const extents = extentCount(volume);
    const store = new TreeExtentMapStore({
      volumeId: volume.id,
      extents,
      pages: maps.pages,
      roots: new EtcdMapRoots(meta, volume, lock, mapLevelsFor(extents)),
      epoch: lock.epoch,
    });
    await store.load();
    const all: [number, ExtentRecord][] = [...records].sort(([a], [b]) => a - b);
    let pagesWritten = 0;
    for (let start = 0; start < all.length; start += migrateBatchExtents) {
      const batch = all.slice(start, start + migrateBatchExtents);
      pagesWritten += await store.commitCounting(batch.map(([index, record]) => ({ index, record })));
      options.onProgress?.({
        volume: volume.name,
        extentsDone: Math.min(all.length, start + batch.length),
        extentsTotal: all.length,
      });
    }
    // Every record is in the tree: the keys go (a stop before this is finished by a rerun).
    await meta.deleteExtentKeys(volume.id);
    return { volume: volume.name, outcome: 'migrated', extents: all.length, pagesWritten };
  } catch (err) {
    throw new Error(`Cannot migrate the extent map of volume "${volume.name}": ${errorMessage(err)}`, { cause: err });
  } finally {
    await lock.release();
  }
}
