/**
 * TreeExtentMapStore: the engine's map port over the page tree. A commit is one root swap; a
 * fenced writer, or one another writer overtook, publishes nothing; pages written before a
 * refused swap are garbage that no root reaches.
 */
import { expect } from 'chai';
import { FencedError, shardKey, type ExtentRecord } from '../../../src/core/index.js';
import { MapTree, ReplicatedMapPages, mapLevelsFor } from '../../../src/extent/index.js';
import { MemoryShardStore } from '../../../src/shard/index.js';
import { MemoryMapRoots } from '../../../src/sim/index.js';
import { TreeExtentMapStore } from '../../../src/volume/index.js';

const volumeId = 'v-tree';
const extents = 5000;
const names = ['a', 'b', 'c', 'd'];
const rec = (e: number, generation: number): ExtentRecord => ({
  generation,
  shardBytes: 1024,
  shards: names.map((target, i) => ({ target, key: shardKey(volumeId, e, generation, i) })),
  seed: 9,
});

describe('TreeExtentMapStore', () => {
  it('publishes a commit by one root swap, and a fenced or overtaken writer publishes nothing', async () => {
    const stores = new Map(names.map((n) => [n, new MemoryShardStore(n)]));
    const pages = new ReplicatedMapPages({ targets: stores });
    const roots = new MemoryMapRoots(mapLevelsFor(extents));
    const writer = (epoch: number) => new TreeExtentMapStore({ volumeId, extents, pages, roots, epoch });

    const one = writer(1);
    expect((await one.load()).size).to.equal(0);
    await one.commit([
      { index: 1, record: rec(1, 1) },
      { index: 4000, record: rec(4000, 1) },
    ]);
    expect(roots.swaps).to.equal(1);
    expect([...(await writer(2).loadAll()).keys()]).to.deep.equal([1, 4000]);

    // A second writer takes over and commits: the first one's next commit is refused whole.
    const two = writer(2);
    await two.load();
    await two.commit([{ index: 1, record: null }]);
    let failure: unknown;
    await one.commit([{ index: 2, record: rec(2, 2) }]).catch((err: unknown) => (failure = err));
    expect(failure).to.be.instanceOf(FencedError);
    const seen = await writer(3).loadAll();
    expect([...seen.keys()], 'the overtaken commit left nothing').to.deep.equal([4000]);

    // A fenced writer: pages may be written, the root is not.
    roots.fenced = true;
    failure = undefined;
    await two.commit([{ index: 3, record: rec(3, 3) }]).catch((err: unknown) => (failure = err));
    expect(failure).to.be.instanceOf(FencedError);
    roots.fenced = false;
    expect([...(await writer(4).loadAll()).keys()]).to.deep.equal([4000]);
    expect(roots.swaps).to.equal(2);
  });

  it('tells its listeners which extents someone else changed when it finds the root moved', async () => {
    const stores = new Map(names.map((n) => [n, new MemoryShardStore(n)]));
    const pages = new ReplicatedMapPages({ targets: stores });
    const roots = new MemoryMapRoots(mapLevelsFor(extents));
    const writer = new TreeExtentMapStore({ volumeId, extents, pages, roots, epoch: 1 });
    await writer.load();
    await writer.commit([1, 300, 4000].map((e) => ({ index: e, record: rec(e, 1) })));
    const heard: (readonly number[] | undefined)[] = [];
    writer.onRootMoved((changed) => heard.push(changed));
    await writer.refresh();
    expect(heard, 'its own root is no news').to.deep.equal([]);
    // A repair moves extent 300's shards: a new root over the writer's, swapped without the lock.
    const repair = new MapTree({ volumeId, extents, store: pages });
    const moved = { ...rec(300, 1), shards: rec(300, 1).shards.map((x) => ({ ...x, target: 'd' })) };
    roots.root = (await repair.commit(roots.root, new Map([[300, moved]]), 2 ** 33 + 1)).root;
    await writer.refresh();
    expect(heard).to.deep.equal([[300]]);
    expect(await writer.lookup([300])).to.deep.equal([moved]);
    // The writer's next commit goes over the repair's root: both are published.
    await writer.commit([{ index: 2, record: rec(2, 2) }]);
    const all = await writer.loadAll();
    expect([...all.keys()]).to.deep.equal([1, 2, 300, 4000]);
    expect(all.get(300)).to.deep.equal(moved);
  });
});
