/**
 * Attaching a volume, with real processes (dev cluster, `cairnctl nbd serve`, nbdsh, nbdinfo):
 * waiting for a dead writer's lease (--lock-wait), read-only attaches beside a writer, and the
 * volume's durability setting reaching the engine (--durable-shards).
 */
import { expect } from 'chai';
import { waitFor } from '../../src/dev/index.js';
import { nbdshProcess, runClient, useStack, type ClientProcess } from '../harness/stack.js';

/** nbdsh: write A.pattern at A.offset, flush, say so, then hold the connection until stdin closes. */
const writeAndHold = `
h.pwrite(bytes([A["byte"]]) * A["length"], A["offset"])
h.flush()
print("flushed", flush=True)
sys.stdin.readline()
`;

/** nbdsh: read once, say so, wait for a line on stdin, then read again and print the outcome. */
const readTwice = `
data = h.pread(A["length"], A["offset"])
print("first read", data[0], flush=True)
sys.stdin.readline()
try:
    h.pread(A["length"], A["offset"])
    print("second read ok", flush=True)
except Exception as e:
    print("second read failed:", e, flush=True)
`;

describe('frontend attach: lock wait, read-only beside a writer, durable shards', function () {
  const stack = useStack({ profile: '4+2', extentSize: '1MiB' });
  const clients: ClientProcess[] = [];
  afterEach(() => {
    for (const c of clients.splice(0)) if (c.running()) c.kill('SIGKILL');
  });

  it('serves a volume whose writer was SIGKILLed once its lease expires, with --lock-wait and no takeover', async function () {
    const s = stack();
    await s.createVolume('lw', '16MiB');
    const a = await s.startFrontend();
    const writer = nbdshProcess(writeAndHold, { byte: 0x5a, length: 65536, offset: 1 << 20 }, { uri: a.uri('lw') });
    clients.push(writer);
    await writer.waitForOutput(/flushed/);
    expect((await s.lockOf('lw'))?.owner, 'frontend A holds the lock').to.match(new RegExp(`/${a.pid}$`));
    await a.kill(); // its lease (10 s) still holds the lock

    const b = await s.startFrontend({ lockWaitMs: 20_000 });
    const started = Date.now();
    const reader = await runClient(
      '/usr/bin/nbdsh',
      ['-u', b.uri('lw'), '-c', 'print(h.pread(65536, 1 << 20) == bytes([0x5a]) * 65536)'],
      { deadlineMs: 40_000 },
    );
    expect(reader.code, `${reader.stderr}\nfrontend B log: ${b.logText().slice(-1500)}`).to.equal(0);
    expect(reader.stdout.trim()).to.equal('True');
    expect(b.logText()).to.match(/waiting up to 20000 ms for its lease/);
    expect(Date.now() - started, 'it waited for the lease rather than taking over').to.be.greaterThan(1000);
    await b.stop();
  });

  it('refuses a read-only attach while a writer holds the volume, with a clear error', async function () {
    const s = stack();
    await s.createVolume('ro', '16MiB');
    const w = await s.startFrontend();
    const writer = nbdshProcess(writeAndHold, { byte: 0x11, length: 4096, offset: 0 }, { uri: w.uri('ro') });
    clients.push(writer);
    await writer.waitForOutput(/flushed/);
    const r = await s.startFrontend({ readOnly: true, lockWaitMs: 1000 });
    const info = await runClient('/usr/bin/nbdinfo', ['--size', r.uri('ro')], { deadlineMs: 20_000 });
    expect(info.code, info.stdout).to.not.equal(0);
    expect(r.logText()).to.match(/Cannot attach volume \\?"ro\\?" read-only: it is attached for writing by/);
    writer.endInput();
    await writer.exit();
    await r.stop();
    await w.stop();
  });

  it('fails the reads of a read-only view once a writer attaches the volume', async function () {
    const s = stack();
    await s.createVolume('late', '16MiB');
    const r = await s.startFrontend({ readOnly: true });
    const reader = nbdshProcess(readTwice, { length: 4096, offset: 0 }, { uri: r.uri('late') });
    clients.push(reader);
    await reader.waitForOutput(/first read 0/);
    const w = await s.startFrontend();
    const writer = nbdshProcess(writeAndHold, { byte: 0x77, length: 4096, offset: 0 }, { uri: w.uri('late') });
    clients.push(writer);
    await writer.waitForOutput(/flushed/);
    await r.waitForLog(/was attached for writing elsewhere after this read-only attach/);
    reader.write('go\n');
    const out = await reader.waitForOutput(/second read (ok|failed.*)/);
    expect(out[0]).to.match(/second read failed/);
    writer.endInput();
    await writer.exit();
    await Promise.all([r.stop(), w.stop()]);
  });

  it('keeps --durable-shards in etcd, shows it in volume info, and the engine honours it', async function () {
    const s = stack();
    await s.cairnctl('create a 4+2 volume needing 5 shards', [
      'volume',
      'create',
      'dur',
      '16MiB',
      '--durable-shards',
      '5',
    ]);
    const info = JSON.parse((await s.cairnctl('volume info', ['volume', 'info', 'dur', '--json'])).stdout) as {
      durableShardsMin?: number;
    };
    expect(info.durableShardsMin).to.equal(5);
    // With one of six nodes dead, only five shards of each extent can be stored: a flush of this
    // volume succeeds (5 are enough); at the default (all 6) it would fail.
    await s.killNode('c-2');
    const fe = await s.startFrontend();
    const started = Date.now();
    const run = await runClient(
      '/usr/bin/nbdsh',
      ['-u', fe.uri('dur'), '-c', 'h.pwrite(b"\\x42" * 65536, 0); h.flush(); print("ok")'],
      { deadlineMs: 60_000 },
    );
    expect(run.code, `${run.stderr}\nfrontend log: ${fe.logText().slice(-2000)}`).to.equal(0);
    expect(Date.now() - started, 'the flush did not need the retry window').to.be.lessThan(9_000);
    await waitFor('the frontend to log nothing fenced', () => !/fenced/.test(fe.logText()), 1000);
    await fe.stop();
  });
});
