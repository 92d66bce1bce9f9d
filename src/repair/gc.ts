/**
 * Garbage collection: the shards of deleted volumes (collectGarbage) and shards of live volumes
 * that no extent record points to (sweepOrphans). It never deletes what a live writer or a running
 * repair may still publish; how each function keeps that true is said at the function.
 */
import { UnavailableError, errorMessage, parseShardKey, type ShardStore } from '../core/index.js';
import { lineageId, type EtcdMeta, type SnapshotRecord, type VolumeRecord } from '../meta/index.js';
import { keyHolders, shardKeyPages } from '../shard/index.js';
import {
  VolumeMaps,
  lineageRelink,
  neighbourRoots,
  neighboursOf,
  readLineage,
  rootsReading,
  uniqueShards,
  type OwnedRoot,
} from '../api/index.js';

export interface GcReport {
  readonly volumes: number;
  readonly shardsDeleted: number;
  readonly errors: readonly string[];
}

/**
 * Deletes every shard of every deleted volume from `stores` (listing each store by the volume
 * id's prefix, so shards that were written but never published go too), then forgets the volume.
 * A store that fails keeps the volume queued for the next run. Bounded work per call.
 */
export async function collectGarbage(
  meta: EtcdMeta,
  stores: ReadonlyMap<string, ShardStore>,
  options: {
    /** Deletes every journal segment of a deleted volume on every node (resolves when done). */
    readonly trimJournals?: (volumeId: string) => Promise<void>;
  } = {},
): Promise<GcReport> {
  const queued = await meta.listGcVolumes();
  let shardsDeleted = 0;
  const errors: string[] = [];
  for (const { id } of queued) {
    let complete = true;
    for (const [target, store] of stores) {
      try {
        for (;;) {
          const batch = await store.list(`${id}/`, { limit: 1000 });
          if (batch.length === 0) break;
          for (const key of batch) await store.delete(key);
          shardsDeleted += batch.length;
        }
      } catch (err) {
        complete = false;
        errors.push(`target ${target}: ${errorMessage(err)}`);
      }
    }
    if (options.trimJournals !== undefined) {
      try {
        await options.trimJournals(id);
      } catch (err) {
        complete = false;
        errors.push(`journal of ${id}: ${errorMessage(err)}`);
      }
    }
    if (complete) await meta.finishGcVolume(id);
  }
  return { volumes: queued.length, shardsDeleted, errors };
}

export interface OrphanReport {
  readonly shardsScanned: number;
  readonly orphansDeleted: number;
  /** Map pages no root reaches (commits that lost their root swap, pages a newer commit replaced). */
  readonly pagesDeleted: number;
  readonly errors: readonly string[];
}

/**
 * Deletes shard objects of live volumes that no extent record points to on that target: stale
 * copies on a node that came back after repair moved its shards, superseded generations whose
 * deletion was lost in a crash, and shards of a writer that died before its commit.
 *
 * It never deletes what a live writer may be about to publish: an unreferenced shard newer than
 * its extent's published generation is kept while a writer holds the volume's lock at that
 * shard's epoch (generation = epoch * 2^32 + counter). Without a lock there is no writer.
 */
export async function sweepOrphans(meta: EtcdMeta, stores: ReadonlyMap<string, ShardStore>): Promise<OrphanReport> {
  // What each root reaches, by root: a snapshot's never changes, so it is walked once per sweep.
  const walked = new Map<string, Set<string>>();
  const reachedBy = async (r: OwnedRoot): Promise<Set<string>> => {
    const id = `${r.volume.id}/${r.root.page?.generation}/${r.root.page?.checksum}`;
    let set = walked.get(id);
    if (set === undefined) {
      set = new Set();
      for await (const item of VolumeMaps.of(meta).tree(r.volume).walk(r.root))
        if ('record' in item) for (const sh of item.record.shards) set.add(`${sh.target}\u0000${sh.key}`);
      walked.set(id, set);
    }
    return set;
  };
  let shardsScanned = 0;
  let orphansDeleted = 0;
  let pagesDeleted = 0;
  const errors: string[] = [];
  for (const volume of await meta.listVolumes()) {
    for (const [target, store] of stores) {
      try {
        for await (const page of shardKeyPages(store, `${volume.id}/`)) {
          // Read the map and the lock AFTER listing: every shard on the page was stored before
          // this read, so it is either published by now, or its writer still holds the lock, or
          // its writer is gone for good. Read before listing, a writer that attached and
          // published in between would have its new shards taken for orphans.
          // Moving marks first, then the map: a repair marks a shard before storing it and unmarks
          // it only after publishing, so a shard either shows a mark here or its record below.
          // Every other root that may read this volume's shards (its snapshots, its clones'
          // maps), read after the live one for the same reason (rootsReading).
          const moving = await meta.listMoving();
          const records = await VolumeMaps.of(meta).listExtents(volume.id);
          const lock = await meta.getLock(volume.name);
          const referenced = new Set<string>();
          for (const rec of records.values()) for (const s of rec.shards) referenced.add(`${s.target}\u0000${s.key}`);
          const others = await Promise.all(
            (await rootsReading(meta, volume, { pending: true })).slice(1).map((r) => reachedBy(r)),
          );
          for (const key of page) {
            shardsScanned += 1;
            const at = `${target}\u0000${key}`;
            if (referenced.has(at) || moving.has(at) || others.some((o) => o.has(at))) continue;
            const parsed = parseShardKey(key);
            if (parsed === undefined) continue; // not ours
            const { extent, generation } = parsed;
            const published = records.get(extent)?.generation ?? -1;
            const epoch = Math.floor(generation / 2 ** 32);
            const maybeInFlight = generation > published && lock !== null && epoch >= lock.epoch;
            if (maybeInFlight) continue;
            await store.delete(key);
            orphansDeleted += 1;
          }
        }
      } catch (err) {
        if (errors.length < 100) errors.push(`target ${target}: ${errorMessage(err)}`);
      }
    }
    try {
      pagesDeleted += await sweepMapPages(meta, volume, stores);
    } catch (err) {
      // A page the walk cannot read: delete nothing of this volume's map this time.
      if (errors.length < 100) errors.push(`map of volume ${volume.name}: ${errorMessage(err)}`);
    }
  }
  return { shardsScanned, orphansDeleted, pagesDeleted, errors };
}

/**
 * Deletes the volume's map pages that no root reaches, on every target. Lists first, then reads
 * the root and the lock: a commit that wrote its pages before the listing either swapped its root
 * before the read (its pages are reached) or is newer than the root, or its writer holds the lock
 * (MapTree.collectable keeps both).
 */
async function sweepMapPages(
  meta: EtcdMeta,
  volume: VolumeRecord,
  stores: ReadonlyMap<string, ShardStore>,
): Promise<number> {
  const listed = await keyHolders(stores, `${volume.id}/map/`);
  if (listed.size === 0) return 0;
  const maps = VolumeMaps.of(meta);
  // The live root first, then the snapshots' (a snapshot saves a root that existed).
  const roots = (await rootsReading(meta, volume, { pending: true }))
    .filter((r) => r.volume.id === volume.id)
    .map((r) => r.root);
  const lock = await meta.getLock(volume.name);
  const doomed = await maps
    .tree(volume)
    .collectable(roots, listed.keys(), lock === null ? {} : { inFlightEpoch: lock.epoch });
  let deleted = 0;
  for (const key of doomed)
    for (const target of listed.get(key)!) {
      await stores.get(target)!.delete(key);
      deleted += 1;
    }
  return deleted;
}

export interface SnapshotGcReport {
  /** Deleted snapshots collected (their gc record removed). */
  readonly snapshots: number;
  /**
   * Deleted snapshots left for a later run: a branch point of the lineage (three or more
   * neighbours, after rollbacks) waits until deleting its neighbours leaves it two.
   */
  readonly waiting: number;
  readonly shardsDeleted: number;
  /** Shard bytes freed: what `snapshot list` said each alone held. */
  readonly bytesFreed: number;
  readonly errors: readonly string[];
}

/**
 * Frees what each deleted snapshot alone held: the shards of its records, under its volume's id,
 * that no other root reads (uniqueShards). With the volume's lineage complete, the other roots
 * are its neighbours' (neighbourRoots): the work is the tree diffs against at most two roots,
 * O(the extents that differ), not O(snapshots); then the lineage closes over it in the
 * transaction that forgets it (lineageRelink). Without lineage (snapshots older than it), every
 * root that may read the volume's shards is compared. The live root is read before the lineage:
 * a snapshot made later holds only what that root held or newer generations. Its map pages go
 * with the next orphan sweep. A store that fails keeps the snapshot queued for the next run.
 */
export async function collectSnapshots(
  meta: EtcdMeta,
  stores: ReadonlyMap<string, ShardStore>,
): Promise<SnapshotGcReport> {
  const volumes = await meta.listVolumes();
  const maps = VolumeMaps.of(meta);
  let shardsDeleted = 0;
  let bytesFreed = 0;
  let snapshots = 0;
  const errors: string[] = [];
  const waiting = new Set<string>();
  // Collecting one may let a waiting neighbour go: run until a pass collects nothing.
  for (let progress = true; progress;) {
    progress = false;
    waiting.clear();
    for (const snapshot of await meta.listGcSnapshots()) {
      const volume = volumes.find((v) => v.id === snapshot.volumeId);
      const what = `snapshot ${snapshot.volume}@${snapshot.name}`;
      try {
        if (volume === undefined) {
          // A deleted volume's shards all go with it (collectGarbage).
          await meta.finishGcSnapshot(snapshot.volumeId, snapshot.name);
          snapshots += 1;
          progress = true;
          continue;
        }
        const live = await maps.root(volume);
        const lineage = await readLineage(meta, volume.id);
        const node = lineage.pending.find((s) => lineageId(s) === lineageId(snapshot)) ?? snapshot;
        if (lineage.complete && neighboursOf(lineage, node).degree > 2) {
          waiting.add(what);
          continue;
        }
        const others = lineage.complete
          ? neighbourRoots(volume, live, lineage, node)
          : await rootsReading(meta, volume, { pending: true, except: snapshot });
        for (const shard of await uniqueShards(meta, volume, node, others)) {
          const store = stores.get(shard.target);
          if (store === undefined) continue; // a target gone from the cluster holds nothing to free
          await store.delete(shard.key);
          shardsDeleted += 1;
          bytesFreed += shard.bytes;
        }
        if (!lineage.complete) await meta.finishGcSnapshot(snapshot.volumeId, snapshot.name);
        else await closeLineage(meta, volume, node);
        snapshots += 1;
        progress = true;
      } catch (err) {
        if (errors.length < 100) errors.push(`${what}: ${errorMessage(err)}`);
      }
    }
    if (errors.length > 0) break;
  }
  return { snapshots, waiting: waiting.size, shardsDeleted, bytesFreed, errors };
}

/**
 * Forgets collected snapshot `node` and closes the lineage over it, reading the lineage again
 * when a snapshot, a rollback or a repair changed it meanwhile. A snapshot taken meanwhile took
 * the live map's place as a neighbour, and holds only what the live root read before held or
 * newer generations, so what was freed stays right.
 */
async function closeLineage(meta: EtcdMeta, volume: VolumeRecord, node: SnapshotRecord): Promise<void> {
  for (let attempt = 0; ; attempt++) {
    const lineage = await readLineage(meta, volume.id);
    const now = lineage.pending.find((s) => lineageId(s) === lineageId(node));
    if (now === undefined) return; // another gc forgot it
    if (await meta.finishGcSnapshot(volume.id, node.name, lineageRelink(lineage, now))) return;
    if (attempt >= 8)
      throw new UnavailableError(
        `Cannot close the lineage of volume "${volume.name}" over snapshot ${node.name}: it kept changing; its shards are freed, its record stays for the next gc`,
      );
  }
}
