/**
 * Cluster-wide operations: `cairnctl init` and the topology every placement decision reads.
 * The topology joins the permanent target records with the leased liveness records: a node is
 * up while its lease lives; an S3 target has no heartbeat and counts as up while registered.
 */
import {
  InvalidArgumentError,
  checkProfile,
  extentBytesMax,
  formatBytes,
  type Profile,
  type TargetId,
  type ZoneId,
} from '../core/index.js';
import { type ClusterConfig, type EtcdMeta, type TargetPolicy, schemaVersion } from '../meta/index.js';
import type { Topology, TargetInfo } from '../placement/index.js';

/** Smallest extent a volume may use: one checksum block per data shard of a 1-shard profile. */
export const extentBytesMin = 4096;
/** Default extent size. Chosen from the codec benchmark: 4 MiB keeps 4+2 shards at 1 MiB. */
export const extentBytesDefault = 4 * 1024 * 1024;
/** What an S3 target is assumed to hold when no --capacity is given. */
export const s3CapacityBytesDefault = 2 ** 40;

export interface InitOptions {
  readonly defaultProfile?: Profile;
  readonly extentBytes?: number;
  readonly zonesRequired?: number;
  readonly targets?: TargetPolicy;
  readonly force?: boolean;
}

export function checkExtentBytes(extentBytes: number, profile: Profile): number {
  if (!Number.isSafeInteger(extentBytes) || extentBytes < extentBytesMin || extentBytes > extentBytesMax) {
    throw new InvalidArgumentError(
      `Invalid extent size ${extentBytes}: it must be between ${formatBytes(extentBytesMin)} and ${formatBytes(extentBytesMax)}`,
    );
  }
  // No divisibility rule: with K that does not divide the extent, the last data shard carries
  // ceil(extentBytes / K) * K - extentBytes bytes of zero padding (3 bytes for 4 MiB and 5+2).
  void profile;
  return extentBytes;
}

export function checkZonesRequired(n: number): number {
  if (!Number.isSafeInteger(n) || n < 1 || n > 255)
    throw new InvalidArgumentError(`Invalid --zones-required ${n}: use a whole number from 1 to 255`);
  return n;
}

export async function initCluster(meta: EtcdMeta, options: InitOptions): Promise<ClusterConfig> {
  const defaultProfile = checkProfile(options.defaultProfile ?? { k: 4, m: 2 });
  const config: ClusterConfig = {
    schema: schemaVersion,
    createdAt: new Date().toISOString(),
    defaultProfile,
    extentBytes: checkExtentBytes(options.extentBytes ?? extentBytesDefault, defaultProfile),
    zonesRequired: checkZonesRequired(options.zonesRequired ?? 1),
    targets: options.targets ?? 'any',
  };
  await meta.initCluster(config, options.force ?? false);
  return config;
}

/** Every registered target with its liveness and capacity, as placement sees them. */
export async function readTopology(meta: EtcdMeta): Promise<Topology> {
  const [targets, alive] = await Promise.all([meta.listTargets(), meta.listAlive()]);
  const aliveByName = new Map(alive.map((a) => [a.name, a]));
  const infos: TargetInfo[] = targets.map((t) => {
    const live = aliveByName.get(t.name);
    if (t.kind === 'node') {
      return {
        id: t.name as TargetId,
        zone: t.zone as ZoneId,
        kind: 'node',
        capacityBytes: live?.capacityBytes ?? 0,
        usedBytes: live?.usedBytes ?? 0,
        // A draining node still serves reads but takes no new shards.
        up: live !== undefined && t.draining !== true,
      };
    }
    return {
      id: t.name as TargetId,
      zone: t.zone as ZoneId,
      kind: 's3',
      capacityBytes: t.capacityBytes ?? s3CapacityBytesDefault,
      usedBytes: 0,
      up: t.draining !== true,
    };
  });
  return { targets: infos };
}

/** Names of targets that can be read now: storage nodes with a live lease, and S3 targets. */
export async function reachableTargets(meta: EtcdMeta): Promise<Set<string>> {
  const [targets, alive] = await Promise.all([meta.listTargets(), meta.listAlive()]);
  const live = new Set(alive.map((a) => a.name));
  return new Set(targets.filter((t) => t.kind === 's3' || live.has(t.name)).map((t) => t.name));
}
