/**
 * The named schemas of the OpenAPI document (components/schemas): the records the API returns.
 * Each mirrors a TypeScript type of src/api or src/meta; a field those types always carry is
 * required here, so the integration test fails if a response drops one.
 */
import { arr, bool, int, map, nullable, num, obj, oneOf, ref, str, strMap, time, type Schema } from './schema.js';

const profile = obj({ k: int, m: int });
const mapRoot = obj({ levels: int }, { page: obj({ generation: int, checksum: str }), journalLsn: int, written: int });

const volume = obj(
  {
    name: str,
    id: str,
    sizeBytes: int,
    profile,
    extentBytes: int,
    zonesRequired: int,
    targets: oneOf('node', 's3', 'any'),
    createdAt: time,
    state: oneOf('ready', 'deleting'),
  },
  {
    durableShardsMin: int,
    journalReplicas: int,
    parent: obj({ volumeId: str, volume: str, snapshot: str }),
    labels: strMap,
    allowedZones: arr(str),
    settingSources: strMap,
    encryption: obj({ cipher: str, keyId: str }),
  },
);

const volumeInfo = {
  allOf: [
    ref('Volume'),
    obj({
      map: obj({
        form: oneOf('pages', 'per-extent etcd keys'),
        levels: int,
        writtenExtents: int,
        journalLsn: int,
        rootGeneration: nullable(int),
      }),
    }),
  ],
};

const snapshot = obj(
  {
    name: str,
    volumeId: str,
    volume: str,
    createdAt: time,
    sizeBytes: int,
    root: mapRoot,
    floor: int,
    clones: arr(str),
  },
  { origin: str, parent: nullable(str) },
);

const snapshotRow = obj({
  name: str,
  createdAt: time,
  sizeBytes: int,
  writtenExtents: int,
  uniqueBytes: int,
  uniqueShards: int,
  clones: arr(str),
});

const node = obj({
  name: str,
  zone: str,
  address: str,
  state: oneOf('up', 'down'),
  capacityBytes: int,
  usedBytes: nullable(int),
  heartbeatAt: nullable(time),
});

const target = obj(
  { name: str, kind: oneOf('node', 's3'), zone: str, up: bool, draining: bool },
  { address: str, endpoint: str, bucket: str, region: str, capacityBytes: int },
);

const zone = obj({
  zone: str,
  capacityBytes: int,
  usedBytes: int,
  nodesUp: int,
  nodesDown: int,
  targets: arr(
    obj({
      name: str,
      kind: oneOf('node', 's3'),
      up: bool,
      draining: bool,
      capacityBytes: int,
      usedBytes: nullable(int),
    }),
  ),
});

const volumeHealth = obj({
  name: str,
  id: str,
  sizeBytes: int,
  extentBytes: int,
  profile: str,
  k: int,
  m: int,
  zonesRequired: int,
  targets: str,
  extents: int,
  state: oneOf('ok', 'degraded', 'unreadable'),
  noRedundancy: bool,
  writeBlocked: nullable(str),
  attachedBy: nullable(obj({ owner: str, epoch: int })),
  mapError: nullable(str),
  writtenExtents: int,
  degradedExtents: int,
  unreadableExtents: int,
  atRiskBytes: int,
  unreadableBytes: int,
  missingShards: int,
  missingShardsByZone: map(int),
  extentsByShardsLost: arr(int),
  repairBacklogExtents: int,
  affectedExtents: arr(int),
  census: nullable(obj({ checkedAt: str, absentShards: int })),
  pendingFlush: nullable(obj({})),
  journal: nullable(obj({ unfoldedBytes: int, foldedLsn: int, headLsn: int, segments: int, nodes: arr(str) })),
});

const clusterHealth = obj({
  checkedAt: time,
  cluster: obj({ defaultProfile: str, extentBytes: int, zonesRequired: int, targets: str }),
  nodesUp: int,
  nodesDown: int,
  zones: arr(obj({ zone: str, nodesUp: int, nodesDown: int, s3Targets: int, down: arr(str) })),
  volumes: arr(volumeHealth),
  totals: obj({
    volumes: int,
    degradedVolumes: int,
    unreadableVolumes: int,
    writeBlockedVolumes: int,
    noRedundancyVolumes: int,
    pendingFlushVolumes: int,
    pendingFlushBytes: int,
    degradedExtents: int,
    unreadableExtents: int,
    atRiskBytes: int,
    unreadableBytes: int,
    repairBacklogExtents: int,
  }),
  verdict: obj({ state: oneOf('healthy', 'warning', 'degraded', 'unavailable'), summary: str }),
});

const placement = obj({
  volume: str,
  profile: profile,
  zonesRequired: int,
  allowedZones: nullable(arr(str)),
  extents: int,
  writtenExtents: int,
  truncated: bool,
  mapError: nullable(str),
  placement: arr(
    obj({
      extent: int,
      generation: int,
      shards: arr(
        obj({
          index: int,
          target: str,
          zone: nullable(str),
          state: oneOf('ok', 'missing', 'wrong-zone'),
        }),
      ),
    }),
  ),
});

const policy = obj({ name: str, selector: str, set: strMap, override: bool, createdAt: time });

const job = obj(
  {
    id: str,
    kind: oneOf('drain', 'repair'),
    target: nullable(str),
    state: oneOf('running', 'done', 'failed'),
    startedAt: time,
    by: str,
  },
  { endedAt: time, result: obj({}), error: str },
);

const repairStatus = obj({
  checkedAt: time,
  repair: obj({
    backlogExtents: int,
    degradedVolumes: int,
    atRiskBytes: int,
    ratePerSecond: nullable(num),
    etaSeconds: nullable(num),
    leader: nullable(str),
    checkpoint: nullable(obj({})),
  }),
  gc: obj({ volumes: int, snapshots: int, trash: int }),
  jobs: arr(ref('Job')),
});

const auditEntry = obj({
  id: str,
  at: time,
  who: str,
  role: nullable(oneOf('admin', 'viewer')),
  method: str,
  path: str,
  status: int,
  summary: str,
});

const event = obj({ type: str, at: time });

const ioStats = obj({
  intervalMs: int,
  windowMs: int,
  sampledAt: nullable(time),
  frontends: int,
  totals: obj({ readOps: int, writeOps: int, readBytes: int, writeBytes: int }),
  series: arr(
    obj({
      at: time,
      readIops: num,
      writeIops: num,
      readBytesPerSecond: num,
      writeBytesPerSecond: num,
    }),
  ),
  volumes: arr(obj({ volume: str, readIops: num, writeIops: num, readBytesPerSecond: num, writeBytesPerSecond: num })),
});

const error = obj({ error: obj({ code: str, message: str, retryable: bool }) });

const principal = obj({ id: str, name: str, role: oneOf('admin', 'viewer'), via: oneOf('token', 'mtls') });

export const components: Readonly<Record<string, Schema>> = {
  Error: error,
  Principal: principal,
  Volume: volume,
  VolumeInfo: volumeInfo,
  Snapshot: snapshot,
  SnapshotRow: snapshotRow,
  Node: node,
  Target: target,
  Zone: zone,
  VolumeHealth: volumeHealth,
  ClusterHealth: clusterHealth,
  Placement: placement,
  Policy: policy,
  Job: job,
  RepairStatus: repairStatus,
  AuditEntry: auditEntry,
  Event: event,
  IoStats: ioStats,
};
