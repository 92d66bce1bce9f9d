import { expect } from 'chai';
import fc from 'fast-check';
import { InvalidArgumentError } from '../../../src/core/index.js';
import {
  decodePrefix,
  decodeRecord,
  decodeRecords,
  encodeRecord,
  journalRecordDataBytesMax,
  journalRecordRangesMax,
  recordBytes,
  recordChecksum,
  type JournalRecord,
} from '../../../src/journal/index.js';
import { seededBytes } from '../../support/bytes.js';

const volume = '0a1b2c3d4e5f6071';

function sample(lsn = 17, dataBytes = 4096): JournalRecord {
  return {
    volume,
    epoch: 3,
    lsn,
    ranges: [{ offset: 8192, length: dataBytes }],
    data: seededBytes(dataBytes, lsn + 1),
  };
}

function okRecord(bytes: Uint8Array, at = 0): JournalRecord {
  const decoded = decodeRecord(bytes, at);
  if (decoded.kind !== 'ok') throw new Error(`expected ok, got ${decoded.kind}`);
  return decoded.record;
}

describe('journal record', () => {
  it('has the worked example of its header comment right', () => {
    expect(recordBytes(16, 1, 4096)).to.equal(4168);
    expect(encodeRecord(sample()).length).to.equal(4168);
  });

  it('round-trips records with data and zero ranges, any epoch and a large lsn', () => {
    const record: JournalRecord = {
      volume: 'v_1-A',
      epoch: 0xffff_ffff,
      lsn: Number.MAX_SAFE_INTEGER,
      ranges: [
        { offset: 0, length: 3, kind: 'data' },
        { offset: Number.MAX_SAFE_INTEGER - 10, length: 10, kind: 'zero' },
        { offset: 4096, length: 2 },
      ],
      data: new Uint8Array([1, 2, 3, 4, 5]),
    };
    const bytes = encodeRecord(record);
    const got = okRecord(bytes);
    expect(got.volume).to.equal(record.volume);
    expect(got.epoch).to.equal(record.epoch);
    expect(got.lsn).to.equal(record.lsn);
    expect(got.ranges).to.deep.equal([
      { offset: 0, length: 3, kind: 'data' },
      { offset: Number.MAX_SAFE_INTEGER - 10, length: 10, kind: 'zero' },
      { offset: 4096, length: 2, kind: 'data' },
    ]);
    expect([...got.data]).to.deep.equal([1, 2, 3, 4, 5]);
  });

  it('round-trips any record (property)', () => {
    fc.assert(
      fc.property(
        fc.stringMatching(/^[A-Za-z0-9_-]{1,64}$/),
        fc.integer({ min: 0, max: 0xffff_ffff }),
        fc.maxSafeNat(),
        fc.array(
          fc.record({ offset: fc.nat({ max: 2 ** 40 }), length: fc.integer({ min: 1, max: 300 }), zero: fc.boolean() }),
          {
            maxLength: 20,
          },
        ),
        (vol, epoch, lsn, shape) => {
          const ranges = shape.map(
            (r) => ({ offset: r.offset, length: r.length, kind: r.zero ? 'zero' : 'data' }) as const,
          );
          const dataBytes = ranges.filter((r) => r.kind === 'data').reduce((s, r) => s + r.length, 0);
          const record = { volume: vol, epoch, lsn, ranges, data: seededBytes(dataBytes, lsn % 1000) };
          const bytes = encodeRecord(record);
          expect(bytes.length).to.equal(recordBytes(vol.length, ranges.length, dataBytes));
          const got = okRecord(bytes);
          expect({ ...got, data: [...got.data] }).to.deep.equal({ ...record, data: [...record.data] });
        },
      ),
      { numRuns: 200 },
    );
  });

  it('decodes at an offset and hands back a view of the data, not a copy', () => {
    const bytes = encodeRecord(sample());
    const buffer = new Uint8Array(100 + bytes.length);
    buffer.set(bytes, 100);
    const got = okRecord(buffer, 100);
    expect(got.data.buffer).to.equal(buffer.buffer);
  });

  it('says end for an empty buffer and for zeros (the unwritten rest of a segment)', () => {
    expect(decodeRecord(new Uint8Array(0))).to.deep.equal({ kind: 'end' });
    expect(decodeRecord(new Uint8Array(10))).to.deep.equal({ kind: 'end' });
    expect(decodeRecord(new Uint8Array(5000))).to.deep.equal({ kind: 'end' });
  });

  it('says torn for every truncation of a record, with the bytes it needs once the prefix is whole', () => {
    const bytes = encodeRecord(sample(5, 300));
    for (let cut = 1; cut < bytes.length; cut++) {
      const decoded = decodeRecord(bytes.subarray(0, cut));
      expect(decoded.kind, `cut at ${cut}`).to.equal('torn');
      if (cut >= 36 && decoded.kind === 'torn') expect(decoded.needBytes).to.equal(bytes.length);
    }
  });

  it('says corrupt for a record cut short and followed by zeros (a torn write in a preallocated file)', () => {
    const bytes = encodeRecord(sample(5, 300));
    const disk = new Uint8Array(bytes.length + 100);
    disk.set(bytes.subarray(0, 200));
    const decoded = decodeRecord(disk);
    expect(decoded.kind).to.equal('corrupt');
  });

  it('detects every single bit flip anywhere in a record', () => {
    const bytes = encodeRecord(sample(9, 64));
    for (let byte = 0; byte < bytes.length; byte++) {
      for (let bit = 0; bit < 8; bit++) {
        const bad = bytes.slice();
        bad[byte] = bad[byte]! ^ (1 << bit);
        const decoded = decodeRecord(bad);
        expect(decoded.kind, `byte ${byte} bit ${bit}`).to.be.oneOf(['corrupt', 'torn']);
      }
    }
  });

  it('never throws on random garbage, and never calls it a record', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 600 }), (garbage) => {
        const decoded = decodeRecord(garbage);
        expect(decoded.kind).to.not.equal('ok');
      }),
      { numRuns: 2000 },
    );
  });

  it('never throws on a valid prefix followed by garbage', () => {
    const bytes = encodeRecord(sample(9, 64));
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 0, maxLength: 200 }), (tail) => {
        const mixed = new Uint8Array(36 + tail.length);
        mixed.set(bytes.subarray(0, 36));
        mixed.set(tail, 36);
        expect(decodeRecord(mixed).kind).to.be.oneOf(['torn', 'corrupt', 'ok']);
      }),
      { numRuns: 500 },
    );
  });

  it('reads the prefix alone, and decodes records back to back until the buffer ends', () => {
    const a = encodeRecord(sample(1, 10));
    const b = encodeRecord(sample(2, 20));
    const head = decodePrefix(a);
    expect(head.kind).to.equal('prefix');
    if (head.kind === 'prefix') expect(head.prefix).to.include({ totalBytes: a.length, lsn: 1, epoch: 3 });
    const both = new Uint8Array(a.length + b.length);
    both.set(a);
    both.set(b, a.length);
    const all = decodeRecords(both);
    expect(all.records.map((r) => r.lsn)).to.deep.equal([1, 2]);
    expect(all.stop.kind).to.equal('end');
    const cut = decodeRecords(both.subarray(0, both.length - 1));
    expect(cut.records.map((r) => r.lsn)).to.deep.equal([1]);
    expect(cut.stop.kind).to.equal('torn');
    expect(cut.bytes).to.equal(a.length);
    expect(recordChecksum(a)).to.equal(new DataView(a.buffer).getUint32(a.length - 4, true));
  });

  it('refuses to encode invalid records with the reason', () => {
    const bad: [Partial<JournalRecord>, RegExp][] = [
      [{ volume: '' }, /volume id/],
      [{ volume: 'a/b' }, /volume id/],
      [{ volume: 'x'.repeat(65) }, /volume id/],
      [{ epoch: -1 }, /epoch/],
      [{ epoch: 2 ** 32 }, /epoch/],
      [{ lsn: 2 ** 53 }, /lsn/],
      [{ lsn: 1.5 }, /lsn/],
      [{ ranges: [{ offset: 0, length: 0 }] }, /range 0/],
      [{ ranges: [{ offset: -1, length: 4096 }] }, /range 0/],
      [{ ranges: [{ offset: Number.MAX_SAFE_INTEGER, length: 4096 }] }, /range 0/],
      [{ data: new Uint8Array(4095) }, /cover 4096 bytes but it carries 4095/],
      [
        {
          ranges: Array.from({ length: journalRecordRangesMax + 1 }, (_, i) => ({
            offset: i,
            length: 1,
            kind: 'zero',
          })),
        },
        /ranges is more than/,
      ],
      [
        {
          ranges: [{ offset: 0, length: journalRecordDataBytesMax + 1 }],
          data: new Uint8Array(journalRecordDataBytesMax + 1),
        },
        /more than the limit/,
      ],
    ];
    for (const [change, reason] of bad) {
      expect(() => encodeRecord({ ...sample(), ...change }), String(reason)).to.throw(InvalidArgumentError, reason);
    }
  });
});
