/**
 * The engine's ExtentMapStore over etcd: load() lists the volume's extent records; commit()
 * publishes through the volume lock's fenced transactions (meta/etcd_meta.ts). A read-only attach
 * has no lock and refuses to commit.
 *
 * What it keeps true: the port's contract, including what a commit that fails half-way (fenced
 * or unanswered between batches) has published: it says so in the error's `published` list.
 */
import { InvalidArgumentError, type ExtentRecord } from '../core/index.js';
import type { EtcdMeta, VolumeLock } from '../meta/index.js';
import type { MapRoot } from '../extent/index.js';
import type { ExtentMapStore, MapRootStore } from '../volume/index.js';

export class EtcdExtentMap implements ExtentMapStore {
  constructor(
    private readonly meta: EtcdMeta,
    private readonly volume: { readonly id: string; readonly name: string },
    private readonly lock: VolumeLock | undefined,
  ) {}

  load(): Promise<Map<number, ExtentRecord>> {
    return this.meta.listExtents(this.volume.id);
  }

  async commit(updates: readonly { readonly index: number; readonly record: ExtentRecord | null }[]): Promise<void> {
    if (this.lock === undefined) throw new InvalidArgumentError(`Volume "${this.volume.name}" is attached read-only`);
    await this.meta.commitExtents(this.lock, this.volume.id, updates);
  }
}

/**
 * A volume's extent-map root in etcd (`maproots/<volume id>`), for TreeExtentMapStore: swaps go
 * through the volume lock's fenced transaction. Not used by the data path yet (issue 15).
 */
export class EtcdMapRoots implements MapRootStore {
  constructor(
    private readonly meta: EtcdMeta,
    private readonly volume: { readonly id: string; readonly name: string },
    private readonly lock: VolumeLock | undefined,
    /** The map's height: changed when the volume is resized. */
    public levels: number,
  ) {}

  read(): Promise<MapRoot> {
    return this.meta.readMapRoot(this.volume.id, this.levels);
  }

  async swap(expected: MapRoot, next: MapRoot): Promise<void> {
    if (this.lock === undefined) throw new InvalidArgumentError(`Volume "${this.volume.name}" is attached read-only`);
    await this.meta.swapMapRoot(this.lock, this.volume.id, expected, next);
  }
}

/** A snapshot's saved root: read-only, never swapped. */
export class SnapshotMapRoots implements MapRootStore {
  constructor(
    private readonly root: MapRoot,
    private readonly what: string,
  ) {}

  read(): Promise<MapRoot> {
    return Promise.resolve(this.root);
  }

  swap(): Promise<void> {
    return Promise.reject(new InvalidArgumentError(`${this.what} is a snapshot: it is read-only`));
  }
}
