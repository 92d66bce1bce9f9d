// Seeded fuzzing of the session: random bytes where the handshake should be, random requests
// (valid framing, arbitrary types, flags, offsets and lengths) after it, all delivered in random
// cuts. The session must never throw or log a BUG, must answer every framed request exactly once
// in a stream a client can parse, and must release its export when the connection ends.
import { expect } from 'chai';
import fc from 'fast-check';
import { nbdWire as wire } from '../../../src/nbd/index.js';
import { MemoryExportProvider } from '../../../src/sim/memory_device.js';
import { RawNbdClient, sessionPipe } from '../../harness/nbd.js';
import { seededBytes } from '../../support/bytes.js';

const sizeBytes = 1 << 20;

function newProvider(): MemoryExportProvider {
  const provider = new MemoryExportProvider();
  provider.create('disk', sizeBytes);
  return provider;
}

const requestArb = fc.record({
  type: fc.oneof(
    { arbitrary: fc.integer({ min: 0, max: 7 }), weight: 8 },
    { arbitrary: fc.integer({ min: 8, max: 0xffff }), weight: 1 },
  ),
  flags: fc.oneof(
    { arbitrary: fc.constant(0), weight: 3 },
    { arbitrary: fc.integer({ min: 0, max: 0xffff }), weight: 1 },
  ),
  offset: fc.oneof(
    { arbitrary: fc.integer({ min: 0, max: sizeBytes }), weight: 6 },
    { arbitrary: fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }), weight: 1 },
  ),
  length: fc.oneof(
    { arbitrary: fc.integer({ min: 0, max: 70_000 }), weight: 6 },
    { arbitrary: fc.integer({ min: 0, max: 0xffffffff }), weight: 1 },
  ),
});

describe('Session fuzzing', () => {
  it('survives random bytes in place of the handshake', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.uint8Array({ minLength: 1, maxLength: 300 }),
        fc.integer({ min: 1, max: 1000 }),
        async (bytes, seed) => {
          const provider = newProvider();
          const pipe = sessionPipe(provider, { split: { seed } });
          await pipe.read(wire.serverGreetingBytes);
          pipe.write(bytes);
          pipe.end();
          await pipe.closed;
          await pipe.session.finished;
          expect(pipe.logs.filter((l) => l.startsWith('BUG'))).to.deep.equal([]);
          expect(provider.openHandles()).to.equal(0);
        },
      ),
      { numRuns: 150, seed: 1121 },
    );
  });

  it('answers every framed request exactly once, whatever its fields', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(requestArb, { minLength: 1, maxLength: 25 }),
        fc.boolean(),
        fc.integer({ min: 1, max: 1000 }),
        async (requests, structured, seed) => {
          const provider = newProvider();
          const pipe = sessionPipe(provider, { split: { seed } });
          const client = new RawNbdClient(pipe);
          await client.greet();
          await client.go('disk', { structured });
          const expected = new Set<bigint>();
          for (const r of requests) {
            if (r.type === wire.commandType.disc) continue;
            // A WRITE's payload must really follow; keep those to sizes we can send.
            const isWrite = r.type === wire.commandType.write;
            const length = isWrite ? r.length % 70_001 : r.length;
            const payload = isWrite ? seededBytes(length, seed) : undefined;
            expected.add(client.send({ type: r.type, flags: r.flags, offset: r.offset, length }, payload));
          }
          while (expected.size > 0) {
            const reply = await client.readReply();
            expect(expected.delete(reply.cookie), `one reply for cookie ${reply.cookie}`).to.equal(true);
            // Without structured replies everything is simple; with them, errors (and READ and
            // BLOCK_STATUS answers) are structured, other successes may be simple.
            if (!structured || reply.errno !== 0) expect(reply.structured).to.equal(structured);
          }
          client.disconnect();
          await pipe.closed;
          await pipe.session.finished;
          expect(pipe.logs.filter((l) => l.startsWith('BUG'))).to.deep.equal([]);
          expect(provider.openHandles()).to.equal(0);
        },
      ),
      { numRuns: 120, seed: 2026 },
    );
  });

  it('survives random bytes in the transmission phase', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.uint8Array({ minLength: 1, maxLength: 400 }),
        fc.integer({ min: 1, max: 1000 }),
        async (bytes, seed) => {
          const provider = newProvider();
          const pipe = sessionPipe(provider, { split: { seed } });
          const client = new RawNbdClient(pipe);
          await client.greet();
          await client.go('disk');
          // Half the time, start with a valid magic so the fields behind it get exercised too.
          const framed = seed % 2 === 0 ? Uint8Array.from([0x25, 0x60, 0x95, 0x13, ...bytes]) : bytes;
          pipe.write(framed);
          pipe.end();
          await pipe.closed;
          await pipe.session.finished;
          expect(pipe.logs.filter((l) => l.startsWith('BUG'))).to.deep.equal([]);
          expect(provider.openHandles()).to.equal(0);
        },
      ),
      { numRuns: 150, seed: 99 },
    );
  });
});
