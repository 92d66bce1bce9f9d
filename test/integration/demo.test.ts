/**
 * `make demo`'s script, at a small size, so the first thing a new user runs never rots: it must
 * exit 0 and say what it showed.
 */
import { expect } from 'chai';
import { execFile } from 'node:child_process';
import { repoRoot } from '../harness/cli.js';

describe('scripts/demo.sh', () => {
  it('encodes, loses shards, rebuilds, starts a cluster in three zones and stops it', async () => {
    const { code, stdout, stderr } = await new Promise<{ code: number; stdout: string; stderr: string }>((resolve) => {
      execFile(
        'bash',
        ['scripts/demo.sh'],
        { cwd: repoRoot, timeout: 180_000, env: { ...process.env, DEMO_SIZE_MIB: '4', DEMO_BENCH_SECONDS: '0.05' } },
        (err, out, errOut) =>
          resolve({
            code: err === null ? 0 : typeof err.code === 'number' ? err.code : 1,
            stdout: out,
            stderr: errOut,
          }),
      );
    });
    expect(code, stderr).to.equal(0);
    expect(stdout).to.contain('matches the original');
    expect(stdout).to.contain('refused cleanly');
    expect(stdout).to.match(/cairn\s+\d+/);
    expect(stdout).to.match(/c-2\s+c\s+\S+\s+down/);
    expect(stdout).to.contain('survives a zone loss');
  });
});
