/**
 * Read views shared by the CLI (`volume info`, `snapshot list`) and the API, so both print the
 * same fields: what `--json` shows is what GET returns.
 */
import { volumeName } from '../../core/index.js';
import { extentCount, mapLevelsFor } from '../../extent/index.js';
import type { EtcdMeta, VolumeRecord } from '../../meta/index.js';
import { snapshotUsage } from '../snapshots.js';

export type VolumeInfo = VolumeRecord & {
  readonly map: {
    readonly form: 'pages' | 'per-extent etcd keys';
    readonly levels: number;
    readonly writtenExtents: number;
    readonly journalLsn: number;
    readonly rootGeneration: number | null;
  };
};

/** A volume's record and what its map root says (no map page is read). */
export async function volumeInfo(meta: EtcdMeta, name: string): Promise<VolumeInfo> {
  const volume = await meta.requireVolume(name);
  const root = await meta.readMapRoot(volume.id, mapLevelsFor(extentCount(volume)));
  const legacy = await meta.hasExtentKeys(volume.id);
  return {
    ...volume,
    map: {
      form: legacy ? 'per-extent etcd keys' : 'pages',
      levels: root.levels,
      writtenExtents: root.written ?? 0,
      journalLsn: root.journalLsn ?? 0,
      rootGeneration: root.page?.generation ?? null,
    },
  };
}

export interface SnapshotRow {
  readonly name: string;
  readonly createdAt: string;
  readonly sizeBytes: number;
  readonly writtenExtents: number;
  readonly uniqueBytes: number;
  readonly uniqueShards: number;
  readonly clones: readonly string[];
}

/** A volume's snapshots with the bytes each alone holds. */
export async function snapshotRows(meta: EtcdMeta, name: string): Promise<SnapshotRow[]> {
  const volume = await meta.requireVolume(volumeName(name));
  return (await snapshotUsage(meta, volume)).map((u) => ({
    name: u.snapshot.name,
    createdAt: u.snapshot.createdAt,
    sizeBytes: u.snapshot.sizeBytes,
    writtenExtents: u.snapshot.root.written ?? 0,
    uniqueBytes: u.uniqueBytes,
    uniqueShards: u.uniqueShards,
    clones: u.clones,
  }));
}
