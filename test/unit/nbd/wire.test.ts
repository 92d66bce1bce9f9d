// The NBD wire codec: every structure round-trips, golden bytes match the protocol's layout, and
// every malformed input decodes to an error (never a throw, never an overrun).
import { expect } from 'chai';
import fc from 'fast-check';
import { nbdWire as wire } from '../../../src/nbd/index.js';

const hex = (bytes: Uint8Array): string => Buffer.from(bytes).toString('hex');
const bytesOf = (text: string): Uint8Array => Uint8Array.from(Buffer.from(text, 'hex'));

function value<T>(decoded: wire.Decoded<T>): T {
  if (!decoded.ok) throw new Error(`expected ok, got: ${decoded.error}`);
  return decoded.value;
}
function errorOf<T>(decoded: wire.Decoded<T>): string {
  expect(decoded.ok, 'expected a decode error').to.equal(false);
  return decoded.ok ? '' : decoded.error;
}

describe('nbd wire: handshake', () => {
  it('encodes the greeting as NBDMAGIC, IHAVEOPT and 16-bit flags', () => {
    const bytes = wire.encodeServerGreeting(wire.handshakeFlag.fixedNewstyle | wire.handshakeFlag.noZeroes);
    expect(hex(bytes)).to.equal('4e42444d41474943' + '49484156454f5054' + '0003');
    expect(value(wire.decodeServerGreeting(bytes)).flags).to.equal(3);
  });

  it('refuses a greeting with the wrong magic or length', () => {
    errorOf(wire.decodeServerGreeting(new Uint8Array(18)));
    errorOf(wire.decodeServerGreeting(new Uint8Array(17)));
  });

  it('round-trips client flags', () => {
    expect(value(wire.decodeClientFlags(wire.encodeClientFlags(0x3)))).to.equal(3);
    errorOf(wire.decodeClientFlags(new Uint8Array(3)));
  });

  it('round-trips an option header and refuses a bad magic', () => {
    const bytes = wire.encodeOption(wire.optionCode.go, new Uint8Array([1, 2, 3]));
    expect(hex(bytes.subarray(0, 16))).to.equal('49484156454f5054' + '00000007' + '00000003');
    expect(value(wire.decodeOptionHeader(bytes.subarray(0, 16)))).to.deep.equal({ option: 7, length: 3 });
    const bad = bytes.slice(0, 16);
    bad[0] = 0;
    expect(errorOf(wire.decodeOptionHeader(bad))).to.match(/IHAVEOPT/);
  });

  it('round-trips INFO/GO requests, including an empty name and no requests', () => {
    for (const request of [
      { name: '', requests: [] },
      { name: 'vol-1', requests: [wire.infoType.name, wire.infoType.blockSize] },
      { name: 'é∂', requests: [0, 1, 2, 3, 77] },
    ]) {
      expect(value(wire.decodeInfoRequest(wire.encodeInfoRequest(request)))).to.deep.equal(request);
    }
  });

  it('refuses INFO/GO data whose lengths do not add up', () => {
    expect(errorOf(wire.decodeInfoRequest(new Uint8Array(5)))).to.match(/less than the 6/);
    // Name length 100 in 10 bytes of data.
    expect(errorOf(wire.decodeInfoRequest(bytesOf('00000064' + '0000' + '00000000')))).to.match(/overruns/);
    // Name length 0, count 2, but only one request present.
    expect(errorOf(wire.decodeInfoRequest(bytesOf('00000000' + '0002' + '0001')))).to.match(/need/);
    // One byte too many after the requests.
    expect(errorOf(wire.decodeInfoRequest(bytesOf('00000000' + '0001' + '0001' + 'ff')))).to.match(/need/);
    // Names must be UTF-8 without NUL.
    expect(errorOf(wire.decodeInfoRequest(bytesOf('00000001' + 'ff' + '0000')))).to.match(/UTF-8/);
    expect(errorOf(wire.decodeInfoRequest(bytesOf('00000001' + '00' + '0000')))).to.match(/NUL/);
  });

  it('round-trips meta context requests and refuses overruns and trailing bytes', () => {
    const request = { exportName: 'v', queries: ['base:allocation', 'qemu:dirty-bitmap:x', 'base:'] };
    expect(value(wire.decodeMetaContextRequest(wire.encodeMetaContextRequest(request)))).to.deep.equal(request);
    expect(
      value(wire.decodeMetaContextRequest(wire.encodeMetaContextRequest({ exportName: '', queries: [] }))),
    ).to.deep.equal({
      exportName: '',
      queries: [],
    });
    expect(errorOf(wire.decodeMetaContextRequest(new Uint8Array(3)))).to.match(/name length/);
    expect(errorOf(wire.decodeMetaContextRequest(bytesOf('00000009' + '00')))).to.match(/overruns/);
    expect(errorOf(wire.decodeMetaContextRequest(bytesOf('00000000')))).to.match(/query count/);
    // A count of 2^32-1 queries in 4 bytes: refused before looping.
    expect(errorOf(wire.decodeMetaContextRequest(bytesOf('00000000' + 'ffffffff' + '00000000')))).to.match(
      /cannot fit/,
    );
    expect(errorOf(wire.decodeMetaContextRequest(bytesOf('00000000' + '00000001' + '00000010' + '61')))).to.match(
      /overruns/,
    );
    expect(errorOf(wire.decodeMetaContextRequest(bytesOf('00000000' + '00000000' + '99')))).to.match(/follow/);
  });
});

describe('nbd wire: option replies', () => {
  it('encodes a reply header with the reply magic', () => {
    const bytes = wire.encodeOptionReply(wire.optionCode.list, wire.optionReplyCode.ack);
    expect(hex(bytes)).to.equal('0003e889045565a9' + '00000003' + '00000001' + '00000000');
    expect(value(wire.decodeOptionReplyHeader(bytes))).to.deep.equal({ option: 3, replyType: 1, length: 0 });
    errorOf(wire.decodeOptionReplyHeader(new Uint8Array(20)));
  });

  it('marks error replies by bit 31', () => {
    expect(wire.isOptionReplyError(wire.optionReplyCode.errUnsup)).to.equal(true);
    expect(wire.optionReplyCode.errUnsup).to.equal(2 ** 31 + 1);
    expect(wire.optionReplyCode.errTooBig).to.equal(2 ** 31 + 9);
    expect(wire.isOptionReplyError(wire.optionReplyCode.info)).to.equal(false);
    const error = wire.encodeOptionError(9, wire.optionReplyCode.errInvalid, 'bad\0 thing');
    expect(new TextDecoder().decode(error.subarray(20))).to.equal('bad thing');
  });

  it('round-trips NBD_REP_SERVER data, with and without a description', () => {
    expect(value(wire.decodeServerReplyData(wire.encodeServerReplyData('vol', 'my volume')))).to.deep.equal({
      name: 'vol',
      description: 'my volume',
    });
    expect(value(wire.decodeServerReplyData(wire.encodeServerReplyData('', '')))).to.deep.equal({
      name: '',
      description: '',
    });
    errorOf(wire.decodeServerReplyData(bytesOf('00000005' + '61')));
  });

  it('round-trips every NBD_INFO type and keeps unknown ones', () => {
    expect(value(wire.decodeInfoReply(wire.encodeInfoExport(2 ** 40 + 5, 0x1ff)))).to.deep.equal({
      kind: 'export',
      sizeBytes: 2 ** 40 + 5,
      flags: 0x1ff,
    });
    expect(value(wire.decodeInfoReply(wire.encodeInfoName('n')))).to.deep.equal({ kind: 'name', name: 'n' });
    expect(value(wire.decodeInfoReply(wire.encodeInfoDescription('d')))).to.deep.equal({
      kind: 'description',
      description: 'd',
    });
    expect(value(wire.decodeInfoReply(wire.encodeInfoBlockSize(1, 4096, 32 << 20)))).to.deep.equal({
      kind: 'blockSize',
      minimumBytes: 1,
      preferredBytes: 4096,
      maximumBytes: 32 << 20,
    });
    const unknown = value(wire.decodeInfoReply(bytesOf('0099' + 'abcd')));
    expect(unknown.kind).to.equal('unknown');
    errorOf(wire.decodeInfoReply(bytesOf('0000' + '00')));
    errorOf(wire.decodeInfoReply(bytesOf('0003' + '00000001')));
    errorOf(wire.decodeInfoReply(new Uint8Array(1)));
  });

  it('encodes NBD_OPT_EXPORT_NAME replies with and without the 124 zero bytes', () => {
    const full = wire.encodeExportNameReply(1 << 20, 0x43, false);
    expect(full.length).to.equal(134);
    expect(full.subarray(10).every((b) => b === 0)).to.equal(true);
    expect(value(wire.decodeExportNameReply(full))).to.deep.equal({ sizeBytes: 1 << 20, flags: 0x43 });
    const short = wire.encodeExportNameReply(1 << 20, 0x43, true);
    expect(short.length).to.equal(10);
    expect(value(wire.decodeExportNameReply(short))).to.deep.equal({ sizeBytes: 1 << 20, flags: 0x43 });
  });

  it('round-trips NBD_REP_META_CONTEXT data', () => {
    expect(value(wire.decodeMetaContextReplyData(wire.encodeMetaContextReplyData(1, 'base:allocation')))).to.deep.equal(
      {
        contextId: 1,
        name: 'base:allocation',
      },
    );
  });
});

describe('nbd wire: transmission', () => {
  it('encodes a request header in the protocol layout', () => {
    const bytes = wire.encodeRequestHeader({
      flags: wire.commandFlag.fua,
      type: wire.commandType.write,
      cookie: 0x0102030405060708n,
      offset: 4096,
      length: 512,
    });
    expect(hex(bytes)).to.equal('25609513' + '0001' + '0001' + '0102030405060708' + '0000000000001000' + '00000200');
    expect(value(wire.decodeRequestHeader(bytes))).to.deep.equal({
      flags: 1,
      type: 1,
      cookie: 0x0102030405060708n,
      offset: 4096,
      length: 512,
    });
  });

  it('turns a wire offset into a number only up to 2^53 - 1', () => {
    const largest = value(
      wire.decodeRequestHeader(wire.encodeRequestHeader({ type: 0, cookie: 1n, offset: 2 ** 53 - 1 })),
    );
    expect(largest.offset).to.equal(Number.MAX_SAFE_INTEGER);
    const above = value(wire.decodeRequestHeader(wire.encodeRequestHeader({ type: 0, cookie: 1n, offset: 2n ** 53n })));
    expect(above.offset).to.equal(null);
    const top = value(
      wire.decodeRequestHeader(wire.encodeRequestHeader({ type: 0, cookie: 1n, offset: 2n ** 64n - 1n })),
    );
    expect(top.offset).to.equal(null);
  });

  it('refuses a request with the wrong magic', () => {
    expect(errorOf(wire.decodeRequestHeader(new Uint8Array(28)))).to.match(/magic/);
  });

  it('encodes simple replies and decodes them as reply starts', () => {
    const bytes = wire.encodeSimpleReply(wire.nbdErrno.einval, 99n);
    expect(hex(bytes)).to.equal('67446698' + '00000016' + '0000000000000063');
    expect(value(wire.decodeReplyStart(bytes))).to.deep.equal({ kind: 'simple', errno: 22, cookie: 99n });
  });

  it('round-trips every structured chunk type', () => {
    const data = wire.encodeOffsetDataHead(5n, wire.chunkFlag.done, 8192, 3);
    const header = value(wire.decodeChunkHeader(data.subarray(0, 20)));
    expect(header).to.deep.equal({ flags: 1, type: wire.chunkType.offsetData, cookie: 5n, length: 11 });
    const payload = new Uint8Array(11);
    payload.set(data.subarray(20));
    payload.set([7, 8, 9], 8);
    const decoded = value(wire.decodeOffsetDataPayload(payload));
    expect(decoded.offset).to.equal(8192);
    expect([...decoded.data]).to.deep.equal([7, 8, 9]);

    const hole = wire.encodeOffsetHoleChunk(6n, 0, 4096, 65536);
    expect(value(wire.decodeChunkHeader(hole.subarray(0, 20))).length).to.equal(12);
    expect(value(wire.decodeOffsetHolePayload(hole.subarray(20)))).to.deep.equal({ offset: 4096, length: 65536 });

    const status = wire.encodeBlockStatusChunk(7n, 1, 1, [
      { length: 4096, flags: 3 },
      { length: 8192, flags: 0 },
    ]);
    expect(value(wire.decodeBlockStatusPayload(status.subarray(20)))).to.deep.equal({
      contextId: 1,
      descriptors: [
        { length: 4096, flags: 3 },
        { length: 8192, flags: 0 },
      ],
    });

    const error = wire.encodeErrorChunk(8n, 1, wire.nbdErrno.enospc, 'full');
    expect(value(wire.decodeChunkHeader(error.subarray(0, 20))).type).to.equal(wire.chunkType.error);
    expect(value(wire.decodeErrorPayload(error.subarray(20)))).to.deep.equal({ errno: 28, message: 'full' });

    const none = wire.encodeNoneChunk(9n);
    expect(value(wire.decodeChunkHeader(none))).to.deep.equal({ flags: 1, type: 0, cookie: 9n, length: 0 });
  });

  it('refuses malformed chunk payloads', () => {
    errorOf(wire.decodeOffsetDataPayload(new Uint8Array(8)));
    errorOf(wire.decodeOffsetHolePayload(new Uint8Array(11)));
    errorOf(wire.decodeOffsetHolePayload(new Uint8Array(12))); // zero-length hole
    errorOf(wire.decodeBlockStatusPayload(new Uint8Array(4)));
    errorOf(wire.decodeBlockStatusPayload(new Uint8Array(13)));
    errorOf(wire.decodeErrorPayload(bytesOf('00000005' + '0009' + '61')));
    errorOf(wire.decodeReplyStart(new Uint8Array(16)));
    errorOf(wire.decodeChunkHeader(wire.encodeSimpleReply(0, 1n).slice(0, 16)));
  });

  it('clips long messages at a character boundary', () => {
    const text = 'é'.repeat(3000); // 6000 UTF-8 bytes
    const clipped = wire.clipMessage(text, 1024);
    expect(new TextEncoder().encode(clipped).length).to.be.at.most(1024);
    expect(clipped.length).to.be.greaterThan(0);
    expect([...clipped].every((c) => c === 'é')).to.equal(true);
  });

  it('names options for log lines', () => {
    expect(wire.optionName(wire.optionCode.go)).to.equal('NBD_OPT_GO');
    expect(wire.optionName(wire.optionCode.setMetaContext)).to.equal('NBD_OPT_SET_META_CONTEXT');
    expect(wire.optionName(999)).to.equal('option 999');
  });
});

describe('nbd wire: decoders never throw', () => {
  it('answers every random byte string with a result', () => {
    const decoders: ((b: Uint8Array) => unknown)[] = [
      wire.decodeInfoRequest,
      wire.decodeMetaContextRequest,
      wire.decodeInfoReply,
      wire.decodeServerReplyData,
      wire.decodeMetaContextReplyData,
      wire.decodeBlockStatusPayload,
      wire.decodeErrorPayload,
      wire.decodeOffsetDataPayload,
      wire.decodeOffsetHolePayload,
      wire.decodeExportNameReply,
      (b) => wire.decodeString(b, 'text'),
      (b) => (b.length >= 28 ? wire.decodeRequestHeader(b.subarray(0, 28)) : null),
      (b) => (b.length >= 16 ? wire.decodeReplyStart(b.subarray(0, 16)) : null),
    ];
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 64 }), (bytes) => {
        for (const decode of decoders) decode(bytes);
      }),
      { numRuns: 2000, seed: 4242 },
    );
  });
});
