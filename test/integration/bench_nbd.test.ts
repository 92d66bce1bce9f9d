/**
 * scripts/bench/nbd_bench.mjs at tiny size (16 MiB, about 1 s per job), so the NBD benchmark
 * never rots. It checks what the script reports (every target and job, fields and units, the two
 * ratios with their targets) and that it stops everything it started; never how fast anything is.
 */
import { expect } from 'chai';
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { repoRoot } from '../harness/cli.js';
import { pidAlive } from '../../src/dev/index.js';

interface Row {
  bench?: string;
  target?: string;
  job?: string;
  summary?: string;
  skipped?: string;
  [key: string]: unknown;
}

const targets = ['nbdkit-memory', 'cairn-hot', 'nbd-server', 'cairn-ec', 'cairn-ec-encrypted'];
const jobs = ['randread-4k-qd32', 'seqread-1m-qd8', 'commit-4k-qd1-fsync', 'randwrite-4k-qd32', 'seqwrite-1m-qd8'];
const runDeadlineMs = 300_000;

function runBench(args: readonly string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['scripts/bench/nbd_bench.mjs', ...args], { cwd: repoRoot });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
    // SIGTERM, not SIGKILL: the script then stops what it started before exiting.
    const timer = setTimeout(() => {
      if (child.pid !== undefined) process.kill(child.pid, 'SIGTERM');
      reject(new Error(`nbd_bench did not finish in ${runDeadlineMs} ms\n${stderr}`));
    }, runDeadlineMs);
    child.once('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    child.once('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

describe('scripts/bench/nbd_bench.mjs at tiny size', function () {
  this.timeout(runDeadlineMs + 30_000);
  let workDir = '';

  before(() => {
    workDir = mkdtempSync(join(tmpdir(), 'cairn-nbd-bench-test-'));
  });

  after(() => {
    rmSync(workDir, { recursive: true, force: true });
  });

  it('prints one JSON line per target and job, and the ratios against their targets (encrypted against plain too)', async () => {
    const run = await runBench(['--tiny', '--work-dir', workDir]);
    expect(run.code, run.stderr).to.equal(0);
    const lines = run.stdout
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as Row);
    const results = lines.filter((l) => l.bench === 'nbd' && l.skipped === undefined && l.job !== 'prefill-1m-qd8');
    for (const target of targets) {
      for (const job of jobs) {
        // The commit job flushes every write: a cache-hot run of it would measure the same as cairn-ec.
        if (target === 'cairn-hot' && job.startsWith('commit')) continue;
        const row = results.find((r) => r.target === target && r.job === job);
        expect(row, `${target} ${job}`).to.not.equal(undefined);
        for (const field of ['iops', 'MBps', 'latP99Ms', 'runtimeS']) {
          expect(row![field], `${target} ${job} ${field}`).to.be.a('number').above(0);
        }
        // A write "through to the store" includes its flush; a cache-hot write does not.
        const expectFsync = job.includes('write') && target !== 'cairn-hot' && !job.startsWith('commit');
        expect(row!['endFsync'], `${target} ${job} endFsync`).to.equal(expectFsync);
      }
    }
    const summaries = lines.filter((l) => l.summary === 'nbd');
    expect(summaries.map((s) => `${s['ratio']} ${s['job']}`)).to.deep.equal([
      'cairn-hot/nbdkit-memory randread-4k-qd32',
      'cairn-ec/nbd-server commit-4k-qd1-fsync',
      'cairn-ec/nbd-server randwrite-4k-qd32',
      'cairn-ec/nbd-server seqwrite-1m-qd8',
      'cairn-ec/nbd-server randread-4k-qd32',
      'cairn-ec/nbd-server seqread-1m-qd8',
      ...jobs.map((j) => `cairn-ec-encrypted/cairn-ec ${j}`),
    ]);
    expect(summaries[0]).to.include({ metric: 'iops', target: 0.5 });
    expect(summaries[1]).to.include({ metric: 'iops', target: 0.3 });
    expect(summaries[3]).to.include({ metric: 'MBps', target: 0.5 });
    // Write amplification is measured for the writes through to the nodes.
    const commit = results.find((r) => r.target === 'cairn-ec' && r.job === 'commit-4k-qd1-fsync');
    // A machine whose disk statistics do not count the work directory's writes says so instead.
    // Otherwise every acknowledged commit reached the disk: at least its bytes were written (three
    // journal replicas write three times as much). Below 1, acknowledgements came from the page cache.
    if (commit!['writeAmplificationUnavailable'] === undefined)
      expect(commit!['writeAmplification'], 'disk bytes per client byte of the commit job')
        .to.be.a('number')
        .at.least(1);
    else {
      expect(commit!['writeAmplificationUnavailable']).to.be.a('string').with.length.above(10);
      expect(commit).to.not.have.property('writeAmplification');
    }
    // What encryption costs in frontend CPU per MB, per job, beside the throughput ratios.
    const costs = lines.filter((l) => l['cost'] === 'encryption');
    expect(costs.map((c) => c['job'])).to.have.members(jobs);
    for (const c of costs) expect(c['ratio'], String(c['job'])).to.be.a('number').above(0);
    for (const s of summaries) {
      expect(s['value']).to.be.a('number').above(0);
      expect(s['met']).to.be.a('boolean');
    }
    // Everything it started is stopped by pid: each server it names is gone, the dev cluster
    // was taken down and purged.
    const stopped = [...run.stderr.matchAll(/\(pid (\d+)\): (stopped|killed|gone)/g)].map((m) => Number(m[1]));
    expect(stopped.length, run.stderr).to.be.at.least(7); // nbdkit, nbd-server, five frontends
    for (const pid of stopped) expect(pidAlive(pid), `pid ${pid}`).to.equal(false);
    expect(run.stderr).to.contain('dev cluster down');
    expect(existsSync(join(workDir, 'cluster'))).to.equal(false);
  });

  it('refuses an unknown target with exit code 2', async () => {
    const run = await runBench(['--tiny', '--targets', 'cairn-hot,quantum']);
    expect(run.code).to.equal(2);
    expect(run.stderr).to.contain('unknown target "quantum"');
  });
});
