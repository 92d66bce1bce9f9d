/**
 * `cairnctl migrate` against real processes: a volume whose extent map is kept the old way (one
 * etcd key per extent, no map root) is refused at attach with a message naming the command; the
 * command moves the records into map pages (dry run first, changing nothing), is idempotent, and
 * every byte reads back afterwards.
 */
import { expect } from 'chai';
import { readFileSync, writeFileSync } from 'node:fs';
import { extentMap } from '../harness/faults.js';
import { expectSameBytes, runClient, runOk, seededBytes, useStack } from '../harness/stack.js';

const MiB = 1024 * 1024;

describe('cairnctl migrate: per-extent etcd keys into map pages', function () {
  this.timeout(240_000);
  const stack = useStack({ profile: '2+1', extentSize: '1MiB' });
  const data = seededBytes('migrate', 6 * MiB);

  const ctl = async (args: string[]) =>
    JSON.parse((await stack().cairnctl(args.join(' '), [...args, '--json'])).stdout) as {
      volumes: { volume: string; outcome: string; extents: number }[];
    };
  const etcdctl = (args: string[]) =>
    runOk(`etcdctl ${args.join(' ')}`, 'etcdctl', ['--endpoints', stack().etcd, '--command-timeout=5s', ...args], {
      deadlineMs: 15_000,
    });

  it('refuses the old form at attach, migrates it (dry run first; a second run has nothing to do), and every byte reads back', async () => {
    const s = stack();
    await s.createVolume('mig', '6MiB');
    const id = await s.volumeId('mig');
    writeFileSync(s.path('mig.src'), data);
    const writer = await s.startFrontend();
    await runOk('nbdcopy in', 'nbdcopy', ['--flush', s.path('mig.src'), writer.uri('mig')], { deadlineMs: 60_000 });
    await writer.stop();

    // Put the map back the way older Cairn kept it: a key per extent, no root.
    const records = await extentMap([s.etcd], id);
    expect(records.size, 'extents written').to.equal(6);
    for (const [e, rec] of records)
      await etcdctl(['put', `cairn/v1/extents/${id}/${String(e).padStart(12, '0')}`, JSON.stringify(rec)]);
    await etcdctl(['del', `cairn/v1/maproots/${id}`]);

    const refused = await s.startFrontend();
    const info = await runClient('nbdinfo', [refused.uri('mig')], { deadlineMs: 30_000 });
    expect(info.code, 'attach of a volume with per-extent keys').to.not.equal(0);
    await refused.waitForLog(/per-extent etcd keys.*cairnctl migrate/);
    await refused.stop();

    const dry = await ctl(['migrate', '--dry-run']);
    expect(dry.volumes).to.deep.include({ volume: 'mig', outcome: 'would migrate', extents: 6, pagesWritten: 0 });
    expect(await s.etcdGet(`cairn/v1/maproots/${id}`), 'a dry run publishes no root').to.equal(undefined);

    const done = await ctl(['migrate']);
    expect(done.volumes.find((v) => v.volume === 'mig')).to.include({ outcome: 'migrated', extents: 6 });
    expect((await s.etcdGetPrefix(`cairn/v1/extents/${id}/`)).size, 'per-extent keys left').to.equal(0);
    expect(await s.etcdGet(`cairn/v1/maproots/${id}`), 'the root').to.be.a('string');
    expect([...(await extentMap([s.etcd], id))]).to.deep.equal([...records]);
    expect((await ctl(['migrate'])).volumes.find((v) => v.volume === 'mig')).to.include({ outcome: 'nothing to do' });

    const reader = await s.startFrontend({ readOnly: true });
    try {
      await runOk('nbdcopy out', 'nbdcopy', [reader.uri('mig'), s.path('mig.out')], { deadlineMs: 60_000 });
      expectSameBytes(readFileSync(s.path('mig.out')), data, 'after migrate', MiB);
    } finally {
      await reader.stop();
    }
  });
});
