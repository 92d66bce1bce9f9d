/**
 * Cluster health from metadata alone: which targets are up (the leased `alive/` keys joined with
 * `targets/`), and for each volume, which of its written extents have shards on targets that are
 * down or gone, read from the extent map. No shard is read, so this is cheap enough for
 * `cairnctl status` and for the frontend's metrics at every scrape, and says nothing about
 * corruption on targets that are up (scrub and degraded reads find that).
 *
 * The arithmetic, per written extent of a volume with profile k+m:
 *   lost = its shards whose target is down or no longer registered (counted per shard, so two
 *          shards of one extent on one dead node count twice);
 *   lost = 0       healthy;
 *   1 <= lost <= m degraded: still readable by decoding, but it has spent `lost` of its m spares;
 *   lost > m       unreadable until enough of those targets return.
 *   bytes at risk  = the sum of the lengths of the extents with lost >= 1 (degraded and
 *                    unreadable alike): extentBytes each, less for a short last extent.
 * Example: a 4+2 volume with 16 written extents of 1 MiB over six nodes, one shard per node;
 * node b-1 is SIGKILLed: 16 extents lost 1 shard each, 16 MiB at risk, 16 missing shards in
 * zone b, none unreadable. With b-2 gone too each extent lost 2 (= m), still readable; with a
 * third node gone every extent lost 3 > m and all 16 are unreadable.
 *
 * What it keeps true: assessExtentMap() and summarizeHealth() are pure (records in, numbers out);
 * readClusterHealth() does the etcd reads, each under EtcdMeta's deadline.
 *
 * Shards missing from targets that are up come from the last shard census (repair/census.ts),
 * recorded in etcd: each counts as lost, like a shard on a down target, until a census finds it
 * back.
 *
 * What it leaves out: repairing anything, and extents a read found corrupt on live targets (the
 * frontend adds those it knows of as `readDegraded`).
 */
import { errorMessage, formatBytes, formatProfile, type Profile } from '../core/index.js';
import { extentLength } from '../extent/index.js';
import type {
  CensusRecord,
  ClusterConfig,
  EtcdMeta,
  ExtentRecord,
  JournalLayout,
  PendingFlushRecord,
  TargetPolicy,
  VolumeRecord,
} from '../meta/index.js';
import { assessPolicy, type Topology } from '../placement/index.js';
import { readTopology } from './cluster.js';
import { policyOf } from './volumes.js';
import { VolumeMaps } from './volume_maps.js';

/** The zone reported for shards whose target is no longer registered. Not a valid zone name. */
export const unregisteredZone = '(unregistered)';
/** Affected extents listed by number per volume; the counts cover all of them. */
export const affectedExtentsListedMax = 20;

export interface TargetState {
  readonly name: string;
  readonly zone: string;
  readonly kind: 'node' | 's3';
  readonly up: boolean;
}

/** Targets by name, from a topology (S3 targets count as up while registered, like placement). */
export function livenessOf(topology: Topology): ReadonlyMap<string, TargetState> {
  return new Map(topology.targets.map((t) => [t.id as string, { name: t.id, zone: t.zone, kind: t.kind, up: t.up }]));
}

export interface ExtentMapHealth {
  /** Extents with a published generation. */
  readonly writtenExtents: number;
  /** Written extents that lost 1 to m shards. */
  readonly degradedExtents: number;
  /** Written extents that lost more than m shards. */
  readonly unreadableExtents: number;
  /** Bytes in extents that lost at least one shard (degraded plus unreadable). */
  readonly atRiskBytes: number;
  /** Bytes in unreadable extents (a part of atRiskBytes). */
  readonly unreadableBytes: number;
  /** Shards of written extents on down or unregistered targets, or missing from live ones (census). */
  readonly missingShards: number;
  /** missingShards by the zone of the target; every zone of the topology appears, 0 included. */
  readonly missingShardsByZone: Readonly<Record<string, number>>;
  /** Index i: written extents that lost exactly i shards (0 to k+m). */
  readonly extentsByShardsLost: readonly number[];
  /** Extents that lost a shard, plus those a read found degraded: what repair has to visit. */
  readonly repairBacklogExtents: number;
  /** The lowest-numbered extents that lost a shard, at most affectedExtentsListedMax. */
  readonly affectedExtents: readonly number[];
}

export interface ExtentMapInput {
  readonly sizeBytes: number;
  readonly extentBytes: number;
  readonly profile: Profile;
  /** Published records by extent index, in any order. */
  readonly extents: Iterable<readonly [number, ExtentRecord]>;
  readonly liveness: ReadonlyMap<string, TargetState>;
  /** Extents a read found degraded (missing, slow or corrupt shard), e.g. VolumeEngine.degraded. */
  readonly readDegraded?: ReadonlySet<number>;
  /** Shard keys the last census found missing on live targets: lost like a down target's. */
  readonly absent?: ReadonlySet<string>;
}

/** Counts what each written extent lost. Pure; one pass over the records. */
export function assessExtentMap(input: ExtentMapInput): ExtentMapHealth {
  const { k, m } = input.profile;
  const geometry = { sizeBytes: input.sizeBytes, extentBytes: input.extentBytes, k };
  const byZone: Record<string, number> = {};
  for (const t of input.liveness.values()) byZone[t.zone] = 0;
  const byLost = new Array<number>(k + m + 1).fill(0);
  const affected: number[] = [];
  let written = 0;
  let degraded = 0;
  let unreadable = 0;
  let atRisk = 0;
  let unreadableBytes = 0;
  let missing = 0;
  let backlog = 0;
  for (const [e, record] of input.extents) {
    written += 1;
    let lost = 0;
    for (const shard of record.shards) {
      const target = input.liveness.get(shard.target);
      if (target?.up === true && input.absent?.has(shard.key) !== true) continue;
      lost += 1;
      const zone = target?.zone ?? unregisteredZone;
      byZone[zone] = (byZone[zone] ?? 0) + 1;
    }
    missing += lost;
    byLost[Math.min(lost, k + m)]! += 1;
    if (lost > 0 || input.readDegraded?.has(e) === true) backlog += 1;
    if (lost === 0) continue;
    const bytes = extentLength(geometry, e);
    atRisk += bytes;
    if (lost > m) {
      unreadable += 1;
      unreadableBytes += bytes;
    } else {
      degraded += 1;
    }
    affected.push(e);
  }
  affected.sort((a, b) => a - b);
  return {
    writtenExtents: written,
    degradedExtents: degraded,
    unreadableExtents: unreadable,
    atRiskBytes: atRisk,
    unreadableBytes,
    missingShards: missing,
    missingShardsByZone: byZone,
    extentsByShardsLost: byLost,
    repairBacklogExtents: backlog,
    affectedExtents: affected.slice(0, affectedExtentsListedMax),
  };
}

export type VolumeState = 'ok' | 'degraded' | 'unreadable';

export interface VolumeHealth extends ExtentMapHealth {
  /** Why the volume's extent map could not be read (no good copy of a map page), or null. */
  readonly mapError: string | null;
  readonly name: string;
  readonly id: string;
  readonly sizeBytes: number;
  readonly extentBytes: number;
  /** `4+2`. */
  readonly profile: string;
  readonly k: number;
  readonly m: number;
  readonly zonesRequired: number;
  readonly targets: TargetPolicy;
  /** All extents of the volume, written or not. */
  readonly extents: number;
  /** unreadable when any extent lost more than m shards, else degraded when any lost one, else ok. */
  readonly state: VolumeState;
  /**
   * The profile has no parity shards (m = 0, created with --allow-no-redundancy): any one lost
   * shard loses data, so the volume is never called plainly ok.
   */
  readonly noRedundancy: boolean;
  /** Null when the live topology can place new generations; else why flushes will fail. */
  readonly writeBlocked: string | null;
  /** The frontend holding the volume's write lock, if any. */
  readonly attachedBy: { readonly owner: string; readonly epoch: number } | null;
  /**
   * The last shard census: when it ran and how many published shards live targets lacked (they
   * count as missing above until a census finds them back). Null when none ran.
   */
  readonly census: { readonly checkedAt: string; readonly absentShards: number } | null;
  /**
   * Set while that frontend keeps the volume attached with no clients because its final flush
   * fails: writes not yet durable, retried until `giveUpAt`, then dropped (`pending-flush/`).
   */
  readonly pendingFlush: PendingFlushRecord | null;
  /**
   * The volume's write-ahead journal as its writer last recorded it (at each fold): bytes of
   * records not yet folded into erasure-coded generations, and its segments' nodes. Null when
   * the volume has no journal records.
   */
  readonly journal: {
    readonly unfoldedBytes: number;
    readonly foldedLsn: number;
    readonly headLsn: number;
    readonly segments: number;
    readonly nodes: readonly string[];
  } | null;
}

export interface ZoneHealth {
  readonly zone: string;
  readonly nodesUp: number;
  readonly nodesDown: number;
  readonly s3Targets: number;
  /** Names of the targets down in this zone. */
  readonly down: readonly string[];
}

export type ClusterState = 'healthy' | 'warning' | 'degraded' | 'unavailable';

export interface ClusterHealth {
  readonly checkedAt: string;
  readonly cluster: {
    readonly defaultProfile: string;
    readonly extentBytes: number;
    readonly zonesRequired: number;
    readonly targets: TargetPolicy;
  };
  readonly nodesUp: number;
  readonly nodesDown: number;
  readonly zones: readonly ZoneHealth[];
  readonly volumes: readonly VolumeHealth[];
  readonly totals: {
    readonly volumes: number;
    readonly degradedVolumes: number;
    readonly unreadableVolumes: number;
    readonly writeBlockedVolumes: number;
    /** Volumes whose profile has m = 0. */
    readonly noRedundancyVolumes: number;
    /** Volumes whose final flush is failing and being retried. */
    readonly pendingFlushVolumes: number;
    /** Their bytes not yet durable. */
    readonly pendingFlushBytes: number;
    readonly degradedExtents: number;
    readonly unreadableExtents: number;
    readonly atRiskBytes: number;
    readonly unreadableBytes: number;
    readonly repairBacklogExtents: number;
  };
  /** The one-line answer: state, and a sentence a person can act on. */
  readonly verdict: { readonly state: ClusterState; readonly summary: string };
}

export interface VolumeInput {
  readonly record: VolumeRecord;
  readonly extents: ReadonlyMap<number, ExtentRecord>;
  readonly lock: { readonly owner: string; readonly epoch: number } | null;
  readonly journal?: JournalLayout | null;
  /** The volume's last shard census (runCensus), if any ran. */
  readonly census?: CensusRecord | null;
  readonly pendingFlush?: PendingFlushRecord | null;
  /** Set when the extent map could not be read: `extents` is then empty, and the volume unreadable. */
  readonly mapError?: string;
}

/** The health of one volume from its record, extent map, lock and the topology. Pure. */
export function volumeHealth(input: VolumeInput, topology: Topology): VolumeHealth {
  const { record } = input;
  const map = assessExtentMap({
    sizeBytes: record.sizeBytes,
    extentBytes: record.extentBytes,
    profile: record.profile,
    extents: input.extents,
    liveness: livenessOf(topology),
    ...(input.census === undefined || input.census === null ? {} : { absent: new Set(input.census.absent) }),
  });
  const state: VolumeState =
    input.mapError !== undefined || map.unreadableExtents > 0
      ? 'unreadable'
      : map.degradedExtents > 0
        ? 'degraded'
        : 'ok';
  return {
    mapError: input.mapError ?? null,
    name: record.name,
    id: record.id,
    sizeBytes: record.sizeBytes,
    extentBytes: record.extentBytes,
    profile: formatProfile(record.profile),
    k: record.profile.k,
    m: record.profile.m,
    zonesRequired: record.zonesRequired,
    targets: record.targets,
    extents: Math.ceil(record.sizeBytes / record.extentBytes),
    ...map,
    state,
    noRedundancy: record.profile.m === 0,
    writeBlocked: assessPolicy(topology, policyOf(record)).refusal,
    attachedBy: input.lock,
    census:
      input.census === undefined || input.census === null
        ? null
        : { checkedAt: input.census.checkedAt, absentShards: input.census.absentCount },
    pendingFlush: input.pendingFlush ?? null,
    journal:
      input.journal === undefined || input.journal === null || input.journal.segments.length === 0
        ? null
        : {
            unfoldedBytes: input.journal.unfoldedBytes,
            foldedLsn: input.journal.foldedLsn,
            headLsn: input.journal.headLsn,
            segments: input.journal.segments.length,
            nodes: [...new Set(input.journal.segments.flatMap((s) => s.replicas))].sort(),
          },
  };
}

const plural = (n: number, one: string, many = `${one}s`): string => `${n} ${n === 1 ? one : many}`;

/** Nodes per zone, volume health, totals and the verdict. Pure. */
export function summarizeHealth(
  config: ClusterConfig,
  topology: Topology,
  volumes: readonly VolumeInput[],
  now: Date,
): ClusterHealth {
  const zones = new Map<string, { nodesUp: number; nodesDown: number; s3Targets: number; down: string[] }>();
  for (const t of [...topology.targets].sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0))) {
    let z = zones.get(t.zone);
    if (z === undefined) zones.set(t.zone, (z = { nodesUp: 0, nodesDown: 0, s3Targets: 0, down: [] }));
    if (t.kind === 's3') z.s3Targets += 1;
    else if (t.up) z.nodesUp += 1;
    else z.nodesDown += 1;
    if (!t.up) z.down.push(t.id);
  }
  const zoneList: ZoneHealth[] = [...zones.entries()]
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
    .map(([zone, z]) => ({ zone, ...z }));
  const vols = volumes.map((v) => volumeHealth(v, topology));
  const sum = (f: (v: VolumeHealth) => number): number => vols.reduce((s, v) => s + f(v), 0);
  const totals = {
    volumes: vols.length,
    degradedVolumes: vols.filter((v) => v.state === 'degraded').length,
    unreadableVolumes: vols.filter((v) => v.state === 'unreadable').length,
    writeBlockedVolumes: vols.filter((v) => v.writeBlocked !== null).length,
    noRedundancyVolumes: vols.filter((v) => v.noRedundancy).length,
    pendingFlushVolumes: vols.filter((v) => v.pendingFlush !== null).length,
    pendingFlushBytes: sum((v) => v.pendingFlush?.dirtyBytes ?? 0),
    degradedExtents: sum((v) => v.degradedExtents),
    unreadableExtents: sum((v) => v.unreadableExtents),
    atRiskBytes: sum((v) => v.atRiskBytes),
    unreadableBytes: sum((v) => v.unreadableBytes),
    repairBacklogExtents: sum((v) => v.repairBacklogExtents),
  };
  const nodesUp = zoneList.reduce((s, z) => s + z.nodesUp, 0);
  const nodesDown = zoneList.reduce((s, z) => s + z.nodesDown, 0);
  return {
    checkedAt: now.toISOString(),
    cluster: {
      defaultProfile: formatProfile(config.defaultProfile),
      extentBytes: config.extentBytes,
      zonesRequired: config.zonesRequired,
      targets: config.targets,
    },
    nodesUp,
    nodesDown,
    zones: zoneList,
    volumes: vols,
    totals,
    verdict: verdictOf(zoneList, vols, totals),
  };
}

/**
 * The worst thing first: data that cannot be read, then data at risk or volumes that cannot be
 * written, then targets down that hold nothing yet and volumes without redundancy.
 */
function verdictOf(
  zones: readonly ZoneHealth[],
  vols: readonly VolumeHealth[],
  totals: ClusterHealth['totals'],
): { state: ClusterState; summary: string } {
  const down = zones.flatMap((z) => z.down);
  // Only nodes have a liveness signal today (S3 targets count as up), but say "target" if not.
  const what = zones.reduce((s, z) => s + z.nodesDown, 0) === down.length ? 'node' : 'target';
  const downText =
    down.length === 0
      ? `every ${what} up`
      : `${plural(down.length, what)} down (${down.slice(0, 6).join(', ')}${down.length > 6 ? ', ...' : ''})`;
  const names = (pick: (v: VolumeHealth) => boolean): string => {
    const list = vols.filter(pick).map((v) => v.name);
    return `${list.slice(0, 4).join(', ')}${list.length > 4 ? ', ...' : ''}`;
  };
  if (totals.unreadableExtents > 0) {
    return {
      state: 'unavailable',
      summary:
        `UNAVAILABLE: ${plural(totals.unreadableExtents, 'extent')} (${formatBytes(totals.unreadableBytes)}) of ` +
        `${plural(totals.unreadableVolumes, 'volume')} (${names((v) => v.state === 'unreadable')}) lost more than m shards ` +
        `and cannot be read until their targets return; ${downText}`,
    };
  }
  const problems: string[] = [];
  if (totals.degradedExtents > 0)
    problems.push(
      `${formatBytes(totals.atRiskBytes)} at risk in ${plural(totals.degradedExtents, 'degraded extent')} of ` +
        `${plural(totals.degradedVolumes, 'volume')} (${names((v) => v.state === 'degraded')})`,
    );
  const absent = vols.reduce((n, v) => n + (v.census?.absentShards ?? 0), 0);
  if (absent > 0)
    problems.push(
      `${plural(absent, 'shard')} missing from nodes that are up (found by the shard census; repair rebuilds them in place)`,
    );
  if (totals.writeBlockedVolumes > 0) {
    // "Cannot meet placement policy 4+2 (...): 6 distinct usable targets needed, 5 of 6 usable": the numbers.
    const reason = (vols.find((v) => v.writeBlocked !== null)?.writeBlocked ?? '').replace(/^[^:]*: /, '');
    problems.push(
      `flushes to ${plural(totals.writeBlockedVolumes, 'volume')} (${names((v) => v.writeBlocked !== null)}) will fail (${reason})`,
    );
  }
  if (totals.pendingFlushVolumes > 0)
    problems.push(
      `${formatBytes(totals.pendingFlushBytes)} written to ${plural(totals.pendingFlushVolumes, 'volume')} ` +
        `(${names((v) => v.pendingFlush !== null)}) not yet durable: their clients are gone and the final flush keeps failing (retried until it succeeds or gives up)`,
    );
  if (problems.length > 0) return { state: 'degraded', summary: `DEGRADED: ${problems.join('; ')}; ${downText}` };
  const warnings: string[] = [];
  if (down.length > 0) warnings.push(`${downText}; no written data has shards on them`);
  if (totals.noRedundancyVolumes > 0)
    warnings.push(
      `${plural(totals.noRedundancyVolumes, 'volume')} (${names((v) => v.noRedundancy)}) ` +
        `${totals.noRedundancyVolumes === 1 ? 'has' : 'have'} no redundancy: losing any one shard loses data`,
    );
  if (warnings.length > 0) return { state: 'warning', summary: `WARNING: ${warnings.join('; ')}` };
  const nodes = zones.reduce((s, z) => s + z.nodesUp, 0);
  return {
    state: 'healthy',
    summary: `HEALTHY: ${plural(nodes, 'node')} up in ${plural(zones.length, 'zone')}; ${plural(vols.length, 'volume')}, no data at risk`,
  };
}

/**
 * Reads the config, the topology, every ready volume's extent map and lock, and summarizes them.
 * Throws what EtcdMeta throws (UnavailableError when etcd does not answer in time).
 */
export async function readClusterHealth(meta: EtcdMeta, now: () => Date = () => new Date()): Promise<ClusterHealth> {
  const config = await meta.requireCluster();
  const topology = await readTopology(meta);
  const records = (await meta.listVolumes()).filter((v) => v.state === 'ready');
  const pending = await meta.listPendingFlushes();
  const volumes: VolumeInput[] = [];
  // One volume at a time: an extent map can be thousands of keys; etcd serves them in order.
  for (const record of records) {
    let extents = new Map<number, ExtentRecord>();
    let mapError: string | undefined;
    try {
      extents = await VolumeMaps.of(meta).listExtents(record.id);
    } catch (err) {
      // Its map pages cannot be read now (every copy on a target that is down): say so, and go
      // on with the other volumes.
      mapError = errorMessage(err);
    }
    const lock = await meta.getLock(record.name);
    const journal = await meta.getJournal(record.id);
    const census = await meta.getCensus(record.id);
    volumes.push({
      record,
      extents,
      lock: lock === null ? null : { owner: lock.owner, epoch: lock.epoch },
      journal,
      census,
      pendingFlush: pending.get(record.name) ?? null,
      ...(mapError === undefined ? {} : { mapError }),
    });
  }
  return summarizeHealth(config, topology, volumes, now());
}
