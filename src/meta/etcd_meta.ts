/**
 * Cairn's metadata in a real etcd (through `etcd3`), following docs/etcd-schema.md.
 *
 * What it keeps true: every call has a deadline and names the endpoints when it fails; creations
 * are create-only transactions (no read-then-write races); the volume lock hands out strictly
 * increasing epochs; commitExtents() publishes only while the caller's lock record is still the
 * one in etcd, in the same transaction as the writes, so a fenced writer publishes nothing.
 * What it leaves out: snapshots (keys reserved), and caching (every read goes to etcd).
 */
import { randomBytes } from 'node:crypto';
import { Etcd3, type Lease } from 'etcd3';
import {
  AuthRejectedError,
  InvalidArgumentError,
  MapRootMovedError,
  PartialCommitError,
  assert,
  errorMessage,
  failpoint,
  UnavailableError,
} from '../core/index.js';
import { withDeadline } from './deadline.js';
import {
  diagnoseEtcdTls,
  etcd3CredentialOptions,
  etcdCredentialsFrom,
  type EtcdCredentials,
} from './etcd_credentials.js';
import { AlreadyExistsError, FencedError, NotFoundError, PreconditionError, VolumeLockedError } from './errors.js';
import {
  type AliveRecord,
  type JournalLayout,
  type CensusRecord,
  type ClusterConfig,
  type ExtentRecord,
  type LockRecord,
  type PendingFlushRecord,
  type TargetRecord,
  type VolumeRecord,
  decodeAlive,
  decodeCluster,
  decodeExtent,
  decodeMapRoot,
  encodeMapRoot,
  type MapRootRecord,
  decodeJournal,
  decodeCensus,
  decodeLock,
  decodePendingFlush,
  decodeTarget,
  decodeVolume,
  decodePolicy,
  decodeSnapshot,
  decodeTrash,
  type PolicyRecord,
  encodeSnapshot,
  lineageId,
  type TrashRecord,
  type SnapshotRecord,
  keys,
} from './schema.js';
import { etcdCallTimeoutMsDefault, extentsPerTxnMax, lockTtlSecondsDefault } from './limits.js';

export interface EtcdMetaOptions {
  /** Per-call deadline. */
  readonly timeoutMs?: number;
  /**
   * Client TLS and user/password (etcd_credentials.ts); absent: what the CAIRN_ETCD_* variables
   * of this process give (none set: plaintext, no auth).
   */
  readonly credentials?: EtcdCredentials;
}

/** A held volume write lock. */
export interface VolumeLock {
  readonly volume: string;
  readonly owner: string;
  readonly epoch: number;
  /** The exact JSON stored at the lock key; commits compare against it. */
  readonly record: string;
  /** Resolves or rejects once the lease behind the lock is lost (expired, revoked, taken over). */
  readonly lost: Promise<Error>;
  /**
   * Publishes (or, with null, removes) `pending-flush/<volume>` under the lock's lease, only while
   * the lock still holds this record: so it vanishes with the holder. For status; idempotent.
   */
  setPendingFlush(record: PendingFlushRecord | null): Promise<void>;
  release(): Promise<void>;
}

/** What `cairn/v1/repair/progress` holds: the last repair run's progress, for resuming and ETA. */
export interface RepairCheckpoint {
  readonly startedAt: string;
  readonly updatedAt: string;
  readonly state: 'running' | 'done' | 'failed';
  readonly extentsTotal: number;
  readonly extentsDone: number;
  readonly shardsRebuilt: number;
  readonly bytesWritten: number;
  readonly unrecoverable: number;
}

export interface ExtentUpdate {
  readonly index: number;
  /** The new generation, or null to make the extent a hole again (after a whole-extent trim). */
  readonly record: ExtentRecord | null;
}

/** Parses --etcd values: "http://h:p", "h:p" or a comma-separated list of them. */
export function parseEndpoints(text: string): string[] {
  const list = text
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s !== '');
  if (list.length === 0) throw new InvalidArgumentError('No etcd endpoint given: pass --etcd URL or set CAIRN_ETCD');
  return list.map((e) => {
    const url = /^[a-z]+:\/\//.test(e) ? e : `http://${e}`;
    let parsed: URL;
    try {
      parsed = new URL(url);
    } catch {
      throw new InvalidArgumentError(`Invalid etcd endpoint "${e}": expected http://HOST:PORT`);
    }
    if (parsed.protocol !== 'http:' && parsed.protocol !== 'https:') {
      throw new InvalidArgumentError(`Invalid etcd endpoint "${e}": only http and https are supported`);
    }
    if (parsed.port === '') throw new InvalidArgumentError(`Invalid etcd endpoint "${e}": a port is required`);
    return `${parsed.protocol}//${parsed.host}`;
  });
}

export class EtcdMeta {
  readonly endpoints: readonly string[];
  readonly client: Etcd3;
  private readonly timeoutMs: number;
  private readonly credentials: EtcdCredentials;
  /** The TLS diagnosis runs once per client (a dead endpoint would otherwise be probed per call). */
  private diagnosed = false;

  private readonly closers: (() => void)[] = [];

  constructor(endpoints: readonly string[], options: EtcdMetaOptions = {}) {
    this.endpoints = endpoints;
    this.timeoutMs = options.timeoutMs ?? etcdCallTimeoutMsDefault;
    this.credentials = options.credentials ?? etcdCredentialsFrom({}, process.env);
    this.client = new Etcd3({
      hosts: [...endpoints],
      ...etcd3CredentialOptions(endpoints, this.credentials),
      dialTimeout: this.timeoutMs,
      // Unary calls carry a gRPC deadline too, so a hung call is cancelled, not only abandoned.
      defaultCallOptions: (context) => (context.isStream ? {} : { deadline: Date.now() + this.timeoutMs }),
    });
  }

  /** Runs `fn` when this client closes (what others opened for it: the map page stores). */
  onClose(fn: () => void): void {
    this.closers.push(fn);
  }

  close(): void {
    for (const fn of this.closers.splice(0)) fn();
    this.client.close();
  }

  /** Runs one etcd call under the deadline, naming `what` if it fails. */
  call<T>(what: string, work: () => PromiseLike<T>): Promise<T> {
    return withDeadline(Promise.resolve(work()), { timeoutMs: this.timeoutMs, endpoints: this.endpoints, what }).catch(
      (err: unknown) => this.explained(err),
    );
  }

  /**
   * gRPC says only "No connection established" for every TLS failure: ask each endpoint why,
   * once, and throw the reason (an AuthRejectedError when TLS refused), else `err` itself.
   */
  private async explained(err: unknown): Promise<never> {
    if (!(err instanceof UnavailableError) || !/No connection established/.test(err.message) || this.diagnosed)
      throw err;
    this.diagnosed = true;
    const reasons: string[] = [];
    for (const endpoint of this.endpoints) {
      const why = await diagnoseEtcdTls(endpoint, this.credentials);
      if (why !== undefined) reasons.push(`etcd at ${endpoint}: ${why}`);
    }
    if (reasons.length === 0) throw err;
    // OpenSSL's texts end in a newline; the CLI prints one line.
    const oneLine = (text: string): string => text.replace(/\s*\n\s*/g, ' ').trim();
    throw new AuthRejectedError(oneLine(`${err.message}; ${reasons.join('; ')}`), { cause: err });
  }

  // --- cluster ---------------------------------------------------------------------------------

  async getCluster(): Promise<ClusterConfig | null> {
    const key = keys.cluster();
    const text = await this.call(`get ${key}`, () => this.client.get(key).string());
    return text === null ? null : decodeCluster(key, text);
  }

  /** The cluster config, or a NotFoundError telling the user to run `cairnctl init`. */
  async requireCluster(): Promise<ClusterConfig> {
    const config = await this.getCluster();
    if (config === null)
      throw new NotFoundError(`The cluster at ${this.endpoints.join(',')} is not initialised: run cairnctl init`);
    return config;
  }

  /** Writes the cluster config; refuses when one exists unless `force`. */
  async initCluster(config: ClusterConfig, force: boolean): Promise<void> {
    const key = keys.cluster();
    const value = JSON.stringify(config);
    if (force) {
      await this.call(`put ${key}`, () => this.client.put(key).value(value).exec());
      return;
    }
    const result = await this.call(`create ${key}`, () =>
      this.client.if(key, 'Create', '==', 0).then(this.client.put(key).value(value)).commit(),
    );
    if (!result.succeeded) {
      throw new AlreadyExistsError(
        `The cluster at ${this.endpoints.join(',')} is already initialised; pass --force to overwrite its config`,
      );
    }
  }

  // --- targets and liveness --------------------------------------------------------------------

  async listTargets(): Promise<TargetRecord[]> {
    const prefix = keys.targetsPrefix();
    const all = await this.call(`list ${prefix}`, () => this.client.getAll().prefix(prefix).strings());
    return Object.entries(all)
      .map(([k, v]) => decodeTarget(k, v))
      .sort((a, b) => a.name.localeCompare(b.name));
  }

  async getTarget(name: string): Promise<TargetRecord | null> {
    const key = keys.target(name);
    const text = await this.call(`get ${key}`, () => this.client.get(key).string());
    return text === null ? null : decodeTarget(key, text);
  }

  /** Creates a target record; refuses when the name is taken (by any kind of target). */
  async addTarget(record: TargetRecord): Promise<void> {
    const key = keys.target(record.name);
    const result = await this.call(`create ${key}`, () =>
      this.client
        .if(key, 'Create', '==', 0)
        .then(this.client.put(key).value(JSON.stringify(record)))
        .commit(),
    );
    if (!result.succeeded) throw new AlreadyExistsError(`A target named "${record.name}" already exists`);
  }

  async removeTarget(name: string): Promise<void> {
    const key = keys.target(name);
    const result = await this.call(`delete ${key}`, () => this.client.delete().key(key).exec());
    if (Number(result.deleted) === 0) throw new NotFoundError(`No target named "${name}"`);
  }

  async listAlive(): Promise<AliveRecord[]> {
    const prefix = keys.alivePrefix();
    const all = await this.call(`list ${prefix}`, () => this.client.getAll().prefix(prefix).strings());
    return Object.entries(all).map(([k, v]) => decodeAlive(k, v));
  }

  // --- volumes ---------------------------------------------------------------------------------

  static newVolumeId(): string {
    return randomBytes(8).toString('hex');
  }

  async createVolume(record: VolumeRecord): Promise<void> {
    const key = keys.volume(record.name);
    const result = await this.call(`create ${key}`, () =>
      this.client
        .if(key, 'Create', '==', 0)
        .then(this.client.put(key).value(JSON.stringify(record)))
        .commit(),
    );
    if (!result.succeeded) throw new AlreadyExistsError(`Volume "${record.name}" already exists`);
  }

  async getVolume(name: string): Promise<VolumeRecord | null> {
    const key = keys.volume(name);
    const text = await this.call(`get ${key}`, () => this.client.get(key).string());
    return text === null ? null : decodeVolume(key, text);
  }

  async requireVolume(name: string): Promise<VolumeRecord> {
    const volume = await this.getVolume(name);
    if (volume === null) throw new NotFoundError(`No volume named "${name}"`);
    return volume;
  }

  async listVolumes(): Promise<VolumeRecord[]> {
    const prefix = keys.volumesPrefix();
    const all = await this.call(`list ${prefix}`, () => this.client.getAll().prefix(prefix).strings());
    return Object.entries(all)
      .map(([k, v]) => decodeVolume(k, v))
      .sort((a, b) => a.name.localeCompare(b.name));
  }

  /**
   * Deletes a volume's record and queues its id for garbage collection, in one transaction, so
   * the name is free at once and no shard is forgotten; with `trash`, moves it to the trash
   * instead (`trash/<id>`, restorable, nothing freed). Refuses while a writer holds its lock, and
   * (not for the trash) while a volume cloned from one of its snapshots exists.
   */
  async deleteVolume(name: string, options: { readonly trash?: boolean } = {}): Promise<VolumeRecord> {
    const got = await this.getVolumeWithRevision(name);
    if (got === null) throw new NotFoundError(`No volume named "${name}"`);
    const volume = got.record;
    const key = keys.volume(name);
    const lockKey = keys.lock(name);
    // Its snapshots go with it, unless a volume was cloned from one (it reads their shards).
    const snapshots = await this.listSnapshots(volume.id);
    const cloned = snapshots.filter((s) => s.clones.length > 0);
    // In the trash its shards stay, so its clones keep reading; only a purge must wait for them.
    if (cloned.length > 0 && options.trash !== true) {
      const names: string[] = [];
      for (const s of cloned) for (const n of await this.cloneNames(s.clones)) names.push(`${n} (from ${s.name})`);
      throw new PreconditionError(
        `Cannot delete volume "${name}": volumes were cloned from its snapshots: ${names.join(', ')}; flatten or delete them first`,
      );
    }
    // A clone leaves its parent snapshot's list of clones (one in the trash stays on it: it may
    // come back).
    const leave = options.trash === true ? undefined : await this.leaveParent(volume);
    const epochRes = await this.call(`get ${keys.epoch(name)}`, () => this.client.get(keys.epoch(name)).string());
    const result = await this.call(`delete ${key}`, () => {
      const txn = this.client.if(key, 'Mod', '==', Number(got.modRevision)).and(lockKey, 'Create', '==', 0);
      const ops = [
        this.client.delete().key(key),
        this.client.delete().key(keys.epoch(name)),
        options.trash === true
          ? this.client.put(keys.trash(volume.id)).value(
              JSON.stringify({
                volume,
                deletedAt: new Date().toISOString(),
                epoch: epochRes === null ? 0 : Number(epochRes),
              } satisfies TrashRecord),
            )
          : this.client
              .put(keys.gcVolume(volume.id))
              .value(JSON.stringify({ name, deletedAt: new Date().toISOString() })),
      ];
      if (leave !== undefined) {
        txn.and(leave.key, 'Value', '==', leave.text);
        ops.push(this.client.put(leave.key).value(leave.value));
      }
      return txn.then(...ops).commit();
    });
    if (!result.succeeded) {
      const lock = await this.getLock(name);
      if (lock !== null)
        throw new VolumeLockedError(
          `Cannot delete volume "${name}": it is attached by ${lock.owner} (epoch ${lock.epoch})`,
          lock.owner,
          lock.epoch,
        );
      throw new AlreadyExistsError(`Cannot delete volume "${name}": it changed while being deleted; try again`);
    }
    return volume;
  }

  /** Volumes in the trash, most recently deleted first. */
  async listTrash(): Promise<TrashRecord[]> {
    const prefix = keys.trashPrefix();
    const all = await this.call(`list ${prefix}`, () => this.client.getAll().prefix(prefix).strings());
    return Object.entries(all)
      .map(([k, v]) => decodeTrash(k, v))
      .sort((a, b) => b.deletedAt.localeCompare(a.deletedAt));
  }

  /**
   * Brings a volume back from the trash under `name` (its old name by default), with its epoch
   * counter. Refuses, changing nothing, when the name is taken.
   */
  async restoreFromTrash(volumeId: string, name?: string): Promise<VolumeRecord> {
    const key = keys.trash(volumeId);
    const text = await this.call(`get ${key}`, () => this.client.get(key).string());
    if (text === null) throw new NotFoundError(`No volume with id ${volumeId} in the trash`);
    const trashed = decodeTrash(key, text);
    const restored: VolumeRecord = { ...trashed.volume, name: name ?? trashed.volume.name };
    const result = await this.call(`restore ${key}`, () =>
      this.client
        .if(key, 'Value', '==', text)
        .and(keys.volume(restored.name), 'Create', '==', 0)
        .and(keys.lock(restored.name), 'Create', '==', 0)
        .then(
          this.client.delete().key(key),
          this.client.put(keys.volume(restored.name)).value(JSON.stringify(restored)),
          this.client.put(keys.epoch(restored.name)).value(String(trashed.epoch)),
        )
        .commit(),
    );
    if (!result.succeeded) {
      if ((await this.getVolume(restored.name)) !== null)
        throw new AlreadyExistsError(
          `Cannot restore volume "${trashed.volume.name}": a volume named "${restored.name}" exists; restore it under another name (--as)`,
        );
      throw new AlreadyExistsError(`Cannot restore volume "${trashed.volume.name}": it changed meanwhile; try again`);
    }
    return restored;
  }

  /**
   * Empties a volume out of the trash: queues its id for gc (its shards and snapshots go), and a
   * clone leaves its parent snapshot's list of clones. Refused while a clone of one of its
   * snapshots exists.
   */
  async purgeTrash(volumeId: string): Promise<TrashRecord> {
    const key = keys.trash(volumeId);
    const text = await this.call(`get ${key}`, () => this.client.get(key).string());
    if (text === null) throw new NotFoundError(`No volume with id ${volumeId} in the trash`);
    const trashed = decodeTrash(key, text);
    const { volume } = trashed;
    const cloned = (await this.listSnapshots(volume.id)).filter((s) => s.clones.length > 0);
    if (cloned.length > 0)
      throw new PreconditionError(
        `Cannot purge volume "${volume.name}" from the trash: volumes were cloned from its snapshots (${cloned.map((s) => `${s.name}: ${s.clones.join(', ')}`).join('; ')}); flatten or delete them first`,
      );
    const leave = await this.leaveParent(volume);
    const result = await this.call(`purge ${key}`, () => {
      const txn = this.client.if(key, 'Value', '==', text);
      const ops = [
        this.client.delete().key(key),
        this.client
          .put(keys.gcVolume(volume.id))
          .value(JSON.stringify({ name: volume.name, deletedAt: trashed.deletedAt })),
      ];
      if (leave !== undefined) {
        txn.and(leave.key, 'Value', '==', leave.text);
        ops.push(this.client.put(leave.key).value(leave.value));
      }
      return txn.then(...ops).commit();
    });
    if (!result.succeeded)
      throw new AlreadyExistsError(`Cannot purge volume "${volume.name}": it changed meanwhile; try again`);
    return trashed;
  }

  async listGcVolumes(): Promise<{ id: string; name: string }[]> {
    const prefix = keys.gcVolumesPrefix();
    const all = await this.call(`list ${prefix}`, () => this.client.getAll().prefix(prefix).strings());
    return Object.entries(all).map(([k, v]) => {
      const parsed = JSON.parse(v) as { name?: unknown };
      return { id: k.slice(prefix.length), name: typeof parsed.name === 'string' ? parsed.name : '' };
    });
  }

  /** Forgets a collected volume: its gc record, its map root and any extent keys left. */
  async finishGcVolume(volumeId: string): Promise<void> {
    await this.call(`delete extents of ${volumeId}`, () =>
      this.client
        .if(keys.gcVolume(volumeId), 'Create', '>', 0)
        .then(
          this.client.delete().prefix(keys.extentsPrefix(volumeId)),
          this.client.delete().key(keys.journal(volumeId)),
          this.client.delete().key(keys.census(volumeId)),
          this.client.delete().key(keys.mapRoot(volumeId)),
          this.client.delete().prefix(keys.snapshotsPrefix(volumeId)),
          this.client.delete().prefix(keys.snapshotRequestsPrefix(volumeId)),
          this.client.delete().key(keys.resizeRequest(volumeId)),
          this.client.delete().prefix(`${keys.gcSnapshotsPrefix()}${volumeId}/`),
          this.client.delete().key(keys.snapshotTip(volumeId)),
          this.client.delete().key(keys.gcVolume(volumeId)),
        )
        .commit(),
    );
  }

  // --- the volume write lock and fencing -------------------------------------------------------

  /** Every volume's pending final flush (see VolumeLock.setPendingFlush), by volume name; one range read. */
  async listPendingFlushes(): Promise<Map<string, PendingFlushRecord>> {
    const prefix = keys.pendingFlushPrefix();
    const all = await this.call(`list ${prefix}`, () => this.client.getAll().prefix(prefix).strings());
    return new Map(Object.entries(all).map(([k, v]) => [k.slice(prefix.length), decodePendingFlush(k, v)]));
  }

  async getLock(volume: string): Promise<LockRecord | null> {
    const key = keys.lock(volume);
    const text = await this.call(`get ${key}`, () => this.client.get(key).string());
    return text === null ? null : decodeLock(key, text);
  }

  /**
   * Takes the write lock of `volume` for `owner` under a lease of `ttlSeconds`, and returns its
   * fencing epoch: one more than any epoch handed out before for this volume. When another owner
   * holds it, throws VolumeLockedError, unless `takeover` is set: then the lock moves to us with
   * a new epoch and the old holder's next commit is fenced.
   */
  async acquireLock(
    volume: string,
    owner: string,
    options: { ttlSeconds?: number; takeover?: boolean } = {},
  ): Promise<VolumeLock> {
    await this.requireVolume(volume);
    const lockKey = keys.lock(volume);
    const epochKey = keys.epoch(volume);
    const lease: Lease = this.client.lease(options.ttlSeconds ?? lockTtlSecondsDefault, { autoKeepAlive: true });
    let lostResolve: (err: Error) => void = () => undefined;
    const lost = new Promise<Error>((resolve) => {
      lostResolve = resolve;
    });
    lease.on('lost', (err) =>
      lostResolve(new FencedError(`Lost the write lock of volume "${volume}": ${errorMessage(err)}`)),
    );
    try {
      const leaseId = await this.call(`grant lease for ${lockKey}`, () => lease.grant());
      // Compare-and-swap loop: read the epoch counter and the lock, then write both only if
      // neither changed. Bounded, because each failed round means another writer made progress.
      for (let attempt = 0; attempt < 16; attempt++) {
        const [epochRes, lockRes] = await this.call(`read ${lockKey}`, () =>
          Promise.all([this.client.get(epochKey).exec(), this.client.get(lockKey).exec()]),
        );
        const epochKv = epochRes.kvs[0];
        const lockKv = lockRes.kvs[0];
        const previousEpoch = epochKv === undefined ? 0 : Number(epochKv.value.toString());
        assert(Number.isSafeInteger(previousEpoch) && previousEpoch >= 0, `corrupt epoch at ${epochKey}`);
        if (lockKv !== undefined && !options.takeover) {
          const held = decodeLock(lockKey, lockKv.value.toString());
          throw new VolumeLockedError(
            `Volume "${volume}" is attached by ${held.owner} (epoch ${held.epoch}); wait for it to detach or use --force-takeover`,
            held.owner,
            held.epoch,
          );
        }
        const epoch = previousEpoch + 1;
        const record = JSON.stringify({ owner, epoch, acquiredAt: new Date().toISOString() } satisfies LockRecord);
        const txn = this.client
          .if(epochKey, 'Mod', '==', epochKv === undefined ? 0 : Number(epochKv.mod_revision))
          .and(lockKey, 'Mod', '==', lockKv === undefined ? 0 : Number(lockKv.mod_revision))
          .then(this.client.put(epochKey).value(String(epoch)), this.client.put(lockKey).value(record).lease(leaseId));
        const result = await this.call(`take ${lockKey}`, () => txn.commit());
        if (result.succeeded) {
          return {
            volume,
            owner,
            epoch,
            record,
            lost,
            setPendingFlush: async (pending) => {
              const key = keys.pendingFlush(volume);
              await this.call(`${pending === null ? 'delete' : 'put'} ${key}`, () =>
                this.client
                  .if(lockKey, 'Value', '==', record)
                  .then(
                    pending === null
                      ? this.client.delete().key(key)
                      : this.client.put(key).value(JSON.stringify(pending)).lease(leaseId),
                  )
                  .commit(),
              );
            },
            release: async () => {
              // Delete only our own records, then drop the lease; a taken-over lock is left alone.
              await this.call(`release ${lockKey}`, () =>
                this.client
                  .if(lockKey, 'Value', '==', record)
                  .then(this.client.delete().key(lockKey), this.client.delete().key(keys.pendingFlush(volume)))
                  .commit(),
              ).catch(() => undefined);
              await lease.revoke().catch(() => undefined);
            },
          };
        }
      }
      throw new VolumeLockedError(`Cannot lock volume "${volume}": too much contention, try again`, '', 0);
    } catch (err) {
      await lease.revoke().catch(() => undefined);
      throw err;
    }
  }

  /**
   * Publishes extent records for `lock`'s volume, each batch in one transaction that first checks
   * the lock key still holds exactly `lock.record` (batches of extentsPerTxnMax: etcd bounds the
   * operations in one transaction). Throws FencedError, having published nothing in that batch or
   * after it, when the lock was lost or taken over; its `published` lists the extents of earlier
   * batches, which ARE published. Any other failure after the first batch is a PartialCommitError
   * with the same list.
   */
  async commitExtents(lock: VolumeLock, volumeId: string, updates: readonly ExtentUpdate[]): Promise<void> {
    const lockKey = keys.lock(lock.volume);
    const published: number[] = [];
    for (let start = 0; start < updates.length; start += extentsPerTxnMax) {
      const batch = updates.slice(start, start + extentsPerTxnMax);
      if (start > 0) await failpoint('meta.commit.between_batches');
      let result: Awaited<ReturnType<ReturnType<Etcd3['if']>['commit']>>;
      try {
        result = await this.call(`commit ${batch.length} extents of ${lock.volume}`, () =>
          this.client
            .if(lockKey, 'Value', '==', lock.record)
            .then(
              ...batch.map((u) =>
                u.record === null
                  ? this.client.delete().key(keys.extent(volumeId, u.index))
                  : this.client.put(keys.extent(volumeId, u.index)).value(JSON.stringify(u.record)),
              ),
            )
            .commit(),
        );
      } catch (err) {
        if (published.length === 0) throw err;
        throw new PartialCommitError(
          `Cannot commit extents of volume "${lock.volume}" after ${published.length} of ${updates.length} were published: ${errorMessage(err)}`,
          published,
          err,
        );
      }
      if (!result.succeeded) {
        throw new FencedError(
          `Cannot commit extents of volume "${lock.volume}": this writer (epoch ${lock.epoch}) no longer holds its lock` +
            (published.length > 0 ? ` (${published.length} of ${updates.length} extents were published before)` : ''),
          { published },
        );
      }
      for (const u of batch) published.push(u.index);
    }
  }

  /**
   * Takes the next epoch of `volume`'s counter without taking its lock: for a repair or a
   * migration that writes map pages (named by epoch) while a writer may hold the volume. The
   * writer is not fenced by it (fencing compares the lock record); the next lock gets a later epoch.
   */
  async allocateEpoch(volume: string): Promise<number> {
    const epochKey = keys.epoch(volume);
    for (let attempt = 0; attempt < 16; attempt++) {
      const res = await this.call(`read ${epochKey}`, () => this.client.get(epochKey).exec());
      const kv = res.kvs[0];
      const previous = kv === undefined ? 0 : Number(kv.value.toString());
      assert(Number.isSafeInteger(previous) && previous >= 0, `corrupt epoch at ${epochKey}`);
      const result = await this.call(`bump ${epochKey}`, () =>
        this.client
          .if(epochKey, 'Mod', '==', kv === undefined ? 0 : Number(kv.mod_revision))
          .then(this.client.put(epochKey).value(String(previous + 1)))
          .commit(),
      );
      if (result.succeeded) return previous + 1;
    }
    throw new MapRootMovedError(`Cannot take an epoch of volume "${volume}": its counter kept changing`);
  }

  /** True when the volume still keeps extent records under per-extent keys (written before map trees). */
  async hasExtentKeys(volumeId: string): Promise<boolean> {
    const prefix = keys.extentsPrefix(volumeId);
    const res = await this.call(`list ${prefix}`, () => this.client.getAll().prefix(prefix).limit(1).keys());
    return res.length > 0;
  }

  /** Deletes the per-extent keys of a volume (after a migration published them as a map tree). */
  async deleteExtentKeys(volumeId: string): Promise<void> {
    const prefix = keys.extentsPrefix(volumeId);
    await this.call(`delete ${prefix}`, () => this.client.delete().prefix(prefix).exec());
  }

  /** The extent-map root of a volume (`maproots/<id>`): an empty map of `levels` when there is none. */
  async readMapRoot(volumeId: string, levels: number): Promise<MapRootRecord> {
    const key = keys.mapRoot(volumeId);
    const text = await this.call(`get ${key}`, () => this.client.get(key).string());
    return text === null ? { levels, page: undefined } : decodeMapRoot(key, text);
  }

  /**
   * Publishes `next` as the volume's map root in one transaction that checks `lock` still holds
   * the volume and the root is still `expected` (absent for an empty map). Publishes nothing
   * when either check fails, and says which: FencedError when the lock was lost or taken over,
   * MapRootMovedError when the lock is still held but a repair replaced the root meanwhile.
   */
  async swapMapRoot(lock: VolumeLock, volumeId: string, expected: MapRootRecord, next: MapRootRecord): Promise<void> {
    const key = keys.mapRoot(volumeId);
    const result = await this.call(`swap ${key}`, () => {
      const txn = this.client.if(keys.lock(lock.volume), 'Value', '==', lock.record);
      if (expected.page === undefined) txn.and(key, 'Create', '==', 0);
      else txn.and(key, 'Value', '==', encodeMapRoot(expected));
      return txn
        .then(next.page === undefined ? this.client.delete().key(key) : this.client.put(key).value(encodeMapRoot(next)))
        .commit();
    });
    if (result.succeeded) return;
    const holder = await this.call(`get ${keys.lock(lock.volume)}`, () =>
      this.client.get(keys.lock(lock.volume)).string(),
    );
    if (holder !== lock.record)
      throw new FencedError(
        `Cannot publish the map root of volume "${lock.volume}": this writer (epoch ${lock.epoch}) no longer holds its lock`,
        { published: [] },
      );
    throw new MapRootMovedError(
      `Cannot publish the map root of volume "${lock.volume}": the root changed since it was read (a repair moved shards)`,
    );
  }

  /**
   * Publishes `next` as the volume's map root if the root is still `expected`, whoever holds the
   * volume: for repair and scrub, which move shards of one generation and must not wait for a
   * writer to detach. A writer's own swap then finds the root moved and rebuilds its commit on
   * this one (MapRootMovedError). Returns false, writing nothing, when the root changed.
   */
  async replaceMapRoot(volumeId: string, expected: MapRootRecord, next: MapRootRecord): Promise<boolean> {
    const key = keys.mapRoot(volumeId);
    const result = await this.call(`replace ${key}`, () => {
      const txn =
        expected.page === undefined
          ? this.client.if(key, 'Create', '==', 0)
          : this.client.if(key, 'Value', '==', encodeMapRoot(expected));
      return txn
        .then(next.page === undefined ? this.client.delete().key(key) : this.client.put(key).value(encodeMapRoot(next)))
        .commit();
    });
    return result.succeeded;
  }

  async getExtent(volumeId: string, index: number): Promise<ExtentRecord | null> {
    const key = keys.extent(volumeId, index);
    const text = await this.call(`get ${key}`, () => this.client.get(key).string());
    return text === null ? null : decodeExtent(key, text);
  }

  /** Extent records with their etcd mod revisions, for compare-and-swap replacement. */
  async listExtentsWithRevision(volumeId: string): Promise<Map<number, { record: ExtentRecord; modRevision: string }>> {
    const prefix = keys.extentsPrefix(volumeId);
    const res = await this.call(`list ${prefix}`, () => this.client.getAll().prefix(prefix).exec());
    const out = new Map<number, { record: ExtentRecord; modRevision: string }>();
    for (const kv of res.kvs) {
      const key = kv.key.toString();
      out.set(Number(key.slice(prefix.length)), {
        record: decodeExtent(key, kv.value.toString()),
        modRevision: String(kv.mod_revision),
      });
    }
    return out;
  }

  async getExtentWithRevision(
    volumeId: string,
    index: number,
  ): Promise<{ record: ExtentRecord; modRevision: string } | null> {
    const key = keys.extent(volumeId, index);
    const res = await this.call(`get ${key}`, () => this.client.get(key).exec());
    const kv = res.kvs[0];
    return kv === undefined
      ? null
      : { record: decodeExtent(key, kv.value.toString()), modRevision: String(kv.mod_revision) };
  }

  /**
   * Replaces extent `index`'s record only if it is unchanged since `modRevision`: a repair moves
   * shards of one generation and must never overwrite a newer generation a writer published.
   * Returns false, writing nothing, when the record changed.
   */
  async replaceExtent(volumeId: string, index: number, modRevision: string, record: ExtentRecord): Promise<boolean> {
    const key = keys.extent(volumeId, index);
    const result = await this.call(`replace ${key}`, () =>
      this.client
        .if(key, 'Mod', '==', Number(modRevision))
        .then(this.client.put(key).value(JSON.stringify(record)))
        .commit(),
    );
    return result.succeeded;
  }

  /** The volume's journal layout, or null when it has none yet. */
  /** The last census of a volume's shards, or null when none ran since it was created. */
  async getCensus(volumeId: string): Promise<CensusRecord | null> {
    const key = keys.census(volumeId);
    const text = await this.call(`get ${key}`, () => this.client.get(key).string());
    return text === null ? null : decodeCensus(key, text);
  }

  async putCensus(volumeId: string, record: CensusRecord): Promise<void> {
    const key = keys.census(volumeId);
    await this.call(`put ${key}`, () => this.client.put(key).value(JSON.stringify(record)).exec());
  }

  async getJournal(volumeId: string): Promise<JournalLayout | null> {
    const key = keys.journal(volumeId);
    const text = await this.call(`get ${key}`, () => this.client.get(key).string());
    return text === null ? null : decodeJournal(key, text);
  }

  /**
   * Writes the volume's journal layout, fenced like an extent commit: only while `lock` is still
   * the volume's lock record. Throws FencedError otherwise, having written nothing.
   */
  async putJournal(lock: VolumeLock, volumeId: string, layout: JournalLayout): Promise<void> {
    const key = keys.journal(volumeId);
    const result = await this.call(`put ${key}`, () =>
      this.client
        .if(keys.lock(lock.volume), 'Value', '==', lock.record)
        .then(this.client.put(key).value(JSON.stringify(layout)))
        .commit(),
    );
    if (!result.succeeded) {
      throw new FencedError(
        `Cannot change the journal of volume "${lock.volume}": this writer (epoch ${lock.epoch}) no longer holds its lock`,
      );
    }
  }

  // --- policy rules ------------------------------------------------------------------------------

  /** Adds a rule (create-only: AlreadyExistsError when the name is taken). */
  async createPolicy(rule: PolicyRecord): Promise<void> {
    const key = keys.policy(rule.name);
    const result = await this.call(`create ${key}`, () =>
      this.client
        .if(key, 'Create', '==', 0)
        .then(this.client.put(key).value(JSON.stringify(rule)))
        .commit(),
    );
    if (!result.succeeded) throw new AlreadyExistsError(`A policy rule named "${rule.name}" exists already`);
  }

  /** Every rule, by name. */
  async listPolicies(): Promise<PolicyRecord[]> {
    const prefix = keys.policiesPrefix();
    const all = await this.call(`list ${prefix}`, () => this.client.getAll().prefix(prefix).strings());
    return Object.entries(all)
      .map(([k, v]) => decodePolicy(k, v))
      .sort((a, b) => a.name.localeCompare(b.name));
  }

  /** Removes a rule; NotFoundError when there is none of that name. */
  async deletePolicy(name: string): Promise<void> {
    const key = keys.policy(name);
    const res = await this.call(`delete ${key}`, () => this.client.delete().key(key).exec());
    if (Number(res.deleted) === 0) throw new NotFoundError(`No policy rule named "${name}"`);
  }

  // --- snapshots and clones ----------------------------------------------------------------------

  /** A volume's snapshots, oldest first. */
  async listSnapshots(volumeId: string): Promise<SnapshotRecord[]> {
    const prefix = keys.snapshotsPrefix(volumeId);
    const all = await this.call(`list ${prefix}`, () => this.client.getAll().prefix(prefix).strings());
    return Object.entries(all)
      .map(([k, v]) => decodeSnapshot(k, v))
      .sort((a, b) => a.createdAt.localeCompare(b.createdAt) || a.name.localeCompare(b.name));
  }

  async getSnapshot(volumeId: string, name: string): Promise<SnapshotRecord | null> {
    const key = keys.snapshot(volumeId, name);
    const text = await this.call(`get ${key}`, () => this.client.get(key).string());
    return text === null ? null : decodeSnapshot(key, text);
  }

  /**
   * Publishes `snapshot` (create-only) if the volume's map root is still `snapshot.root` and, with
   * `lock`, that writer still holds the volume (without: no writer does). With `request`, the
   * request key must still exist and is deleted in the same transaction (the asker may withdraw
   * it). Its `parent` is the volume's snapshot tip, which becomes it, in the same transaction.
   * Returns the record written. Throws, having written nothing: AlreadyExistsError, FencedError,
   * MapRootMovedError (read the root again), VolumeLockedError, or NotFoundError for a withdrawn
   * request.
   */
  async createSnapshot(
    snapshot: SnapshotRecord,
    options: { readonly lock?: VolumeLock; readonly request?: boolean },
  ): Promise<SnapshotRecord> {
    const key = keys.snapshot(snapshot.volumeId, snapshot.name);
    const rootKey = keys.mapRoot(snapshot.volumeId);
    const requestKey = keys.snapshotRequest(snapshot.volumeId, snapshot.name);
    const tipKey = keys.snapshotTip(snapshot.volumeId);
    const lockKey = keys.lock(options.lock?.volume ?? snapshot.volume);
    for (let attempt = 0; ; attempt++) {
      const tip = await this.getSnapshotTip(snapshot.volumeId);
      const made: SnapshotRecord = { ...snapshot, parent: tip };
      const result = await this.call(`create ${key}`, () => {
        const txn = this.client.if(key, 'Create', '==', 0);
        if (options.lock === undefined) txn.and(lockKey, 'Create', '==', 0);
        else txn.and(lockKey, 'Value', '==', options.lock.record);
        if (snapshot.root.page === undefined) txn.and(rootKey, 'Create', '==', 0);
        else txn.and(rootKey, 'Value', '==', encodeMapRoot(snapshot.root));
        if (tip === null) txn.and(tipKey, 'Create', '==', 0);
        else txn.and(tipKey, 'Value', '==', tip);
        if (options.request === true) txn.and(requestKey, 'Create', '>', 0);
        const ops = [this.client.put(key).value(encodeSnapshot(made)), this.client.put(tipKey).value(lineageId(made))];
        if (options.request === true) ops.push(this.client.delete().key(requestKey) as never);
        return txn.then(...ops).commit();
      });
      if (result.succeeded) return made;
      // The tip moved (gc relinked the lineage meanwhile): read it again.
      if ((await this.getSnapshotTip(snapshot.volumeId)) !== tip && attempt < 8) continue;
      const what = `Cannot create snapshot "${snapshot.name}" of volume "${snapshot.volume}"`;
      if ((await this.getSnapshot(snapshot.volumeId, snapshot.name)) !== null)
        throw new AlreadyExistsError(`${what}: a snapshot of that name exists`);
      const holder = await this.getLock(lockKey.slice(keys.lock('').length));
      if (options.lock !== undefined && (holder === null || holder.epoch !== options.lock.epoch))
        throw new FencedError(`${what}: this writer (epoch ${options.lock.epoch}) no longer holds the volume`);
      if (options.lock === undefined && holder !== null)
        throw new VolumeLockedError(
          `${what}: it was attached by ${holder.owner} meanwhile`,
          holder.owner,
          holder.epoch,
        );
      if (options.request === true) {
        const asked = await this.call(`get ${requestKey}`, () => this.client.get(requestKey).string());
        if (asked === null) throw new NotFoundError(`${what}: the request was withdrawn`);
      }
      throw new MapRootMovedError(`${what}: the map root changed while it was taken`);
    }
  }

  /** The lineage id of the snapshot a volume's live map descends from (keys.snapshotTip), or null. */
  async getSnapshotTip(volumeId: string): Promise<string | null> {
    const key = keys.snapshotTip(volumeId);
    return this.call(`get ${key}`, () => this.client.get(key).string());
  }

  /**
   * Rolls a volume back: its map root becomes `next` (snapshot `snap`'s) if it is still
   * `expected` and `lock` still holds the volume, and the snapshot (unchanged, checked) becomes
   * its snapshot tip. Throws FencedError or MapRootMovedError, writing nothing.
   */
  async rollbackMapRoot(
    lock: VolumeLock,
    snapshot: SnapshotRecord,
    expected: MapRootRecord,
    next: MapRootRecord,
  ): Promise<void> {
    const key = keys.mapRoot(snapshot.volumeId);
    const snapKey = keys.snapshot(snapshot.volumeId, snapshot.name);
    const result = await this.call(`swap ${key}`, () => {
      const txn = this.client
        .if(keys.lock(lock.volume), 'Value', '==', lock.record)
        .and(snapKey, 'Value', '==', encodeSnapshot(snapshot));
      if (expected.page === undefined) txn.and(key, 'Create', '==', 0);
      else txn.and(key, 'Value', '==', encodeMapRoot(expected));
      return txn
        .then(
          next.page === undefined ? this.client.delete().key(key) : this.client.put(key).value(encodeMapRoot(next)),
          this.client.put(keys.snapshotTip(snapshot.volumeId)).value(lineageId(snapshot)),
        )
        .commit();
    });
    if (result.succeeded) return;
    const holder = await this.getLock(lock.volume);
    if (holder === null || holder.epoch !== lock.epoch)
      throw new FencedError(
        `Cannot roll volume "${lock.volume}" back: this writer (epoch ${lock.epoch}) no longer holds its lock`,
        { published: [] },
      );
    throw new MapRootMovedError(
      `Cannot roll volume "${lock.volume}" back to "${snapshot.name}": its map root or the snapshot changed meanwhile; try again`,
    );
  }

  /**
   * Replaces a snapshot's root (repair moved shards of its generations: the same data, elsewhere)
   * if the snapshot is still exactly `snapshot`. False, writing nothing, when it changed or went.
   */
  async replaceSnapshotRoot(snapshot: SnapshotRecord, root: MapRootRecord): Promise<boolean> {
    const key = keys.snapshot(snapshot.volumeId, snapshot.name);
    const result = await this.call(`replace ${key}`, () =>
      this.client
        .if(key, 'Value', '==', encodeSnapshot(snapshot))
        .then(this.client.put(key).value(encodeSnapshot({ ...snapshot, root })))
        .commit(),
    );
    return result.succeeded;
  }

  /**
   * Publishes a resize in one transaction fenced by `lock`: the volume's record with its new size
   * (compared at `modRevision`) and its map root at the new height (compared with `expected`).
   * With `request`, the resize request is deleted in it too (it was answered).
   */
  async resizeVolume(
    lock: VolumeLock,
    current: { readonly record: VolumeRecord; readonly modRevision: string },
    sizeBytes: number,
    expected: MapRootRecord,
    next: MapRootRecord,
  ): Promise<VolumeRecord> {
    const key = keys.volume(current.record.name);
    const rootKey = keys.mapRoot(current.record.id);
    const updated: VolumeRecord = { ...current.record, sizeBytes };
    const result = await this.call(`resize ${key}`, () => {
      const txn = this.client
        .if(keys.lock(lock.volume), 'Value', '==', lock.record)
        .and(key, 'Mod', '==', Number(current.modRevision));
      if (expected.page === undefined) txn.and(rootKey, 'Create', '==', 0);
      else txn.and(rootKey, 'Value', '==', encodeMapRoot(expected));
      return txn
        .then(
          this.client.put(key).value(JSON.stringify(updated)),
          next.page === undefined
            ? this.client.delete().key(rootKey)
            : this.client.put(rootKey).value(encodeMapRoot(next)),
          this.client.delete().key(keys.resizeRequest(current.record.id)),
        )
        .commit();
    });
    if (!result.succeeded) {
      const holder = await this.getLock(lock.volume);
      if (holder === null || holder.epoch !== lock.epoch)
        throw new FencedError(
          `Cannot resize volume "${lock.volume}": this writer (epoch ${lock.epoch}) no longer holds it`,
        );
      throw new MapRootMovedError(
        `Cannot resize volume "${lock.volume}": its record or map root changed meanwhile; try again`,
      );
    }
    return updated;
  }

  /** Asks the writer holding a volume to resize it (create-only: one request at a time). */
  async requestResize(volumeId: string, sizeBytes: number, by: string): Promise<void> {
    const key = keys.resizeRequest(volumeId);
    const result = await this.call(`create ${key}`, () =>
      this.client
        .if(key, 'Create', '==', 0)
        .then(this.client.put(key).value(JSON.stringify({ sizeBytes, by, requestedAt: new Date().toISOString() })))
        .commit(),
    );
    if (!result.succeeded) throw new AlreadyExistsError('A resize of this volume is in progress already');
  }

  /** The resize request as it stands: null once answered or withdrawn, with `error` once failed. */
  async getResizeRequest(volumeId: string): Promise<{ sizeBytes: number; error?: string } | null> {
    const key = keys.resizeRequest(volumeId);
    const text = await this.call(`get ${key}`, () => this.client.get(key).string());
    if (text === null) return null;
    const o = JSON.parse(text) as { sizeBytes?: unknown; error?: unknown };
    return { sizeBytes: Number(o.sizeBytes), ...(typeof o.error === 'string' ? { error: o.error } : {}) };
  }

  /** Writes why a resize request failed into it (if it is still there). */
  async failResizeRequest(volumeId: string, sizeBytes: number, error: string): Promise<void> {
    const key = keys.resizeRequest(volumeId);
    await this.call(`put ${key}`, () =>
      this.client
        .if(key, 'Create', '>', 0)
        .then(this.client.put(key).value(JSON.stringify({ sizeBytes, error, failedAt: new Date().toISOString() })))
        .commit(),
    );
  }

  async withdrawResizeRequest(volumeId: string): Promise<boolean> {
    const key = keys.resizeRequest(volumeId);
    const res = await this.call(`delete ${key}`, () => this.client.delete().key(key).exec());
    return Number(res.deleted) > 0;
  }

  /** Asks the writer holding a volume for a snapshot (it answers by creating it: createSnapshot). */
  async requestSnapshot(volumeId: string, name: string, by: string): Promise<void> {
    const key = keys.snapshotRequest(volumeId, name);
    const result = await this.call(`create ${key}`, () =>
      this.client
        .if(key, 'Create', '==', 0)
        .then(this.client.put(key).value(JSON.stringify({ name, by, requestedAt: new Date().toISOString() })))
        .commit(),
    );
    if (!result.succeeded) throw new AlreadyExistsError(`A snapshot named "${name}" is being taken already`);
  }

  /** Writes why a snapshot request failed into it (if it is still there) for its asker. */
  async failSnapshotRequest(volumeId: string, name: string, error: string): Promise<void> {
    const key = keys.snapshotRequest(volumeId, name);
    await this.call(`put ${key}`, () =>
      this.client
        .if(key, 'Create', '>', 0)
        .then(this.client.put(key).value(JSON.stringify({ name, error, failedAt: new Date().toISOString() })))
        .commit(),
    );
  }

  /** A snapshot request as it stands: null once answered or withdrawn, with `error` once failed. */
  async getSnapshotRequest(volumeId: string, name: string): Promise<{ error?: string } | null> {
    const key = keys.snapshotRequest(volumeId, name);
    const text = await this.call(`get ${key}`, () => this.client.get(key).string());
    if (text === null) return null;
    const o = JSON.parse(text) as { error?: unknown };
    return typeof o.error === 'string' ? { error: o.error } : {};
  }

  /** Withdraws a snapshot request; true when it was still there (so no snapshot will answer it). */
  async withdrawSnapshotRequest(volumeId: string, name: string): Promise<boolean> {
    const key = keys.snapshotRequest(volumeId, name);
    const res = await this.call(`delete ${key}`, () => this.client.delete().key(key).exec());
    return Number(res.deleted) > 0;
  }

  /** Snapshot names asked of the writer of `volumeId` and not yet answered. */
  async listSnapshotRequests(volumeId: string): Promise<string[]> {
    const prefix = keys.snapshotRequestsPrefix(volumeId);
    const all = await this.call(`list ${prefix}`, () => this.client.getAll().prefix(prefix).keys());
    return all.map((k) => k.slice(prefix.length));
  }

  /**
   * Deletes a snapshot and queues it for gc (`gc/snapshots/`, its record as it was), in one
   * transaction that checks it is unchanged and has no clones (PreconditionError otherwise).
   */
  async deleteSnapshot(volumeId: string, name: string, volumeName: string): Promise<SnapshotRecord> {
    const key = keys.snapshot(volumeId, name);
    const text = await this.call(`get ${key}`, () => this.client.get(key).string());
    if (text === null) throw new NotFoundError(`Volume "${volumeName}" has no snapshot named "${name}"`);
    const snapshot = decodeSnapshot(key, text);
    if (snapshot.clones.length > 0)
      throw new PreconditionError(
        `Cannot delete snapshot ${volumeName}@${name}: volumes were cloned from it: ${(await this.cloneNames(snapshot.clones)).join(', ')}; flatten (cairnctl volume flatten) or delete them first`,
      );
    const gcKey = keys.gcSnapshot(volumeId, name);
    const result = await this.call(`delete ${key}`, () =>
      this.client
        .if(key, 'Value', '==', text)
        .and(gcKey, 'Create', '==', 0)
        .then(this.client.delete().key(key), this.client.put(gcKey).value(text))
        .commit(),
    );
    if (!result.succeeded) {
      const waiting = await this.call(`get ${gcKey}`, () => this.client.get(gcKey).string());
      if (waiting !== null)
        throw new PreconditionError(
          `Cannot delete snapshot ${volumeName}@${name}: an earlier snapshot of that name was deleted and gc has not collected it yet; run \`cairnctl gc\` first`,
        );
      throw new AlreadyExistsError(`Cannot delete snapshot "${name}": it changed while being deleted; try again`);
    }
    return snapshot;
  }

  /** Deleted snapshots whose shards are not freed yet. */
  async listGcSnapshots(): Promise<SnapshotRecord[]> {
    const prefix = keys.gcSnapshotsPrefix();
    const all = await this.call(`list ${prefix}`, () => this.client.getAll().prefix(prefix).strings());
    return Object.entries(all).map(([k, v]) => decodeSnapshot(k, v));
  }

  /**
   * Forgets a collected snapshot (its gc record). With `relink`, in the same transaction, the
   * lineage closes over it: each child (a snapshot, kept or deleted-not-collected, unchanged
   * since read: compared) takes its new parent, and the volume's tip (compared with `tip.from`)
   * becomes `tip.to` (null: none). Parents and the tip hold lineage ids (lineageId). False, writing nothing, when anything compared changed.
   */
  async finishGcSnapshot(
    volumeId: string,
    name: string,
    relink?: {
      readonly children: readonly {
        readonly record: SnapshotRecord;
        readonly pending: boolean;
        readonly parent: string | null;
      }[];
      readonly tip: { readonly from: string | null; readonly to: string | null };
    },
  ): Promise<boolean> {
    const key = keys.gcSnapshot(volumeId, name);
    if (relink === undefined) {
      await this.call(`delete ${key}`, () => this.client.delete().key(key).exec());
      return true;
    }
    const tipKey = keys.snapshotTip(volumeId);
    const result = await this.call(`delete ${key}`, () => {
      const txn = this.client.if(key, 'Create', '>', 0);
      const ops = [this.client.delete().key(key) as never];
      for (const c of relink.children) {
        const childKey = c.pending ? keys.gcSnapshot(volumeId, c.record.name) : keys.snapshot(volumeId, c.record.name);
        txn.and(childKey, 'Value', '==', encodeSnapshot(c.record));
        ops.push(this.client.put(childKey).value(encodeSnapshot({ ...c.record, parent: c.parent })) as never);
      }
      // The tip is compared even when it stays: a snapshot taken or a rollback meanwhile may
      // have changed the collected one's neighbours.
      if (relink.tip.from === null) txn.and(tipKey, 'Create', '==', 0);
      else txn.and(tipKey, 'Value', '==', relink.tip.from);
      if (relink.tip.to !== relink.tip.from)
        ops.push(
          (relink.tip.to === null
            ? this.client.delete().key(tipKey)
            : this.client.put(tipKey).value(relink.tip.to)) as never,
        );
      return txn.then(...ops).commit();
    });
    return result.succeeded;
  }

  /** A volume's record and its etcd modification revision (what clone and delete compare). */
  async getVolumeWithRevision(name: string): Promise<{ record: VolumeRecord; modRevision: string } | null> {
    const key = keys.volume(name);
    const res = await this.call(`get ${key}`, () => this.client.get(key).exec());
    const kv = res.kvs[0];
    return kv === undefined
      ? null
      : { record: decodeVolume(key, kv.value.toString()), modRevision: String(kv.mod_revision) };
  }

  /**
   * Creates `clone` from `snapshot` of `parent` in one transaction: the clone's record and map
   * root, the clone's id added to the snapshot's clones, and the parent's record touched (a
   * delete of the parent compares its revision, so it cannot miss a clone made meanwhile).
   * Refuses, writing nothing, when the parent or the snapshot changed or the name is taken.
   */
  async createClone(
    parent: { readonly record: VolumeRecord; readonly modRevision: string },
    snapshot: SnapshotRecord,
    clone: VolumeRecord,
    root: MapRootRecord,
    /** The clone's first epoch: above every epoch of the generations its map holds. */
    epoch: number,
  ): Promise<void> {
    const parentKey = keys.volume(parent.record.name);
    const snapKey = keys.snapshot(snapshot.volumeId, snapshot.name);
    const cloneKey = keys.volume(clone.name);
    const next: SnapshotRecord = { ...snapshot, clones: [...snapshot.clones, clone.id] };
    const result = await this.call(`create ${cloneKey}`, () => {
      const ops = [
        this.client.put(cloneKey).value(JSON.stringify(clone)),
        this.client.put(snapKey).value(encodeSnapshot(next)),
        this.client.put(parentKey).value(JSON.stringify(parent.record)),
        this.client.put(keys.epoch(clone.name)).value(String(epoch)),
      ];
      if (root.page !== undefined) ops.push(this.client.put(keys.mapRoot(clone.id)).value(encodeMapRoot(root)));
      return this.client
        .if(cloneKey, 'Create', '==', 0)
        .and(parentKey, 'Mod', '==', Number(parent.modRevision))
        .and(snapKey, 'Value', '==', encodeSnapshot(snapshot))
        .then(...ops)
        .commit();
    });
    if (result.succeeded) return;
    if ((await this.getVolume(clone.name)) !== null)
      throw new AlreadyExistsError(`Volume "${clone.name}" already exists`);
    throw new AlreadyExistsError(
      `Cannot clone "${parent.record.name}@${snapshot.name}": the volume or the snapshot changed meanwhile; try again`,
    );
  }

  /**
   * Makes a flattened clone independent: drops its parent link and leaves the parent snapshot's
   * list of clones, while `lock` (the flattening writer) still holds it.
   */
  async dropParent(lock: VolumeLock, name: string): Promise<VolumeRecord> {
    const got = await this.getVolumeWithRevision(name);
    if (got === null) throw new NotFoundError(`No volume named "${name}"`);
    const clone = got.record;
    const { parent, ...rest } = clone;
    if (parent === undefined) return clone;
    const key = keys.volume(clone.name);
    const leave = await this.leaveParent(clone);
    const result = await this.call(`put ${key}`, () => {
      const txn = this.client
        .if(keys.lock(lock.volume), 'Value', '==', lock.record)
        .and(key, 'Mod', '==', Number(got.modRevision));
      const ops = [this.client.put(key).value(JSON.stringify(rest))];
      if (leave !== undefined) {
        txn.and(leave.key, 'Value', '==', leave.text);
        ops.push(this.client.put(leave.key).value(leave.value));
      }
      return txn.then(...ops).commit();
    });
    if (!result.succeeded)
      throw new AlreadyExistsError(
        `Cannot detach volume "${clone.name}" from its parent: it changed meanwhile; try again`,
      );
    return rest;
  }

  /**
   * Renames a volume that no writer holds: its record moves to the new name with its epoch
   * counter (fencing epochs must never go back), in one transaction; snapshots, map root and
   * shards are under its id and do not move. Refuses when attached or the name is taken.
   */
  async renameVolume(from: string, to: string): Promise<VolumeRecord> {
    const got = await this.getVolumeWithRevision(from);
    if (got === null) throw new NotFoundError(`No volume named "${from}"`);
    if (from === to) return got.record;
    const epochRes = await this.call(`get ${keys.epoch(from)}`, () => this.client.get(keys.epoch(from)).exec());
    const epochKv = epochRes.kvs[0];
    const renamed: VolumeRecord = { ...got.record, name: to };
    const result = await this.call(`rename ${keys.volume(from)}`, () => {
      const txn = this.client
        .if(keys.volume(from), 'Mod', '==', Number(got.modRevision))
        .and(keys.lock(from), 'Create', '==', 0)
        .and(keys.volume(to), 'Create', '==', 0)
        .and(keys.lock(to), 'Create', '==', 0);
      if (epochKv === undefined) txn.and(keys.epoch(from), 'Create', '==', 0);
      else txn.and(keys.epoch(from), 'Mod', '==', Number(epochKv.mod_revision));
      const ops = [
        this.client.delete().key(keys.volume(from)),
        this.client.put(keys.volume(to)).value(JSON.stringify(renamed)),
      ];
      if (epochKv !== undefined)
        ops.push(
          this.client.delete().key(keys.epoch(from)),
          this.client.put(keys.epoch(to)).value(epochKv.value.toString()),
        );
      return txn.then(...ops).commit();
    });
    if (result.succeeded) return renamed;
    if ((await this.getVolume(to)) !== null) throw new AlreadyExistsError(`Volume "${to}" already exists`);
    const lock = await this.getLock(from);
    if (lock !== null)
      throw new VolumeLockedError(
        `Cannot rename volume "${from}": it is attached by ${lock.owner} (epoch ${lock.epoch}); detach it first`,
        lock.owner,
        lock.epoch,
      );
    throw new AlreadyExistsError(`Cannot rename volume "${from}": it changed meanwhile; try again`);
  }

  /**
   * What takes clone `volume` off its parent snapshot's list of clones in a caller's transaction:
   * the snapshot's key, its value now (to compare), and its value without the clone (to put).
   * Undefined when the volume is no clone or its parent snapshot is gone.
   */
  private async leaveParent(volume: VolumeRecord): Promise<{ key: string; text: string; value: string } | undefined> {
    if (volume.parent === undefined) return undefined;
    const key = keys.snapshot(volume.parent.volumeId, volume.parent.snapshot);
    const text = await this.call(`get ${key}`, () => this.client.get(key).string());
    if (text === null) return undefined;
    const snap = decodeSnapshot(key, text);
    return { key, text, value: encodeSnapshot({ ...snap, clones: snap.clones.filter((c) => c !== volume.id) }) };
  }

  /** The names of volumes by id, for refusals: "name", "name (in the trash)", or the id. */
  private async cloneNames(ids: readonly string[]): Promise<string[]> {
    const live = new Map((await this.listVolumes()).map((v) => [v.id, v.name]));
    const trashed = new Map((await this.listTrash()).map((t) => [t.volume.id, t.volume.name]));
    return ids.map((id) => live.get(id) ?? (trashed.has(id) ? `${trashed.get(id)} (in the trash)` : id));
  }

  /** Marks a target as draining (placement stops choosing it; repair moves its shards), or not. */
  async setDraining(name: string, draining: boolean): Promise<TargetRecord> {
    const current = await this.getTarget(name);
    if (current === null) throw new NotFoundError(`No target named "${name}"`);
    const { draining: _old, ...rest } = current;
    void _old;
    const next: TargetRecord = draining ? { ...rest, draining: true } : rest;
    await this.call(`put ${keys.target(name)}`, () =>
      this.client.put(keys.target(name)).value(JSON.stringify(next)).exec(),
    );
    return next;
  }

  async putRepairProgress(progress: RepairCheckpoint): Promise<void> {
    await this.call(`put ${keys.repairProgress()}`, () =>
      this.client.put(keys.repairProgress()).value(JSON.stringify(progress)).exec(),
    );
  }

  async getRepairProgress(): Promise<RepairCheckpoint | null> {
    const text = await this.call(`get ${keys.repairProgress()}`, () => this.client.get(keys.repairProgress()).string());
    return text === null ? null : (JSON.parse(text) as RepairCheckpoint);
  }

  /** Marks shards being copied to new targets, under `leaseId`, so gc leaves them alone. */
  async markMoving(entries: readonly { target: string; key: string }[], leaseId: string): Promise<void> {
    if (entries.length === 0) return;
    await this.call(`mark ${entries.length} shards moving`, () =>
      this.client
        .if(keys.cluster(), 'Create', '>', 0)
        .then(...entries.map((e) => this.client.put(keys.moving(e.target, e.key)).value('1').lease(leaseId)))
        .commit(),
    );
  }

  async unmarkMoving(entries: readonly { target: string; key: string }[]): Promise<void> {
    if (entries.length === 0) return;
    await this.call(`unmark ${entries.length} shards moving`, () =>
      this.client
        .if(keys.cluster(), 'Create', '>', 0)
        .then(...entries.map((e) => this.client.delete().key(keys.moving(e.target, e.key))))
        .commit(),
    );
  }

  /** Every shard being moved now, as `target + "\u0000" + key`. */
  async listMoving(): Promise<Set<string>> {
    const prefix = keys.movingPrefix();
    const all = await this.call(`list ${prefix}`, () => this.client.getAll().prefix(prefix).keys());
    return new Set(
      all.map((k) => {
        const rest = k.slice(prefix.length);
        const slash = rest.indexOf('/');
        return `${rest.slice(0, slash)}\u0000${rest.slice(slash + 1)}`;
      }),
    );
  }

  async listExtents(volumeId: string): Promise<Map<number, ExtentRecord>> {
    const prefix = keys.extentsPrefix(volumeId);
    const all = await this.call(`list ${prefix}`, () => this.client.getAll().prefix(prefix).strings());
    const out = new Map<number, ExtentRecord>();
    for (const [k, v] of Object.entries(all)) out.set(Number(k.slice(prefix.length)), decodeExtent(k, v));
    return out;
  }
}
