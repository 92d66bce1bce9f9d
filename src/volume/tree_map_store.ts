/**
 * The volume engine's extent map kept as a copy-on-write page tree (extent/map_tree.ts) under a
 * root that a MapRootStore publishes (etcd's `maproots/<volume id>`, in the volume's fenced
 * transaction). Records are looked up on demand: attaching reads the root, and the engine asks
 * for the extents it is about to use, so a large volume loads only the pages it touches.
 *
 * What it keeps true: a commit writes its pages, waits for them to be durable, and only then
 * swaps the root, so a crash between the two leaves the old root and garbage pages, never a root
 * that reaches a missing page. A commit is atomic for all its extents (one root swap), which is
 * stronger than ExtentMapStore promises. A fenced writer publishes nothing. When a repair
 * replaced the root meanwhile (MapRootMovedError), the commit is rebuilt on the new root: the
 * repair moved shards of generations this writer did not change, and this writer's records win
 * for the extents it did.
 */
import { MapRootMovedError, assert, type ExtentRecord } from '../core/index.js';
import { MapTree, type MapPageStore, type MapRoot } from '../extent/index.js';
import type { ExtentMapStore, OnDemandExtentMap } from './ports.js';

/** Where a volume's map root is published (etcd, in the volume's fenced transaction). */
export interface MapRootStore {
  /** The current root: an empty map's (no page) when nothing was ever published. */
  read(): Promise<MapRoot>;
  /**
   * Publishes `next` if the current root is still `expected` and this writer still holds the
   * volume. Rejects, publishing nothing, with FencedError when the writer lost the volume, or
   * MapRootMovedError when it still holds it but the root was replaced (a repair).
   */
  swap(expected: MapRoot, next: MapRoot): Promise<void>;
}

/** Rebuilds of one commit on a moved root before giving up (each means a repair published meanwhile). */
const movedRetriesMax = 8;

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
  /** Decoded pages kept (MapTree's cachePages). */
  readonly cachePages?: number;
}

export class TreeExtentMapStore implements ExtentMapStore, OnDemandExtentMap {
  /** Replaced when the volume is resized (adoptResize). */
  tree: MapTree;
  readonly onDemand = this;
  private root: MapRoot | undefined;
  private counter = 0;
  private readonly listeners: ((changed: readonly number[] | undefined) => void)[] = [];

  constructor(private readonly options: TreeExtentMapStoreOptions) {
    assert(Number.isSafeInteger(options.epoch) && options.epoch >= 0, `epoch ${options.epoch}`);
    this.tree = new MapTree({
      volumeId: options.volumeId,
      extents: options.extents,
      store: options.pages,
      ...(options.cachePages === undefined ? {} : { cachePages: options.cachePages }),
    });
  }

  /** Reads the root only: records come from lookup(). */
  async load(): Promise<Map<number, ExtentRecord>> {
    this.root = await this.options.roots.read();
    return new Map();
  }

  /** Every record under the current root (reads every page: for tools and tests, not attach). */
  async loadAll(): Promise<Map<number, ExtentRecord>> {
    const root = this.root ?? (await this.options.roots.read());
    const out = new Map<number, ExtentRecord>();
    for await (const item of this.tree.walk(root)) if ('record' in item) out.set(item.extent, item.record);
    return out;
  }

  async lookup(extents: readonly number[]): Promise<(ExtentRecord | undefined)[]> {
    const root = this.root ?? (this.root = await this.options.roots.read());
    return Promise.all(extents.map((e) => this.tree.lookup(root, e)));
  }

  /** The root this writer last read or published (undefined before load()). */
  get current(): MapRoot | undefined {
    return this.root;
  }

  /**
   * The tree and root of this volume at `extents` extents: the current root rebased to the new
   * height (new pages written under this writer's next generation, durable when it resolves).
   * Nothing changes here until adoptResize(), which the caller calls once it published the root
   * with the volume's new size.
   */
  async prepareResize(extents: number): Promise<{ tree: MapTree; root: MapRoot; extents: number }> {
    const root = this.root ?? (await this.options.roots.read());
    const tree = new MapTree({
      volumeId: this.options.volumeId,
      extents,
      store: this.options.pages,
      ...(this.options.cachePages === undefined ? {} : { cachePages: this.options.cachePages }),
    });
    this.counter += 1;
    const { root: next } = await tree.rebase(root, this.options.epoch * 2 ** 32 + this.counter);
    return { tree, root: next, extents };
  }

  /** Takes a published resize (prepareResize) as this store's tree and root. */
  adoptResize(prepared: { readonly tree: MapTree; readonly root: MapRoot; readonly extents: number }): void {
    this.tree = prepared.tree;
    this.root = prepared.root;
  }

  get highestJournalLsn(): number {
    return this.root?.journalLsn ?? 0;
  }

  get writtenExtents(): number {
    return this.root?.written ?? 0;
  }

  onRootMoved(listener: (changed: readonly number[] | undefined) => void): void {
    this.listeners.push(listener);
  }

  /**
   * Re-reads the root (told that it changed: a watch, or a refused swap). When someone else
   * published it, the listeners are told which extents changed (the tree's diff of the two
   * roots), or undefined when that could not be read: then every record they hold.
   */
  async refresh(): Promise<void> {
    const root = await this.options.roots.read();
    const mine = this.root;
    if (
      mine !== undefined &&
      root.page?.generation === mine.page?.generation &&
      root.page?.checksum === mine.page?.checksum
    )
      return;
    this.root = root;
    let changed: number[] | undefined;
    if (mine !== undefined)
      try {
        changed = [];
        for await (const e of this.tree.diff(mine, root)) changed.push(e);
      } catch {
        changed = undefined;
      }
    for (const l of this.listeners) l(changed);
  }

  async commit(updates: readonly { readonly index: number; readonly record: ExtentRecord | null }[]): Promise<void> {
    await this.commitCounting(updates);
  }

  /** commit(), returning how many pages the published commit wrote. */
  async commitCounting(
    updates: readonly { readonly index: number; readonly record: ExtentRecord | null }[],
  ): Promise<number> {
    const changes = new Map(updates.map((u) => [u.index, u.record] as const));
    for (let attempt = 0; ; attempt++) {
      const root = this.root ?? (await this.options.roots.read());
      this.counter += 1;
      assert(this.counter < 2 ** 32, 'map page generation counter exhausted');
      const { root: next, pagesWritten } = await this.tree.commit(
        root,
        changes,
        this.options.epoch * 2 ** 32 + this.counter,
      );
      try {
        await this.options.roots.swap(root, next);
        this.root = next;
        return pagesWritten.length;
      } catch (err) {
        if (!(err instanceof MapRootMovedError) || attempt >= movedRetriesMax) throw err;
        // The pages just written are garbage no root reaches; gc collects them.
        await this.refresh();
      }
    }
  }
}
