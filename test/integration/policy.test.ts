/**
 * The policy engine end to end: rules added with `cairnctl policy`, volumes created with labels
 * (by the CLI and through the CSI driver's StorageClass parameters) getting their settings from
 * the rules in the documented order, and `policy explain` naming the source of each value.
 */
import { expect } from 'chai';
import { cairnctlPath } from '../harness/cli.js';
import { mountWriter, startDriver, type Message } from '../harness/csi.js';
import { describeResult, runClient, useStack, type Stack } from '../harness/stack.js';

async function fails(s: Stack, args: string[]): Promise<string> {
  const r = await runClient(process.execPath, [cairnctlPath, ...args], {
    deadlineMs: 60_000,
    env: { CAIRN_ETCD: s.etcd },
  });
  expect(r.code, `cairnctl ${args.join(' ')} should fail: ${describeResult(r)}`).to.not.equal(0);
  return r.stderr;
}

describe('Policy rules: labels choose settings, in order, and explain says which rule set each', function () {
  this.timeout(180_000);
  const stack = useStack();

  it('rules fill in, the request wins over them, an override rule wins over the request; explain, list, remove; bad rules refused', async () => {
    const s = stack();
    const json = async (what: string, args: string[]): Promise<unknown> =>
      JSON.parse((await s.cairnctl(what, [...args, '--json'])).stdout);
    // Refused, with the reason, and nothing stored.
    expect(await fails(s, ['policy', 'add', 'bad', '--selector', 'tier in (prod', '--set', 'profile=3+2'])).to.match(
      /unbalanced parentheses/,
    );
    expect(await fails(s, ['policy', 'add', 'bad', '--set', 'colour=blue'])).to.match(/Unknown setting "colour"/);
    expect(await fails(s, ['policy', 'add', 'bad', '--set', 'profile=lots'])).to.match(/use K\+M/);
    expect(await json('list', ['policy', 'list'])).to.deep.equal([]);

    await s.cairnctl('add pg', [
      'policy',
      'add',
      'pg',
      '--selector',
      'app=postgres',
      '--set',
      'profile=2+1',
      '--set',
      'extentSize=1MiB',
    ]);
    await s.cairnctl('add pg-prod', [
      'policy',
      'add',
      'pg-prod',
      '--selector',
      'app=postgres,tier in (prod)',
      '--set',
      'profile=3+2',
      '--set',
      'zones=3',
    ]);
    await s.cairnctl('add prod-journal', [
      'policy',
      'add',
      'prod-journal',
      '--selector',
      'tier=prod',
      '--set',
      'journalReplicas=2',
      '--override',
    ]);
    expect(await fails(s, ['policy', 'add', 'pg', '--set', 'zones=1'])).to.match(/exists already/);
    const listed = (await json('list', ['policy', 'list'])) as { name: string; override: boolean }[];
    expect(listed.map((r) => [r.name, r.override])).to.deep.equal([
      ['pg', false],
      ['pg-prod', false],
      ['prod-journal', true],
    ]);

    type Volume = {
      profile: { k: number; m: number };
      zonesRequired: number;
      journalReplicas?: number;
      extentBytes: number;
    };
    // The most specific rule wins over the general one.
    const prod = (await json('create db-prod', [
      'volume',
      'create',
      'db-prod',
      '64MiB',
      '--label',
      'app=postgres',
      '--label',
      'tier=prod',
    ])) as Volume;
    expect([prod.profile, prod.zonesRequired, prod.journalReplicas, prod.extentBytes]).to.deep.equal([
      { k: 3, m: 2 },
      3,
      2,
      1024 * 1024,
    ]);
    // The request's own profile and journal replicas: the profile is the request's, the journal
    // replicas the override rule's.
    const asked = (await json('create db-asked', [
      'volume',
      'create',
      'db-asked',
      '64MiB',
      '--label',
      'app=postgres,tier=prod',
      '--profile',
      '4+2',
      '--journal-replicas',
      '3',
    ])) as Volume;
    expect([asked.profile, asked.journalReplicas]).to.deep.equal([{ k: 4, m: 2 }, 2]);
    // No label, no rule.
    const plain = (await json('create plain', ['volume', 'create', 'plain', '64MiB'])) as Volume;
    expect(plain.profile).to.deep.equal({ k: 4, m: 2 });

    type Explained = {
      labels: Record<string, string>;
      settings: { setting: string; value: string; source: string; rulesNow?: Message }[];
    };
    const explained = (await json('explain', ['policy', 'explain', 'db-asked'])) as Explained;
    expect(explained.labels).to.deep.equal({ app: 'postgres', tier: 'prod' });
    const by = Object.fromEntries(explained.settings.map((x) => [x.setting, [x.value, x.source]]));
    expect(by).to.deep.include({
      profile: ['4+2', 'request'],
      zones: ['3', 'rule pg-prod'],
      journalReplicas: ['2', 'override rule prod-journal'],
      extentSize: [String(1024 * 1024), 'rule pg'],
      targets: ['any', 'cluster default'],
    });
    const text = (await s.cairnctl('explain text', ['policy', 'explain', 'db-asked'])).stdout;
    expect(text).to.match(/journalReplicas\s+2\s+override rule prod-journal/);

    // A rule changed later changes no existing volume; explain says what today's rules would give.
    await s.cairnctl('remove pg-prod', ['policy', 'remove', 'pg-prod']);
    await s.cairnctl('add pg-prod-2', [
      'policy',
      'add',
      'pg-prod-2',
      '--selector',
      'app=postgres,tier=prod',
      '--set',
      'zones=2',
    ]);
    const after = (await json('explain after', ['policy', 'explain', 'db-prod'])) as Explained;
    const zones = after.settings.find((x) => x.setting === 'zones')!;
    expect([zones.value, zones.source]).to.deep.equal(['3', 'rule pg-prod']);
    expect(zones.rulesNow).to.deep.equal({ value: '2', source: 'rule pg-prod-2' });
    expect(((await json('info', ['volume', 'info', 'db-prod'])) as Volume).zonesRequired).to.equal(3);
    expect(await fails(s, ['policy', 'remove', 'pg-prod'])).to.match(/No policy rule named "pg-prod"/);

    // Through CSI: StorageClass labels select the rules as --label does.
    const csi = await startDriver(s);
    const made = (
      await csi.ok('Controller', 'CreateVolume', {
        name: 'pvc-pg',
        volume_capabilities: [mountWriter],
        capacity_range: { required_bytes: String(64 * 1024 * 1024) },
        parameters: { labels: 'app=postgres,tier=prod', 'csi.storage.k8s.io/pvc/namespace': 'shop' },
      })
    )['volume'] as { volume_context: Record<string, string> };
    expect(made.volume_context).to.include({ profile: '2+1', zones: '2' });
    const pvc = (await json('explain pvc', ['policy', 'explain', 'pvc-pg'])) as Explained;
    expect(pvc.labels).to.deep.equal({ app: 'postgres', tier: 'prod', 'pvc-namespace': 'shop' });
  });
});
