/**
 * The map-page simulator: seeded runs of the real map code (MapTree, TreeExtentMapStore,
 * ReplicatedMapPages, MapTree.collectable) over memory targets and a twin of the etcd root, with
 * faults, checked against a plain model of what the published root must hold.
 *
 * Each step does one of: a commit by the writer (some extents set, some forgotten); a crash of
 * the writer between writing its pages and swapping the root (the pages stay, the root does not
 * move); a takeover by a new writer while the old one still commits (the old one must be fenced
 * and publish nothing); a repair-like swap of the root by someone else (the writer rebuilds its
 * commit on it); page faults on copies (lost, torn, stale: another page's bytes under this key,
 * wrong bytes) on at most `replicas - 1` copies of a page, so a good copy always remains; and gc
 * racing a commit: listing the pages while the commit's pages are written and its root not yet
 * swapped, collecting what MapTree.collectable allows, then letting the swap go on.
 *
 * The checker reads every extent under the published root through a fresh tree (no cache): the
 * records must equal the model's, and no read may fail. Planted bugs prove it can fail:
 * - 'map-swap-before-durable': the page store acknowledges a put before the copies are stored,
 *   and stores them later; a crash in between loses them, and the root swapped meanwhile reaches
 *   pages that are not there.
 * - 'map-gc-reachable': gc also deletes one page the published root reaches.
 *
 * Snapshots and clones (their own stream, between steps): a snapshot saves the published root
 * with a copy of the model; a clone writes a snapshot's records into a tree of its own (another
 * volume id, as cairnctl volume clone does) and takes commits of its own. gc keeps every
 * snapshot's root, and the checker reads each snapshot and clone against its own model.
 * - 'map-gc-ignores-snapshots': gc keeps the published root's pages only.
 * - 'clone-reads-parent': a clone reads through its parent's live root instead of its own copy,
 *   so the parent's later commits show through it.
 *
 * Resizes (the same stream): the volume grows or shrinks across map heights as the frontend does
 * it (records past a new end dropped first, the root rebased, a fenced swap); snapshots and clones
 * keep the size they were made at, and each is read at its own.
 * - 'shrink-keeps-tail': a shrink forgets to drop the records past the new end that share its
 *   last leaf, so a later grow would show old data there.
 */
import { FencedError, MapRootMovedError, assert, errorMessage, shardKey, type ExtentRecord } from '../core/index.js';
import {
  MapTree,
  ReplicatedMapPages,
  mapLeafBits,
  mapLevelsFor,
  type MapPageStore,
  type MapRoot,
} from '../extent/index.js';
import { MemoryShardStore } from '../shard/index.js';
import { TreeExtentMapStore, type MapRootStore } from '../volume/index.js';
import { Prng } from './prng.js';

export type MapBug =
  | 'map-swap-before-durable'
  | 'map-gc-reachable'
  | 'map-gc-ignores-snapshots'
  | 'clone-reads-parent'
  | 'shrink-keeps-tail';
export const mapBugs: readonly MapBug[] = [
  'map-swap-before-durable',
  'map-gc-reachable',
  'map-gc-ignores-snapshots',
  'clone-reads-parent',
  'shrink-keeps-tail',
];

export interface MapSimResult {
  readonly seed: number;
  readonly ok: boolean;
  /** What the checker found (the first failure), with the step. */
  readonly failure?: string;
  readonly steps: number;
  readonly commits: number;
  readonly faults: number;
  readonly pagesCollected: number;
  readonly snapshots: number;
  readonly clones: number;
  /** Resizes of the volume (grows and shrinks, across map heights). */
  readonly resizes: number;
}

const replicas = 3;
const targetNames = ['a-1', 'a-2', 'b-1', 'b-2', 'c-1', 'c-2'];

/** The root in etcd, fenced by the lock's epoch as swapMapRoot's transaction is. */
class RootTwin {
  root: MapRoot;
  lockEpoch = 1;
  constructor(levels: number) {
    this.root = { levels, page: undefined };
  }
  same(a: MapRoot, b: MapRoot): boolean {
    return a.page?.generation === b.page?.generation && a.page?.checksum === b.page?.checksum;
  }
  forWriter(epoch: number, beforeSwap: () => Promise<void>): MapRootStore {
    return {
      read: async () => this.root,
      swap: async (expected, next) => {
        await beforeSwap();
        if (epoch !== this.lockEpoch) throw new FencedError(`epoch ${epoch} no longer holds the lock`);
        if (!this.same(expected, this.root)) throw new MapRootMovedError('the root moved');
        this.root = next;
      },
    };
  }
}

/** Pages that lie about durability (the planted bug): put resolves, the copies land later. */
class EagerPages implements MapPageStore {
  readonly pending: (() => Promise<void>)[] = [];
  constructor(private readonly inner: MapPageStore) {}
  async put(key: string, bytes: Uint8Array): Promise<void> {
    this.pending.push(() => this.inner.put(key, bytes));
  }
  get(key: string, accept: (bytes: Uint8Array) => boolean): Promise<Uint8Array> {
    return this.inner.get(key, accept);
  }
  async land(): Promise<void> {
    for (const p of this.pending.splice(0)) await p();
  }
  lose(): void {
    this.pending.length = 0;
  }
}

export async function runMapSimulation(
  seed: number,
  options: { steps?: number; bug?: MapBug } = {},
): Promise<MapSimResult> {
  const rng = new Prng(seed, 'map');
  const steps = options.steps ?? 200;
  const volumeId = `mapsim${seed}`;
  // Enough extents for two or three levels: small leaves are not what is tested here. A resize
  // (the snapshot stream) changes it; snapshots and clones keep the size they were made at.
  const sizes = [300, 5_000, 70_000];
  let extents = sizes[rng.int(3)]!;
  const stores = new Map(targetNames.map((n) => [n, new MemoryShardStore(n)]));
  const real = new ReplicatedMapPages({ targets: stores, replicas });
  const eager = options.bug === 'map-swap-before-durable' ? new EagerPages(real) : undefined;
  const pages: MapPageStore = eager ?? real;
  const roots = new RootTwin(mapLevelsFor(extents));
  const model = new Map<number, ExtentRecord>();
  let commits = 0;
  let faults = 0;
  let pagesCollected = 0;
  let generation = 0;
  const snapRng = new Prng(seed, 'map-snapshots');
  const snapshots: { root: MapRoot; model: Map<number, ExtentRecord>; extents: number }[] = [];
  const clones: {
    id: string;
    extents: number;
    tree: MapTree;
    root: () => MapRoot;
    set: (r: MapRoot) => void;
    model: Map<number, ExtentRecord>;
  }[] = [];
  let snapshotsTaken = 0;
  let clonesMade = 0;
  let resizes = 0;

  const record = (e: number): ExtentRecord => {
    generation += 1;
    return {
      generation,
      shardBytes: 4096,
      shards: [0, 1, 2].map((i) => ({
        target: targetNames[(e + i) % targetNames.length]!,
        key: shardKey(volumeId, e, generation, i),
      })),
      seed: 1 + rng.int(1000),
    };
  };
  const someExtent = (): number =>
    rng.next() < 0.7 && model.size > 0 ? [...model.keys()][rng.int(model.size)]! : rng.int(extents);
  const changes = (): Map<number, ExtentRecord | null> => {
    const out = new Map<number, ExtentRecord | null>();
    const n = 1 + rng.int(rng.next() < 0.2 ? 300 : 8);
    for (let i = 0; i < n; i++) {
      const e = someExtent();
      out.set(e, rng.next() < 0.15 && model.has(e) ? null : record(e));
    }
    return out;
  };
  const apply = (c: ReadonlyMap<number, ExtentRecord | null>): void => {
    for (const [e, r] of c)
      if (r === null) model.delete(e);
      else model.set(e, r);
  };

  // The writer: one TreeExtentMapStore per epoch, as the frontend makes one per attach.
  let hook: (() => Promise<void>) | undefined;
  const writerFor = (epoch: number): TreeExtentMapStore =>
    new TreeExtentMapStore({
      volumeId,
      extents,
      pages,
      roots: roots.forWriter(epoch, async () => {
        const h = hook;
        hook = undefined;
        await h?.();
      }),
      epoch,
    });
  let epoch = 1;
  let writer = writerFor(epoch);
  await writer.load();

  /** Every listed page key and the targets holding it. */
  const listPages = async (): Promise<Map<string, string[]>> => {
    const out = new Map<string, string[]>();
    for (const [name, store] of stores)
      for (const key of await store.list(`${volumeId}/map/`, { limit: 1_000_000 })) {
        const on = out.get(key);
        if (on === undefined) out.set(key, [name]);
        else on.push(name);
      }
    return out;
  };
  const gc = async (): Promise<void> => {
    const listed = await listPages();
    const tree = new MapTree({ volumeId, extents, store: real });
    const kept = options.bug === 'map-gc-ignores-snapshots' ? [] : snapshots.map((sn) => sn.root);
    let doomed = await tree.collectable([roots.root, ...kept], listed.keys(), { inFlightEpoch: roots.lockEpoch });
    if (options.bug === 'map-gc-reachable' && roots.root.page !== undefined) {
      const reachable: string[] = [];
      for await (const item of tree.walk(roots.root)) if ('pageKey' in item) reachable.push(item.pageKey);
      doomed = [...doomed, reachable[rng.int(reachable.length)]!];
    }
    for (const key of doomed)
      for (const name of listed.get(key) ?? []) {
        await stores.get(name)!.delete(key);
        pagesCollected += 1;
      }
  };
  const damaged = new Set<string>();
  /** Damages up to replicas - 1 copies of one page. */
  const damage = async (): Promise<void> => {
    const listed = await listPages();
    const keys = [...listed.keys()];
    if (keys.length === 0) return;
    const key = keys[rng.int(keys.length)]!;
    // Only good copies are damaged, and one good copy is always left.
    const good = listed.get(key)!.filter((name) => !damaged.has(`${key}\0${name}`));
    const n = Math.min(good.length - 1, 1 + rng.int(replicas - 1));
    for (const name of good.slice(0, Math.max(0, n))) {
      damaged.add(`${key}\0${name}`);
      const store = stores.get(name)!;
      const kind = rng.int(4);
      const bytes = await store.get(key);
      await store.delete(key);
      if (kind === 0) continue; // lost
      if (kind === 1)
        await store.put(key, bytes.subarray(0, Math.max(1, bytes.length >> 1))); // torn
      else if (kind === 2) {
        const other = keys[rng.int(keys.length)]!; // stale: another page's bytes under this key
        const from = stores.get(listed.get(other)![0]!)!;
        await store.put(key, await from.get(other).catch(() => new Uint8Array([1])));
      } else
        await store.put(
          key,
          bytes.map((b) => b ^ (1 + rng.int(255))),
        ); // wrong
      faults += 1;
    }
  };
  /** Reads every record under `root` through a fresh tree and compares it with `expected`. */
  const compare = async (
    what: string,
    id: string,
    root: MapRoot,
    expected: ReadonlyMap<number, ExtentRecord>,
    size: number,
  ): Promise<string | undefined> => {
    const tree = new MapTree({ volumeId: id, extents: size, store: real, cachePages: 1 });
    try {
      const seen = new Map<number, ExtentRecord>();
      for await (const item of tree.walk(root)) if ('record' in item) seen.set(item.extent, item.record);
      for (const [e, r] of expected) {
        const got = seen.get(e);
        if (got === undefined || JSON.stringify(got) !== JSON.stringify(r))
          return `${what}: extent ${e} reads ${got === undefined ? 'nothing' : `generation ${got.generation}`}, the model has generation ${r.generation}`;
      }
      for (const e of seen.keys()) if (!expected.has(e)) return `${what}: extent ${e} has a record the model forgot`;
    } catch (err) {
      return `${what}: the map cannot be read: ${errorMessage(err)}`;
    }
    return undefined;
  };
  const check = async (where: string): Promise<string | undefined> => {
    const bad = await compare(`${where}: the published map`, volumeId, roots.root, model, extents);
    if (bad !== undefined) return bad;
    for (const [i, sn] of snapshots.entries()) {
      const b = await compare(`${where}: snapshot ${i}`, volumeId, sn.root, sn.model, sn.extents);
      if (b !== undefined) return b;
    }
    for (const [i, c] of clones.entries()) {
      const b = await compare(`${where}: clone ${i}`, c.id, c.root(), c.model, c.extents);
      if (b !== undefined) return b;
    }
    return undefined;
  };
  /**
   * Resizes the volume as the frontend does (VolumeFrontend.doResize): for a shrink, the records
   * past the new end dropped in a commit of their own; then the root rebased to the new height
   * (TreeExtentMapStore.prepareResize), published by a fenced swap, and adopted by the writer.
   */
  const resize = async (to: number): Promise<void> => {
    if (to < extents) {
      const past = [...model.keys()].filter((e) => e >= to);
      // The bug: records past the end that share the new last leaf are kept (a later grow
      // would show them again).
      const leaf = (e: number): number => Math.floor(e / 2 ** mapLeafBits);
      const dropped = options.bug === 'shrink-keeps-tail' ? past.filter((e) => leaf(e) !== leaf(to - 1)) : past;
      if (dropped.length > 0) await writer.commit(dropped.map((index) => ({ index, record: null })));
      for (const e of past) model.delete(e);
    }
    const prepared = await writer.prepareResize(to);
    await roots.forWriter(epoch, async () => undefined).swap(roots.root, prepared.root);
    writer.adoptResize(prepared);
    extents = to;
    resizes += 1;
  };
  /** One snapshot or clone operation, from its own stream. */
  const snapshotOp = async (): Promise<void> => {
    const r = snapRng;
    const kind = r.int(snapshots.length === 0 ? 1 : 6);
    if (kind === 0 && snapshots.length < 4) {
      snapshots.push({ root: roots.root, model: new Map(model), extents });
      snapshotsTaken += 1;
    } else if (kind === 5) {
      const others = sizes.filter((n) => n !== extents);
      await resize(others[r.int(others.length)]! - r.int(40));
    } else if (kind === 1 && snapshots.length > 0) {
      snapshots.splice(r.int(snapshots.length), 1);
    } else if (kind === 2 && clones.length < 3) {
      const from = snapshots[r.int(snapshots.length)]!;
      const id = `${volumeId}c${clonesMade++}`;
      if (options.bug === 'clone-reads-parent') {
        // The bug: the clone reads through its parent's live root, not a copy of the snapshot.
        clones.push({
          id: volumeId,
          extents,
          tree: new MapTree({ volumeId, extents, store: real }),
          root: () => roots.root,
          set: (next) => (roots.root = next),
          model: new Map(from.model),
        });
        return;
      }
      const tree = new MapTree({ volumeId: id, extents: from.extents, store: real });
      let root = (await tree.commit(tree.emptyRoot(), new Map(from.model), 1)).root;
      clones.push({
        id,
        extents: from.extents,
        tree,
        root: () => root,
        set: (next) => (root = next),
        model: new Map(from.model),
      });
    } else if (clones.length > 0) {
      // The clone writes: its own commits, with its own generations (epoch 2 of its own counter).
      const c = clones[r.int(clones.length)]!;
      const e = r.int(c.extents);
      const rec = record(e);
      const { root } = await c.tree.commit(c.root(), new Map([[e, rec]]), 2 * 2 ** 32 + ++generation);
      if (options.bug !== 'clone-reads-parent') c.set(root);
      c.model.set(e, rec);
    }
  };

  for (let step = 0; step < steps; step++) {
    const where = `seed ${seed} step ${step}`;
    if (snapRng.next() < 0.15) {
      // A snapshot, clone or resize that cannot read the map found a broken map: a failure.
      const failure = await snapshotOp().then(
        () => undefined,
        (err: unknown) => `${where}: ${errorMessage(err)}`,
      );
      if (failure !== undefined)
        return {
          seed,
          ok: false,
          failure,
          steps: step,
          commits,
          faults,
          pagesCollected,
          snapshots: snapshotsTaken,
          clones: clonesMade,
          resizes,
        };
    }
    const op = rng.next();
    if (op < 0.4) {
      const c = changes();
      await writer.commit([...c].map(([index, r]) => ({ index, record: r })));
      await eager?.land();
      apply(c);
      commits += 1;
    } else if (op < 0.5) {
      // A crash after the pages are written (or, with the bug, acknowledged), before the root is
      // swapped... or after it, with the bug's copies still in flight.
      const c = changes();
      const afterSwap = options.bug === 'map-swap-before-durable' && rng.next() < 0.5;
      hook = async () => {
        if (!afterSwap) throw new Error('crash');
      };
      let landed = false;
      try {
        await writer.commit([...c].map(([index, r]) => ({ index, record: r })));
        landed = true;
      } catch (err) {
        assert(errorMessage(err) === 'crash', `${where}: unexpected ${errorMessage(err)}`);
      }
      eager?.lose();
      if (landed) apply(c);
      epoch += 1;
      roots.lockEpoch = epoch;
      writer = writerFor(epoch);
      await writer.load();
    } else if (op < 0.6) {
      // A takeover while the old writer's commit is in flight: the old one must be fenced.
      const c = changes();
      const old = writer;
      hook = async () => {
        epoch += 1;
        roots.lockEpoch = epoch;
      };
      let fenced = false;
      try {
        await old.commit([...c].map(([index, r]) => ({ index, record: r })));
      } catch (err) {
        fenced = err instanceof FencedError;
        if (!fenced)
          return {
            seed,
            ok: false,
            failure: `${where}: ${errorMessage(err)}`,
            steps: step,
            commits,
            faults,
            pagesCollected,
            snapshots: snapshotsTaken,
            clones: clonesMade,
            resizes,
          };
      }
      await eager?.land();
      if (!fenced)
        return {
          seed,
          ok: false,
          failure: `${where}: an overtaken writer published`,
          steps: step,
          commits,
          faults,
          pagesCollected,
          snapshots: snapshotsTaken,
          clones: clonesMade,
          resizes,
        };
      writer = writerFor(epoch);
      await writer.load();
    } else if (op < 0.7) {
      // A repair swaps the root under the writer's commit: the writer rebuilds on it.
      const moved = new Map([[someExtent(), record(rng.int(extents))]] as [number, ExtentRecord][]);
      const c = changes();
      for (const e of moved.keys()) c.delete(e);
      hook = async () => {
        const tree = new MapTree({ volumeId, extents, store: real });
        generation += 1;
        const { root } = await tree.commit(roots.root, moved, (2 ** 20 + epoch) * 2 ** 32 + generation);
        roots.root = root;
        apply(moved);
      };
      await writer.commit([...c].map(([index, r]) => ({ index, record: r })));
      await eager?.land();
      apply(c);
      commits += 1;
      await writer.refresh();
    } else if (op < 0.82) {
      // gc racing a commit: it lists and collects while the commit's pages are written.
      const c = changes();
      hook = gc;
      await writer.commit([...c].map(([index, r]) => ({ index, record: r })));
      await eager?.land();
      apply(c);
      commits += 1;
    } else if (op < 0.92) {
      await gc();
    } else {
      await damage();
    }
    hook = undefined;
    const bad = await check(where);
    if (bad !== undefined)
      return {
        seed,
        ok: false,
        failure: bad,
        steps: step + 1,
        commits,
        faults,
        pagesCollected,
        snapshots: snapshotsTaken,
        clones: clonesMade,
        resizes,
      };
  }
  return {
    seed,
    ok: true,
    steps,
    commits,
    faults,
    pagesCollected,
    snapshots: snapshotsTaken,
    clones: clonesMade,
    resizes,
  };
}
