/**
 * The cache over an extent map read on demand (CacheBackend.prepare): records are looked up
 * before the cache answers from its own state, but a lookup that fails (the map pages' targets
 * are down) must not refuse a write: a write-back cache takes it and publishes later.
 */
import { expect } from 'chai';
import { UnavailableError } from '../../../src/core/index.js';
import { WriteBackCache, type CacheBackend } from '../../../src/cache/index.js';

const extentBytes = 64 * 1024;

function backend(prepare: (extents: number[]) => Promise<void>): { backend: CacheBackend; persisted: number[] } {
  const persisted: number[] = [];
  return {
    persisted,
    backend: {
      geometry: { sizeBytes: 4 * extentBytes, extentBytes, k: 2 },
      isHole: () => false,
      prepare: (extents) => prepare([...extents]),
      versionOf: () => 0,
      readRange: (_e, _o, length) => Promise.resolve(new Uint8Array(length)),
      readWhole: () => Promise.resolve(new Uint8Array(extentBytes)),
      persist: async (images) => {
        for (const i of images) persisted.push(i.extent);
      },
    },
  };
}

describe('WriteBackCache over a map read on demand', () => {
  it('looks up the extents a write and a block-status query touch, before using what it knows', async () => {
    const asked: number[][] = [];
    const b = backend(async (e) => void asked.push(e));
    const cache = new WriteBackCache(b.backend, { flushCheckMs: 0, dirtyBytesMax: 4 * extentBytes });
    await cache.write(extentBytes - 10, new Uint8Array(20));
    await cache.blockStatus(2 * extentBytes, extentBytes);
    expect(asked).to.deep.equal([[0, 1], [2]]);
    await cache.close();
  });

  it('takes writes and answers block status while lookups fail, and publishes once they work', async () => {
    let down = true;
    const b = backend(async () => {
      if (down) throw new UnavailableError('Cannot read map page v/map/0/0/1: no good copy');
    });
    const cache = new WriteBackCache(b.backend, { flushCheckMs: 0, dirtyBytesMax: 4 * extentBytes });
    await cache.write(0, new Uint8Array(4096).fill(7));
    const runs = await cache.blockStatus(0, 4 * extentBytes);
    expect(
      runs.every((r) => !r.hole),
      'unknown extents are reported as data',
    ).to.equal(true);
    expect(Array.from(await cache.read(0, 2))).to.deep.equal([7, 7]);
    down = false;
    await cache.flush();
    expect(b.persisted).to.deep.equal([0]);
    await cache.close();
  });

  it('looks up every extent a replay touches before taking it, and fails the replay when it cannot', async () => {
    const asked: number[][] = [];
    let down = false;
    const b = backend(async (e) => {
      if (down) throw new UnavailableError('Cannot read map page v/map/0/0/1: no good copy');
      asked.push(e);
    });
    const cache = new WriteBackCache(b.backend, { flushCheckMs: 0, dirtyBytesMax: 4 * extentBytes });
    const records = [
      { lsn: 1, writes: [{ offset: extentBytes - 2, data: new Uint8Array(4).fill(1) }] },
      { lsn: 2, writes: [{ offset: 3 * extentBytes, data: new Uint8Array(2).fill(2) }] },
    ];
    expect(await cache.replayAll(records)).to.equal(6);
    expect(asked).to.deep.equal([[0, 1, 3]]);
    down = true;
    let failure: unknown;
    await cache.replayAll(records).catch((err: unknown) => (failure = err));
    expect(failure, 'a replay that cannot know what is published').to.be.instanceOf(UnavailableError);
    cache.abandon();
  });
});
