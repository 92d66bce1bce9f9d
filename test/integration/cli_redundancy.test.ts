/**
 * Profiles without parity shards (m = 0) through the real cairnctl against a real etcd: refused
 * unless --allow-no-redundancy (the error names the flag and creates nothing), and once created,
 * called "no redundancy" by `volume info`, `volume list` and `status` (text and --json), never
 * plainly ok. The targets are registered in etcd only: nothing here stores a shard.
 */
import { expect } from 'chai';
import { initCluster, type ClusterHealth } from '../../src/api/index.js';
import { EtcdMeta } from '../../src/meta/index.js';
import { cairnctl, type CliRun } from '../harness/cli.js';
import { startEtcd, type EtcdHandle } from '../harness/etcd.js';
import { registerPaperTargets } from '../harness/volumes.js';

describe('cairnctl and profiles without redundancy', function () {
  let etcd: EtcdHandle;
  let meta: EtcdMeta;
  const ctl = (args: string[]): Promise<CliRun> => cairnctl([...args, '--etcd', etcd.endpoint]);

  before(async () => {
    etcd = await startEtcd({ name: 'redundancy' });
    meta = new EtcdMeta([etcd.endpoint], { timeoutMs: 5000 });
    await initCluster(meta, { defaultProfile: { k: 4, m: 0 } });
    await registerPaperTargets(
      meta,
      ['a-1', 'a-2', 'b-1', 'b-2', 'c-1', 'c-2'].map((name) => ({ name, zone: name.slice(0, 1) })),
    );
  });

  after(async () => {
    meta?.close();
    await etcd?.stop();
  });

  it('refuses 4+0 and 1+0, asked for or by the cluster default, naming --allow-no-redundancy', async () => {
    for (const args of [
      ['volume', 'create', 'scratch', '1GiB', '--profile', '4+0'],
      ['volume', 'create', 'scratch', '1GiB', '--profile', '1+0'],
      ['volume', 'create', 'scratch', '1GiB'],
    ]) {
      const run = await ctl(args);
      expect(run.code, `${args.join(' ')}: ${run.stderr}`).to.equal(2);
      expect(run.stderr.trim().split('\n'), run.stderr).to.have.length(1);
      expect(run.stderr).to.contain('has no redundancy').and.contain('--allow-no-redundancy');
    }
    expect(await meta.listVolumes()).to.deep.equal([]);
  });

  it('refuses cairnctl init --profile 4+0 without --allow-no-redundancy, leaving the config as it was', async () => {
    const run = await ctl(['init', '--profile', '4+0', '--force']);
    expect(run.code, run.stderr).to.equal(2);
    expect(run.stderr).to.contain('has no redundancy').and.contain('--allow-no-redundancy');
    const accepted = await ctl(['init', '--profile', '2+0', '--force', '--allow-no-redundancy']);
    expect(accepted.code, accepted.stderr).to.equal(0);
    expect((await meta.requireCluster()).defaultProfile).to.deep.equal({ k: 2, m: 0 });
    await initCluster(meta, { defaultProfile: { k: 4, m: 0 }, force: true });
  });

  it('creates 4+0 with --allow-no-redundancy and calls it "no redundancy" in info, list and status', async () => {
    const created = await ctl(['volume', 'create', 'scratch', '1GiB', '--profile', '4+0', '--allow-no-redundancy']);
    expect(created.code, created.stderr).to.equal(0);
    expect(created.stdout).to.contain('4+0 (no redundancy)');
    const safe = await ctl(['volume', 'create', 'safe', '1GiB', '--profile', '4+2']);
    expect(safe.code, safe.stderr).to.equal(0);

    const info = await ctl(['volume', 'info', 'scratch']);
    expect(info.stdout).to.match(/^profile: +4\+0 \(no redundancy: one lost shard loses data, 1\.00x raw\)$/m);
    expect((await ctl(['volume', 'info', 'safe'])).stdout).to.contain('survives 2 lost shards per extent');
    expect((await ctl(['volume', 'list'])).stdout).to.match(/^scratch +1 GiB +4\+0 \(no redundancy\)/m);

    const status = await ctl(['status']);
    expect(status.code, status.stderr).to.equal(0);
    expect(status.stdout).to.match(/^scratch +1 GiB +4\+0 +0\/256 extents +no redundancy /m);
    expect(status.stdout).to.match(/^safe +1 GiB +4\+2 +0\/256 extents +ok /m);
    expect(status.stdout.trim().split('\n').at(-1)).to.equal(
      'WARNING: 1 volume (scratch) has no redundancy: losing any one shard loses data',
    );
    const health = JSON.parse((await ctl(['status', '--json'])).stdout) as ClusterHealth;
    expect(health.verdict.state).to.equal('warning');
    expect(health.totals.noRedundancyVolumes).to.equal(1);
    expect(health.volumes.map((v) => [v.name, v.noRedundancy])).to.deep.equal([
      ['safe', false],
      ['scratch', true],
    ]);
  });
});
