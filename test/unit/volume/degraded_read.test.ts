/**
 * Degraded reads read no more shards than they need: k reads at most in flight, so parity is
 * read only in place of a data shard that failed, and a shard that failed or was slow is tried
 * after every other. In-memory targets, one per shard, so which shards a read touched is visible.
 */
import { expect } from 'chai';
import { CodecPool } from '../../../src/codec/index.js';
import { ManualClock } from '../../../src/core/index.js';
import { ExtentUnreadableError, readAnyK, shardReadHedgeMsDefault } from '../../../src/volume/index.js';
import { writeZonedVolume, zonedShardBytes, type ZonedVolume } from '../../support/zoned_volume.js';

describe('degraded reads', function () {
  let pool: CodecPool;
  const open: ZonedVolume[] = [];
  before(async () => {
    pool = await CodecPool.start({ threads: 1, memoryBytes: 16 * 1024 * 1024 });
  });
  after(async () => pool?.close());
  afterEach(async () => {
    for (const v of open.splice(0)) await v.close();
  });

  /** A 4+2 volume, shard i on its own target; zones do not matter here. */
  async function volume(clock?: ManualClock): Promise<ZonedVolume> {
    const zones = ['a', 'b', 'c', 'a', 'b', 'c'];
    const v = await writeZonedVolume({ codec: pool, profile: { k: 4, m: 2 }, zones, ...(clock ? { clock } : {}) });
    open.push(v);
    return v;
  }

  describe('readAnyK()', () => {
    it('reads no parity while every data shard answers', async () => {
      const v = await volume();
      const { shards, failures } = await readAnyK(v.targets, v.engine.record(0)!, 4);
      expect(failures).to.deep.equal([]);
      expect([...shards.keys()].sort()).to.deep.equal([0, 1, 2, 3]);
      expect(v.getsOf([4, 5]), 'parity reads').to.equal(0);
    });

    it('reads one parity shard for one failed data shard, the first in order', async () => {
      const v = await volume();
      v.targets.down.add(v.names[1]!);
      const { shards, failures } = await readAnyK(v.targets, v.engine.record(0)!, 4);
      expect([...shards.keys()].sort()).to.deep.equal([0, 2, 3, 4]);
      expect(failures).to.have.length(1);
      expect(v.getsOf([5])).to.equal(0);
    });

    it('tries the shards in `last` after every other', async () => {
      const v = await volume();
      const { shards } = await readAnyK(v.targets, v.engine.record(0)!, 4, { last: new Set([0]) });
      expect([...shards.keys()].sort()).to.deep.equal([1, 2, 3, 4]);
      expect(v.getsOf([0, 5])).to.equal(0);
    });
  });

  describe('VolumeEngine.readRange()', () => {
    it('reads parity in shard order in place of a data shard that is down', async () => {
      const v = await volume();
      v.targets.down.add(v.names[1]!);
      await v.expectRange(0, 0, 4 * zonedShardBytes);
      expect(v.engine.degraded.has(0)).to.equal(true);
      expect(v.getsOf([4])).to.equal(1);
      expect(v.getsOf([5])).to.equal(0);
    });

    it('tries a slow data shard last once the hedge fires, and reads one parity shard in its place', async () => {
      const clock = new ManualClock();
      const v = await volume(clock);
      v.targets.stalled.add(v.names[1]!);
      const read = v.engine.readRange(0, 0, 4 * zonedShardBytes);
      // Let the other direct reads land, then pass the hedge.
      await new Promise((resolve) => setImmediate(resolve));
      clock.advance(shardReadHedgeMsDefault);
      const bytes = await read;
      expect(Buffer.from(bytes).equals(Buffer.from(v.images[0]!))).to.equal(true);
      expect(v.engine.degraded.has(0)).to.equal(true);
      expect(v.getsOf([1]), 'the slow shard is not asked again').to.equal(1);
      expect(v.getsOf([4])).to.equal(1);
      expect(v.getsOf([5])).to.equal(0);
    });

    /** Flips a bit in data block `block` of shard `shard` of extent 0 (framed: 32-byte header, then [CRC, 4096 bytes] blocks). */
    function corruptBlock(v: ZonedVolume, shard: number, block: number): void {
      const key = v.engine.record(0)!.shards[shard]!.key;
      v.targets.stores.get(v.names[shard]!)!.corrupt(key, 32 + block * 4100 + 4 + 9);
    }

    it('reads every byte when three shards are each bad in a different block: whole, only three shards read, block by block, five of six', async () => {
      const v = await volume();
      corruptBlock(v, 0, 0);
      corruptBlock(v, 1, 1);
      corruptBlock(v, 4, 2);
      await v.expectRange(0, 0, 4 * zonedShardBytes);
      expect(v.engine.degraded.has(0)).to.equal(true);
    });

    it('fails, and returns nothing, when a block position has fewer than k good blocks', async () => {
      const v = await volume();
      for (const shard of [0, 1, 2]) corruptBlock(v, shard, 1);
      const err = await v.engine.readRange(0, 0, 4 * zonedShardBytes).then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(err).to.be.instanceOf(ExtentUnreadableError);
      expect(String(err)).to.match(/block 1 is good on 3 shards/);
    });
  });
});
