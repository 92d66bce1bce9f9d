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
import { freePort, stopChild, waitFor } from '../../src/dev/index.js';
import { runOk, seededBytes, useStack } from '../harness/stack.js';
import { extentMap } from '../harness/faults.js';

describe('the background repairer (cairnctl repair --daemon)', function () {
  const stack = useStack({ profile: '4+2', extentSize: '1MiB' });
  let spare: CairndHandle | undefined;
  const daemons: { child: ChildProcess; log: string }[] = [];

  after(async () => {
    await Promise.all(daemons.map((d) => stopChild(d.child)));
    await spare?.stop();
  });

  it('elects one leader, and it repairs a lost node without being asked', async () => {
    spare = await startCairnd({ etcd: stack().etcd, name: 'a-3', zone: 'a' });
    await stack().createVolume('d', '8MiB', { profile: '4+2', extentSize: '1MiB' });
    const input = stack().path('d.bin');
    writeFileSync(input, seededBytes('daemon', 8 << 20));
    await runOk('nbdcopy in', 'nbdcopy', ['--flush', input, stack().uri('d')], { deadlineMs: 60_000 });
    const id = await stack().volumeId('d');
    const ports = [await freePort(), await freePort()];
    for (let i = 0; i < 2; i++) {
      const args = [
        'repair',
        '--daemon',
        '--interval',
        '300',
        '--etcd',
        stack().etcd,
        '--metrics-listen',
        `127.0.0.1:${ports[i]}`,
      ];
      const child = spawn(process.execPath, [cairnctlPath, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
      const d = { child, log: '' };
      child.stdout?.on('data', (c: Buffer) => (d.log += c.toString()));
      child.stderr?.on('data', (c: Buffer) => (d.log += c.toString()));
      daemons.push(d);
    }
    await waitFor(
      'one daemon to report standby',
      () => (daemons.some((d) => d.log.includes('standby')) ? true : undefined),
      30_000,
    );
    await stack().killNode('b-2');
    await waitFor(
      'no extent of volume d to reference b-2',
      async () => {
        const all = await extentMap([stack().etcd], id);
        const left = [...all.values()].filter((r) => r.shards.some((x) => x.target === 'b-2')).length;
        return all.size === 8 && left === 0 ? true : undefined;
      },
      90_000,
    );
    // Leadership may move if a keepalive is late under load (that is the point of a standby),
    // so count what every daemon did: at least one repaired, and their metrics add up to it.
    // The report line follows the last etcd commit by a moment: wait for it.
    await waitFor(
      'a daemon to report its repairs',
      () => (daemons.some((d) => d.log.includes('Repaired')) ? true : undefined),
      30_000,
    );
    const repairers = daemons.filter((d) => d.log.includes('Repaired'));
    expect(repairers.length, 'daemons that ran repairs').to.be.at.least(1);
    let rebuilt = 0;
    for (const port of ports) {
      const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
      const match = /^cairn_repair_shards_rebuilt_total(?:\{[^}]*\})? (\d+)/m.exec(text);
      rebuilt += Number(match?.[1] ?? 0);
    }
    const logged = daemons
      .flatMap((d) => [...d.log.matchAll(/(\d+) shards rebuilt/g)])
      .reduce((sum, m) => sum + Number(m[1]), 0);
    expect(rebuilt, 'cairn_repair_shards_rebuilt_total across the daemons').to.equal(logged).and.be.at.least(1);
  });
});
