/**
 * The clean cache budget every volume's cache shares (SharedCacheBudget): past it the least
 * recently used clean extents are dropped, whichever volume holds them, so a frontend's read
 * cache no longer grows with the number of attached volumes (--cache-size each).
 */
import { expect } from 'chai';
import { SharedCacheBudget, WriteBackCache, type CacheBackend } from '../../../src/cache/index.js';

const extentBytes = 64 * 1024;

/** A backend whose extents hold data (each byte is its extent number) and that counts whole reads. */
function dataBackend(): { backend: CacheBackend; wholeReads: number[] } {
  const wholeReads: number[] = [];
  return {
    wholeReads,
    backend: {
      geometry: { sizeBytes: 8 * extentBytes, extentBytes, k: 2 },
      isHole: () => false,
      versionOf: () => 0,
      readRange: (e, _o, length) => Promise.resolve(new Uint8Array(length).fill(e)),
      readWhole: (e) => {
        wholeReads.push(e);
        return Promise.resolve(new Uint8Array(extentBytes).fill(e));
      },
      persist: () => Promise.resolve(),
    },
  };
}

describe('WriteBackCache clean cache budget shared by volumes', () => {
  it('drops the least recently used clean extents of any volume once all volumes together pass it', async () => {
    const trims: number[] = [];
    const shared = new SharedCacheBudget(2 * extentBytes, (dropped) => trims.push(dropped));
    const options = {
      flushCheckMs: 0,
      dirtyBytesMax: extentBytes,
      cacheBytesMax: 8 * extentBytes,
      sharedCache: shared,
    };
    const a = dataBackend();
    const b = dataBackend();
    const cacheA = new WriteBackCache(a.backend, options);
    const cacheB = new WriteBackCache(b.backend, options);
    // Whole-extent reads, never adjacent (no read-ahead): A caches extents 4 and 0.
    await cacheA.read(4 * extentBytes, extentBytes);
    await cacheA.read(0, extentBytes);
    expect(cacheA.baseBytes).to.equal(2 * extentBytes);
    // B's first extent passes the budget: A's least recently used (4) goes.
    await cacheB.read(6 * extentBytes, extentBytes);
    expect([cacheA.baseBytes, cacheB.baseBytes, shared.heldBytes]).to.deep.equal([
      extentBytes,
      extentBytes,
      2 * extentBytes,
    ]);
    expect(trims).to.deep.equal([extentBytes]);
    // A uses extent 0 again (a hit), so B's extent 6 is now the oldest.
    expect((await cacheA.read(0, 16))[0]).to.equal(0);
    await cacheB.read(2 * extentBytes, extentBytes);
    expect([cacheA.baseBytes, cacheB.baseBytes]).to.deep.equal([extentBytes, extentBytes]);
    expect(a.wholeReads).to.deep.equal([4, 0]);
    // B's extent 6 was dropped: reading it again goes to the store.
    expect((await cacheB.read(6 * extentBytes, extentBytes))[0]).to.equal(6);
    expect(b.wholeReads).to.deep.equal([6, 2, 6]);
    await Promise.all([cacheA.close(), cacheB.close()]);
    expect(shared.heldBytes, 'closed caches leave the budget').to.equal(0);
  });

  it('lets go of the budget when a cache is abandoned (an attach that failed after building it)', async () => {
    const shared = new SharedCacheBudget(4 * extentBytes);
    const a = dataBackend();
    const cache = new WriteBackCache(a.backend, {
      flushCheckMs: 0,
      cacheBytesMax: 8 * extentBytes,
      sharedCache: shared,
    });
    await cache.read(0, extentBytes);
    expect(shared.heldBytes).to.equal(extentBytes);
    cache.abandon();
    expect(shared.heldBytes, 'an abandoned cache holds nothing of the budget').to.equal(0);
  });
});
