/**
 * Reads that prefer the frontend's zone (issue 9, item 6): degraded reads try shards in the zone
 * first of each kind; a range whose data shard is in another zone is decoded from the same range
 * of k shards in the zone when the zone holds k; every result is byte-exact against what was
 * written; and without a zone nothing changes. In-memory targets, one per shard, so which shards
 * a read touched is visible per target.
 */
import { expect } from 'chai';
import { CodecPool } from '../../../src/codec/index.js';
import { ManualClock, type ExtentRecord, type Profile } from '../../../src/core/index.js';
import {
  readAnyK,
  shardReadHedgeMsDefault,
  shardReadOrder,
  zoneDecodesInFlightMax,
} from '../../../src/volume/index.js';
import { writeZonedVolume, zonedShardBytes as shardBytes, type ZonedVolume } from '../../support/zoned_volume.js';

describe('reads in the frontend zone', function () {
  let pool: CodecPool;
  const open: ZonedVolume[] = [];
  before(async () => {
    pool = await CodecPool.start({ threads: 1, memoryBytes: 16 * 1024 * 1024 });
  });
  after(async () => pool?.close());
  afterEach(async () => {
    for (const v of open.splice(0)) await v.close();
  });

  async function written(
    profile: Profile,
    zones: readonly string[],
    zone: string | undefined,
    clock?: ManualClock,
  ): Promise<ZonedVolume> {
    const v = await writeZonedVolume({
      codec: pool,
      profile,
      zones,
      ...(zone === undefined ? {} : { zone }),
      ...(clock === undefined ? {} : { clock }),
    });
    open.push(v);
    return v;
  }

  describe('shardReadOrder()', () => {
    const rec = (zones: readonly string[]): ExtentRecord => ({
      generation: 1,
      shardBytes,
      shards: zones.map((z, i) => ({ target: `${z}-${i}`, key: `k${i}` })),
    });
    const zoneOf = (t: string) => (t.startsWith('?') ? undefined : t.split('-')[0]);

    it('tries data shards in the zone, other data shards, parity in the zone, then other parity', () => {
      expect(shardReadOrder(rec(['b', 'a', 'b', 'a', 'b', 'a']), 4, 'a', zoneOf)).to.deep.equal([1, 3, 0, 2, 5, 4]);
      expect(shardReadOrder(rec(['b', 'a', 'a']), 2, 'a', zoneOf)).to.deep.equal([1, 0, 2]);
    });

    it('counts a target of unknown zone as another zone', () => {
      expect(shardReadOrder(rec(['?', 'a', '?']), 2, 'a', zoneOf)).to.deep.equal([1, 0, 2]);
    });

    it('keeps shard order, data then parity, without a zone', () => {
      expect(shardReadOrder(rec(['b', 'a', 'b', 'a', 'b', 'a']), 4, undefined, zoneOf)).to.deep.equal([
        0, 1, 2, 3, 4, 5,
      ]);
    });
  });

  describe('readAnyK() in a zone', () => {
    it('reads no parity while every data shard answers, even with k shards in the zone', async () => {
      const w = await written({ k: 4, m: 2 }, ['b', 'a', 'b', 'a', 'a', 'a'], 'a');
      const { shards, failures } = await readAnyK(w.targets, w.engine.record(0)!, 4, { zone: 'a' });
      expect(failures).to.deep.equal([]);
      expect([...shards.keys()].sort()).to.deep.equal([0, 1, 2, 3]);
      expect(w.getsOf([4, 5]), 'parity reads').to.equal(0);
    });

    it('reads parity in the zone before parity elsewhere once a data shard fails', async () => {
      const w = await written({ k: 4, m: 2 }, ['a', 'b', 'a', 'b', 'b', 'a'], 'a');
      w.targets.down.add(w.names[1]!);
      const inZone = await readAnyK(w.targets, w.engine.record(0)!, 4, { zone: 'a' });
      expect([...inZone.shards.keys()].sort()).to.deep.equal([0, 2, 3, 5]);
      expect(w.getsOf([4]), 'parity in zone b').to.equal(0);

      w.targets.gets.clear();
      const anywhere = await readAnyK(w.targets, w.engine.record(0)!, 4);
      expect([...anywhere.shards.keys()].sort(), 'without a zone: parity in shard order').to.deep.equal([0, 2, 3, 4]);
      expect(w.getsOf([5])).to.equal(0);
    });
  });

  describe('VolumeEngine.readRange() in a zone', () => {
    it('decodes a range whose data shard is in another zone from the same range of k shards in its own', async () => {
      // 4+2 with shards 2 and 3 in zone b: zone a holds 4 = k shards, two of them parity.
      const w = await written({ k: 4, m: 2 }, ['a', 'a', 'b', 'b', 'a', 'a'], 'a');
      await w.expectRange(0, 2 * shardBytes + 123, 5000);
      expect(w.getsOf([2, 3]), 'reads in zone b').to.equal(0);
      for (const i of [0, 1, 4, 5]) expect(w.targets.getBytes.get(w.names[i]!), `bytes from shard ${i}`).to.equal(5000);
      expect(w.engine.stats).to.include({ zoneDecodedReads: 1, shardReads: 4, crossZoneShardReads: 0 });
      expect(w.engine.degraded.size, 'a decode in the zone is not a degraded read').to.equal(0);
    });

    it('decodes 2+1 whose data shard 0 is in zone b from shards 1 and 2 in zone a', async () => {
      const w = await written({ k: 2, m: 1 }, ['b', 'a', 'a'], 'a');
      await w.expectRange(0, 0, 2 * shardBytes);
      await w.expectRange(1, 0, 2 * shardBytes - 7000);
      expect(w.getsOf([0]), 'reads in zone b').to.equal(0);
      expect(w.engine.stats.crossZoneShardReads).to.equal(0);
    });

    for (const [profile, zones, why] of [
      [{ k: 4, m: 2 }, ['a', 'a', 'b', 'b', 'a', 'a'], 'two data shards and two parity in the zone'],
      [{ k: 2, m: 2 }, ['b', 'b', 'a', 'a'], 'only parity in the zone'],
      [{ k: 3, m: 2 }, ['b', 'a', 'b', 'a', 'a'], 'one data shard elsewhere between two in the zone'],
    ] as const) {
      it(`returns the written bytes at every edge: ${profile.k}+${profile.m}, ${why}`, async () => {
        const w = await written(profile, zones, 'a');
        const { k } = profile;
        const last = k * shardBytes - 7000;
        const ranges: [number, number, number][] = [
          [0, 0, 1],
          [0, k * shardBytes - 1, 1], // the last byte
          [0, shardBytes - 1, 2], // across a shard edge: two windows of 1 byte
          [0, shardBytes - 1000, 3000], // two windows, [0, 2000) and [9000, 10000)
          [0, shardBytes - 5000, shardBytes], // touching windows merge into the whole shard
          [0, 4095, 4098], // across checksum blocks
          [0, 0, k * shardBytes], // the whole extent
          [1, 0, last], // the whole short extent
          [1, last - 13, 13], // its last bytes, inside a partly padded data shard
          [1, shardBytes + 17, last - shardBytes - 22], // from inside shard 1 to 5 bytes before the end
        ];
        for (const [e, offset, length] of ranges) await w.expectRange(e, offset, length);
        expect(w.getsOf([...zones.keys()].filter((i) => zones[i] !== 'a')), 'reads in zone b').to.equal(0);
        expect(w.engine.stats.crossZoneShardReads).to.equal(0);
        expect(w.engine.stats.zoneDecodedReads).to.be.greaterThan(0);
      });
    }

    it('reads a data shard in its zone directly, no decoding and no parity', async () => {
      const w = await written({ k: 4, m: 2 }, ['a', 'a', 'b', 'b', 'a', 'a'], 'a');
      await w.expectRange(0, 10, 5000);
      expect(w.getsOf([0])).to.equal(1);
      expect(w.getsOf([1, 2, 3, 4, 5])).to.equal(0);
      expect(w.engine.stats).to.include({ zoneDecodedReads: 0, shardReads: 1, crossZoneShardReads: 0 });
    });

    it('reads the data shard in another zone when its zone holds fewer than k shards, and counts it', async () => {
      const w = await written({ k: 4, m: 2 }, ['a', 'b', 'b', 'b', 'b', 'a'], 'a');
      await w.expectRange(0, shardBytes + 10, 5000);
      expect(w.getsOf([1])).to.equal(1);
      expect(w.getsOf([0, 2, 3, 4, 5])).to.equal(0);
      expect(w.engine.stats).to.include({ zoneDecodedReads: 0, shardReads: 1, crossZoneShardReads: 1 });
    });

    it('turns to a degraded read, zone first, when a shard in its zone fails', async () => {
      const w = await written({ k: 4, m: 2 }, ['a', 'a', 'b', 'b', 'a', 'a'], 'a');
      w.targets.down.add(w.names[4]!);
      await w.expectRange(0, 2 * shardBytes + 5, 100);
      expect(w.engine.degraded.has(0)).to.equal(true);
      // The decode read 0, 1, 4 (refused) and 5; the degraded read then the data shards 0-3 whole.
      expect(w.getsOf([2, 3])).to.equal(2);
      expect(w.engine.stats.crossZoneShardReads).to.equal(2);
    });

    it('reads parity in its zone first in a degraded read', async () => {
      const w = await written({ k: 4, m: 2 }, ['a', 'b', 'b', 'b', 'b', 'a'], 'a');
      w.targets.down.add(w.names[1]!);
      await w.expectRange(0, 0, 4 * shardBytes);
      expect(w.engine.degraded.has(0)).to.equal(true);
      expect(w.getsOf([5]), 'parity in zone a').to.equal(1);
      expect(w.getsOf([4]), 'parity in zone b').to.equal(0);
    });

    it('takes the parity shard in place of a slow data shard from its zone', async () => {
      const clock = new ManualClock();
      const w = await written({ k: 4, m: 2 }, ['a', 'b', 'b', 'b', 'b', 'a'], 'a', clock);
      w.targets.stalled.add(w.names[1]!);
      const read = w.expectRange(0, 0, 4 * shardBytes);
      await new Promise((resolve) => setImmediate(resolve));
      clock.advance(shardReadHedgeMsDefault);
      await read;
      expect(w.getsOf([1]), 'the slow shard is not asked again').to.equal(1);
      expect(w.getsOf([5])).to.equal(1);
      expect(w.getsOf([4])).to.equal(0);
    });

    it(`reads the other zone directly past ${zoneDecodesInFlightMax} decodes at once, and hedges the stuck ones`, async () => {
      const clock = new ManualClock();
      const w = await written({ k: 4, m: 2 }, ['a', 'a', 'b', 'b', 'a', 'a'], 'a', clock);
      // Shard 4 (parity, zone a) never answers: every decode in the zone waits on it.
      w.targets.stalled.add(w.names[4]!);
      const stuck = Array.from({ length: zoneDecodesInFlightMax }, (_, i) =>
        w.expectRange(0, 2 * shardBytes + 100 * i, 100),
      );
      await w.expectRange(0, 2 * shardBytes + 5000, 100);
      expect(w.engine.stats.zoneDecodedReads).to.equal(zoneDecodesInFlightMax);
      expect(w.getsOf([2]), 'the read past the limit').to.equal(1);
      expect(w.engine.stats.crossZoneShardReads).to.equal(1);

      clock.advance(shardReadHedgeMsDefault);
      await Promise.all(stuck);
      expect(w.getsOf([4]), 'the stalled shard is tried last, so not again').to.equal(zoneDecodesInFlightMax);
    });
  });

  describe('VolumeEngine.readRange() without a zone', () => {
    it('reads the data shard that holds the range, wherever it is, and counts nothing as cross-zone', async () => {
      const w = await written({ k: 4, m: 2 }, ['a', 'a', 'b', 'b', 'a', 'a'], undefined);
      await w.expectRange(0, 2 * shardBytes + 123, 5000);
      expect(w.getsOf([2])).to.equal(1);
      expect(w.getsOf([0, 1, 3, 4, 5])).to.equal(0);
      expect(w.engine.stats).to.include({ zoneDecodedReads: 0, shardReads: 1, crossZoneShardReads: 0 });
    });

    it('reads parity in shard order in a degraded read, wherever it is', async () => {
      const w = await written({ k: 4, m: 2 }, ['a', 'b', 'b', 'b', 'b', 'a'], undefined);
      w.targets.down.add(w.names[1]!);
      await w.expectRange(0, 0, 4 * shardBytes);
      expect(w.getsOf([4])).to.equal(1);
      expect(w.getsOf([5])).to.equal(0);
      expect(w.engine.stats.crossZoneShardReads).to.equal(0);
    });
  });
});
