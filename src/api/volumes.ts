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
  formatProfile,
  parseProfile,
  parseSize,
  volumeName,
  zoneId,
  type Profile,
} from '../core/index.js';
import { cryptUnitBytes, newVolumeKey, newWrappedKey, type Kek, type TransitKey } from '../crypt/index.js';
import { policySettings, resolveSettings, type PolicyValues } from './policy_rules.js';
import {
  AlreadyExistsError,
  EtcdMeta,
  journalReplicasMax,
  type TargetPolicy,
  type VolumeRecord,
  targetPolicies,
} from '../meta/index.js';
import { checkPolicy, explainPlacement, type PlacementExplanation, type PlacementPolicy } from '../placement/index.js';
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
  /** Journal replicas r (0: no journal); default m + 1. */
  readonly journalReplicas?: number;
  /**
   * Accept a profile with m = 0 (`4+0`, `1+0`): every shard is needed, so one lost shard loses
   * the extent. Refused without it (`--allow-no-redundancy`).
   */
  readonly allowNoRedundancy?: boolean;
  /** Labels policy rules select on (policy_rules.ts); the rules that match fill in or override settings. */
  readonly labels?: Readonly<Record<string, string>>;
  /** Pin the volume's shards to these zones (each must exist); absent or empty: any zone. */
  readonly allowedZones?: readonly string[];
  /**
   * Encrypt at rest (`--encrypt`, a StorageClass's `encrypted`, a rule's `encrypted=true`): a new
   * data key wrapped by `kek`, which must then be given. A rule may ask for it too.
   */
  readonly encrypted?: boolean;
  /** The key-encryption key that wraps the new volume's data key (the user holds it). */
  readonly kek?: Kek;
  /** Or a key in a key service that wraps it (`--kms URL --kms-key NAME`). */
  readonly transit?: { readonly at: TransitKey; readonly token: string };
}

/** The CLI flag that accepts a profile without parity shards. */
export const allowNoRedundancyFlag = '--allow-no-redundancy';

/**
 * Refuses a profile with no parity shards unless the caller asked for it: with m = 0 any one lost
 * shard (a node down, a disk gone) loses data, which nobody should get by a typo or a default.
 */
export function checkRedundancy(
  profile: Profile,
  options: { readonly allow: boolean; readonly volume: string; readonly source: string },
): void {
  if (profile.m > 0 || options.allow) return;
  throw new InvalidArgumentError(
    `Cannot create volume "${options.volume}" with profile ${formatProfile(profile)} (${options.source}): it has no redundancy, ` +
      `so losing any one shard of an extent loses its data. Pass ${allowNoRedundancyFlag} to accept that, or use a profile with M of 1 or more, such as ${profile.k}+2`,
  );
}

export function checkTargetPolicy(text: string): TargetPolicy {
  if (!targetPolicies.includes(text as TargetPolicy)) {
    throw new InvalidArgumentError(`Invalid --targets "${text}": use node, s3 or any`);
  }
  return text as TargetPolicy;
}

export function policyOf(volume: VolumeRecord): PlacementPolicy {
  return {
    k: volume.profile.k,
    m: volume.profile.m,
    zonesRequired: volume.zonesRequired,
    targets: volume.targets,
    ...(volume.allowedZones === undefined ? {} : { allowedZones: volume.allowedZones }),
  };
}

/** A volume size: a positive whole number of 512-byte blocks, at most volumeBytesMax. */
export function checkVolumeSize(sizeBytes: number): number {
  if (!Number.isSafeInteger(sizeBytes) || sizeBytes <= 0 || sizeBytes > volumeBytesMax) {
    throw new InvalidArgumentError(`Invalid volume size ${sizeBytes}: it must be a positive whole number of bytes`);
  }
  if (sizeBytes % 512 !== 0) {
    throw new InvalidArgumentError(
      `Invalid volume size ${sizeBytes}: it must be a multiple of 512 bytes (the smallest block size clients use)`,
    );
  }
  return sizeBytes;
}

export async function createVolume(meta: EtcdMeta, asked: CreateVolumeOptions): Promise<VolumeRecord> {
  const name = volumeName(asked.name);
  checkVolumeSize(asked.sizeBytes);
  const cluster = await meta.requireCluster();
  // Policy rules first: what they set (and what the request sets) becomes the options below.
  const labels = asked.labels ?? {};
  const requested: PolicyValues = {
    ...(asked.profile === undefined
      ? {}
      : { profile: typeof asked.profile === 'string' ? asked.profile : formatProfile(asked.profile) }),
    ...(asked.zonesRequired === undefined ? {} : { zones: String(asked.zonesRequired) }),
    ...(asked.targets === undefined ? {} : { targets: asked.targets }),
    ...(asked.durableShardsMin === undefined ? {} : { durableShards: String(asked.durableShardsMin) }),
    ...(asked.journalReplicas === undefined ? {} : { journalReplicas: String(asked.journalReplicas) }),
    ...(asked.extentBytes === undefined ? {} : { extentSize: String(asked.extentBytes) }),
    ...(asked.encrypted === undefined ? {} : { encrypted: String(asked.encrypted) }),
  };
  const rules = await meta.listPolicies();
  const resolved = resolveSettings(rules, labels, requested);
  const v = resolved.values;
  const options: CreateVolumeOptions = {
    ...asked,
    ...(v.profile === undefined ? {} : { profile: v.profile }),
    ...(v.zones === undefined ? {} : { zonesRequired: Number(v.zones) }),
    ...(v.targets === undefined ? {} : { targets: v.targets }),
    ...(v.durableShards === undefined ? {} : { durableShardsMin: Number(v.durableShards) }),
    ...(v.journalReplicas === undefined ? {} : { journalReplicas: Number(v.journalReplicas) }),
    ...(v.extentSize === undefined ? {} : { extentBytes: parseSize(v.extentSize, 'extentSize') }),
  };
  const settingSources: Record<string, string> = {};
  for (const key of policySettings) settingSources[key] = resolved.sources[key] ?? 'cluster default';
  const profile =
    options.profile === undefined
      ? cluster.defaultProfile
      : typeof options.profile === 'string'
        ? parseProfile(options.profile)
        : checkProfile(options.profile);
  checkRedundancy(profile, {
    allow: options.allowNoRedundancy ?? false,
    volume: name,
    source: options.profile === undefined ? "the cluster's default" : 'as asked',
  });
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
  const r = options.journalReplicas;
  if (r !== undefined && (!Number.isSafeInteger(r) || r < 0 || r > journalReplicasMax)) {
    throw new InvalidArgumentError(
      `Invalid --journal-replicas ${r}: use 0 (no journal) to ${journalReplicasMax}; the default, ${m + 1}, survives what the ${k}+${m} code survives`,
    );
  }
  const encrypted = v.encrypted === 'true';
  if (encrypted && options.kek === undefined && options.transit === undefined)
    throw new InvalidArgumentError(
      `Cannot create volume "${name}" encrypted (${settingSources['encrypted']}): no key-encryption key was given; pass --kek-file FILE (32 random bytes: head -c 32 /dev/urandom > FILE), or --kms URL --kms-key NAME`,
    );
  if (encrypted && (options.sizeBytes % cryptUnitBytes !== 0 || extentBytes % cryptUnitBytes !== 0))
    throw new InvalidArgumentError(
      `Cannot create volume "${name}" encrypted: its size and extent size must be multiples of ${cryptUnitBytes} bytes (the unit of encryption)`,
    );
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
    ...(r === undefined ? {} : { journalReplicas: r }),
    ...(Object.keys(labels).length === 0 ? {} : { labels }),
    ...(options.allowedZones === undefined || options.allowedZones.length === 0
      ? {}
      : { allowedZones: [...new Set(options.allowedZones.map((z) => zoneId(z)))].sort() }),
    settingSources,
    ...(!encrypted
      ? {}
      : options.transit !== undefined
        ? { encryption: await newWrappedKey({ kind: 'transit', ...options.transit }) }
        : options.kek !== undefined
          ? { encryption: newVolumeKey(options.kek) }
          : {}),
  };
  // A taken name is the clearer refusal; the create below is still create-only against races.
  if ((await meta.getVolume(name)) !== null) throw new AlreadyExistsError(`Volume "${name}" already exists`);
  const topology = await readTopology(meta);
  const known = new Set<string>(topology.targets.map((t) => t.zone));
  for (const z of record.allowedZones ?? [])
    if (!known.has(z))
      throw new InvalidArgumentError(
        `Cannot create volume "${name}" in zone "${z}": no target is in it (zones: ${[...known].sort().join(', ') || 'none'})`,
      );
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
