/**
 * The API's own reads and one write that no CLI command makes: capacity per zone, S3 targets with
 * their state, where each extent's shards are, the repair and gc backlogs, and a volume's labels.
 * Each is built from etcd alone (no shard is read).
 */
import { CairnError, InvalidArgumentError, errorMessage } from '../../core/index.js';
import {
  NotFoundError,
  keys,
  type AliveRecord,
  type EtcdMeta,
  type ExtentRecord,
  type TargetRecord,
  type VolumeRecord,
} from '../../meta/index.js';
import { s3CapacityBytesDefault } from '../cluster.js';
import { readClusterHealth } from '../health.js';
import { parseLabels } from '../policy_rules.js';
import { VolumeMaps } from '../volume_maps.js';
import type { Jobs } from './jobs.js';

export interface TargetView {
  readonly name: string;
  readonly kind: 'node' | 's3';
  readonly zone: string;
  readonly up: boolean;
  readonly draining: boolean;
  readonly capacityBytes: number;
  readonly usedBytes: number | null;
  readonly address?: string;
  readonly endpoint?: string;
  readonly bucket?: string;
  readonly region?: string;
}

/** Every registered target (or those of one kind) with liveness and capacity, sorted by name. */
export function targetsOf(
  records: readonly TargetRecord[],
  alive: readonly AliveRecord[],
  kind?: 'node' | 's3',
): TargetView[] {
  const live = new Map(alive.map((a) => [a.name, a]));
  return records
    .filter((r) => kind === undefined || r.kind === kind)
    .map((r) => {
      const a = live.get(r.name);
      // An S3 target has no heartbeat: it counts as up while registered, as placement counts it.
      const up = r.kind === 's3' || a !== undefined;
      return {
        name: r.name,
        kind: r.kind,
        zone: r.zone,
        up,
        draining: r.draining === true,
        capacityBytes:
          r.kind === 's3' ? (r.capacityBytes ?? s3CapacityBytesDefault) : (a?.capacityBytes ?? r.capacityBytes ?? 0),
        usedBytes: a?.usedBytes ?? null,
        ...(r.address === undefined ? {} : { address: r.address }),
        ...(r.endpoint === undefined ? {} : { endpoint: r.endpoint }),
        ...(r.bucket === undefined ? {} : { bucket: r.bucket }),
        ...(r.region === undefined ? {} : { region: r.region }),
      };
    })
    .sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
}

/** Capacity per zone: the sum over its targets (an S3 target counts its declared capacity, and no use). */
export function zonesOf(records: readonly TargetRecord[], alive: readonly AliveRecord[]) {
  const byZone = new Map<string, TargetView[]>();
  for (const t of targetsOf(records, alive)) byZone.set(t.zone, [...(byZone.get(t.zone) ?? []), t]);
  return [...byZone.entries()]
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
    .map(([zone, targets]) => ({
      zone,
      capacityBytes: targets.reduce((s, t) => s + t.capacityBytes, 0),
      usedBytes: targets.reduce((s, t) => s + (t.usedBytes ?? 0), 0),
      nodesUp: targets.filter((t) => t.kind === 'node' && t.up).length,
      nodesDown: targets.filter((t) => t.kind === 'node' && !t.up).length,
      targets: targets.map((t) => ({
        name: t.name,
        kind: t.kind,
        up: t.up,
        draining: t.draining,
        capacityBytes: t.capacityBytes,
        usedBytes: t.usedBytes,
      })),
    }));
}

export type ShardState = 'ok' | 'missing' | 'wrong-zone';

/**
 * Where each written extent's shards are. A shard is `missing` when its target is down or no
 * longer registered, or the last census found it gone; `wrong-zone` when it is readable but on a
 * zone the volume may not use (its allowedZones), or on a zone that already holds more than its
 * share of the extent (more than ceil((k+m) / zonesRequired) shards: the extent would lose more
 * than m shards with that zone); else `ok`. Lists the lowest `limit` extents.
 */
export async function placementOf(meta: EtcdMeta, name: string, limit: number) {
  const volume = await meta.requireVolume(name);
  const records = new Map((await meta.listTargets()).map((t) => [t.name, t]));
  const alive = new Set((await meta.listAlive()).map((a) => a.name));
  const census = await meta.getCensus(volume.id);
  const absent = new Set(census?.absent ?? []);
  const { k, m } = volume.profile;
  const zoneShare = Math.ceil((k + m) / Math.max(1, volume.zonesRequired));
  const allowed = volume.allowedZones === undefined ? null : new Set(volume.allowedZones);
  let extents = new Map<number, ExtentRecord>();
  let mapError: string | null = null;
  try {
    extents = await VolumeMaps.of(meta).listExtents(volume.id);
  } catch (err) {
    mapError = errorMessage(err);
  }
  const indices = [...extents.keys()].sort((a, b) => a - b);
  const placement = indices.slice(0, limit).map((e) => {
    const record = extents.get(e)!;
    const perZone = new Map<string, number>();
    for (const s of record.shards) {
      const zone = records.get(s.target)?.zone;
      if (zone !== undefined) perZone.set(zone, (perZone.get(zone) ?? 0) + 1);
    }
    return {
      extent: e,
      generation: record.generation,
      shards: record.shards.map((s, index) => {
        const target = records.get(s.target);
        const zone = target?.zone ?? null;
        const up = target !== undefined && (target.kind === 's3' || alive.has(s.target));
        const state: ShardState =
          !up || absent.has(s.key)
            ? 'missing'
            : (allowed !== null && !allowed.has(zone!)) || (perZone.get(zone!) ?? 0) > zoneShare
              ? 'wrong-zone'
              : 'ok';
        return { index, target: s.target, zone, state };
      }),
    };
  });
  return {
    volume: volume.name,
    profile: volume.profile,
    zonesRequired: volume.zonesRequired,
    allowedZones: volume.allowedZones === undefined ? null : [...volume.allowedZones],
    extents: Math.ceil(volume.sizeBytes / volume.extentBytes),
    writtenExtents: indices.length,
    truncated: indices.length > limit,
    mapError,
    placement,
  };
}

/**
 * Replaces a volume's labels (used by policy rules when volumes are created, and by selectors).
 * One compare-and-swap on the volume's record: a change made meanwhile (a resize, a rename, a
 * delete) refuses it with a retryable error instead of being overwritten.
 */
export async function setVolumeLabels(
  meta: EtcdMeta,
  name: string,
  labels: Readonly<Record<string, string>>,
): Promise<VolumeRecord> {
  // Checked as `--label` values are: the same key and value rules.
  const checked = parseLabels(
    Object.entries(labels)
      .map(([key, value]) => `${key}=${value}`)
      .join(','),
    'labels',
  );
  if (Object.keys(checked).length !== Object.keys(labels).length)
    throw new InvalidArgumentError('Invalid labels: a key or value holds a comma');
  const current = await meta.getVolumeWithRevision(name);
  if (current === null) throw new NotFoundError(`No volume named "${name}"`);
  const { labels: _old, ...rest } = current.record;
  void _old;
  const next: VolumeRecord = Object.keys(checked).length === 0 ? rest : { ...rest, labels: checked };
  const key = keys.volume(name);
  const done = await meta.client
    .if(key, 'Mod', '==', current.modRevision)
    .then(meta.client.put(key).value(JSON.stringify(next)))
    .commit();
  if (!done.succeeded)
    throw new CairnError('EMOVED', `Volume "${name}" changed while its labels were being set; try again`, {
      retryable: true,
    });
  return next;
}

/** The repair and gc backlogs as the cluster records them, with this server's jobs. */
export async function repairStatus(meta: EtcdMeta, jobs: Jobs) {
  const health = await readClusterHealth(meta);
  jobs.noteBacklog(health.totals.repairBacklogExtents);
  const rate = jobs.backlogRate();
  const leader = await meta.client.get(keys.repairerLock()).string();
  const [gcVolumes, gcSnapshots, trash] = await Promise.all([
    meta.listGcVolumes(),
    meta.listGcSnapshots(),
    meta.listTrash(),
  ]);
  const backlog = health.totals.repairBacklogExtents;
  return {
    checkedAt: health.checkedAt,
    repair: {
      backlogExtents: backlog,
      degradedVolumes: health.totals.degradedVolumes + health.totals.unreadableVolumes,
      atRiskBytes: health.totals.atRiskBytes,
      ratePerSecond: rate,
      etaSeconds: rate === null || rate <= 0 ? (backlog === 0 ? 0 : null) : Math.ceil(backlog / rate),
      leader,
      checkpoint: await meta.getRepairProgress(),
    },
    gc: { volumes: gcVolumes.length, snapshots: gcSnapshots.length, trash: trash.length },
    jobs: jobs.list(),
  };
}
