/**
 * The seeded simulator in `make test`: a few whole seeds on the real worker-thread codec pool
 * (with and without the journal); one seed twice gives one trace (and the pool and the
 * in-thread kernel give the same trace); planted bugs, of the cache and of the journal, are
 * caught and reported with the seed to replay. `make sim` runs many more seeds.
 */
import { expect } from 'chai';
import { CodecPool } from '../../src/codec/index.js';
import { FencedError } from '../../src/meta/index.js';
import { UnavailableError } from '../../src/core/index.js';
import { JournalFencedError, encodeRecord } from '../../src/journal/index.js';
import {
  ExtentStates,
  Prng,
  SimClock,
  SimJournalNode,
  VolumeModel,
  chooseJournalNodes,
  formatFailure,
  judgeFailure,
  runSimulation,
  type JournalEnv,
  type PlantedBug,
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

describe('sim: the journal', function () {
  let pool: CodecPool;
  before(async () => {
    pool = await CodecPool.start({ threads: 2, memoryBytes: 64 * 1024 * 1024 });
  });
  after(async () => pool?.close());

  /** What the journal seeds below must exercise between them, as the trace shows it. */
  const faults: Record<string, RegExp> = {
    'a journal node crash between receive and fsync': /crashes before fsync|crashed before fsync/,
    'a torn record skipped at replay': /torn tail ignored/,
    'a new segment after a replica failed': /journal: segment \d+ on .* \(replica/,
    'a new segment after one filled': /nearly full/,
    'a crash with shards stored, before the fold commits': /failpoint: .* before the commit/,
    'a crash after the fold commits, before the trim': /failpoint: .* after the commit/,
    "a takeover that fences the old writer's flush": /flush by the replaced writer -> failed: FencedError/,
    "a takeover after the old writer's records reached every replica": /flush by the replaced writer -> ok/,
    'a replaced writer whose later flush fails': /replaced writer after the takeover -> failed/,
    'an attach waiting for the journal': /journal not ready/,
    'records replayed at attach': /journal replayed lsns \d/,
  };
  const seen = new Set<string>();

  // Seed 15 joined when flushes that only make room began to skip partly written extents: the
  // four before no longer journal enough to fill a segment.
  for (const seed of [2, 8, 11, 43, 15]) {
    it(`seed ${seed} (journal): a FLUSH through the journal survives crashes, takeovers and journal faults`, async () => {
      const result = await runSimulation(seed, {
        pool,
        log: (line) => {
          for (const [what, re] of Object.entries(faults)) if (re.test(line)) seen.add(what);
        },
      });
      expect(result.config).to.match(/journal r=\d/);
      expect(result.ok, formatFailure(result)).to.equal(true);
    });
  }

  it('those seeds exercise every journal fault', () => {
    expect(Object.keys(faults).filter((what) => !seen.has(what))).to.deep.equal([]);
  });

  it('seed 4: a shard replaced by bytes its target accepts, and a shard gone from a live target, never reach a reader', async () => {
    const seen = { wrong: false, gone: false };
    const result = await runSimulation(4, {
      pool,
      log: (line) => {
        if (/wrong shard: shard \d+/.test(line)) seen.wrong = true;
        if (/shard gone: shard \d+/.test(line)) seen.gone = true;
      },
    });
    expect(seen, 'the seed injects both faults').to.deep.equal({ wrong: true, gone: true });
    expect(result.ok, formatFailure(result)).to.equal(true);
  });

  /** Each bug with a seed that catches it; without the bug the seed passes. */
  const planted: readonly { bug: PlantedBug; seed: number; why: string; caught: RegExp }[] = [
    {
      bug: 'skip-end-to-end-check',
      // Seed 21 caught it until half the seeds began to take snapshots (its schedule changed).
      seed: 6,
      why: 'a shard replaced by other bytes its target accepts is read as valid when the record is not checked',
      caught: /probe: the published map holds other bytes for extent \d+/,
    },
    {
      bug: 'ack-after-r-minus-1',
      seed: 8,
      why: 'a FLUSH answered with one replica short loses its write when the next attach reads that replica',
      caught: /recovery after fenced writer replaced: after the crash extent \d+ reads other bytes/,
    },
    {
      bug: 'replay-without-epoch-check',
      seed: 17,
      why: "without fencing, the replaced writer's flush is acknowledged after the new writer read the journal",
      caught: /recovery after takeover: after the crash extent \d+ reads other bytes/,
    },
    {
      bug: 'reuse-failed-lsn',
      seed: 2129,
      why: "a failed append's stale record is replayed over a generation published after it (frontend/journal.ts did this; fixed)",
      caught: /probe: the published map holds other bytes for extent \d+/,
    },
    {
      bug: 'attach-reuses-published-lsn',
      // Seed 13 caught it until journaled bytes could use the whole cache, seed 865 until half
      // the seeds began to take snapshots (each time the schedule changed).
      seed: 1607,
      why: "attach hands out again a failed try's LSN that a published generation holds, and replay skips the new record (frontend/journal.ts's open() does this)",
      caught: /recovery after crash: after the crash extent \d+ reads other bytes/,
    },
    {
      bug: 'attach-keeps-old-segments',
      seed: 394,
      why: "a record on some replicas only is served after one attach and gone at the next (frontend/journal.ts's open() keeps old segments, copies nothing)",
      caught: /probe: the published map holds other bytes for extent \d+/,
    },
    {
      bug: 'snapshot-not-retained',
      seed: 1,
      why: 'a writer that deletes a superseded generation a snapshot still reaches (gc ignoring snapshots)',
      caught: /is deleted while its generation is published/,
    },
    {
      bug: 'snapshot-skips-fold',
      seed: 4,
      why: 'a snapshot cut without flushing and folding under the gate misses writes acknowledged before it',
      caught: /snapshot s\d+: after the crash extent \d+ reads other bytes/,
    },
  ];
  for (const { bug, seed, why, caught } of planted) {
    it(`catches ${bug} with seed ${seed}: ${why}`, async () => {
      const result = await runSimulation(seed, { pool, bug });
      expect(result.ok, `seed ${seed} passed with ${bug} planted`).to.equal(false);
      expect(result.failure?.message).to.match(caught);
      expect(result.failure?.replay).to.equal(`node scripts/sim.mjs --seed ${seed} --bug ${bug}`);
      const clean = await runSimulation(seed, { pool });
      expect(clean.ok, formatFailure(clean)).to.equal(true);
    });
  }
});

describe('sim: cache bugs the journal seeds found (fixed in src/cache; each seed failed before)', () => {
  const found: readonly [number, string][] = [
    [
      136,
      'back-pressure folds forever while journaled bytes lie under a pending whole-extent trim (AssertionError: back-pressure never made room)',
    ],
    [
      267,
      'foldAll() spins while a journaled extent is being published by the flush whose append lost a replica (AssertionError: foldAll made no progress)',
    ],
    [
      20,
      'foldAll() spins while journaled bytes lie under a pending whole-extent trim (AssertionError: foldAll made no progress)',
    ],
  ];
  for (const [seed, what] of found) {
    it(`seed ${seed}: ${what}`, async () => {
      const result = await runSimulation(seed);
      expect(result.ok, formatFailure(result)).to.equal(true);
    });
  }
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

  it('SimJournalNode: acknowledges after fsync; a crash loses the rest (a torn prefix that reads skip); fences', async () => {
    const clock = new SimClock();
    const anomalies: string[] = [];
    const env: JournalEnv = {
      clock,
      rng: new Prng(5),
      injected: new WeakSet(),
      trace: () => undefined,
      anomaly: (m) => anomalies.push(m),
      lockEpoch: () => 1,
      nodeUp: () => true,
      nodeSlowMs: () => 0,
      liveNodes: () => [],
      degraded: () => false,
      crashNode: () => undefined,
      bug: undefined,
    };
    const config = { volume: 'v', replicas: 2, latencyMs: 0, fsyncMs: 2, segmentBytes: 4096, rotateBytesLeftMin: 100 };
    const node = new SimJournalNode('a-1', 'a', env, config, 2);
    const record = (lsn: number, epoch: number) =>
      encodeRecord({
        volume: 'v',
        epoch,
        lsn,
        ranges: [{ offset: 0, length: 64 }],
        data: new Uint8Array(64).fill(lsn),
      });
    const append = (lsn: number, epoch: number) =>
      node.append({ volume: 'v', segment: 1, epoch, lsn, record: record(lsn, epoch) });
    let acked = false;
    const first = append(1, 1).then(() => (acked = true));
    await Promise.resolve();
    expect(acked, 'acknowledged before its fsync').to.equal(false);
    while (clock.fireNext(10));
    await first;
    const second = append(2, 1);
    const lost = second.then(
      () => 'acknowledged',
      () => 'failed',
    );
    node.crash(new Prng(1), 1);
    expect(await lost).to.equal('failed');
    const after = node.durableRecords(1, 0);
    expect(after.records.map((r) => r.lsn)).to.deep.equal([1]);
    expect(after.torn).to.equal(true);
    expect(anomalies).to.deep.equal([]);
    const fence = node.fence(2);
    while (clock.fireNext(100));
    expect(await fence).to.equal(2);
    const refused = await append(3, 1).catch((err: unknown) => err);
    expect(refused).to.be.instanceOf(JournalFencedError);
    expect(
      chooseJournalNodes(
        [
          { name: 'a-1', zone: 'a' },
          { name: 'a-2', zone: 'a' },
          { name: 'b-1', zone: 'b' },
        ],
        2,
        new Set(['b-1']),
      ),
    ).to.deep.equal(['a-1', 'a-2']);
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
