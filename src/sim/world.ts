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
 * What it leaves out: repair (the engine only reports degraded extents), more than one
 * concurrent writer (a replaced writer is dead, not a zombie that keeps serving clients),
 * network partitions between a frontend and some targets only.
 */
import {
  PlacementError,
  TiB,
  assert,
  formatProfile,
  targetId,
  zoneId,
  type BlockDevice,
  type ExtentRecord,
  type Profile,
} from '../core/index.js';
import { WriteBackCache } from '../cache/index.js';
import { createPlacer, type Placer, type PlacementPolicy, type Topology } from '../placement/index.js';
import { framedBytes } from '../shard/index.js';
import { VolumeEngine, type EngineVolume, type ShardPlacer } from '../volume/index.js';
import { parseShardKey } from './checker.js';
import type { SimCodec } from './codec_gate.js';
import { SimTarget, SimTargets, type StoreEnv, type StoreEvent } from './faulty_store.js';
import type { Prng } from './prng.js';
import { Scheduler } from './scheduler.js';
import { ProcessClock, SimClock } from './sim_clock.js';
import { SimExtentMap, type MapEnv } from './sim_map.js';
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
  return {
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
    (c.flushRetryMs > 0 ? `, flush retries ${c.flushRetryMs} ms` : '')
  );
}

/** One frontend process: alive until it crashes or is replaced. */
export class SimProcess {
  alive = true;
  readonly clock: ProcessClock;

  constructor(
    readonly id: number,
    readonly epoch: number,
    clock: SimClock,
  ) {
    this.clock = new ProcessClock(clock);
  }

  kill(): void {
    this.alive = false;
    this.clock.kill();
  }
}

/** A writer attached to the volume: its engine, its cache, and the device clients use. */
export interface Frontend {
  readonly process: SimProcess;
  readonly engine: VolumeEngine;
  readonly cache: WriteBackCache;
  device: BlockDevice;
}

/** A reader opened on the published map with no cache, to check what a crash would reveal. */
export interface Reader {
  readonly process: SimProcess;
  readonly engine: VolumeEngine;
}

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

  constructor(
    readonly config: WorldConfig,
    readonly codec: SimCodec,
    readonly trace: Trace,
    streams: { readonly store: Prng; readonly map: Prng },
  ) {
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
    };
    const mapEnv: MapEnv = {
      clock: this.clock,
      rng: streams.map,
      injected: this.injected,
      onCommit: (epoch, updates) => this.onCommit(epoch, updates),
      onRefused: (epoch, why) => this.trace.add(`  map: commit by epoch ${epoch} refused: ${why}`),
    };
    this.map = new SimExtentMap(mapEnv);
    this.map.latencyMs = config.mapLatencyMs;
    this.map.batchExtentsMax = config.mapBatchExtents;
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
    const rec = this.map.records.get(k.extent);
    return rec !== undefined && rec.generation === k.generation && rec.shards[k.shard]?.key === key;
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
    for (const [e, rec] of this.map.records) {
      rec.shards.forEach((ref, i) => {
        const t = this.targets.get(ref.target);
        if (t?.keys.has(ref.key) !== true && !this.lost.has(ref.key))
          out.push(`shard ${i} of extent ${e} (${ref.key} on ${ref.target})`);
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
   * Flips one bit in a random stored shard of a published generation that has fewer than m
   * damaged shards. Returns what it did, or null when no shard may be damaged further.
   */
  corruptRandomShard(rng: Prng): string | null {
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
    const { ref, i } = rng.pick(healthy);
    const at = rng.int(framedBytes(rec.shardBytes));
    const bit = rng.int(8);
    this.targets.get(ref.target)!.corrupt(ref.key, at, bit);
    return `bit ${bit} of framed byte ${at} of shard ${i} of extent ${e} (${ref.key} on ${ref.target})`;
  }

  /**
   * Replaces the disk of a random target whose loss keeps every published generation within m
   * damaged shards. Returns the target's name, or null when none may be wiped.
   */
  wipeRandomTarget(rng: Prng): string | null {
    const allowed = this.targetNames().filter((name) => {
      for (const rec of this.map.records.values()) {
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
  }

  // ---- frontends ----

  private newProcess(epoch: number): SimProcess {
    const p = new SimProcess(++this.processIds, epoch, this.clock);
    this.processes.push(p);
    return p;
  }

  private engineOptions(process: SimProcess) {
    const c = this.config;
    return {
      volume: c.volume,
      map: this.map.viewFor(process.epoch, process),
      targets: new SimTargets(this.storeEnv, this.targets, process, { jitterMs: c.jitterMs }),
      placer: this.placer(),
      pool: this.codec,
      epoch: process.epoch,
      durableShardsMin: c.durableShardsMin,
      shardReadHedgeMs: c.shardReadHedgeMs,
      oldShardGraceMs: c.oldShardGraceMs,
      clock: process.clock,
      log: (line: string) => this.trace.add(`  [p${process.id}] ${line}`),
    };
  }

  /** Takes the lock at a new epoch and opens an engine and cache on the published map. */
  async attach(): Promise<Frontend> {
    const epoch = ++this.epochs;
    assert(epoch < 2 ** 21, 'too many epochs for one simulation');
    const process = this.newProcess(epoch);
    this.map.lockEpoch = epoch;
    const opened = await this.scheduler.settle(() => VolumeEngine.open(this.engineOptions(process)), 60_000);
    if (!opened.ok) throw opened.error;
    const engine = opened.value;
    const c = this.config;
    const cache = new WriteBackCache(engine, {
      dirtyBytesMax: c.dirtyBytesMax,
      cacheBytesMax: c.cacheBytesMax,
      flushAgeMs: c.flushAgeMs,
      flushCheckMs: c.flushCheckMs,
      // 0 unless clockedTimers: the retry loop waits on Date.now() and setTimeout, not on its
      // Clock, so in the simulation it would wait on the wall clock (and look hung).
      flushRetryMs: c.flushRetryMs,
      clock: process.clock,
      log: (line) => this.trace.add(`  [p${process.id}] ${line}`),
    });
    this.trace.add(`  attach: process p${process.id} holds the lock at epoch ${epoch}`);
    return { process, engine, cache, device: cache };
  }

  /** A read-only engine (epoch 0: it never persists) on the map as published now. */
  async openReader(): Promise<Reader> {
    const process = this.newProcess(0);
    const opened = await this.scheduler.settle(() => VolumeEngine.open(this.engineOptions(process)), 60_000);
    if (!opened.ok) throw opened.error;
    return { process, engine: opened.value };
  }

  /** Stops every process and lets the codec finish what it holds, so nothing outlives the run. */
  async shutdown(): Promise<void> {
    for (const p of this.processes) p.kill();
    await this.scheduler.releaseAll();
  }
}
