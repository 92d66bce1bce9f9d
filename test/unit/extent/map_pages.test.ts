/**
 * Map pages replicated on shard targets: r copies on the targets rendezvous hashing picks, read
 * from the first good copy; a lost or wrong copy is skipped, and a map stays readable through the
 * loss of r - 1 copies of every page.
 */
import { expect } from 'chai';
import { shardKey, UnavailableError, type ExtentRecord, type ShardStore } from '../../../src/core/index.js';
import { MapTree, ReplicatedMapPages } from '../../../src/extent/index.js';
import { MemoryShardStore } from '../../../src/shard/index.js';

const names = ['a-1', 'a-2', 'b-1', 'b-2', 'c-1', 'c-2'];
const volumeId = 'vol-r';

function cluster(): Map<string, MemoryShardStore> {
  return new Map(names.map((n) => [n, new MemoryShardStore(n)]));
}

const record = (extent: number, generation: number): ExtentRecord => ({
  generation,
  shardBytes: 4096,
  shards: names.map((target, i) => ({ target, key: shardKey(volumeId, extent, generation, i) })),
  seed: extent + 1,
});

async function holders(stores: Map<string, MemoryShardStore>, key: string): Promise<string[]> {
  const out: string[] = [];
  for (const [name, store] of stores) if ((await store.head(key)) !== null) out.push(name);
  return out;
}

describe('ReplicatedMapPages', () => {
  it('keeps each page on the 3 targets its key ranks first, and moves only the pages of a target that leaves', async () => {
    const stores = cluster();
    const pages = new ReplicatedMapPages({ targets: stores });
    const keys = Array.from({ length: 60 }, (_, i) => `${volumeId}/map/0/${i}/1`);
    for (const key of keys) await pages.put(key, new Uint8Array([1, 2, 3]));
    const spread = new Map(names.map((n) => [n, 0]));
    for (const key of keys) {
      const on = await holders(stores, key);
      expect(on.sort()).to.deep.equal(pages.order(key).slice(0, 3).sort());
      for (const n of on) spread.set(n, spread.get(n)! + 1);
    }
    expect(Math.min(...spread.values()), 'every target holds some pages').to.be.above(10);
    // Without b-1, each key's order is the old one with b-1 left out.
    const fewer = new ReplicatedMapPages({ targets: new Map([...stores].filter(([n]) => n !== 'b-1')) });
    for (const key of keys) expect(fewer.order(key)).to.deep.equal(pages.order(key).filter((n) => n !== 'b-1'));
  });

  it('serves a map through two bad copies of every page: one lost, one wrong', async () => {
    const stores = cluster();
    const pages = new ReplicatedMapPages({ targets: stores });
    const tree = new MapTree({ volumeId, extents: 100_000, store: pages });
    const changes = new Map([3, 300, 70_000].map((e) => [e, record(e, 7)] as const));
    const { root, pagesWritten } = await tree.commit(tree.emptyRoot(), changes, 7);
    // Lose the first copy of every page and replace the second with wrong bytes: the third serves.
    for (const key of pagesWritten) {
      const [first, second] = pages.order(key);
      await stores.get(first!)!.delete(key);
      await stores.get(second!)!.delete(key);
      await stores.get(second!)!.put(key, new Uint8Array(100).fill(9)); // a wrong copy where one was
    }
    const fresh = new MapTree({ volumeId, extents: 100_000, store: pages });
    for (const [e, rec] of changes) expect(await fresh.lookup(root, e)).to.deep.equal(rec);
  });

  it('fails a read with no good copy, saying what each target said, and a put with a copy missing', async () => {
    const stores = cluster();
    const pages = new ReplicatedMapPages({ targets: stores });
    const key = `${volumeId}/map/0/0/1`;
    await pages.put(key, new Uint8Array([5]));
    let failure: unknown;
    await pages.get(key, () => false).catch((err: unknown) => (failure = err));
    expect(failure).to.be.instanceOf(UnavailableError);
    for (const n of pages.order(key).slice(0, 3))
      expect((failure as Error).message).to.contain(`${n}: a copy that fails its checksum`);
    // A target that refuses is passed over for the next in the page's order, and told about.
    const broken: ShardStore = Object.assign(Object.create(stores.get('a-1')!) as ShardStore, {
      put: async () => {
        throw new Error('disk on fire');
      },
    });
    const refusedBy: string[] = [];
    const withBroken = new ReplicatedMapPages({
      targets: new Map<string, ShardStore>([...stores, ['a-1', broken]]),
      refused: (t) => refusedBy.push(t),
    });
    const onA1 = Array.from({ length: 50 }, (_, i) => `${volumeId}/map/0/${i}/2`).find((k) =>
      withBroken.order(k).slice(0, 3).includes('a-1'),
    )!;
    await withBroken.put(onA1, new Uint8Array([1]));
    expect(refusedBy).to.deep.equal(['a-1']);
    const holders = [...stores.keys()].filter((n) => n !== 'a-1');
    let copies = 0;
    for (const n of holders) if ((await stores.get(n)!.list(onA1)).includes(onA1)) copies += 1;
    expect(copies, 'three copies, none on the refusing target').to.equal(3);
    // Fails when too few targets take a copy, saying what each said.
    const allBroken = new ReplicatedMapPages({ targets: new Map<string, ShardStore>([['a-1', broken]]) });
    failure = undefined;
    await allBroken.put(onA1, new Uint8Array([1])).catch((err: unknown) => (failure = err));
    expect(failure).to.be.instanceOf(UnavailableError);
    expect((failure as Error).message).to.contain('0 of 1 copies stored (a-1: disk on fire)');
    // Fewer targets than copies: one copy on each.
    await new ReplicatedMapPages({ targets: new Map([...stores].slice(0, 2)) }).put(`${key}x`, new Uint8Array([1]));
    for (const [, store] of [...stores].slice(0, 2)) expect(await store.list(`${key}x`)).to.deep.equal([`${key}x`]);
  });

  it('puts the copies of each page in distinct zones first, so losing a zone leaves a copy', async () => {
    const stores = cluster();
    const zoneOf = (n: string) => n.split('-')[0];
    const pages = new ReplicatedMapPages({ targets: stores, zoneOf });
    const unspread = new ReplicatedMapPages({ targets: stores });
    let sameZoneWithout = 0;
    for (let i = 0; i < 60; i++) {
      const key = `${volumeId}/map/0/${i}/1`;
      await pages.put(key, new Uint8Array([i]));
      const holders: string[] = [];
      for (const [n, store] of stores) if ((await store.list(key)).includes(key)) holders.push(n);
      expect(new Set(holders.map(zoneOf)).size, `zones of ${key}: ${holders.join(', ')}`).to.equal(3);
      if (new Set(unspread.order(key).slice(0, 3).map(zoneOf)).size < 3) sameZoneWithout += 1;
    }
    // Plain rendezvous order would have put two copies of some pages in one zone.
    expect(sameZoneWithout, 'pages whose first three targets share a zone').to.be.above(0);
  });
});
