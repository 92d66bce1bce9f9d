/**
 * Frontend crashes and fencing through the whole stack, with real nbdsh clients:
 * - a frontend SIGKILLed after a FLUSH (and during another): a new frontend takes the volume
 *   over (--force-takeover, new epoch) and every flushed or FUA-written byte is there; bytes
 *   written after the last completed FLUSH are, per 4 KiB block, old or new, never garbage.
 * - two live frontends: B takes the volume over from A while A is attached with unflushed
 *   writes; A's next FLUSH and WRITE must fail with an NBD error, B sees only what A flushed
 *   before the takeover, and A leaving afterwards must not disturb B's lock.
 *
 * Test frontends run with a long --flush-age, so dirty data stays dirty until a client flushes.
 */
import { expect } from 'chai';
import { readFileSync, writeFileSync } from 'node:fs';
import {
  describeResult,
  expectSameBytes,
  nbdsh,
  nbdshProcess,
  runClient,
  runOk,
  seededBytes,
  useStack,
} from '../harness/stack.js';

const MiB = 1024 * 1024;
const blockBytes = 4096;
const noBackgroundFlushMs = 600_000;

/** Epoch from a frontend log line "attached volume NAME for writing (epoch N)". */
function attachEpochs(log: string, volume: string): number[] {
  return [...log.matchAll(new RegExp(`attached volume ${volume} for writing \\(epoch (\\d+)\\)`, 'g'))].map((m) =>
    Number(m[1]),
  );
}

describe('Full stack: frontend crash and fencing between two frontends', function () {
  this.timeout(120_000);
  const stack = useStack();

  it('after a SIGKILL of the frontend, a takeover frontend reads every flushed or FUA-written byte; later writes are old or new per 4 KiB block', async () => {
    const s = stack();
    const volumeBytes = 64 * MiB;
    await s.createVolume('crash', '64MiB', { extentSize: '1MiB' });
    const a = seededBytes('crash-old', volumeBytes);
    const b = seededBytes('crash-new', volumeBytes);
    writeFileSync(s.path('crash.a'), a);
    writeFileSync(s.path('crash.b'), b);

    const f1 = await s.startFrontend({ flushAgeMs: noBackgroundFlushMs });
    // A frontend started now, without --force-takeover, must be refused the volume while f1's
    // lock lease lives (10 s), also after f1 died.
    // --lock-wait 0: refuse at once instead of waiting for the dead frontend's lease.
    const plain = await s.startFrontend({ flushAgeMs: noBackgroundFlushMs, lockWaitMs: 0 });
    const writer = nbdshProcess(
      `
a = open(A["a"], "rb").read(); b = open(A["b"], "rb").read()
M = 1 << 20
for off in range(0, 24 * M, 4 * M): h.pwrite(a[off:off + 4 * M], off)
h.flush()
print("FLUSHED", flush=True)
# FUA writes: durable when acknowledged, without a FLUSH. A whole extent, and 4 KiB of another.
h.pwrite(b[48 * M:49 * M], 48 * M, nbd.CMD_FLAG_FUA)
h.pwrite(b[50 * M + 4096:50 * M + 8192], 50 * M + 4096, nbd.CMD_FLAG_FUA)
# Not flushed: overwrite [8, 16) MiB, trim [16, 17) MiB, write [24, 32) MiB, start a flush, write
# [32, 40) MiB and 4 KiB pieces in [40, 44) MiB while it runs.
for off in range(8 * M, 16 * M, M): h.pwrite(b[off:off + M], off)
h.trim(M, 16 * M)
for off in range(24 * M, 32 * M, M): h.pwrite(b[off:off + M], off)
cookie = h.aio_flush()
for off in range(32 * M, 40 * M, M): h.pwrite(b[off:off + M], off)
for off in range(40 * M, 44 * M, 64 * 1024): h.pwrite(b[off:off + 4096], off)
print("WRITTEN", flush=True)
sys.stdin.readline()
`,
      { a: s.path('crash.a'), b: s.path('crash.b') },
      { uri: f1.uri('crash') },
    );
    await writer.waitForOutput(/WRITTEN/);
    const lock = await s.lockOf('crash');
    expect(lock?.owner, 'the volume lock before the crash').to.match(new RegExp(`/${f1.pid}$`));

    await f1.kill();
    const killedAt = Date.now();
    writer.endInput();
    await writer.exit();

    const refused = await runClient('/usr/bin/nbdinfo', [plain.uri('crash')], { deadlineMs: 20_000 });
    if (Date.now() - killedAt < 8_000) {
      expect(
        refused.code,
        `a frontend without --force-takeover must be refused while the dead one's lease lives: ${describeResult(refused)}`,
      ).to.not.equal(0);
      expect(plain.logText()).to.match(/attached by|locked|force-takeover/i);
    }
    await plain.stop();

    const f2 = await s.startFrontend({ forceTakeover: true, flushAgeMs: noBackgroundFlushMs });
    await runOk('nbdcopy the volume from the takeover frontend', '/usr/bin/nbdcopy', [
      f2.uri('crash'),
      s.path('crash.out'),
    ]);
    const epochs = attachEpochs(f2.logText(), 'crash');
    expect(
      epochs,
      `the takeover frontend's attach epoch (the dead one had ${lock?.epoch}); log: ${f2.logText()}`,
    ).to.deep.equal([lock!.epoch + 1]);

    const out = readFileSync(s.path('crash.out'));
    expect(out.length).to.equal(volumeBytes);
    const zero = Buffer.alloc(blockBytes);
    /** Which contents each 4 KiB block may have. */
    const allowed = (at: number): ('old' | 'new' | 'zero')[] => {
      if (at < 8 * MiB) return ['old']; // flushed, never rewritten
      if (at < 16 * MiB) return ['old', 'new']; // flushed, then overwritten without a flush
      if (at < 17 * MiB) return ['old', 'zero']; // flushed, then trimmed without a flush
      if (at < 24 * MiB) return ['old'];
      if (at < 44 * MiB) return ['zero', 'new']; // never flushed (or caught by the flush in flight)
      if (at >= 48 * MiB && at < 49 * MiB) return ['new']; // FUA
      if (at === 50 * MiB + 4096) return ['new']; // FUA, 4 KiB inside an extent
      return ['zero'];
    };
    const counts = { old: 0, new: 0, zero: 0 };
    const bad: string[] = [];
    for (let at = 0; at < volumeBytes; at += blockBytes) {
      const got = out.subarray(at, at + blockBytes);
      const is =
        Buffer.compare(got, a.subarray(at, at + blockBytes)) === 0
          ? 'old'
          : Buffer.compare(got, b.subarray(at, at + blockBytes)) === 0
            ? 'new'
            : Buffer.compare(got, zero) === 0
              ? 'zero'
              : 'garbage';
      if (is !== 'garbage') counts[is] += 1;
      if (is === 'garbage' || !allowed(at).includes(is))
        bad.push(`block at ${at} (extent ${(at / MiB) | 0}) reads ${is}, allowed ${allowed(at).join('/')}`);
    }
    expect(
      bad.slice(0, 20),
      `${bad.length} blocks wrong after crash and takeover (seen: ${JSON.stringify(counts)}); flushed and FUA blocks must be there, unflushed ones old or new, never garbage`,
    ).to.deep.equal([]);

    // The takeover frontend holds a working lock: it can write and flush.
    await nbdsh(
      'write and flush through the takeover frontend',
      'h.pwrite(b"\\x42" * 4096, 60 << 20)\nh.flush()\n',
      {},
      { uri: f2.uri('crash') },
    );
    const check = await nbdsh(
      'read it back',
      'print(h.pread(4096, 60 << 20) == b"\\x42" * 4096)',
      {},
      { uri: f2.uri('crash') },
    );
    expect(check.trim(), 'read back of a write through the takeover frontend').to.equal('True');
    await f2.stop();
  });

  it('fences frontend A when B takes the volume over: A cannot flush or write, B sees only what A flushed before', async () => {
    const s = stack();
    const volumeBytes = 16 * MiB;
    await s.createVolume('fence', '16MiB', { extentSize: '1MiB' });
    const x = seededBytes('fence-x', volumeBytes);
    const y = seededBytes('fence-y', volumeBytes);
    writeFileSync(s.path('fence.x'), x);
    writeFileSync(s.path('fence.y'), y);

    const fa = await s.startFrontend({ flushAgeMs: noBackgroundFlushMs });
    const clientA = nbdshProcess(
      `
x = open(A["x"], "rb").read(); y = open(A["y"], "rb").read()
M = 1 << 20
h.pwrite(x[0:4 * M], 0)
h.flush()
h.pwrite(y[4 * M:8 * M], 4 * M)   # not flushed
h.pwrite(y[0:M], 0)               # not flushed, over flushed data
print("WRITTEN", flush=True)
sys.stdin.readline()
def attempt(name, fn):
    try:
        fn(); print(json.dumps({"op": name, "ok": True}), flush=True)
    except nbd.Error as e:
        print(json.dumps({"op": name, "ok": False, "errno": e.errno, "message": e.string}), flush=True)
attempt("flush", h.flush)
attempt("write", lambda: h.pwrite(y[8 * M:9 * M], 8 * M))
attempt("flush again", h.flush)
print("DONE", flush=True)
sys.stdin.readline()
`,
      { x: s.path('fence.x'), y: s.path('fence.y') },
      { uri: fa.uri('fence') },
    );
    await clientA.waitForOutput(/WRITTEN/);
    const lockA = await s.lockOf('fence');
    expect(lockA?.owner, 'lock holder while A is attached').to.match(new RegExp(`/${fa.pid}$`));

    const fb = await s.startFrontend({ forceTakeover: true, flushAgeMs: noBackgroundFlushMs });
    const clientB = nbdshProcess(
      `
print("ATTACHED", flush=True)
for line in sys.stdin:
    cmd = line.strip()
    if cmd == "read":
        open(A["out"], "wb").write(h.pread(10 << 20, 0)); print("READ", flush=True)
    elif cmd == "write":
        h.pwrite(b"\\x5b" * (1 << 20), 9 << 20); h.flush(); print("WROTE", flush=True)
    elif cmd == "quit":
        break
`,
      { out: s.path('fence.b-read') },
      { uri: fb.uri('fence') },
    );
    await clientB.waitForOutput(/ATTACHED/);
    const lockB = await s.lockOf('fence');
    expect(lockB?.owner, 'lock holder after B took over').to.match(new RegExp(`/${fb.pid}$`));
    expect(lockB?.epoch, `B's epoch (A had ${lockA?.epoch})`).to.equal(lockA!.epoch + 1);

    // A, fenced, tries to flush its unflushed writes and to write more.
    clientA.write('go\n');
    await clientA.waitForOutput(/DONE/);
    const attempts = clientA
      .stdout()
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .map((l) => JSON.parse(l) as { op: string; ok: boolean; errno?: string; message?: string });
    expect(
      attempts.map((r) => `${r.op}: ${r.ok ? 'ok' : `error ${r.errno}`}`),
      `A's requests after the takeover must fail (an NBD error); A's log: ${fa.logText().slice(-1500)}`,
    ).to.deep.equal(['flush: error EIO', 'write: error EIO', 'flush again: error EIO']);
    expect(fa.logText(), "A's log should say it was fenced").to.match(/fenced/);

    // B sees what A flushed before the takeover, and nothing A wrote after its last flush.
    clientB.write('read\n');
    await clientB.waitForOutput(/READ/);
    const expectedB = Buffer.concat([x.subarray(0, 4 * MiB), Buffer.alloc(6 * MiB)]);
    expectSameBytes(
      readFileSync(s.path('fence.b-read')),
      expectedB,
      'read through B after the takeover (A flushed [0, 4) MiB before it)',
      MiB,
    );

    // A leaves: its disconnect flush fails, it detaches and releases "its" lock. B's lock must stay.
    const markA = fa.logText().length;
    clientA.endInput();
    await clientA.exit();
    await fa.waitForLog(/detached volume fence/, markA);
    const lockAfter = await s.lockOf('fence');
    expect(lockAfter, "the lock after A detached must still be B's").to.deep.include({ epoch: lockB!.epoch });
    expect(lockAfter?.owner).to.match(new RegExp(`/${fb.pid}$`));

    clientB.write('write\n');
    await clientB.waitForOutput(/WROTE/);
    clientB.write('quit\n');
    const rB = await clientB.exit();
    expect(rB.code, `client B: ${describeResult(rB)}`).to.equal(0);
    await fb.stop();
    await fa.stop();

    // Durable state, read through the dev frontend from the shards: X, then zeros, then B's write.
    await runOk('nbdcopy the fenced volume through the dev frontend', '/usr/bin/nbdcopy', [
      s.uri('fence'),
      s.path('fence.final'),
    ]);
    const expectedFinal = Buffer.concat([
      x.subarray(0, 4 * MiB),
      Buffer.alloc(5 * MiB),
      Buffer.alloc(MiB, 0x5b),
      Buffer.alloc(6 * MiB),
    ]);
    expectSameBytes(readFileSync(s.path('fence.final')), expectedFinal, 'the volume after both frontends stopped', MiB);
  });
});
