// The in-memory BlockDevice twin and its ExportProvider, checked against a plain byte-array model:
// contents, holes (never written or trimmed), durability across crash(), limits and hooks.
import { expect } from 'chai';
import fc from 'fast-check';
import { AssertionError, CairnError, DiskFullError } from '../../../src/core/index.js';
import { MemoryBlockDevice, MemoryExportProvider, memoryPageBytes } from '../../../src/sim/memory_device.js';
import { seededBytes } from '../../support/bytes.js';

const page = memoryPageBytes;

describe('MemoryBlockDevice', () => {
  it('starts as one hole that reads as zeros', async () => {
    const device = new MemoryBlockDevice(10 * page + 100);
    expect(await device.blockStatus(0, device.sizeBytes)).to.deep.equal([
      { offset: 0, length: 10 * page + 100, hole: true, zero: true },
    ]);
    expect((await device.read(0, 2 * page)).every((b) => b === 0)).to.equal(true);
    expect(device.allocatedBytes).to.equal(0);
  });

  it('reports written pages as data, trimmed ones as holes, NO_HOLE zeroes as allocated zeros', async () => {
    const device = new MemoryBlockDevice(8 * page);
    await device.write(page + 10, seededBytes(2 * page, 1)); // touches pages 1, 2, 3
    await device.trim(2 * page, page); // page 2 becomes a hole
    await device.writeZeroes(5 * page, 2 * page, { noHole: true });
    expect(await device.blockStatus(0, 8 * page)).to.deep.equal([
      { offset: 0, length: page, hole: true, zero: true },
      { offset: page, length: page, hole: false, zero: false },
      { offset: 2 * page, length: page, hole: true, zero: true },
      { offset: 3 * page, length: page, hole: false, zero: false },
      { offset: 4 * page, length: page, hole: true, zero: true },
      { offset: 5 * page, length: 2 * page, hole: false, zero: true },
      { offset: 7 * page, length: page, hole: true, zero: true },
    ]);
    // Runs are clipped to the asked range.
    expect(await device.blockStatus(page + 5, 10)).to.deep.equal([
      { offset: page + 5, length: 10, hole: false, zero: false },
    ]);
  });

  it('zeroes part of a data page without making a hole', async () => {
    const device = new MemoryBlockDevice(2 * page);
    await device.write(0, new Uint8Array(page).fill(7));
    await device.trim(100, 200);
    await device.writeZeroes(1000, 10);
    const bytes = await device.read(0, page);
    expect(bytes[99]).to.equal(7);
    expect(bytes.subarray(100, 300).every((b) => b === 0)).to.equal(true);
    expect(bytes.subarray(1000, 1010).every((b) => b === 0)).to.equal(true);
    expect(bytes[300]).to.equal(7);
    expect((await device.blockStatus(0, page))[0]).to.include({ hole: false });
  });

  it('handles a last page shorter than a full page', async () => {
    const device = new MemoryBlockDevice(page + 3);
    await device.write(page, Uint8Array.from([1, 2, 3]));
    expect([...(await device.read(page, 3))]).to.deep.equal([1, 2, 3]);
    await device.trim(page, 3);
    expect(await device.blockStatus(page, 3)).to.deep.equal([{ offset: page, length: 3, hole: true, zero: true }]);
  });

  it('answers block status on a huge sparse device without walking every page', async () => {
    const device = new MemoryBlockDevice(2 ** 50); // 1 PiB
    await device.write(2 ** 40, Uint8Array.from([1]));
    const started = Date.now();
    const runs = await device.blockStatus(0, 2 ** 50);
    expect(runs).to.deep.equal([
      { offset: 0, length: 2 ** 40, hole: true, zero: true },
      { offset: 2 ** 40, length: page, hole: false, zero: false },
      { offset: 2 ** 40 + page, length: 2 ** 50 - 2 ** 40 - page, hole: true, zero: true },
    ]);
    await device.trim(0, 2 ** 50);
    expect(device.allocatedBytes).to.equal(0);
    expect(Date.now() - started).to.be.below(1000);
  });

  it('keeps what a crash would lose apart from what flush and FUA made durable', async () => {
    const device = new MemoryBlockDevice(4 * page);
    await device.write(0, Uint8Array.from([1]));
    await device.flush();
    await device.write(0, Uint8Array.from([2]));
    await device.write(page, Uint8Array.from([3]), { fua: true });
    await device.trim(2 * page, page);
    expect(device.dirtyBytes).to.equal(page);
    device.crash();
    expect(device.peek(0, 1)[0]).to.equal(1);
    expect(device.peek(page, 1)[0]).to.equal(3);
    expect(device.dirtyBytes).to.equal(0);
  });

  it('fails a write that would exceed allocatedBytesMax with ENOSPC and changes nothing', async () => {
    const device = new MemoryBlockDevice(16 * page, { allocatedBytesMax: 2 * page });
    await device.write(0, new Uint8Array(2 * page).fill(1));
    let failure: unknown;
    await device.write(page, new Uint8Array(2 * page).fill(2)).catch((err: unknown) => (failure = err));
    expect(failure).to.be.instanceOf(DiskFullError);
    expect(device.peek(page, 1)[0]).to.equal(1);
    await device.write(page, new Uint8Array(page).fill(3)); // overwriting allocated pages is fine
    await device.trim(0, page);
    await device.write(8 * page, Uint8Array.from([4])); // space freed by the trim
  });

  it('asserts ranges: the NBD edge validated them, so a bad one is a bug', async () => {
    const device = new MemoryBlockDevice(page);
    let failure: unknown;
    await device.read(page - 1, 2).catch((err: unknown) => (failure = err));
    expect(failure).to.be.instanceOf(AssertionError);
    expect(() => device.peek(-1, 1)).to.throw(AssertionError);
  });

  it('runs the hook before every operation, letting tests delay or fail it', async () => {
    const device = new MemoryBlockDevice(page);
    const seen: string[] = [];
    device.beforeOperation = (op) => {
      seen.push(`${op.kind}:${op.offset}:${op.length}:${op.fua}`);
      if (op.kind === 'trim') throw new CairnError('EIO', 'injected');
    };
    await device.write(1, Uint8Array.from([1]), { fua: true });
    await device.flush();
    let failure: unknown;
    await device.trim(0, 1).catch((err: unknown) => (failure = err));
    expect((failure as CairnError).code).to.equal('EIO');
    expect(seen).to.deep.equal(['write:1:1:true', 'flush:0:0:false', 'trim:0:1:false']);
    expect(device.stats).to.include({ writes: 1, flushes: 1, trims: 0, fuaWrites: 1, inFlight: 0 });
  });

  it('matches a byte-array model under random writes, trims and zeroes', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(
          fc.record({
            kind: fc.constantFrom('write', 'trim', 'zero', 'zeroNoHole', 'flush'),
            offset: fc.integer({ min: 0, max: 6 * page }),
            length: fc.integer({ min: 0, max: 3 * page }),
            seed: fc.integer({ min: 1, max: 1 << 30 }),
          }),
          { maxLength: 30 },
        ),
        async (operations) => {
          const size = 6 * page + 123;
          const device = new MemoryBlockDevice(size);
          const model = new Uint8Array(size);
          for (const op of operations) {
            const offset = Math.min(op.offset, size);
            const length = Math.min(op.length, size - offset);
            if (op.kind === 'write') {
              const data = seededBytes(length, op.seed);
              await device.write(offset, data);
              model.set(data, offset);
            } else if (op.kind === 'trim') {
              await device.trim(offset, length);
              model.fill(0, offset, offset + length);
            } else if (op.kind === 'zero' || op.kind === 'zeroNoHole') {
              await device.writeZeroes(offset, length, { noHole: op.kind === 'zeroNoHole' });
              model.fill(0, offset, offset + length);
            } else {
              await device.flush();
            }
          }
          expect(Buffer.from(await device.read(0, size)).equals(Buffer.from(model))).to.equal(true);
          // Every run claiming zeros really reads as zeros, and runs tile the device.
          let at = 0;
          for (const run of await device.blockStatus(0, size)) {
            expect(run.offset).to.equal(at);
            if (run.zero)
              expect(model.subarray(run.offset, run.offset + run.length).every((b) => b === 0)).to.equal(true);
            at += run.length;
          }
          expect(at).to.equal(size);
        },
      ),
      { numRuns: 200, seed: 314 },
    );
  });
});

describe('MemoryExportProvider', () => {
  it('lists, describes and opens exports, sharing one device between connections', async () => {
    const provider = new MemoryExportProvider();
    provider.create('b', page, { description: 'bee' });
    const a = provider.create('a', 2 * page);
    // Each export's capabilities come with it, so NBD_OPT_INFO answers without opening it.
    const capabilities = { readOnly: false, flush: true, fua: true, trim: true, writeZeroes: true, multiConn: true };
    expect(await provider.list()).to.deep.equal([
      { name: 'a', description: '', sizeBytes: 2 * page, capabilities },
      { name: 'b', description: 'bee', sizeBytes: page, capabilities },
    ]);
    expect(provider.opens, 'listing opens nothing').to.equal(0);
    expect(await provider.info('zzz')).to.equal(null);
    const one = await provider.open('a', { readOnly: false });
    const two = await provider.open('a', { readOnly: false });
    expect(one.device).to.equal(a);
    expect(two.device).to.equal(a);
    expect(provider.openHandles('a')).to.equal(2);
    await one.close();
    await one.close(); // idempotent
    await two.close();
    expect(provider.openHandles()).to.equal(0);
    let failure: unknown;
    await provider.open('zzz', { readOnly: false }).catch((err: unknown) => (failure = err));
    expect((failure as CairnError).code).to.equal('ENOTFOUND');
  });

  it('hands out read-only views that refuse changes with EROFS', async () => {
    const provider = new MemoryExportProvider();
    provider.create('ro', page, { readOnly: true });
    provider.create('rw', page);
    for (const [name, readOnly] of [
      ['ro', false],
      ['rw', true],
    ] as const) {
      const { device } = await provider.open(name, { readOnly });
      expect(device.capabilities().readOnly).to.equal(true);
      let failure: unknown;
      await device.write(0, Uint8Array.from([1])).catch((err: unknown) => (failure = err));
      expect((failure as CairnError).code).to.equal('EROFS');
      expect((await device.read(0, 1))[0]).to.equal(0);
    }
  });

  it('serves exports added later and forgets removed ones', async () => {
    const provider = new MemoryExportProvider();
    expect(await provider.list()).to.deep.equal([]);
    provider.add('late', new MemoryBlockDevice(page));
    expect((await provider.info('late'))?.sizeBytes).to.equal(page);
    expect(() => provider.add('late', new MemoryBlockDevice(page))).to.throw(/exists/);
    provider.remove('late');
    expect(await provider.info('late')).to.equal(null);
  });
});
