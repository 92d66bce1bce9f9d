/**
 * VolumeEngine.persist() against the in-memory extent map's batched, fenced commits: a writer
 * fenced between two batches keeps the shards of the extents the first batch published.
 */
import { CodecPool } from '../../../src/codec/index.js';
import { MemoryExtentMap } from '../../../src/sim/index.js';
import { checkFencedMultiBatchCommit } from '../../support/fenced_commit.js';

describe('VolumeEngine.persist() with a commit fenced between batches', function () {
  let pool: CodecPool;
  before(async () => {
    pool = await CodecPool.start({ threads: 1, memoryBytes: 16 * 1024 * 1024 });
  });
  after(async () => pool?.close());

  it('keeps every extent the earlier batches published readable (in-memory twin)', async () => {
    const map = new MemoryExtentMap();
    map.batchExtentsMax = 4;
    let batches = 0;
    // A takeover lands after the second batch: extents 0-7 published, 8-9 refused.
    map.betweenBatches = () => {
      batches += 1;
      if (batches === 2) map.fenced = true;
    };
    await checkFencedMultiBatchCommit({ map, reload: () => map.load(), codec: pool, extents: 10 });
  });
});
