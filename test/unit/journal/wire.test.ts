import { expect } from 'chai';
import fc from 'fast-check';
import { AuthRejectedError, CairnError, InvalidArgumentError, UnavailableError } from '../../../src/core/index.js';
import {
  JournalFencedError,
  JournalLsnError,
  JournalProtocolError,
  decodeAppendRequest,
  decodeCreateRequest,
  decodeErrorAnswer,
  decodeFenceRequest,
  decodeFrameHeader,
  decodeHelloRequest,
  decodeListAnswer,
  decodeListRequest,
  decodeReadAnswer,
  decodeReadRequest,
  decodeStatsAnswer,
  decodeTrimRequest,
  encodeAppendRequest,
  encodeCreateRequest,
  encodeErrorAnswer,
  encodeFenceRequest,
  encodeFrameHeader,
  encodeHelloRequest,
  encodeJsonAnswer,
  encodeListRequest,
  encodeReadAnswer,
  encodeReadRequest,
  encodeTrimRequest,
  errorFromWire,
  journalErrorMessageBytesMax,
  journalOps,
  wireErrorOf,
  type JournalStats,
} from '../../../src/journal/index.js';

const join = (parts: Uint8Array[]): Uint8Array => new Uint8Array(Buffer.concat(parts));

describe('journal wire protocol', () => {
  it('round-trips a frame header and refuses bad magic, reserved bytes and oversized payloads', () => {
    const header = encodeFrameHeader({ op: journalOps.append, status: 0, requestId: 0xffff_fffe, payloadBytes: 1000 });
    expect(header.length).to.equal(16);
    expect(decodeFrameHeader(header, 1000)).to.deep.equal({
      header: { op: 3, status: 0, requestId: 0xffff_fffe, payloadBytes: 1000 },
    });
    expect(decodeFrameHeader(header, 999))
      .to.have.property('problem')
      .that.matches(/larger than the 999-byte limit/);
    const badMagic = header.slice();
    badMagic[0] = 0;
    expect(decodeFrameHeader(badMagic, 1000)).to.deep.equal({ problem: 'bad frame magic (not the journal protocol)' });
    const reserved = header.slice();
    reserved[7] = 1;
    expect(decodeFrameHeader(reserved, 1000)).to.include({ requestId: 0xffff_fffe });
  });

  it('never throws on any 16 header bytes', () => {
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 16, maxLength: 16 }), (bytes) => {
        decodeFrameHeader(bytes, 1 << 20);
      }),
      { numRuns: 2000 },
    );
  });

  it('round-trips every request', () => {
    expect(
      decodeHelloRequest(join(encodeHelloRequest({ protocolVersion: 1, clientName: 'fe', secret: 's3cr3t' }))),
    ).to.deep.equal({ protocolVersion: 1, clientName: 'fe', secret: 's3cr3t' });
    const create = { volume: 'v1', segment: 2 ** 40, epoch: 7 };
    expect(decodeCreateRequest(join(encodeCreateRequest(create)))).to.deep.equal(create);
    const append = decodeAppendRequest(
      join(encodeAppendRequest({ volume: 'v1', segment: 3, epoch: 4, lsn: 5, record: new Uint8Array([9, 8]) })),
    );
    expect({ ...append, record: [...append.record] }).to.deep.equal({
      volume: 'v1',
      segment: 3,
      epoch: 4,
      lsn: 5,
      record: [9, 8],
    });
    expect(decodeFenceRequest(join(encodeFenceRequest({ volume: 'v1', epoch: 0xffff_ffff })))).to.deep.equal({
      volume: 'v1',
      epoch: 0xffff_ffff,
    });
    const read = { volume: 'v1', segment: 1, fromLsn: Number.MAX_SAFE_INTEGER, maxBytes: 4096 };
    expect(decodeReadRequest(join(encodeReadRequest(read)))).to.deep.equal(read);
    expect(decodeTrimRequest(join(encodeTrimRequest({ volume: 'v1', segment: 4 })))).to.deep.equal({
      volume: 'v1',
      segment: 4,
    });
    expect(decodeTrimRequest(join(encodeTrimRequest({ volume: 'v1', belowLsn: 40 })))).to.deep.equal({
      volume: 'v1',
      belowLsn: 40,
    });
    expect(decodeTrimRequest(join(encodeTrimRequest({ volume: 'v1', deleted: true })))).to.deep.equal({
      volume: 'v1',
      deleted: true,
    });
    const forget = join(encodeTrimRequest({ volume: 'v1', deleted: true }));
    forget[forget.length - 8] = 1; // mode 3 takes value 0 only
    expect(() => decodeTrimRequest(forget)).to.throw(InvalidArgumentError, /mode 3/);
    expect(decodeListRequest(join(encodeListRequest(undefined)))).to.equal(undefined);
    expect(decodeListRequest(join(encodeListRequest('v1')))).to.equal('v1');
  });

  it('refuses malformed requests with InvalidArgumentError naming the op and the field', () => {
    const fence = join(encodeFenceRequest({ volume: 'v1', epoch: 1 }));
    expect(() => decodeFenceRequest(fence.subarray(0, fence.length - 1))).to.throw(
      InvalidArgumentError,
      /Malformed FENCE request: the payload ends before epoch/,
    );
    expect(() => decodeFenceRequest(join([fence, new Uint8Array(1)]))).to.throw(InvalidArgumentError, /trailing bytes/);
    const badVolume = join(encodeFenceRequest({ volume: 'v1', epoch: 1 }));
    badVolume[2] = '/'.charCodeAt(0);
    expect(() => decodeFenceRequest(badVolume)).to.throw(InvalidArgumentError, /volume id/);
    const hugeLsn = join(encodeReadRequest({ volume: 'v', segment: 1, fromLsn: 1, maxBytes: 1 }));
    hugeLsn.fill(0xff, 13, 21);
    expect(() => decodeReadRequest(hugeLsn)).to.throw(InvalidArgumentError, /fromLsn is above 2\^53 - 1/);
    const trim = join(encodeTrimRequest({ volume: 'v', segment: 1 }));
    trim[3] = 9;
    expect(() => decodeTrimRequest(trim)).to.throw(InvalidArgumentError, /mode 9/);
  });

  it('never throws anything but a typed error on random request payloads', () => {
    const decoders = [
      decodeHelloRequest,
      decodeCreateRequest,
      decodeAppendRequest,
      decodeFenceRequest,
      decodeReadRequest,
      decodeTrimRequest,
      decodeListRequest,
    ];
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 80 }), (bytes) => {
        for (const decode of decoders) {
          try {
            decode(bytes);
          } catch (err) {
            expect(err).to.be.instanceOf(InvalidArgumentError);
          }
        }
      }),
      { numRuns: 1000 },
    );
  });

  it('round-trips READ answers, and LIST and STATS as JSON checked field by field', () => {
    const records = new Uint8Array([1, 2, 3]);
    const read = decodeReadAnswer(join(encodeReadAnswer({ tail: 'torn', more: true, nextLsn: 12, count: 1, records })));
    expect({ ...read, records: [...read.records] }).to.deep.equal({
      tail: 'torn',
      more: true,
      nextLsn: 12,
      count: 1,
      records: [1, 2, 3],
    });
    const list = {
      volumes: [
        {
          volume: 'v1',
          epoch: 3,
          segments: [
            {
              segment: 1,
              capacityBytes: 10,
              usedBytes: 5,
              records: 1,
              firstLsn: 4,
              lastLsn: 4,
              lastEpoch: 3,
              tail: 'clean' as const,
            },
            {
              segment: 2,
              capacityBytes: 10,
              usedBytes: 0,
              records: 0,
              firstLsn: null,
              lastLsn: null,
              lastEpoch: null,
              tail: 'torn' as const,
            },
          ],
        },
      ],
    };
    expect(decodeListAnswer(join(encodeJsonAnswer(list)))).to.deep.equal(list);
    expect(() => decodeListAnswer(Buffer.from('{"volumes":[{"volume":"v1","epoch":-1,"segments":[]}]}'))).to.throw(
      JournalProtocolError,
    );
    const stats: JournalStats = {
      appends: 1,
      appendedBytes: 2,
      fsyncs: 1,
      creates: 0,
      fences: 0,
      fencedRefusals: 0,
      reads: 0,
      trims: 0,
      tornTails: 0,
      queuedBytes: 0,
      connections: 1,
      badFrames: 0,
    };
    expect(decodeStatsAnswer(join(encodeJsonAnswer(stats)))).to.deep.equal(stats);
    expect(() => decodeStatsAnswer(Buffer.from('not json'))).to.throw(JournalProtocolError, /not JSON/);
  });

  it('maps errors to the wire and back to the same classes, with the node epoch of a fence', () => {
    const cases: [CairnError, unknown][] = [
      [new JournalFencedError('fenced', 3, 9), JournalFencedError],
      [new JournalLsnError('lsn'), JournalLsnError],
      [new InvalidArgumentError('bad'), InvalidArgumentError],
      [new AuthRejectedError('auth'), AuthRejectedError],
      [new UnavailableError('busy'), UnavailableError],
    ];
    for (const [err, cls] of cases) {
      const wire = decodeErrorAnswer('append', join(encodeErrorAnswer(wireErrorOf(err))));
      const back = errorFromWire(wire, 3);
      expect(back, err.name).to.be.instanceOf(cls as never);
      expect(back.message).to.equal(err.message);
      expect(back.retryable).to.equal(err.retryable);
    }
    const fenced = errorFromWire(wireErrorOf(new JournalFencedError('x', 3, 9)), 3) as JournalFencedError;
    expect(fenced).to.include({ epoch: 3, nodeEpoch: 9, code: 'EFENCED' });
    expect(wireErrorOf(new TypeError('oops'))).to.include({ code: 'EINTERNAL', retryable: false });
  });

  it('clips long error messages to the limit without splitting a character', () => {
    const long = 'é'.repeat(journalErrorMessageBytesMax);
    const wire = decodeErrorAnswer('fence', join(encodeErrorAnswer(wireErrorOf(new InvalidArgumentError(long)))));
    expect(Buffer.byteLength(wire.message)).to.be.at.most(journalErrorMessageBytesMax);
    expect(wire.message).to.match(/^é+$/);
  });
});
