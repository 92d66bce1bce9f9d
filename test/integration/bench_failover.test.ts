/**
 * scripts/bench/failover_bench.mjs at tiny size (two failovers of 64 KiB writes), so the failover
 * benchmark never rots. It checks what the script reports (the takeover and fresh-attach lines
 * with their fields, that every flushed byte was read back through the new frontend, the
 * wait-for-lease line measured or skipped with its reason, the summary against the 2 s target)
 * and that it stops everything it started; never how fast anything is.
 */
import { expect } from 'chai';
import { spawn } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { repoRoot } from '../harness/cli.js';
import { pidGone } from '../../src/dev/index.js';

interface Row {
  bench?: string;
  mode?: string;
  summary?: string;
  skipped?: string;
  [key: string]: unknown;
}

const runDeadlineMs = 240_000;

function runBench(args: readonly string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['scripts/bench/failover_bench.mjs', ...args], { cwd: repoRoot });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
    // SIGTERM, not SIGKILL: the script then stops what it started before exiting.
    const timer = setTimeout(() => {
      if (child.pid !== undefined) process.kill(child.pid, 'SIGTERM');
      reject(new Error(`failover_bench did not finish in ${runDeadlineMs} ms\n${stderr}`));
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

/** Pids of processes whose command line mentions `needle`. */
function pidsMentioning(needle: string): number[] {
  const out: number[] = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      if (readFileSync(`/proc/${name}/cmdline`, 'utf8').includes(needle)) out.push(Number(name));
    } catch {
      // gone meanwhile
    }
  }
  return out;
}

describe('scripts/bench/failover_bench.mjs at tiny size', function () {
  this.timeout(runDeadlineMs + 30_000);

  it('reports takeover and fresh-attach times with every flushed byte verified, and stops what it started', async () => {
    const run = await runBench(['--tiny']);
    expect(run.code, run.stderr).to.equal(0);
    const lines = run.stdout
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as Row);
    expect(lines.map((l) => l.mode ?? l.summary)).to.deep.equal([
      'takeover',
      'fresh-attach-peer',
      'wait-for-lease',
      'failover',
    ]);
    for (const row of lines.slice(0, 2)) {
      expect(row, row.mode).to.include({
        bench: 'failover',
        n: 2,
        writeBytes: 65_536,
        verifiedBytes: 131_072,
        verified: true,
      });
      for (const field of ['p50Ms', 'maxMs', 'minMs'])
        expect(row[field], `${row.mode} ${field}`).to.be.a('number').above(0);
      expect(row['samplesMs']).to.be.an('array').with.lengthOf(2);
      expect(row['maxMs']).to.be.at.least(row['p50Ms'] as number);
    }
    // Each takeover moved the lock to the standby with a new fencing epoch.
    expect(lines[0]).to.include({ epochBumps: 2 });
    // Waiting for the dead holder's lease is measured if the frontend waits, else skipped with why.
    const wait = lines[2]!;
    expect(wait.bench).to.equal('failover');
    if (wait.skipped !== undefined) expect(wait.skipped).to.match(/refuses.*is attached by .*--force-takeover/);
    else expect(wait['p50Ms']).to.be.a('number').above(0);
    const summary = lines[3]!;
    expect(summary).to.include({ target: 2000, failoverP50Ms: lines[0]!['p50Ms'] });
    expect(summary['failoverOverPeerP50']).to.be.a('number').above(0);
    expect(summary['meetsTarget']).to.be.a('boolean');

    // Everything it started is stopped by pid and its directory is gone.
    const dir = run.stderr.match(/dev cluster in (\S+):/)?.[1];
    expect(dir, run.stderr).to.be.a('string');
    const pids = [...run.stderr.matchAll(/pid (\d+)/g)].map((m) => Number(m[1]));
    expect(pids.length, run.stderr).to.be.at.least(2 + 2 * 2 + 1); // etcd, dev frontend, 2 per round, waiter
    for (const pid of pids) expect(pidGone(pid), `pid ${pid}`).to.equal(true);
    expect(pidsMentioning(dir!)).to.deep.equal([]);
    expect(existsSync(dir!)).to.equal(false);
    expect(run.stderr).to.contain('dev cluster down\n');
  });

  it('refuses an unknown option with exit code 2', async () => {
    const run = await runBench(['--tiny', '--quantum']);
    expect(run.code).to.equal(2);
    expect(run.stderr).to.contain('unknown option --quantum');
  });
});
