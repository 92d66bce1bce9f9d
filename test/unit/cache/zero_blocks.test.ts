/**
 * Block status inside a published extent: the 4 KiB blocks its record says read as zeros are
 * holes; once the extent has writes not yet published, the whole extent is data again.
 */
import { expect } from 'chai';
import { WriteBackCache, type CacheBackend } from '../../../src/cache/index.js';

const extentBytes = 64 * 1024;

describe('WriteBackCache block status with zero blocks', () => {
  it('reports the zero blocks of a published extent as holes, and the whole extent as data while it is dirty', async () => {
    const backend: CacheBackend = {
      geometry: { sizeBytes: 2 * extentBytes, extentBytes, k: 2 },
      isHole: (e) => e === 1,
      versionOf: () => 0,
      readRange: (_e, _o, length) => Promise.resolve(new Uint8Array(length)),
      readWhole: () => Promise.resolve(new Uint8Array(extentBytes)),
      persist: async () => undefined,
      // Blocks 1 and 2 of extent 0 read as zeros.
      zeroBlocks: (e) => (e === 0 ? Uint8Array.of(0b110) : undefined),
    };
    const cache = new WriteBackCache(backend, { flushCheckMs: 0, dirtyBytesMax: 2 * extentBytes });
    const runs = (await cache.blockStatus(0, 2 * extentBytes)).map((r) => [r.offset, r.length, r.hole]);
    expect(runs).to.deep.equal([
      [0, 4096, false],
      [4096, 8192, true],
      [12288, extentBytes - 12288, false],
      [extentBytes, extentBytes, true],
    ]);
    // A query starting inside a zero block is clipped to it.
    expect((await cache.blockStatus(6000, 100)).map((r) => [r.offset, r.length, r.hole])).to.deep.equal([
      [6000, 100, true],
    ]);
    await cache.write(5000, Uint8Array.of(1));
    expect((await cache.blockStatus(0, extentBytes)).map((r) => r.hole)).to.deep.equal([false]);
    await cache.close();
  });
});
