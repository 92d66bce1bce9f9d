/**
 * The volume engine's extent map kept as a copy-on-write page tree (extent/map_tree.ts) under a
 * root that a MapRootStore publishes: issue 15's bridge between the tree and the engine. The
 * etcd root store is not written yet; the simulator's twin (sim/) and the model tests use this.
 *
 * What it keeps true: a commit writes its pages, waits for them to be durable, and only then
 * swaps the root, so a crash between the two leaves the old root and garbage pages, never a root
 * that reaches a missing page. A commit is atomic for all its extents (one root swap), which is
 * stronger than ExtentMapStore promises. A fenced writer publishes nothing.
 *
 * What it leaves out (for now): load() still reads every record, as the engine expects; the
 * point of the tree (attach reads only the pages it touches) needs the engine to look records up
 * through the tree instead of holding them all.
 */
import { assert, type ExtentRecord } from '../core/index.js';
import { MapTree, type MapPageStore, type MapRoot } from '../extent/index.js';
import type { ExtentMapStore } from './ports.js';

/** Where a volume's map root is published (etcd, in the volume's fenced transaction). */
export interface MapRootStore {
  /** The current root: an empty map's (no page) when nothing was ever published. */
  read(): Promise<MapRoot>;
  /**
   * Publishes `next` if the current root is still `expected` and this writer still holds the
   * volume; rejects with FencedError (publishing nothing) otherwise.
   */
  swap(expected: MapRoot, next: MapRoot): Promise<void>;
}

export interface TreeExtentMapStoreOptions {
  readonly volumeId: string;
  /** Extents of the volume. */
  readonly extents: number;
  readonly pages: MapPageStore;
  readonly roots: MapRootStore;
  /**
   * The writer's epoch: page generations are epoch * 2^32 + a counter, unique across writers
   * because the lock hands out each epoch once. One store per writer epoch: two with the same
   * epoch would name their pages alike (the page store refuses the second).
   */
  readonly epoch: number;
}

export class TreeExtentMapStore implements ExtentMapStore {
  readonly tree: MapTree;
  private root: MapRoot | undefined;
  private counter = 0;

  constructor(private readonly options: TreeExtentMapStoreOptions) {
    assert(Number.isSafeInteger(options.epoch) && options.epoch >= 0, `epoch ${options.epoch}`);
    this.tree = new MapTree({ volumeId: options.volumeId, extents: options.extents, store: options.pages });
  }

  async load(): Promise<Map<number, ExtentRecord>> {
    this.root = await this.options.roots.read();
    const out = new Map<number, ExtentRecord>();
    for await (const item of this.tree.walk(this.root)) if ('record' in item) out.set(item.extent, item.record);
    return out;
  }

  async commit(updates: readonly { readonly index: number; readonly record: ExtentRecord | null }[]): Promise<void> {
    const root = this.root ?? (await this.options.roots.read());
    const changes = new Map(updates.map((u) => [u.index, u.record] as const));
    this.counter += 1;
    const { root: next } = await this.tree.commit(root, changes, this.options.epoch * 2 ** 32 + this.counter);
    await this.options.roots.swap(root, next);
    this.root = next;
  }
}
