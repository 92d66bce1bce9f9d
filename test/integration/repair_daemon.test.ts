/**
 * The background repairer: two `cairnctl repair --daemon` processes elect one leader through an
 * etcd lease; after a node is SIGKILLed, the leader repairs every extent that had a shard on it,
 * with nobody running a command. Both stop on SIGTERM, by pid.
 */
import { expect } from 'chai';
import { spawn, type ChildProcess } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { startCairnd, type CairndHandle } from '../harness/cairnd.js';
import { cairnctlPath } from '../harness/cli.js';
import { stopProcess } from '../harness/process.js';
import { runOk, seededBytes, useStack, waitUntil } from '../harness/stack.js';

describe('the background repairer (cairnctl repair --daemon)', function () {
  const stack = useStack({ profile: '4+2', extentSize: '1MiB' });
  let spare: CairndHandle | undefined;
  const daemons: { child: ChildProcess; log: string }[] = [];

  after(async () => {
    await Promise.all(daemons.map((d) => stopProcess(d.child)));
    await spare?.stop();
  });

  it('elects one leader, and it repairs a lost node without being asked', async () => {
    spare = await startCairnd({ etcd: stack().etcd, name: 'a-3', zone: 'a' });
    await stack().createVolume('d', '8MiB', { profile: '4+2', extentSize: '1MiB' });
    const input = stack().path('d.bin');
    writeFileSync(input, seededBytes('daemon', 8 << 20));
    await runOk('nbdcopy in', 'nbdcopy', ['--flush', input, stack().uri('d')], { deadlineMs: 60_000 });
    const id = await stack().volumeId('d');
    for (let i = 0; i < 2; i++) {
      const child = spawn(
        process.execPath,
        [cairnctlPath, 'repair', '--daemon', '--interval', '300', '--etcd', stack().etcd],
        { stdio: ['ignore', 'pipe', 'pipe'] },
      );
      const d = { child, log: '' };
      child.stdout?.on('data', (c: Buffer) => (d.log += c.toString()));
      child.stderr?.on('data', (c: Buffer) => (d.log += c.toString()));
      daemons.push(d);
    }
    await waitUntil(
      'one daemon to report standby',
      () => (daemons.some((d) => d.log.includes('standby')) ? true : undefined),
      30_000,
    );
    await stack().killNode('b-2');
    await waitUntil(
      'no extent of volume d to reference b-2',
      async () => {
        const all = await stack().etcdGetPrefix(`cairn/v1/extents/${id}/`);
        const left = [...all.values()].filter((v) => v.includes('"b-2"')).length;
        return all.size === 8 && left === 0 ? true : undefined;
      },
      90_000,
    );
    const leaders = daemons.filter((d) => d.log.includes('Repaired'));
    expect(leaders, 'daemons that ran repairs').to.have.length(1);
  });
});
