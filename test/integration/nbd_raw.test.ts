// The NBD server over real sockets (TCP and Unix), driven by a raw client that can send what no
// well-behaved client would: unknown options and commands, out-of-range reads, garbage in place
// of a handshake, writes to read-only exports. Also the server's own life: exports created after
// start, the handshake deadline, and close() draining requests in flight.
import { expect } from 'chai';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { NbdServer, nbdWire as wire } from '../../src/nbd/index.js';
import { connectPipe, RawNbdClient, runOk, startNbdServer, type NbdTestServer } from '../harness/nbd.js';
import { waitFor } from '../../src/dev/index.js';
import { seededBytes } from '../support/bytes.js';

const { commandType: cmd, nbdErrno: errno, optionCode: opt, optionReplyCode: rep } = wire;
const MiB = 1 << 20;

async function connect(server: NbdTestServer, transport: 'tcp' | 'unix' = 'tcp'): Promise<RawNbdClient> {
  const pipe = await connectPipe(transport === 'tcp' ? { port: server.port } : { path: server.socketPath });
  return new RawNbdClient(pipe);
}

describe('NbdServer over raw sockets', () => {
  let server: NbdTestServer;

  before(async () => {
    server = await startNbdServer();
    server.provider.create('disk', 8 * MiB, { description: 'raw test disk' });
    server.provider.create('ro', MiB, { readOnly: true });
  });

  after(async () => {
    await server?.stop();
  });

  afterEach(() => {
    expect(server.bugs()).to.deep.equal([]);
  });

  for (const transport of ['tcp', 'unix'] as const) {
    it(`answers an unknown option with ERR_UNSUP and goes on negotiating (${transport})`, async () => {
      const client = await connect(server, transport);
      await client.greet();
      const replies = await client.option(0x7777, seededBytes(100, 1));
      expect(replies.map((r) => [r.option, r.replyType])).to.deep.equal([[0x7777, rep.errUnsup]]);
      const { sizeBytes } = await client.go('disk');
      expect(sizeBytes).to.equal(8 * MiB);
      expect((await client.write(0, Uint8Array.from([1, 2, 3]))).errno).to.equal(0);
      client.disconnect();
      await client.pipe.closed;
    });
  }

  it('answers an out-of-range READ in simple mode with an error and no payload; the next request works', async () => {
    const client = await connect(server);
    await client.greet();
    await client.go('disk', { structured: false });
    // Send both before reading anything: if the error carried a payload, the second reply's
    // header would be read from the middle of it.
    const bad = client.send({ type: cmd.read, offset: 8 * MiB - 512, length: 4096 });
    const good = client.send({ type: cmd.read, offset: 0, length: 4096 });
    const first = await client.readReply();
    const second = await client.readReply();
    const byCookie = new Map([first, second].map((r) => [r.cookie, r]));
    expect(byCookie.get(bad)).to.include({ errno: errno.einval, data: null });
    expect(byCookie.get(good)!.errno).to.equal(0);
    expect(byCookie.get(good)!.data!.length).to.equal(4096);
    // Nothing more arrives: the error reply was exactly 16 bytes.
    let extra = false;
    await client.pipe.read(1, 200).then(
      () => (extra = true),
      () => undefined,
    );
    expect(extra).to.equal(false);
    client.disconnect();
  });

  it('answers an unknown command with EINVAL', async () => {
    const client = await connect(server);
    await client.greet();
    await client.go('disk');
    const reply = await client.call({ type: 42, offset: 0, length: 512 });
    expect(reply).to.include({ errno: errno.einval, structured: true });
    expect(reply.message).to.equal('unknown command 42');
    expect((await client.read(0, 512)).errno).to.equal(0);
    client.disconnect();
  });

  it('answers writes, trims and zeroes to a read-only export with EPERM', async () => {
    const client = await connect(server, 'unix');
    await client.greet();
    const { flags } = await client.go('ro', { structured: false });
    expect(flags & wire.transmissionFlag.readOnly).to.not.equal(0);
    expect(flags & (wire.transmissionFlag.sendTrim | wire.transmissionFlag.sendWriteZeroes)).to.equal(0);
    expect((await client.write(0, seededBytes(8192, 2))).errno).to.equal(errno.eperm);
    expect((await client.call({ type: cmd.trim, offset: 0, length: 4096 })).errno).to.equal(errno.eperm);
    expect((await client.call({ type: cmd.writeZeroes, offset: 0, length: 4096 })).errno).to.equal(errno.eperm);
    expect((await client.read(0, 4096)).errno).to.equal(0);
    expect(server.provider.device('ro').stats.writes).to.equal(0);
    client.disconnect();
  });

  it('drops a client that sends garbage while another client keeps working', async () => {
    const good = await connect(server);
    await good.greet();
    await good.go('disk');
    const bad = await connect(server);
    await bad.pipe.read(wire.serverGreetingBytes);
    bad.pipe.write(new TextEncoder().encode('SSH-2.0-OpenSSH_9.2\r\n'));
    await bad.pipe.closed;
    const data = seededBytes(65_536, 3);
    expect((await good.write(MiB, data)).errno).to.equal(0);
    const back = await good.read(MiB, data.length);
    expect(Buffer.from(back.data!).equals(Buffer.from(data))).to.equal(true);
    expect(server.logs.some((l) => l.includes('protocol violation'))).to.equal(true);
    good.disconnect();
  });

  it('drops a client that breaks request framing, keeping the others', async () => {
    const other = await connect(server);
    await other.greet();
    await other.go('disk');
    const client = await connect(server);
    await client.greet();
    await client.go('disk');
    client.pipe.write(new Uint8Array(28).fill(0xee));
    await client.pipe.closed;
    expect((await other.read(0, 512)).errno).to.equal(0);
    other.disconnect();
  });

  it('releases the export when a client vanishes with replies still unsent', async () => {
    const device = server.provider.create('vanish', 64 * MiB);
    await device.write(0, seededBytes(32 * MiB, 8));
    const client = await connect(server);
    await client.greet();
    await client.go('vanish', { structured: false });
    // 64 MiB of replies the client will never read: the server blocks on a full socket buffer.
    for (let i = 0; i < 64; i++) client.send({ type: cmd.read, offset: (i % 32) * MiB, length: MiB });
    await waitFor('the export to be open', () => server.provider.openHandles('vanish') === 1);
    await waitFor('requests to reach the device', () => device.stats.reads > 0);
    client.pipe.destroy();
    await waitFor('the export to be released', () => server.provider.openHandles('vanish') === 0);
    server.provider.remove('vanish');
  });

  it('serves an export created after the server started, without a restart', async () => {
    const client = await connect(server);
    await client.greet();
    expect(
      (await client.option(opt.go, wire.encodeInfoRequest({ name: 'later', requests: [] }))).at(-1)!.replyType,
    ).to.equal(rep.errUnknown);
    server.provider.create('later', 3 * MiB);
    expect((await client.go('later')).sizeBytes).to.equal(3 * MiB);
    client.disconnect();
  });
});

describe('NbdServer life cycle', () => {
  it('drops a client that does not finish the handshake in time', async () => {
    const server = await startNbdServer({ handshakeDeadlineMs: 300 });
    try {
      const client = await connect(server);
      await client.greet();
      await client.pipe.closed;
      expect(server.logs.some((l) => l.includes('handshake made no progress'))).to.equal(true);
    } finally {
      await server.stop();
    }
  });

  it('keeps a handshake that goes on negotiating past the deadline, and drops it once it stalls', async () => {
    const deadlineMs = 500;
    const server = await startNbdServer({ handshakeDeadlineMs: deadlineMs });
    server.provider.create('disk', MiB);
    try {
      const client = await connect(server);
      await client.greet();
      // Options back to back for three deadlines: a listing client asking about many exports.
      const started = Date.now();
      let answered = 0;
      while (Date.now() - started < 3 * deadlineMs) {
        const replies = await client.option(opt.info, wire.encodeInfoRequest({ name: 'disk', requests: [] }));
        expect(replies.at(-1)!.replyType).to.equal(rep.ack);
        answered += 1;
      }
      expect(answered).to.be.greaterThan(1);
      await client.pipe.closed;
      expect(server.logs.filter((l) => l.includes('handshake made no progress')).length).to.equal(1);
    } finally {
      await server.stop();
    }
  });

  it('close() lets a request in flight finish, then disconnects and removes the socket file', async () => {
    const server = await startNbdServer({ closeDeadlineMs: 5000 });
    const device = server.provider.create('disk', MiB);
    let release!: () => void;
    const held = new Promise<void>((r) => (release = r));
    device.beforeOperation = (op) => (op.kind === 'write' ? held : undefined);
    const client = await connect(server);
    await client.greet();
    await client.go('disk', { structured: false });
    const cookie = client.send({ type: cmd.write, offset: 0, length: 4 }, Uint8Array.from([1, 2, 3, 4]));
    await waitFor('the write to reach the device', () => device.stats.inFlight === 1);
    const closing = server.server.close();
    // New connections are refused while closing.
    await waitFor('the listener to close', async () => {
      try {
        const late = await connectPipe({ port: server.port });
        await late.closed;
        return false;
      } catch {
        return true;
      }
    });
    release();
    expect(await client.readReply()).to.include({ cookie, errno: 0 });
    await client.pipe.closed;
    await closing;
    expect([...device.peek(0, 4)]).to.deep.equal([1, 2, 3, 4]);
    expect(server.provider.openHandles()).to.equal(0);
    expect(existsSync(server.socketPath)).to.equal(false);
    await server.stop();
  });

  it('close() gives up on a request that never finishes after the deadline', async () => {
    const server = await startNbdServer({ closeDeadlineMs: 200 });
    const device = server.provider.create('disk', MiB);
    device.beforeOperation = () => new Promise<void>(() => undefined); // never
    const client = await connect(server);
    await client.greet();
    await client.go('disk');
    client.send({ type: cmd.read, offset: 0, length: 1 });
    await waitFor('the read to reach the device', () => device.stats.inFlight === 1);
    await server.stop();
    await client.pipe.closed;
    expect(server.logs.some((l) => l.includes('still busy'))).to.equal(true);
  });

  it('refuses a Unix socket a live server holds, and replaces a stale socket file', async () => {
    const first = await startNbdServer();
    const second = new NbdServer({ provider: first.provider, log: () => undefined });
    const third = new NbdServer({ provider: first.provider, log: () => undefined });
    const dir = mkdtempSync(join(tmpdir(), 'cairn-nbd-stale-'));
    try {
      let failure: unknown;
      await second.listenUnix(first.socketPath).catch((err: unknown) => (failure = err));
      expect((failure as NodeJS.ErrnoException).code).to.equal('EADDRINUSE');
      // A process that bound a socket and died leaves the file behind with nobody listening.
      const stale = join(dir, 'stale.sock');
      await runOk('/usr/bin/python3', [
        '-c',
        `import socket; socket.socket(socket.AF_UNIX).bind(${JSON.stringify(stale)})`,
      ]);
      expect(existsSync(stale)).to.equal(true);
      await third.listenUnix(stale);
      const client = new RawNbdClient(await connectPipe({ path: stale }));
      await client.greet();
      expect((await client.option(opt.list)).at(-1)!.replyType).to.equal(rep.ack);
    } finally {
      await second.close();
      await third.close();
      await first.stop();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
