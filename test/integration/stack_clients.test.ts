/**
 * The whole stack through real NBD clients: `cairnctl dev up` (real etcd, six cairnd nodes in
 * zones a, b, c, the NBD frontend), then nbdinfo, nbdcopy, nbdsh, qemu-io, qemu-img and fio
 * against volumes on it. Reads are checked twice where it matters: once while the volume is
 * still attached (the write-back cache answers), and once after the frontend detached it (the
 * bytes come back from the erasure-coded shards on the nodes).
 */
import { expect } from 'chai';
import { readFileSync, writeFileSync } from 'node:fs';
import { pidRuns, waitFor } from '../../src/dev/index.js';
import {
  describeResult,
  differences,
  expectSameBytes,
  nbdsh,
  runClient,
  runOk,
  seededBytes,
  useStack,
} from '../harness/stack.js';

const MiB = 1024 * 1024;

interface NbdinfoExport {
  'export-name': string;
  'export-size': number;
  is_read_only: boolean;
  can_flush: boolean;
  can_fua: boolean;
  can_trim: boolean;
  can_zero: boolean;
  can_multi_conn: boolean;
  description?: string;
}

interface MapEntry {
  offset: number;
  length: number;
  type: number;
  description: string;
}

async function nbdinfoJson(step: string, args: string[]): Promise<{ exports: NbdinfoExport[] }> {
  const r = await runOk(step, '/usr/bin/nbdinfo', ['--json', ...args]);
  return JSON.parse(r.stdout) as { exports: NbdinfoExport[] };
}

async function nbdinfoMap(step: string, uri: string): Promise<MapEntry[]> {
  const r = await runOk(step, '/usr/bin/nbdinfo', ['--map', '--json', uri]);
  return JSON.parse(r.stdout) as MapEntry[];
}

const showMap = (m: MapEntry[]) => m.map((e) => `[${e.offset}, ${e.offset + e.length}) ${e.description}`).join('; ');

describe('Full stack: real NBD clients against a dev cluster (etcd, 6 nodes, frontend)', function () {
  this.timeout(120_000);
  const stack = useStack();

  describe('nbdinfo', () => {
    it('reports the size and the capabilities of a volume (flush, FUA, trim, zero, multi-conn)', async () => {
      const s = stack();
      await s.createVolume('info', '96MiB', { extentSize: '1MiB' });
      const info = await nbdinfoJson('nbdinfo on volume info', [s.uri('info')]);
      expect(info.exports, 'nbdinfo should describe exactly one export').to.have.length(1);
      const e = info.exports[0]!;
      expect(e['export-name']).to.equal('info');
      expect(e['export-size'], 'export size of a 96 MiB volume').to.equal(96 * MiB);
      const caps = {
        is_read_only: e.is_read_only,
        can_flush: e.can_flush,
        can_fua: e.can_fua,
        can_trim: e.can_trim,
        can_zero: e.can_zero,
        can_multi_conn: e.can_multi_conn,
      };
      expect(caps, 'capabilities nbdinfo saw on a writable volume').to.deep.equal({
        is_read_only: false,
        can_flush: true,
        can_fua: true,
        can_trim: true,
        can_zero: true,
        can_multi_conn: true,
      });
      // The same over the Unix socket.
      const viaUnix = await nbdinfoJson('nbdinfo over the Unix socket', [s.unixUri('info')]);
      expect(viaUnix.exports[0]?.['export-size'], 'export size over the Unix socket').to.equal(96 * MiB);
    });

    it('--list shows every volume, including one created after the listing: served without a restart', async () => {
      const s = stack();
      await s.createVolume('listed', '64MiB');
      const before = await nbdinfoJson('nbdinfo --list (first)', ['--list', s.cluster.frontend.nbdUri]);
      const names1 = before.exports.map((e) => e['export-name']);
      expect(names1, 'nbdinfo --list').to.include('listed');
      expect(names1, 'a volume not yet created must not be listed').to.not.include('late');

      await s.createVolume('late', '80MiB');
      const after = await nbdinfoJson('nbdinfo --list (after creating volume late)', [
        '--list',
        s.cluster.frontend.nbdUri,
      ]);
      const late = after.exports.find((e) => e['export-name'] === 'late');
      expect(
        late,
        `nbdinfo --list after volume create late; listed: ${after.exports.map((e) => e['export-name']).join(', ')}`,
      ).to.not.equal(undefined);
      expect(late!['export-size'], 'size of volume late in the listing').to.equal(80 * MiB);
      const direct = await nbdinfoJson('nbdinfo on volume late', [s.uri('late')]);
      expect(direct.exports[0]?.['export-size']).to.equal(80 * MiB);
      expect(
        pidRuns(s.cluster.frontend.pid, s.cluster.frontend.socket),
        'the frontend that served both listings is the one dev up started',
      ).to.equal(true);
      const missing = await runClient('/usr/bin/nbdinfo', [s.uri('no-such-volume')]);
      expect(
        missing.code,
        `nbdinfo on a volume that does not exist must fail: ${describeResult(missing)}`,
      ).to.not.equal(0);
    });

    it('--map of a thin volume is one hole; written extents become data, at extent granularity', async () => {
      const s = stack();
      await s.createVolume('mapped', '64MiB', { extentSize: '1MiB' });
      const empty = await nbdinfoMap('nbdinfo --map of a new volume', s.uri('mapped'));
      expect(showMap(empty), 'map of a never-written volume').to.equal(`[0, ${64 * MiB}) hole,zero`);

      // 1 MiB at offset 0 (exactly extent 0), and 4 KiB inside extent 5; FLUSH, then disconnect.
      await nbdsh(
        'write 1 MiB at 0 and 4 KiB at 5 MiB + 8 KiB, then flush',
        'h.pwrite(b"\\xa5" * (1 << 20), 0)\nh.pwrite(b"\\x5a" * 4096, (5 << 20) + 8192)\nh.flush()\n',
        {},
        { uri: s.uri('mapped') },
      );
      const map = await nbdinfoMap('nbdinfo --map after the writes', s.uri('mapped'));
      // Block status is per extent (docs: "sub-extent holes" are left out): extent 5 is data as a whole.
      expect(showMap(map), 'map after writing extent 0 and 4 KiB of extent 5').to.equal(
        `[0, ${MiB}) data; [${MiB}, ${5 * MiB}) hole,zero; [${5 * MiB}, ${6 * MiB}) data; [${6 * MiB}, ${64 * MiB}) hole,zero`,
      );
    });

    it('block status keeps calling written extents data while a FLUSH of them is in flight', async () => {
      // A sparse-aware client (nbdcopy, qemu-img convert) skips what block status calls a hole and
      // writes zeros there instead. Handle 1 writes 8 MiB and starts a FLUSH; handle 2 asks for
      // block status before the flush's reply arrives.
      const s = stack();
      await s.createVolume('inflight', '64MiB', { extentSize: '1MiB' });
      const out = await nbdsh(
        'block status before, during and after a flush',
        `
h1 = nbd.NBD(); h1.connect_uri(A["uri"])
h2 = nbd.NBD(); h2.add_meta_context("base:allocation"); h2.connect_uri(A["uri"])
def status(tag):
    got = []
    def cb(meta, off, entries, err):
        if meta == "base:allocation": got.extend(entries)
        return 0
    h2.block_status(16 << 20, 0, cb)
    holes = 0; at = 0
    for i in range(0, len(got), 2):
        length, flags = got[i], got[i + 1]
        if flags & 1: holes += max(0, min(at + length, 8 << 20) - at)
        at += length
    print(json.dumps({"when": tag, "holeBytesInWritten": holes, "entries": got}))
h1.pwrite(os.urandom(8 << 20), 0)
status("before flush")
cookie = h1.aio_flush()
status("flush in flight")
done_before = h1.aio_command_completed(cookie)
while not h1.aio_command_completed(cookie): h1.poll(1)
status("after flush")
print(json.dumps({"flushCompletedBeforeSecondStatus": done_before}))
`,
        { uri: s.uri('inflight') },
      );
      const lines = out
        .trim()
        .split('\n')
        .map((l) => JSON.parse(l) as { when?: string; holeBytesInWritten?: number; entries?: number[] });
      for (const l of lines) {
        if (l.when === undefined) continue;
        expect(
          l.holeBytesInWritten,
          `block status ${l.when}: ${l.holeBytesInWritten} of the 8 MiB just written reported as a hole (entries ${JSON.stringify(l.entries)}). ` +
            'Clients that trust block status would read zeros there. Suspect: WriteBackCache.blockStatus() in src/cache/write_back.ts ' +
            'treats an entry whose dirty ranges were moved into an in-flight flush (dirty empty, not yet published) as a hole.',
        ).to.equal(0);
      }
    });
  });

  describe('attach, flush at disconnect and linger', () => {
    it('detaches a volume once per attach when clients come and go during the flush at disconnect, and serves the next clients', async () => {
      // Client 1 writes 32 MiB and disconnects: the frontend flushes (seconds). Three more clients
      // connect, write 1 MiB and disconnect while that flush runs; each last-close queues a flush
      // and then arms the 1.5 s detach timer. The moment the volume is detached, one client
      // re-attaches it and stays; then another connects. Both must be served, and the log must
      // show one "detached" per "attached".
      const s = stack();
      await s.createVolume('linger', '64MiB', { extentSize: '1MiB' });
      const mark = s.devFrontendLog().length;
      const out = await nbdsh(
        'clients coming and going during the flush at disconnect',
        `
import time
U = A["uri"]
def detaches():
    with open(A["log"]) as f:
        text = f.read()[A["mark"]:]
        return text.count("detached volume linger\\n") + text.count('detached volume linger"')
h1 = nbd.NBD(); h1.connect_uri(U); h1.pwrite(b"\\x11" * (32 << 20), 0); h1.shutdown(); del h1
for i in range(3):
    h = nbd.NBD(); h.connect_uri(U); h.pwrite(bytes([0x20 + i]) * (1 << 20), (40 + i) << 20); h.shutdown(); del h
deadline = time.time() + 30
while detaches() < 1:
    if time.time() > deadline: raise Exception("no detach within 30 s")
    time.sleep(0.005)
stay = nbd.NBD(); stay.connect_uri(U)
print(json.dumps({"client": "re-attach", "ok": True}), flush=True)
stay.pwrite(b"\\x33" * (4 << 20), 48 << 20); stay.flush()
try:
    nxt = nbd.NBD(); nxt.connect_uri(U)
    same = nxt.pread(1 << 20, 41 << 20) == b"\\x21" * (1 << 20) and nxt.pread(4096, 48 << 20) == b"\\x33" * 4096
    print(json.dumps({"client": "next", "ok": True, "readBack": same}), flush=True)
    nxt.shutdown()
except nbd.Error as e:
    print(json.dumps({"client": "next", "ok": False, "error": e.string}), flush=True)
stay.shutdown()
`,
        { uri: s.uri('linger'), log: s.path('frontend.log'), mark },
      );
      const results = out
        .trim()
        .split('\n')
        .map((l) => JSON.parse(l) as { client: string; ok: boolean; error?: string; readBack?: boolean });
      const next = results.find((r) => r.client === 'next');
      expect(
        next?.ok,
        `the client after the re-attach was refused: ${next?.error}. Frontend log: ${s.devFrontendLog().slice(mark).slice(-1500)}`,
      ).to.equal(true);
      expect(next?.readBack, 'the next client reads what the earlier clients wrote').to.equal(true);

      // Quiet again: the lock is released once the last client left and the linger passed.
      const lastEvent = () =>
        [
          ...s
            .devFrontendLog()
            .slice(mark)
            .matchAll(/(attached|detached) volume linger\b/g),
        ].at(-1)?.[1];
      await waitFor(
        'volume linger to be detached and its lock released',
        async () => lastEvent() === 'detached' && (await s.lockOf('linger')) === undefined,
        30_000,
        { seen: () => s.devFrontendLog().slice(mark).slice(-1500) },
      );
      const log = s.devFrontendLog().slice(mark);
      const attaches = (log.match(/attached volume linger for writing/g) ?? []).length;
      const detaches = (log.match(/detached volume linger(?:\n|")/g) ?? []).length;
      expect(
        detaches,
        `"detached volume linger" lines for ${attaches} attaches: a volume must be detached once per attach ` +
          `(extra detaches come from leaked linger timers in VolumeFrontend.open()'s close(), src/frontend/provider.ts). Log:\n${log}`,
      ).to.equal(attaches);
    });
  });

  describe('nbdcopy', () => {
    it('copies 64 MiB of random data in and straight back out over TCP (sparse-aware read right after the writer left)', async () => {
      const s = stack();
      await s.createVolume('copy-tcp', '128MiB', { extentSize: '1MiB' });
      const src = seededBytes('copy-tcp', 64 * MiB);
      writeFileSync(s.path('copy-tcp.src'), src);
      const expected = Buffer.concat([src, Buffer.alloc(64 * MiB)]);
      const mark = s.devFrontendLog().length;
      // As a user would: no --flush. The frontend flushes when the last connection closes.
      await runOk('nbdcopy file -> volume copy-tcp', '/usr/bin/nbdcopy', [s.path('copy-tcp.src'), s.uri('copy-tcp')]);
      await runOk('nbdcopy volume copy-tcp -> file (right away)', '/usr/bin/nbdcopy', [
        s.uri('copy-tcp'),
        s.path('copy-tcp.out1'),
      ]);
      const diff1 = differences(readFileSync(s.path('copy-tcp.out1')), expected, MiB);
      // Then once more after the frontend detached the volume: a cold read from the shards.
      await s.waitForDevDetach('copy-tcp', mark);
      await runOk('nbdcopy volume copy-tcp -> file (after detach)', '/usr/bin/nbdcopy', [
        s.uri('copy-tcp'),
        s.path('copy-tcp.out2'),
      ]);
      expectSameBytes(
        readFileSync(s.path('copy-tcp.out2')),
        expected,
        'nbdcopy read back after the volume was detached (from the shards)',
        MiB,
      );
      if (diff1 !== undefined) {
        throw new Error(
          `nbdcopy read back right after the writing nbdcopy exited (while the frontend flushed at disconnect): ${diff1}. ` +
            'Blocks of zeros mean block status called the extents being flushed holes and nbdcopy skipped them ' +
            '(see the test "block status keeps calling written extents data while a FLUSH of them is in flight").',
        );
      }
    });

    it('copies 64 MiB in and out over the Unix socket, identical after a cold re-attach', async () => {
      const s = stack();
      await s.createVolume('copy-unix', '64MiB', { extentSize: '1MiB' });
      const src = seededBytes('copy-unix', 64 * MiB);
      writeFileSync(s.path('copy-unix.src'), src);
      const mark = s.devFrontendLog().length;
      await runOk('nbdcopy --flush file -> volume over Unix socket', '/usr/bin/nbdcopy', [
        '--flush',
        s.path('copy-unix.src'),
        s.unixUri('copy-unix'),
      ]);
      await s.waitForDevDetach('copy-unix', mark);
      await runOk('nbdcopy volume -> file over Unix socket', '/usr/bin/nbdcopy', [
        s.unixUri('copy-unix'),
        s.path('copy-unix.out'),
      ]);
      expectSameBytes(readFileSync(s.path('copy-unix.out')), src, 'nbdcopy round trip over the Unix socket', MiB);
    });

    it('copies with --connections 4 (multi-conn) both ways, an unaligned length, identical', async () => {
      const s = stack();
      await s.createVolume('copy-multi', '64MiB', { extentSize: '1MiB' });
      // 40 MiB + 12345 bytes: the last extent is written in part and needs read-modify-write.
      const length = 40 * MiB + 12345;
      const src = seededBytes('copy-multi', length);
      writeFileSync(s.path('copy-multi.src'), src);
      const expected = Buffer.concat([src, Buffer.alloc(64 * MiB - length)]);
      const mark = s.devFrontendLog().length;
      await runOk('nbdcopy --connections 4 file -> volume', '/usr/bin/nbdcopy', [
        '--connections',
        '4',
        '--flush',
        s.path('copy-multi.src'),
        s.uri('copy-multi'),
      ]);
      await s.waitForDevDetach('copy-multi', mark);
      await runOk('nbdcopy --connections 4 volume -> file', '/usr/bin/nbdcopy', [
        '--connections',
        '4',
        s.uri('copy-multi'),
        s.path('copy-multi.out'),
      ]);
      expectSameBytes(readFileSync(s.path('copy-multi.out')), expected, 'nbdcopy --connections 4 round trip', MiB);
    });
  });

  describe('qemu-io and qemu-img', () => {
    it('writes patterns, discards, writes zeroes and reads them back; qemu-img compare matches a local file', async () => {
      const s = stack();
      await s.createVolume('qio', '16MiB', { extentSize: '1MiB' });
      const K = 1024;
      // Each command with the same effect on `local`, the reference image.
      const local = Buffer.alloc(16 * MiB);
      const cmds: string[] = [];
      const write = (pattern: number, offset: number, length: number) => {
        cmds.push(`write -P 0x${pattern.toString(16)} ${offset} ${length}`);
        local.fill(pattern, offset, offset + length);
      };
      const zero = (offset: number, length: number, how: 'write -z' | 'discard') => {
        cmds.push(`${how} ${offset} ${length}`);
        local.fill(0, offset, offset + length);
      };
      const read = (offset: number, length: number) =>
        cmds.push(`read -P 0x${local[offset]!.toString(16)} ${offset} ${length}`);

      write(0xab, 0, MiB); // exactly extent 0
      read(0, MiB);
      write(0xcd, 1536 * K, 64 * K); // inside extent 1
      read(1536 * K, 64 * K);
      read(MiB, 512 * K); // the untouched head of extent 1 is zeros
      write(0x5a, 3 * MiB - 4 * K, 8 * K); // across extents 2 and 3
      read(3 * MiB - 4 * K, 4 * K);
      read(3 * MiB, 4 * K);
      zero(0, MiB, 'discard'); // a whole extent: becomes a hole
      read(0, MiB);
      write(0x77, 4 * MiB, 2 * MiB);
      zero(4 * MiB, MiB, 'write -z'); // a whole extent of zeroes
      zero(5 * MiB + 4 * K, 8 * K, 'write -z'); // part of an extent
      read(4 * MiB, MiB);
      read(5 * MiB, 4 * K);
      read(5 * MiB + 4 * K, 8 * K);
      read(5 * MiB + 12 * K, MiB - 12 * K);
      write(0x3c, 15 * MiB + 1000, MiB - 1000); // up to the last byte
      read(16 * MiB - 4 * K, 4 * K);
      cmds.push('flush');

      const mark = s.devFrontendLog().length;
      const r = await runClient('/usr/bin/qemu-io', ['-f', 'raw', ...cmds.flatMap((c) => ['-c', c]), s.uri('qio')]);
      expect(r.stdout, `qemu-io reported a pattern mismatch: ${describeResult(r)}`).to.not.contain(
        'Pattern verification failed',
      );
      expect(r.code, `qemu-io: ${describeResult(r)}`).to.equal(0);

      writeFileSync(s.path('qio.img'), local);
      const cmp1 = await runClient('/usr/bin/qemu-img', [
        'compare',
        '-f',
        'raw',
        '-F',
        'raw',
        s.path('qio.img'),
        s.uri('qio'),
      ]);
      expect(cmp1.code, `qemu-img compare with the volume still attached: ${describeResult(cmp1)}`).to.equal(0);

      await s.waitForDevDetach('qio', mark);
      const cmp2 = await runClient('/usr/bin/qemu-img', [
        'compare',
        '-f',
        'raw',
        '-F',
        'raw',
        s.path('qio.img'),
        s.uri('qio'),
      ]);
      expect(
        cmp2.code,
        `qemu-img compare after the volume was detached (from the shards): ${describeResult(cmp2)}`,
      ).to.equal(0);
      // The same image read with qemu-io over the Unix socket.
      const viaUnix = await runClient('/usr/bin/qemu-io', [
        '-c',
        'read -P 0x3c 16773120 4096',
        '-c',
        'read -P 0x5a 3141632 8192',
        '--image-opts',
        `driver=nbd,server.type=unix,server.path=${s.cluster.frontend.socket},export=qio`,
      ]);
      expect(viaUnix.code, `qemu-io over the Unix socket: ${describeResult(viaUnix)}`).to.equal(0);
      expect(viaUnix.stdout).to.not.contain('Pattern verification failed');

      // compare must notice a single changed byte, or the checks above prove nothing.
      local[9 * MiB + 7] = 1;
      writeFileSync(s.path('qio-off-by-one.img'), local);
      const cmp3 = await runClient('/usr/bin/qemu-img', [
        'compare',
        '-f',
        'raw',
        '-F',
        'raw',
        s.path('qio-off-by-one.img'),
        s.uri('qio'),
      ]);
      expect(cmp3.code, `qemu-img compare against an image differing in one byte: ${describeResult(cmp3)}`).to.equal(1);
    });
  });

  describe('fio (nbd engine)', () => {
    interface FioJob {
      jobname: string;
      error: number;
      read: { io_bytes: number };
      write: { io_bytes: number };
    }
    async function fio(step: string, args: string[], output: string): Promise<FioJob[]> {
      // fio prints "connected to NBD server" on stdout: the JSON goes to a file (INFRA.md §3).
      const r = await runClient('/usr/bin/fio', [...args, '--output-format=json', `--output=${output}`], {
        deadlineMs: 90_000,
      });
      let jobs: FioJob[] = [];
      try {
        jobs = (JSON.parse(readFileSync(output, 'utf8')) as { jobs: FioJob[] }).jobs;
      } catch (err) {
        throw new Error(`${step}: no JSON from fio (${String(err)}): ${describeResult(r)}`);
      }
      const errors = jobs.filter((j) => j.error !== 0).map((j) => `${j.jobname}: error ${j.error}`);
      expect(errors, `${step}: fio job errors (84 = EILSEQ, a verify failure); ${describeResult(r)}`).to.deep.equal([]);
      expect(r.code, `${step}: ${describeResult(r)}`).to.equal(0);
      return jobs;
    }

    it('randwrite 4k with verify=crc32c, one job then two jobs at once (two connections), and re-verifies after detach', async () => {
      const s = stack();
      await s.createVolume('fio', '64MiB', { extentSize: '1MiB' });
      const common = [
        '--ioengine=nbd',
        `--uri=${s.uri('fio')}`,
        '--rw=randwrite',
        '--bs=4k',
        '--iodepth=16',
        '--verify=crc32c',
        '--runtime=60',
      ];

      const one = await fio(
        'fio 1 job',
        ['--name=one', ...common, '--size=16M', '--offset=48M', '--do_verify=1'],
        s.path('fio1.json'),
      );
      expect(
        one.map((j) => [j.write.io_bytes, j.read.io_bytes]),
        'fio 1 job: bytes written and verified',
      ).to.deep.equal([[16 * MiB, 16 * MiB]]);

      // Two jobs, each its own NBD connection at the same time, on disjoint 16 MiB regions.
      const twoArgs = ['--name=two', ...common, '--size=16M', '--numjobs=2', '--offset_increment=24M'];
      const mark = s.devFrontendLog().length;
      const two = await fio('fio 2 jobs', [...twoArgs, '--do_verify=1'], s.path('fio2.json'));
      expect(
        two.map((j) => [j.write.io_bytes, j.read.io_bytes]),
        'fio 2 jobs: bytes written and verified per job',
      ).to.deep.equal([
        [16 * MiB, 16 * MiB],
        [16 * MiB, 16 * MiB],
      ]);

      // The same workload in verify-only mode once the frontend has flushed and detached: every
      // block's checksum header is checked against what comes back from the shards.
      await s.waitForDevDetach('fio', mark);
      const again = await fio(
        'fio 2 jobs --verify_only after detach',
        [...twoArgs, '--verify_only'],
        s.path('fio3.json'),
      );
      expect(
        again.map((j) => j.read.io_bytes),
        'fio --verify_only: bytes verified per job',
      ).to.deep.equal([16 * MiB, 16 * MiB]);
    });
  });
});
