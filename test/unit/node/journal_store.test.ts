/**
 * JournalStore on a temp directory with real files and fdatasync: group commit, fencing, the LSN
 * rule, torn tails and damaged records at load, reads in pages, trim, and what survives a reopen.
 */
import { expect } from 'chai';
import {
  closeSync,
  existsSync,
  mkdtempSync,
  openSync,
  readFileSync,
  readdirSync,
  readlinkSync,
  rmSync,
  statSync,
  writeFileSync,
  writeSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ChecksumMismatchError, InvalidArgumentError } from '../../../src/core/index.js';
import {
  JournalFencedError,
  JournalLsnError,
  JournalSegmentFullError,
  JournalSegmentNotFoundError,
  decodeRecords,
  encodeRecord,
  journalSegmentBytesMin,
  type AppendRequest,
} from '../../../src/journal/index.js';
import { JournalStore, segmentFileName } from '../../../src/node/journal_store.js';
import { seededBytes } from '../../support/bytes.js';

const volume = 'c0ffee0123456789';

function appendOf(lsn: number, epoch = 1, dataBytes = 4096, segment = 1, vol = volume): AppendRequest {
  const record = encodeRecord({
    volume: vol,
    epoch,
    lsn,
    ranges: [{ offset: lsn * 4096, length: dataBytes }],
    data: seededBytes(dataBytes, lsn),
  });
  return { volume: vol, segment, epoch, lsn, record };
}

/** Waits for `condition`, polling, up to 10 s. */
async function waitFor(condition: () => boolean, what: string): Promise<void> {
  const deadline = Date.now() + 10_000;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 5));
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

describe('JournalStore', function () {
  this.timeout(60_000);
  let dir: string;
  let lines: string[];
  const stores: JournalStore[] = [];

  const openStore = async (syncsInFlightMax?: number): Promise<JournalStore> => {
    const store = await JournalStore.open(dir, {
      description: 'node "t"',
      segmentBytes: journalSegmentBytesMin,
      log: (line) => lines.push(line),
      // Several syncs in flight need the write-then-fdatasync schedule (O_DSYNC rounds are serial).
      ...(syncsInFlightMax === undefined ? {} : { syncsInFlightMax, durability: 'fdatasync' as const }),
    });
    stores.push(store);
    return store;
  };

  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'cairn-journal-'));
    lines = [];
  });

  afterEach(async () => {
    for (const store of stores.splice(0)) await store.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('appends, preallocates the segment with zeros, and reads the records back', async () => {
    const store = await openStore();
    const space = await store.append(appendOf(1));
    expect(space.capacityBytes).to.equal(journalSegmentBytesMin);
    await store.append(appendOf(2));
    const file = join(dir, volume, segmentFileName(1));
    expect(statSync(file).size).to.equal(journalSegmentBytesMin);
    expect(statSync(file).blocks * 512).to.be.at.least(journalSegmentBytesMin); // written, not sparse
    // Only the node's user may read what it holds.
    expect(statSync(file).mode & 0o777, 'segment file').to.equal(0o600);
    expect(statSync(join(dir, volume)).mode & 0o777, 'volume directory').to.equal(0o700);
    const read = await store.read({ volume, segment: 1, fromLsn: 0, maxBytes: 1 << 20 });
    expect(read).to.include({ count: 2, more: false, nextLsn: 3, tail: 'clean' });
    expect(decodeRecords(read.records).records.map((r) => r.lsn)).to.deep.equal([1, 2]);
    const list = await store.list();
    expect(list.volumes).to.have.length(1);
    expect(list.volumes[0]!.segments[0]).to.include({ segment: 1, records: 2, firstLsn: 1, lastLsn: 2, lastEpoch: 1 });
  });

  it('writes appends through an O_DSYNC handle, in a segment it just created as in one it reopened', async () => {
    // Under O_DSYNC no fdatasync follows an append: the handle that writes must carry the flag.
    // (A created segment once kept the handle that zero-filled it, without the flag: appends to a
    // new segment were acknowledged from the page cache.)
    const dsyncFlag = 0o10000; // O_DSYNC on Linux (fcntl.h)
    const handleFlags = (path: string): number[] =>
      readdirSync('/proc/self/fd').flatMap((fd) => {
        try {
          if (readlinkSync(`/proc/self/fd/${fd}`) !== path) return [];
          const flags = /flags:\s+([0-7]+)/.exec(readFileSync(`/proc/self/fdinfo/${fd}`, 'utf8'))![1]!;
          return [parseInt(flags, 8)];
        } catch {
          return []; // closed meanwhile
        }
      });
    let store = await openStore();
    await store.append(appendOf(1));
    const file = join(dir, volume, segmentFileName(1));
    expect(handleFlags(file), 'handles on the created segment').to.have.length.above(0);
    for (const flags of handleFlags(file)) expect(flags & dsyncFlag, 'O_DSYNC on the created segment').to.not.equal(0);
    await store.close();
    stores.splice(stores.indexOf(store), 1);
    store = await openStore();
    await store.append(appendOf(2));
    expect(handleFlags(file), 'handles on the reopened segment').to.have.length.above(0);
    for (const flags of handleFlags(file)) expect(flags & dsyncFlag, 'O_DSYNC on the reopened segment').to.not.equal(0);
  });

  it('keeps spare segments ready: a create renames one into place (O_DSYNC, zeros), and a reopen finds the rest', async () => {
    const dsyncFlag = 0o10000; // O_DSYNC on Linux (fcntl.h)
    const open = () =>
      JournalStore.open(dir, {
        description: 'node "t"',
        segmentBytes: journalSegmentBytesMin,
        log: (line) => lines.push(line),
        spareSegments: 2,
      });
    let store = await open();
    stores.push(store);
    expect(store.stats().spares, 'no spares before this node holds a journal').to.equal(0);
    await store.append(appendOf(1)); // the first create zeros its own file, then spares are made
    await waitFor(() => store.stats().spares === 2, 'two spares');
    const spareDir = join(dir, 'spare~');
    expect(readdirSync(spareDir).filter((n) => n.endsWith('.spare'))).to.have.length(2);
    for (const name of readdirSync(spareDir)) {
      const bytes = readFileSync(join(spareDir, name));
      expect(bytes.length, name).to.equal(journalSegmentBytesMin);
      expect(
        bytes.every((b) => b === 0),
        `${name} is zeros`,
      ).to.equal(true);
    }
    await store.append(appendOf(1, 1, 4096, 2)); // segment 2: takes a spare
    expect(store.stats()).to.include({ creates: 2, sparesTaken: 1 });
    const file = join(dir, volume, segmentFileName(2));
    const flags = readdirSync('/proc/self/fd').flatMap((fd) => {
      try {
        if (readlinkSync(`/proc/self/fd/${fd}`) !== file) return [];
        return [parseInt(/flags:\s+([0-7]+)/.exec(readFileSync(`/proc/self/fdinfo/${fd}`, 'utf8'))![1]!, 8)];
      } catch {
        return [];
      }
    });
    expect(flags, 'a handle on the taken spare').to.have.length.above(0);
    for (const f of flags) expect(f & dsyncFlag, 'O_DSYNC on a segment taken from the spares').to.not.equal(0);
    const read = await store.read({ volume, segment: 2, fromLsn: 0, maxBytes: 1 << 20 });
    expect(read).to.include({ count: 1, tail: 'clean' });
    await waitFor(() => store.stats().spares === 2, 'the spare replaced');
    await store.close();
    stores.splice(stores.indexOf(store), 1);
    // A half-made spare (a crash while zeroing) and one of another segment size are removed.
    writeFileSync(join(spareDir, '0000000000000099.spare.tmp'), Buffer.alloc(10));
    writeFileSync(join(spareDir, '0000000000000098.spare'), Buffer.alloc(journalSegmentBytesMin - 4096));
    store = await open();
    stores.push(store);
    expect(store.stats().spares).to.equal(2);
    expect(readdirSync(spareDir).sort()).to.have.length(2);
    await store.append(appendOf(1, 1, 4096, 3));
    expect(store.stats().sparesTaken).to.equal(1);
    expect((await store.read({ volume, segment: 1, fromLsn: 0, maxBytes: 1 << 20 })).count, 'segment 1 kept').to.equal(
      1,
    );
  });

  it('writes small rounds on the event loop while they are fast, and still group-commits them', async () => {
    const store = await openStore();
    await store.create({ volume, segment: 1, epoch: 1 });
    for (let lsn = 1; lsn <= 5; lsn++) await store.append(appendOf(lsn));
    expect(store.inlineWriteStats!.inline, 'rounds written inline').to.be.at.least(5);
    const before = store.stats().fsyncs;
    await Promise.all(Array.from({ length: 32 }, (_, i) => store.append(appendOf(i + 6))));
    expect(store.stats().fsyncs - before, 'rounds for 32 concurrent appends').to.be.below(8);
    const read = await store.read({ volume, segment: 1, fromLsn: 0, maxBytes: 1 << 20 });
    expect(read.count).to.equal(37);
  });

  it('group-commits concurrent appends: one fdatasync covers many', async () => {
    const store = await openStore();
    await store.create({ volume, segment: 1, epoch: 1 });
    const before = store.stats().fsyncs;
    await Promise.all(Array.from({ length: 64 }, (_, i) => store.append(appendOf(i + 1))));
    const stats = store.stats();
    expect(stats.appends).to.equal(64);
    expect(stats.fsyncs - before).to.be.below(64);
    expect(stats.fsyncs - before).to.be.at.least(1);
    expect(stats.queuedBytes).to.equal(0);
  });

  it('acknowledges in file order when several fdatasyncs overlap, and a reopen finds every record', async () => {
    let store = await openStore(4);
    const lsns = Array.from({ length: 300 }, (_, i) => i + 1);
    const acked: number[] = [];
    await Promise.all(lsns.map((lsn) => store.append(appendOf(lsn, 1, 1000)).then(() => acked.push(lsn))));
    expect(acked).to.deep.equal(lsns);
    await store.close();
    stores.length = 0;
    store = await openStore(4);
    const read = await store.read({ volume, segment: 1, fromLsn: 0, maxBytes: 1 << 20 });
    expect(read).to.include({ count: 300, tail: 'clean' });
  });

  it('takes pipelined appends to one segment in call order while the segment is created and the epoch written', async () => {
    const store = await openStore();
    const lsns = Array.from({ length: 100 }, (_, i) => i + 1);
    await Promise.all(lsns.map((lsn) => store.append(appendOf(lsn, 7, 100, 3))));
    const read = await store.read({ volume, segment: 3, fromLsn: 0, maxBytes: 1 << 20 });
    expect(decodeRecords(read.records).records.map((r) => r.lsn)).to.deep.equal(lsns);
    expect(readFileSync(join(dir, volume, 'epoch'), 'utf8')).to.equal('7\n');
  });

  it('refuses appends and fences below the highest epoch, and remembers it across a reopen', async () => {
    let store = await openStore();
    await store.append(appendOf(1, 3));
    expect(await store.fence(volume, 5)).to.equal(5);
    const refused = await rejection(store.append(appendOf(2, 4)));
    expect(refused).to.be.instanceOf(JournalFencedError).and.include({ epoch: 4, nodeEpoch: 5, retryable: false });
    expect((refused as Error).message).to.match(/fenced, epoch 4 is below epoch 5/);
    expect(await rejection(store.fence(volume, 4))).to.be.instanceOf(JournalFencedError);
    await store.append(appendOf(2, 5));
    await store.append(appendOf(3, 6)); // a higher epoch raises it
    await store.close();
    stores.length = 0;
    expect(readFileSync(join(dir, volume, 'epoch'), 'utf8')).to.equal('6\n');
    store = await openStore();
    expect(await rejection(store.append(appendOf(4, 5)))).to.be.instanceOf(JournalFencedError);
    expect((await store.list(volume)).volumes[0]!.epoch).to.equal(6);
    expect(store.stats().fencedRefusals).to.equal(1);
  });

  it('lets a fence resolve only after the lower-epoch appends it let in have settled', async () => {
    const store = await openStore();
    await store.create({ volume, segment: 1, epoch: 1 });
    const order: string[] = [];
    const appends = Array.from({ length: 20 }, (_, i) =>
      store.append(appendOf(i + 1, 1)).then(
        () => order.push(`append ${i + 1}`),
        () => order.push(`refused ${i + 1}`),
      ),
    );
    const fenced = store.fence(volume, 2).then(() => order.push('fence'));
    await Promise.all([...appends, fenced]);
    const fenceAt = order.indexOf('fence');
    expect(order.slice(fenceAt + 1).filter((o) => o.startsWith('append'))).to.deep.equal([]);
    expect(await rejection(store.append(appendOf(21, 1)))).to.be.instanceOf(JournalFencedError);
  });

  it('makes LSNs rise within a segment, and acknowledges a retry of the last record without writing it again', async () => {
    const store = await openStore();
    await store.append(appendOf(5));
    const again = await store.append(appendOf(5));
    expect(store.stats().appends).to.equal(1);
    expect(again.usedBytes).to.equal(appendOf(5).record.length);
    expect(await rejection(store.append(appendOf(5, 1, 100)))).to.be.instanceOf(JournalLsnError);
    expect(await rejection(store.append(appendOf(4)))).to.be.instanceOf(JournalLsnError);
    await store.append(appendOf(9)); // gaps are allowed
    await store.append(appendOf(1, 1, 4096, 2)); // another segment has its own LSNs
  });

  it('checks the record against the request: volume, epoch and lsn, one whole record, its checksum', async () => {
    const store = await openStore();
    const good = appendOf(1);
    expect(await rejection(store.append({ ...good, lsn: 2 }))).to.be.instanceOf(InvalidArgumentError);
    expect(await rejection(store.append({ ...good, volume: 'other' }))).to.be.instanceOf(InvalidArgumentError);
    const longer = new Uint8Array(good.record.length + 1);
    longer.set(good.record);
    expect(await rejection(store.append({ ...good, record: longer }))).to.be.instanceOf(InvalidArgumentError);
    const damaged = good.record.slice();
    damaged[100] = damaged[100]! ^ 4;
    expect(await rejection(store.append({ ...good, record: damaged }))).to.be.instanceOf(ChecksumMismatchError);
    expect(await rejection(store.append({ ...good, record: new Uint8Array(10) }))).to.be.instanceOf(
      InvalidArgumentError,
    );
    expect(await rejection(store.append({ ...good, volume: '../x' }))).to.be.instanceOf(InvalidArgumentError);
    expect(store.stats().appends).to.equal(0);
  });

  it('ignores a torn tail at load, zeros it before the next append, and reports it', async () => {
    let store = await openStore();
    for (let lsn = 1; lsn <= 3; lsn++) await store.append(appendOf(lsn));
    const { usedBytes } = (await store.list(volume)).volumes[0]!.segments[0]!;
    await store.close();
    stores.length = 0;
    // A crash mid-write: the first 1000 bytes of record 4 reached the disk.
    const file = join(dir, volume, segmentFileName(1));
    const fd = openSync(file, 'r+');
    writeSync(fd, appendOf(4).record.subarray(0, 1000), 0, 1000, usedBytes);
    closeSync(fd);

    store = await openStore();
    const read = await store.read({ volume, segment: 1, fromLsn: 0, maxBytes: 1 << 20 });
    expect(read).to.include({ count: 3, tail: 'torn', nextLsn: 4 });
    expect(store.stats().tornTails).to.equal(1);
    expect(lines.join('\n')).to.match(/torn tail after 3 valid records/);
    await store.append(appendOf(4, 1, 100)); // the retried record may differ; it overwrites the torn bytes
    await store.close();
    stores.length = 0;

    store = await openStore();
    const after = await store.read({ volume, segment: 1, fromLsn: 0, maxBytes: 1 << 20 });
    expect(after).to.include({ count: 4, tail: 'clean' });
    expect(decodeRecords(after.records).records.map((r) => r.data.length)).to.deep.equal([4096, 4096, 4096, 100]);
  });

  it('stops at a damaged record at load: the records before it are kept, nothing after it is returned', async () => {
    let store = await openStore();
    for (let lsn = 1; lsn <= 4; lsn++) await store.append(appendOf(lsn));
    await store.close();
    stores.length = 0;
    const file = join(dir, volume, segmentFileName(1));
    const fd = openSync(file, 'r+');
    const at = appendOf(1).record.length * 2 + 200; // inside record 3
    writeSync(fd, new Uint8Array([0x5a]), 0, 1, at);
    closeSync(fd);
    store = await openStore();
    const read = await store.read({ volume, segment: 1, fromLsn: 0, maxBytes: 1 << 20 });
    expect(read).to.include({ count: 2, tail: 'torn' });
  });

  it('reads in pages of whole records, one record at least, and from any LSN', async () => {
    const store = await openStore();
    for (let lsn = 10; lsn < 20; lsn++) await store.append(appendOf(lsn, 1, 1000));
    const size = appendOf(10, 1, 1000).record.length;
    const page = await store.read({ volume, segment: 1, fromLsn: 0, maxBytes: size * 3 + 5 });
    expect(page).to.include({ count: 3, more: true, nextLsn: 13 });
    const tiny = await store.read({ volume, segment: 1, fromLsn: 13, maxBytes: 1 });
    expect(tiny).to.include({ count: 1, more: true, nextLsn: 14 });
    const rest = await store.read({ volume, segment: 1, fromLsn: 14, maxBytes: 1 << 20 });
    expect(rest).to.include({ count: 6, more: false, nextLsn: 20 });
    const none = await store.read({ volume, segment: 1, fromLsn: 20, maxBytes: 1 << 20 });
    expect(none).to.include({ count: 0, more: false, nextLsn: 20 });
    expect(await rejection(store.read({ volume, segment: 9, fromLsn: 0, maxBytes: 10 }))).to.be.instanceOf(
      JournalSegmentNotFoundError,
    );
  });

  it('refuses a record that does not fit in what is left of the segment', async () => {
    const store = await openStore();
    const big = appendOf(1, 1, 8 * 1024 * 1024);
    await store.append(big);
    expect(await rejection(store.append(appendOf(2, 1, 8 * 1024 * 1024)))).to.be.instanceOf(JournalSegmentFullError);
  });

  it('trims one segment or every segment wholly below an LSN, and keeps the epoch', async () => {
    const store = await openStore();
    await store.append(appendOf(1, 2, 100, 1));
    await store.append(appendOf(2, 2, 100, 1));
    await store.append(appendOf(3, 2, 100, 2));
    await store.create({ volume, segment: 3, epoch: 2 }); // empty: kept by an LSN trim
    await store.append(appendOf(4, 2, 100, 4));
    expect(await store.trim({ volume, belowLsn: 4 })).to.equal(2);
    const left = (await store.list(volume)).volumes[0]!;
    expect(left.segments.map((s) => s.segment)).to.deep.equal([3, 4]);
    expect(await store.trim({ volume, segment: 4 })).to.equal(1);
    expect(await store.trim({ volume, segment: 4 })).to.equal(0);
    expect(await store.trim({ volume, segment: 3 })).to.equal(1);
    expect((await store.list(volume)).volumes[0]).to.deep.equal({ volume, epoch: 2, segments: [] });
    expect(await rejection(store.append(appendOf(5, 1, 100, 5)))).to.be.instanceOf(JournalFencedError);
    await store.append(appendOf(5, 2, 100, 5));
    // A volume at epoch 0 has no epoch file: trimming its only segment must not break the next one.
    await store.append(appendOf(1, 0, 100, 1, 'zero'));
    expect(await store.trim({ volume: 'zero', segment: 1 })).to.equal(1);
    await store.append(appendOf(2, 0, 100, 2, 'zero'));
  });

  it('forgets a deleted volume whole: every segment (an empty one too), its epoch and its directory', async () => {
    const store = await openStore();
    await store.append(appendOf(1, 3, 100, 1));
    await store.create({ volume, segment: 2, epoch: 3 }); // empty: an LSN trim would keep it
    expect(await store.trim({ volume, deleted: true })).to.equal(2);
    expect((await store.list(volume)).volumes).to.deep.equal([]);
    expect(existsSync(join(dir, volume)), 'the volume directory').to.equal(false);
    expect(await store.trim({ volume, deleted: true })).to.equal(0);
  });
});
