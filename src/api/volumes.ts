/**
 * Volume operations behind `cairnctl volume ...` and `cairnctl placement explain`.
 *
 * Creating a volume checks its policy against the live topology first (placement of extent 0
 * must succeed), so a volume that could never be written is refused at creation with the reason.
 * A volume is thin: creation writes one etcd record and no shard. Deletion frees the name at once
 * and queues the volume's id for garbage collection; collectGarbage() removes its shards.
 */
import {
  InvalidArgumentError,
  checkProfile,
  errorMessage,
  parseProfile,
  volumeName,
  type Profile,
} from '../core/index.js';
import { AlreadyExistsError, EtcdMeta, type TargetPolicy, type VolumeRecord, targetPolicies } from '../meta/index.js';
import { checkPolicy, explainPlacement, type PlacementExplanation, type PlacementPolicy } from '../placement/index.js';
import type { ShardStore } from '../core/index.js';
import { checkExtentBytes, checkZonesRequired, readTopology } from './cluster.js';

/** Largest volume: 2^53 bytes is where byte offsets stop being exact JavaScript numbers. */
export const volumeBytesMax = Number.MAX_SAFE_INTEGER - (Number.MAX_SAFE_INTEGER % 4096);

export interface CreateVolumeOptions {
  readonly name: string;
  readonly sizeBytes: number;
  readonly profile?: Profile | string;
  readonly extentBytes?: number;
  readonly zonesRequired?: number;
  readonly targets?: string;
  /** Shards that must be stored before a flush publishes; default k+m, at least k+1. */
  readonly durableShardsMin?: number;
}

export function checkTargetPolicy(text: string): TargetPolicy {
  if (!targetPolicies.includes(text as TargetPolicy)) {
    throw new InvalidArgumentError(`Invalid --targets "${text}": use node, s3 or any`);
  }
  return text as TargetPolicy;
}

export function policyOf(volume: VolumeRecord): PlacementPolicy {
  return { k: volume.profile.k, m: volume.profile.m, zonesRequired: volume.zonesRequired, targets: volume.targets };
}

export async function createVolume(meta: EtcdMeta, options: CreateVolumeOptions): Promise<VolumeRecord> {
  const name = volumeName(options.name);
  if (!Number.isSafeInteger(options.sizeBytes) || options.sizeBytes <= 0 || options.sizeBytes > volumeBytesMax) {
    throw new InvalidArgumentError(
      `Invalid volume size ${options.sizeBytes}: it must be a positive whole number of bytes`,
    );
  }
  if (options.sizeBytes % 512 !== 0) {
    throw new InvalidArgumentError(
      `Invalid volume size ${options.sizeBytes}: it must be a multiple of 512 bytes (the smallest block size clients use)`,
    );
  }
  const cluster = await meta.requireCluster();
  const profile =
    options.profile === undefined
      ? cluster.defaultProfile
      : typeof options.profile === 'string'
        ? parseProfile(options.profile)
        : checkProfile(options.profile);
  const extentBytes = checkExtentBytes(options.extentBytes ?? cluster.extentBytes, profile);
  const zonesRequired = checkZonesRequired(options.zonesRequired ?? cluster.zonesRequired);
  const targets = options.targets === undefined ? cluster.targets : checkTargetPolicy(options.targets);
  const { k, m } = profile;
  const durableMin = options.durableShardsMin;
  if (
    durableMin !== undefined &&
    (!Number.isSafeInteger(durableMin) || durableMin < Math.min(k + 1, k + m) || durableMin > k + m)
  ) {
    throw new InvalidArgumentError(
      `Invalid --durable-shards ${durableMin}: with profile ${k}+${m} use ${Math.min(k + 1, k + m)} to ${k + m} (fewer than k+1 would acknowledge data one failure from loss)`,
    );
  }
  const record: VolumeRecord = {
    name,
    id: EtcdMeta.newVolumeId(),
    sizeBytes: options.sizeBytes,
    profile,
    extentBytes,
    zonesRequired,
    targets,
    createdAt: new Date().toISOString(),
    state: 'ready',
    ...(durableMin === undefined ? {} : { durableShardsMin: durableMin }),
  };
  // A taken name is the clearer refusal; the create below is still create-only against races.
  if ((await meta.getVolume(name)) !== null) throw new AlreadyExistsError(`Volume "${name}" already exists`);
  const topology = await readTopology(meta);
  try {
    checkPolicy(topology, policyOf(record));
  } catch (err) {
    throw new InvalidArgumentError(`Cannot create volume "${name}": ${errorMessage(err)}`, { cause: err });
  }
  await meta.createVolume(record);
  return record;
}

export async function explainVolumePlacement(
  meta: EtcdMeta,
  name: string,
  extent: number,
): Promise<PlacementExplanation> {
  const volume = await meta.requireVolume(volumeName(name));
  const extents = Math.ceil(volume.sizeBytes / volume.extentBytes);
  if (!Number.isSafeInteger(extent) || extent < 0 || extent >= extents) {
    throw new InvalidArgumentError(`Volume "${name}" has extents 0 to ${extents - 1}; there is no extent ${extent}`);
  }
  return explainPlacement(
    volume.id,
    extent,
    await readTopology(meta),
    policyOf(volume),
    `volume "${volume.name}" (id ${volume.id})`,
  );
}

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
export async function collectGarbage(meta: EtcdMeta, stores: ReadonlyMap<string, ShardStore>): Promise<GcReport> {
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
    if (complete) await meta.finishGcVolume(id);
  }
  return { volumes: queued.length, shardsDeleted, errors };
}

export interface OrphanReport {
  readonly shardsScanned: number;
  readonly orphansDeleted: number;
  readonly errors: readonly string[];
}

/** Shard keys listed per page while sweeping. */
const sweepPageKeys = 1000;

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
  let shardsScanned = 0;
  let orphansDeleted = 0;
  const errors: string[] = [];
  for (const volume of await meta.listVolumes()) {
    for (const [target, store] of stores) {
      try {
        let startAfter: string | undefined;
        for (;;) {
          const page = await store.list(`${volume.id}/`, {
            limit: sweepPageKeys,
            ...(startAfter === undefined ? {} : { startAfter }),
          });
          if (page.length === 0) break;
          startAfter = page.at(-1);
          // Read the map and the lock AFTER listing: every shard on the page was stored before
          // this read, so it is either published by now, or its writer still holds the lock, or
          // its writer is gone for good. Read before listing, a writer that attached and
          // published in between would have its new shards taken for orphans.
          // Moving marks first, then the map: a repair marks a shard before storing it and unmarks
          // it only after publishing, so a shard either shows a mark here or its record below.
          const moving = await meta.listMoving();
          const records = await meta.listExtents(volume.id);
          const lock = await meta.getLock(volume.name);
          const referenced = new Set<string>();
          for (const rec of records.values()) for (const s of rec.shards) referenced.add(`${s.target}\u0000${s.key}`);
          for (const key of page) {
            shardsScanned += 1;
            if (referenced.has(`${target}\u0000${key}`) || moving.has(`${target}\u0000${key}`)) continue;
            const parts = key.split('/');
            const extent = Number(parts[1]);
            const generation = Number(parts[2]);
            if (parts.length !== 4 || !Number.isSafeInteger(extent) || !Number.isSafeInteger(generation)) continue; // not ours
            const published = records.get(extent)?.generation ?? -1;
            const epoch = Math.floor(generation / 2 ** 32);
            const maybeInFlight = generation > published && lock !== null && epoch >= lock.epoch;
            if (maybeInFlight) continue;
            await store.delete(key);
            orphansDeleted += 1;
          }
          if (page.length < sweepPageKeys) break;
        }
      } catch (err) {
        if (errors.length < 100) errors.push(`target ${target}: ${errorMessage(err)}`);
      }
    }
  }
  return { shardsScanned, orphansDeleted, errors };
}
