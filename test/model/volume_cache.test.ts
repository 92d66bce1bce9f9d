/**
 * Seeded random operations on the write-back cache over the volume engine (memory twins for
 * etcd and stores, the real wasm codec pool), checked against a plain Uint8Array model:
 * every read matches the model; after every FLUSH, a "crash" (a new engine and cache opened from
 * the published extent map alone) reads exactly what the model held when the flush was called;
 * reads still succeed with m targets down; a fenced writer publishes nothing.
 */
import { expect } from 'chai';
import { CodecPool } from '../../src/codec/index.js';
import { WriteBackCache, type WriteBackCacheOptions } from '../../src/cache/index.js';
import { FencedError } from '../../src/meta/index.js';
import { TreeExtentMapStore, VolumeEngine, type ExtentMapStore } from '../../src/volume/index.js';
import { ReplicatedMapPages, mapLevelsFor } from '../../src/extent/index.js';
import { MemoryShardStore } from '../../src/shard/index.js';
import { waitFor } from '../../src/dev/index.js';
import {
  MemoryExtentMap,
  MemoryJournal,
  MemoryMapRoots,
  MemoryTargets,
  SimClock,
  roundRobinPlacer,
} from '../../src/sim/index.js';

const KiB = 1024;

/** xorshift32: the model test's only randomness, so a failing seed replays exactly. */
function prng(seed: number) {
  let x = seed >>> 0 || 1;
  const next = () => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return (x >>> 0) / 2 ** 32;
  };
  return { next, int: (n: number) => Math.floor(next() * n) };
}

describe('model: write-back cache over the volume engine', function () {
  let pool: CodecPool;
  before(async () => {
    pool = await CodecPool.start({ threads: 2, memoryBytes: 64 * 1024 * 1024 });
  });
  after(async () => pool?.close());

  const volume = {
    id: 'v0',
    name: 'model',
    sizeBytes: 200 * KiB + 512,
    extentBytes: 32 * KiB,
    k: 4,
    profile: { k: 4, m: 2 },
  };
  const names = ['t0', 't1', 't2', 't3', 't4', 't5', 't6'];

  /** The journal the next open() uses, or none: each model seed runs both ways. */
  let journal: MemoryJournal | undefined;
  afterEach(() => {
    journal = undefined;
  });

  async function open(
    /** The map, or (a tree-backed map) how to make each writer's view of it for its epoch. */
    map: MemoryExtentMap | ((epoch: number) => ExtentMapStore),
    targets: MemoryTargets,
    epoch: number,
    dirtyBytesMax = 96 * KiB,
    extra: { clock?: SimClock; cache?: Partial<WriteBackCacheOptions> } = {},
  ) {
    const engine = await VolumeEngine.open({
      volume,
      map: typeof map === 'function' ? map(epoch) : map,
      targets,
      placer: roundRobinPlacer(names, 6),
      pool,
      epoch,
      oldShardGraceMs: 0,
      shardReadHedgeMs: 60_000,
      ...(extra.clock === undefined ? {} : { clock: extra.clock }),
    });
    const cache = new WriteBackCache(
      {
        geometry: volume,
        isHole: (e) => engine.isHole(e),
        prepare: (extents) => engine.prepare(extents),
        versionOf: (e) => engine.versionOf(e),
        readRange: (e, o, l) => engine.readRange(e, o, l),
        readWhole: (e) => engine.readWhole(e),
        persist: (i) => engine.persist(i),
        ...(journal === undefined
          ? {}
          : { journal: journal.writer(epoch), publishedLsn: (e: number) => engine.record(e)?.journalLsn }),
      },
      {
        dirtyBytesMax,
        cacheBytesMax: dirtyBytesMax * 2,
        flushCheckMs: 0,
        flushRetryMs: 0,
        ...(extra.clock === undefined ? {} : { clock: extra.clock }),
        ...extra.cache,
      },
    );
    // Attach replays what the journal holds beyond the published generations.
    await cache.replayAll(journal?.unfolded() ?? []);
    return { engine, cache };
  }

  // Seeds 1-4 also run on the copy-on-write page tree (issue 15), its pages replicated on three
  // of seven memory stores and its root in a twin of what etcd will hold.
  for (const [seed, withJournal, onTree] of [1, 2, 3, 4, 5, 6, 7, 8].flatMap((s) => [
    [s, false, false] as const,
    [s, true, false] as const,
    ...(s <= 4 ? [[s, false, true] as const, [s, true, true] as const] : []),
  ])) {
    it(`seed ${seed}${withJournal ? ' (journal)' : ''}${onTree ? ' (map tree)' : ''}: reads match the model, flushed data survives a crash and m lost targets`, async () => {
      journal = withJournal ? new MemoryJournal() : undefined;
      const rnd = prng(seed);
      const extents = Math.ceil(volume.sizeBytes / volume.extentBytes);
      const pages = new ReplicatedMapPages({
        targets: new Map(names.map((n) => [n, new MemoryShardStore(`pages-${n}`)])),
      });
      const roots = new MemoryMapRoots(mapLevelsFor(extents));
      const map = onTree
        ? (epoch: number) => new TreeExtentMapStore({ volumeId: volume.id, extents, pages, roots, epoch })
        : new MemoryExtentMap();
      const targets = new MemoryTargets(names);
      let { engine, cache } = await open(map, targets, 1);
      const model = new Uint8Array(volume.sizeBytes);
      let durable = new Uint8Array(volume.sizeBytes);
      let epoch = 1;
      const randomRange = () => {
        const offset = rnd.int(volume.sizeBytes);
        const length = Math.min(volume.sizeBytes - offset, 1 + rnd.int(rnd.next() < 0.2 ? 70 * KiB : 6 * KiB));
        return { offset, length };
      };
      for (let step = 0; step < 120; step++) {
        const op = rnd.next();
        const where = `seed ${seed} step ${step}`;
        if (op < 0.35) {
          const { offset, length } = randomRange();
          const data = new Uint8Array(length).map(() => rnd.int(256));
          const fua = rnd.next() < 0.1;
          await cache.write(offset, data, { fua });
          model.set(data, offset);
          if (fua && journal !== undefined) {
            // FUA: this write is durable now (in the journal), whatever else is still dirty: a
            // fresh attach (which replays the journal) reads it. Its writer must not fence ours.
            const saved = journal.epoch;
            const fresh = await open(map, targets, 0);
            journal.epoch = saved;
            const got = await fresh.cache.read(offset, length);
            expect(Buffer.from(got).equals(Buffer.from(data)), `${where}: FUA write not durable`).to.equal(true);
          } else if (fua) {
            // FUA: this write is durable now, whatever else is still dirty.
            const fresh = await open(map, targets, epoch + 100);
            const got = await fresh.engine.readRange(
              Math.floor(offset / volume.extentBytes),
              offset % volume.extentBytes,
              Math.min(length, volume.extentBytes - (offset % volume.extentBytes)),
            );
            expect(
              Buffer.from(got).equals(Buffer.from(data.subarray(0, got.length))),
              `${where}: FUA write not durable`,
            ).to.equal(true);
          }
        } else if (op < 0.6) {
          const { offset, length } = randomRange();
          const got = await cache.read(offset, length);
          expect(
            Buffer.from(got).equals(Buffer.from(model.subarray(offset, offset + length))),
            `${where}: read [${offset}, +${length})`,
          ).to.equal(true);
        } else if (op < 0.68) {
          const { offset, length } = randomRange();
          if (rnd.next() < 0.5) await cache.trim(offset, length);
          else await cache.writeZeroes(offset, length, { noHole: rnd.next() < 0.5 });
          model.fill(0, offset, offset + length);
        } else if (op < 0.8) {
          await cache.flush();
          durable = model.slice();
          if (journal !== undefined && rnd.next() < 0.5) await cache.fold();
        } else if (op < 0.88) {
          // Crash after a flush: only what the extent map publishes survives.
          await cache.flush();
          durable = model.slice();
          epoch += 1;
          ({ engine, cache } = await open(map, targets, epoch));
          const all = await cache.read(0, volume.sizeBytes);
          expect(Buffer.from(all).equals(Buffer.from(durable)), `${where}: after crash`).to.equal(true);
        } else if (op < 0.94) {
          // Lose m = 2 targets: every read of published data must still succeed by decoding.
          await cache.flush();
          durable = model.slice();
          targets.down.add(names[rnd.int(names.length)]!);
          targets.down.add(names[rnd.int(names.length)]!);
          const saved = journal?.epoch ?? 0;
          const fresh = await open(map, targets, 0);
          if (journal !== undefined) journal.epoch = saved;
          const all = await fresh.cache.read(0, volume.sizeBytes);
          expect(Buffer.from(all).equals(Buffer.from(durable)), `${where}: degraded read`).to.equal(true);
          targets.down.clear();
        } else {
          const blocks = await cache.blockStatus(0, volume.sizeBytes);
          expect(
            blocks.reduce((s, b) => s + b.length, 0),
            where,
          ).to.equal(volume.sizeBytes);
          for (const b of blocks)
            if (b.hole)
              expect(
                model.subarray(b.offset, b.offset + b.length).every((x) => x === 0),
                `${where}: hole has data`,
              ).to.equal(true);
        }
      }
      void engine;
      if (onTree) expect(roots.swaps, 'commits went through the map tree').to.be.above(0);
    });
  }

  it('under memory pressure, a sequential writer publishes whole extents directly and journals nothing', async () => {
    // Six 32 KiB extents written 20 KiB at a time (so the budget fills mid-extent) through a 96 KiB dirty budget: every wait for
    // room must flush only the whole extents, never the one being filled (that would journal it,
    // then fold it: written twice).
    journal = new MemoryJournal();
    const { engine, cache } = await open(new MemoryExtentMap(), new MemoryTargets(names), 1);
    const data = new Uint8Array(6 * volume.extentBytes).map((_, i) => (i * 7 + (i >> 12)) & 0xff);
    for (let off = 0; off < data.length; off += 20 * KiB) await cache.write(off, data.subarray(off, off + 20 * KiB));
    expect(cache.stats.backPressureWaits, 'the budget was reached').to.be.above(0);
    expect(journal.headLsn, 'journal appends').to.equal(0);
    expect(engine.writtenExtents, 'extents published while writing').to.be.at.least(3);
    await cache.flush();
    expect(journal.headLsn, 'journal appends after the final flush').to.equal(0);
    expect(Buffer.from(await cache.read(0, data.length)).equals(Buffer.from(data))).to.equal(true);
  });

  it('lets journaled bytes use the cache beyond the dirty budget, and makes writers wait for a fold past the cache', async () => {
    // Dirty budget 96 KiB, cache 192 KiB. Journaled bytes are durable: they wait for a fold only
    // when dirty plus journaled would pass the cache (they used to wait past the dirty budget).
    journal = new MemoryJournal();
    const { cache } = await open(new MemoryExtentMap(), new MemoryTargets(names), 1);
    const model = new Uint8Array(volume.sizeBytes);
    let fill = 1;
    /** Writes `length` bytes at `start` of each of extents 0-5 (never a whole extent). */
    const round = async (start: number, length: number) => {
      for (let e = 0; e < 6; e++) {
        const data = new Uint8Array(length).fill(fill++);
        await cache.write(e * volume.extentBytes + start, data);
        model.set(data, e * volume.extentBytes + start);
      }
    };
    await round(0, 12 * KiB);
    await cache.flush();
    await round(16 * KiB, 12 * KiB);
    await cache.flush();
    expect(cache.journaledBytes, 'journaled: past the dirty budget').to.equal(144 * KiB);
    await round(4 * KiB, 4 * KiB);
    await round(8 * KiB, 4 * KiB);
    expect(cache.unpublishedBytes, 'dirty plus journaled: the whole cache').to.equal(192 * KiB);
    expect(cache.stats.backPressureWaits, 'waits under the cache').to.equal(0);
    expect(cache.stats.folds, 'folds under the cache').to.equal(0);
    await round(28 * KiB, 2 * KiB);
    expect(cache.stats.backPressureWaits, 'a write past the cache waited').to.be.above(0);
    expect(cache.stats.folds, 'and a fold made room').to.be.above(0);
    expect(cache.unpublishedBytes).to.be.at.most(192 * KiB);
    expect(Buffer.from(await cache.read(0, volume.sizeBytes)).equals(Buffer.from(model))).to.equal(true);
    await cache.close();
  });

  it('reads ahead for a sequential reader: the next extents load in the background, then read from memory', async () => {
    const map = new MemoryExtentMap();
    const targets = new MemoryTargets(names);
    const data = new Uint8Array(6 * volume.extentBytes).map((_, i) => (i * 13 + 5) & 0xff);
    const writer = await open(map, targets, 1);
    await writer.cache.write(0, data);
    await writer.cache.flush();
    await writer.cache.close();
    // A fresh cache that holds the six extents: 4 KiB sequential reads, each a miss at first.
    const { cache } = await open(map, targets, 2, 96 * KiB);
    const read = async (offset: number, length: number) =>
      expect(
        Buffer.from(await cache.read(offset, length)).equals(Buffer.from(data.subarray(offset, offset + length))),
        `[${offset}, +${length})`,
      ).to.equal(true);
    await read(0, 4 * KiB);
    await read(4 * KiB, 4 * KiB); // sequential: loads extent 0 and starts loading 1.. ahead
    expect(cache.stats.readAheads, 'extents read ahead').to.be.at.least(1);
    await waitFor(
      'the read-ahead to load extent 1',
      async () => {
        const before = cache.stats.readMisses;
        await cache.read(volume.extentBytes + 100, 1);
        return cache.stats.readMisses === before ? true : undefined;
      },
      10_000,
      { intervalMs: 2 },
    );
    const misses = cache.stats.readMisses;
    for (let off = 8 * KiB; off < 2 * volume.extentBytes; off += 4 * KiB) await read(off, 4 * KiB);
    expect(cache.stats.readMisses, 'misses after the read-ahead (extents 0 and 1 in memory)').to.equal(misses);
    await cache.close();
  });

  it('limits folds by age to --fold-rate, but not folds under memory pressure', async () => {
    journal = new MemoryJournal();
    const clock = new SimClock();
    // One 32 KiB extent image per second; age 1 s; the background looks every 100 ms.
    const { cache } = await open(new MemoryExtentMap(), new MemoryTargets(names), 1, 96 * KiB, {
      clock,
      // The cache no larger than the dirty budget: memory pressure begins at 48 KiB journaled.
      cache: {
        flushCheckMs: 100,
        flushAgeMs: 3_600_000,
        foldAgeMs: 1000,
        foldBytesPerSecond: volume.extentBytes,
        cacheBytesMax: 96 * KiB,
      },
    });
    /** Runs the clock to `ms`, firing what is due, and lets the work it starts finish. */
    const runTo = async (ms: number) => {
      while (clock.fireNext(ms)) await settle();
      clock.moveTo(ms);
      await settle();
    };
    const settle = async () => {
      for (let i = 0; i < 50; i++) await new Promise((r) => setImmediate(r));
    };
    const partial = async (extents: number[]) => {
      for (const e of extents) await cache.write(e * volume.extentBytes + 100, new Uint8Array(512).fill(e + 1));
      await cache.flush();
    };
    /** Waits (deadline 10 s) until folds have re-encoded `bytes`. */
    const foldedTo = (bytes: number, what: string) =>
      waitFor(what, () => (cache.stats.foldedBytes >= bytes ? true : undefined), 10_000, {
        seen: () => `${cache.stats.foldedBytes} bytes folded`,
        intervalMs: 2,
      });
    try {
      await partial([0, 1]);
      await runTo(1100); // aged: one fold of both extents (64 KiB): the next fold by age waits 2 s
      await foldedTo(2 * volume.extentBytes, 'the first fold by age');
      expect(cache.stats.folds).to.equal(1);
      await partial([2]);
      await runTo(2300); // aged, but within the 2 s the last fold bought: no fold starts
      expect(cache.stats.folds, 'folds started by 2.3 s').to.equal(1);
      await runTo(3300); // past the wait: folded
      await foldedTo(3 * volume.extentBytes, 'the fold after the wait');
      expect(cache.stats.folds, 'folds started by 3.3 s').to.equal(2);
      // Memory pressure folds at once, whatever the rate: journaled bytes past half the cache.
      await partial([3]); // the next fold by age waits until 4.3 s
      for (const e of [4, 5]) await cache.write(e * volume.extentBytes + 1000, new Uint8Array(25 * KiB).fill(9));
      await cache.flush(); // 50 KiB more journaled: past 48 KiB
      await runTo(3400);
      await foldedTo(4 * volume.extentBytes, 'a fold under pressure');
      expect(Buffer.from(await cache.read(5 * volume.extentBytes + 1000, 10)).every((b) => b === 9)).to.equal(true);
    } finally {
      await cache.close();
    }
  });

  it('refuses a flush with more than m targets down, keeps the old generation and loses nothing', async () => {
    const map = new MemoryExtentMap();
    const targets = new MemoryTargets(names);
    const { cache } = await open(map, targets, 1);
    await cache.write(0, new Uint8Array(32 * KiB).fill(7));
    await cache.flush();
    const before = map.records.get(0);
    await cache.write(0, new Uint8Array(100).fill(9));
    targets.down.add('t0');
    let failed: unknown;
    try {
      await cache.flush();
    } catch (err) {
      failed = err;
    }
    expect(failed, 'flush with a target down must fail (default: all k+m shards required)').to.be.instanceOf(Error);
    expect((failed as Error).message).to.contain('5 of 6 shards stored, 6 required');
    expect(map.records.get(0)).to.equal(before);
    targets.down.clear();
    await cache.flush();
    const reopened = await open(map, targets, 2);
    const got = await reopened.cache.read(0, 200);
    expect(got.subarray(0, 100).every((x) => x === 9) && got.subarray(100).every((x) => x === 7)).to.equal(true);
  });

  it('retries a flush whose shard writes failed while a target was down, and succeeds once it is back', async () => {
    const map = new MemoryExtentMap();
    const targets = new MemoryTargets(names);
    const engine = await VolumeEngine.open({
      volume,
      map,
      targets,
      placer: roundRobinPlacer(names, 6),
      pool,
      epoch: 1,
      oldShardGraceMs: 0,
    });
    let retries = 0;
    const cache = new WriteBackCache(
      {
        geometry: volume,
        isHole: (e) => engine.isHole(e),
        prepare: (extents) => engine.prepare(extents),
        versionOf: (e) => engine.versionOf(e),
        readRange: (e, o, l) => engine.readRange(e, o, l),
        readWhole: (e) => engine.readWhole(e),
        persist: (i) => engine.persist(i),
      },
      {
        flushCheckMs: 0,
        flushRetryMs: 5_000,
        // The retry announces itself in the log: that is when the target comes back.
        log: (line) => {
          if (line.startsWith('flush:')) {
            retries += 1;
            targets.down.clear();
          }
        },
      },
    );
    await cache.write(0, new Uint8Array(40 * KiB).fill(3));
    targets.down.add('t1');
    await cache.flush();
    expect(retries).to.equal(1);
    expect(map.records.size).to.equal(2);
    const fresh = await open(map, targets, 2);
    expect((await fresh.cache.read(0, 40 * KiB)).every((x) => x === 3)).to.equal(true);
  });

  it('stops publishing once fenced, and keeps failing', async () => {
    const map = new MemoryExtentMap();
    const targets = new MemoryTargets(names);
    const { cache } = await open(map, targets, 1);
    await cache.write(0, new Uint8Array(10).fill(1));
    map.fenced = true;
    let err: unknown;
    await cache.flush().catch((e: unknown) => (err = e));
    expect(err).to.be.instanceOf(Error);
    expect(map.records.size).to.equal(0);
    let later: unknown;
    await cache.write(64, new Uint8Array(1)).catch((e: unknown) => (later = e));
    expect(later).to.be.instanceOf(FencedError);
  });

  it('reads never-written extents as zeros without touching any store', async () => {
    const map = new MemoryExtentMap();
    const targets = new MemoryTargets(names);
    for (const n of names) targets.down.add(n);
    const { cache, engine } = await open(map, targets, 1);
    const got = await cache.read(1000, 100 * KiB);
    expect(got.every((x) => x === 0)).to.equal(true);
    expect(engine.stats.shardReads).to.equal(0);
  });
});
