/**
 * The copy-on-write map tree: records round-trip through pages, a commit writes only the paths to
 * what changed and shares the rest, old roots keep reading what they held, and a page that is
 * lost, torn, stale or another's is an error, never a map.
 */
import { expect } from 'chai';
import { ChecksumMismatchError, shardKey, type ExtentRecord } from '../../../src/core/index.js';
import {
  MapTree,
  mapLevelsFor,
  mapPageKey,
  notCached,
  type MapPageStore,
  type MapRoot,
} from '../../../src/extent/index.js';

/** Pages in memory; put() refuses to overwrite (keys are never reused). */
class MemoryPages implements MapPageStore {
  readonly pages = new Map<string, Uint8Array>();
  async get(key: string): Promise<Uint8Array> {
    const bytes = this.pages.get(key);
    if (bytes === undefined) throw new Error(`no page ${key}`);
    return bytes;
  }
  async put(key: string, bytes: Uint8Array): Promise<void> {
    if (this.pages.has(key)) throw new Error(`page ${key} exists`);
    this.pages.set(key, bytes.slice());
  }
}

const volumeId = 'vol-1';
const targets = ['a-1', 'a-2', 'b-1', 'b-2', 'c-1', 'c-2'];

function recordFor(extent: number, generation: number, extra: Partial<ExtentRecord> = {}): ExtentRecord {
  return {
    generation,
    shardBytes: 1 << 20,
    shards: targets.map((_, i) => ({
      target: targets[(i + extent) % 6]!,
      key: shardKey(volumeId, extent, generation, i),
    })),
    seed: (extent * 2654435761) >>> 0 || 1,
    ...extra,
  };
}

/** True when `root` reaches page `key`. */
async function reached(tree: MapTree, root: MapRoot, key: string): Promise<boolean> {
  for await (const item of tree.walk(root)) if ('pageKey' in item && item.pageKey === key) return true;
  return false;
}

describe('MapTree', () => {
  it('has as many levels as the volume needs: 1 up to 256 extents, 3 for 10^7, 4 for a 1 PiB volume of 4 MiB extents', () => {
    expect([0, 1, 256, 257, 65_536, 65_537, 1e7, 2 ** 28].map(mapLevelsFor)).to.deep.equal([1, 1, 1, 2, 2, 3, 3, 4]);
  });

  it('round-trips records, through its cache and through a fresh tree that loads every page', async () => {
    const store = new MemoryPages();
    const extents = 1_000_000;
    const tree = new MapTree({ volumeId, extents, store });
    const changes = new Map<number, ExtentRecord>();
    for (let i = 0; i < 2000; i++) {
      const e = (i * 7919) % extents;
      changes.set(e, recordFor(e, 2 ** 32 + i, i % 3 === 0 ? { journalLsn: i } : {}));
    }
    changes.set(extents - 1, recordFor(extents - 1, 7));
    const { root } = await tree.commit(tree.emptyRoot(), changes, 2 ** 32 + 5000);
    const fresh = new MapTree({ volumeId, extents, store });
    for (const t of [tree, fresh]) for (const [e, rec] of changes) expect(await t.lookup(root, e)).to.deep.equal(rec);
    expect(await fresh.lookup(root, 1), 'never written').to.equal(undefined);
    expect(await fresh.lookup(tree.emptyRoot(), 0)).to.equal(undefined);
  });

  it('rebases a root to a taller tree (a grow) and back down (a shrink), records and counts unchanged', async () => {
    const store = new MemoryPages();
    const small = new MapTree({ volumeId, extents: 300, store });
    const changes = new Map([0, 17, 255, 299].map((e) => [e, recordFor(e, 2 ** 32 + e)] as const));
    const { root } = await small.commit(small.emptyRoot(), changes, 2 ** 32 + 1000);
    const big = new MapTree({ volumeId, extents: 70_000, store });
    const grown = await big.rebase(root, 2 ** 32 + 1001);
    expect([root.levels, grown.root.levels, grown.pagesWritten.length]).to.deep.equal([2, 3, 1]);
    expect(grown.root.written).to.equal(4);
    const fresh = new MapTree({ volumeId, extents: 70_000, store });
    for (const [e, rec] of changes) expect(await fresh.lookup(grown.root, e)).to.deep.equal(rec);
    expect(await fresh.lookup(grown.root, 69_999)).to.equal(undefined);
    // Down to one leaf: the records past 256 go first, then the root descends child 0 twice.
    const { root: cut } = await big.commit(grown.root, new Map([[299, null]]), 2 ** 32 + 1002);
    const leaf = new MapTree({ volumeId, extents: 256, store });
    const shrunk = await leaf.rebase(cut, 2 ** 32 + 1003);
    expect([shrunk.root.levels, shrunk.pagesWritten.length, shrunk.root.written]).to.deep.equal([1, 0, 3]);
    for (const e of [0, 17, 255]) expect(await leaf.lookup(shrunk.root, e)).to.deep.equal(changes.get(e));
    // A shrink that left records past the end is a bug, not a smaller map.
    const refused = await leaf.rebase(grown.root, 2 ** 32 + 1004).then(
      () => 'rebased',
      (err: Error) => err.message,
    );
    expect(refused).to.match(/still has pages past its end/);
  });

  it("keeps a record's zero blocks through a page", async () => {
    const store = new MemoryPages();
    const tree = new MapTree({ volumeId, extents: 10, store });
    const rec = recordFor(3, 9, { zeroBlocks: Buffer.from([0b101, 0, 0x80]).toString('base64') });
    const { root } = await tree.commit(tree.emptyRoot(), new Map([[3, rec]]), 10);
    expect(await new MapTree({ volumeId, extents: 10, store }).lookup(root, 3)).to.deep.equal(rec);
  });

  it('keeps shard keys that are not the derived ones, and records without a seed', async () => {
    const store = new MemoryPages();
    const tree = new MapTree({ volumeId, extents: 1000, store });
    const odd: ExtentRecord = {
      generation: 3,
      shardBytes: 4096,
      shards: [
        { target: 's3-a', key: 'migrated/objects/x0' },
        { target: 's3-b', key: shardKey(volumeId, 9, 3, 1) },
      ],
    };
    const { root } = await tree.commit(tree.emptyRoot(), new Map([[9, odd]]), 10);
    expect(await new MapTree({ volumeId, extents: 1000, store }).lookup(root, 9)).to.deep.equal(odd);
  });

  it('writes only the path to each change, shares every other page, and old roots keep their records', async () => {
    const store = new MemoryPages();
    const extents = 10_000_000;
    const tree = new MapTree({ volumeId, extents, store });
    const first = new Map<number, ExtentRecord>();
    for (let e = 0; e < 300_000; e += 37) first.set(e, recordFor(e, 1));
    const a = await tree.commit(tree.emptyRoot(), first, 100);
    // One changed extent: one page per level.
    const b = await tree.commit(a.root, new Map([[37, recordFor(37, 2)]]), 101);
    expect(b.pagesWritten).to.have.length(3);
    expect(b.pagesWritten).to.include(mapPageKey(volumeId, 0, 0, 101));
    // Two changes in one leaf, one far away: that leaf once, the other leaf, their parents, one root.
    const c = await tree.commit(
      b.root,
      new Map([
        [1, recordFor(1, 3)],
        [2, recordFor(2, 3)],
        [9_999_999, recordFor(9_999_999, 3)],
      ]),
      102,
    );
    expect(c.pagesWritten.length).to.equal(5);
    const fresh = new MapTree({ volumeId, extents, store });
    expect((await fresh.lookup(a.root, 37))!.generation, 'the old root').to.equal(1);
    expect((await fresh.lookup(b.root, 37))!.generation).to.equal(2);
    expect((await fresh.lookup(c.root, 37))!.generation).to.equal(2);
    expect((await fresh.lookup(c.root, 74))!.generation, 'a page shared by all three roots').to.equal(1);
    expect((await fresh.lookup(c.root, 9_999_999))!.generation).to.equal(3);
    expect(await fresh.lookup(b.root, 9_999_999)).to.equal(undefined);
  });

  it('forgets extents given null, and a map with nothing left has no root page', async () => {
    const store = new MemoryPages();
    const tree = new MapTree({ volumeId, extents: 100_000, store });
    const { root } = await tree.commit(
      tree.emptyRoot(),
      new Map([
        [5, recordFor(5, 1)],
        [70_000, recordFor(70_000, 1)],
      ]),
      1,
    );
    const one = await tree.commit(root, new Map([[70_000, null]]), 2);
    expect(await tree.lookup(one.root, 70_000)).to.equal(undefined);
    expect(await tree.lookup(one.root, 5)).to.deep.equal(recordFor(5, 1));
    const none = await tree.commit(one.root, new Map([[5, null]]), 3);
    expect(none.root.page).to.equal(undefined);
    expect(none.pagesWritten).to.deep.equal([]);
  });

  it('refuses a page that is torn, stale, or another page: the parent checksum catches each', async () => {
    const store = new MemoryPages();
    const extents = 100_000;
    const tree = new MapTree({ volumeId, extents, store });
    const a = await tree.commit(tree.emptyRoot(), new Map([[300, recordFor(300, 1)]]), 1);
    const b = await tree.commit(a.root, new Map([[300, recordFor(300, 2)]]), 2);
    const leafKey = mapPageKey(volumeId, 0, 1, 2);
    const good = store.pages.get(leafKey)!;
    const cases: [string, Uint8Array][] = [
      ['torn', good.subarray(0, good.length - 5)],
      ['a flipped bit', Uint8Array.from(good, (v, i) => (i === good.length - 3 ? v ^ 1 : v))],
      ['stale (the previous generation of the page)', store.pages.get(mapPageKey(volumeId, 0, 1, 1))!],
      ['another page', store.pages.get(mapPageKey(volumeId, 1, 0, 2))!],
    ];
    for (const [what, bytes] of cases) {
      store.pages.set(leafKey, bytes);
      let failure: unknown;
      await new MapTree({ volumeId, extents, store }).lookup(b.root, 300).catch((err: unknown) => (failure = err));
      expect(failure, what).to.be.instanceOf(ChecksumMismatchError);
      expect((failure as Error).message, what).to.contain(leafKey);
    }
    store.pages.set(leafKey, good);
    expect((await new MapTree({ volumeId, extents, store }).lookup(b.root, 300))!.generation).to.equal(2);
  });

  it('walks every page and record a root reaches, once each', async () => {
    const store = new MemoryPages();
    const tree = new MapTree({ volumeId, extents: 200_000, store });
    const changes = new Map([0, 255, 256, 65_535, 65_536, 199_999].map((e) => [e, recordFor(e, 1)] as const));
    const { root, pagesWritten } = await tree.commit(tree.emptyRoot(), changes, 1);
    const pages: string[] = [];
    const extentsSeen: number[] = [];
    for await (const item of new MapTree({ volumeId, extents: 200_000, store }).walk(root)) {
      if ('pageKey' in item) pages.push(item.pageKey);
      else extentsSeen.push(item.extent);
    }
    expect([...pages].sort()).to.deep.equal([...pagesWritten].sort());
    expect(extentsSeen.sort((x, y) => x - y)).to.deep.equal([...changes.keys()]);
  });

  it('keeps its cache bounded: a reader of 4 leaf pages reads 391 leaves right, holding at most 4 of them', async () => {
    const store = new MemoryPages();
    const extents = 100_000;
    const writer = new MapTree({ volumeId, extents, store });
    const changes = new Map<number, ExtentRecord>();
    for (let e = 0; e < extents; e += 97) changes.set(e, recordFor(e, 5));
    const { root } = await writer.commit(writer.emptyRoot(), changes, 5);
    const reader = new MapTree({ volumeId, extents, store, cachePages: 4 });
    for (const round of [1, 2])
      for (const [e, rec] of changes) expect(await reader.lookup(root, e), `round ${round}`).to.deep.equal(rec);
    // Three levels: the root and two level-1 pages, plus at most 4 leaves.
    expect(reader.cachedPages).to.be.at.most(4 + 3);
    const warm = new MapTree({ volumeId, extents, store });
    expect(warm.peek(root, 97), 'nothing cached yet').to.equal(notCached);
    await warm.lookup(root, 97);
    expect(warm.peek(root, 97)).to.deep.equal(changes.get(97));
    expect(warm.peek(root, 98), 'same leaf, never written').to.equal(undefined);
  });

  it('lets gc collect only pages no root reaches that are older than the newest root', async () => {
    const store = new MemoryPages();
    const extents = 100_000;
    const tree = new MapTree({ volumeId, extents, store });
    const a = await tree.commit(
      tree.emptyRoot(),
      new Map([
        [5, recordFor(5, 1)],
        [70_000, recordFor(70_000, 1)],
      ]),
      10,
    );
    const b = await tree.commit(a.root, new Map([[5, recordFor(5, 2)]]), 20); // shares extent 70,000's pages
    const c = await tree.commit(b.root, new Map([[6, recordFor(6, 3)]]), 30);
    // A commit in flight: its pages are written, its root not published yet.
    const inFlight = await tree.commit(c.root, new Map([[7, recordFor(7, 4)]]), 40);
    const listed = [...store.pages.keys(), 'other-vol/map/0/0/1', `${volumeId}/0/1/2/3`];
    const fresh = new MapTree({ volumeId, extents, store });
    // Roots kept: c (the volume) and a (a snapshot, say).
    const gone = await fresh.collectable([c.root, a.root], listed);
    expect(gone.sort()).to.deep.equal([...b.pagesWritten].sort());
    for (const key of inFlight.pagesWritten) expect(gone, 'a commit in flight').to.not.include(key);
    // Only the volume: a's own pages go too, never those c still shares.
    const onlyC = await fresh.collectable([c.root], listed);
    for (const key of [...a.pagesWritten, ...b.pagesWritten])
      expect(onlyC.includes(key), key).to.equal(
        !c.pagesWritten.includes(key) && (await reached(fresh, c.root, key)) === false,
      );
    for (const [e, rec] of [
      [5, recordFor(5, 2)],
      [70_000, recordFor(70_000, 1)],
      [6, recordFor(6, 3)],
    ] as const) {
      for (const key of onlyC) store.pages.delete(key);
      expect(await new MapTree({ volumeId, extents, store }).lookup(c.root, e)).to.deep.equal(rec);
    }
  });

  it('diffs two roots: the extents whose records differ, reading only the pages that differ', async () => {
    const pages = new MemoryPages();
    const extents = 200_000;
    const tree = new MapTree({ volumeId, extents, store: pages });
    const base = new Map<number, ExtentRecord>();
    for (let e = 0; e < extents; e += 97) base.set(e, recordFor(e, 1));
    const { root: a } = await tree.commit(tree.emptyRoot(), base, 1);
    // b: two records changed, one forgotten, one added far away; the rest shared with a.
    const changes = new Map<number, ExtentRecord | null>([
      [97, recordFor(97, 2)],
      [97 * 1000, recordFor(97 * 1000, 2, { journalLsn: 5 })],
      [97 * 3, null],
      [199_999, recordFor(199_999, 2)],
    ]);
    const { root: b } = await tree.commit(a, changes, 2);
    const fresh = new MapTree({ volumeId, extents, store: pages });
    const got: number[] = [];
    for await (const e of fresh.diff(a, b)) got.push(e);
    expect(got).to.deep.equal([97, 97 * 3, 97 * 1000, 199_999]);
    // Only the pages on the changed paths were read, not the whole map.
    expect(fresh.cachedPages, 'pages read').to.be.below(20);
    const none: number[] = [];
    for await (const e of tree.diff(b, b)) none.push(e);
    expect(none, 'a root against itself').to.deep.equal([]);
    const all: number[] = [];
    for await (const e of tree.diff(tree.emptyRoot(), a)) all.push(e);
    expect(all).to.deep.equal([...base.keys()]);
  });

  it('maps a 1 PiB thin volume written sparsely with a handful of pages', async () => {
    const store = new MemoryPages();
    const extents = 2 ** 28; // 1 PiB in 4 MiB extents
    const tree = new MapTree({ volumeId, extents, store });
    const spots = [0, 2 ** 20, 2 ** 27 + 5, extents - 1];
    let root: MapRoot = tree.emptyRoot();
    let pages = 0;
    for (const [i, e] of spots.entries()) {
      const c = await tree.commit(root, new Map([[e, recordFor(e, i + 1)]]), i + 1);
      root = c.root;
      pages += c.pagesWritten.length;
    }
    expect(pages).to.equal(4 * tree.levels);
    const fresh = new MapTree({ volumeId, extents, store });
    for (const [i, e] of spots.entries()) expect((await fresh.lookup(root, e))!.generation).to.equal(i + 1);
    expect(fresh.cachedPages, 'only the paths read are loaded').to.be.at.most(1 + 3 * 4);
  });
});
