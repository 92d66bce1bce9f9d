// Request validation at the edge, the error mapping switch, and the byte queue the session parses
// from: the pure pieces under the session.
import { expect } from 'chai';
import fc from 'fast-check';
import {
  AssertionError,
  CairnError,
  ChecksumMismatchError,
  DiskFullError,
  InvalidArgumentError,
  nbdRequestBytesMax,
  RangeOutsideError,
  TooFewShardsError,
  UnavailableError,
} from '../../../src/core/index.js';
import {
  ByteQueue,
  descriptorsOf,
  nbdErrorOf,
  nbdWire as wire,
  transmissionFlagsFor,
  validateRequest,
  type TransmissionContext,
} from '../../../src/nbd/index.js';

const { commandType: cmd, commandFlag: flag, nbdErrno: errno, transmissionFlag: tx } = wire;

const allCaps = { readOnly: false, flush: true, fua: true, trim: true, writeZeroes: true, multiConn: true };
const sizeBytes = 1 << 20;
const context: TransmissionContext = {
  sizeBytes,
  flags: transmissionFlagsFor({ ...allCaps, structuredReplies: true }),
  structuredReplies: true,
  allocationContext: true,
};
const simple: TransmissionContext = {
  ...context,
  flags: transmissionFlagsFor({ ...allCaps, structuredReplies: false }),
  structuredReplies: false,
  allocationContext: false,
};
const readOnly: TransmissionContext = {
  ...context,
  flags: transmissionFlagsFor({ ...allCaps, readOnly: true, structuredReplies: true }),
};

function header(type: number, offset: number | null, length: number, flags = 0): wire.RequestHeader {
  return { type, offset, length, flags, cookie: 1n };
}

function errnoOf(h: wire.RequestHeader, c = context): number {
  const checked = validateRequest(h, c);
  return checked.ok ? 0 : checked.errno;
}

describe('validateRequest()', () => {
  it('accepts in-range requests and keeps their flags', () => {
    const checked = validateRequest(header(cmd.writeZeroes, 4096, 8192, flag.fua | flag.noHole), context);
    expect(checked).to.deep.equal({
      ok: true,
      command: { type: 'writeZeroes', offset: 4096, length: 8192, fua: true, noHole: true },
      payloadBytes: 0,
    });
    expect(errnoOf(header(cmd.read, sizeBytes - 1, 1))).to.equal(0); // the last byte
    expect(errnoOf(header(cmd.read, sizeBytes, 0))).to.equal(0); // zero length at the end
  });

  it('answers one past the end with ENOSPC for writes and EINVAL for everything else', () => {
    expect(errnoOf(header(cmd.write, sizeBytes, 1))).to.equal(errno.enospc);
    expect(errnoOf(header(cmd.writeZeroes, sizeBytes - 1, 2))).to.equal(errno.enospc);
    expect(errnoOf(header(cmd.read, sizeBytes - 1, 2))).to.equal(errno.einval);
    expect(errnoOf(header(cmd.trim, sizeBytes, 1))).to.equal(errno.einval);
    expect(errnoOf(header(cmd.cache, sizeBytes + 1, 0))).to.equal(errno.einval);
    expect(errnoOf(header(cmd.blockStatus, sizeBytes, 1))).to.equal(errno.einval);
  });

  it('treats an offset above 2^53 as out of range, not as a crash', () => {
    expect(errnoOf(header(cmd.read, null, 1))).to.equal(errno.einval);
    expect(errnoOf(header(cmd.write, null, 1))).to.equal(errno.enospc);
  });

  it('reports the WRITE payload to consume even when the request is refused', () => {
    const refused = validateRequest(header(cmd.write, sizeBytes, 100), context);
    expect(refused.ok).to.equal(false);
    expect(refused.payloadBytes).to.equal(100);
    const tooBig = validateRequest(header(cmd.write, 0, nbdRequestBytesMax + 1), context);
    expect(tooBig).to.include({ ok: false, errno: errno.einval, payloadBytes: nbdRequestBytesMax + 1 });
    expect(validateRequest(header(cmd.write, 0, 10), readOnly)).to.include({ errno: errno.eperm, payloadBytes: 10 });
  });

  it('answers an oversized READ with EOVERFLOW when structured, EINVAL when simple', () => {
    expect(errnoOf(header(cmd.read, 0, nbdRequestBytesMax + 1), { ...context, sizeBytes: 2 ** 40 })).to.equal(
      errno.eoverflow,
    );
    expect(errnoOf(header(cmd.read, 0, nbdRequestBytesMax + 1), { ...simple, sizeBytes: 2 ** 40 })).to.equal(
      errno.einval,
    );
    expect(errnoOf(header(cmd.read, 0, nbdRequestBytesMax), { ...context, sizeBytes: 2 ** 40 })).to.equal(0);
  });

  it('allows TRIM and WRITE_ZEROES longer than the maximum payload', () => {
    const big = { ...context, sizeBytes: 2 ** 40 };
    expect(errnoOf(header(cmd.trim, 0, 0xffffffff), big)).to.equal(0);
    expect(errnoOf(header(cmd.writeZeroes, 0, 0xffffffff), big)).to.equal(0);
  });

  it('refuses unknown commands and flags with EINVAL', () => {
    expect(errnoOf(header(8, 0, 0))).to.equal(errno.einval);
    expect(errnoOf(header(0xffff, 0, 0))).to.equal(errno.einval);
    expect(errnoOf(header(cmd.read, 0, 1, flag.noHole))).to.equal(errno.einval);
    expect(errnoOf(header(cmd.write, 0, 1, flag.reqOne))).to.equal(errno.einval);
    expect(errnoOf(header(cmd.writeZeroes, 0, 1, flag.fastZero))).to.equal(errno.einval); // not advertised
    expect(errnoOf(header(cmd.read, 0, 1, 0x8000))).to.equal(errno.einval);
    expect(errnoOf(header(cmd.read, 0, 1, flag.df), simple)).to.equal(errno.einval); // DF needs structured replies
    expect(errnoOf(header(cmd.read, 0, 1, flag.df))).to.equal(0);
    expect(errnoOf(header(cmd.read, 0, 1, flag.fua))).to.equal(0); // FUA is valid on every command
  });

  it('refuses data-changing commands on a read-only export with EPERM', () => {
    expect(errnoOf(header(cmd.write, 0, 1), readOnly)).to.equal(errno.eperm);
    expect(errnoOf(header(cmd.trim, 0, 1), readOnly)).to.equal(errno.eperm);
    expect(errnoOf(header(cmd.writeZeroes, 0, 1), readOnly)).to.equal(errno.eperm);
    expect(errnoOf(header(cmd.read, 0, 1), readOnly)).to.equal(0);
    expect(errnoOf(header(cmd.flush, 0, 0), readOnly)).to.equal(0);
  });

  it('refuses commands that were not negotiated', () => {
    const bare: TransmissionContext = { ...simple, flags: tx.hasFlags };
    expect(errnoOf(header(cmd.flush, 0, 0), bare)).to.equal(errno.einval);
    expect(errnoOf(header(cmd.trim, 0, 1), bare)).to.equal(errno.einval);
    expect(errnoOf(header(cmd.writeZeroes, 0, 1), bare)).to.equal(errno.einval);
    expect(errnoOf(header(cmd.write, 0, 1, flag.fua), bare)).to.equal(errno.einval);
    expect(errnoOf(header(cmd.blockStatus, 0, 1), simple)).to.equal(errno.einval);
    expect(errnoOf(header(cmd.blockStatus, 0, 1), { ...context, allocationContext: false })).to.equal(errno.einval);
  });

  it('needs FLUSH offset and length 0, and BLOCK_STATUS a nonzero length', () => {
    expect(errnoOf(header(cmd.flush, 0, 1))).to.equal(errno.einval);
    expect(errnoOf(header(cmd.flush, 512, 0))).to.equal(errno.einval);
    expect(errnoOf(header(cmd.blockStatus, 0, 0))).to.equal(errno.einval);
  });

  it('accepts DISC whatever its fields', () => {
    expect(validateRequest(header(cmd.disc, 5, 5, 0xff), context)).to.deep.equal({
      ok: true,
      command: { type: 'disc' },
      payloadBytes: 0,
    });
  });
});

describe('transmissionFlagsFor()', () => {
  it('advertises exactly the capabilities, and no trim or zeroes when read-only', () => {
    const flags = transmissionFlagsFor({ ...allCaps, structuredReplies: false });
    expect(flags).to.equal(
      tx.hasFlags | tx.sendFlush | tx.sendFua | tx.sendTrim | tx.sendWriteZeroes | tx.canMultiConn | tx.sendCache,
    );
    const ro = transmissionFlagsFor({ ...allCaps, readOnly: true, multiConn: false, structuredReplies: true });
    expect(ro & tx.readOnly).to.not.equal(0);
    expect(ro & (tx.sendTrim | tx.sendWriteZeroes | tx.canMultiConn)).to.equal(0);
    expect(ro & tx.sendDf).to.not.equal(0);
    const none = transmissionFlagsFor({
      readOnly: false,
      flush: false,
      fua: false,
      trim: false,
      writeZeroes: false,
      multiConn: false,
      structuredReplies: false,
    });
    expect(none).to.equal(tx.hasFlags | tx.sendCache);
  });
});

describe('nbdErrorOf()', () => {
  it('maps each error class to one NBD errno', () => {
    expect(nbdErrorOf(new InvalidArgumentError('x')).errno).to.equal(errno.einval);
    expect(nbdErrorOf(new RangeOutsideError('x')).errno).to.equal(errno.einval);
    expect(nbdErrorOf(new DiskFullError('x')).errno).to.equal(errno.enospc);
    expect(nbdErrorOf(new CairnError('EROFS', 'x')).errno).to.equal(errno.eperm);
    expect(nbdErrorOf(new CairnError('ENOTSUP', 'x')).errno).to.equal(errno.enotsup);
    expect(nbdErrorOf(new CairnError('ESHUTDOWN', 'x')).errno).to.equal(errno.eshutdown);
    expect(nbdErrorOf(new CairnError('EOVERFLOW', 'x')).errno).to.equal(errno.eoverflow);
    expect(nbdErrorOf(new ChecksumMismatchError('x')).errno).to.equal(errno.eio);
    expect(nbdErrorOf(new TooFewShardsError(4, 3)).errno).to.equal(errno.eio);
    expect(nbdErrorOf(new UnavailableError('x'))).to.deep.equal({
      errno: errno.eio,
      optionReply: wire.optionReplyCode.errUnknown,
      bug: false,
    });
  });

  it('maps provider failures to handshake replies', () => {
    expect(nbdErrorOf(new CairnError('ENOTFOUND', 'x')).optionReply).to.equal(wire.optionReplyCode.errUnknown);
    expect(nbdErrorOf(new CairnError('EPERM', 'x')).optionReply).to.equal(wire.optionReplyCode.errPolicy);
    expect(nbdErrorOf(new CairnError('ESHUTDOWN', 'x')).optionReply).to.equal(wire.optionReplyCode.errShutdown);
  });

  it('calls assertion failures and foreign errors bugs, answered with EIO', () => {
    expect(nbdErrorOf(new AssertionError('broken'))).to.include({ errno: errno.eio, bug: true });
    expect(nbdErrorOf(new TypeError('x'))).to.include({ errno: errno.eio, bug: true });
    expect(nbdErrorOf('a string')).to.include({ errno: errno.eio, bug: true });
  });
});

describe('descriptorsOf()', () => {
  const runs = [
    { offset: 0, length: 4096, hole: true, zero: true },
    { offset: 4096, length: 4096, hole: true, zero: true },
    { offset: 8192, length: 8192, hole: false, zero: false },
    { offset: 16384, length: 4096, hole: false, zero: true },
  ];

  it('merges equal neighbours, clips to the request and sets base:allocation flags', () => {
    expect(descriptorsOf(runs, 0, 20480, false)).to.deep.equal([
      { length: 8192, flags: 3 },
      { length: 8192, flags: 0 },
      { length: 4096, flags: 2 },
    ]);
    expect(descriptorsOf(runs.slice(2), 10000, 1000, false)).to.deep.equal([{ length: 1000, flags: 0 }]);
  });

  it('sends one descriptor within the request length for REQ_ONE', () => {
    expect(descriptorsOf(runs, 0, 20480, true)).to.deep.equal([{ length: 8192, flags: 3 }]);
    expect(descriptorsOf(runs, 0, 100, true)).to.deep.equal([{ length: 100, flags: 3 }]);
  });

  it('treats a device answer that breaks its contract as a bug', () => {
    expect(() => descriptorsOf([], 0, 10, false)).to.throw(AssertionError);
    expect(() => descriptorsOf([{ offset: 1, length: 10, hole: true, zero: true }], 0, 10, false)).to.throw(
      AssertionError,
    );
    expect(() => descriptorsOf([{ offset: 0, length: 5, hole: true, zero: true }], 0, 10, false)).to.throw(/short/);
    expect(() => descriptorsOf([{ offset: 0, length: 0, hole: true, zero: true }], 0, 10, false)).to.throw(
      AssertionError,
    );
  });
});

describe('ByteQueue', () => {
  it('takes structures across chunk boundaries and skips without copying', () => {
    const queue = new ByteQueue();
    queue.push(Uint8Array.from([1, 2]));
    queue.push(Uint8Array.from([3]));
    queue.push(new Uint8Array(0));
    queue.push(Uint8Array.from([4, 5, 6]));
    expect(queue.length).to.equal(6);
    expect([...queue.take(4)]).to.deep.equal([1, 2, 3, 4]);
    expect(queue.skip(10)).to.equal(2);
    expect(queue.length).to.equal(0);
    queue.push(Uint8Array.from([7, 8, 9]));
    expect([...queue.take(1)]).to.deep.equal([7]);
    expect(queue.skip(1)).to.equal(1);
    expect([...queue.take(1)]).to.deep.equal([9]);
    expect([...queue.take(0)]).to.deep.equal([]);
  });

  it('matches a plain array model under random pushes, takes and skips', () => {
    fc.assert(
      fc.property(
        fc.array(
          fc.oneof(
            fc.record({ push: fc.integer({ min: 0, max: 9000 }) }),
            fc.record({ take: fc.integer({ min: 0, max: 9000 }) }),
            fc.record({ skip: fc.integer({ min: 0, max: 9000 }) }),
          ),
          { maxLength: 60 },
        ),
        (steps) => {
          const queue = new ByteQueue();
          const model: number[] = [];
          const taken: [Uint8Array, number[]][] = [];
          let counter = 0;
          for (const step of steps) {
            if ('push' in step) {
              const chunk = Uint8Array.from({ length: step.push }, () => counter++ & 0xff);
              model.push(...chunk);
              queue.push(chunk);
            } else if ('take' in step) {
              const n = Math.min(step.take, model.length);
              const out = queue.take(n);
              const expected = model.splice(0, n);
              expect([...out]).to.deep.equal(expected);
              taken.push([out, expected]);
            } else {
              const dropped = queue.skip(step.skip);
              expect(dropped).to.equal(Math.min(step.skip, model.length));
              model.splice(0, dropped);
            }
            expect(queue.length).to.equal(model.length);
          }
          // What take() returned stays as it was, whatever was pushed after (views share buffers).
          for (const [out, expected] of taken) expect([...out]).to.deep.equal(expected);
        },
      ),
      { numRuns: 300, seed: 77 },
    );
  });

  it('copies the small chunks that follow large ones into one staging buffer, not a new one each', () => {
    // A 4 KiB WRITE and its FLUSH arrive as a large and a small chunk: a staging buffer per FLUSH
    // was 64 KiB of garbage per commit.
    const queue = new ByteQueue();
    const buffers = new Set<ArrayBufferLike>();
    for (let i = 0; i < 100; i++) {
      queue.push(new Uint8Array(4124).fill(i & 0xff));
      queue.push(new Uint8Array(28).fill(0xee));
      expect(queue.take(4124)[0]).to.equal(i & 0xff);
      const small = queue.take(28);
      expect([...small]).to.deep.equal(new Array<number>(28).fill(0xee));
      buffers.add(small.buffer);
    }
    expect(buffers.size, 'staging buffers for 100 small chunks').to.equal(1);
  });

  it('stays linear when a payload arrives one byte at a time', function () {
    // A quadratic queue needs minutes for this; a linear one a fraction of a second. The generous
    // timeout is the only clock involved.
    this.timeout(30_000);
    const queue = new ByteQueue();
    const total = 1 << 20;
    for (let i = 0; i < total; i++) queue.push(Uint8Array.of(i & 0xff));
    const out = queue.take(total);
    expect(out.length).to.equal(total);
    expect(out[total - 1]).to.equal((total - 1) & 0xff);
    expect(queue.length).to.equal(0);
  });

  it('asserts that the caller checked the length', () => {
    const queue = new ByteQueue();
    queue.push(new Uint8Array(3));
    expect(() => queue.take(4)).to.throw(AssertionError);
  });
});
