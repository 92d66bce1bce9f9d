/**
 * Census: finds published shards that a live target no longer holds, without reading any data.
 * A node that is up but lost files (an operator's rm, a restored backup, a disk swapped under a
 * running node) looks healthy to liveness; only a listing against the map shows the gap.
 *
 * For each volume: the published records say which keys each target must hold; each target that
 * is up and holds some is listed under the volume's prefix (`<volumeId>/`, listLimitMax keys a
 * call); keys the map names and the listing lacks are absent. The result is recorded in etcd
 * (`cairn/v1/census/<volumeId>`), where `cairnctl status` and the frontends' health read it, and
 * returned, with the extents to heal.
 *
 * Cost: one list call per 1000 shards per target, no data read. Measured on this machine kind
 * (2 cores; `cairnctl census` on a `dev up` cluster of 9 nodes, a 1 GiB 4+2 volume of 1 MiB
 * extents, 6144 shards): 0.8-1.1 s per census, mostly the nodes walking their shard directories,
 * so about 0.15 ms per shard; at the daemon's default of once a minute that is ~2 % of one core
 * for 6000 shards, and a cluster of a million shards needs the interval raised. A generation
 * published after its listing is not judged: a record whose key was not expected when the
 * target was listed is left for the next census, and keys of superseded generations are ignored
 * by readers of the record, since they match no current shard.
 *
 * What it keeps true: a shard is reported absent only when its target answered the listing; a
 * target that cannot be listed is named in `unlisted`, and its shards are not judged.
 */
import { errorMessage } from '../core/index.js';
import { censusAbsentListedMax, type CensusRecord, type EtcdMeta, type VolumeRecord } from '../meta/index.js';
import { VolumeMaps, reachableTargets } from '../api/index.js';
import { shardKeyPages } from '../shard/index.js';
import type { RepairStores } from './repair.js';

/**
 * How often `cairnctl repair --daemon` takes a census: a minute, so a shard deleted from a live
 * node is counted at risk within about a minute, at one list call per 1000 shards per node.
 */
export const censusIntervalMsDefault = 60_000;

export interface CensusVolume {
  readonly volume: string;
  readonly volumeId: string;
  readonly record: CensusRecord;
  /** Extents with an absent shard, for a heal. */
  readonly extents: ReadonlySet<number>;
}

export interface CensusReport {
  readonly volumes: readonly CensusVolume[];
  readonly targetsListed: number;
  readonly keysListed: number;
  readonly absentShards: number;
  /** Targets that were up but could not be listed, with why. */
  readonly unlisted: readonly string[];
  readonly durationMs: number;
}

export async function runCensus(
  meta: EtcdMeta,
  stores: RepairStores,
  options: { readonly volume?: string; readonly now?: () => Date } = {},
): Promise<CensusReport> {
  const started = performance.now();
  const now = options.now ?? (() => new Date());
  const up = await reachableTargets(meta);
  const volumes: VolumeRecord[] =
    options.volume === undefined
      ? (await meta.listVolumes()).filter((v) => v.state === 'ready')
      : [await meta.requireVolume(options.volume)];
  const out: CensusVolume[] = [];
  const unlisted = new Set<string>();
  let targetsListed = 0;
  let keysListed = 0;
  let absentShards = 0;
  for (const v of volumes) {
    const extents = await VolumeMaps.of(meta).listExtents(v.id);
    // What each target must hold, and which extent each key belongs to.
    const expected = new Map<string, Map<string, number>>();
    for (const [e, rec] of extents) {
      for (const ref of rec.shards) {
        let keys = expected.get(ref.target);
        if (keys === undefined) expected.set(ref.target, (keys = new Map()));
        keys.set(ref.key, e);
      }
    }
    /** Absent keys, with their extent. */
    const absent = new Map<string, number>();
    let listed = 0;
    let shardsExpected = 0;
    for (const [target, keys] of expected) {
      if (!up.has(target)) continue; // down: health counts it already, repair moves it
      const held = new Set<string>();
      try {
        for await (const page of shardKeyPages(stores.store(target), `${v.id}/`)) for (const key of page) held.add(key);
      } catch (err) {
        unlisted.add(`${target}: ${errorMessage(err)}`);
        continue;
      }
      listed += 1;
      keysListed += held.size;
      shardsExpected += keys.size;
      for (const [key, e] of keys) if (!held.has(key)) absent.set(key, e);
    }
    // A writer may have published a new generation (and deleted the old one's shards after the
    // grace) while the targets were listed: judge only shards their extent still names.
    for (const e of new Set(absent.values())) {
      const still = await VolumeMaps.of(meta).getExtentWithRevision(v.id, e);
      const current = new Set(still?.record.shards.map((ref) => ref.key) ?? []);
      for (const [key, of] of absent) if (of === e && !current.has(key)) absent.delete(key);
    }
    const absentExtents = new Set(absent.values());
    const absentKeys = [...absent.keys()].sort();
    absentShards += absentKeys.length;
    targetsListed += listed;
    const record: CensusRecord = {
      checkedAt: now().toISOString(),
      targetsListed: listed,
      shardsExpected,
      absentCount: absentKeys.length,
      absent: absentKeys.slice(0, censusAbsentListedMax),
    };
    await meta.putCensus(v.id, record);
    out.push({ volume: v.name, volumeId: v.id, record, extents: absentExtents });
  }
  return {
    volumes: out,
    targetsListed,
    keysListed,
    absentShards,
    unlisted: [...unlisted],
    durationMs: Math.round(performance.now() - started),
  };
}
