/**
 * Repair of what snapshots hold: a snapshot's saved root names shards too, and a generation only
 * a snapshot holds is rewritten by no writer, so after a node loss it stays degraded unless this
 * moves it. For each snapshot, records with shards on lost (down, unregistered) or draining
 * targets get new locations: where the volume's live record of the same generation already has
 * them (the live repair moved them: nothing to copy), else rebuilt from any k like a live repair.
 * The changed records become a new root of the snapshot (new pages, one transaction that checks
 * the snapshot unchanged); the data it reads is the same, only where it lives changed.
 *
 * Runs after the live repair (cairnctl repair), so shared generations are found moved already.
 * Rebuilt shards carry moving marks until the new root is saved, so a gc sweep between the two
 * does not take them for orphans.
 */
import { errorMessage, type ExtentRecord } from '../core/index.js';
import { extentCount } from '../extent/index.js';
import type { CodecPool } from '../codec/index.js';
import type { EtcdMeta, SnapshotRecord, VolumeRecord } from '../meta/index.js';
import { VolumeMaps, reachableTargets, readTopology, rootOf } from '../api/index.js';
import { readAnyK, rebuildShards, type TargetStores } from '../volume/index.js';
import { chooseDestinations, putShard } from './repair.js';

export interface SnapshotRepairReport {
  /** Snapshots whose root was replaced. */
  readonly snapshotsRepaired: number;
  /** Records given new locations found in the live map (no data copied). */
  readonly recordsAdopted: number;
  /** Records whose lost shards were rebuilt. */
  readonly recordsRebuilt: number;
  readonly shardsRebuilt: number;
  readonly bytesWritten: number;
  /** Records with more than m shards lost: they need their targets back. */
  readonly unrecoverable: number;
  readonly errors: readonly string[];
}

/** Repairs every snapshot of every volume (or of `volume`). */
export async function repairSnapshots(
  meta: EtcdMeta,
  stores: TargetStores,
  pool: CodecPool,
  options: { readonly volume?: string } = {},
): Promise<SnapshotRepairReport> {
  const volumes = options.volume === undefined ? await meta.listVolumes() : [await meta.requireVolume(options.volume)];
  const report = {
    snapshotsRepaired: 0,
    recordsAdopted: 0,
    recordsRebuilt: 0,
    shardsRebuilt: 0,
    bytesWritten: 0,
    unrecoverable: 0,
    errors: [] as string[],
  };
  const [targets, up] = await Promise.all([meta.listTargets(), reachableTargets(meta)]);
  const draining = new Set(targets.filter((t) => t.draining === true).map((t) => t.name));
  const usable = (name: string): boolean => up.has(name) && !draining.has(name);
  const zones = new Map(targets.map((t) => [t.name, t.zone]));
  const maps = VolumeMaps.of(meta);
  await maps.refreshTargets();
  for (const volume of volumes)
    for (const snapshot of await meta.listSnapshots(volume.id)) {
      try {
        await repairOne(meta, stores, pool, volume, snapshot, { usable, up, zones }, report);
      } catch (err) {
        if (report.errors.length < 100)
          report.errors.push(`snapshot ${volume.name}@${snapshot.name}: ${errorMessage(err)}`);
      }
    }
  return report;
}

async function repairOne(
  meta: EtcdMeta,
  stores: TargetStores,
  pool: CodecPool,
  volume: VolumeRecord,
  snapshot: SnapshotRecord,
  where: {
    readonly usable: (name: string) => boolean;
    readonly up: ReadonlySet<string>;
    readonly zones: ReadonlyMap<string, string>;
  },
  report: {
    snapshotsRepaired: number;
    recordsAdopted: number;
    recordsRebuilt: number;
    shardsRebuilt: number;
    bytesWritten: number;
    unrecoverable: number;
    errors: string[];
  },
): Promise<void> {
  const maps = VolumeMaps.of(meta);
  // The snapshot's tree (its size may differ from the volume's now), and the volume's for lookups.
  const tree = maps.tree({ ...volume, sizeBytes: snapshot.sizeBytes });
  const liveTree = maps.tree(volume);
  const root = rootOf(volume, snapshot);
  const degraded: { extent: number; rec: ExtentRecord; lost: number[] }[] = [];
  for await (const item of tree.walk(root)) {
    if (!('record' in item)) continue;
    const lost = item.record.shards.flatMap((s, i) => (where.usable(s.target) ? [] : [i]));
    if (lost.length > 0) degraded.push({ extent: item.extent, rec: item.record, lost });
  }
  if (degraded.length === 0) return;
  const live = await maps.root(volume);
  const changes = new Map<number, ExtentRecord>();
  const marks: { target: string; key: string }[] = [];
  let topology = await readTopology(meta);
  const lease = meta.client.lease(30);
  try {
    const leaseId = await meta.call('grant the snapshot repair lease', () => lease.grant());
    for (const { extent, rec, lost } of degraded) {
      // The live record of the same generation, if the live repair already moved these shards.
      const current =
        extent < extentCount(volume) ? await liveTree.lookup(live, extent).catch(() => undefined) : undefined;
      const sameGeneration =
        current !== undefined &&
        current.generation === rec.generation &&
        current.shards.length === rec.shards.length &&
        current.shards.every((s, i) => s.key === rec.shards[i]!.key);
      if (sameGeneration && lost.every((i) => where.usable(current.shards[i]!.target))) {
        changes.set(extent, { ...rec, shards: rec.shards.map((s, i) => (lost.includes(i) ? current.shards[i]! : s)) });
        report.recordsAdopted += 1;
        continue;
      }
      const { k, m } = volume.profile;
      // Shards on draining targets that are up can still be read; the rest are gone.
      const missing = new Set(lost.filter((i) => !where.up.has(rec.shards[i]!.target)));
      if (missing.size > m) {
        report.unrecoverable += 1;
        continue;
      }
      const order = [
        ...Array.from({ length: k + m }, (_, i) => i).filter((i) => !lost.includes(i)),
        ...lost.filter((i) => !missing.has(i)),
      ];
      const { shards: sources, failures } = await readAnyK(stores, rec, k, { skip: missing, order, concurrency: 1 });
      if (sources.size < k) {
        report.errors.push(
          `snapshot ${volume.name}@${snapshot.name} extent ${extent}: only ${sources.size} of ${k} shards readable (${failures.join('; ')})`,
        );
        continue;
      }
      const destinations = chooseDestinations(volume, extent, rec, lost, topology, (t) => where.zones.get(t));
      if (typeof destinations === 'string') {
        report.errors.push(`snapshot ${volume.name}@${snapshot.name} extent ${extent}: ${destinations}`);
        continue;
      }
      const rebuilt = await rebuildShards(pool, volume.profile, rec.shardBytes, sources, lost);
      const mine = [...rebuilt.keys()].map((i) => ({ target: destinations.get(i)!, key: rec.shards[i]!.key }));
      await meta.markMoving(mine, leaseId);
      marks.push(...mine);
      for (const [i, bytes] of rebuilt) {
        await putShard(stores.store(destinations.get(i)!), rec, i, bytes);
        report.shardsRebuilt += 1;
        report.bytesWritten += bytes.length;
      }
      changes.set(extent, {
        ...rec,
        shards: rec.shards.map((s, i) => (destinations.has(i) ? { target: destinations.get(i)!, key: s.key } : s)),
      });
      report.recordsRebuilt += 1;
      topology = await readTopology(meta).catch(() => topology);
    }
    if (changes.size === 0) return;
    // New pages under an epoch of the volume's counter (no other party writes pages of that name).
    const epoch = await meta.allocateEpoch(volume.name);
    const { root: next } = await tree.commit(root, changes, epoch * 2 ** 32 + 1);
    if (!(await meta.replaceSnapshotRoot(snapshot, next)))
      throw new Error('the snapshot changed or was deleted meanwhile; its rebuilt shards are left to gc');
    report.snapshotsRepaired += 1;
  } finally {
    await meta.unmarkMoving(marks).catch(() => undefined);
    await lease.revoke().catch(() => undefined);
  }
}
