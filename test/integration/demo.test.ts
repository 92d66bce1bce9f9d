/**
 * `make demo`'s script, at a small size, so the first thing a new user runs never rots: it must
 * exit 0, say what it showed, and leave no process of its own behind (found by a marker in the
 * environment, which even an orphan re-parented to init still carries).
 */
import { expect } from 'chai';
import { execFile } from 'node:child_process';
import { repoRoot } from '../harness/cli.js';
import { describeLeftovers, newRunMarker, reapLeftovers, withRunMarker } from '../harness/leftovers.js';

describe('scripts/demo.sh', () => {
  it('starts a cluster, writes and reads a volume with nbdcopy, reads it again through the erasure code with a node killed, and stops everything', async () => {
    const marker = newRunMarker('demo-test');
    const env = withRunMarker(marker, { ...process.env, DEMO_SIZE_MIB: '4', DEMO_BENCH_SECONDS: '0.05' });
    const { code, stdout, stderr } = await new Promise<{ code: number; stdout: string; stderr: string }>((resolve) => {
      execFile('bash', ['scripts/demo.sh'], { cwd: repoRoot, timeout: 180_000, env }, (err, out, errOut) =>
        resolve({
          code: err === null ? 0 : typeof err.code === 'number' ? err.code : 1,
          stdout: out,
          stderr: errOut,
        }),
      );
    });
    // Before anything else: a leftover is stopped here, by pid, whatever else failed.
    const left = await reapLeftovers(marker, { exitDeadlineMs: 5_000 });
    expect(describeLeftovers(left), 'processes the demo left running').to.deep.equal([]);
    expect(code, stderr).to.equal(0);
    expect(stdout).to.contain('No process of the demo is left behind.');
    // Written with nbdcopy, read back from the cache, then read cold with a node dead: all match.
    // Read back, the clone, the replica rebuilt from diffs, the degraded read.
    expect(stdout.match(/sha256 [0-9a-f]{16}\.\.\. matches/g) ?? [], stdout).to.have.length(4);
    expect(stdout).to.match(/\d+\s+\d+\s+1\s+dirty/);
    expect(stdout).to.contain('it now has snapshot replica@tuesday');
    expect(stdout).to.not.contain('DIFFERS');
    expect(stdout).to.contain('with b-1 dead');
    expect(stdout).to.match(/extents decoded from parity: \d+/);
    expect(stdout).to.contain('survives a zone loss');
    expect(stdout).to.contain('Volume "demo" already exists');
    expect(stdout).to.match(/cairn\s+\d+/);
    expect(stdout, 'step 8 prints the dashboard').to.match(/dashboard: http:\/\/127\.0\.0\.1:\d+\/\?token=cairn_/);
    expect(stdout).to.contain('the front page answers 200');
  });
});

describe('scripts/demo_csi.mjs (make demo-csi)', () => {
  it('provisions, stages, publishes, snapshots, clones and expands a volume through the CSI socket alone, and stops everything', async function () {
    this.timeout(240_000);
    const marker = newRunMarker('demo-csi-test');
    const env = withRunMarker(marker, { ...process.env });
    const { code, stdout, stderr } = await new Promise<{ code: number; stdout: string; stderr: string }>((resolve) => {
      execFile(
        process.execPath,
        ['scripts/demo_csi.mjs'],
        { cwd: repoRoot, timeout: 200_000, env },
        (err, out, errOut) =>
          resolve({
            code: err === null ? 0 : typeof err.code === 'number' ? err.code : 1,
            stdout: out,
            stderr: errOut,
          }),
      );
    });
    const left = await reapLeftovers(marker, { exitDeadlineMs: 5_000 });
    expect(describeLeftovers(left), 'processes the CSI demo left running').to.deep.equal([]);
    expect(code, stderr).to.equal(0);
    expect(stdout).to.contain('The CSI demo passed.');
    expect(stdout).to.contain('CreateSnapshot: pvc-demo@snapshot-demo');
    expect(stdout).to.contain('ControllerExpandVolume: 512 MiB');
    expect(stdout).to.contain('ListVolumes: 0 volumes left');
    expect(stdout).to.not.contain('DIFFERS');
    // Where the host can mount (root, FUSE, loop), the Node steps ran too.
    if (!stdout.includes('the Node service is left out'))
      expect(stdout.match(/matches the original/g) ?? []).to.have.length(2);
  });
});
