/**
 * The cluster seen through cairnctl, the way an operator sees it: a real etcd, six real cairnd
 * processes in three zones, and a real Ceph RGW for S3 targets. Every bad input checks the
 * message, the exit code, and that nothing was written.
 */
import { expect } from 'chai';
import { startEtcd, type EtcdHandle } from '../harness/etcd.js';
import { startCairnd, type CairndHandle } from '../harness/cairnd.js';
import { cairnctl, type CliRun } from '../harness/cli.js';
import { freePort, waitFor } from '../../src/dev/index.js';
import { sharedRgw } from '../harness/rgw.js';
import './_rgw_root_hooks.test.js';
import { NodeShardStore } from '../../src/shard/index.js';

describe('cairnctl against a cluster of real processes', function () {
  let etcd: EtcdHandle;
  const nodes: CairndHandle[] = [];
  let ctl: (args: string[], env?: NodeJS.ProcessEnv) => Promise<CliRun>;

  before(async () => {
    etcd = await startEtcd();
    ctl = (args, env) =>
      cairnctl([...args, '--etcd', etcd.endpoint], env === undefined ? {} : { env: { ...process.env, ...env } });
    for (const zone of ['a', 'b', 'c']) {
      for (const i of [1, 2]) nodes.push(await startCairnd({ etcd: etcd.endpoint, name: `${zone}-${i}`, zone }));
    }
  });

  after(async () => {
    await Promise.all(nodes.map((n) => n.stop()));
    await etcd?.stop();
  });

  const json = (run: CliRun): unknown => {
    expect(run.code, run.stderr).to.equal(0);
    return JSON.parse(run.stdout);
  };
  const oneLine = (run: CliRun) => expect(run.stderr.trim().split('\n'), run.stderr).to.have.length(1);

  it('initialises the cluster once; a second init is refused unless --force', async () => {
    expect(json(await ctl(['init', '--profile', '4+2', '--extent-size', '4MiB', '--json']))).to.deep.include({
      extentBytes: 4 << 20,
    });
    const again = await ctl(['init']);
    expect(again.code).to.equal(1);
    oneLine(again);
    expect(again.stderr).to.contain('already initialised; pass --force');
    expect((await ctl(['init', '--force'])).code).to.equal(0);
  });

  it('lists six nodes up in three zones', async () => {
    const list = json(await ctl(['node', 'list', '--json'])) as { name: string; zone: string; state: string }[];
    expect(list.map((n) => `${n.name}:${n.zone}:${n.state}`)).to.deep.equal([
      'a-1:a:up',
      'a-2:a:up',
      'b-1:b:up',
      'b-2:b:up',
      'c-1:c:up',
      'c-2:c:up',
    ]);
    const text = await ctl(['node', 'list']);
    expect(text.stdout).to.match(/^NAME\s+ZONE\s+ADDRESS\s+STATE/);
  });

  it('creates a volume, lists it and shows it', async () => {
    const created = json(await ctl(['volume', 'create', 'pg-data', '20GiB', '--profile', '4+2', '--json'])) as {
      id: string;
    };
    expect(created).to.deep.include({
      name: 'pg-data',
      sizeBytes: 20 * 2 ** 30,
      profile: { k: 4, m: 2 },
      extentBytes: 4 << 20,
    });
    const list = json(await ctl(['volume', 'list', '--json'])) as { name: string }[];
    expect(list.map((v) => v.name)).to.deep.equal(['pg-data']);
    const info = await ctl(['volume', 'info', 'pg-data']);
    expect(info.stdout).to.contain('profile:        4+2').and.contain('5120 extents');
  });

  it('refuses a duplicate volume and keeps the first', async () => {
    const before = json(await ctl(['volume', 'info', 'pg-data', '--json'])) as { id: string };
    const dup = await ctl(['volume', 'create', 'pg-data', '1GiB']);
    expect(dup.code).to.equal(1);
    oneLine(dup);
    expect(dup.stderr).to.contain('Volume "pg-data" already exists');
    const after = json(await ctl(['volume', 'info', 'pg-data', '--json'])) as { id: string; sizeBytes: number };
    expect(after).to.deep.include({ id: before.id, sizeBytes: 20 * 2 ** 30 });
  });

  it('refuses bad sizes, profiles and names with exit code 2, creating nothing', async () => {
    for (const [args, reason] of [
      [['volume', 'create', 'v1', '12parsecs'], 'unknown unit'],
      [['volume', 'create', 'v1', '1000'], 'multiple of 512'],
      [['volume', 'create', 'v1', '1GiB', '--profile', '0+2'], 'K must be at least 1'],
      [['volume', 'create', 'v1', '1GiB', '--profile', '4+x'], 'expected K+M'],
      [['volume', 'create', 'Bad_Name', '1GiB'], 'Invalid volume name'],
      [['volume', 'create', 'v1', '1GiB', '--extent-size', '1000'], 'between 4 KiB and 64 MiB'],
      [['volume', 'create', 'v1', '1GiB', '--targets', 'tape'], 'use node, s3 or any'],
    ] as const) {
      const run = await ctl([...args]);
      expect(run.code, args.join(' ')).to.equal(2);
      oneLine(run);
      expect(run.stderr, args.join(' ')).to.contain(reason);
    }
    const list = json(await ctl(['volume', 'list', '--json'])) as { name: string }[];
    expect(list.map((v) => v.name)).to.deep.equal(['pg-data']);
  });

  it('refuses a policy the topology cannot meet, with the reason', async () => {
    const zones = await ctl(['volume', 'create', 'v4z', '1GiB', '--zones-required', '4']);
    expect(zones.code).to.equal(2);
    expect(zones.stderr).to.contain('4 zones with usable targets needed, 3 found');
    const wide = await ctl(['volume', 'create', 'v7', '1GiB', '--profile', '5+2']);
    expect(wide.code).to.equal(2);
    expect(wide.stderr).to.contain('7 distinct usable targets needed');
    expect((json(await ctl(['volume', 'list', '--json'])) as unknown[]).length).to.equal(1);
  });

  it('explains placement: six distinct nodes, two per zone', async () => {
    const e = json(await ctl(['placement', 'explain', 'pg-data', '7', '--json'])) as {
      shards: { shard: number; target: string; zone: string }[];
    };
    expect(e.shards).to.have.length(6);
    expect(new Set(e.shards.map((s) => s.target)).size).to.equal(6);
    for (const zone of ['a', 'b', 'c']) expect(e.shards.filter((s) => s.zone === zone)).to.have.length(2);
    const text = await ctl(['placement', 'explain', 'pg-data', '7']);
    expect(text.code).to.equal(0);
    expect(text.stdout).to.contain('a-1').and.contain('c-2');
    const bad = await ctl(['placement', 'explain', 'pg-data', '5120']);
    expect(bad.code).to.equal(2);
    expect(bad.stderr).to.contain('extents 0 to 5119');
  });

  it('says which volume is unknown', async () => {
    const run = await ctl(['volume', 'info', 'nope']);
    expect(run.code).to.equal(1);
    expect(run.stderr).to.contain('No volume named "nope"');
  });

  it('deletes a volume at once and removes its shards in the background', async () => {
    const v = json(await ctl(['volume', 'create', 'scratch', '1GiB', '--json'])) as { id: string };
    // Shards as a writer would leave them, on two nodes.
    const stores = nodes.slice(0, 2).map((n) => new NodeShardStore({ name: n.name, address: n.address }));
    try {
      for (const [i, s] of stores.entries()) await s.put(`${v.id}/0/1/${i}`, new Uint8Array(4096).fill(i));
      const run = await ctl(['volume', 'delete', 'scratch', '--now', '--json']);
      expect(json(run)).to.deep.include({ deleted: 'scratch', id: v.id });
      expect((await ctl(['volume', 'info', 'scratch'])).code).to.equal(1);
      await waitFor(
        'the background gc to remove the shards',
        async () => {
          const left = await Promise.all(stores.map((s) => s.list(`${v.id}/`)));
          return left.every((l) => l.length === 0);
        },
        20_000,
      );
      // The name is free again, under a new id.
      const again = json(await ctl(['volume', 'create', 'scratch', '1GiB', '--json'])) as { id: string };
      expect(again.id).to.not.equal(v.id);
    } finally {
      stores.forEach((s) => s.close());
    }
  });

  it('names the etcd endpoint when etcd is unreachable', async () => {
    const port = await freePort();
    const run = await cairnctl(['volume', 'list', '--etcd', `http://127.0.0.1:${port}`, '--etcd-timeout', '1500']);
    expect(run.code).to.equal(1);
    oneLine(run);
    expect(run.stderr).to.contain(`127.0.0.1:${port}`);
  });

  it('shows a SIGKILLed node as down, and placement passes over it', async () => {
    const victim = nodes.find((n) => n.name === 'c-2')!;
    process.kill(victim.pid, 'SIGKILL');
    await victim.exit();
    await waitFor(
      'c-2 to show as down',
      async () => {
        const list = json(await ctl(['node', 'list', '--json'])) as { name: string; state: string }[];
        return list.find((n) => n.name === 'c-2')?.state === 'down';
      },
      20_000,
      { intervalMs: 200 },
    );
    const text = await ctl(['placement', 'explain', 'pg-data', '7']);
    expect(text.stdout).to.contain('c-2');
    expect(text.stdout).to.match(/c-2.*down/);
    // Five nodes left cannot hold 4+2 shards on distinct nodes: new volumes are refused.
    const refused = await ctl(['volume', 'create', 'after-loss', '1GiB']);
    expect(refused.code).to.equal(2);
    expect(refused.stderr).to.contain('6 distinct usable targets needed');
  });

  it('registers S3 buckets on a real Ceph RGW as targets in zones, and places shards on them', async () => {
    const rgw = await sharedRgw();
    const env = { AWS_ACCESS_KEY_ID: rgw.accessKeyId, AWS_SECRET_ACCESS_KEY: rgw.secretAccessKey };
    for (const zone of ['a', 'b', 'c']) {
      const run = await ctl(
        [
          'target',
          'add',
          's3',
          '--name',
          `s3-${zone}`,
          '--zone',
          zone,
          '--endpoint',
          rgw.endpoint,
          '--bucket',
          `cairn-cli-${zone}`,
        ],
        env,
      );
      expect(run.code, run.stderr).to.equal(0);
    }
    const targets = json(await ctl(['target', 'list', '--json'])) as { name: string; kind: string; state: string }[];
    expect(targets.filter((t) => t.kind === 's3').map((t) => `${t.name}:${t.state}`)).to.deep.equal([
      's3-a:up',
      's3-b:up',
      's3-c:up',
    ]);
    json(await ctl(['volume', 'create', 'cold', '1GiB', '--profile', '2+1', '--targets', 's3', '--json']));
    const e = json(await ctl(['placement', 'explain', 'cold', '0', '--json'])) as { shards: { target: string }[] };
    expect(e.shards.map((s) => s.target).sort()).to.deep.equal(['s3-a', 's3-b', 's3-c']);

    const noCreds = await cairnctl(
      [
        'target',
        'add',
        's3',
        '--name',
        's3-x',
        '--zone',
        'a',
        '--endpoint',
        rgw.endpoint,
        '--bucket',
        'x',
        '--etcd',
        etcd.endpoint,
      ],
      {
        env: { ...process.env, AWS_ACCESS_KEY_ID: '', AWS_SECRET_ACCESS_KEY: '' },
      },
    );
    expect(noCreds.code).to.equal(2);
    expect(noCreds.stderr).to.contain('No credentials for S3 target "s3-x"');
    const badCreds = await ctl(
      [
        'target',
        'add',
        's3',
        '--name',
        's3-y',
        '--zone',
        'a',
        '--endpoint',
        rgw.endpoint,
        '--bucket',
        'cairn-bad-creds',
      ],
      { ...env, AWS_SECRET_ACCESS_KEY: 'wrong' },
    );
    expect(badCreds.code).to.equal(2);
    expect(badCreds.stderr).to.contain('Cannot use bucket "cairn-bad-creds"');
    expect((await ctl(['target', 'remove', 's3-y'])).code).to.equal(1);
    expect((json(await ctl(['target', 'list', '--json'])) as unknown[]).length).to.equal(9);
  });
});
