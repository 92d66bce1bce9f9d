/**
 * The etcd key schema (docs/etcd-schema.md) as code: key builders and the JSON records stored
 * under them, each with a decoder that checks what it reads. A value that does not decode is a
 * corrupt metadata error naming the key, never a crash or a silent default.
 */
import { CairnError, checkProfile, type ExtentRecord, type Profile } from '../core/index.js';
import type { VolumeEncryption } from '../crypt/index.js';

export type { ExtentRecord, ExtentShardRef } from '../core/index.js';

export const schemaVersion = 1;
/** The most journal replicas a volume may ask for. */
export const journalReplicasMax = 16;

/** A volume's journal replicas r: its setting, or m + 1 by default. */
export function journalReplicasOf(v: { readonly profile: Profile; readonly journalReplicas?: number }): number {
  return v.journalReplicas ?? v.profile.m + 1;
}
export const rootPrefix = 'cairn/v1/';

export const keys = {
  cluster: () => `${rootPrefix}cluster`,
  targetsPrefix: () => `${rootPrefix}targets/`,
  target: (name: string) => `${rootPrefix}targets/${name}`,
  alivePrefix: () => `${rootPrefix}alive/`,
  alive: (name: string) => `${rootPrefix}alive/${name}`,
  volumesPrefix: () => `${rootPrefix}volumes/`,
  volume: (name: string) => `${rootPrefix}volumes/${name}`,
  extentsPrefix: (volumeId: string) => `${rootPrefix}extents/${volumeId}/`,
  /** Zero-padded so etcd's byte order is numeric order: extent 42 -> .../000000000042. */
  extent: (volumeId: string, index: number) => `${rootPrefix}extents/${volumeId}/${String(index).padStart(12, '0')}`,
  lock: (volume: string) => `${rootPrefix}locks/${volume}`,
  /** A volume whose final flush is being retried: leased with its lock, gone once it detaches. */
  pendingFlushPrefix: () => `${rootPrefix}pending-flush/`,
  pendingFlush: (volume: string) => `${rootPrefix}pending-flush/${volume}`,
  /** A volume's journal layout: its segments, their nodes, and the folded LSN. */
  journal: (volumeId: string) => `${rootPrefix}journals/${volumeId}`,
  epoch: (volume: string) => `${rootPrefix}epochs/${volume}`,
  /**
   * A volume's extent-map root, for the copy-on-write page tree (extent/map_tree.ts): its height
   * and the root page's generation and checksum. Absent: an empty map. Not used by the data path
   * yet (issue 15): only TreeExtentMapStore over EtcdMapRoots writes it.
   */
  mapRoot: (volumeId: string) => `${rootPrefix}maproots/${volumeId}`,
  /** A volume's snapshots, by name under its id (a rename keeps them). */
  snapshotsPrefix: (volumeId: string) => `${rootPrefix}snapshots/${volumeId}/`,
  snapshot: (volumeId: string, name: string) => `${rootPrefix}snapshots/${volumeId}/${name}`,
  /**
   * A snapshot asked of the writer holding the volume (only it can make the snapshot include
   * what it acknowledged): it answers by creating the snapshot and deleting the request.
   */
  snapshotRequestsPrefix: (volumeId: string) => `${rootPrefix}snapshot-requests/${volumeId}/`,
  snapshotRequest: (volumeId: string, name: string) => `${rootPrefix}snapshot-requests/${volumeId}/${name}`,
  /**
   * The snapshot a volume's live map descends from (its last snapshot, or the one it was rolled
   * back to): the next snapshot's `parent`. Absent: none (no snapshot yet, or all collected).
   */
  snapshotTip: (volumeId: string) => `${rootPrefix}snapshot-tips/${volumeId}`,
  /** A new size asked of the writer holding the volume (an online grow); it answers by resizing. */
  resizeRequest: (volumeId: string) => `${rootPrefix}resize-requests/${volumeId}`,
  /** A deleted snapshot whose shards gc has not freed yet (its record as it was). */
  gcSnapshotsPrefix: () => `${rootPrefix}gc/snapshots/`,
  gcSnapshot: (volumeId: string, name: string) => `${rootPrefix}gc/snapshots/${volumeId}/${name}`,
  /** The last shard census of a volume: its published shards that live targets do not hold. */
  census: (volumeId: string) => `${rootPrefix}census/${volumeId}`,
  /** A policy rule (`cairnctl policy add`): a selector on volume labels and the settings it sets. */
  policiesPrefix: () => `${rootPrefix}policies/`,
  policy: (name: string) => `${rootPrefix}policies/${name}`,
  /** A volume moved to the trash by `volume delete`: restorable until purged. */
  trashPrefix: () => `${rootPrefix}trash/`,
  trash: (volumeId: string) => `${rootPrefix}trash/${volumeId}`,
  gcVolumesPrefix: () => `${rootPrefix}gc/volumes/`,
  gcVolume: (volumeId: string) => `${rootPrefix}gc/volumes/${volumeId}`,
  repairProgress: () => `${rootPrefix}repair/progress`,
  repairerLock: () => `${rootPrefix}repair/leader`,
  /** A shard a repair, drain or rebalance is copying to `target`; leased, removed once published. */
  movingPrefix: () => `${rootPrefix}repair/moving/`,
  moving: (target: string, key: string) => `${rootPrefix}repair/moving/${target}/${key}`,
  /** An API token (`cairnctl token create`): {id, name, role, hash, createdAt}; the secret itself is never stored. */
  apiTokensPrefix: () => `${rootPrefix}api-tokens/`,
  apiToken: (id: string) => `${rootPrefix}api-tokens/${id}`,
  /** One change made through the HTTP API; the id sorts by time, and only the newest are kept. */
  auditPrefix: () => `${rootPrefix}audit/`,
  audit: (id: string) => `${rootPrefix}audit/${id}`,
  /** A frontend's cumulative IO counters per volume, leased, refreshed every few seconds (the API's IO chart). */
  frontendStatsPrefix: () => `${rootPrefix}frontend-stats/`,
  frontendStats: (owner: string) => `${rootPrefix}frontend-stats/${owner}`,
};

export type TargetPolicy = 'node' | 's3' | 'any';
export const targetPolicies: readonly TargetPolicy[] = ['node', 's3', 'any'];

export interface ClusterConfig {
  readonly schema: number;
  readonly createdAt: string;
  readonly defaultProfile: Profile;
  readonly extentBytes: number;
  readonly zonesRequired: number;
  readonly targets: TargetPolicy;
}

export interface TargetRecord {
  readonly name: string;
  readonly kind: 'node' | 's3';
  readonly zone: string;
  /** host:port of a storage node. */
  readonly address?: string;
  /** host:port of a storage node's journal protocol; absent for S3 targets and older nodes. */
  readonly journal?: string;
  /**
   * True when the node serves both addresses over TLS only (HTTPS and TLS on the journal port):
   * clients must connect with TLS. Absent: plaintext.
   */
  readonly tls?: boolean;
  /** S3 endpoint URL and bucket of an S3 target. Credentials are never stored in etcd. */
  readonly endpoint?: string;
  readonly bucket?: string;
  readonly region?: string;
  /** Declared capacity of an S3 target (nodes report theirs under alive/). */
  readonly capacityBytes?: number;
  readonly addedAt: string;
  /** Being drained: placement no longer chooses it, repair moves its shards away. */
  readonly draining?: boolean;
}

export interface AliveRecord {
  readonly name: string;
  readonly zone: string;
  readonly address: string;
  /** host:port of the node's journal protocol; absent for nodes that serve none. */
  readonly journal?: string;
  /** True when the node serves over TLS only (as in its target record). */
  readonly tls?: boolean;
  readonly capacityBytes: number;
  readonly usedBytes: number;
  readonly pid: number;
  readonly startedAt: string;
  readonly heartbeatAt: string;
}

export interface VolumeRecord {
  readonly name: string;
  /** Random id; shard keys and extent keys use it, so a re-created name never sees old data. */
  readonly id: string;
  readonly sizeBytes: number;
  readonly profile: Profile;
  readonly extentBytes: number;
  readonly zonesRequired: number;
  readonly targets: TargetPolicy;
  readonly createdAt: string;
  readonly state: 'ready' | 'deleting';
  /** Shards of k+m that must be stored before a flush publishes (default k+m, at least k+1). */
  readonly durableShardsMin?: number;
  /**
   * Journal replicas r: a FLUSH of small writes is answered once r nodes (in distinct zones where
   * possible) have them; 0 turns the journal off (every flush writes erasure-coded generations).
   * Absent: m + 1, so the journal survives what the erasure code survives.
   */
  readonly journalReplicas?: number;
  /**
   * A clone: the snapshot it was made from. Its map holds the parent's records (their shard keys
   * under the parent's id) until it writes those extents or is flattened.
   */
  readonly parent?: { readonly volumeId: string; readonly volume: string; readonly snapshot: string };
  /** Labels policy rules select on (`volume create --label`, a StorageClass's `labels`). */
  readonly labels?: Readonly<Record<string, string>>;
  /** The zones its shards may go to (`volume create --in-zones`, CSI topology); absent: any. */
  readonly allowedZones?: readonly string[];
  /**
   * Where each setting came from when the volume was created ("cluster default", "request",
   * "rule NAME", "override rule NAME"): what `cairnctl policy explain` reports.
   */
  readonly settingSources?: Readonly<Record<string, string>>;
  /**
   * Encryption at rest (`volume create --encrypt`): the data key wrapped by a key-encryption key
   * the user holds, and that KEK's id. Never the key itself. Clones and snapshots keep it.
   */
  readonly encryption?: VolumeEncryption;
}

/** What `policies/<name>` holds. */
export interface PolicyRecord {
  readonly name: string;
  /** A label selector (Kubernetes' syntax); empty matches every volume. */
  readonly selector: string;
  /** Settings by their StorageClass names (profile, zones, targets, durableShards, ...). */
  readonly set: Readonly<Record<string, string>>;
  /** Applied after the request's own settings (it wins over them), not before. */
  readonly override: boolean;
  readonly createdAt: string;
}

export function decodePolicy(key: string, text: string): PolicyRecord {
  const o = parse(key, text);
  const set = field(key, o, 'set', (v): v is Json => typeof v === 'object' && v !== null, 'an object');
  if (!Object.values(set).every(isString)) throw new CorruptMetadataError(key, '"set" holds a non-string');
  return {
    name: field(key, o, 'name', isString, 'a string'),
    selector: field(key, o, 'selector', isString, 'a string'),
    set: set as Record<string, string>,
    override: field(key, o, 'override', (v): v is boolean => typeof v === 'boolean', 'true or false'),
    createdAt: field(key, o, 'createdAt', isString, 'a string'),
  };
}

const isStringMap = (v: unknown): v is Record<string, string> =>
  typeof v === 'object' && v !== null && !Array.isArray(v) && Object.values(v).every((x) => typeof x === 'string');

/**
 * What `snapshots/<volume id>/<name>` holds: a saved root of the volume's map. Its pages and the
 * shards of its records stay while it exists: a writer never deletes a superseded shard of a
 * generation at or below `floor`, and gc keeps everything a snapshot's root reaches.
 */
export interface SnapshotRecord {
  readonly name: string;
  readonly volumeId: string;
  /** The volume's name when the snapshot was taken (for people; the id is what counts). */
  readonly volume: string;
  readonly createdAt: string;
  readonly sizeBytes: number;
  readonly root: MapRootRecord;
  /** Every generation the snapshot's records hold is at or below it. */
  readonly floor: number;
  /** Ids of volumes cloned from it: it cannot be deleted while any exists. */
  readonly clones: readonly string[];
  /**
   * For a snapshot `cairnctl volume import-diff` made: the identity of the snapshot whose
   * contents it reproduces (snapshotIdentity() of the source), so the next diff can check its base.
   */
  readonly origin?: string;
  /**
   * Lineage: the snapshot of the same volume whose contents this one's descend from (the volume's
   * snapshot tip when it was taken), as its lineageId; null for none. A generation two snapshots hold is held by
   * every snapshot on the path between them in this tree (generations never come back, except
   * by a rollback, which makes the rolled-back-to snapshot the tip), so what a snapshot alone
   * holds is found by comparing it with its neighbours only. Undefined for a snapshot taken
   * before lineage was kept: its volume's snapshots are then compared with every root.
   */
  readonly parent?: string | null;
}

/**
 * A snapshot's name in the lineage (SnapshotRecord.parent, keys.snapshotTip): its name and the
 * time it was taken, so a new snapshot reusing a deleted one's name is never taken for it.
 */
export function lineageId(s: SnapshotRecord): string {
  return `${s.name}@${s.createdAt}`;
}

/** Names a snapshot across clusters and copies: its own, or the one it was imported as. */
export function snapshotIdentity(s: SnapshotRecord): string {
  return s.origin ?? `${s.volumeId}/${s.name}/${s.createdAt}`;
}

/** What `trash/<volume id>` holds: the volume's record as it was, and its epoch counter. */
export interface TrashRecord {
  readonly volume: VolumeRecord;
  readonly deletedAt: string;
  /** The volume's last fencing epoch (restored with it: generations never go back). */
  readonly epoch: number;
}

export function decodeTrash(key: string, text: string): TrashRecord {
  const o = parse(key, text);
  const volume = field(key, o, 'volume', (v): v is Json => typeof v === 'object' && v !== null, 'an object');
  return {
    volume: decodeVolume(key, JSON.stringify(volume)),
    deletedAt: field(key, o, 'deletedAt', isString, 'a string'),
    epoch: field(key, o, 'epoch', isCount, 'an epoch'),
  };
}

export interface LockRecord {
  readonly owner: string;
  readonly epoch: number;
  readonly acquiredAt: string;
}

/**
 * What `pending-flush/<volume>` holds while the writer keeps a volume attached with no clients
 * because its final flush failed: it retries until the writes are durable or `giveUpAt`.
 */
export interface PendingFlushRecord {
  readonly owner: string;
  readonly epoch: number;
  /** When the first final flush failed. */
  readonly since: string;
  /** Failed attempts so far. */
  readonly attempts: number;
  /** Bytes written and not yet durable at the last attempt. */
  readonly dirtyBytes: number;
  readonly lastError: string;
  /** When the writer stops retrying and drops what is still not durable. */
  readonly giveUpAt: string;
}

/** Metadata in etcd that does not have the shape the schema says. */
export class CorruptMetadataError extends CairnError {
  override readonly name = 'CorruptMetadataError';
  constructor(key: string, why: string) {
    super('EMETA', `Metadata at ${key} is corrupt: ${why}`, { retryable: false });
  }
}

type Json = Record<string, unknown>;

function parse(key: string, text: string): Json {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    throw new CorruptMetadataError(key, 'not JSON');
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value))
    throw new CorruptMetadataError(key, 'not an object');
  return value as Json;
}

function field<T>(key: string, o: Json, name: string, check: (v: unknown) => v is T, what: string): T {
  const v = o[name];
  if (!check(v)) throw new CorruptMetadataError(key, `"${name}" is not ${what}`);
  return v;
}

const isString = (v: unknown): v is string => typeof v === 'string';
const isBoolean = (v: unknown): v is boolean => typeof v === 'boolean';
const isCount = (v: unknown): v is number => typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
const isSeed = (v: unknown): v is number => isCount(v) && v > 0 && v < 2 ** 32;
const isPolicy = (v: unknown): v is TargetPolicy => targetPolicies.includes(v as TargetPolicy);
const isProfile = (v: unknown): v is Profile => {
  if (typeof v !== 'object' || v === null) return false;
  try {
    checkProfile(v as Profile);
    return true;
  } catch {
    return false;
  }
};

export function decodeCluster(key: string, text: string): ClusterConfig {
  const o = parse(key, text);
  const p = field(key, o, 'defaultProfile', isProfile, 'a profile');
  return {
    schema: field(key, o, 'schema', isCount, 'a number'),
    createdAt: field(key, o, 'createdAt', isString, 'a string'),
    defaultProfile: { k: p.k, m: p.m },
    extentBytes: field(key, o, 'extentBytes', isCount, 'a byte count'),
    zonesRequired: field(key, o, 'zonesRequired', isCount, 'a count'),
    targets: field(key, o, 'targets', isPolicy, 'node, s3 or any'),
  };
}

export function decodeTarget(key: string, text: string): TargetRecord {
  const o = parse(key, text);
  const kind = field(key, o, 'kind', (v): v is 'node' | 's3' => v === 'node' || v === 's3', 'node or s3');
  const optional = <T>(name: string, check: (v: unknown) => v is T): T | undefined =>
    o[name] === undefined ? undefined : field(key, o, name, check, 'valid');
  const address = optional('address', isString);
  const journal = optional('journal', isString);
  const endpoint = optional('endpoint', isString);
  const bucket = optional('bucket', isString);
  const region = optional('region', isString);
  const capacityBytes = optional('capacityBytes', isCount);
  const draining = optional('draining', isBoolean);
  const tls = optional('tls', isBoolean);
  return {
    name: field(key, o, 'name', isString, 'a string'),
    kind,
    zone: field(key, o, 'zone', isString, 'a string'),
    addedAt: field(key, o, 'addedAt', isString, 'a string'),
    ...(address === undefined ? {} : { address }),
    ...(journal === undefined ? {} : { journal }),
    ...(endpoint === undefined ? {} : { endpoint }),
    ...(bucket === undefined ? {} : { bucket }),
    ...(region === undefined ? {} : { region }),
    ...(capacityBytes === undefined ? {} : { capacityBytes }),
    ...(draining === undefined ? {} : { draining }),
    ...(tls === undefined ? {} : { tls }),
  };
}

export function decodeAlive(key: string, text: string): AliveRecord {
  const o = parse(key, text);
  const journal = o['journal'] === undefined ? undefined : field(key, o, 'journal', isString, 'a string');
  const tls = o['tls'] === undefined ? undefined : field(key, o, 'tls', isBoolean, 'a boolean');
  return {
    name: field(key, o, 'name', isString, 'a string'),
    zone: field(key, o, 'zone', isString, 'a string'),
    address: field(key, o, 'address', isString, 'a string'),
    ...(journal === undefined ? {} : { journal }),
    ...(tls === undefined ? {} : { tls }),
    capacityBytes: field(key, o, 'capacityBytes', isCount, 'a byte count'),
    usedBytes: field(key, o, 'usedBytes', isCount, 'a byte count'),
    pid: field(key, o, 'pid', isCount, 'a pid'),
    startedAt: field(key, o, 'startedAt', isString, 'a string'),
    heartbeatAt: field(key, o, 'heartbeatAt', isString, 'a string'),
  };
}

function decodeParent(key: string, v: unknown): NonNullable<VolumeRecord['parent']> {
  if (typeof v !== 'object' || v === null) throw new CorruptMetadataError(key, '"parent" is not an object');
  const o = v as Json;
  return {
    volumeId: field(key, o, 'volumeId', isString, 'a string'),
    volume: field(key, o, 'volume', isString, 'a string'),
    snapshot: field(key, o, 'snapshot', isString, 'a string'),
  };
}

export function decodeVolume(key: string, text: string): VolumeRecord {
  const o = parse(key, text);
  const p = field(key, o, 'profile', isProfile, 'a profile');
  return {
    name: field(key, o, 'name', isString, 'a string'),
    id: field(key, o, 'id', isString, 'a string'),
    sizeBytes: field(key, o, 'sizeBytes', isCount, 'a byte count'),
    profile: { k: p.k, m: p.m },
    extentBytes: field(key, o, 'extentBytes', isCount, 'a byte count'),
    zonesRequired: field(key, o, 'zonesRequired', isCount, 'a count'),
    targets: field(key, o, 'targets', isPolicy, 'node, s3 or any'),
    createdAt: field(key, o, 'createdAt', isString, 'a string'),
    state: field(
      key,
      o,
      'state',
      (v): v is 'ready' | 'deleting' => v === 'ready' || v === 'deleting',
      'ready or deleting',
    ),
    ...(o['journalReplicas'] === undefined
      ? {}
      : {
          journalReplicas: field(
            key,
            o,
            'journalReplicas',
            (v): v is number => isCount(v) && v <= journalReplicasMax,
            `a replica count from 0 to ${journalReplicasMax}`,
          ),
        }),
    ...(o['durableShardsMin'] === undefined
      ? {}
      : {
          durableShardsMin: field(
            key,
            o,
            'durableShardsMin',
            (v): v is number => isCount(v) && v >= Math.min(p.k + 1, p.k + p.m) && v <= p.k + p.m,
            `a shard count from ${Math.min(p.k + 1, p.k + p.m)} to ${p.k + p.m}`,
          ),
        }),
    ...(o['parent'] === undefined ? {} : { parent: decodeParent(key, o['parent']) }),
    ...(o['labels'] === undefined ? {} : { labels: field(key, o, 'labels', isStringMap, 'a map of strings') }),
    ...(o['allowedZones'] === undefined
      ? {}
      : {
          allowedZones: field(
            key,
            o,
            'allowedZones',
            (v): v is string[] => Array.isArray(v) && v.every(isString),
            'a list of zones',
          ),
        }),
    ...(o['settingSources'] === undefined
      ? {}
      : { settingSources: field(key, o, 'settingSources', isStringMap, 'a map of strings') }),
    ...(o['encryption'] === undefined
      ? {}
      : {
          encryption: field(
            key,
            o,
            'encryption',
            isEncryption,
            'an encryption record (cipher, keyId, wrappedKey, keyUid)',
          ),
        }),
  };
}

function isEncryption(v: unknown): v is VolumeEncryption {
  if (typeof v !== 'object' || v === null) return false;
  const e = v as Record<string, unknown>;
  const kms = e['kms'] as Record<string, unknown> | undefined;
  return (
    e['cipher'] === 'aes-256-xts' &&
    isString(e['keyId']) &&
    isString(e['wrappedKey']) &&
    isString(e['keyUid']) &&
    (kms === undefined || (kms['kind'] === 'transit' && isString(kms['url']) && isString(kms['key'])))
  );
}

/** One segment of a volume's journal: the same segment id on each of its replica nodes. */
export interface JournalSegmentRecord {
  readonly id: number;
  /** The writer epoch that created it. */
  readonly epoch: number;
  /** The first LSN appended to it; its records run up to the next segment's firstLsn - 1. */
  readonly firstLsn: number;
  /** Target names of the nodes holding it. */
  readonly replicas: readonly string[];
}

/**
 * A volume's write-ahead journal layout. Changed only inside the volume's fenced transactions,
 * so a deposed writer can never change it.
 */
export interface JournalLayout {
  /** Every record up to this LSN is folded into published generations (0: none yet). */
  readonly foldedLsn: number;
  /** The highest LSN the writer had appended when this was written (for status). */
  readonly headLsn: number;
  /** Bytes of records after foldedLsn when this was written (for status). */
  readonly unfoldedBytes: number;
  /** Oldest first; the last is the one being appended to. */
  readonly segments: readonly JournalSegmentRecord[];
}

export function decodeJournal(key: string, text: string): JournalLayout {
  const o = parse(key, text);
  const segments = field(key, o, 'segments', Array.isArray, 'a list');
  return {
    foldedLsn: field(key, o, 'foldedLsn', isCount, 'an LSN'),
    headLsn: field(key, o, 'headLsn', isCount, 'an LSN'),
    unfoldedBytes: field(key, o, 'unfoldedBytes', isCount, 'a byte count'),
    segments: segments.map((x: unknown, i) => {
      const e = (typeof x === 'object' && x !== null ? x : {}) as Json;
      const where = `${key} segment ${i}`;
      const replicas = field(where, e, 'replicas', Array.isArray, 'a list');
      if (!replicas.every(isString)) throw new CorruptMetadataError(where, '"replicas" must be target names');
      return {
        id: field(where, e, 'id', isCount, 'a segment id'),
        epoch: field(where, e, 'epoch', isCount, 'an epoch'),
        firstLsn: field(where, e, 'firstLsn', isCount, 'an LSN'),
        replicas: replicas as string[],
      };
    }),
  };
}

export function decodeExtent(key: string, text: string): ExtentRecord {
  const o = parse(key, text);
  const shards = field(key, o, 'shards', Array.isArray, 'a list');
  const journalLsn = o['journalLsn'] === undefined ? undefined : field(key, o, 'journalLsn', isCount, 'an LSN');
  const seed = o['seed'] === undefined ? undefined : field(key, o, 'seed', isSeed, 'a seed (1 to 2^32 - 1)');
  return {
    ...(journalLsn === undefined ? {} : { journalLsn }),
    ...(seed === undefined ? {} : { seed }),
    generation: field(key, o, 'generation', isCount, 'a generation'),
    shardBytes: field(key, o, 'shardBytes', isCount, 'a byte count'),
    shards: shards.map((s: unknown, i) => {
      const e = (typeof s === 'object' && s !== null ? s : {}) as Json;
      if (!isString(e['target']) || !isString(e['key']))
        throw new CorruptMetadataError(key, `shard ${i} has no target or key`);
      return { target: e['target'], key: e['key'] };
    }),
  };
}

/** The writer a lock-scoped record names: its owner ("host/pid") and fencing epoch. */
function holderOf(key: string, o: Json): { owner: string; epoch: number } {
  return { owner: field(key, o, 'owner', isString, 'a string'), epoch: field(key, o, 'epoch', isCount, 'an epoch') };
}

export function decodeLock(key: string, text: string): LockRecord {
  const o = parse(key, text);
  return { ...holderOf(key, o), acquiredAt: field(key, o, 'acquiredAt', isString, 'a string') };
}

export function decodePendingFlush(key: string, text: string): PendingFlushRecord {
  const o = parse(key, text);
  return {
    ...holderOf(key, o),
    since: field(key, o, 'since', isString, 'a string'),
    attempts: field(key, o, 'attempts', isCount, 'a count'),
    dirtyBytes: field(key, o, 'dirtyBytes', isCount, 'a byte count'),
    lastError: field(key, o, 'lastError', isString, 'a string'),
    giveUpAt: field(key, o, 'giveUpAt', isString, 'a string'),
  };
}

/** Keys of absent shards a census record lists; the count covers them all. */
export const censusAbsentListedMax = 10_000;

/**
 * What the last census of a volume found: the published shards (current generations only) that
 * their target, up at the time, did not list. A key stays listed until the next census.
 */
export interface CensusRecord {
  readonly checkedAt: string;
  /** Targets listed (up, holding published shards of the volume). */
  readonly targetsListed: number;
  /** Published shards on those targets. */
  readonly shardsExpected: number;
  /** Shards missing, all of them (absent lists at most censusAbsentListedMax). */
  readonly absentCount: number;
  /** Shard keys missing, sorted. */
  readonly absent: readonly string[];
}

export function decodeCensus(key: string, text: string): CensusRecord {
  const o = parse(key, text);
  const absent = field(key, o, 'absent', Array.isArray, 'a list');
  if (!absent.every(isString)) throw new CorruptMetadataError(key, '"absent" must be shard keys');
  return {
    checkedAt: field(key, o, 'checkedAt', isString, 'a time'),
    targetsListed: field(key, o, 'targetsListed', isCount, 'a count'),
    shardsExpected: field(key, o, 'shardsExpected', isCount, 'a count'),
    absentCount: field(key, o, 'absentCount', isCount, 'a count'),
    absent: absent as string[],
  };
}

/** What `maproots/<volume id>` holds: the same shape as extent/'s MapRoot (meta imports only core). */
export interface MapRootRecord {
  readonly levels: number;
  readonly page: { readonly generation: number; readonly checksum: string } | undefined;
  /** The highest journal LSN a record under the root holds. */
  readonly journalLsn?: number;
  /** Extents under the root holding data. */
  readonly written?: number;
}

export function encodeSnapshot(s: SnapshotRecord): string {
  return JSON.stringify({
    name: s.name,
    volumeId: s.volumeId,
    volume: s.volume,
    createdAt: s.createdAt,
    sizeBytes: s.sizeBytes,
    root: s.root.page === undefined ? { levels: s.root.levels } : JSON.parse(encodeMapRoot(s.root)),
    floor: s.floor,
    clones: s.clones,
    ...(s.origin === undefined ? {} : { origin: s.origin }),
    ...(s.parent === undefined ? {} : { parent: s.parent }),
  });
}

export function decodeSnapshot(key: string, text: string): SnapshotRecord {
  const o = parse(key, text);
  const root = field(key, o, 'root', (v): v is Json => typeof v === 'object' && v !== null, 'an object');
  const clones = field(key, o, 'clones', Array.isArray, 'a list');
  if (!clones.every(isString)) throw new CorruptMetadataError(key, '"clones" holds a non-string');
  return {
    name: field(key, o, 'name', isString, 'a string'),
    volumeId: field(key, o, 'volumeId', isString, 'a string'),
    volume: field(key, o, 'volume', isString, 'a string'),
    createdAt: field(key, o, 'createdAt', isString, 'a string'),
    sizeBytes: field(key, o, 'sizeBytes', isCount, 'a byte count'),
    root:
      root['checksum'] === undefined
        ? { levels: field(key, root, 'levels', isCount, 'a level count'), page: undefined }
        : decodeMapRoot(key, JSON.stringify(root)),
    floor: field(key, o, 'floor', isCount, 'a generation'),
    clones: clones as string[],
    ...(o['origin'] === undefined ? {} : { origin: field(key, o, 'origin', isString, 'a string') }),
    ...(o['parent'] === undefined
      ? {}
      : { parent: field(key, o, 'parent', (v): v is string | null => v === null || isString(v), 'a name or null') }),
  };
}

export function encodeMapRoot(root: MapRootRecord): string {
  return JSON.stringify({
    levels: root.levels,
    generation: root.page!.generation,
    checksum: root.page!.checksum,
    journalLsn: root.journalLsn ?? 0,
    written: root.written ?? 0,
  });
}

export function decodeMapRoot(key: string, text: string): MapRootRecord {
  const o = parse(key, text);
  const checksum = field(key, o, 'checksum', isString, 'a checksum');
  if (!/^[0-9a-f]{32}$/.test(checksum)) throw new CorruptMetadataError(key, 'checksum is not 32 hex digits');
  return {
    levels: field(key, o, 'levels', isCount, 'a level count'),
    page: { generation: field(key, o, 'generation', isCount, 'a generation'), checksum },
    journalLsn: o['journalLsn'] === undefined ? 0 : field(key, o, 'journalLsn', isCount, 'an LSN'),
    written: o['written'] === undefined ? 0 : field(key, o, 'written', isCount, 'a count'),
  };
}
