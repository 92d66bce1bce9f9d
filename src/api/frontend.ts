/**
 * The frontend's volumes: an ExportProvider that the NBD server asks for exports by name.
 *
 * Opening a volume for writing takes its etcd lock (fencing epoch), loads its extent map, and
 * builds one engine and one write-back cache that every connection to the volume shares; the
 * last connection to close flushes the cache and releases the lock. Read-only opens take no lock.
 * Targets and placement follow the live topology (re-read every few seconds), so a node that goes
 * down stops receiving new shards and one that joins starts to.
 */
import {
  CairnError,
  DiskFullError,
  InvalidArgumentError,
  UnavailableError,
  errorMessage,
  formatBytes,
  formatProfile,
  type BlockDevice,
  type ExportInfo,
  type ExportProvider,
  type ShardStore,
} from '../core/index.js';
import type { CodecPool } from '../codec/index.js';
import { WriteBackCache, type WriteBackCacheOptions } from '../cache/index.js';
import {
  NotFoundError,
  VolumeLockedError,
  decodeExtent,
  keys,
  type EtcdMeta,
  type ExtentRecord,
  type TargetRecord,
  type VolumeLock,
  type VolumeRecord,
} from '../meta/index.js';
import { createPlacer, type Placer, type Topology } from '../placement/index.js';
import { VolumeEngine, type ExtentMapStore, type ShardPlacer, type TargetStores } from '../volume/index.js';
import { readTopology } from './cluster.js';
import { assessExtentMap, livenessOf, type ExtentMapHealth } from './health.js';
import { storeForTarget, type SecretSource } from './stores.js';
import { policyOf } from './volumes.js';

/** How often targets and topology are re-read from etcd. */
export const topologyRefreshMs = 2_000;
/**
 * How long a volume stays attached after its last connection closes. Clients such as nbdcopy
 * and qemu-img open several connections one after another; re-attaching for each (lock, map
 * load) would be slow, and the lock would bounce between them.
 */
export const detachLingerMs = 1_500;
/**
 * How long a target that refused a shard put (507 disk full, or unreachable) is left out of this
 * frontend's placement. Longer than a flush's retry window (10 s), so the retry goes elsewhere.
 */
export const refusedTargetAvoidMs = 30_000;
/** How long an attach waits for another frontend's lock: its lease TTL (10 s) and some margin. */
export const lockWaitMsDefault = 12_000;
const lockPollMs = 250;

export interface FrontendOptions {
  readonly meta: EtcdMeta;
  readonly pool: CodecPool;
  readonly secrets: SecretSource;
  /** Who this frontend is, written into volume locks: host and pid. */
  readonly owner: string;
  /** Serve every volume read-only. */
  readonly readOnly?: boolean;
  /** Take volumes over from another frontend (new epoch) instead of waiting for its lease. */
  readonly forceTakeover?: boolean;
  /** How long to wait for another frontend's lock to expire before refusing. */
  readonly lockWaitMs?: number;
  readonly cache?: Omit<WriteBackCacheOptions, 'readOnly' | 'log'>;
  readonly log?: (line: string) => void;
  /** Told when each persist of a volume's dirty extents starts; the result is called when it ends (metrics). */
  readonly onFlush?: (volume: string, extents: number) => (ok: boolean) => void;
}

/** Shard stores for every registered target, refreshed from etcd. */
class LiveTargets implements TargetStores {
  private stores = new Map<string, { record: TargetRecord; store: ShardStore }>();
  private refreshedAt = 0;

  constructor(
    private readonly meta: EtcdMeta,
    private readonly secrets: SecretSource,
  ) {}

  async refresh(): Promise<void> {
    const records = await this.meta.listTargets();
    const next = new Map<string, { record: TargetRecord; store: ShardStore }>();
    for (const record of records) {
      const old = this.stores.get(record.name);
      if (old !== undefined && JSON.stringify(old.record) === JSON.stringify(record)) next.set(record.name, old);
      else {
        old?.store.close?.();
        next.set(record.name, { record, store: storeForTarget(record, this.secrets) });
      }
    }
    for (const [name, old] of this.stores) if (!next.has(name)) old.store.close?.();
    this.stores = next;
    this.refreshedAt = Date.now();
  }

  store(target: string): ShardStore {
    const entry = this.stores.get(target);
    if (entry === undefined)
      throw new UnavailableError(
        `Shard target "${target}" is not registered (targets last read ${Date.now() - this.refreshedAt} ms ago)`,
      );
    return entry.store;
  }

  close(): void {
    for (const { store } of this.stores.values()) store.close?.();
    this.stores.clear();
  }
}

/** Placement over the live topology for one volume. */
class LivePlacer implements ShardPlacer {
  private placer: Placer | undefined;
  private lastError: unknown;
  private topology: Topology | undefined;
  /** Targets that refused a shard put lately, until when (ms) placement leaves them out. */
  private readonly avoided = new Map<string, number>();

  constructor(
    private readonly meta: EtcdMeta,
    private readonly volume: VolumeRecord,
  ) {}

  async refresh(): Promise<void> {
    try {
      this.topology = await readTopology(this.meta);
      this.rebuild();
    } catch (err) {
      // Keep placing with the last good topology only if there is none to replace it: a policy
      // that cannot be met now must fail writes loudly, not place on stale targets.
      this.topology = undefined;
      this.placer = undefined;
      this.lastError = err;
    }
  }

  /** A full disk (507) or an unreachable node: leave it out of placement for a while. */
  refused(target: string, err: unknown): void {
    if (!(err instanceof DiskFullError || err instanceof UnavailableError)) return;
    this.avoided.set(target, Date.now() + refusedTargetAvoidMs);
    if (this.topology !== undefined) this.rebuild();
  }

  /** A placer over the topology minus avoided targets; over the whole topology if that cannot meet the policy. */
  private rebuild(): void {
    const topology = this.topology;
    if (topology === undefined) return;
    const now = Date.now();
    for (const [t, until] of this.avoided) if (until <= now) this.avoided.delete(t);
    const policy = policyOf(this.volume);
    if (this.avoided.size > 0) {
      try {
        this.placer = createPlacer(
          { targets: topology.targets.map((t) => (this.avoided.has(t.id) ? { ...t, up: false } : t)) },
          policy,
        );
        this.lastError = undefined;
        return;
      } catch {
        // Too few targets left without the avoided ones: place over all of them.
      }
    }
    try {
      this.placer = createPlacer(topology, policy);
      this.lastError = undefined;
    } catch (err) {
      this.placer = undefined;
      this.lastError = err;
    }
  }

  place(extent: number): readonly string[] {
    if (this.placer === undefined) {
      throw new UnavailableError(
        `Cannot place extent ${extent} of volume "${this.volume.name}": ${errorMessage(this.lastError ?? 'topology not read yet')}`,
      );
    }
    return this.placer.place(this.volume.id, extent).map((p) => p.target);
  }
}

interface OpenVolume {
  readonly record: VolumeRecord;
  readonly readOnly: boolean;
  readonly cache: WriteBackCache;
  readonly engine: VolumeEngine;
  readonly lock: VolumeLock | undefined;
  readonly stopRefresh: () => void;
  handles: number;
  linger: NodeJS.Timeout | undefined;
  /** Set once detach() started: the volume is never reused, re-armed or detached again. */
  detaching: Promise<void> | undefined;
}

export class VolumeFrontend implements ExportProvider {
  private readonly open_ = new Map<string, Promise<OpenVolume>>();
  /** Volumes being detached: an open of the same name waits for the detach to finish. */
  private readonly closing = new Map<string, Promise<void>>();
  private readonly targets: LiveTargets;
  private readonly log: (line: string) => void;

  constructor(private readonly options: FrontendOptions) {
    this.targets = new LiveTargets(options.meta, options.secrets);
    this.log = options.log ?? (() => undefined);
  }

  private describe(v: VolumeRecord): ExportInfo {
    return {
      name: v.name,
      sizeBytes: v.sizeBytes,
      description: `Cairn volume ${v.name}: ${formatBytes(v.sizeBytes)}, ${formatProfile(v.profile)}, extents of ${formatBytes(v.extentBytes)}`,
    };
  }

  async list(): Promise<ExportInfo[]> {
    return (await this.options.meta.listVolumes()).map((v) => this.describe(v));
  }

  async info(name: string): Promise<ExportInfo | null> {
    const v = await this.options.meta.getVolume(name);
    return v === null ? null : this.describe(v);
  }

  async open(
    name: string,
    options: { readonly readOnly: boolean },
  ): Promise<{ device: BlockDevice; close(): Promise<void> }> {
    const readOnly = options.readOnly || (this.options.readOnly ?? false);
    await this.closing.get(name);
    let pending = this.open_.get(name);
    if (pending === undefined) {
      pending = this.openVolume(name, readOnly);
      this.open_.set(name, pending);
      pending.catch(() => this.open_.delete(name));
    }
    const vol = await pending;
    if (!readOnly && vol.readOnly) {
      throw new InvalidArgumentError(
        `Volume "${name}" is attached read-only on this frontend; disconnect its readers to attach it for writing`,
      );
    }
    vol.handles += 1;
    clearTimeout(vol.linger);
    vol.linger = undefined;
    let closed = false;
    return {
      device: vol.cache,
      close: async () => {
        if (closed) return;
        closed = true;
        vol.handles -= 1;
        if (vol.handles > 0) return;
        // Flush now, so a client that disconnects after writing has its data durable at once;
        // detach (release the lock) only after the linger period.
        await vol.cache
          .flush()
          .catch((err: unknown) => this.log(`volume ${name}: flush at disconnect failed: ${errorMessage(err)}`));
        if (vol.handles > 0 || vol.detaching !== undefined) return;
        clearTimeout(vol.linger);
        vol.linger = setTimeout(() => {
          if (vol.handles === 0) void this.detach(name, vol);
        }, detachLingerMs);
        vol.linger.unref();
      },
    };
  }

  private async openVolume(name: string, readOnly: boolean): Promise<OpenVolume> {
    const { meta, pool } = this.options;
    const record = await meta.getVolume(name);
    if (record === null) throw new NotFoundError(`No volume named "${name}"`);
    await this.targets.refresh();
    const placer = new LivePlacer(meta, record);
    await placer.refresh();
    const lock = readOnly
      ? undefined
      : await meta.acquireLock(name, this.options.owner, { takeover: this.options.forceTakeover ?? false });
    try {
      const map: ExtentMapStore = {
        load: () => meta.listExtents(record.id),
        commit: async (updates) => {
          if (lock === undefined) throw new InvalidArgumentError(`Volume "${name}" is attached read-only`);
          await meta.commitExtents(lock, record.id, updates);
        },
      };
      const engine = await VolumeEngine.open({
        volume: {
          id: record.id,
          name: record.name,
          sizeBytes: record.sizeBytes,
          extentBytes: record.extentBytes,
          k: record.profile.k,
          profile: record.profile,
        },
        map,
        targets: this.targets,
        placer,
        pool,
        epoch: lock?.epoch ?? 0,
        ...(record.durableShardsMin === undefined ? {} : { durableShardsMin: record.durableShardsMin }),
        log: this.log,
      });
      const cache = new WriteBackCache(
        {
          geometry: engine.geometry,
          isHole: (e) => engine.isHole(e),
          versionOf: (e) => engine.versionOf(e),
          readRange: (e, o, l) => engine.readRange(e, o, l),
          readWhole: (e) => engine.readWhole(e),
          persist: async (images) => {
            const done = this.options.onFlush?.(name, images.length);
            try {
              await engine.persist(images);
              done?.(true);
            } catch (err) {
              done?.(false);
              throw err;
            }
          },
        },
        { ...this.options.cache, readOnly, log: (line) => this.log(`volume ${name}: ${line}`) },
      );
      // Repair publishes moved shards of a generation this engine holds; follow it.
      const watcher = await meta.client
        .watch()
        .prefix(keys.extentsPrefix(record.id))
        .create()
        .catch(() => undefined);
      watcher?.on('put', (kv) => {
        try {
          const key = kv.key.toString();
          const index = Number(key.slice(keys.extentsPrefix(record.id).length));
          if (engine.adoptRepaired(index, decodeExtent(key, kv.value.toString())))
            this.log(`volume ${name}: extent ${index} shards moved by repair`);
        } catch (err) {
          this.log(`volume ${name}: ignoring a bad extent record: ${errorMessage(err)}`);
        }
      });
      const timer = setInterval(() => {
        Promise.all([this.targets.refresh(), placer.refresh()]).catch((err: unknown) =>
          this.log(`cannot refresh topology: ${errorMessage(err)}`),
        );
      }, topologyRefreshMs);
      timer.unref();
      lock?.lost.then((err) => this.log(`volume ${name}: ${errorMessage(err)}`)).catch(() => undefined);
      this.log(
        `attached volume ${name} ${readOnly ? 'read-only' : `for writing (epoch ${lock?.epoch})`}; ${engine.writtenExtents} extents written`,
      );
      return {
        record,
        readOnly,
        cache,
        engine,
        lock,
        stopRefresh: () => {
          clearInterval(timer);
          void watcher?.cancel();
        },
        handles: 0,
        linger: undefined,
        detaching: undefined,
      };
    } catch (err) {
      await lock?.release();
      throw err;
    }
  }

  /**
   * Takes the volume's write lock. When another frontend holds it, waits (bounded) for its lease
   * to expire, as after that frontend died; --force-takeover takes it at once instead.
   */
  private async acquireWaiting(name: string): Promise<VolumeLock> {
    const deadline = Date.now() + (this.options.lockWaitMs ?? lockWaitMsDefault);
    let told = false;
    for (;;) {
      try {
        return await this.options.meta.acquireLock(name, this.options.owner, {
          takeover: this.options.forceTakeover ?? false,
        });
      } catch (err) {
        if (!(err instanceof VolumeLockedError) || Date.now() + lockPollMs > deadline) throw err;
        if (!told)
          this.log(
            `volume ${name}: ${errorMessage(err)}; waiting up to ${this.options.lockWaitMs ?? lockWaitMsDefault} ms for its lease`,
          );
        told = true;
        await new Promise((r) => setTimeout(r, lockPollMs));
      }
    }
  }

  private detach(name: string, vol: OpenVolume): Promise<void> {
    if (vol.detaching !== undefined) return vol.detaching;
    const done = this.closeVolume(name, vol).finally(() => {
      if (this.closing.get(name) === done) this.closing.delete(name);
    });
    vol.detaching = done;
    this.closing.set(name, done);
    return done;
  }

  private async closeVolume(name: string, vol: OpenVolume): Promise<void> {
    this.open_.delete(name);
    clearTimeout(vol.linger);
    vol.stopRefresh();
    try {
      await vol.cache.close();
    } catch (err) {
      this.log(`volume ${name}: final flush failed, unflushed writes are lost: ${errorMessage(err)}`);
    }
    await vol.engine.close();
    await vol.lock?.release();
    this.log(`detached volume ${name}`);
  }

  /** Flushes and detaches every open volume. */
  async close(): Promise<void> {
    const all = [...this.open_.entries()];
    await Promise.allSettled([...this.closing.values()]);
    await Promise.allSettled(
      all.map(async ([name, p]) => {
        const vol = await p;
        vol.handles = 0;
        await this.detach(name, vol);
      }),
    );
    this.targets.close();
  }

  /**
   * Open volumes and their cache state, for status output and metrics. Volumes still attaching
   * (an attach may wait seconds for a lock) are left out rather than waited for. Given the
   * topology, volumes attached for writing also get their health from the engine's extent map
   * (src/api/health.ts); read-only ones are left to their writer.
   */
  async status(options: { readonly topology?: Topology } = {}): Promise<
    {
      name: string;
      readOnly: boolean;
      handles: number;
      dirtyBytes: number;
      cachedBytes: number;
      degradedExtents: number;
      health?: ExtentMapHealth;
    }[]
  > {
    const liveness = options.topology === undefined ? undefined : livenessOf(options.topology);
    const out = [];
    for (const p of this.open_.values()) {
      // A settled promise wins the race against the already-resolved undefined; a pending one loses.
      const v = await Promise.race([p, Promise.resolve(undefined)]).catch(() => undefined);
      if (v === undefined) continue;
      out.push({
        name: v.record.name,
        readOnly: v.readOnly,
        handles: v.handles,
        dirtyBytes: v.cache.dirtyBytes,
        cachedBytes: v.cache.cachedBytes,
        degradedExtents: v.engine.degraded.size,
        ...(liveness === undefined || v.readOnly
          ? {}
          : {
              health: assessExtentMap({
                sizeBytes: v.record.sizeBytes,
                extentBytes: v.record.extentBytes,
                profile: v.record.profile,
                extents: publishedExtents(v.engine),
                liveness,
                readDegraded: v.engine.degraded,
              }),
            }),
      });
    }
    return out;
  }
}

/** The engine's published records in extent order; stops once every written extent was seen. */
function* publishedExtents(engine: VolumeEngine): Generator<[number, ExtentRecord]> {
  const count = Math.ceil(engine.volume.sizeBytes / engine.volume.extentBytes);
  let left = engine.writtenExtents;
  for (let e = 0; e < count && left > 0; e++) {
    const record = engine.record(e);
    if (record === undefined) continue;
    left -= 1;
    yield [e, record];
  }
}

export function isNotFound(err: unknown): boolean {
  return err instanceof CairnError && err.code === 'ENOTFOUND';
}
