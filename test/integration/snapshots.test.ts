/**
 * Snapshots and clones end to end, with real processes: `cairnctl dev up` (etcd, six nodes, the
 * NBD frontend), `cairnctl snapshot|volume` as a user runs them, and real clients reading the
 * read-only export `VOL@SNAP` and the clones (nbdsh, nbdcopy, nbdinfo, fio, ext4 through nbdfuse).
 */
import { expect } from 'chai';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { cairnctlPath } from '../harness/cli.js';
import { waitFor } from '../../src/dev/index.js';
import { EtcdMeta } from '../../src/meta/index.js';
import { VolumeMaps } from '../../src/api/index.js';
import {
  ClientProcess,
  NbdLoopDevice,
  describeResult,
  skipWithoutFilesystem,
  nbdsh,
  runClient,
  runOk,
  seededBytes,
  sha256,
  useStack,
  type Stack,
} from '../harness/stack.js';

const MiB = 1024 * 1024;

/** The whole export at `uri`, read by nbdcopy into a file and returned. */
async function readExport(s: Stack, uri: string, file: string): Promise<Buffer> {
  const path = s.path(file);
  await runOk(`nbdcopy ${uri}`, '/usr/bin/nbdcopy', [uri, path], { deadlineMs: 60_000 });
  return readFileSync(path);
}

/** Writes `bytes` at `offset` of the export at `uri` and flushes (nbdsh). */
async function writeExport(s: Stack, uri: string, bytes: Buffer, file: string, offset = 0): Promise<void> {
  const path = s.path(file);
  writeFileSync(path, bytes);
  await nbdsh(
    `write ${file} at ${offset} of ${uri}`,
    'h.pwrite(open(A["file"], "rb").read(), A["offset"])\nh.flush()',
    { file: path, offset },
    { uri, deadlineMs: 60_000 },
  );
}

interface SnapshotRow {
  name: string;
  uniqueBytes: number;
  uniqueShards: number;
  writtenExtents: number;
  clones: string[];
}

async function snapshotList(s: Stack, volume: string): Promise<SnapshotRow[]> {
  const r = await s.cairnctl(`snapshot list ${volume}`, ['snapshot', 'list', volume, '--json']);
  return JSON.parse(r.stdout) as SnapshotRow[];
}

/** cairnctl that must fail: its exit code and stderr. */
async function refused(s: Stack, args: string[]): Promise<{ code: number | null; stderr: string }> {
  const r = await runClient(process.execPath, [cairnctlPath, ...args], {
    deadlineMs: 60_000,
    env: { CAIRN_ETCD: s.etcd },
  });
  expect(r.code, `cairnctl ${args.join(' ')} should fail: ${describeResult(r)}`).to.not.equal(0);
  return { code: r.code, stderr: r.stderr };
}

describe('Snapshots and clones: real clients against a dev cluster', function () {
  this.timeout(180_000);
  const stack = useStack();

  it('a snapshot holds every write acknowledged before it, flushed or not, and none after; its export is read-only', async () => {
    const s = stack();
    await s.createVolume('snap', '16MiB', { extentSize: '1MiB' });
    // One connection: write A (acknowledged, not flushed), take the snapshot while still
    // connected (the frontend holding the volume cuts it), write B over it, flush.
    const out = await nbdsh(
      'write, snapshot while connected, write again',
      `
import subprocess, hashlib
a = bytes((i * 7 + 3) % 251 for i in range(6 * 1024 * 1024))
b = bytes((i * 11 + 5) % 253 for i in range(6 * 1024 * 1024))
h.pwrite(a, 512 * 1024)
r = subprocess.run([A["node"], A["cairnctl"], "snapshot", "create", "snap", "s1", "--etcd", A["etcd"], "--json"], capture_output=True, text=True)
if r.returncode != 0:
    raise Exception("snapshot create failed: " + r.stderr)
h.pwrite(b, 512 * 1024)
h.flush()
print(json.dumps({"a": hashlib.sha256(a).hexdigest(), "b": hashlib.sha256(b).hexdigest(), "snap": json.loads(r.stdout)}))
`,
      { node: process.execPath, cairnctl: cairnctlPath, etcd: s.etcd },
      { uri: s.uri('snap'), deadlineMs: 90_000 },
    );
    const result = JSON.parse(out.trim().split('\n').pop()!) as { a: string; b: string; snap: { name: string } };
    expect(result.snap.name).to.equal('s1');
    expect(s.devFrontendLog(), 'the frontend holding the volume took it').to.match(/snapshot s1 taken/);

    const snap = await readExport(s, s.uri('snap@s1'), 'snap-s1.img');
    expect(snap.length).to.equal(16 * MiB);
    expect(sha256(snap.subarray(512 * 1024, 512 * 1024 + 6 * MiB)), 'the snapshot holds A').to.equal(result.a);
    expect(
      snap.subarray(0, 512 * 1024).every((x) => x === 0) && snap.subarray(512 * 1024 + 6 * MiB).every((x) => x === 0),
    ).to.equal(true, 'and zeros elsewhere');
    const live = await readExport(s, s.uri('snap'), 'snap-live.img');
    expect(sha256(live.subarray(512 * 1024, 512 * 1024 + 6 * MiB)), 'the volume holds B').to.equal(result.b);

    const info = JSON.parse(
      (await runOk('nbdinfo snap@s1', '/usr/bin/nbdinfo', ['--json', s.uri('snap@s1')])).stdout,
    ) as { exports: { 'export-size': number; is_read_only: boolean }[] };
    expect(info.exports[0]).to.include({ 'export-size': 16 * MiB, is_read_only: true });
    const write = await runClient('/usr/bin/nbdsh', ['-u', s.uri('snap@s1'), '-c', 'h.pwrite(b"x" * 512, 0)'], {
      deadlineMs: 30_000,
    });
    expect(write.code, `a write to the snapshot export is refused: ${describeResult(write)}`).to.not.equal(0);
    expect((await readExport(s, s.uri('snap@s1'), 'snap-s1-again.img')).equals(snap)).to.equal(true);
  });

  it('a snapshot taken while fio writes elsewhere passes fio --verify_only for what was written before it', async () => {
    const s = stack();
    await s.createVolume('fio', '64MiB', { extentSize: '1MiB' });
    const base = ['--ioengine=nbd', '--bs=4k', '--iodepth=16', '--verify=crc32c', '--output-format=json'];
    const before = ['--name=before', '--rw=randwrite', '--size=16M', '--offset=0'];
    await runOk('fio before', '/usr/bin/fio', [...base, `--uri=${s.uri('fio')}`, ...before, '--do_verify=0'], {
      deadlineMs: 90_000,
    });
    // Another fio writes a disjoint region while the snapshot is cut.
    const during = new ClientProcess(
      '/usr/bin/fio',
      [...base, `--uri=${s.uri('fio')}`, '--name=during', '--rw=randwrite', '--size=16M', '--offset=32M'],
      { deadlineMs: 90_000 },
    );
    await s.cairnctl('snapshot while fio writes', ['snapshot', 'create', 'fio', 'mid']);
    const d = await during.exit();
    expect(d.code, `fio during: ${describeResult(d)}`).to.equal(0);
    const verify = await runClient(
      '/usr/bin/fio',
      [...base, `--uri=${s.uri('fio@mid')}`, ...before, '--verify_only', `--output=${s.path('verify.json')}`],
      { deadlineMs: 90_000 },
    );
    const jobs = (
      JSON.parse(readFileSync(s.path('verify.json'), 'utf8')) as {
        jobs: { error: number; read: { io_bytes: number } }[];
      }
    ).jobs;
    expect(
      jobs.map((j) => [j.error, j.read.io_bytes]),
      `fio --verify_only on fio@mid: ${describeResult(verify)}`,
    ).to.deep.equal([[0, 16 * MiB]]);
  });

  it('clone, write, flatten; snapshot delete refused while cloned; gc frees exactly what snapshot list said; rollback', async () => {
    const s = stack();
    await s.createVolume('base', '8MiB', { extentSize: '1MiB' });
    const v1 = seededBytes('base-1', 8 * MiB);
    let mark = s.devFrontendLog().length;
    await writeExport(s, s.uri('base'), v1, 'base-1.img');
    await s.waitForDevDetach('base', mark);
    await s.cairnctl('snapshot s1', ['snapshot', 'create', 'base', 's1']);
    // Three extents change after s1: they are what s1 alone holds.
    const v2 = Buffer.from(v1);
    seededBytes('base-2', 3 * MiB).copy(v2, 2 * MiB);
    mark = s.devFrontendLog().length;
    await writeExport(s, s.uri('base'), v2.subarray(2 * MiB, 5 * MiB), 'base-2.img', 2 * MiB);
    await s.waitForDevDetach('base', mark);
    await s.cairnctl('snapshot s2', ['snapshot', 'create', 'base@s2']);

    // A clone of s1 reads s1, and its writes reach neither s1 nor the volume.
    await s.cairnctl('clone', ['volume', 'clone', 'base@s1', 'copy']);
    expect((await readExport(s, s.uri('copy'), 'copy-0.img')).equals(v1), 'the clone reads s1').to.equal(true);
    const c1 = Buffer.from(v1);
    seededBytes('copy-1', MiB).copy(c1, 0);
    mark = s.devFrontendLog().length;
    await writeExport(s, s.uri('copy'), c1.subarray(0, MiB), 'copy-1.img');
    await s.waitForDevDetach('copy', mark);
    expect((await readExport(s, s.uri('copy'), 'copy-1r.img')).equals(c1), 'the clone after its write').to.equal(true);
    expect((await readExport(s, s.uri('base@s1'), 's1.img')).equals(v1), 's1 untouched').to.equal(true);
    expect((await readExport(s, s.uri('base'), 'base-r.img')).equals(v2), 'the volume untouched').to.equal(true);

    // Deleting s1 (or base) is refused while the clone reads it, naming the clone.
    const r1 = await refused(s, ['snapshot', 'delete', 'base', 's1']);
    expect(r1.stderr).to.match(/cloned from it: copy/);
    const r2 = await refused(s, ['volume', 'delete', 'base', '--now']);
    expect(r2.stderr).to.match(/copy \(from s1\)/);
    const rows = await snapshotList(s, 'base');
    expect(rows.map((r) => [r.name, r.clones])).to.deep.equal([
      ['s1', ['copy']],
      ['s2', []],
    ]);
    // With 4+2 and 1 MiB extents a shard is 256 KiB: s1 alone holds its 3 changed extents,
    // less the ones the clone still shares (all 3: the clone wrote extent 0 only).
    expect(rows[0]!.uniqueBytes, 's1 unique while the clone shares its extents').to.equal(0);

    // Flatten: the clone copies what it shares; then s1 alone holds its 3 changed extents.
    await s.cairnctl('flatten', ['volume', 'flatten', 'copy']);
    expect((await readExport(s, s.uri('copy'), 'copy-2.img')).equals(c1), 'the clone after flatten').to.equal(true);
    const after = await snapshotList(s, 'base');
    expect(after[0]!.clones).to.deep.equal([]);
    expect(after[0]!.uniqueBytes, 's1: 3 extents x 6 shards x 256 KiB').to.equal(3 * 6 * 256 * 1024);
    expect(after[1]!.uniqueBytes, 's2 shares everything with the volume').to.equal(0);

    await s.cairnctl('snapshot delete s1', ['snapshot', 'delete', 'base', 's1', '--no-gc']);
    const gc = JSON.parse((await s.cairnctl('gc', ['gc', '--json'])).stdout) as {
      snapshots: number;
      snapshotBytesFreed: number;
    };
    expect([gc.snapshots, gc.snapshotBytesFreed], 'gc frees what snapshot list said').to.deep.equal([
      1,
      after[0]!.uniqueBytes,
    ]);
    expect((await readExport(s, s.uri('base@s2'), 's2.img')).equals(v2), 's2 after gc').to.equal(true);
    expect((await readExport(s, s.uri('base'), 'base-r2.img')).equals(v2), 'the volume after gc').to.equal(true);

    // Rollback: refused while attached, then the volume's contents become s2's.
    mark = s.devFrontendLog().length;
    await writeExport(s, s.uri('base'), seededBytes('base-3', 2 * MiB), 'base-3.img');
    const held = new ClientProcess('/usr/bin/nbdsh', ['-u', s.uri('base'), '-c', 'import sys; sys.stdin.read()'], {
      deadlineMs: 60_000,
    });
    s.defer('the held connection', async () => {
      held.endInput();
      await held.exit();
    });
    await waitForLock(s, 'base');
    const r3 = await refused(s, ['snapshot', 'rollback', 'base', 's2']);
    expect(r3.stderr).to.match(/attached by .*detach it first/);
    held.endInput();
    await held.exit();
    await s.waitForDevDetach('base', mark);
    await s.cairnctl('rollback', ['snapshot', 'rollback', 'base', 's2']);
    expect((await readExport(s, s.uri('base'), 'base-rolled.img')).equals(v2), 'rolled back to s2').to.equal(true);
  });

  it("a clone's snapshot never frees its parent's data: its unique bytes are its own, gc leaves the parent's shards, flatten waits for it", async () => {
    const s = stack();
    await s.createVolume('par', '4MiB', { extentSize: '1MiB' });
    const p1 = seededBytes('par-1', 4 * MiB);
    let mark = s.devFrontendLog().length;
    await writeExport(s, s.uri('par'), p1, 'par-1.img');
    await s.waitForDevDetach('par', mark);
    await s.cairnctl('snapshot par@p', ['snapshot', 'create', 'par', 'p']);
    await s.cairnctl('clone', ['volume', 'clone', 'par@p', 'kid']);
    // kid@k holds the parent's records; then kid overwrites extent 0, so only k reads the
    // parent's shards of extent 0 among kid's roots (par@p reads them too).
    await s.cairnctl('snapshot kid@k', ['snapshot', 'create', 'kid', 'k']);
    const k1 = Buffer.from(p1);
    seededBytes('kid-1', MiB).copy(k1, 0);
    mark = s.devFrontendLog().length;
    await writeExport(s, s.uri('kid'), k1.subarray(0, MiB), 'kid-1.img');
    await s.waitForDevDetach('kid', mark);
    const rows = await snapshotList(s, 'kid');
    expect(
      rows.map((r) => [r.name, r.uniqueBytes]),
      "k holds none of kid's own shards alone",
    ).to.deep.equal([['k', 0]]);

    const r = await refused(s, ['volume', 'flatten', 'kid']);
    expect(r.stderr).to.match(/snapshot k still read data of par@p; delete it first/);
    expect((await snapshotList(s, 'par'))[0]!.clones, 'the refused flatten kept the link').to.deep.equal(['kid']);

    await s.cairnctl('snapshot delete kid@k', ['snapshot', 'delete', 'kid', 'k', '--no-gc']);
    const gc = JSON.parse((await s.cairnctl('gc', ['gc', '--json'])).stdout) as {
      snapshots: number;
      snapshotBytesFreed: number;
    };
    expect([gc.snapshots, gc.snapshotBytesFreed], "gc freed none of par's shards").to.deep.equal([1, 0]);
    expect((await readExport(s, s.uri('par@p'), 'p.img')).equals(p1), 'par@p after gc').to.equal(true);
    mark = s.devFrontendLog().length;
    expect((await readExport(s, s.uri('kid'), 'kid.img')).equals(k1), 'kid after gc').to.equal(true);
    await s.waitForDevDetach('kid', mark);
    await s.cairnctl('flatten', ['volume', 'flatten', 'kid']);
    expect((await snapshotList(s, 'par'))[0]!.clones, 'flattened: the link is dropped').to.deep.equal([]);
  });

  it('after a rollback the lineage branches: a deleted branch point waits for gc until its neighbours go, and every remaining snapshot reads back', async () => {
    const s = stack();
    await s.createVolume('tree', '4MiB', { extentSize: '1MiB' });
    const extent = 6 * 256 * 1024; // the shard bytes of one 1 MiB extent at 4+2
    const write = async (at: number, bytes: Buffer, file: string): Promise<void> => {
      const mark = s.devFrontendLog().length;
      await writeExport(s, s.uri('tree'), bytes, file, at);
      await s.waitForDevDetach('tree', mark);
    };
    const m0 = seededBytes('tree-0', 4 * MiB);
    await write(0, m0, 't0.img');
    await s.cairnctl('snapshot s0', ['snapshot', 'create', 'tree', 's0']);
    const m1 = Buffer.from(m0);
    seededBytes('tree-a', MiB).copy(m1, 0);
    await write(0, m1.subarray(0, MiB), 'ta.img');
    await s.cairnctl('snapshot s1', ['snapshot', 'create', 'tree', 's1']);
    const m2 = Buffer.from(m1);
    seededBytes('tree-b', MiB).copy(m2, MiB);
    await write(MiB, m2.subarray(MiB, 2 * MiB), 'tb.img');
    await s.cairnctl('snapshot s2', ['snapshot', 'create', 'tree', 's2']);
    // Back to s1, then a new branch: s1 now has s0, s2 and s3 as neighbours.
    await s.cairnctl('rollback', ['snapshot', 'rollback', 'tree', 's1']);
    const m3 = Buffer.from(m1);
    seededBytes('tree-c', MiB).copy(m3, 2 * MiB);
    await write(2 * MiB, m3.subarray(2 * MiB, 3 * MiB), 'tc.img');
    await s.cairnctl('snapshot s3', ['snapshot', 'create', 'tree', 's3']);
    const rows = await snapshotList(s, 'tree');
    expect(rows.map((r) => [r.name, r.uniqueBytes])).to.deep.equal([
      ['s0', extent], // extent 0 as first written: every later root holds extent 0 rewritten
      ['s1', 0], // its extent 0 is s2's and s3's too
      ['s2', extent], // extent 1 rewritten, on the branch the rollback left
      ['s3', 0], // extent 2 rewritten is the volume's too
    ]);
    type Gc = { snapshots: number; snapshotsWaiting: number; snapshotBytesFreed: number };
    const gc = async (): Promise<Gc> => JSON.parse((await s.cairnctl('gc', ['gc', '--json'])).stdout) as Gc;

    await s.cairnctl('delete s1', ['snapshot', 'delete', 'tree', 's1', '--no-gc']);
    const g1 = await gc();
    expect([g1.snapshots, g1.snapshotsWaiting, g1.snapshotBytesFreed], 's1 waits: three neighbours').to.deep.equal([
      0, 1, 0,
    ]);
    const reuse = await refused(s, ['snapshot', 'delete', 'tree', 's1']);
    expect(reuse.stderr).to.match(/No.*snapshot named "s1"|has no snapshot named "s1"/);
    await s.cairnctl('delete s2', ['snapshot', 'delete', 'tree', 's2', '--no-gc']);
    const g2 = await gc();
    expect([g2.snapshots, g2.snapshotsWaiting, g2.snapshotBytesFreed], 's2 goes, then s1 can').to.deep.equal([
      2,
      0,
      extent,
    ]);
    expect((await readExport(s, s.uri('tree@s0'), 's0.img')).equals(m0), 's0 after gc').to.equal(true);
    expect((await readExport(s, s.uri('tree@s3'), 's3.img')).equals(m3), 's3 after gc').to.equal(true);
    expect((await readExport(s, s.uri('tree'), 'live.img')).equals(m3), 'the volume after gc').to.equal(true);
    // s0 now alone holds extent 2 as first written too (s1 and s2 held it; s3 rewrote it).
    expect((await snapshotList(s, 'tree')).map((r) => [r.name, r.uniqueBytes])).to.deep.equal([
      ['s0', 2 * extent],
      ['s3', 0],
    ]);
  });

  it('export is sparse and import keeps holes; export-diff + import-diff reproduce each snapshot (sha256) on another volume; a wrong base is refused', async () => {
    const s = stack();
    await s.createVolume('src', '16MiB', { extentSize: '1MiB' });
    const a = Buffer.alloc(16 * MiB);
    seededBytes('src-a', 3 * MiB).copy(a, 4 * MiB);
    await writeExport(s, s.uri('src'), a.subarray(4 * MiB, 7 * MiB), 'src-a.img', 4 * MiB);
    await s.cairnctl('snapshot a', ['snapshot', 'create', 'src', 'a']);
    const b = Buffer.from(a);
    seededBytes('src-b', MiB).copy(b, 5 * MiB);
    seededBytes('src-b2', 100).copy(b, 12 * MiB);
    await writeExport(s, s.uri('src'), b.subarray(5 * MiB, 6 * MiB), 'src-b.img', 5 * MiB);
    await writeExport(s, s.uri('src'), b.subarray(12 * MiB, 12 * MiB + 100), 'src-b2.img', 12 * MiB);
    await s.cairnctl('snapshot b', ['snapshot', 'create', 'src', 'b']);

    // The snapshot export offers qemu:dirty-bitmap:a, marking exactly the extents that changed.
    const map = JSON.parse(
      (await runOk('nbdinfo --map', '/usr/bin/nbdinfo', ['--map=qemu:dirty-bitmap:a', '--json', s.uri('src@b')]))
        .stdout,
    ) as { offset: number; length: number; type: number }[];
    expect(
      map.filter((e) => e.type === 1).map((e) => [e.offset / MiB, e.length / MiB]),
      'dirty runs (MiB) of src@b since a',
    ).to.deep.equal([
      [5, 1],
      [12, 1],
    ]);

    // A raw export: the snapshot's bytes, sparse where it has holes; an import keeps them holes.
    const image = s.path('src-a.raw');
    await s.cairnctl('export', ['volume', 'export', 'src@a', image]);
    expect(sha256(readFileSync(image)), 'the export of src@a').to.equal(sha256(a));
    const du = await runOk('du', '/usr/bin/du', ['-B1', image]);
    expect(Number(du.stdout.split('\t')[0]), 'allocated bytes of the export').to.be.at.most(4 * MiB);
    const imported = JSON.parse(
      (await s.cairnctl('import', ['volume', 'import', image, 'imp', '--extent-size', '1MiB', '--json'])).stdout,
    ) as {
      dataExtents: number;
      zeroExtents: number;
    };
    expect([imported.dataExtents, imported.zeroExtents]).to.deep.equal([3, 13]);
    const impMark = s.devFrontendLog().length;
    expect(sha256(await readExport(s, s.uri('imp'), 'imp.img'))).to.equal(sha256(a));
    await s.waitForDevDetach('imp', impMark);

    // A chain of diffs: from nothing to a, then a to b (only the two extents that changed).
    await s.cairnctl('export-diff a', ['volume', 'export-diff', 'src@a', s.path('a.diff')]);
    const diff = JSON.parse(
      (
        await s.cairnctl('export-diff b', [
          'volume',
          'export-diff',
          'src@b',
          '--from',
          'a',
          s.path('ab.diff'),
          '--json',
        ])
      ).stdout,
    ) as { dataExtents: number; zeroExtents: number };
    expect(diff.dataExtents + diff.zeroExtents, 'extents in the diff from a to b').to.equal(2);
    const wrong = await refused(s, ['volume', 'import-diff', s.path('ab.diff'), 'imp']);
    expect(wrong.stderr).to.match(/has no snapshot named a; nothing was changed/);
    expect(sha256(await readExport(s, s.uri('imp'), 'imp-2.img')), 'imp unchanged by the refusal').to.equal(sha256(a));
    await s.cairnctl('import-diff a', ['volume', 'import-diff', s.path('a.diff'), 'dst']);
    await s.cairnctl('import-diff b', ['volume', 'import-diff', s.path('ab.diff'), 'dst']);
    expect(sha256(await readExport(s, s.uri('dst@a'), 'dst-a.img')), 'dst@a').to.equal(sha256(a));
    expect(sha256(await readExport(s, s.uri('dst@b'), 'dst-b.img')), 'dst@b').to.equal(sha256(b));
    // A diff cut short is refused after it began to apply: the volume is rolled back to its base.
    const whole = readFileSync(s.path('ab.diff'));
    writeFileSync(s.path('cut.diff'), whole.subarray(0, whole.length - 40));
    await s.cairnctl('import-diff a again', ['volume', 'import-diff', s.path('a.diff'), 'dst2']);
    const cut = await refused(s, ['volume', 'import-diff', s.path('cut.diff'), 'dst2']);
    expect(cut.stderr).to.match(/truncated/);
    expect(sha256(await readExport(s, s.uri('dst2'), 'dst2.img')), 'dst2 back at a').to.equal(sha256(a));
    expect((await snapshotList(s, 'dst2')).map((r) => r.name)).to.deep.equal(['a']);
  });

  it('grows a volume online (a client connected, the map one level taller), and shrinks a detached one only with --allow-shrink past written data', async () => {
    const s = stack();
    await s.createVolume('gr', '8MiB', { extentSize: '1MiB' });
    const data = seededBytes('gr', 8 * MiB);
    await writeExport(s, s.uri('gr'), data, 'gr.img');
    const held = new ClientProcess('/usr/bin/nbdsh', ['-u', s.uri('gr'), '-c', 'import sys; sys.stdin.read()'], {
      deadlineMs: 120_000,
    });
    s.defer('the held connection', async () => {
      held.endInput();
      await held.exit();
    });
    await waitForLock(s, 'gr');
    await s.cairnctl('snapshot before the grow', ['snapshot', 'create', 'gr', 'small']);
    const since = s.devFrontendLog().length;
    // 300 extents: past one leaf page's 256, so the map grows a level.
    await s.cairnctl('grow online', ['volume', 'resize', 'gr', '300MiB']);
    await s.waitForDevFrontendLog(/volume gr: resized from 8 MiB to 300 MiB online/, since);
    const info = JSON.parse((await runOk('nbdinfo gr', '/usr/bin/nbdinfo', ['--json', s.uri('gr')])).stdout) as {
      exports: { 'export-size': number }[];
    };
    expect(info.exports[0]!['export-size']).to.equal(300 * MiB);
    const tail = seededBytes('gr-tail', 4096);
    await writeExport(s, s.uri('gr'), tail, 'gr-tail.img', 300 * MiB - 4096);
    const grown = await readExport(s, s.uri('gr'), 'gr-grown.img');
    expect(grown.subarray(0, 8 * MiB).equals(data), 'the old bytes').to.equal(true);
    expect(grown.subarray(300 * MiB - 4096).equals(tail), 'the new last block').to.equal(true);
    expect(
      grown.subarray(8 * MiB, 300 * MiB - 4096).every((b) => b === 0),
      'zeros between',
    ).to.equal(true);
    const online = await refused(s, ['volume', 'resize', 'gr', '4MiB']);
    expect(online.stderr).to.match(/shrinks only while detached/);
    // The snapshot keeps its size and its one-level map; list and gc read both heights.
    expect((await readExport(s, s.uri('gr@small'), 'gr-small.img')).equals(data), 'the snapshot').to.equal(true);
    const rows = await snapshotList(s, 'gr');
    expect(rows.map((r) => r.name)).to.deep.equal(['small']);
    const gc = JSON.parse((await s.cairnctl('gc', ['gc', '--json'])).stdout) as { errors: string[] };
    expect(gc.errors, 'gc over roots of two heights').to.deep.equal([]);

    held.endInput();
    await held.exit();
    await s.waitForDevDetach('gr', since);
    const past = await refused(s, ['volume', 'resize', 'gr', '6MiB']);
    expect(past.stderr).to.match(/data was written past it .*--allow-shrink/);
    const readMark = s.devFrontendLog().length;
    expect((await readExport(s, s.uri('gr'), 'gr-same.img')).equals(grown), 'nothing changed').to.equal(true);
    await s.waitForDevDetach('gr', readMark);
    await s.cairnctl('shrink', ['volume', 'resize', 'gr', '6MiB', '--allow-shrink']);
    await s.cairnctl('grow back', ['volume', 'resize', 'gr', '8MiB']);
    const back = await readExport(s, s.uri('gr'), 'gr-back.img');
    expect(back.length).to.equal(8 * MiB);
    expect(back.subarray(0, 6 * MiB).equals(data.subarray(0, 6 * MiB)), 'the first 6 MiB kept').to.equal(true);
    expect(
      back.subarray(6 * MiB).every((b) => b === 0),
      'what was cut off reads as zeros after a grow',
    ).to.equal(true);
  });

  it('volume delete moves a volume to the trash: the name is free, restore brings it back with its snapshots, purge frees it', async () => {
    const s = stack();
    await s.createVolume('tr', '4MiB', { extentSize: '1MiB' });
    const data = seededBytes('tr', 4 * MiB);
    await writeExport(s, s.uri('tr'), data, 'tr.img');
    await s.cairnctl('snapshot', ['snapshot', 'create', 'tr', 'kept']);
    await waitFor('tr to be detached', async () => (await s.lockOf('tr')) === undefined, 30_000);
    const id = await s.volumeId('tr');
    await s.cairnctl('delete to the trash', ['volume', 'delete', 'tr']);
    const trash = JSON.parse((await s.cairnctl('trash list', ['trash', 'list', '--json'])).stdout) as { id: string }[];
    expect(trash.map((t) => t.id)).to.include(id);
    // The name is free: a new volume takes it, and the old one comes back under another name.
    await s.createVolume('tr', '1MiB', { extentSize: '1MiB' });
    const clash = await refused(s, ['trash', 'restore', id]);
    expect(clash.stderr).to.match(/a volume named "tr" exists; restore it under another name/);
    await s.cairnctl('restore', ['trash', 'restore', id, '--as', 'tr-back']);
    expect((await readExport(s, s.uri('tr-back'), 'tr-back.img')).equals(data), 'restored data').to.equal(true);
    expect((await readExport(s, s.uri('tr-back@kept'), 'tr-kept.img')).equals(data), 'restored snapshot').to.equal(
      true,
    );
    // Purged: its shards go with the next gc.
    await waitFor('tr-back to be detached', async () => (await s.lockOf('tr-back')) === undefined, 30_000);
    await s.cairnctl('delete again', ['volume', 'delete', 'tr-back']);
    await s.cairnctl('purge', ['trash', 'purge', id]);
    // The purge started gc in the background; one more here, then its queue entry must be gone
    // (gc forgets a volume only once every target answered that its shards are deleted).
    await s.cairnctl('gc', ['gc']);
    await waitFor(
      'gc to collect the purged volume',
      async () => (await s.etcdGet(`cairn/v1/gc/volumes/${id}`)) === undefined,
      60_000,
    );
    const after = JSON.parse((await s.cairnctl('trash list', ['trash', 'list', '--json'])).stdout) as { id: string }[];
    expect(after.map((t) => t.id)).to.not.include(id);
  });

  it('block status marks a 4 KiB trim inside a written extent as a hole, on the volume and on its snapshot', async () => {
    const s = stack();
    await s.createVolume('zh', '4MiB', { extentSize: '1MiB' });
    await writeExport(s, s.uri('zh'), seededBytes('zh', 2 * MiB), 'zh.img');
    const mark = s.devFrontendLog().length;
    await nbdsh('trim 4 KiB', 'h.trim(4096, A["at"])\nh.flush()', { at: MiB + 8192 }, { uri: s.uri('zh') });
    await s.waitForDevDetach('zh', mark);
    await s.cairnctl('snapshot', ['snapshot', 'create', 'zh', 'z']);
    for (const uri of [s.uri('zh'), s.uri('zh@z')]) {
      const map = JSON.parse((await runOk('nbdinfo --map', '/usr/bin/nbdinfo', ['--map', '--json', uri])).stdout) as {
        offset: number;
        length: number;
        type: number;
      }[];
      // type 3: hole and zero.
      expect(
        map.filter((e) => e.offset < 2 * MiB).map((e) => [e.offset, e.length, e.type]),
        `block status of ${uri}`,
      ).to.deep.equal([
        [0, MiB + 8192, 0],
        [MiB + 8192, 4096, 3],
        [MiB + 12288, MiB - 12288, 0],
      ]);
    }
  });

  it('refuses bad names, duplicates, missing snapshots and clones of a volume (not a snapshot), changing nothing', async () => {
    const s = stack();
    await s.createVolume('bad', '4MiB', { extentSize: '1MiB' });
    await s.cairnctl('snapshot', ['snapshot', 'create', 'bad', 'ok']);
    const cases: [string[], RegExp, number][] = [
      [['snapshot', 'create', 'bad', 'Not_Valid'], /Invalid snapshot name "Not_Valid"/, 2],
      [['snapshot', 'create', 'bad', 'ok'], /has a snapshot named "ok" already/, 1],
      [['snapshot', 'delete', 'bad', 'nope'], /no snapshot named "nope"/, 1],
      [['snapshot', 'create', 'missing', 'x'], /No volume named "missing"/, 1],
      [['volume', 'clone', 'bad', 'c'], /Clone from a snapshot, VOL@SNAP/, 2],
      [['volume', 'clone', 'bad@nope', 'c'], /no snapshot named "nope"/, 1],
      [['volume', 'clone', 'bad@ok', 'bad'], /Volume "bad" already exists/, 1],
    ];
    for (const [args, pattern, code] of cases) {
      const r = await refused(s, args);
      expect(r.stderr, args.join(' ')).to.match(pattern);
      expect(r.code, `exit code of ${args.join(' ')}`).to.equal(code);
    }
    expect((await snapshotList(s, 'bad')).map((r) => r.name)).to.deep.equal(['ok']);
    const volumes = JSON.parse((await s.cairnctl('volume list', ['volume', 'list', '--json'])).stdout) as {
      name: string;
    }[];
    expect(
      volumes.map((v) => v.name),
      'no clone was made',
    ).to.not.include('c');
  });

  it('ext4 frozen and snapshotted while mounted mounts from a clone with its files, and fsck.ext4 -n is clean', async function () {
    if (skipWithoutFilesystem(this)) return;
    const s = stack();
    await s.createVolume('fs', '128MiB', { extentSize: '1MiB' });
    for (const d of ['fuse', 'mnt', 'fuse2', 'mnt2']) mkdirSync(s.path(d));
    const dev = await NbdLoopDevice.attach(s.uri('fs'), s.path('fuse'), s.path('mnt'));
    s.defer('detach the volume', () => dev.detach());
    await runOk('mkfs.ext4', '/usr/sbin/mkfs.ext4', ['-q', '-F', dev.device], { deadlineMs: 120_000 });
    await dev.mount();
    const before = seededBytes('fs-before', 5 * MiB + 123);
    writeFileSync(join(s.path('mnt'), 'before.bin'), before);
    await runOk('fsfreeze -f', '/usr/sbin/fsfreeze', ['-f', s.path('mnt')]);
    try {
      await s.cairnctl('snapshot of a frozen ext4', ['snapshot', 'create', 'fs', 'frozen']);
    } finally {
      await runOk('fsfreeze -u', '/usr/sbin/fsfreeze', ['-u', s.path('mnt')]);
    }
    writeFileSync(join(s.path('mnt'), 'after.bin'), seededBytes('fs-after', 3 * MiB));
    await s.cairnctl('clone the snapshot', ['volume', 'clone', 'fs@frozen', 'fs-clone']);
    const clone = await NbdLoopDevice.attach(s.uri('fs-clone'), s.path('fuse2'), s.path('mnt2'));
    s.defer('detach the clone', () => clone.detach());
    await clone.mount();
    expect(sha256(readFileSync(join(s.path('mnt2'), 'before.bin'))), 'a file written before').to.equal(sha256(before));
    await clone.unmount();
    const fsck = await runClient('/usr/sbin/fsck.ext4', ['-n', '-f', clone.device], { deadlineMs: 120_000 });
    expect(fsck.code, `fsck.ext4 -n on the clone: ${describeResult(fsck)}`).to.equal(0);
    await clone.detach();
    await dev.detach();
  });
});

/** Waits until a writer holds `volume`'s lock. */
async function waitForLock(s: Stack, volume: string): Promise<void> {
  await waitFor(`a writer to hold ${volume}`, async () => (await s.lockOf(volume)) !== undefined, 30_000);
}

describe('Snapshots after a node loss: scrub and repair cover generations only a snapshot holds', function () {
  this.timeout(180_000);
  // Nine nodes: after one is lost, every extent still has somewhere new to put its shard.
  const stack = useStack({ nodesPerZone: 3 });

  it('cairnctl scrub heals and repair rebuilds the shards of snapshot-only generations (a flipped byte, a SIGKILLed node)', async () => {
    const s = stack();
    await s.createVolume('rs', '16MiB', { extentSize: '1MiB' });
    const before = seededBytes('rs-before', 16 * MiB);
    let mark = s.devFrontendLog().length;
    await writeExport(s, s.uri('rs'), before, 'rs-before.img');
    await s.waitForDevDetach('rs', mark);
    await s.cairnctl('snapshot', ['snapshot', 'create', 'rs', 'old']);
    // Every extent rewritten: the snapshot's generations are now its alone.
    mark = s.devFrontendLog().length;
    await writeExport(s, s.uri('rs'), seededBytes('rs-after', 16 * MiB), 'rs-after.img');
    await s.waitForDevDetach('rs', mark);

    const meta = new EtcdMeta([s.etcd]);
    try {
      const targetsOfSnapshot = async (): Promise<Map<string, number>> => {
        const volume = await meta.requireVolume('rs');
        const snap = await meta.getSnapshot(volume.id, 'old');
        const maps = VolumeMaps.of(meta);
        await maps.refreshTargets();
        const count = new Map<string, number>();
        for await (const item of maps.tree(volume).walk(snap!.root))
          if ('record' in item)
            for (const sh of item.record.shards) count.set(sh.target, (count.get(sh.target) ?? 0) + 1);
        return count;
      };
      // Scrub reads what only the snapshot holds too: a byte flipped in one of its shard files
      // on disk is found and healed in place.
      {
        const volume = await meta.requireVolume('rs');
        const snap = await meta.getSnapshot(volume.id, 'old');
        const maps = VolumeMaps.of(meta);
        await maps.refreshTargets();
        let ref: { target: string; key: string } | undefined;
        for await (const item of maps.tree(volume).walk(snap!.root))
          if ('record' in item) ref ??= item.record.shards[0];
        const file = join(s.node(ref!.target).dataDir, ref!.key);
        const bytes = readFileSync(file);
        bytes[bytes.length - 100] = bytes[bytes.length - 100]! ^ 0xff;
        writeFileSync(file, bytes);
        const scrub = JSON.parse(
          (await s.cairnctl('scrub', ['scrub', '--volume', 'rs', '--json'], 120_000)).stdout,
        ) as {
          corrupt: number;
          healed: number;
          unhealed: string[];
        };
        expect([scrub.corrupt, scrub.healed, scrub.unhealed], 'scrub of the snapshot-only generations').to.deep.equal([
          1,
          1,
          [],
        ]);
      }
      const held = await targetsOfSnapshot();
      const [victim] = [...held.entries()].sort((a, b) => b[1] - a[1])[0]!;
      await s.killNode(victim);
      await waitFor(
        `node ${victim} to be seen down`,
        async () => !(await meta.listAlive()).some((a) => a.name === victim),
        30_000,
      );
      const report = JSON.parse((await s.cairnctl('repair', ['repair', '--json'], 120_000)).stdout) as {
        snapshots: { snapshotsRepaired: number; recordsRebuilt: number; shardsRebuilt: number; errors: string[] };
      };
      expect(report.snapshots.errors).to.deep.equal([]);
      expect(report.snapshots.snapshotsRepaired, 'snapshots repaired').to.equal(1);
      expect(report.snapshots.recordsRebuilt, 'snapshot-only extents rebuilt').to.equal(held.get(victim));
      const after = await targetsOfSnapshot();
      expect(after.get(victim) ?? 0, `shards of the snapshot still on ${victim}`).to.equal(0);
    } finally {
      meta.close();
    }
    expect(sha256(await readExport(s, s.uri('rs@old'), 'rs-old.img')), 'the snapshot reads as before').to.equal(
      sha256(before),
    );
  });
});
