/**
 * The simulated world of one seed: a cluster of shard targets in zones (memory stores with
 * faults), a topology the real zone-aware placer reads, an extent map with a lock, simulated
 * time, a codec, and the frontend processes (volume engine + write-back cache) that come and go
 * as they crash or lose their lock. Faults are methods here; the simulation decides when.
 *
 * What it keeps true:
 * - Everything is built from the seed: the configuration (profile, zones, sizes, cache limits,
 *   durability, grace, flusher) and, through separate streams, every store and map decision.
 * - A frontend process that crashed or was replaced does nothing more: its timers stop and its
 *   store and map calls never complete (see faulty_store.ts, sim_map.ts).
 * - Permanent damage (bit flips, wiped disks) never takes more than m shards of any published
 *   generation, so every extent is readable again once the transient faults heal; shards that a
 *   generation was published without (durableShardsMin < k+m) count towards those m.
 * - Every failure the world causes is logged or registered as injected, for the checker.
 * - With a journal (journalReplicas > 0), every writer uses the simulated replicated journal
 *   (sim_journal.ts) as its cache's CacheJournal: attach fences it, replays it into the new
 *   cache before serving, and journal nodes share their storage node's fate (a node crash also
 *   crashes its journal service, losing what it had not fsynced).
 * What it leaves out: repair (the engine only reports degraded extents), more than one writer
 * serving clients (a replaced writer lingers only while the simulation finishes a flush it had
 * in flight, see Simulation's takeover fault), network partitions between a frontend and some
 * shard targets only.
 */
import {
  FencedError,
  PlacementError,
  TiB,
  errorMessage,
  assert,
  formatProfile,
  parseShardKey,
  targetId,
  zoneId,
  type BlockDevice,
  type ExtentRecord,
  type ExtentShardRef,
  type Profile,
} from '../core/index.js';
import { WriteBackCache, type CacheBackend } from '../cache/index.js';
import { createPlacer, type Placer, type PlacementPolicy, type Topology } from '../placement/index.js';
import { extentCount } from '../extent/index.js';
import { framedBytes } from '../shard/index.js';
import { VolumeEngine, type EngineVolume, type ExtentMapStore, type ShardPlacer } from '../volume/index.js';
import type { SimCodec } from './codec_gate.js';
import { SimTarget, SimTargets, type StoreEnv, type StoreEvent } from './faulty_store.js';
import type { Prng } from './prng.js';
import { Scheduler } from './scheduler.js';
import { ProcessClock, SimClock } from './sim_clock.js';
import { SimJournal, SimJournalWriter, type JournalBug, type JournalEnv, type ReplayRecord } from './sim_journal.js';
import { SimExtentMap, type CommitStage, type MapEnv } from './sim_map.js';
import type { Trace } from './trace.js';

/** Everything about a world that the seed decides before the first operation. */
export interface WorldConfig {
  readonly volume: EngineVolume;
  readonly zones: readonly string[];
  readonly targets: readonly { readonly name: string; readonly zone: string; readonly usedBytes: number }[];
  readonly zonesRequired: number;
  readonly durableShardsMin: number;
  readonly oldShardGraceMs: number;
  readonly dirtyBytesMax: number;
  readonly cacheBytesMax: number;
  /** 0: no background flusher; FLUSH, FUA and back-pressure publish. */
  readonly flushCheckMs: number;
  readonly flushAgeMs: number;
  /** Latency every store call may get, healthy or not. */
  readonly jitterMs: number;
  /** How long a dead target stays registered (its lease) before placement skips it. */
  readonly leaseLagMs: number;
  readonly mapLatencyMs: number;
  /** When a slow data shard read turns into a degraded read (hedgeNeverMs: never). */
  readonly shardReadHedgeMs: number;
  /** How long the cache retries a failed flush (0: no retries). */
  readonly flushRetryMs: number;
  /** Extents per map commit batch (etcd's is 100): small ones let a takeover land between batches. */
  readonly mapBatchExtents: number;
  /** Replicas of the volume's journal segments, r; 0: no journal (every flush publishes generations). */
  readonly journalReplicas: number;
  /** Latency of a journal request and of its reply, each up to this. */
  readonly journalLatencyMs: number;
  /** Group commit delay of a journal node's fsync, up to this (drawn per node). */
  readonly journalFsyncMs: number;
  /** Bytes of one journal segment: small ones fill, and the writer moves to a new one. */
  readonly journalSegmentBytes: number;
  /** Journaled data older than this is folded by the background flusher. */
  readonly foldAgeMs: number;
  /** The zone the frontend processes run in: their reads prefer it. Absent: no preference. */
  readonly frontendZone?: string;
}

/**
 * Options of a world's configuration that do not come from the seed.
 *
 * `clockedTimers`: the engine's read hedge and the cache's flush retries wait on the wall clock
 * (setTimeout, Date.now) today, not on their injected Clock, so the simulation cannot drive them:
 * it turns both off. With the patches that move them onto the Clock, set this to draw both from
 * the seed and simulate slow-shard hedging and flush retries too.
 */
export interface ConfigOptions {
  readonly clockedTimers?: boolean;
}

/**
 * A read hedge that never fires: the engine arms it with setTimeout (the wall clock), so it must
 * lie beyond any run, and below setTimeout's 2^31 - 1 ms limit (above it Node fires at once).
 */
export const hedgeNeverMs = 2_000_000_000;

const profiles: readonly Profile[] = [
  { k: 2, m: 1 },
  { k: 3, m: 2 },
  { k: 4, m: 2 },
  { k: 2, m: 2 },
  { k: 3, m: 1 },
  { k: 5, m: 3 },
];
/** Extent sizes: powers of two, and sizes whose shards do not end on a 4 KiB checksum block. */
const extentSizes: readonly number[] = [8192, 12288, 16384, 20000, 32768, 65536];

export function configFromSeed(rng: Prng, options: ConfigOptions = {}): WorldConfig {
  const config = configWithoutZone(rng, options);
  // Drawn after everything else, so it changes nothing else of a seed: half the seeds give the
  // frontend a zone, so its reads decode from shards there instead of reading another zone.
  const frontendZone = rng.chance(0.5) ? rng.pick(config.zones) : undefined;
  return frontendZone === undefined ? config : { ...config, frontendZone };
}

function configWithoutZone(rng: Prng, options: ConfigOptions): WorldConfig {
  const profile = rng.pick(profiles);
  const { k, m } = profile;
  const extentBytes = rng.pick(extentSizes);
  const extents = rng.range(3, 10);
  const shortTail = rng.chance(0.5) ? 1 + rng.int(extentBytes - 1) : 0;
  const sizeBytes = extents * extentBytes - shortTail;
  const zoneCount = rng.range(2, 4);
  const zones = ['a', 'b', 'c', 'd'].slice(0, zoneCount);
  const targetCount = Math.max(k + m, zoneCount) + rng.range(0, 3);
  const perZone = new Map<string, number>();
  const targets = Array.from({ length: targetCount }, (_, i) => {
    const zone = zones[i % zoneCount]!;
    const n = (perZone.get(zone) ?? 0) + 1;
    perZone.set(zone, n);
    // Different used bytes give the targets different weights in placement.
    return { name: `${zone}-${n}`, zone, usedBytes: rng.int(512) * 2 ** 30 };
  });
  const dirtyBytesMax = extentBytes * rng.range(1, 6);
  const config = {
    volume: { id: 'simvol', name: 'sim', sizeBytes, extentBytes, k, profile },
    zones,
    targets,
    zonesRequired: rng.range(1, Math.min(zoneCount, k + m)),
    durableShardsMin: rng.range(k + 1, k + m),
    oldShardGraceMs: rng.pick([0, 200, 2000, 30_000]),
    dirtyBytesMax,
    cacheBytesMax: dirtyBytesMax * rng.range(1, 3),
    flushCheckMs: rng.pick([0, 0, 100, 500]),
    flushAgeMs: rng.pick([200, 1000, 5000]),
    jitterMs: rng.pick([0, 1, 5]),
    leaseLagMs: rng.pick([0, 500, 3000]),
    mapLatencyMs: rng.pick([0, 0, 5, 50]),
    // Drawn last and only when asked, so turning clockedTimers on changes nothing else of a seed.
    shardReadHedgeMs: options.clockedTimers ? rng.pick([50, 300, 2000]) : hedgeNeverMs,
    flushRetryMs: options.clockedTimers ? rng.pick([0, 2000, 10_000]) : 0,
    // Drawn after everything else, so it changes nothing else of a seed.
    mapBatchExtents: rng.pick([2, 3, 100]),
  };
  // The journal, drawn after that for the same reason. Some seeds keep the journal-less path.
  const journalReplicas = rng.chance(0.6) ? Math.min(targetCount, Math.max(2, rng.pick([m + 1, m + 1, 2, 3]))) : 0;
  if (journalReplicas === 0) {
    return { ...config, journalReplicas, journalLatencyMs: 0, journalFsyncMs: 0, journalSegmentBytes: 0, foldAgeMs: 0 };
  }
  // A segment of 2 holds about one volume's worth of records before the writer moves on.
  const recordRoomBytes = sizeBytes + 4096;
  return {
    ...config,
    journalReplicas,
    journalLatencyMs: rng.pick([0, 1, 2, 5]),
    journalFsyncMs: rng.pick([0, 1, 3]),
    journalSegmentBytes: recordRoomBytes * rng.pick([2, 4, 32]),
    foldAgeMs: rng.pick([300, 2000, 10_000]),
  };
}

/**
 * Room a journal segment must have left for the next record, in bytes: a record holds at most
 * the volume's bytes (a flush journals the dirty ranges of partly written extents) and its
 * header; one more range entry per write would take 16 bytes of each, which the workload never
 * comes near.
 */
export function journalRecordRoomBytes(c: WorldConfig): number {
  return c.volume.sizeBytes + 4096;
}

export function describeConfig(c: WorldConfig): string {
  const v = c.volume;
  return (
    `profile ${formatProfile(v.profile)}, ${c.targets.length} targets in zones ${c.zones.join(',')} ` +
    `(zonesRequired ${c.zonesRequired}), volume ${v.sizeBytes} B in extents of ${v.extentBytes} B, ` +
    `durableShardsMin ${c.durableShardsMin}, grace ${c.oldShardGraceMs} ms, dirty max ${c.dirtyBytesMax} B, ` +
    `cache max ${c.cacheBytesMax} B, flusher ${c.flushCheckMs === 0 ? 'off' : `${c.flushCheckMs}/${c.flushAgeMs} ms`}, ` +
    `jitter ${c.jitterMs} ms, lease lag ${c.leaseLagMs} ms, commit latency ${c.mapLatencyMs} ms, commit batches of ${c.mapBatchExtents}` +
    (c.shardReadHedgeMs !== hedgeNeverMs ? `, read hedge ${c.shardReadHedgeMs} ms` : '') +
    (c.flushRetryMs > 0 ? `, flush retries ${c.flushRetryMs} ms` : '') +
    (c.journalReplicas > 0
      ? `, journal r=${c.journalReplicas} (latency ${c.journalLatencyMs} ms, fsync ${c.journalFsyncMs} ms, segments of ${c.journalSegmentBytes} B, fold age ${c.foldAgeMs} ms)`
      : '') +
    (c.frontendZone === undefined ? '' : `, frontend in zone ${c.frontendZone}`)
  );
}

/** One frontend process: alive until it crashes or is replaced. */
export class SimProcess {
  alive = true;
  readonly clock: ProcessClock;
  /** Resolves when the process dies. */
  readonly died: Promise<void>;
  private onDeath: () => void = () => undefined;

  constructor(
    readonly id: number,
    readonly epoch: number,
    clock: SimClock,
  ) {
    this.clock = new ProcessClock(clock);
    this.died = new Promise<void>((resolve) => (this.onDeath = resolve));
  }

  kill(): void {
    this.alive = false;
    this.clock.kill();
    this.onDeath();
  }
}

/** A writer attached to the volume: its engine, its cache, and the device clients use. */
export interface Frontend {
  readonly process: SimProcess;
  readonly engine: VolumeEngine;
  readonly cache: WriteBackCache;
  /** The cache's journal, when the world has one. */
  readonly journal: SimJournalWriter | undefined;
  device: BlockDevice;
}

/**
 * A reader opened on the published map, to check what a crash would reveal: with a journal, the
 * records an attach would replay are laid over it (a read-only cache), as the map and the
 * journal's disks were at one instant.
 */
export interface Reader {
  readonly process: SimProcess;
  readonly engine: VolumeEngine;
  /** The whole extent e as a crash now could reveal it. */
  readExtent(e: number): Promise<Uint8Array>;
}

/** Journal attaches a writer tries (one simulated second apart) before the run fails. */
export const journalAttachAttemptsMax = 120;

/** Store failure events kept for judging; older ones are dropped at each mark. */
export const storeEventsMax = 1_000_000;

export class World {
  readonly clock = new SimClock();
  readonly injected = new WeakSet<object>();
  readonly targets = new Map<string, SimTarget>();
  readonly map: SimExtentMap;
  readonly scheduler: Scheduler;
  readonly anomalies: string[] = [];
  /** Keys gone for good: wiped, or never stored before their generation was published. */
  readonly lost = new Set<string>();
  readonly policy: PlacementPolicy;
  private readonly storeEnv: StoreEnv;
  private events: StoreEvent[] = [];
  private eventSeq = 0;
  private topologyVersion = 0;
  private epochs = 0;
  private processIds = 0;
  private readonly processes: SimProcess[] = [];
  private faultIds = 0;
  private readonly slowTokens = new Map<string, number>();
  private readonly flakyTokens = new Map<string, number>();
  private mapToken = 0;
  /** The volume's journal, when the seed gives it one. */
  readonly journal: SimJournal | undefined;
  /** Extent seeds for the engines, from their own stream: the same seed draws the same ones. */
  private readonly seedSource: (() => number) | undefined;
  private readonly journalRng: Prng | undefined;
  private readonly journalTokens = new Map<string, number>();
  private readonly journalCrashMs = new Map<string, number>();
  /** Planted snapshot bugs the world carries out (planted_bugs.ts). */
  private readonly snapshotBugs: { readonly notRetained: boolean };
  /** Armed failpoint: the process dies at this stage of its next commit of journaled extents. */
  private commitCrash: { readonly process: SimProcess; readonly stage: CommitStage } | undefined;

  constructor(
    readonly config: WorldConfig,
    readonly codec: SimCodec,
    readonly trace: Trace,
    streams: { readonly store: Prng; readonly map: Prng; readonly journal?: Prng; readonly seeds?: Prng },
    journalBug?: JournalBug,
    options: { readonly skipEndToEndCheck?: boolean; readonly snapshotNotRetained?: boolean } = {},
  ) {
    this.snapshotBugs = { notRetained: options.snapshotNotRetained === true };
    const seeds = streams.seeds;
    if (seeds !== undefined) this.seedSource = () => seeds.nextU32() || 1;
    for (const t of config.targets) this.targets.set(t.name, new SimTarget(t.name, t.zone, t.usedBytes));
    this.scheduler = new Scheduler(this.clock, codec);
    this.policy = {
      k: config.volume.profile.k,
      m: config.volume.profile.m,
      zonesRequired: config.zonesRequired,
      targets: 'node',
    };
    this.storeEnv = {
      clock: this.clock,
      rng: streams.store,
      injected: this.injected,
      logFailure: (e) => this.logFailure(e),
      anomaly: (message) => this.anomaly(message),
      classifyMissing: (_target, key) =>
        this.lost.has(key) ? 'lost' : this.isPublished(key) ? 'published' : 'superseded',
      isPublished: (key) => this.isPublished(key),
      ...(options.skipEndToEndCheck === true ? { skipEndToEndCheck: true } : {}),
    };
    const mapEnv: MapEnv = {
      clock: this.clock,
      rng: streams.map,
      injected: this.injected,
      onCommit: (epoch, updates) => this.onCommit(epoch, updates),
      onRefused: (epoch, why) => this.trace.add(`  map: commit by epoch ${epoch} refused: ${why}`),
      failpoint: (epoch, stage, updates) => this.commitFailpoint(epoch, stage, updates),
    };
    this.map = new SimExtentMap(mapEnv);
    this.map.latencyMs = config.mapLatencyMs;
    this.map.batchExtentsMax = config.mapBatchExtents;
    if (config.journalReplicas > 0) {
      assert(streams.journal !== undefined, 'a journal needs its own stream');
      this.journalRng = streams.journal;
      const rng = streams.journal;
      const env: JournalEnv = {
        clock: this.clock,
        rng,
        injected: this.injected,
        trace: (line) => this.trace.add(line),
        anomaly: (message) => this.anomaly(message),
        lockEpoch: () => this.map.lockEpoch,
        nodeUp: (name) => this.targets.get(name)!.up,
        nodeSlowMs: (name) => this.targets.get(name)!.slowMs,
        liveNodes: () =>
          [...this.targets.values()].filter((t) => t.registeredUp).map((t) => ({ name: t.name, zone: t.zone })),
        degraded: () => this.topologyDegraded,
        crashNode: (name) => this.crashJournalNode(name),
        bug: journalBug,
      };
      this.journal = new SimJournal(
        env,
        {
          volume: config.volume.id,
          replicas: config.journalReplicas,
          latencyMs: config.journalLatencyMs,
          fsyncMs: config.journalFsyncMs,
          segmentBytes: config.journalSegmentBytes,
          rotateBytesLeftMin: journalRecordRoomBytes(config),
        },
        config.targets.map((t) => ({ name: t.name, zone: t.zone, fsyncMs: rng.int(config.journalFsyncMs + 1) })),
      );
    }
  }

  get k(): number {
    return this.config.volume.profile.k;
  }

  get m(): number {
    return this.config.volume.profile.m;
  }

  // ---- the event log the checker judges by ----

  private logFailure(e: Omit<StoreEvent, 'seq'>): void {
    assert(this.events.length < storeEventsMax, 'store failure log overflow');
    this.events.push({ ...e, seq: this.eventSeq++ });
  }

  private anomaly(message: string): void {
    this.anomalies.push(message);
    this.trace.add(`  ANOMALY: ${message}`);
  }

  /** A position in the failure log; failuresSince(mark) are the failures after it. */
  mark(): number {
    return this.eventSeq;
  }

  failuresSince(mark: number): StoreEvent[] {
    return this.events.filter((e) => e.seq >= mark);
  }

  /** Drops failures before `mark`: they can no longer justify anything. */
  forgetBefore(mark: number): void {
    this.events = this.events.filter((e) => e.seq >= mark);
  }

  // ---- the published map as the world sees it ----

  isPublished(key: string): boolean {
    const k = parseShardKey(key);
    if (k === undefined) return false;
    const holds = (rec: ExtentRecord | undefined): boolean =>
      rec !== undefined && rec.generation === k.generation && rec.shards[k.shard]?.key === key;
    if (holds(this.map.records.get(k.extent))) return true;
    for (const snap of this.snapshots.values()) if (holds(snap.records.get(k.extent))) return true;
    return false;
  }

  // ---- snapshots: saved copies of the published map ----

  /**
   * Snapshots of the volume: the published map at the moment each was cut, and the floor the
   * writer then stood at (VolumeEngineOptions.retained keeps what they reach).
   */
  readonly snapshots = new Map<string, { records: Map<number, ExtentRecord>; floor: number }>();

  /** Saves the published map as snapshot `name` (the writer has flushed and folded under its gate). */
  takeSnapshot(name: string, floor: number): void {
    assert(!this.snapshots.has(name), `snapshot ${name} exists`);
    this.snapshots.set(name, { records: new Map(this.map.records), floor });
    this.trace.add(`  snapshot ${name}: ${this.map.records.size} records, floor g${floor % 2 ** 32}`);
  }

  deleteSnapshot(name: string): void {
    this.snapshots.delete(name);
  }

  /** The volume's map becomes snapshot `name`'s (a rollback; no writer holds the volume). */
  rollbackTo(name: string): void {
    const snap = this.snapshots.get(name);
    assert(snap !== undefined, `no snapshot ${name}`);
    this.map.inner.records.clear();
    for (const [e, rec] of snap.records) this.map.inner.records.set(e, rec);
    this.trace.add(`  map: rolled back to snapshot ${name} (${snap.records.size} records)`);
  }

  /** The highest floor of the snapshots (what a writer attaching now would keep). */
  private snapshotFloor(): number {
    let floor = 0;
    for (const s of this.snapshots.values()) floor = Math.max(floor, s.floor);
    return floor;
  }

  /** A read-only engine over snapshot `name`'s records. */
  async openSnapshotReader(name: string): Promise<Reader> {
    const snap = this.snapshots.get(name);
    assert(snap !== undefined, `no snapshot ${name}`);
    const process = this.newProcess(0);
    const map: ExtentMapStore = {
      load: () => Promise.resolve(new Map(snap.records)),
      commit: () => Promise.reject(new Error('a snapshot is read-only')),
    };
    const opened = await this.scheduler.settle(() => VolumeEngine.open(this.engineOptions(process, map)), 60_000);
    if (!opened.ok) throw opened.error;
    const engine = opened.value;
    return { process, engine, readExtent: (e) => engine.readWhole(e) };
  }

  private onCommit(
    epoch: number,
    updates: readonly { readonly index: number; readonly record: ExtentRecord | null }[],
  ): void {
    const parts: string[] = [];
    for (const u of updates) {
      if (u.record === null) {
        parts.push(`${u.index}:hole`);
        continue;
      }
      const missing: number[] = [];
      u.record.shards.forEach((ref, i) => {
        if (this.targets.get(ref.target)?.keys.has(ref.key) !== true) {
          missing.push(i);
          this.lost.add(ref.key);
        }
      });
      const where = u.record.shards.map((s) => s.target).join(',');
      parts.push(
        `${u.index}:g${u.record.generation % 2 ** 32}@${where}${missing.length > 0 ? ` missing ${missing.join(',')}` : ''}`,
      );
    }
    this.trace.add(`  map: epoch ${epoch} published ${parts.join(' ')}`);
  }

  /** Shards of a record gone for good or corrupted: they count against its m. */
  damageOf(rec: ExtentRecord): number {
    let n = 0;
    for (const ref of rec.shards) {
      const t = this.targets.get(ref.target);
      if (t === undefined || !t.keys.has(ref.key) || t.corrupted.has(ref.key)) n += 1;
    }
    return n;
  }

  /** Published shards missing from their target without the world having lost them. */
  missingPublishedShards(): string[] {
    const out: string[] = [];
    const maps: [string, ReadonlyMap<number, ExtentRecord>][] = [['', this.map.records]];
    for (const [name, snap] of this.snapshots) maps.push([` of snapshot ${name}`, snap.records]);
    for (const [what, records] of maps)
      for (const [e, rec] of records) {
        rec.shards.forEach((ref, i) => {
          const t = this.targets.get(ref.target);
          if (t?.keys.has(ref.key) !== true && !this.lost.has(ref.key))
            out.push(`shard ${i} of extent ${e}${what} (${ref.key} on ${ref.target})`);
        });
      }
    return out;
  }

  // ---- topology and placement ----

  topology(): Topology {
    return {
      targets: [...this.targets.values()].map((t) => ({
        id: targetId(t.name),
        zone: zoneId(t.zone),
        kind: 'node' as const,
        capacityBytes: TiB,
        usedBytes: t.usedBytes,
        up: t.registeredUp,
      })),
    };
  }

  /** True when some target is down or deregistered: placement may rightly be refused. */
  get topologyDegraded(): boolean {
    for (const t of this.targets.values()) if (!t.up || !t.registeredUp) return true;
    return false;
  }

  /** The real zone-aware placer over the topology as it is registered now. */
  placer(): ShardPlacer {
    let version = -1;
    let placer: Placer | undefined;
    let refusal: string | undefined;
    return {
      place: (extent) => {
        if (version !== this.topologyVersion) {
          version = this.topologyVersion;
          try {
            placer = createPlacer(this.topology(), this.policy);
            refusal = undefined;
          } catch (err) {
            if (!(err instanceof PlacementError)) throw err;
            placer = undefined;
            refusal = err.message;
          }
        }
        if (placer === undefined) {
          const err = new PlacementError(refusal ?? 'no placer');
          if (this.topologyDegraded) this.injected.add(err);
          throw err;
        }
        return placer.place(this.config.volume.id, extent).map((p) => p.target);
      },
    };
  }

  private registered(t: SimTarget, up: boolean): void {
    if (t.registeredUp === up) return;
    t.registeredUp = up;
    this.topologyVersion += 1;
    this.trace.add(`  topology: ${t.name} ${up ? 'registered' : 'lease expired'}`);
  }

  private goDown(t: SimTarget, cause: string): void {
    t.downCauses.add(cause);
    this.clock.after(this.config.leaseLagMs, () => {
      if (!t.up) this.registered(t, false);
    });
  }

  private comeUp(t: SimTarget, cause: string): void {
    if (!t.downCauses.delete(cause)) return;
    if (t.up) {
      this.trace.add(`  fault over: ${t.name} is up`);
      this.registered(t, true);
    }
  }

  // ---- faults ----

  targetNames(): string[] {
    return [...this.targets.keys()];
  }

  crashTarget(name: string, durationMs: number): void {
    const t = this.targets.get(name)!;
    const cause = `crash #${++this.faultIds}`;
    this.goDown(t, cause);
    this.clock.after(durationMs, () => this.comeUp(t, cause));
    // The node's journal service dies with it: what it had not fsynced is gone.
    const node = this.journal?.nodes.get(name);
    if (node !== undefined) {
      const lost = node.crash(this.journalRng!, 0.5);
      if (lost.length > 0) this.trace.add(`  journal: node ${name} crashed before fsync of ${lost.join(', ')}`);
    }
  }

  // ---- journal faults ----

  /**
   * The next append journal node `name` receives is lost by a crash before its fsync (a torn
   * prefix of it stays on disk with probability tornP); the node is down for `durationMs`.
   */
  armJournalCrash(name: string, durationMs: number, tornP: number): void {
    const node = this.journal?.nodes.get(name);
    assert(node !== undefined, `no journal node ${name}`);
    node.crashOnAppend = { tornP };
    this.journalCrashMs.set(name, durationMs);
  }

  private crashJournalNode(name: string): void {
    const t = this.targets.get(name)!;
    const cause = `journal crash #${++this.faultIds}`;
    this.goDown(t, cause);
    this.clock.after(this.journalCrashMs.get(name) ?? 1000, () => this.comeUp(t, cause));
  }

  /** Journal node `name` is cut off from every frontend (its disk and fsyncs go on) for `durationMs`. */
  partitionJournalNode(name: string, durationMs: number): void {
    const node = this.journal!.nodes.get(name)!;
    const token = ++this.faultIds;
    node.unreachable = true;
    this.journalTokens.set(`partition ${name}`, token);
    this.clock.after(durationMs, () => {
      if (this.journalTokens.get(`partition ${name}`) !== token) return;
      node.unreachable = false;
      this.trace.add(`  fault over: journal node ${name} is reachable again`);
    });
  }

  /** Journal node `name` loses requests (and replies) with probability p for `durationMs`. */
  flakyJournalNode(name: string, p: number, durationMs: number): void {
    const node = this.journal!.nodes.get(name)!;
    const token = ++this.faultIds;
    node.flakyP = p;
    this.journalTokens.set(`flaky ${name}`, token);
    this.clock.after(durationMs, () => {
      if (this.journalTokens.get(`flaky ${name}`) !== token) return;
      node.flakyP = 0;
      this.trace.add(`  fault over: journal node ${name} is reliable again`);
    });
  }

  /** Arms a crash of `process` at `stage` of its next commit that publishes journaled extents (a fold). */
  armCommitCrash(process: SimProcess, stage: CommitStage): void {
    this.commitCrash = { process, stage };
  }

  disarmCommitCrash(): void {
    this.commitCrash = undefined;
  }

  private commitFailpoint(
    epoch: number,
    stage: CommitStage,
    updates: readonly { readonly index: number; readonly record: ExtentRecord | null }[],
  ): boolean {
    const armed = this.commitCrash;
    if (armed === undefined || armed.stage !== stage || armed.process.epoch !== epoch || !armed.process.alive)
      return false;
    if (!updates.some((u) => u.record?.journalLsn !== undefined)) return false;
    this.commitCrash = undefined;
    this.trace.add(
      `  failpoint: process p${armed.process.id} dies ${stage === 'before-commit' ? 'with its shards stored, before the commit of' : 'after the commit of, before trimming for'} extents ${updates.map((u) => u.index).join(',')}`,
    );
    armed.process.kill();
    return true;
  }

  loseZone(zone: string, durationMs: number): void {
    const cause = `zone ${zone} lost #${++this.faultIds}`;
    for (const t of this.targets.values()) {
      if (t.zone !== zone) continue;
      this.goDown(t, cause);
      this.clock.after(durationMs, () => this.comeUp(t, cause));
    }
  }

  slowTarget(name: string, slowMs: number, durationMs: number): void {
    const t = this.targets.get(name)!;
    const token = ++this.faultIds;
    t.slowMs = slowMs;
    this.slowTokens.set(name, token);
    this.clock.after(durationMs, () => {
      if (this.slowTokens.get(name) !== token) return;
      t.slowMs = 0;
      this.trace.add(`  fault over: ${name} is fast again`);
    });
  }

  flakyTarget(name: string, p: number, durationMs: number): void {
    const t = this.targets.get(name)!;
    const token = ++this.faultIds;
    t.flakyP = p;
    this.flakyTokens.set(name, token);
    this.clock.after(durationMs, () => {
      if (this.flakyTokens.get(name) !== token) return;
      t.flakyP = 0;
      this.trace.add(`  fault over: ${name} is reliable again`);
    });
  }

  flakyMap(beforeP: number, afterP: number, durationMs: number): void {
    const token = ++this.faultIds;
    this.mapToken = token;
    this.map.failBeforeP = beforeP;
    this.map.failAfterP = afterP;
    this.clock.after(durationMs, () => {
      if (this.mapToken !== token) return;
      this.map.failBeforeP = 0;
      this.map.failAfterP = 0;
      this.trace.add('  fault over: the extent map is reliable again');
    });
  }

  /** The writer's lease expires: nobody holds the lock until a frontend attaches again. */
  expireLease(): void {
    this.map.lockEpoch = null;
  }

  /**
   * A random stored, undamaged shard of a published generation that has fewer than m damaged
   * shards, or null when no shard may be damaged further.
   */
  private pickDamageable(rng: Prng): { e: number; rec: ExtentRecord; ref: ExtentShardRef; i: number } | null {
    const candidates: { e: number; rec: ExtentRecord }[] = [];
    for (const [e, rec] of this.map.records) if (this.damageOf(rec) < this.m) candidates.push({ e, rec });
    if (candidates.length === 0) return null;
    const { e, rec } = rng.pick(candidates);
    const healthy = rec.shards
      .map((ref, i) => ({ ref, i }))
      .filter(({ ref }) => {
        const t = this.targets.get(ref.target);
        return t !== undefined && t.keys.has(ref.key) && !t.corrupted.has(ref.key);
      });
    if (healthy.length === 0) return null;
    return { e, rec, ...rng.pick(healthy) };
  }

  /**
   * Flips one bit in a random stored shard of a published generation that has fewer than m
   * damaged shards. Returns what it did, or null when no shard may be damaged further.
   */
  corruptRandomShard(rng: Prng): string | null {
    const pick = this.pickDamageable(rng);
    if (pick === null) return null;
    const { e, rec, ref, i } = pick;
    const at = rng.int(framedBytes(rec.shardBytes));
    const bit = rng.int(8);
    this.targets.get(ref.target)!.corrupt(ref.key, at, bit);
    return `bit ${bit} of framed byte ${at} of shard ${i} of extent ${e} (${ref.key} on ${ref.target})`;
  }

  /**
   * Replaces a random shard (as corruptRandomShard() picks them) with other bytes that pass its
   * target's own checks, as a plain PUT under its key would. Returns what it did, or null.
   */
  async substituteRandomShard(rng: Prng): Promise<string | null> {
    const pick = this.pickDamageable(rng);
    if (pick === null) return null;
    const { e, rec, ref, i } = pick;
    const at = rng.int(Math.max(1, rec.shardBytes));
    await this.targets.get(ref.target)!.substitute(ref.key, at);
    return `shard ${i} of extent ${e} (${ref.key} on ${ref.target}) replaced by its bytes with byte ${at} changed, framed as a plain PUT`;
  }

  /**
   * Deletes a random shard (as corruptRandomShard() picks them) from its live target: a shard
   * that disappears while its node stays up. Returns what it did, or null.
   */
  async vanishRandomShard(rng: Prng): Promise<string | null> {
    const pick = this.pickDamageable(rng);
    if (pick === null) return null;
    const { e, ref, i } = pick;
    const t = this.targets.get(ref.target)!;
    await t.inner.delete(ref.key);
    t.keys.delete(ref.key);
    this.lost.add(ref.key);
    return `shard ${i} of extent ${e} (${ref.key}) deleted from ${ref.target}, which stays up`;
  }

  /**
   * Replaces the disk of a random target whose loss keeps every published generation (the
   * volume's and its snapshots') within m damaged shards. Returns the target's name, or null when none may be wiped.
   */
  wipeRandomTarget(rng: Prng): string | null {
    // Snapshots' records too: a generation only a snapshot holds is never rewritten, so its
    // damage only grows (no repair runs here); it must stay readable all the same.
    const records = [this.map.records, ...[...this.snapshots.values()].map((s) => s.records)];
    const allowed = this.targetNames().filter((name) => {
      for (const rec of records.flatMap((m) => [...m.values()])) {
        let extra = 0;
        for (const ref of rec.shards) {
          const t = this.targets.get(ref.target)!;
          if (ref.target === name && t.keys.has(ref.key) && !t.corrupted.has(ref.key)) extra += 1;
        }
        if (this.damageOf(rec) + extra > this.m) return false;
      }
      return true;
    });
    if (allowed.length === 0) return null;
    const name = rng.pick(allowed);
    for (const key of this.targets.get(name)!.wipe()) this.lost.add(key);
    return name;
  }

  /** Ends every transient fault at once: targets up and registered, fast, reliable; map reliable. */
  healAll(): void {
    for (const t of this.targets.values()) {
      t.downCauses.clear();
      t.flakyP = 0;
      t.slowMs = 0;
      this.registered(t, true);
    }
    this.slowTokens.clear();
    this.flakyTokens.clear();
    this.mapToken = 0;
    this.map.failBeforeP = 0;
    this.map.failAfterP = 0;
    for (const node of this.journal?.nodes.values() ?? []) {
      node.unreachable = false;
      node.flakyP = 0;
      node.crashOnAppend = undefined;
    }
    this.journalTokens.clear();
  }

  // ---- frontends ----

  private newProcess(epoch: number): SimProcess {
    const p = new SimProcess(++this.processIds, epoch, this.clock);
    this.processes.push(p);
    return p;
  }

  private engineOptions(process: SimProcess, map?: ExtentMapStore) {
    const c = this.config;
    return {
      volume: c.volume,
      map: map ?? this.map.viewFor(process.epoch, process),
      targets: new SimTargets(this.storeEnv, this.targets, process, { jitterMs: c.jitterMs }),
      placer: this.placer(),
      pool: this.codec,
      epoch: process.epoch,
      ...(c.frontendZone === undefined ? {} : { zone: c.frontendZone }),
      durableShardsMin: c.durableShardsMin,
      shardReadHedgeMs: c.shardReadHedgeMs,
      oldShardGraceMs: c.oldShardGraceMs,
      // What a snapshot reaches stays for gc (none runs here): unless the planted bug says not.
      retained: (rec: ExtentRecord) => !this.snapshotBugs.notRetained && rec.generation <= this.snapshotFloor(),
      clock: process.clock,
      log: (line: string) => this.trace.add(`  [p${process.id}] ${line}`),
      ...(this.seedSource === undefined ? {} : { seedSource: this.seedSource }),
    };
  }

  /**
   * Takes the lock at a new epoch and opens an engine and cache on the published map; with a
   * journal, attaches it (fencing the writer before, replaying what it left into the new cache)
   * before the cache serves anything. The writer replaced is not killed here: the caller decides.
   */
  async attach(): Promise<Frontend> {
    const epoch = ++this.epochs;
    assert(epoch < 2 ** 21, 'too many epochs for one simulation');
    const process = this.newProcess(epoch);
    this.map.lockEpoch = epoch;
    const opened = await this.scheduler.settle(() => VolumeEngine.open(this.engineOptions(process)), 60_000);
    if (!opened.ok) throw opened.error;
    const engine = opened.value;
    const c = this.config;
    const log = (line: string) => this.trace.add(`  [p${process.id}] ${line}`);
    const options = {
      dirtyBytesMax: c.dirtyBytesMax,
      cacheBytesMax: c.cacheBytesMax,
      flushAgeMs: c.flushAgeMs,
      flushCheckMs: c.flushCheckMs,
      // 0 unless clockedTimers: the retry loop waits on Date.now() and setTimeout, not on its
      // Clock, so in the simulation it would wait on the wall clock (and look hung).
      flushRetryMs: c.flushRetryMs,
      clock: process.clock,
      log,
    };
    if (this.journal === undefined) {
      const cache = new WriteBackCache(engine, options);
      this.trace.add(`  attach: process p${process.id} holds the lock at epoch ${epoch}`);
      return { process, engine, cache, journal: undefined, device: cache };
    }
    const { writer, replay } = await this.openJournal(process, engine, log);
    const cache = new WriteBackCache(
      { ...this.backendOf(engine), journal: writer },
      { ...options, foldAgeMs: c.foldAgeMs },
    );
    let taken = 0;
    for (const r of replay) taken += cache.replayed(r.lsn, r.writes);
    writer.foldAll = () => cache.foldAll();
    this.trace.add(
      `  attach: process p${process.id} holds the lock at epoch ${epoch}; journal replayed lsns ${replay.map((r) => r.lsn).join(',') || 'none'} (${taken} bytes not yet folded), next lsn ${writer.nextLsn}`,
    );
    return { process, engine, cache, journal: writer, device: cache };
  }

  /** The engine as the cache's backend, with the journal LSN of each published generation. */
  private backendOf(engine: VolumeEngine): CacheBackend {
    return {
      geometry: engine.geometry,
      isHole: (e) => engine.isHole(e),
      versionOf: (e) => engine.versionOf(e),
      readRange: (e, o, l) => engine.readRange(e, o, l),
      readWhole: (e) => engine.readWhole(e),
      persist: (images) => engine.persist(images),
      publishedLsn: (e) => engine.record(e)?.journalLsn,
      zeroBlocks: (e) => engine.zeroBlocks(e),
    };
  }

  /**
   * Attaches the journal for `process`, again a simulated second later while faults keep every
   * replica of some segment (or r live nodes) out of reach. A failure the world did not cause
   * ends the run.
   */
  private async openJournal(
    process: SimProcess,
    engine: VolumeEngine,
    log: (line: string) => void,
  ): Promise<{ writer: SimJournalWriter; replay: ReplayRecord[] }> {
    const journal = this.journal!;
    let publishedLsnMax = 0;
    for (let e = 0; e < extentCount(this.config.volume); e++)
      publishedLsnMax = Math.max(publishedLsnMax, engine.record(e)?.journalLsn ?? 0);
    for (let attempt = 1; ; attempt++) {
      const out = await this.scheduler.settle(
        () => SimJournalWriter.open(journal, process.epoch, process, process.clock, log, publishedLsnMax),
        600_000,
      );
      if (out.ok) return out.value;
      if ('hung' in out) throw out.error;
      const err = out.error;
      if (!this.injected.has(err as object) || err instanceof FencedError || attempt >= journalAttachAttemptsMax)
        throw err;
      this.trace.add(`  attach: journal not ready (${errorMessage(err)}); again in 1000 ms`);
      await this.scheduler.advance(1000);
    }
  }

  /** A read-only engine (epoch 0: it never persists) on the map as published now, with the journal laid over. */
  async openReader(): Promise<Reader> {
    const process = this.newProcess(0);
    const view = this.map.viewFor(0, process);
    let replay: ReplayRecord[] = [];
    const journal = this.journal;
    // The map and the journal's disks at one instant: the journal is read as the map is loaded.
    const map: ExtentMapStore = {
      load: () => {
        if (journal !== undefined) replay = journal.durableView(this.journalRng!);
        return view.load();
      },
      commit: (updates) => view.commit(updates),
    };
    const opened = await this.scheduler.settle(() => VolumeEngine.open(this.engineOptions(process, map)), 60_000);
    if (!opened.ok) throw opened.error;
    const engine = opened.value;
    if (journal === undefined) return { process, engine, readExtent: (e) => engine.readWhole(e) };
    const cache = new WriteBackCache(this.backendOf(engine), {
      readOnly: true,
      dirtyBytesMax: this.config.dirtyBytesMax,
      cacheBytesMax: this.config.cacheBytesMax,
      flushCheckMs: 0,
      clock: process.clock,
    });
    for (const r of replay) cache.replayed(r.lsn, r.writes);
    const { extentBytes, sizeBytes } = this.config.volume;
    return {
      process,
      engine,
      readExtent: (e) => cache.read(e * extentBytes, Math.min(extentBytes, sizeBytes - e * extentBytes)),
    };
  }

  /** Stops every process and lets the codec finish what it holds, so nothing outlives the run. */
  async shutdown(): Promise<void> {
    for (const p of this.processes) p.kill();
    await this.scheduler.releaseAll();
  }
}
