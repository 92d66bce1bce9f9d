/**
 * Every benchmark, run at a tiny size so it never rots. These check that the benchmarks run and
 * report what they claim (fields, units, peers, ratios), never how fast anything is: speed targets
 * live in `make bench`, where they are compared against a peer in the same run.
 */
import { expect } from 'chai';
import { execFile } from 'node:child_process';
import { cairnctl, repoRoot } from '../harness/cli.js';

interface Row {
  impl?: string;
  k?: number;
  m?: number;
  extentBytes?: number;
  encodeMBps?: number | null;
  reconstructMBps?: number | null;
  skipped?: string;
  summary?: string;
  [key: string]: unknown;
}

/** Runs a script of scripts/bench/ (killed after `timeoutMs`) and parses its JSON lines. */
async function benchScript(args: readonly string[], timeoutMs: number): Promise<Row[]> {
  const stdout = await new Promise<string>((resolve, reject) => {
    execFile(process.execPath, [...args], { cwd: repoRoot, timeout: timeoutMs }, (err, out, errOut) =>
      err ? reject(new Error(`${err.message}: ${errOut}`)) : resolve(out),
    );
  });
  return stdout
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l) as Row);
}

describe('benchmarks at tiny size', () => {
  it('cairnctl bench codec prints one JSON line per implementation and a summary of ratios', async () => {
    const run = await cairnctl([
      'bench',
      'codec',
      '--profile',
      '4+2',
      '--extent-size',
      '64KiB',
      '--seconds',
      '0.05',
      '--json',
    ]);
    expect(run.code, run.stderr).to.equal(0);
    const lines = run.stdout
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as Row);
    const rows = lines.filter((l) => l.encodeMBps !== undefined);
    const impls = rows.map((r) => r.impl);
    expect(impls).to.include.members(['cairn', 'cairn-pool', 'subspace']);
    for (const r of rows) {
      expect(r, r.impl).to.include({ k: 4, m: 2, extentBytes: 65536 });
      expect(r.encodeMBps, r.impl).to.be.a('number').above(0);
      expect(r.reconstructMBps, r.impl).to.be.a('number').above(0);
    }
    const summary = lines.find((l) => l.summary === 'codec')!;
    expect(summary.cairnOverSubspace).to.be.a('number').above(0);
    expect(summary.poolOverCairn).to.be.a('number').above(0);
    // ISA-L is optional at run time, but when it is skipped the reason must say why.
    const isal = lines.find((l) => l.impl?.startsWith('isa-l'));
    expect(isal, 'an isa-l line, result or skip').to.not.equal(undefined);
    if (isal?.skipped !== undefined) expect(isal.skipped).to.match(/not installed/);
  });

  it('refuses an unknown implementation with exit code 2', async () => {
    const run = await cairnctl(['bench', 'codec', '--impl', 'cairn,quantum', '--seconds', '0.05']);
    expect(run.code).to.equal(2);
    expect(run.stderr).to.contain('Unknown implementation "quantum"');
  });

  it('scripts/bench/journal_bench.mjs measures journal appends at QD1 and QD32 next to local fdatasync', async () => {
    const lines = await benchScript(['scripts/bench/journal_bench.mjs', '--count', '20'], 60_000);
    expect(lines.map((l) => `${l['impl'] ?? l.summary} ${l['qd'] ?? ''}`)).to.deep.equal([
      'cairnd 1',
      'local-fdatasync 1',
      'cairnd 32',
      'local-fdatasync 32',
      'journal ',
    ]);
    for (const row of lines.slice(0, 4)) {
      expect(row).to.include({ bench: 'journal-append-4k', count: 20, recordBytes: 4168 });
      expect(row['iops'], String(row['impl'])).to.be.a('number').above(0);
      expect(row['p99Ms'])
        .to.be.a('number')
        .at.least(row['p50Ms'] as number);
    }
    expect(lines[2]!['appendsPerFsync']).to.be.a('number').at.least(1);
    expect(lines[4]!['qd1IopsOverPeer']).to.be.a('number').above(0);
    expect(lines[4]!['qd32IopsOverPeer']).to.be.a('number').above(0);
  });

  it('scripts/bench/hostile_bench.mjs runs two verifying clients without and then under slow-body, idle and unread-GET attacks', async () => {
    const lines = await benchScript(
      [
        'scripts/bench/hostile_bench.mjs',
        ...['--seconds', '1', '--slow', '2', '--idle', '8', '--pipelines', '2'],
        ...['--body-rate-window', '200', '--idle-timeout', '400'],
      ],
      60_000,
    );
    expect(lines.map((l) => `${String(l['bench'] ?? l.summary)} ${String(l['phase'] ?? '')}`)).to.deep.equal([
      'hostile-verify baseline',
      'hostile-verify baseline',
      'hostile-verify attack',
      'hostile-verify attack',
      'hostile-attack ',
      'hostile ',
    ]);
    for (const row of lines.slice(0, 4)) {
      expect(row['ops'], JSON.stringify(row)).to.be.a('number').above(0);
      expect(row['mismatches']).to.equal(0);
    }
    const summary = lines[5]!;
    expect(summary['throughputRatio']).to.be.a('number').above(0);
    expect(summary['mismatches']).to.equal(0);
    expect(summary['longestFailMs']).to.be.a('number').at.least(0);
    expect(summary['withinBound']).to.be.a('boolean');
  });

  it('scripts/bench/map_bench.mjs builds a map on files and measures commits, lookups, attach and the gc walk', async () => {
    const lines = await benchScript(
      ['scripts/bench/map_bench.mjs', '--extents', '20000', '--batch', '5000', '--lookups', '20000'],
      60_000,
    );
    expect(lines.map((l) => `${String(l['phase'])} ${String(l['changedExtents'] ?? '')}`)).to.deep.equal([
      'build ',
      'commit 1',
      'commit 100',
      'commit 10000',
      'lookup ',
      'lookup ',
      'attach ',
      'gc-walk ',
    ]);
    expect(lines[0]).to.include({ extents: 20_000, levels: 2, commits: 4, etcdKeysPerVolume: 1 });
    expect(lines[0]!['mapBytesPerTiB']).to.be.a('number').below(Number(lines[0]!['peerEtcdBytesPerTiB']));
    expect(lines[1]).to.include({ pagesWritten: 2 }); // one leaf and the root
    expect(lines[4]).to.include({ api: 'peek', found: 20_000 });
    expect(lines[5]).to.include({ api: 'lookup', found: 20_000 });
    expect(lines[7]).to.include({ records: 20_000 });
  });

  it('scripts/bench/meta_bench.mjs measures volume create next to a plain etcd put', async () => {
    const lines = await benchScript(['scripts/bench/meta_bench.mjs', '3'], 60_000);
    expect(lines.map((l) => l['bench'] ?? l.summary)).to.deep.equal(['volume-create', 'etcd-put-peer', 'meta']);
    expect(lines[0]).to.include({ count: 3 });
    expect(lines[0]!['p50Ms']).to.be.a('number').above(0);
    expect(lines[2]!['createOverPutP50']).to.be.a('number').above(0);
  });

  it('scripts/bench/list_bench.mjs lists volumes through a frontend next to nbdkit, attaching none', async function () {
    this.timeout(120_000);
    const lines = await benchScript(['scripts/bench/list_bench.mjs', '5'], 100_000);
    expect(lines.map((l) => l['target'] ?? l.summary)).to.deep.equal(['cairn', 'nbdkit-file-dir', 'nbd-list']);
    expect(lines[0]).to.include({ bench: 'nbd-list', exports: 5 });
    expect(lines[2]).to.include({ listed: 5, wrongSize: 0, locksTaken: 0, epochsBumped: 0 });
    expect(lines[2]!['cairnOverNbdkitMs']).to.be.a('number').above(0);
  });
  it('scripts/bench/snapshot_bench.mjs times snapshots, clones, export and export-diff against their peers', async function () {
    this.timeout(240_000);
    const lines = await benchScript(['scripts/bench/snapshot_bench.mjs', '--tiny'], 220_000);
    expect(lines.map((l) => l['mode'] ?? l.summary)).to.deep.equal([
      'volume-create',
      'snapshot-create',
      'clone',
      'export',
      'export-diff',
      'snapshot',
    ]);
    expect(lines[1]).to.include({ attached: true, n: 2 });
    expect(lines[3]).to.include({ peer: 'nbdcopy', sameBytes: true });
    expect(lines[4]).to.include({ changedExtents: 1 });
    for (const key of [
      'snapshotOverVolumeCreateP50',
      'cloneOverVolumeCreateP50',
      'exportOverNbdcopy',
      'diffOverExport',
    ])
      expect(lines[5]![key], key).to.be.a('number').above(0);
  });
  it('scripts/bench/cache_bench.mjs commits into spread and hot extents and prints their ratio', async function () {
    this.timeout(120_000);
    const lines = await benchScript(['scripts/bench/cache_bench.mjs', '--tiny'], 100_000);
    expect(lines.map((l) => l['job'] ?? l.summary)).to.deep.equal(['spread', 'hot', 'cache-commit']);
    expect(lines[1]).to.include({ extents: 4, commits: 2000, chunksPerExtent: 500 });
    for (const row of lines.slice(0, 2)) expect(row['commitsPerSecond']).to.be.a('number').above(0);
    expect(lines[2]!['value']).to.be.a('number').above(0);
  });
  it('scripts/bench/snapshot_scale.mjs lists and deletes snapshots at two counts, agreeing with the every-root peer', async function () {
    this.timeout(240_000);
    const lines = await benchScript(['scripts/bench/snapshot_scale.mjs', '--tiny'], 220_000);
    expect(lines.map((l) => l['snapshots'] ?? l.summary)).to.deep.equal([3, 3, 3, 6, 6, 6, true]);
    // The script itself fails when the lineage and every-root answers differ, or gc frees other
    // than what the list said; each delete frees the middle snapshot's own extent 63 (6 x 256 KiB).
    expect(lines[2]).to.include({ freedBytes: 6 * 256 * 1024 });
    expect(lines[5]).to.include({ freedBytes: 6 * 256 * 1024 });
    for (const key of ['listPerSnapshotRatio', 'deleteGcRatio', 'allRootsListPerSnapshotRatio'])
      expect(lines[6]![key], key).to.be.a('number').above(0);
  });
});
