/**
 * The frontend's volumes: an ExportProvider that the NBD server asks for exports by name.
 *
 * Opening a volume for writing takes its etcd lock (fencing epoch), loads its extent map, and
 * builds one engine and one write-back cache that every connection to the volume shares; the
 * last connection to close flushes the cache and releases the lock. An attach that finds another
 * frontend's lock waits (up to lockWaitMs) for its lease to expire, as after that frontend died;
 * forceTakeover takes it at once and fences the old holder.
 *
 * Read-only opens take no lock, and are refused while a writer holds the volume (after waiting up
 * to lockWaitMs for it to detach): a read-only view
 * serves the map as it was when it attached, so beside a live writer it would serve old data and
 * then fail once the writer's superseded shards are deleted. A writer that attaches later makes
 * the read-only view fail every request (it watches the lock).
 *
 * When the last connection closes and the flush fails (nodes overloaded or down), the volume stays
 * attached, lock and cache kept, and the final flush is retried with backoff for up to
 * finalFlushRetryMs; a client that connects meanwhile gets the same volume with its unflushed
 * writes. The retrying is published in etcd (`pending-flush/<volume>`, for `cairnctl status`)
 * and in status() (metrics). Only when the bound runs out, or another writer fenced this one, is
 * what is still not durable dropped, with a log line saying how much.
 *
 * Targets and placement follow the live topology (re-read every few seconds), so a node that goes
 * down stops receiving new shards and one that joins starts to. Every timer runs on the injected
 * Clock.
 */
import {
  CairnError,
  InvalidArgumentError,
  MapRootMovedError,
  UnavailableError,
  parseVolumeRef,
  snapshotName,
  LimitExceededError,
  LimitLog,
  errorMessage,
  formatBytes,
  formatProfile,
  sleepOn,
  systemClock,
  type BlockDevice,
  type Clock,
  type ContextRun,
  type MetaContextSource,
  type Codec,
  type ExportInfo,
  type ExportProvider,
} from '../core/index.js';
import { WriteBackCache, cacheCapabilities, type WriteBackCacheOptions } from '../cache/index.js';
import {
  NotFoundError,
  PreconditionError,
  VolumeLockedError,
  journalReplicasOf,
  keys,
  type CensusRecord,
  type EtcdMeta,
  type SnapshotRecord,
  type VolumeLock,
  type VolumeRecord,
} from '../meta/index.js';
import type { Topology } from '../placement/index.js';
import type { Watcher } from 'etcd3';
import { CryptPool, VolumeCipher, openDataKey, type Kek } from '../crypt/index.js';
import { TreeExtentMapStore, VolumeEngine } from '../volume/index.js';
import { ReplicatedMapPages, extentCount, mapLevelsFor } from '../extent/index.js';
import {
  assessExtentMap,
  checkVolumeSize,
  livenessOf,
  isRetained,
  snapshotFloor,
  snapshotsReadingParent,
  type ExtentMapHealth,
  type SecretSource,
} from '../api/index.js';
import { EtcdMapRoots, SnapshotMapRoots } from './extent_map.js';
import { JournalUnavailableError, VolumeJournal, type ReplayedRecord } from './journal.js';
import { LivePlacer } from './live_placer.js';
import { LiveTargets } from './live_targets.js';
import {
  attachedVolumesMaxDefault,
  detachLingerMs,
  finalFlushBackoffMaxMs,
  finalFlushBackoffMinMs,
  finalFlushRetryMsDefault,
  frontendLimitLogIntervalMs,
  lockPollMs,
  lockWaitMsDefault,
  topologyRefreshMs,
} from './limits.js';

export interface FrontendOptions {
  readonly meta: EtcdMeta;
  readonly pool: Codec;
  /** Time for refreshes, lingers and lock waits; the system clock unless a test injects one. */
  readonly clock?: Clock;
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
  /** The zone this frontend runs in: reads prefer shards there (VolumeEngineOptions.zone). */
  readonly zone?: string;
  readonly log?: (line: string) => void;
  /** Told when each persist of a volume's dirty extents starts; the result is called when it ends (metrics). */
  readonly onFlush?: (volume: string, extents: number) => (ok: boolean) => void;
  /** How long a volume with no clients left retries a failing final flush (finalFlushRetryMsDefault). */
  readonly finalFlushRetryMs?: number;
  /**
   * Told of each failed final flush that will be retried, and of the bytes dropped when a volume
   * detached with writes that never became durable (metrics).
   */
  readonly onFinalFlush?: (
    volume: string,
    event: { readonly outcome: 'retry' | 'lost'; readonly bytes: number },
  ) => void;
  /** Volumes attached at once (`--max-volumes`); an attach past it is refused. */
  readonly maxVolumes?: number;
  /** Told each time an attach is refused for maxVolumes (a metric). */
  readonly onLimit?: (limit: 'volumes') => void;
  /**
   * Key-encryption keys (`--kek-file`, CAIRN_KEK_FILE, CAIRN_KEK_DIR), or how to read them at each
   * attach: an encrypted volume is attached only when the one its record names is there;
   * otherwise the attach fails with a KeyError naming it.
   */
  readonly keks?: readonly Kek[] | (() => readonly Kek[]);
}

/** A final flush that failed and is being retried (the volume has no clients left). */
export interface FinalFlushState {
  /** When the first attempt failed (wall clock, for people). */
  readonly since: Date;
  /** Failed attempts so far. */
  readonly attempts: number;
  readonly lastError: string;
  /** When retrying stops (wall clock, for people). */
  readonly giveUpAt: Date;
}

interface OpenVolume {
  /** The volume's record as this frontend last published or read it (a resize replaces it). */
  record: VolumeRecord;
  /** A writer's map store and root store (a resize rebases them). */
  readonly map?: TreeExtentMapStore;
  readonly roots?: EtcdMapRoots;
  /** Set for the read-only view of a snapshot (export `VOL@SNAP`). */
  readonly snapshot: SnapshotRecord | undefined;
  /** A snapshot view's `qemu:dirty-bitmap:OLDER` contexts. */
  readonly contexts?: MetaContextSource;
  /**
   * Generations at or below it may be in a snapshot: when superseded, their shards are left to
   * gc (VolumeEngineOptions.retained). Raised by each snapshot this writer takes.
   */
  readonly retain: { floor: number };
  readonly readOnly: boolean;
  readonly cache: WriteBackCache;
  readonly engine: VolumeEngine;
  readonly lock: VolumeLock | undefined;
  readonly journal: VolumeJournal | undefined;
  readonly stopRefresh: () => void;
  handles: number;
  /** Cancels the pending detach after the last connection closed, if one is pending. */
  linger: (() => void) | undefined;
  /** Set once detach() started: the volume is never reused, re-armed or detached again. */
  detaching: Promise<void> | undefined;
  /** The final flush and its retries, while they run; the volume is still attached and reusable. */
  finalFlushing: Promise<void> | undefined;
  /** Set while the final flush is failing and being retried. */
  finalFlush: FinalFlushState | undefined;
}

export class VolumeFrontend implements ExportProvider {
  private readonly open_ = new Map<string, Promise<OpenVolume>>();
  /** Volumes being detached: an open of the same name waits for the detach to finish. */
  private readonly closing = new Map<string, Promise<void>>();
  private readonly targets: LiveTargets;
  /** Encryption workers, started with the first encrypted volume. */
  private crypt: CryptPool | undefined;
  private readonly log: (line: string) => void;
  private readonly limitLog: LimitLog<'volumes'>;

  private readonly clock: Clock;

  constructor(private readonly options: FrontendOptions) {
    this.clock = options.clock ?? systemClock;
    this.targets = new LiveTargets(options.meta, options.secrets, this.clock);
    this.log = options.log ?? (() => undefined);
    this.limitLog = new LimitLog(this.log, options.onLimit, frontendLimitLogIntervalMs);
  }

  /**
   * The cipher of an encrypted volume (its data key unwrapped with one of options.keks), or
   * undefined for a plain one (a key service asked when one wraps it). Throws KeyError before
   * anything is attached when no key fits.
   */
  private async cipherOf(record: VolumeRecord, what: string): Promise<VolumeCipher | undefined> {
    if (record.encryption === undefined) return undefined;
    // Read at each attach when given as a function: keys put in a directory later (a CSI node
    // plugin stages a volume's key there just before it attaches) are found.
    const given = this.options.keks;
    const dataKey = await openDataKey(record.encryption, typeof given === 'function' ? given() : (given ?? []), what);
    this.crypt ??= new CryptPool();
    return new VolumeCipher(dataKey, this.crypt);
  }

  /** Volumes attached or attaching now (what maxVolumes bounds). */
  get attachedCount(): number {
    return this.open_.size;
  }

  /**
   * A volume as an export, from its etcd record alone: listing and NBD_OPT_INFO attach nothing
   * (no lock, no epoch, no extent map), so a client that lists 10,000 volumes costs one range
   * read. A connection opened now would be read-only when this frontend serves read-only.
   */
  private describe(v: VolumeRecord): ExportInfo {
    return {
      name: v.name,
      sizeBytes: v.sizeBytes,
      description: `Cairn volume ${v.name}: ${formatBytes(v.sizeBytes)}, ${formatProfile(v.profile)}, extents of ${formatBytes(v.extentBytes)}`,
      capabilities: cacheCapabilities(this.options.readOnly ?? false),
    };
  }

  /** Every volume, from one etcd range read. */
  async list(): Promise<ExportInfo[]> {
    return (await this.options.meta.listVolumes()).map((v) => this.describe(v));
  }

  /** One volume, from one etcd read; a snapshot (`VOL@SNAP`) from two. */
  async info(name: string): Promise<ExportInfo | null> {
    const ref = parseExportName(name);
    if (ref === undefined) return null;
    const v = await this.options.meta.getVolume(ref.volume);
    if (v === null || ref.snapshot === undefined) return v === null ? null : this.describe(v);
    const snap = await this.options.meta.getSnapshot(v.id, ref.snapshot);
    if (snap === null) return null;
    const older = (await this.options.meta.listSnapshots(v.id)).filter((o) => o.createdAt < snap.createdAt);
    return {
      name,
      sizeBytes: snap.sizeBytes,
      description: `Cairn snapshot ${snap.name} of volume ${v.name}, taken ${snap.createdAt}: ${formatBytes(snap.sizeBytes)}, read-only`,
      capabilities: cacheCapabilities(true),
      metaContexts: older.map((o) => `${dirtyBitmapPrefix}${o.name}`),
    };
  }

  async open(
    name: string,
    options: { readonly readOnly: boolean },
  ): Promise<{ device: BlockDevice; close(): Promise<void>; contexts?: MetaContextSource }> {
    // A snapshot is served read-only whatever the client asked.
    const readOnly = options.readOnly || (this.options.readOnly ?? false) || name.includes('@');
    await this.closing.get(name);
    let pending = this.open_.get(name);
    if (pending === undefined) {
      this.checkVolumeCap(name);
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
    vol.linger?.();
    vol.linger = undefined;
    let closed = false;
    return {
      device: vol.cache,
      ...(vol.contexts === undefined ? {} : { contexts: vol.contexts }),
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
        vol.linger?.();
        const stop = this.clock.every(detachLingerMs, () => {
          stop();
          if (vol.linger === stop) vol.linger = undefined;
          if (vol.handles === 0) void this.detach(name, vol);
        });
        vol.linger = stop;
      },
    };
  }

  private async openVolume(name: string, readOnly: boolean): Promise<OpenVolume> {
    const ref = parseExportName(name);
    if (ref === undefined) throw new NotFoundError(`No volume named "${name}"`);
    if (ref.snapshot !== undefined) return this.openSnapshotView(name, ref.volume, ref.snapshot);
    const { meta, pool } = this.options;
    const record = await meta.getVolume(name);
    if (record === null) throw new NotFoundError(`No volume named "${name}"`);
    const cipher = await this.cipherOf(record, `Volume "${name}"`);
    await this.targets.refresh();
    const placer = new LivePlacer(meta, record, this.clock);
    await placer.refresh();
    // A read-only view watches the lock from before its check, so a writer that attaches at
    // any later moment is seen: the view goes stale and fails every request from then on.
    let markStale: ((err: Error) => void) | undefined;
    let staleBeforeCache: Error | undefined;
    const lockWatch = readOnly
      ? await meta.client
          .watch()
          .key(keys.lock(name))
          .create()
          .then((w) => {
            w.on('put', () => {
              const err = new VolumeLockedError(
                `Volume "${name}" was attached for writing elsewhere after this read-only attach; reconnect once the writer detaches`,
                '',
                0,
              );
              this.log(`volume ${name}: ${err.message}`);
              if (markStale === undefined) staleBeforeCache = err;
              else markStale(err);
            });
            return w;
          })
      : undefined;
    const lock = readOnly ? undefined : await this.acquireWaiting(name);
    let opened: VolumeJournal | undefined;
    let built: WriteBackCache | undefined;
    try {
      if (readOnly) await this.refuseLiveWriter(name);
      if (await meta.hasExtentKeys(record.id))
        throw new InvalidArgumentError(
          `Volume "${name}" keeps its extent map in per-extent etcd keys, written by an older Cairn; run \`cairnctl migrate\` once to move every volume's map into map pages, then attach again`,
        );
      const extents = extentCount(record);
      const retain = { floor: readOnly ? 0 : await snapshotFloor(meta, record.id) };
      const roots = new EtcdMapRoots(meta, record, lock, mapLevelsFor(extents));
      const map = new TreeExtentMapStore({
        volumeId: record.id,
        extents,
        pages: this.mapPages(placer),
        roots,
        // A read-only view has no epoch and never commits.
        epoch: lock?.epoch ?? 0,
      });
      const engine = await VolumeEngine.open({
        volume: engineVolume(record, record.name),
        map,
        targets: this.targets,
        placer,
        pool,
        epoch: lock?.epoch ?? 0,
        ...(this.options.zone === undefined ? {} : { zone: this.options.zone }),
        ...(record.durableShardsMin === undefined ? {} : { durableShardsMin: record.durableShardsMin }),
        retained: (rec) => isRetained(rec, record.id, retain.floor),
        ...(cipher === undefined ? {} : { cipher }),
        log: this.log,
      });
      // The journal: fence the old writer at the nodes, read what it left, start a segment.
      const replayed: ReplayedRecord[] = [];
      const journal =
        lock === undefined || journalReplicasOf(record) === 0
          ? undefined
          : await VolumeJournal.open(
              {
                meta,
                volume: record,
                lock,
                replicas: journalReplicasOf(record),
                lsnFloor: engine.highestJournalLsn,
                secrets: this.options.secrets,
                ...(cipher === undefined ? {} : { cipher }),
                clock: this.clock,
                log: this.log,
              },
              (r) => replayed.push(r),
            ).then(
              (j) => (opened = j),
              (err: unknown) => {
                // Too few journal nodes (an S3-only cluster, say) and no journal left to replay:
                // run without one, as a volume with --journal-replicas 0 does.
                if (err instanceof JournalUnavailableError) {
                  this.log(`volume ${name}: journal off: ${errorMessage(err)}`);
                  return undefined;
                }
                throw err;
              },
            );
      const cache = new WriteBackCache(
        {
          ...engineReads(engine),
          ...(journal === undefined ? {} : { journal }),
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
      built = cache;
      if (readOnly && journalReplicasOf(record) > 0) {
        // No writer holds the volume (checked above), but one that died, or could not fold at
        // detach, may have left flushed writes in the journal: read them too.
        const records: ReplayedRecord[] = [];
        const n = await VolumeJournal.replayReadOnly(
          { meta, volume: record, secrets: this.options.secrets, cipher },
          (r) => records.push(r),
        );
        const bytes = await cache.replayAll(records);
        if (n > 0)
          this.log(`volume ${name}: read-only view replayed ${n} journal records (${bytes} bytes not yet folded)`);
      }
      if (journal !== undefined) {
        const bytes = await cache.replayAll(replayed);
        journal.foldAll = () => cache.foldAll();
        if (replayed.length > 0) {
          this.log(`volume ${name}: replayed ${replayed.length} journal records (${bytes} bytes not yet folded)`);
          // Fold what was replayed before serving it: a record read from one replica may be on
          // no other (an append that failed), and must not be served, then lost to a later attach
          // that reads another replica (simulator seed 394).
          await cache.foldAll();
        }
      }
      markStale = (err) => cache.markStale(err);
      if (staleBeforeCache !== undefined) cache.markStale(staleBeforeCache);
      // Repair publishes moved shards of a generation this engine holds (a new map root); follow it.
      const watcher = await meta.client
        .watch()
        .key(keys.mapRoot(record.id))
        .create()
        .catch(() => undefined);
      watcher?.on('put', () => {
        map
          .refresh()
          .catch((err: unknown) => this.log(`volume ${name}: cannot re-read the map root: ${errorMessage(err)}`));
      });
      const stopTimer = this.clock.every(topologyRefreshMs, () => {
        Promise.all([this.targets.refresh(), placer.refresh()]).catch((err: unknown) =>
          this.log(`cannot refresh topology: ${errorMessage(err)}`),
        );
      });
      // Snapshots and resizes asked of this writer (`cairnctl snapshot create`, `volume resize`).
      const watchRequests = (build: (w: ReturnType<typeof meta.client.watch>) => { create(): Promise<Watcher> }) =>
        lock === undefined
          ? undefined
          : build(meta.client.watch())
              .create()
              .catch(() => undefined);
      const requests = await watchRequests((w) => w.prefix(keys.snapshotRequestsPrefix(record.id)));
      const resizes = await watchRequests((w) => w.key(keys.resizeRequest(record.id)));
      lock?.lost.then((err) => this.log(`volume ${name}: ${errorMessage(err)}`)).catch(() => undefined);
      this.log(
        `attached volume ${name} ${readOnly ? 'read-only' : `for writing (epoch ${lock?.epoch})`}; ${engine.writtenExtents} extents written`,
      );
      const vol: OpenVolume = {
        record,
        map,
        roots,
        snapshot: undefined,
        retain,
        readOnly,
        cache,
        engine,
        lock,
        journal,
        stopRefresh: () => {
          stopTimer();
          void watcher?.cancel();
          void lockWatch?.cancel();
          void requests?.cancel();
          void resizes?.cancel();
        },
        handles: 0,
        linger: undefined,
        detaching: undefined,
        finalFlushing: undefined,
        finalFlush: undefined,
      };
      requests?.on('put', (kv) => {
        // A request this writer failed is rewritten with the error: not a new request.
        if (kv.value.toString().includes('"error"')) return;
        const snap = kv.key.toString().slice(keys.snapshotRequestsPrefix(record.id).length);
        void this.answerSnapshotRequest(vol, snap);
      });
      resizes?.on('put', (kv) => {
        const asked = JSON.parse(kv.value.toString()) as { sizeBytes?: unknown; error?: unknown };
        if (asked.error !== undefined || typeof asked.sizeBytes !== 'number') return;
        const size = asked.sizeBytes;
        this.doResize(vol, size, { allowShrink: false, online: true }).catch(async (err: unknown) => {
          this.log(`volume ${vol.record.name}: cannot resize to ${size} bytes: ${errorMessage(err)}`);
          await meta
            .failResizeRequest(vol.record.id, size, errorMessage(err))
            .catch((e: unknown) => this.log(`volume ${vol.record.name}: ${errorMessage(e)}`));
        });
      });
      return vol;
    } catch (err) {
      built?.abandon();
      await opened?.close();
      await lock?.release();
      await lockWatch?.cancel();
      throw err;
    }
  }

  /**
   * The read-only view of a snapshot: its saved root, no lock, no journal (the snapshot holds
   * every write acknowledged before it, folded). The volume's writer may go on meanwhile: the
   * shards the snapshot reaches stay until the snapshot is deleted.
   */
  private async openSnapshotView(exportName: string, volume: string, snap: string): Promise<OpenVolume> {
    const { meta, pool } = this.options;
    const record = await meta.getVolume(volume);
    if (record === null) throw new NotFoundError(`No volume named "${volume}"`);
    const snapshot = await meta.getSnapshot(record.id, snap);
    if (snapshot === null) throw new NotFoundError(`Volume "${volume}" has no snapshot named "${snap}"`);
    const cipher = await this.cipherOf(record, `Volume "${volume}"`);
    await this.targets.refresh();
    const placer = new LivePlacer(meta, record, this.clock);
    await placer.refresh();
    const sized = { ...record, sizeBytes: snapshot.sizeBytes };
    const extents = extentCount(sized);
    const map = new TreeExtentMapStore({
      volumeId: record.id,
      extents,
      pages: this.mapPages(placer),
      roots: new SnapshotMapRoots(snapshot.root, exportName),
      epoch: 0,
    });
    const engine = await VolumeEngine.open({
      volume: engineVolume(sized, exportName),
      map,
      targets: this.targets,
      placer,
      pool,
      epoch: 0,
      ...(this.options.zone === undefined ? {} : { zone: this.options.zone }),
      ...(cipher === undefined ? {} : { cipher }),
      log: this.log,
    });
    const cache = new WriteBackCache(
      {
        ...engineReads(engine),
        persist: () => Promise.reject(new InvalidArgumentError(`${exportName} is a snapshot: it is read-only`)),
      },
      { ...this.options.cache, readOnly: true, log: (line) => this.log(`snapshot ${exportName}: ${line}`) },
    );
    this.log(`attached snapshot ${exportName} read-only; ${engine.writtenExtents} extents written`);
    // qemu:dirty-bitmap:OLDER marks the extents whose records differ between OLDER and this
    // snapshot (the tree's diff: pages both share are not read), for incremental backup.
    const changed = new Map<string, Promise<Set<number>>>();
    const changedSince = (older: string): Promise<Set<number>> => {
      let known = changed.get(older);
      if (known === undefined) {
        known = (async () => {
          const base = await meta.getSnapshot(record.id, older);
          if (base === null) throw new NotFoundError(`Volume "${volume}" has no snapshot named "${older}" any more`);
          const out = new Set<number>();
          if (base.root.levels !== snapshot.root.levels) {
            // Resized between the two: everything counts as changed.
            for (let e = 0; e < extents; e++) out.add(e);
            return out;
          }
          for await (const e of map.tree.diff(base.root, snapshot.root)) out.add(e);
          return out;
        })();
        known.catch(() => changed.delete(older));
        changed.set(older, known);
      }
      return known;
    };
    const contexts: MetaContextSource = {
      status: async (contextName, offset, length) => {
        if (!contextName.startsWith(dirtyBitmapPrefix))
          throw new InvalidArgumentError(`Export ${exportName} has no metadata context ${contextName}`);
        const dirty = await changedSince(contextName.slice(dirtyBitmapPrefix.length));
        const runs: ContextRun[] = [];
        const { extentBytes } = record;
        for (let at = offset; at < offset + length;) {
          const e = Math.floor(at / extentBytes);
          const end = Math.min(offset + length, (e + 1) * extentBytes);
          runs.push({ offset: at, length: end - at, flags: dirty.has(e) ? 1 : 0 });
          at = end;
        }
        return runs;
      },
    };
    return {
      record: sized,
      snapshot,
      contexts,
      retain: { floor: 0 },
      readOnly: true,
      cache,
      engine,
      lock: undefined,
      journal: undefined,
      stopRefresh: () => undefined,
      handles: 0,
      linger: undefined,
      detaching: undefined,
      finalFlushing: undefined,
      finalFlush: undefined,
    };
  }

  /**
   * Takes snapshot `snap` of volume `name`, attaching it for writing here first unless it is
   * attached here already (then its clients go on; their writes wait while the snapshot is cut).
   * For `cairnctl snapshot create` on a volume no frontend holds.
   */
  async snapshot(name: string, snap: string, options: { readonly origin?: string } = {}): Promise<SnapshotRecord> {
    const handle = await this.open(name, { readOnly: false });
    try {
      const vol = await this.open_.get(name)!;
      return await this.takeSnapshot(vol, snap, false, options.origin);
    } finally {
      await handle.close();
    }
  }

  /**
   * Makes clone `name` independent of its parent snapshot: every extent whose record still names
   * the parent's shards is read and written as a new generation of its own (the volume attached
   * here, writes held back meanwhile), then the parent link is dropped. Resumable: a second run
   * copies only what is still shared.
   */
  async flatten(
    name: string,
    onProgress?: (done: number, total: number, copied: number) => void,
  ): Promise<{ extentsCopied: number; bytesCopied: number }> {
    const handle = await this.open(name, { readOnly: false });
    try {
      const vol = await this.open_.get(name)!;
      const { record, lock } = vol;
      if (lock === undefined) throw new InvalidArgumentError(`Volume "${name}" is attached read-only here`);
      const own = `${record.id}/`;
      const total = extentCount(record);
      let copied = 0;
      let bytes = 0;
      await vol.cache.exclusive(async () => {
        // Checked under the gate: no snapshot of this volume can be taken while it is held.
        if (record.parent !== undefined) {
          const holding = await snapshotsReadingParent(this.options.meta, record);
          if (holding.length > 0)
            throw new PreconditionError(
              `Cannot flatten volume "${name}": its snapshot${holding.length > 1 ? 's' : ''} ${holding.join(', ')} still read data of ${record.parent.volume}@${record.parent.snapshot}; delete ${holding.length > 1 ? 'them' : 'it'} first (a snapshot never changes, so flatten cannot copy into it)`,
            );
        }
        await vol.cache.flush();
        await vol.cache.foldAll();
        const batch = 8;
        for (let first = 0; first < total; first += batch) {
          const list = Array.from({ length: Math.min(batch, total - first) }, (_, i) => first + i);
          await vol.engine.prepare(list);
          const shared = list.filter((e) => vol.engine.record(e)?.shards.some((s) => !s.key.startsWith(own)) === true);
          if (shared.length > 0) {
            const images = await Promise.all(
              shared.map(async (e) => ({ extent: e, data: await vol.engine.readWhole(e) })),
            );
            await vol.engine.persist(images);
            copied += shared.length;
            bytes += images.reduce((sum, i) => sum + i.data.length, 0);
          }
          onProgress?.(list[list.length - 1]! + 1, total, copied);
        }
      });
      await this.options.meta.dropParent(lock, name);
      this.log(`volume ${name}: flattened (${copied} extents copied from its parent)`);
      return { extentsCopied: copied, bytesCopied: bytes };
    } finally {
      await handle.close();
    }
  }

  /**
   * Resizes volume `name`, attaching it here for writing first unless it is attached here
   * already. Growing works with clients connected (new connections see the new size); shrinking
   * needs no other client, and `allowShrink` when data was written past the new end.
   */
  async resize(
    name: string,
    sizeBytes: number,
    options: { readonly allowShrink?: boolean } = {},
  ): Promise<VolumeRecord> {
    const handle = await this.open(name, { readOnly: false });
    try {
      const vol = await this.open_.get(name)!;
      return await this.doResize(vol, sizeBytes, {
        allowShrink: options.allowShrink ?? false,
        online: vol.handles > 1,
      });
    } finally {
      await handle.close();
    }
  }

  /**
   * With writes held back (exclusive), flushed and folded: for a shrink, the records past the new
   * end dropped and the tail of the new last extent zeroed (so a later grow reads zeros there);
   * then the map rebased to its new height and published with the new size in one transaction
   * fenced by this writer's lock; then the engine and cache take the new size.
   */
  private async doResize(
    vol: OpenVolume,
    sizeBytes: number,
    options: { readonly allowShrink: boolean; readonly online: boolean },
  ): Promise<VolumeRecord> {
    const { meta } = this.options;
    const { lock, map, roots } = vol;
    if (lock === undefined || map === undefined || roots === undefined || vol.snapshot !== undefined)
      throw new InvalidArgumentError(
        `Volume "${vol.record.name}" is attached read-only here; only its writer can resize it`,
      );
    checkVolumeSize(sizeBytes);
    return vol.cache.exclusive(async () => {
      const current = await meta.getVolumeWithRevision(vol.record.name);
      if (current === null) throw new NotFoundError(`No volume named "${vol.record.name}"`);
      const name = current.record.name;
      const old = current.record.sizeBytes;
      if (sizeBytes === old) {
        await meta.withdrawResizeRequest(current.record.id);
        return current.record;
      }
      await vol.cache.flush();
      await vol.cache.foldAll();
      if (vol.cache.dirtyBytes > 0 || vol.cache.journaledBytes > 0)
        throw new UnavailableError(
          `Cannot resize volume "${name}": not everything could be folded into its map; try again`,
        );
      const { extentBytes } = current.record;
      const newCount = Math.ceil(sizeBytes / extentBytes);
      if (sizeBytes < old) {
        if (options.online)
          throw new PreconditionError(
            `Cannot shrink volume "${name}" while clients are connected; a volume shrinks only while detached`,
          );
        const first = Math.floor(sizeBytes / extentBytes);
        const affected = Array.from({ length: extentCount(current.record) - first }, (_, i) => first + i);
        await vol.engine.prepare(affected);
        const images: { extent: number; data: Uint8Array | null }[] = [];
        const lost: number[] = [];
        for (const e of affected) {
          if (vol.engine.isHole(e)) continue;
          if (e >= newCount) {
            images.push({ extent: e, data: null });
            lost.push(e);
            continue;
          }
          // The new last extent: the bytes past the new end are zeroed, so a grow reads zeros.
          const whole = await vol.engine.readWhole(e);
          const cut = sizeBytes - e * extentBytes;
          if (whole.subarray(cut).some((b) => b !== 0)) {
            whole.fill(0, cut);
            images.push({ extent: e, data: whole });
            lost.push(e);
          }
        }
        if (lost.length > 0 && !options.allowShrink)
          throw new PreconditionError(
            `Cannot shrink volume "${name}" to ${formatBytes(sizeBytes)}: data was written past it (extents ${lost.slice(0, 8).join(', ')}${lost.length > 8 ? ', ...' : ''}); pass --allow-shrink to discard it`,
          );
        if (images.length > 0) await vol.engine.persist(images);
      }
      const prepared = await map.prepareResize(newCount);
      const expected = map.current ?? (await roots.read());
      const updated = await meta.resizeVolume(lock, current, sizeBytes, expected, prepared.root);
      map.adoptResize(prepared);
      roots.levels = prepared.root.levels;
      vol.engine.resize(sizeBytes);
      vol.cache.resize(vol.engine.geometry);
      vol.record = updated;
      this.log(
        `volume ${name}: resized from ${formatBytes(old)} to ${formatBytes(sizeBytes)}${options.online ? ' online (new connections see the new size)' : ''}`,
      );
      return updated;
    });
  }

  /**
   * Cuts a snapshot of an attached volume: with changes held back (WriteBackCache.exclusive),
   * flushes and folds everything, so the volume's map root holds every write acknowledged before,
   * then saves that root in a transaction fenced by this writer's lock. Writes go on afterwards.
   */
  private async takeSnapshot(
    vol: OpenVolume,
    snap: string,
    request: boolean,
    origin?: string,
  ): Promise<SnapshotRecord> {
    const name = snapshotName(snap);
    const { record, lock } = vol;
    if (lock === undefined || vol.snapshot !== undefined)
      throw new InvalidArgumentError(
        `Volume "${record.name}" is attached read-only here; only its writer can snapshot it`,
      );
    const { meta } = this.options;
    return vol.cache.exclusive(async () => {
      const started = this.clock.now();
      await vol.cache.flush();
      await vol.cache.foldAll();
      if (vol.cache.dirtyBytes > 0 || vol.cache.journaledBytes > 0)
        throw new UnavailableError(
          `Cannot snapshot volume "${record.name}": ${formatBytes(vol.cache.dirtyBytes + vol.cache.journaledBytes)} could not be folded into its map; try again`,
        );
      // Before the snapshot exists: from now on this writer keeps what the snapshot reaches.
      const floor = vol.engine.generationMark;
      vol.retain.floor = Math.max(vol.retain.floor, floor);
      for (let attempt = 0; ; attempt++) {
        const root = await meta.readMapRoot(record.id, mapLevelsFor(extentCount(record)));
        const snapshot: SnapshotRecord = {
          name,
          volumeId: record.id,
          volume: record.name,
          createdAt: new Date().toISOString(),
          sizeBytes: record.sizeBytes,
          root,
          floor,
          clones: [],
          ...(origin === undefined ? {} : { origin }),
        };
        try {
          const made = await meta.createSnapshot(snapshot, { lock, request });
          this.log(
            `volume ${record.name}: snapshot ${name} taken (${root.written ?? 0} extents written; writes held ${this.clock.now() - started} ms)`,
          );
          return made;
        } catch (err) {
          // A repair replaced the root (moved shards, same data): save the new one.
          if (!(err instanceof MapRootMovedError) || attempt >= 4) throw err;
        }
      }
    });
  }

  /** Answers a snapshot request; a failure is written into the request for its asker to read. */
  private async answerSnapshotRequest(vol: OpenVolume, snap: string): Promise<void> {
    try {
      await this.takeSnapshot(vol, snap, true);
    } catch (err) {
      this.log(`volume ${vol.record.name}: cannot take snapshot ${snap}: ${errorMessage(err)}`);
      await this.options.meta
        .failSnapshotRequest(vol.record.id, snap, errorMessage(err))
        .catch((e: unknown) => this.log(`volume ${vol.record.name}: ${errorMessage(e)}`));
    }
  }

  /** Where a volume's map pages are read and written: the live targets, as placement sees them. */
  private mapPages(placer: LivePlacer): ReplicatedMapPages {
    return new ReplicatedMapPages({
      targets: () => this.targets.all(),
      usable: () => placer.usableTargets(),
      refused: (target, err) => placer.refused(target, err),
      zoneOf: (target) => this.targets.zoneOf(target),
    });
  }

  /**
   * Takes the volume's write lock. When another frontend holds it, waits (bounded) for its lease
   * to expire, as after that frontend died; --force-takeover takes it at once instead.
   */
  private async acquireWaiting(name: string): Promise<VolumeLock> {
    const waitMs = this.options.lockWaitMs ?? lockWaitMsDefault;
    const deadline = this.clock.now() + waitMs;
    let told = false;
    for (;;) {
      try {
        return await this.options.meta.acquireLock(name, this.options.owner, {
          takeover: this.options.forceTakeover ?? false,
        });
      } catch (err) {
        if (!(err instanceof VolumeLockedError) || this.clock.now() + lockPollMs > deadline) throw err;
        if (!told) this.log(`volume ${name}: ${errorMessage(err)}; waiting up to ${waitMs} ms for its lease`);
        told = true;
        await sleepOn(this.clock, lockPollMs);
      }
    }
  }

  /**
   * A read-only attach beside a live writer would serve the map as it was at attach time and then
   * fail once the writer's superseded shards are deleted; Cairn refuses it instead (docs/nbd.md).
   */
  private async refuseLiveWriter(name: string): Promise<void> {
    // A writer that is about to detach (clients gone, lingering) is waited for, like a lock.
    const waitMs = this.options.lockWaitMs ?? lockWaitMsDefault;
    const deadline = this.clock.now() + waitMs;
    let lock = await this.options.meta.getLock(name);
    if (lock !== null)
      this.log(`volume ${name}: attached for writing by ${lock.owner}; waiting up to ${waitMs} ms for it to detach`);
    while (lock !== null && this.clock.now() + lockPollMs <= deadline) {
      await sleepOn(this.clock, lockPollMs);
      lock = await this.options.meta.getLock(name);
    }
    if (lock === null) return;
    throw new VolumeLockedError(
      `Cannot attach volume "${name}" read-only: it is attached for writing by ${lock.owner} (epoch ${lock.epoch}); ` +
        'a read-only view would go stale as that writer flushes. Detach the writer first',
      lock.owner,
      lock.epoch,
    );
  }

  /**
   * Detaches a volume with no clients: first the final flush (retried while it fails, with the
   * volume still attached and reusable), then, unless a client came back meanwhile, the detach.
   */
  private async detach(name: string, vol: OpenVolume): Promise<void> {
    if (vol.detaching !== undefined) return vol.detaching;
    vol.finalFlushing ??= this.finalFlush(name, vol).finally(() => (vol.finalFlushing = undefined));
    await vol.finalFlushing;
    // A client that connected during the retries keeps the volume, and its unflushed writes.
    if (vol.detaching !== undefined || vol.handles > 0) return vol.detaching;
    const done = this.closeVolume(name, vol).finally(() => {
      if (this.closing.get(name) === done) this.closing.delete(name);
    });
    vol.detaching = done;
    this.closing.set(name, done);
    return done;
  }

  /**
   * Flushes a volume whose clients are gone, retrying with backoff while the flush fails, for up
   * to finalFlushRetryMs. Returns once nothing is dirty, a client has connected again (it keeps
   * the volume as it is), this writer was fenced (nothing can flush any more), or the time is up;
   * never throws. While it retries the lock stays held and `pending-flush/<volume>` says so.
   */
  private async finalFlush(name: string, vol: OpenVolume): Promise<void> {
    if (vol.readOnly) return;
    const retryMs = this.options.finalFlushRetryMs ?? finalFlushRetryMsDefault;
    const stopAt = this.clock.now() + retryMs;
    const giveUpAt = new Date(Date.now() + retryMs);
    let backoffMs = finalFlushBackoffMinMs;
    const publish = (state: FinalFlushState | undefined): Promise<void> =>
      (
        vol.lock?.setPendingFlush(
          state === undefined
            ? null
            : {
                owner: this.options.owner,
                epoch: vol.lock.epoch,
                since: state.since.toISOString(),
                attempts: state.attempts,
                dirtyBytes: vol.cache.dirtyBytes,
                lastError: state.lastError,
                giveUpAt: state.giveUpAt.toISOString(),
              },
        ) ?? Promise.resolve()
      ).catch((err: unknown) =>
        this.log(`volume ${name}: cannot record the pending final flush in etcd: ${errorMessage(err)}`),
      );
    for (;;) {
      try {
        await vol.cache.flush();
        if (vol.finalFlush !== undefined) {
          const { attempts } = vol.finalFlush;
          vol.finalFlush = undefined;
          await publish(undefined);
          this.log(`volume ${name}: final flush succeeded after ${attempts} failed attempts; nothing was lost`);
        }
        return;
      } catch (err) {
        const attempts = (vol.finalFlush?.attempts ?? 0) + 1;
        vol.finalFlush = {
          since: vol.finalFlush?.since ?? new Date(),
          attempts,
          lastError: errorMessage(err),
          giveUpAt,
        };
        const dirty = vol.cache.dirtyBytes;
        if (vol.cache.fencedBy !== undefined || this.clock.now() + backoffMs > stopAt) {
          this.log(
            `volume ${name}: final flush failed ${attempts} times (last: ${errorMessage(err)}); ` +
              (vol.cache.fencedBy === undefined
                ? `stopping after ${retryMs} ms`
                : 'another writer took the volume over'),
          );
          return;
        }
        this.options.onFinalFlush?.(name, { outcome: 'retry', bytes: dirty });
        // etcd first, then the log line: who reads the log finds status already saying so.
        await publish(vol.finalFlush);
        this.log(
          `volume ${name}: final flush failed (attempt ${attempts}): ${errorMessage(err)}; ${formatBytes(dirty)} written and not yet durable: ` +
            `keeping the volume attached and retrying in ${backoffMs} ms, until ${giveUpAt.toISOString()}`,
        );
        await sleepOn(this.clock, backoffMs);
        backoffMs = Math.min(2 * backoffMs, finalFlushBackoffMaxMs);
        if (vol.handles > 0) {
          this.log(
            `volume ${name}: a client connected while the final flush was being retried; it keeps the volume with its ${formatBytes(vol.cache.dirtyBytes)} not yet durable`,
          );
          vol.finalFlush = undefined;
          await publish(undefined);
          return;
        }
      }
    }
  }

  private async closeVolume(name: string, vol: OpenVolume): Promise<void> {
    this.open_.delete(name);
    vol.linger?.();
    vol.stopRefresh();
    try {
      await vol.cache.close();
    } catch (err) {
      const lost = vol.cache.dirtyBytes;
      if (lost > 0) this.options.onFinalFlush?.(name, { outcome: 'lost', bytes: lost });
      this.log(
        `volume ${name}: final flush or fold failed: ${errorMessage(err)}; writes that were flushed stay in the journal for the next attach, ` +
          `the rest (${formatBytes(lost)}) are lost`,
      );
    }
    await vol.journal?.close();
    await vol.engine.close();
    await vol.lock?.release();
    this.log(`detached volume ${name}`);
  }

  /**
   * Refuses to attach one more volume past maxVolumes: each holds an engine, watches and a cache,
   * and nothing else bounds how many a frontend serves (docs/operations.md).
   */
  private checkVolumeCap(name: string): void {
    const max = this.options.maxVolumes ?? attachedVolumesMaxDefault;
    if (this.open_.size < max) return;
    const message = `Cannot attach volume "${name}": ${this.open_.size} volumes are attached to this frontend, its limit (--max-volumes ${max}); detach one or raise the limit`;
    this.limitLog.hit('volumes', message);
    throw new LimitExceededError(message);
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
  async status(
    options: {
      readonly topology?: Topology;
      /** The volume's last shard census, so shards missing from live targets count as lost. */
      readonly census?: (volumeId: string) => Promise<CensusRecord | null>;
    } = {},
  ): Promise<
    {
      name: string;
      readOnly: boolean;
      handles: number;
      dirtyBytes: number;
      /** Bytes flushed to the journal and not yet folded into generations. */
      journaledBytes: number;
      cachedBytes: number;
      /** Set while no client is left and the final flush is failing and being retried. */
      finalFlush?: FinalFlushState;
      degradedExtents: number;
      /** Shard reads since the volume was attached, and those of them from another zone. */
      shardReads: number;
      crossZoneShardReads: number;
      health?: ExtentMapHealth;
    }[]
  > {
    const liveness = options.topology === undefined ? undefined : livenessOf(options.topology);
    const out = [];
    for (const p of this.open_.values()) {
      // A settled promise wins the race against the already-resolved undefined; a pending one loses.
      const v = await Promise.race([p, Promise.resolve(undefined)]).catch(() => undefined);
      if (v === undefined) continue;
      const census = liveness === undefined || v.readOnly ? null : await options.census?.(v.record.id);
      out.push({
        name: v.record.name,
        readOnly: v.readOnly,
        handles: v.handles,
        dirtyBytes: v.cache.dirtyBytes,
        journaledBytes: v.cache.journaledBytes,
        cachedBytes: v.cache.cachedBytes,
        ...(v.finalFlush === undefined ? {} : { finalFlush: v.finalFlush }),
        degradedExtents: v.engine.degraded.size,
        shardReads: v.engine.stats.shardReads,
        crossZoneShardReads: v.engine.stats.crossZoneShardReads,
        ...(liveness === undefined || v.readOnly
          ? {}
          : {
              health: assessExtentMap({
                sizeBytes: v.record.sizeBytes,
                extentBytes: v.record.extentBytes,
                profile: v.record.profile,
                // With a map read on demand: the records this frontend looked up or wrote.
                extents: v.engine.knownRecords(),
                liveness,
                readDegraded: v.engine.degraded,
                ...(census === undefined || census === null ? {} : { absent: new Set(census.absent) }),
              }),
            }),
      });
    }
    return out;
  }
}

/** The qemu convention for a dirty bitmap's metadata context; Cairn's name one older snapshot each. */
export const dirtyBitmapPrefix = 'qemu:dirty-bitmap:';

/** What an engine is told of a volume (`name` is what its log lines and errors say). */
function engineVolume(record: VolumeRecord, name: string) {
  return {
    id: record.id,
    name,
    sizeBytes: record.sizeBytes,
    extentBytes: record.extentBytes,
    k: record.profile.k,
    profile: record.profile,
  };
}

/** What a cache reads through an engine (everything of CacheBackend but persist and the journal). */
function engineReads(engine: VolumeEngine) {
  return {
    geometry: engine.geometry,
    publishedLsn: (e: number) => engine.record(e)?.journalLsn,
    isHole: (e: number) => engine.isHole(e),
    prepare: (extents: Iterable<number>) => engine.prepare(extents),
    versionOf: (e: number) => engine.versionOf(e),
    readRange: (e: number, o: number, l: number) => engine.readRange(e, o, l),
    readWhole: (e: number) => engine.readWhole(e),
    zeroBlocks: (e: number) => engine.zeroBlocks(e),
  };
}

/** `VOL` or `VOL@SNAP` as an export name; undefined when it is neither (no such export). */
function parseExportName(name: string): ReturnType<typeof parseVolumeRef> | undefined {
  try {
    return parseVolumeRef(name);
  } catch {
    return undefined;
  }
}

export function isNotFound(err: unknown): boolean {
  return err instanceof CairnError && err.code === 'ENOTFOUND';
}
