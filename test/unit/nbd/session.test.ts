// The per-connection state machine, driven without sockets: a raw client writes protocol bytes
// that reach the session whole, one byte at a time, or in seeded random cuts, and reads what the
// session sends. Devices are MemoryBlockDevices; their hooks hold or fail operations on cue.
import { expect } from 'chai';
import { AssertionError, nbdRequestsInFlightMax, StorageIoError } from '../../../src/core/index.js';
import { nbdLimits, nbdWire as wire } from '../../../src/nbd/index.js';
import { MemoryExportProvider } from '../../../src/sim/memory_device.js';
import { RawNbdClient, sessionPipe, type SessionPipe, type Split } from '../../harness/nbd.js';
import { waitFor } from '../../../src/dev/index.js';
import { seededBytes } from '../../support/bytes.js';

const { commandType: cmd, commandFlag: flag, nbdErrno: errno, optionCode: opt, optionReplyCode: rep } = wire;
const MiB = 1 << 20;
const decoder = new TextDecoder();

/** Holds every device operation until opened. */
class Gate {
  private release: (() => void) | null = null;
  private readonly opened: Promise<void>;
  constructor() {
    this.opened = new Promise((r) => (this.release = r));
  }
  wait(): Promise<void> {
    return this.opened;
  }
  open(): void {
    this.release?.();
  }
}

function setup(options: { split?: Split; readOnly?: boolean; exports?: (p: MemoryExportProvider) => void } = {}): {
  provider: MemoryExportProvider;
  pipe: SessionPipe;
  client: RawNbdClient;
} {
  const provider = new MemoryExportProvider();
  if (options.exports) options.exports(provider);
  else provider.create('disk', 4 * MiB, { description: 'test disk' });
  const pipe = sessionPipe(provider, {
    ...(options.split === undefined ? {} : { split: options.split }),
    ...(options.readOnly === undefined ? {} : { readOnly: options.readOnly }),
  });
  return { provider, pipe, client: new RawNbdClient(pipe) };
}

function bugs(pipe: SessionPipe): string[] {
  return pipe.logs.filter((l) => l.startsWith('BUG'));
}

const splits: [string, Split][] = [
  ['whole', 'whole'],
  ['byte by byte', 'bytes'],
  ['random cuts', { seed: 20261121 }],
];

for (const [splitName, split] of splits) {
  describe(`Session, input ${splitName}`, () => {
    it('negotiates with GO and serves write, read, trim, zeroes and block status', async () => {
      const { pipe, client, provider } = setup({ split });
      expect(await client.greet()).to.equal(wire.handshakeFlag.fixedNewstyle | wire.handshakeFlag.noZeroes);
      const { sizeBytes, flags, infos } = await client.go('disk', {
        infos: [wire.infoType.name, wire.infoType.description],
      });
      expect(sizeBytes).to.equal(4 * MiB);
      expect(flags & wire.transmissionFlag.canMultiConn).to.not.equal(0);
      expect(infos).to.deep.include({ kind: 'name', name: 'disk' });
      expect(infos).to.deep.include({ kind: 'description', description: 'test disk' });
      expect(infos).to.deep.include({
        kind: 'blockSize',
        minimumBytes: 1,
        preferredBytes: 4096,
        maximumBytes: 32 * MiB,
      });

      const data = seededBytes(70_000, 1);
      expect((await client.write(100_000, data)).errno).to.equal(0);
      const read = await client.read(100_000, data.length);
      expect(read.errno).to.equal(0);
      expect(Buffer.from(read.data!).equals(Buffer.from(data))).to.equal(true);

      expect((await client.call({ type: cmd.trim, offset: 102_400, length: 8192 })).errno).to.equal(0);
      expect(
        (await client.call({ type: cmd.writeZeroes, offset: 118_784, length: 4096, flags: flag.noHole })).errno,
      ).to.equal(0);
      const status = await client.call({ type: cmd.blockStatus, offset: 0, length: 256 * 1024 });
      expect(status.errno).to.equal(0);
      // Pages: [0, 96K) hole, [96K, 100K) data, [100K, 108K) trimmed hole, [108K, 116K) data,
      // [116K, 120K) zeroed but allocated, [120K, 168K) data, then holes.
      expect(status.descriptors).to.deep.equal([
        { length: 98_304, flags: 3 },
        { length: 4096, flags: 0 },
        { length: 8192, flags: 3 },
        { length: 8192, flags: 0 },
        { length: 4096, flags: 2 },
        { length: 49_152, flags: 0 },
        { length: 90_112, flags: 3 },
      ]);
      expect(
        provider
          .device('disk')
          .peek(102_400, 8192)
          .every((b) => b === 0),
      ).to.equal(true);

      client.disconnect();
      await pipe.closed;
      await pipe.session.finished;
      expect(provider.openHandles()).to.equal(0);
      expect(bugs(pipe)).to.deep.equal([]);
    });

    it('answers a bad READ in simple mode with an error and no payload, then goes on', async () => {
      const { client, pipe } = setup({ split });
      await client.greet();
      await client.go('disk', { structured: false });
      const bad = await client.read(4 * MiB - 10, 20);
      expect(bad).to.include({ errno: errno.einval, data: null, structured: false });
      const good = await client.read(0, 16);
      expect(good.errno).to.equal(0);
      expect(good.data!.length).to.equal(16);
      expect(pipe.logs.some((l) => l.includes('READ offset 4194294 length 20: EINVAL'))).to.equal(true);
    });

    it('consumes the payload of a refused WRITE so the next request stays in step', async () => {
      const { client } = setup({ split });
      await client.greet();
      await client.go('disk');
      const refused = await client.write(4 * MiB - 100, seededBytes(5000, 2));
      expect(refused).to.include({ errno: errno.enospc, structured: true });
      expect(refused.message).to.match(/beyond the export size/);
      expect((await client.write(0, Uint8Array.from([9, 9, 9]))).errno).to.equal(0);
      expect([...(await client.read(0, 3)).data!]).to.deep.equal([9, 9, 9]);
    });
  });
}

describe('Session handshake', () => {
  it('ends NBD_OPT_EXPORT_NAME with 124 zero bytes, or 10 bytes when NO_ZEROES was agreed', async () => {
    for (const noZeroes of [false, true]) {
      const { client, pipe } = setup();
      await client.greet(wire.clientFlag.fixedNewstyle | (noZeroes ? wire.clientFlag.noZeroes : 0));
      client.sendOption(opt.exportName, new TextEncoder().encode('disk'));
      const bytes = await pipe.read(noZeroes ? 10 : 134);
      const reply = wire.decodeExportNameReply(bytes);
      expect(reply.ok && reply.value.sizeBytes).to.equal(4 * MiB);
      // The transmission phase follows directly; simple replies, as nothing else was negotiated.
      expect((await client.write(0, Uint8Array.from([1]))).errno).to.equal(0);
      expect((await client.read(0, 1)).data![0]).to.equal(1);
    }
  });

  it('serves a client that does not set FIXED_NEWSTYLE', async () => {
    const { client, pipe } = setup();
    await client.greet(0);
    client.sendOption(opt.exportName, new TextEncoder().encode('disk'));
    expect((await pipe.read(134)).length).to.equal(134);
    expect((await client.read(0, 4)).errno).to.equal(0);
  });

  it('lists exports with descriptions', async () => {
    const { client } = setup({
      exports: (p) => {
        p.create('b', MiB, { description: 'second' });
        p.create('a', MiB);
      },
    });
    await client.greet();
    const replies = await client.option(opt.list);
    expect(replies.map((r) => r.replyType)).to.deep.equal([rep.server, rep.server, rep.ack]);
    const servers = replies.slice(0, 2).map((r) => wire.decodeServerReplyData(r.data));
    expect(servers.map((s) => (s.ok ? s.value : null))).to.deep.equal([
      { name: 'a', description: '' },
      { name: 'b', description: 'second' },
    ]);
    expect((await client.option(opt.list, new Uint8Array(1))).at(-1)!.replyType).to.equal(rep.errInvalid);
  });

  it('answers INFO from the export info without opening the export, and stays negotiating', async () => {
    const { client, provider } = setup();
    await client.greet();
    const replies = await client.option(opt.info, wire.encodeInfoRequest({ name: 'disk', requests: [] }));
    expect(replies.at(-1)!.replyType).to.equal(rep.ack);
    expect(replies.filter((r) => r.replyType === rep.info).length).to.equal(2); // export + block size
    const exported = replies
      .filter((r) => r.replyType === rep.info)
      .map((r) => wire.decodeInfoReply(r.data))
      .find((i) => i.ok && i.value.kind === 'export');
    expect(exported?.ok && exported.value.kind === 'export' ? exported.value.sizeBytes : null).to.equal(4 * MiB);
    // Opening a volume takes its write lock and bumps its epoch: asking must do neither.
    expect(provider.opens, 'INFO opened the export').to.equal(0);
    // Still negotiating: another option works.
    expect((await client.option(opt.list)).at(-1)!.replyType).to.equal(rep.ack);
    const missing = await client.option(opt.info, wire.encodeInfoRequest({ name: 'nope', requests: [] }));
    expect(missing.map((r) => r.replyType)).to.deep.equal([rep.errUnknown]);
  });

  it('lists exports and answers an INFO for each, as nbdinfo --list does, opening none', async () => {
    const { client, provider } = setup({
      exports: (p) => {
        for (let i = 0; i < 50; i++) p.create(`v${i}`, (i + 1) * MiB);
        p.create('ro', MiB, { readOnly: true });
      },
    });
    await client.greet();
    const listed = await client.option(opt.list);
    const names = listed
      .filter((r) => r.replyType === rep.server)
      .map((r) => wire.decodeServerReplyData(r.data))
      .map((s) => (s.ok ? s.value.name : ''));
    expect(names.length).to.equal(51);
    for (const name of names) {
      const replies = await client.option(opt.info, wire.encodeInfoRequest({ name, requests: [wire.infoType.name] }));
      expect(replies.at(-1)!.replyType, name).to.equal(rep.ack);
      const infos = replies
        .filter((r) => r.replyType === rep.info)
        .map((r) => wire.decodeInfoReply(r.data))
        .flatMap((i) => (i.ok ? [i.value] : []));
      expect(infos, name).to.deep.include({ kind: 'name', name });
      const exported = infos.find((i) => i.kind === 'export');
      expect(exported?.kind === 'export' ? exported.sizeBytes : null).to.equal(
        name === 'ro' ? MiB : (Number(name.slice(1)) + 1) * MiB,
      );
      const readOnly = exported?.kind === 'export' && (exported.flags & wire.transmissionFlag.readOnly) !== 0;
      expect(readOnly, `${name} read-only flag`).to.equal(name === 'ro');
    }
    expect(provider.opens, 'listing opened exports').to.equal(0);
    // GO still opens.
    await client.go('v3');
    expect(provider.opens).to.equal(1);
  });

  it('maps the default name "" to the only export, and to nothing when there are two', async () => {
    const one = setup();
    await one.client.greet();
    const go = await one.client.go('', { structured: false });
    expect(go.sizeBytes).to.equal(4 * MiB);
    expect(go.infos).to.deep.include({ kind: 'name', name: 'disk' });

    const two = setup({
      exports: (p) => {
        p.create('a', MiB);
        p.create('b', MiB);
      },
    });
    await two.client.greet();
    const refused = await two.client.option(opt.go, wire.encodeInfoRequest({ name: '', requests: [] }));
    expect(refused.map((r) => r.replyType)).to.deep.equal([rep.errUnknown]);
    expect(decoder.decode(refused[0]!.data)).to.match(/no export ""/);
  });

  it('answers unknown options and STARTTLS with ERR_UNSUP and keeps negotiating', async () => {
    const { client } = setup();
    await client.greet();
    for (const option of [opt.startTls, opt.peekExport, opt.extendedHeaders, 12345]) {
      const replies = await client.option(option, Uint8Array.from([1, 2, 3]));
      expect(replies.map((r) => [r.option, r.replyType])).to.deep.equal([[option, rep.errUnsup]]);
    }
    expect((await client.go('disk')).sizeBytes).to.equal(4 * MiB);
  });

  it('discards an oversized option unread, answers ERR_TOO_BIG and goes on', async () => {
    const { client, pipe } = setup();
    await client.greet();
    const replies = await client.option(opt.info, new Uint8Array(100_000));
    expect(replies.map((r) => r.replyType)).to.deep.equal([rep.errTooBig]);
    expect((await client.option(opt.list)).at(-1)!.replyType).to.equal(rep.ack);
    expect(pipe.isClosed()).to.equal(false);
  });

  it('disconnects an option too large to be worth skipping, and an oversized EXPORT_NAME', async () => {
    for (const option of [opt.info, opt.exportName]) {
      const { client, pipe } = setup();
      await client.greet();
      // Only the header, claiming a length: the session must decide before any data arrives.
      const header = wire.encodeOption(option);
      new DataView(header.buffer).setUint32(12, option === opt.exportName ? 5000 : nbdLimits.optionDiscardBytesMax + 1);
      pipe.write(header);
      await pipe.closed;
      expect(pipe.logs.join('\n')).to.match(/protocol violation/);
    }
  });

  it('refuses malformed option data with ERR_INVALID and keeps negotiating', async () => {
    const { client } = setup();
    await client.greet();
    const bad = await client.option(opt.go, Uint8Array.from([0, 0, 0, 50, 0, 0]));
    expect(bad.map((r) => r.replyType)).to.deep.equal([rep.errInvalid]);
    expect((await client.option(opt.structuredReply, Uint8Array.from([1])))[0]!.replyType).to.equal(rep.errInvalid);
    const meta = await client.option(opt.listMetaContext, Uint8Array.from([0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff]));
    expect(meta.map((r) => r.replyType)).to.deep.equal([rep.errInvalid]);
    expect((await client.go('disk')).sizeBytes).to.equal(4 * MiB);
  });

  it('lists base:allocation for the queries that match it', async () => {
    const { client } = setup();
    await client.greet();
    const list = async (queries: string[]): Promise<string[]> => {
      const replies = await client.option(
        opt.listMetaContext,
        wire.encodeMetaContextRequest({ exportName: 'disk', queries }),
      );
      expect(replies.at(-1)!.replyType).to.equal(rep.ack);
      return replies
        .filter((r) => r.replyType === rep.metaContext)
        .map((r) => {
          const d = wire.decodeMetaContextReplyData(r.data);
          return d.ok ? d.value.name : '?';
        });
    };
    expect(await list([])).to.deep.equal(['base:allocation']);
    expect(await list(['base:'])).to.deep.equal(['base:allocation']);
    expect(await list(['base:allocation', 'x-other:thing'])).to.deep.equal(['base:allocation']);
    expect(await list(['qemu:dirty-bitmap:a', 'base:nothing'])).to.deep.equal([]);
  });

  it('refuses SET_META_CONTEXT before structured replies, and BLOCK_STATUS without a context', async () => {
    const { client } = setup();
    await client.greet();
    const set = await client.option(
      opt.setMetaContext,
      wire.encodeMetaContextRequest({ exportName: 'disk', queries: ['base:allocation'] }),
    );
    expect(set.map((r) => r.replyType)).to.deep.equal([rep.errInvalid]);
    await client.go('disk', { allocation: false });
    const status = await client.call({ type: cmd.blockStatus, offset: 0, length: 4096 });
    expect(status.errno).to.equal(errno.einval);
  });

  it('needs SET_META_CONTEXT for the export that GO names', async () => {
    const { client } = setup({
      exports: (p) => {
        p.create('a', MiB);
        p.create('b', MiB);
      },
    });
    await client.greet();
    await client.option(opt.structuredReply);
    await client.option(
      opt.setMetaContext,
      wire.encodeMetaContextRequest({ exportName: 'a', queries: ['base:allocation'] }),
    );
    client.structured = true;
    await client.go('b', { structured: false });
    expect((await client.call({ type: cmd.blockStatus, offset: 0, length: 4096 })).errno).to.equal(errno.einval);
  });

  it('acknowledges ABORT and closes', async () => {
    const { client, pipe } = setup();
    await client.greet();
    expect((await client.option(opt.abort)).map((r) => r.replyType)).to.deep.equal([rep.ack]);
    await pipe.closed;
  });

  const garbage: [string, (client: RawNbdClient, pipe: SessionPipe) => Promise<void>][] = [
    ['unknown client flags', async (client) => void (await client.greet(0x80))],
    [
      'a wrong option magic',
      async (client, pipe) => {
        await client.greet();
        pipe.write(new Uint8Array(16).fill(0x41));
      },
    ],
    [
      'an HTTP request instead of client flags',
      async (_client, pipe) => {
        await pipe.read(wire.serverGreetingBytes);
        pipe.write(new TextEncoder().encode('GET / HTTP/1.1\r\nHost: x\r\n\r\n'));
      },
    ],
  ];
  for (const [what, send] of garbage) {
    it(`disconnects on ${what}`, async () => {
      const { client, pipe } = setup();
      await send(client, pipe);
      await pipe.closed;
      expect(pipe.logs.join('\n')).to.match(/protocol violation/);
      expect(bugs(pipe)).to.deep.equal([]);
    });
  }

  it('disconnects when NBD_OPT_EXPORT_NAME names no export', async () => {
    const { client, pipe } = setup();
    await client.greet();
    client.sendOption(opt.exportName, new TextEncoder().encode('nope'));
    await pipe.closed;
    expect(pipe.logs.join('\n')).to.match(/no export "nope"/);
  });

  it('answers GO for a missing export with ERR_UNKNOWN and serves the next GO', async () => {
    const { client } = setup();
    await client.greet();
    const replies = await client.option(opt.go, wire.encodeInfoRequest({ name: 'missing', requests: [] }));
    expect(replies.map((r) => r.replyType)).to.deep.equal([rep.errUnknown]);
    expect((await client.go('disk')).sizeBytes).to.equal(4 * MiB);
  });
});

describe('Session transmission', () => {
  it('sends holes as OFFSET_HOLE chunks, and one OFFSET_DATA chunk under DF', async () => {
    const { client } = setup();
    await client.greet();
    await client.go('disk');
    await client.write(65_536, seededBytes(4096, 3));
    const sparse = await client.read(0, 256 * 1024);
    expect(sparse.chunkTypes).to.deep.equal([
      wire.chunkType.offsetHole,
      wire.chunkType.offsetData,
      wire.chunkType.offsetHole,
    ]);
    expect(Buffer.from(sparse.data!.subarray(65_536, 69_632)).equals(Buffer.from(seededBytes(4096, 3)))).to.equal(true);
    expect(sparse.data!.subarray(0, 65_536).every((b) => b === 0)).to.equal(true);
    const whole = await client.read(0, 256 * 1024, flag.df);
    expect(whole.chunkTypes).to.deep.equal([wire.chunkType.offsetData]);
    expect(Buffer.from(whole.data!).equals(Buffer.from(sparse.data!))).to.equal(true);
    const small = await client.read(65_536, 100);
    expect(small.chunkTypes).to.deep.equal([wire.chunkType.offsetData]);
    const empty = await client.read(0, 0);
    expect(empty).to.include({ errno: 0 });
    expect(empty.chunkTypes).to.deep.equal([wire.chunkType.none]);
  });

  it('answers an out-of-range structured READ with one error chunk', async () => {
    const { client } = setup();
    await client.greet();
    await client.go('disk');
    const reply = await client.read(4 * MiB, 1);
    expect(reply.chunkTypes).to.deep.equal([wire.chunkType.error]);
    expect(reply.errno).to.equal(errno.einval);
  });

  it('answers unknown commands and stray flags with EINVAL and goes on', async () => {
    const { client } = setup();
    await client.greet();
    await client.go('disk', { structured: false });
    expect((await client.call({ type: 99, offset: 0, length: 0 })).errno).to.equal(errno.einval);
    expect((await client.call({ type: cmd.read, offset: 0, length: 1, flags: flag.reqOne })).errno).to.equal(
      errno.einval,
    );
    expect((await client.call({ type: cmd.read, offset: 2n ** 63n, length: 1 })).errno).to.equal(errno.einval);
    expect((await client.call({ type: cmd.write, offset: 2n ** 63n, length: 0 })).errno).to.equal(errno.enospc);
    expect((await client.read(0, 1)).errno).to.equal(0);
  });

  it('honours REQ_ONE and reports one extent no longer than asked', async () => {
    const { client } = setup();
    await client.greet();
    await client.go('disk');
    await client.write(8192, new Uint8Array(4096).fill(1));
    const one = await client.call({ type: cmd.blockStatus, offset: 0, length: 6000, flags: flag.reqOne });
    expect(one.descriptors).to.deep.equal([{ length: 6000, flags: 3 }]);
    const all = await client.call({ type: cmd.blockStatus, offset: 4096, length: 12288 });
    expect(all.descriptors).to.deep.equal([
      { length: 4096, flags: 3 },
      { length: 4096, flags: 0 },
      { length: 4096, flags: 3 },
    ]);
  });

  it('passes FUA and FLUSH to the device: only durable writes survive a crash', async () => {
    const { client, provider } = setup();
    await client.greet();
    await client.go('disk');
    const device = provider.device('disk');
    await client.write(0, new Uint8Array(4096).fill(1));
    await client.write(4096, new Uint8Array(4096).fill(2), flag.fua);
    device.crash();
    expect(device.peek(0, 1)[0]).to.equal(0);
    expect(device.peek(4096, 1)[0]).to.equal(2);
    await client.write(0, new Uint8Array(4096).fill(3));
    expect((await client.call({ type: cmd.flush })).errno).to.equal(0);
    device.crash();
    expect(device.peek(0, 1)[0]).to.equal(3);
    expect(device.stats.fuaWrites).to.equal(1);
  });

  it('refuses writes, trims and zeroes with EPERM when the server is read-only', async () => {
    const { client, provider } = setup({ readOnly: true });
    await client.greet();
    const { flags } = await client.go('disk', { structured: false });
    expect(flags & wire.transmissionFlag.readOnly).to.not.equal(0);
    expect((await client.write(0, Uint8Array.from([1, 2]))).errno).to.equal(errno.eperm);
    expect((await client.call({ type: cmd.trim, offset: 0, length: 1 })).errno).to.equal(errno.eperm);
    expect((await client.call({ type: cmd.writeZeroes, offset: 0, length: 1 })).errno).to.equal(errno.eperm);
    expect((await client.read(0, 2)).errno).to.equal(0);
    expect(provider.device('disk').stats.writes).to.equal(0);
  });

  it('replies out of order when an earlier request is slower', async () => {
    const { client, provider } = setup();
    await client.greet();
    await client.go('disk', { structured: false });
    const gate = new Gate();
    provider.device('disk').beforeOperation = (op) => (op.offset === 0 ? gate.wait() : undefined);
    const slow = client.send({ type: cmd.read, offset: 0, length: 512 });
    const fast = client.send({ type: cmd.read, offset: 4096, length: 512 });
    expect((await client.readReply()).cookie).to.equal(fast);
    gate.open();
    expect((await client.readReply()).cookie).to.equal(slow);
  });

  it(`stops reading at ${nbdRequestsInFlightMax} requests in flight and resumes as replies go out`, async () => {
    const { client, provider, pipe } = setup({ split: { seed: 5 } });
    await client.greet();
    await client.go('disk');
    const device = provider.device('disk');
    const gate = new Gate();
    device.beforeOperation = () => gate.wait();
    const count = 3 * nbdRequestsInFlightMax;
    const cookies = new Set<bigint>();
    for (let i = 0; i < count; i++)
      cookies.add(client.send({ type: cmd.write, offset: i * 4096, length: 4096 }, seededBytes(4096, i + 1)));
    await waitFor('the device to hold a full window', () => device.stats.inFlight === nbdRequestsInFlightMax);
    expect(pipe.inputPaused()).to.equal(true);
    expect(pipe.pendingBytes()).to.be.greaterThan(0);
    expect(pipe.session.inFlightCount).to.equal(nbdRequestsInFlightMax);
    gate.open();
    for (let i = 0; i < count; i++) {
      const reply = await client.readReply();
      expect(reply.errno).to.equal(0);
      expect(cookies.delete(reply.cookie)).to.equal(true);
    }
    expect(device.stats.inFlightHighWater).to.equal(nbdRequestsInFlightMax);
    expect(Buffer.from(device.peek(5 * 4096, 4096)).equals(Buffer.from(seededBytes(4096, 6)))).to.equal(true);
  });

  it(`stops reading when requests in flight hold ${nbdLimits.sessionInFlightBytesMax / MiB} MiB, not a whole window of 32 MiB READs`, async () => {
    const { client, provider, pipe } = setup({ exports: (p) => p.create('disk', 64 * MiB) });
    await client.greet();
    await client.go('disk');
    const device = provider.device('disk');
    const gate = new Gate();
    device.beforeOperation = () => gate.wait();
    // Without the byte budget all of these would run at once (the count limit is 64).
    const count = 6;
    const length = 32 * MiB;
    for (let i = 0; i < count; i++) client.send({ type: cmd.read, flags: flag.df, offset: 0, length });
    const window = nbdLimits.sessionInFlightBytesMax / length;
    await waitFor('the session to pause its input', () => pipe.inputPaused());
    expect(device.stats.inFlight).to.equal(window);
    expect(pipe.session.inFlightCount).to.equal(window);
    gate.open();
    for (let i = 0; i < count; i++) expect((await client.readReply()).errno).to.equal(0);
    expect(device.stats.inFlightHighWater).to.equal(window);
  });

  it('answers a bug inside the device with EIO, logs it loudly and keeps serving', async () => {
    const { client, provider, pipe } = setup();
    await client.greet();
    await client.go('disk', { structured: false });
    provider.device('disk').beforeOperation = (op) => {
      if (op.kind === 'read') throw new AssertionError('extent map is inconsistent');
    };
    expect((await client.read(0, 512)).errno).to.equal(errno.eio);
    expect(bugs(pipe).length).to.equal(1);
    expect(bugs(pipe)[0]).to.match(
      /^BUG nbd test: read offset 0 length 512 on export "disk": AssertionError: extent map/,
    );
    expect((await client.write(0, Uint8Array.from([1]))).errno).to.equal(0);
  });

  it('answers an operating failure with its errno and a message, without calling it a bug', async () => {
    const { client, provider, pipe } = setup();
    await client.greet();
    await client.go('disk');
    provider.device('disk').beforeOperation = () => {
      throw new StorageIoError('Cannot read shard 3 of extent 17 from node "b-1": timeout');
    };
    const reply = await client.read(0, 512);
    expect(reply).to.include({
      errno: errno.eio,
      message: 'Cannot read shard 3 of extent 17 from node "b-1": timeout',
    });
    expect(bugs(pipe)).to.deep.equal([]);
    expect(pipe.logs.some((l) => l.includes('EIO: Cannot read shard 3'))).to.equal(true);
  });

  it('finishes requests in flight after DISC, then closes and releases the export', async () => {
    const { client, provider, pipe } = setup();
    await client.greet();
    await client.go('disk', { structured: false });
    const gate = new Gate();
    provider.device('disk').beforeOperation = () => gate.wait();
    const cookie = client.send({ type: cmd.write, offset: 0, length: 3 }, Uint8Array.from([4, 5, 6]));
    client.disconnect();
    expect(pipe.isClosed()).to.equal(false);
    gate.open();
    expect((await client.readReply()).cookie).to.equal(cookie);
    await pipe.closed;
    await pipe.session.finished;
    expect(provider.openHandles()).to.equal(0);
    expect([...provider.device('disk').peek(0, 3)]).to.deep.equal([4, 5, 6]);
  });

  it('on shutdown lets requests in flight finish, answers new ones ESHUTDOWN, then closes', async () => {
    const { client, provider, pipe } = setup();
    await client.greet();
    await client.go('disk', { structured: false });
    const gate = new Gate();
    provider.device('disk').beforeOperation = () => gate.wait();
    const inFlight = client.send({ type: cmd.write, offset: 0, length: 1 }, Uint8Array.from([7]));
    await waitFor('the write to reach the device', () => provider.device('disk').stats.inFlight === 1);
    pipe.session.shutdown();
    const late = client.send({ type: cmd.read, offset: 0, length: 1 });
    const lateReply = await client.readReply();
    expect(lateReply).to.include({ cookie: late, errno: errno.eshutdown });
    gate.open();
    expect(await client.readReply()).to.include({ cookie: inFlight, errno: 0 });
    await pipe.closed;
    expect(provider.device('disk').peek(0, 1)[0]).to.equal(7);
  });
});
