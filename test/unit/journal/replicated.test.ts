/**
 * ReplicatedJournal over replicas that answer as told: all r must acknowledge, failures name
 * the replica, a fenced replica wins over other failures, and readSegment() pages through and
 * checks what a replica sends (with a real JournalStore as the replica).
 */
import { expect } from 'chai';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { InvalidArgumentError, UnavailableError } from '../../../src/core/index.js';
import {
  JournalFencedError,
  JournalProtocolError,
  JournalReplicationError,
  JournalSegmentFullError,
  ReplicatedJournal,
  encodeRecord,
  journalSegmentBytesMin,
  readSegment,
  type AppendRequest,
  type JournalRecord,
  type JournalReplica,
  type ReadAnswer,
  type SegmentSpace,
} from '../../../src/journal/index.js';
import { JournalStore } from '../../../src/node/journal_store.js';

const volume = 'feed';

/** A replica that records appends and fails them as `failWith` says. */
class FakeReplica implements JournalReplica {
  readonly appended: AppendRequest[] = [];
  failWith: (() => Error) | undefined;
  fenceEpoch = 0;

  constructor(readonly name: string) {}

  async create(): Promise<SegmentSpace> {
    if (this.failWith) throw this.failWith();
    return { usedBytes: 0, capacityBytes: 1000 };
  }
  async append(request: AppendRequest): Promise<SegmentSpace> {
    if (this.failWith) throw this.failWith();
    this.appended.push(request);
    return { usedBytes: this.appended.length * 100, capacityBytes: 1000 };
  }
  async fence(_volume: string, epoch: number): Promise<number> {
    if (this.failWith) throw this.failWith();
    this.fenceEpoch = Math.max(this.fenceEpoch, epoch);
    return this.fenceEpoch;
  }
  async read(): Promise<ReadAnswer> {
    throw new Error('not used');
  }
  async trim(): Promise<number> {
    return 0;
  }
  async list(): Promise<{ volumes: [] }> {
    return { volumes: [] };
  }
}

async function rejection(promise: Promise<unknown>): Promise<unknown> {
  try {
    await promise;
  } catch (err) {
    return err;
  }
  throw new Error('expected the promise to reject');
}

describe('ReplicatedJournal', () => {
  const replicas = (): FakeReplica[] => [new FakeReplica('a-1'), new FakeReplica('b-1'), new FakeReplica('c-1')];
  const input = { lsn: 7, ranges: [{ offset: 0, length: 4 }], data: new Uint8Array([1, 2, 3, 4]) };

  it('sends the same encoded record to every replica and resolves when all acknowledged', async () => {
    const r = replicas();
    const journal = new ReplicatedJournal({ volume, epoch: 2, segment: 5, replicas: r });
    const ack = await journal.append(input);
    expect(ack.lsn).to.equal(7);
    expect(ack.spaces).to.have.length(3);
    expect(ack.bytesLeft).to.equal(900);
    const sent = r.map((x) => x.appended[0]!);
    expect(sent.every((s) => s.record === sent[0]!.record)).to.equal(true);
    expect(sent[0]).to.include({ volume, epoch: 2, segment: 5, lsn: 7 });
    expect(ack.recordBytes).to.equal(sent[0]!.record.length);
  });

  it('rejects when any replica fails, naming which acknowledged and which failed, retryable when all failures are', async () => {
    const r = replicas();
    r[1]!.failWith = () => new UnavailableError('node "b-1" at 127.0.0.1:9: connection refused');
    const journal = new ReplicatedJournal({ volume, epoch: 2, segment: 5, replicas: r });
    const err = await rejection(journal.append(input));
    expect(err).to.be.instanceOf(JournalReplicationError);
    const e = err as JournalReplicationError;
    expect(e.acked).to.deep.equal(['a-1', 'c-1']);
    expect(e.failures.map((f) => f.replica)).to.deep.equal(['b-1']);
    expect(e.retryable).to.equal(true);
    expect(e.message).to.match(
      /1 of 3 replicas failed \(acknowledged by "a-1", "c-1"\): node "b-1": .*connection refused/,
    );
    r[2]!.failWith = () => new JournalSegmentFullError('full');
    expect(((await rejection(journal.append(input))) as JournalReplicationError).retryable).to.equal(false);
  });

  it('reports a fenced replica as JournalFencedError, whatever the others said', async () => {
    const r = replicas();
    r[0]!.failWith = () => new UnavailableError('down');
    r[2]!.failWith = () => new JournalFencedError('fenced', 2, 9);
    const journal = new ReplicatedJournal({ volume, epoch: 2, segment: 5, replicas: r });
    const err = (await rejection(journal.append(input))) as JournalFencedError;
    expect(err).to.be.instanceOf(JournalFencedError);
    expect(err).to.include({ epoch: 2, nodeEpoch: 9, retryable: false });
    expect(err.message).to.match(/fenced by node "c-1", which has seen epoch 9/);
  });

  it('fences what it can reach, and fails only when no replica was fenced', async () => {
    const r = replicas();
    r[1]!.failWith = () => new UnavailableError('down');
    const journal = new ReplicatedJournal({ volume, epoch: 4, segment: 1, replicas: r });
    const fenced = await journal.fence();
    expect(fenced.fenced).to.deep.equal(['a-1', 'c-1']);
    expect(fenced.failures.map((f) => f.replica)).to.deep.equal(['b-1']);
    for (const x of r) x.failWith = () => new UnavailableError('down');
    expect(await rejection(journal.fence())).to.be.instanceOf(JournalReplicationError);
  });

  it('refuses bad configurations and bad records before sending anything', () => {
    expect(() => new ReplicatedJournal({ volume, epoch: 1, segment: 1, replicas: [] })).to.throw(InvalidArgumentError);
    const dup = [new FakeReplica('a-1'), new FakeReplica('a-1')];
    expect(() => new ReplicatedJournal({ volume, epoch: 1, segment: 1, replicas: dup })).to.throw(/distinct/);
    expect(() => new ReplicatedJournal({ volume: 'a/b', epoch: 1, segment: 1, replicas: replicas() })).to.throw(
      /volume id/,
    );
    const r = replicas();
    const journal = new ReplicatedJournal({ volume, epoch: 1, segment: 1, replicas: r });
    return rejection(journal.append({ ...input, data: new Uint8Array(3) })).then((err) => {
      expect(err).to.be.instanceOf(InvalidArgumentError);
      expect(r.every((x) => x.appended.length === 0)).to.equal(true);
    });
  });

  describe('readSegment()', () => {
    let dir: string;
    let store: JournalStore;
    beforeEach(async () => {
      dir = mkdtempSync(join(tmpdir(), 'cairn-journal-read-'));
      store = await JournalStore.open(dir, {
        description: 'node "t"',
        segmentBytes: journalSegmentBytesMin,
        log: () => {},
      });
    });
    afterEach(async () => {
      await store.close();
      rmSync(dir, { recursive: true, force: true });
    });

    it('visits every record from an LSN in order, page by page', async () => {
      const replica: JournalReplica = {
        name: 't',
        create: (req) => store.create(req),
        append: (req) => store.append(req),
        fence: (vol, epoch) => store.fence(vol, epoch),
        read: (req) => store.read(req),
        trim: (req) => store.trim(req),
        list: (vol) => store.list(vol),
      };
      const journal = new ReplicatedJournal({ volume, epoch: 1, segment: 3, replicas: [replica] });
      for (let lsn = 1; lsn <= 30; lsn++)
        await journal.append({ lsn, ranges: [{ offset: lsn, length: 100 }], data: new Uint8Array(100) });
      const seen: number[] = [];
      const summary = await readSegment(replica, { volume, segment: 3, fromLsn: 5, pageBytes: 1000 }, (record) => {
        seen.push(record.lsn);
      });
      expect(seen).to.deep.equal(Array.from({ length: 26 }, (_, i) => i + 5));
      expect(summary).to.deep.equal({ records: 26, nextLsn: 31, tail: 'clean' });
    });

    it('refuses records that do not decode, or that the node sent out of order', async () => {
      const record = (lsn: number): Uint8Array =>
        encodeRecord({ volume, epoch: 1, lsn, ranges: [], data: new Uint8Array(0) } satisfies JournalRecord);
      const lying = (records: Uint8Array, count: number): JournalReplica =>
        Object.assign(new FakeReplica('liar'), {
          read: async (): Promise<ReadAnswer> => ({ tail: 'clean', more: false, nextLsn: 9, count, records }),
        });
      const twoThenOne = new Uint8Array(Buffer.concat([record(2), record(1)]));
      expect(
        await rejection(readSegment(lying(twoThenOne, 2), { volume, segment: 1, fromLsn: 0 }, () => {})),
      ).to.be.instanceOf(JournalProtocolError);
      const damaged = record(1);
      damaged[40] = damaged[40]! ^ 1;
      expect(
        await rejection(readSegment(lying(damaged, 1), { volume, segment: 1, fromLsn: 0 }, () => {})),
      ).to.be.instanceOf(JournalProtocolError);
    });
  });
});
