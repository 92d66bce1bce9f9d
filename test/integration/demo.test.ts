/**
 * `make demo`'s script, at a small size, so the first thing a new user runs never rots: it must
 * exit 0 and say what it showed.
 */
import { expect } from 'chai';
import { execFile } from 'node:child_process';
import { repoRoot } from '../harness/cli.js';

describe('scripts/demo.sh', () => {
  it('starts a cluster, writes and reads a volume with nbdcopy, reads it again through the erasure code with a node killed, and stops everything', async () => {
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
    // Written with nbdcopy, read back from the cache, then read cold with a node dead: all match.
    expect(stdout.match(/sha256 [0-9a-f]{16}\.\.\. matches/g) ?? [], stdout).to.have.length(2);
    expect(stdout).to.not.contain('DIFFERS');
    expect(stdout).to.contain('with b-1 dead');
    expect(stdout).to.match(/extents decoded from parity: \d+/);
    expect(stdout).to.contain('survives a zone loss');
    expect(stdout).to.contain('Volume "demo" already exists');
    expect(stdout).to.match(/cairn\s+\d+/);
  });
});
