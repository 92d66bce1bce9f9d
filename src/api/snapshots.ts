/**
 * Snapshots and clones as the control plane sees them: taking a snapshot (through the writer that
 * holds the volume, or by attaching it here), what each snapshot alone holds (what deleting it
 * frees), and which maps may read a volume's shards (for gc).
 *
 * The rule that makes a snapshot free to take: generations are immutable, so a saved map root is
 * a complete, consistent image for as long as the shards and pages it reaches are kept. A writer
 * keeps them (it never deletes a superseded shard of a generation at or below the highest
 * snapshot floor, nor one under another volume's id); gc keeps whatever any root reaches: the
 * volume's own, its snapshots', and its clones' (whose maps hold this volume's shard keys).
 */
import {
  InvalidArgumentError,
  UnavailableError,
  parseVolumeRef,
  sleepOn,
  snapshotName,
  systemClock,
  volumeName,
  type Clock,
  type ExtentRecord,
} from '../core/index.js';
import { cryptUnitBytes } from '../crypt/index.js';
import { extentCount, mapLevelsFor, type MapRoot } from '../extent/index.js';
import {
  AlreadyExistsError,
  EtcdMeta,
  NotFoundError,
  PreconditionError,
  VolumeLockedError,
  lineageId,
  type VolumeLock,
  type SnapshotRecord,
  type VolumeRecord,
} from '../meta/index.js';
import { VolumeMaps } from './volume_maps.js';

/** How long `snapshot create` waits for the writer holding the volume to answer (default). */
export const snapshotAnswerMsDefault = 60_000;
/** How often the asker looks for the writer's answer. */
const snapshotPollMs = 50;

/**
 * Takes snapshot `snap` of volume `name`. When a writer holds the volume, it is asked (only it
 * knows what it acknowledged) and its answer awaited, up to `answerMs`; when none does,
 * `attachAndTake` attaches the volume here and takes it (VolumeFrontend.snapshot). A writer
 * that detaches before answering is handled as if it had never held the volume.
 */
export async function takeSnapshot(
  meta: EtcdMeta,
  name: string,
  snap: string,
  options: {
    readonly owner: string;
    readonly attachAndTake: () => Promise<SnapshotRecord>;
    readonly answerMs?: number;
    readonly clock?: Clock;
  },
): Promise<SnapshotRecord> {
  const volume = await meta.requireVolume(volumeName(name));
  snapshotName(snap);
  const clock = options.clock ?? systemClock;
  const exists = (): AlreadyExistsError =>
    new AlreadyExistsError(`Volume "${volume.name}" has a snapshot named "${snap}" already`);
  if ((await meta.getSnapshot(volume.id, snap)) !== null) throw exists();
  for (let round = 0; ; round++) {
    const lock = await meta.getLock(volume.name);
    if (lock === null) {
      try {
        return await options.attachAndTake();
      } catch (err) {
        // A writer attached between the look and the attach: ask it instead.
        if (!(err instanceof VolumeLockedError) || round >= 3) throw err;
        continue;
      }
    }
    await meta.requestSnapshot(volume.id, snap, options.owner);
    const deadline = clock.now() + (options.answerMs ?? snapshotAnswerMsDefault);
    for (;;) {
      const made = await meta.getSnapshot(volume.id, snap);
      if (made !== null) return made;
      const request = await meta.getSnapshotRequest(volume.id, snap);
      if (request === null) {
        // Answered between the two reads, or withdrawn by someone else.
        const late = await meta.getSnapshot(volume.id, snap);
        if (late !== null) return late;
        throw new UnavailableError(`The snapshot request for "${volume.name}@${snap}" was withdrawn`);
      }
      if (request.error !== undefined) {
        await meta.withdrawSnapshotRequest(volume.id, snap);
        throw new UnavailableError(
          `The writer of volume "${volume.name}" (${lock.owner}) could not take snapshot "${snap}": ${request.error}`,
        );
      }
      const holder = await meta.getLock(volume.name);
      const gone = holder === null || holder.epoch !== lock.epoch;
      if (gone || clock.now() > deadline) {
        if (await meta.withdrawSnapshotRequest(volume.id, snap)) {
          if (gone) break; // the writer left without answering: look again
          throw new UnavailableError(
            `The writer of volume "${volume.name}" (${lock.owner}, epoch ${lock.epoch}) did not take snapshot "${snap}" within ${options.answerMs ?? snapshotAnswerMsDefault} ms; nothing was taken`,
          );
        }
        continue; // answered just now: the next look finds it
      }
      // The real clock's timers do not hold the process open (systemClock): this wait must.
      if (options.clock === undefined) await new Promise((resolve) => setTimeout(resolve, snapshotPollMs));
      else await sleepOn(clock, snapshotPollMs);
    }
  }
}

/** A volume's snapshot by name, or NotFoundError naming both. */
export async function requireSnapshot(meta: EtcdMeta, volume: VolumeRecord, snap: string): Promise<SnapshotRecord> {
  const found = await meta.getSnapshot(volume.id, snapshotName(snap));
  if (found === null) throw new NotFoundError(`Volume "${volume.name}" has no snapshot named "${snap}"`);
  return found;
}

/**
 * The highest floor of the volume's snapshots, kept and deleted-but-not-collected: generations at
 * or below it may be read by a snapshot, so a writer or a drain leaves their shards to gc.
 */
export async function snapshotFloor(meta: EtcdMeta, volumeId: string): Promise<number> {
  const kept = await meta.listSnapshots(volumeId);
  const pending = (await meta.listGcSnapshots()).filter((s) => s.volumeId === volumeId);
  return Math.max(0, ...kept.map((s) => s.floor), ...pending.map((s) => s.floor));
}

/**
 * True when `record` of volume `volumeId` may be read by a map other than the volume's live one:
 * a generation at or below the snapshot floor (see snapshotFloor), or shards under another
 * volume's id (a clone's inherited records).
 */
export function isRetained(record: ExtentRecord, volumeId: string, floor: number): boolean {
  return record.generation <= floor || record.shards.some((s) => !s.key.startsWith(`${volumeId}/`));
}

/** Volumes cloned from `volume`, and from those, all the way down (their maps may hold its shard keys). */
export function descendantsOf(volume: VolumeRecord, all: readonly VolumeRecord[]): VolumeRecord[] {
  const out: VolumeRecord[] = [];
  const ids = new Set([volume.id]);
  for (let grew = true; grew;) {
    grew = false;
    for (const v of all)
      if (v.parent !== undefined && ids.has(v.parent.volumeId) && !ids.has(v.id)) {
        ids.add(v.id);
        out.push(v);
        grew = true;
      }
  }
  return out;
}

/** A map root and the volume whose tree reads it. */
export interface OwnedRoot {
  /** The volume, at the size the root maps (a snapshot's may differ from the volume's now). */
  readonly volume: VolumeRecord;
  readonly root: MapRoot;
  readonly what: string;
}

/**
 * Every map root that may read shards of `volume`: its live root, its snapshots' (and, with
 * `pending`, those of its deleted snapshots gc has not collected), and the same of every volume
 * cloned from it, however deep. Live roots are read before the snapshot lists: a snapshot
 * taken after a live root was read holds only what that root held or newer generations.
 */
export async function rootsReading(
  meta: EtcdMeta,
  volume: VolumeRecord,
  options: { readonly pending?: boolean; readonly except?: SnapshotRecord } = {},
): Promise<OwnedRoot[]> {
  const maps = VolumeMaps.of(meta);
  const family = [volume, ...descendantsOf(volume, await meta.listVolumes())];
  const out: OwnedRoot[] = [];
  for (const v of family) out.push({ volume: v, root: await maps.root(v), what: `volume ${v.name}` });
  const pending = options.pending === true ? await meta.listGcSnapshots() : [];
  for (const v of family) {
    const snaps = [...(await meta.listSnapshots(v.id)), ...pending.filter((s) => s.volumeId === v.id)];
    for (const s of snaps) {
      if (options.except !== undefined && s.volumeId === options.except.volumeId && s.name === options.except.name)
        continue;
      out.push({ volume: { ...v, sizeBytes: s.sizeBytes }, root: rootOf(v, s), what: `snapshot ${v.name}@${s.name}` });
    }
  }
  return out;
}

/** A snapshot's root, checked against its volume's tree height. */
export function rootOf(volume: VolumeRecord, snapshot: SnapshotRecord): MapRoot {
  const levels = mapLevelsFor(extentCount({ sizeBytes: snapshot.sizeBytes, extentBytes: volume.extentBytes }));
  if (snapshot.root.levels !== levels)
    throw new InvalidArgumentError(
      `Snapshot ${volume.name}@${snapshot.name} has a map of ${snapshot.root.levels} levels, not ${levels}`,
    );
  return snapshot.root;
}

/** A shard that only one snapshot reads: what deleting it frees. */
export interface UniqueShard {
  readonly extent: number;
  readonly target: string;
  readonly key: string;
  readonly bytes: number;
}

/**
 * The shards of `snapshot`, under its volume's own id, that no other root in `others` reads. Roots of the same volume are
 * compared by the tree's diff (identical subtrees are skipped unread); roots of clones by looking
 * up the candidate extents.
 */
export async function uniqueShards(
  meta: EtcdMeta,
  volume: VolumeRecord,
  snapshot: SnapshotRecord,
  others: readonly OwnedRoot[],
): Promise<UniqueShard[]> {
  const maps = VolumeMaps.of(meta);
  await maps.refreshTargets();
  const tree = maps.tree({ ...volume, sizeBytes: snapshot.sizeBytes });
  const mine = rootOf(volume, snapshot);
  const id = (target: string, key: string): string => `${target}\u0000${key}`;
  // Only the volume's own shards: a clone's snapshot may hold records inherited from its parent
  // (keys under the parent's id), and those stay for the parent's snapshot, which cannot be
  // deleted while the clone exists; freeing them here would break it.
  const own = `${volume.id}/`;
  const candidates = new Map<number, Map<string, UniqueShard>>();
  for await (const item of tree.walk(mine)) {
    if (!('record' in item)) continue;
    const m = new Map<string, UniqueShard>();
    for (const s of item.record.shards)
      if (s.key.startsWith(own))
        m.set(id(s.target, s.key), {
          extent: item.extent,
          target: s.target,
          key: s.key,
          bytes: item.record.shardBytes,
        });
    if (m.size > 0) candidates.set(item.extent, m);
  }
  for (const other of others) {
    if (candidates.size === 0) break;
    const drop = (e: number, rec: ExtentRecord | undefined): void => {
      const m = candidates.get(e);
      if (m === undefined || rec === undefined) return;
      for (const s of rec.shards) m.delete(id(s.target, s.key));
      if (m.size === 0) candidates.delete(e);
    };
    if (other.volume.id === volume.id && other.root.levels === mine.levels) {
      // Extents the diff does not yield hold the same record in both: not unique.
      const differ = new Set<number>();
      for await (const e of tree.diff(mine, other.root)) differ.add(e);
      for (const e of [...candidates.keys()]) {
        if (!differ.has(e)) candidates.delete(e);
        else drop(e, await tree.lookup(other.root, e));
      }
    } else {
      const otherTree = maps.tree(other.volume); // at the size its root maps
      const extents = extentCount(other.volume);
      for (const e of [...candidates.keys()]) if (e < extents) drop(e, await otherTree.lookup(other.root, e));
    }
  }
  return [...candidates.values()].flatMap((m) => [...m.values()]);
}

/**
 * The snapshots of clone `volume` whose records still name shards of another volume (its parent's,
 * or further up). A flatten must not drop the parent link while any exists: the parent snapshot
 * could then be deleted and its shards freed under them.
 */
export async function snapshotsReadingParent(meta: EtcdMeta, volume: VolumeRecord): Promise<string[]> {
  const maps = VolumeMaps.of(meta);
  await maps.refreshTargets();
  const own = `${volume.id}/`;
  const out: string[] = [];
  for (const snapshot of await meta.listSnapshots(volume.id)) {
    const tree = maps.tree({ ...volume, sizeBytes: snapshot.sizeBytes });
    for await (const item of tree.walk(rootOf(volume, snapshot)))
      if ('record' in item && item.record.shards.some((s) => !s.key.startsWith(own))) {
        out.push(snapshot.name);
        break;
      }
  }
  return out;
}

/** A snapshot and what it alone holds. */
export interface SnapshotUsage {
  readonly snapshot: SnapshotRecord;
  /** Shard bytes no other snapshot, the volume or a clone reads: what deleting it frees. */
  readonly uniqueBytes: number;
  readonly uniqueShards: number;
  /** Names of the volumes cloned from it. */
  readonly clones: readonly string[];
}

/** Every snapshot of `volume`, oldest first, with what each alone holds. */
export async function snapshotUsage(meta: EtcdMeta, volume: VolumeRecord): Promise<SnapshotUsage[]> {
  const live = await VolumeMaps.of(meta).root(volume); // before the lineage: see readLineage
  const lineage = await readLineage(meta, volume.id);
  const roots = lineage.complete ? [] : await rootsReading(meta, volume);
  const volumes = await meta.listVolumes();
  const byId = new Map(volumes.map((v) => [v.id, v.name]));
  const out: SnapshotUsage[] = [];
  for (const snapshot of lineage.kept) {
    const others = lineage.complete
      ? neighbourRoots(volume, live, lineage, snapshot)
      : roots.filter((r) => r.what !== `snapshot ${volume.name}@${snapshot.name}`);
    // A snapshot with clones cannot be deleted, and frees nothing while they read it: compare
    // with their roots too (with a complete lineage, nothing else looks at clones).
    if (lineage.complete)
      for (const clone of volumes.filter((v) => snapshot.clones.includes(v.id)))
        others.push(...(await rootsReading(meta, clone)));
    const unique = await uniqueShards(meta, volume, snapshot, others);
    out.push({
      snapshot,
      uniqueBytes: unique.reduce((sum, s) => sum + s.bytes, 0),
      uniqueShards: unique.length,
      clones: snapshot.clones.map((c) => byId.get(c) ?? c),
    });
  }
  return out;
}

/**
 * A volume's snapshot lineage: its snapshots, kept and deleted-not-collected (both are nodes of
 * the tree until gc collects them), and its tip. Read after the volume's live root: a snapshot
 * taken after that root was read holds only what the root held or newer generations.
 */
export interface Lineage {
  readonly kept: readonly SnapshotRecord[];
  readonly pending: readonly SnapshotRecord[];
  readonly tip: string | null;
  /**
   * False when a snapshot predates lineage (no parent recorded) or names one not found: then
   * what a snapshot alone holds is found by comparing it with every root (rootsReading).
   */
  readonly complete: boolean;
}

export async function readLineage(meta: EtcdMeta, volumeId: string): Promise<Lineage> {
  const tip = await meta.getSnapshotTip(volumeId);
  const kept = await meta.listSnapshots(volumeId);
  const pending = (await meta.listGcSnapshots()).filter((s) => s.volumeId === volumeId);
  const ids = new Set([...kept, ...pending].map(lineageId));
  const complete =
    (tip === null || ids.has(tip)) &&
    [...kept, ...pending].every((s) => s.parent === null || (s.parent !== undefined && ids.has(s.parent)));
  return { kept, pending, tip, complete };
}

/** A snapshot's neighbours in its volume's lineage (its parent, its children, the live map). */
export interface Neighbours {
  readonly parent: SnapshotRecord | undefined;
  readonly children: readonly { readonly record: SnapshotRecord; readonly pending: boolean }[];
  /** The volume's live map descends from it directly (it is the tip). */
  readonly live: boolean;
  readonly degree: number;
}

export function neighboursOf(lineage: Lineage, snapshot: SnapshotRecord): Neighbours {
  const nodes = [
    ...lineage.kept.map((record) => ({ record, pending: false })),
    ...lineage.pending.map((record) => ({ record, pending: true })),
  ];
  const id = lineageId(snapshot);
  const parent =
    snapshot.parent === null || snapshot.parent === undefined
      ? undefined
      : nodes.find((n) => lineageId(n.record) === snapshot.parent)?.record;
  const children = nodes.filter((n) => n.record.parent === id);
  const live = lineage.tip === id;
  return { parent, children, live, degree: (parent === undefined ? 0 : 1) + children.length + (live ? 1 : 0) };
}

/**
 * The roots a snapshot must be compared with to find what it alone holds, when its volume's
 * lineage is complete: its neighbours'. A generation two roots hold is held by every node on the
 * tree's path between them (a volume's generations are immutable and, once superseded, come back
 * only by a rollback, which links the live map to the snapshot rolled back to), so one that no
 * neighbour holds, no other root of the volume holds. Clones need no look: what a clone holds of
 * this volume, its origin snapshot holds, and that snapshot is kept while the clone exists.
 */
export function neighbourRoots(
  volume: VolumeRecord,
  live: MapRoot,
  lineage: Lineage,
  snapshot: SnapshotRecord,
): OwnedRoot[] {
  const n = neighboursOf(lineage, snapshot);
  const of = (s: SnapshotRecord): OwnedRoot => ({
    volume: { ...volume, sizeBytes: s.sizeBytes },
    root: rootOf(volume, s),
    what: `snapshot ${volume.name}@${s.name}`,
  });
  return [
    ...(n.live ? [{ volume, root: live, what: `volume ${volume.name}` }] : []),
    ...(n.parent === undefined ? [] : [of(n.parent)]),
    ...n.children.map((c) => of(c.record)),
  ];
}

/**
 * How the lineage closes over a collected snapshot of at most two neighbours (a node of three or
 * more waits: no relinking of them would keep the path rule): its children take its parent, and
 * the tip too if it was the collected one; without a parent, its first child becomes a root and
 * takes the other neighbour.
 */
export function lineageRelink(
  lineage: Lineage,
  snapshot: SnapshotRecord,
): {
  children: { record: SnapshotRecord; pending: boolean; parent: string | null }[];
  tip: { from: string | null; to: string | null };
} {
  const n = neighboursOf(lineage, snapshot);
  if (n.degree > 2) throw new PreconditionError(`Snapshot ${snapshot.name} has ${n.degree} neighbours in its lineage`);
  const tip = { from: lineage.tip, to: lineage.tip };
  if (n.parent !== undefined) {
    if (n.live) tip.to = lineageId(n.parent);
    return { children: n.children.map((c) => ({ ...c, parent: lineageId(n.parent!) })), tip };
  }
  const [first, ...rest] = n.children;
  if (first === undefined) {
    if (n.live) tip.to = null;
    return { children: [], tip };
  }
  if (n.live) tip.to = lineageId(first.record);
  return {
    children: [{ ...first, parent: null }, ...rest.map((c) => ({ ...c, parent: lineageId(first.record) }))],
    tip,
  };
}

/**
 * Creates volume `name` from snapshot `source` (`VOL@SNAP`): writable, sharing every shard with
 * the snapshot. Its map is written as its own pages holding the snapshot's records (their shard
 * keys under the parent's id), one page per 256 written extents and no data: reads through any
 * chain of clones cost one lookup, since a clone's map names the shards themselves, never its
 * parent's map. The snapshot keeps the clone in its list and cannot be deleted until the clone
 * is flattened or deleted.
 */
export async function cloneVolume(meta: EtcdMeta, source: string, name: string): Promise<VolumeRecord> {
  const ref = parseVolumeRef(source);
  if (ref.snapshot === undefined)
    throw new InvalidArgumentError(
      `Clone from a snapshot, VOL@SNAP (not "${source}"): take one with \`cairnctl snapshot create ${source} SNAP\``,
    );
  const target = volumeName(name);
  const parent = await meta.getVolumeWithRevision(ref.volume);
  if (parent === null) throw new NotFoundError(`No volume named "${ref.volume}"`);
  const snapshot = await requireSnapshot(meta, parent.record, ref.snapshot);
  if ((await meta.getVolume(target)) !== null) throw new AlreadyExistsError(`Volume "${target}" already exists`);
  const { record: p } = parent;
  const clone: VolumeRecord = {
    name: target,
    id: EtcdMeta.newVolumeId(),
    sizeBytes: snapshot.sizeBytes,
    profile: p.profile,
    extentBytes: p.extentBytes,
    zonesRequired: p.zonesRequired,
    targets: p.targets,
    createdAt: new Date().toISOString(),
    state: 'ready',
    ...(p.durableShardsMin === undefined ? {} : { durableShardsMin: p.durableShardsMin }),
    ...(p.journalReplicas === undefined ? {} : { journalReplicas: p.journalReplicas }),
    ...(p.allowedZones === undefined ? {} : { allowedZones: p.allowedZones }),
    // The clone reads the parent's generations, enciphered under the parent's data key: it keeps it.
    ...(p.encryption === undefined ? {} : { encryption: p.encryption }),
    parent: { volumeId: p.id, volume: p.name, snapshot: snapshot.name },
  };
  // The clone's epochs start above every epoch its records were written under, so its own
  // generations are newer than any it inherits (gc's in-flight rule counts on that).
  const epoch = Math.floor(snapshot.floor / 2 ** 32) + 1;
  const maps = VolumeMaps.of(meta);
  await maps.refreshTargets();
  const records = new Map<number, ExtentRecord>();
  for await (const item of maps.tree({ ...p, sizeBytes: snapshot.sizeBytes }).walk(rootOf(p, snapshot)))
    if ('record' in item) records.set(item.extent, item.record);
  const tree = maps.tree(clone);
  const { root } = await tree.commit(tree.emptyRoot(), records, epoch * 2 ** 32 + 1);
  await meta.createClone(parent, snapshot, clone, root, epoch);
  return clone;
}

/**
 * Makes volume `name`'s contents snapshot `snap`'s: its map root becomes the snapshot's, in a
 * transaction fenced by `lock` (the caller attached the volume, so no writer runs; its journal
 * was folded at that attach). What was written after the snapshot becomes garbage for gc; the
 * snapshot stays. The root keeps the highest journal LSN either held, so LSNs never go back.
 */
export async function rollbackVolume(
  meta: EtcdMeta,
  lock: VolumeLock,
  volume: VolumeRecord,
  snap: string,
): Promise<SnapshotRecord> {
  const snapshot = await requireSnapshot(meta, volume, snap);
  if (snapshot.sizeBytes !== volume.sizeBytes)
    throw new InvalidArgumentError(
      `Cannot roll volume "${volume.name}" back to snapshot "${snap}": the volume was resized since (${volume.sizeBytes} bytes, the snapshot ${snapshot.sizeBytes})`,
    );
  const maps = VolumeMaps.of(meta);
  const live = await maps.root(volume);
  const layout = await meta.getJournal(volume.id);
  if (layout !== null && layout.headLsn > layout.foldedLsn && layout.segments.length > 0)
    throw new PreconditionError(
      `Cannot roll volume "${volume.name}" back: its journal holds writes not yet folded; attach it once so they are`,
    );
  const target = rootOf(volume, snapshot);
  const journalLsn = Math.max(live.journalLsn ?? 0, target.journalLsn ?? 0, layout?.headLsn ?? 0);
  // An empty snapshot: a root with no page cannot carry the LSN, but the journal layout does.
  const next = target.page === undefined ? target : { ...target, journalLsn };
  await meta.rollbackMapRoot(lock, snapshot, live, next);
  return snapshot;
}

/** How long `volume resize` waits for the writer holding the volume to grow it (default). */
export const resizeAnswerMsDefault = 60_000;

/**
 * Resizes volume `name` to `sizeBytes`. While a writer holds it, only a grow is possible, and the
 * writer is asked (through etcd) to do it online: its clients go on, new connections see the new
 * size. Otherwise `attachAndResize` attaches it here and does it (VolumeFrontend.resize), which
 * may also shrink it.
 */
export async function resizeVolume(
  meta: EtcdMeta,
  name: string,
  sizeBytes: number,
  options: {
    readonly owner: string;
    readonly attachAndResize: () => Promise<VolumeRecord>;
    readonly answerMs?: number;
  },
): Promise<VolumeRecord> {
  const volume = await meta.requireVolume(volumeName(name));
  if (volume.encryption !== undefined && sizeBytes % cryptUnitBytes !== 0)
    throw new InvalidArgumentError(
      `Cannot resize volume "${volume.name}" to ${sizeBytes} bytes: it is encrypted, so its size must be a multiple of ${cryptUnitBytes} bytes`,
    );
  for (let round = 0; ; round++) {
    const lock = await meta.getLock(volume.name);
    if (lock === null) {
      try {
        return await options.attachAndResize();
      } catch (err) {
        if (!(err instanceof VolumeLockedError) || round >= 3) throw err;
        continue;
      }
    }
    if (sizeBytes < volume.sizeBytes)
      throw new PreconditionError(
        `Cannot shrink volume "${volume.name}": it is attached by ${lock.owner}; a volume shrinks only while detached (clients would lose the end of the device under them)`,
      );
    if (sizeBytes === volume.sizeBytes) return volume;
    await meta.requestResize(volume.id, sizeBytes, options.owner);
    const deadline = Date.now() + (options.answerMs ?? resizeAnswerMsDefault);
    for (;;) {
      const request = await meta.getResizeRequest(volume.id);
      const now = await meta.requireVolume(volume.name);
      if (request === null) {
        if (now.sizeBytes === sizeBytes) return now;
        throw new UnavailableError(`The resize request of "${volume.name}" was withdrawn`);
      }
      if (request.error !== undefined) {
        await meta.withdrawResizeRequest(volume.id);
        throw new UnavailableError(
          `The writer of volume "${volume.name}" (${lock.owner}) could not resize it: ${request.error}`,
        );
      }
      const holder = await meta.getLock(volume.name);
      const gone = holder === null || holder.epoch !== lock.epoch;
      if (gone || Date.now() > deadline) {
        if (await meta.withdrawResizeRequest(volume.id)) {
          if (gone) break;
          throw new UnavailableError(
            `The writer of volume "${volume.name}" (${lock.owner}) did not resize it within ${options.answerMs ?? resizeAnswerMsDefault} ms; nothing changed`,
          );
        }
        continue;
      }
      await new Promise((resolve) => setTimeout(resolve, snapshotPollMs));
    }
  }
}
