/**
 * `cairnctl migrate` against real processes: a volume whose extent map is kept the old way (one
 * etcd key per extent, no map root) is refused at attach with a message naming the command; the
 * command moves the records into map pages (dry run first, changing nothing), is idempotent, and
 * every byte reads back afterwards.
 */
import { expect } from 'chai';
import { readFileSync, writeFileSync } from 'node:fs';
import { extentMap } from '../harness/faults.js';
import { expectSameBytes, nbdsh, runClient, runOk, seededBytes, useStack } from '../harness/stack.js';

const MiB = 1024 * 1024;

describe('the extent map as pages, from the outside: cairnctl migrate, a 1 PiB thin volume', function () {
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

    const infoOf = async () =>
      JSON.parse((await s.cairnctl('volume info', ['volume', 'info', 'mig', '--json'])).stdout) as {
        map: { form: string; writtenExtents: number };
      };
    expect((await infoOf()).map.form, 'volume info before the migration').to.equal('per-extent etcd keys');

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
    expect((await infoOf()).map).to.include({ form: 'pages', writtenExtents: 6 });

    const reader = await s.startFrontend({ readOnly: true });
    try {
      await runOk('nbdcopy out', 'nbdcopy', [reader.uri('mig'), s.path('mig.out')], { deadlineMs: 60_000 });
      expectSameBytes(readFileSync(s.path('mig.out')), data, 'after migrate', MiB);
    } finally {
      await reader.stop();
    }
  });

  it('creates a 1 PiB thin volume and writes it sparsely: one etcd key for its map, a few pages', async () => {
    const s = stack();
    await s.cairnctl('create a 1 PiB volume', ['volume', 'create', 'peta', '1PiB', '--extent-size', '4MiB']);
    const id = await s.volumeId('peta');
    const PiB = 2 ** 50;
    const offsets = [0, PiB / 2 + 12 * MiB, PiB - 4096];
    const f = await s.startFrontend();
    try {
      const out = await nbdsh(
        'write and read back three 4 KiB blocks of a 1 PiB volume',
        [
          'import json',
          `offs = ${JSON.stringify(offsets)}`,
          'for i, o in enumerate(offs): h.pwrite(bytes([i + 1]) * 4096, o)',
          'h.flush()',
          'print(json.dumps({"size": h.get_size(), "back": [h.pread(4096, o) == bytes([i + 1]) * 4096 for i, o in enumerate(offs)], "zero": h.pread(4096, 1 << 40) == bytes(4096)}))',
        ].join('\n'),
        {},
        { uri: f.uri('peta') },
      );
      expect(JSON.parse(out.trim().split('\n').at(-1)!)).to.deep.equal({
        size: PiB,
        back: [true, true, true],
        zero: true,
      });
    } finally {
      await f.stop();
    }
    // The map: one root in etcd (written extents counted in it), no per-extent key, three leaves.
    const root = JSON.parse((await s.etcdGet(`cairn/v1/maproots/${id}`))!) as { levels: number; written: number };
    expect(root).to.include({ levels: 4, written: 3 });
    expect((await s.etcdGetPrefix(`cairn/v1/extents/${id}/`)).size).to.equal(0);
    const info = JSON.parse((await s.cairnctl('volume info', ['volume', 'info', 'peta', '--json'])).stdout) as {
      map: Record<string, unknown>;
    };
    expect(info.map).to.include({ form: 'pages', levels: 4, writtenExtents: 3 });
    expect([...(await extentMap([s.etcd], id)).keys()]).to.deep.equal(offsets.map((o) => Math.floor(o / (4 * MiB))));
  });
});
