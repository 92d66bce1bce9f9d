/**
 * The seeded simulator in `make test`: a few whole seeds on the real worker-thread codec pool;
 * one seed twice gives one trace (and the pool and the in-thread kernel give the same trace);
 * planted bugs are caught and reported with the seed to replay. `make sim` runs many more seeds.
 */
import { expect } from 'chai';
import { CodecPool } from '../../src/codec/index.js';
import { FencedError } from '../../src/meta/index.js';
import { UnavailableError } from '../../src/core/index.js';
import {
  ExtentStates,
  Prng,
  SimClock,
  VolumeModel,
  formatFailure,
  judgeFailure,
  runSimulation,
} from '../../src/sim/index.js';

describe('sim: seeded cluster runs', function () {
  let pool: CodecPool;
  before(async () => {
    pool = await CodecPool.start({ threads: 2, memoryBytes: 64 * 1024 * 1024 });
  });
  after(async () => pool?.close());

  for (const seed of [1, 2, 3, 4, 5]) {
    it(`seed ${seed}: every read matches the model, failures are justified, flushed data survives`, async () => {
      const result = await runSimulation(seed, { pool });
      expect(result.ok, formatFailure(result)).to.equal(true);
      expect(result.ops).to.be.greaterThan(300);
    });
  }

  it('gives one trace for one seed: twice on the pool, and once on the in-thread kernel', async () => {
    const a = await runSimulation(7, { pool, steps: 150 });
    const b = await runSimulation(7, { pool, steps: 150 });
    const c = await runSimulation(7, { steps: 150 });
    expect(b.traceHash).to.equal(a.traceHash);
    expect(c.traceHash).to.equal(a.traceHash);
    expect(b.traceLines).to.equal(a.traceLines);
    const other = await runSimulation(8, { steps: 150 });
    expect(other.traceHash).to.not.equal(a.traceHash);
  });

  it('catches a read that returns one flipped byte, and names the seed to replay', async () => {
    const result = await runSimulation(3, { pool, bug: 'flip-read-byte' });
    expect(result.ok).to.equal(false);
    expect(result.failure?.message).to.match(/wrong bytes|other bytes/);
    expect(result.failure?.replay).to.equal('node scripts/sim.mjs --seed 3 --bug flip-read-byte');
    expect(formatFailure(result)).to.contain('seed 3 FAILED').and.contain('replay with: node scripts/sim.mjs --seed 3');
  });

  it('catches a FLUSH that publishes nothing, by a crash or a reader of the published map', async () => {
    const result = await runSimulation(2, { bug: 'skip-flush' });
    expect(result.ok).to.equal(false);
    expect(result.failure?.message).to.match(/published/);
  });
});

describe('sim: building blocks', () => {
  it('Prng: one seed, one sequence; forks are independent of later draws', () => {
    const a = new Prng(42);
    const b = new Prng(42);
    const xs = Array.from({ length: 5 }, () => a.nextU32());
    expect(Array.from({ length: 5 }, () => b.nextU32())).to.deep.equal(xs);
    expect(new Prng(43).nextU32()).to.not.equal(xs[0]);
    const f1 = new Prng(9).fork('x');
    const f2 = new Prng(9).fork('x');
    expect(f1.int(1000)).to.equal(f2.int(1000));
    for (let i = 0; i < 1000; i++) {
      const v = a.range(3, 5);
      expect(v >= 3 && v <= 5).to.equal(true);
    }
  });

  it('SimClock: fires timers in due order, ties in creation order, only when told', () => {
    const clock = new SimClock();
    const fired: string[] = [];
    clock.after(10, () => fired.push('b'));
    clock.after(5, () => fired.push('a'));
    clock.after(10, () => fired.push('c'));
    const stop = clock.every(4, () => fired.push('tick'));
    expect(fired).to.deep.equal([]);
    while (clock.fireNext(10));
    stop();
    expect(fired).to.deep.equal(['tick', 'a', 'tick', 'b', 'c']);
    expect(clock.now()).to.equal(10);
    expect(clock.nextDueMs()).to.equal(undefined);
  });

  it('VolumeModel: a failed write leaves both contents possible until a read decides', () => {
    const model = new VolumeModel({ sizeBytes: 100, extentBytes: 64, k: 2 });
    model.write(60, 8, new Uint8Array(8).fill(7), false);
    expect(model.ambiguity).to.equal(2);
    expect(model.checkRead(60, new Uint8Array(8).fill(7))).to.equal(null);
    expect(model.ambiguity).to.equal(2); // published may still be either (a background flush)
    expect(model.checkRead(60, new Uint8Array(8))).to.match(/wrong bytes/);
    model.markPublished();
    model.crash();
    expect(model.checkRecovered(0, new Uint8Array(64))).to.match(/published contents/);
  });

  it('ExtentStates: by content, not identity', () => {
    const s = ExtentStates.of(new Uint8Array([1, 2]));
    s.add(new Uint8Array([1, 2]));
    expect(s.size).to.equal(1);
  });

  it('judgeFailure: injected failures pass; an untyped error or an unjustified read failure does not', () => {
    const injected = new WeakSet<object>();
    const fenced = new FencedError('fenced');
    injected.add(fenced);
    const ctx = { k: 2, m: 1, durableShardsMin: 3, events: [], injected, extents: [0], topologyDegraded: false };
    expect(judgeFailure(fenced, ctx)).to.equal(null);
    expect(judgeFailure(new Error('boom'), ctx)).to.match(/untyped Error/);
    expect(judgeFailure(new UnavailableError('Cannot store extent 0: 2 of 3 shards stored, 3 required'), ctx)).to.match(
      /failed only/,
    );
    const events = [{ seq: 0, op: 'put' as const, target: 'a-1', key: 'v/0/5/1', reason: 'down' as const }];
    const stored = new UnavailableError(
      'Cannot store extent 0: 2 of 3 shards stored, 3 required (shard 1 on a-1: Cannot put shard v/0/5/1: it is down)',
    );
    expect(judgeFailure(stored, { ...ctx, events })).to.equal(null);
    // The same failure is not excused by a failure of a shard the message does not name.
    expect(judgeFailure(stored, { ...ctx, events: [{ ...events[0]!, key: 'v/0/5/2' }] })).to.match(/failed only/);
  });
});
