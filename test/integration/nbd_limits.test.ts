/**
 * The NBD server's limits against hostile clients (src/nbd/limits.ts), with a real NbdServer on
 * loopback, raw sockets as the hostile clients and nbdinfo as the well-behaved one. Hostile
 * clients connect from 127.0.0.2 and 127.0.0.3 (all of 127/8 is loopback on Linux), the
 * well-behaved ones from 127.0.0.1, so per-address caps apply as they would between hosts. Limits
 * are configured small; every wait is for a condition, with a deadline.
 */
import { expect } from 'chai';
import { waitFor } from '../../src/dev/index.js';
import { nbdWire as wire, type NbdLimitName } from '../../src/nbd/index.js';
import {
  connectPipe,
  RawNbdClient,
  runTool,
  startNbdServer,
  type BytePipe,
  type NbdTestServer,
} from '../harness/nbd.js';
import { seededBytes } from '../support/bytes.js';

const MiB = 1 << 20;
const hostile = '127.0.0.2';
const otherHostile = '127.0.0.3';

describe('NBD server limits against hostile clients', function () {
  this.timeout(60_000);
  let server: NbdTestServer | undefined;
  let hits: NbdLimitName[] = [];
  const pipes: BytePipe[] = [];

  beforeEach(() => {
    hits = [];
  });

  afterEach(async () => {
    for (const p of pipes.splice(0)) p.destroy();
    if (server !== undefined) expect(server.bugs()).to.deep.equal([]);
    await server?.stop();
    server = undefined;
  });

  /** Opens `count` raw connections from `localAddress` that say nothing (an idle flood). */
  async function flood(port: number, count: number, localAddress: string): Promise<BytePipe[]> {
    const opened = await Promise.all(Array.from({ length: count }, () => connectPipe({ port, localAddress })));
    pipes.push(...opened);
    return opened;
  }

  it('closes connections past the per-address cap at once, with a log line, and nbdinfo still gets in', async () => {
    const s = (server = await startNbdServer({
      limits: { connectionsMax: 8, connectionsPerClientMax: 3 },
      onLimit: (limit) => hits.push(limit),
    }));
    s.provider.create('disk', 4 * MiB);
    const idle = await flood(s.port, 10, hostile);
    // Refused connections are closed by the server, not left hanging: 7 of 10 end.
    await waitFor(
      '7 of the 10 idle connections to be closed',
      () => idle.filter((p) => p.isClosed()).length === 7 || undefined,
      10_000,
    );
    expect(s.server.connectionCount).to.equal(3);
    expect(hits.filter((h) => h === 'connections_per_client')).to.have.length(7);
    // One line for the burst, not one per connection (rate-limited).
    const lines = s.logs.filter((l) => l.includes('limit connections_per_client'));
    expect(lines).to.have.length(1);
    expect(lines[0]).to.include(`refused a connection from ${hostile}: it holds 3`);

    // The well-behaved client, from another address, over TCP and the Unix socket, while the flood holds.
    for (const uri of [s.tcpUri('disk'), s.unixUri('disk')]) {
      const r = await runTool('nbdinfo', ['--size', uri], { timeoutMs: 20_000 });
      expect(r.code, `${uri}: ${r.stderr}`).to.equal(0);
      expect(r.stdout.trim()).to.equal(String(4 * MiB));
    }
    expect(idle.filter((p) => !p.isClosed())).to.have.length(3);
  });

  it('closes connections past the total cap at once and counts them, then accepts again when one closes', async () => {
    const s = (server = await startNbdServer({
      limits: { connectionsMax: 4, connectionsPerClientMax: 2 },
      onLimit: (limit) => hits.push(limit),
    }));
    s.provider.create('disk', MiB);
    const first = await flood(s.port, 2, hostile);
    await flood(s.port, 2, otherHostile);
    await waitFor('4 connections open', () => s.server.connectionCount === 4 || undefined, 10_000);
    const [extra] = await flood(s.port, 1, '127.0.0.4');
    await extra!.closed;
    expect(hits).to.deep.equal(['connections']);
    expect(
      s.logs.some(
        (l) => l.includes('limit connections: refused a connection from 127.0.0.4') && l.includes('4 are open'),
      ),
    ).to.equal(true);

    first[0]!.destroy();
    await waitFor('the closed connection to free its slot', () => s.server.connectionCount === 3 || undefined, 10_000);
    const client = new RawNbdClient((await flood(s.port, 1, '127.0.0.4'))[0]!);
    await client.greet();
    expect((await client.go('disk')).sizeBytes).to.equal(MiB);
  });

  it('stops reading sockets when WRITE payloads across connections reach the write budget, and serves every write once it frees', async () => {
    // Writes wait in the device until the test lets them go; reads pass.
    let heldWrites = 0;
    let release!: () => void;
    const gate = new Promise<void>((resolve) => (release = resolve));
    const s = (server = await startNbdServer({
      limits: { writeInFlightBytesMax: 32 * MiB },
      onLimit: (limit) => hits.push(limit),
    }));
    const device = s.provider.create('disk', 64 * MiB, {
      beforeOperation: async (op) => {
        if (op.kind !== 'write') return;
        heldWrites += 1;
        await gate;
      },
    });
    // Eight hostile connections each send five 1 MiB WRITEs: 40 MiB, within each connection's
    // own bound (64 MiB) but past the server's 32 MiB.
    const clients: RawNbdClient[] = [];
    for (let i = 0; i < 8; i++) {
      const c = new RawNbdClient((await flood(s.port, 1, i % 2 === 0 ? hostile : otherHostile))[0]!);
      await c.greet();
      await c.go('disk');
      clients.push(c);
    }
    const cookies = clients.map((c, i) =>
      Array.from({ length: 5 }, (_, j) =>
        c.send({ type: wire.commandType.write, offset: (i * 5 + j) * MiB, length: MiB }, seededBytes(MiB, i * 5 + j)),
      ),
    );
    await waitFor(
      '32 writes to reach the device and the write budget to bite',
      () => (heldWrites === 32 && hits.includes('write_bytes')) || undefined,
      20_000,
    );
    expect(s.server.writeBytesInFlight).to.equal(32 * MiB);
    expect(s.logs.some((l) => l.includes('limit write_bytes:'))).to.equal(true);

    // A well-behaved client still reads while writes are held back.
    const reader = new RawNbdClient((await connectPipe({ port: s.port })) as BytePipe);
    await reader.greet();
    await reader.go('disk');
    expect((await reader.read(0, 4096)).errno).to.equal(0);
    reader.disconnect();

    release();
    for (const [i, c] of clients.entries()) {
      // One at a time: a pipe serves one reader.
      const errnos: number[] = [];
      for (const _ of cookies[i]!) errnos.push((await c.readReply(20_000)).errno);
      expect(errnos).to.deep.equal([0, 0, 0, 0, 0]);
    }
    expect(heldWrites).to.equal(40);
    expect(device.stats.writes).to.equal(40);
    await waitFor('the write budget to drain', () => s.server.writeBytesInFlight === 0 || undefined, 10_000);
    const back = await clients[7]!.read(39 * MiB, MiB);
    expect(Buffer.from(back.data!).equals(Buffer.from(seededBytes(MiB, 39)))).to.equal(true);
  });

  it('gives back the write budget of a client that disconnects mid-payload', async () => {
    const s = (server = await startNbdServer({ limits: { writeInFlightBytesMax: 32 * MiB } }));
    s.provider.create('disk', 64 * MiB);
    const c = new RawNbdClient((await flood(s.port, 1, hostile))[0]!);
    await c.greet();
    await c.go('disk');
    // A 32 MiB WRITE header with only part of its payload, then gone.
    c.send({ type: wire.commandType.write, offset: 0, length: 32 * MiB }, seededBytes(MiB, 1));
    await waitFor(
      'the WRITE to take the whole budget',
      () => s.server.writeBytesInFlight === 32 * MiB || undefined,
      10_000,
    );
    c.pipe.destroy();
    await waitFor('the budget to come back', () => s.server.writeBytesInFlight === 0 || undefined, 10_000);
    const friend = new RawNbdClient(await connectPipe({ port: s.port }));
    await friend.greet();
    await friend.go('disk');
    expect((await friend.write(0, seededBytes(MiB, 2))).errno).to.equal(0);
    friend.disconnect();
  });
});
