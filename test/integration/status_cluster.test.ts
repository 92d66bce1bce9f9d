/**
 * `cairnctl status` against a real cluster (`cairnctl dev up`: etcd, six cairnd in zones a, b, c,
 * an NBD frontend), with data written by a real NBD client, and storage nodes SIGKILLed one by
 * one: the node shows down, and volumes with shards on it show degraded with the bytes at risk
 * computed from the extent map: checked against numbers derived independently from etcd
 * (etcdctl), at 1 shard lost, at m = 2 lost (a whole zone), and at m + 1 = 3 lost (unreadable).
 */
import { expect } from 'chai';
import type { ClusterHealth, VolumeHealth } from '../../src/api/index.js';
import { waitFor } from '../../src/dev/index.js';
import { nbdsh, useStack, type Stack } from '../harness/stack.js';
import { extentMap } from '../harness/faults.js';

const MiB = 1 << 20;

describe('cairnctl status on a real cluster with nodes SIGKILLed', function () {
  this.timeout(240_000);
  const stack = useStack({ profile: '4+2', extentSize: '1MiB' });

  const status = async (s: Stack): Promise<ClusterHealth> =>
    JSON.parse((await s.cairnctl('cairnctl status --json', ['status', '--json'])).stdout) as ClusterHealth;
  const volumeOf = (h: ClusterHealth, name: string): VolumeHealth => {
    const v = h.volumes.find((x) => x.name === name);
    if (v === undefined)
      throw new Error(`status has no volume ${name}: ${JSON.stringify(h.volumes.map((x) => x.name))}`);
    return v;
  };
  /** Shards per target of a volume's written extents, straight from etcd. */
  const shardsByTarget = async (
    s: Stack,
    volume: string,
  ): Promise<{ extents: number; byTarget: Map<string, number> }> => {
    const id = await s.volumeId(volume);
    const records = await extentMap([s.etcd], id);
    const byTarget = new Map<string, number>();
    for (const rec of records.values()) {
      expect(rec.shards, 'k + m shards per extent').to.have.length(6);
      expect(new Set(rec.shards.map((x) => x.target)).size, 'six distinct targets per extent').to.equal(6);
      for (const { target } of rec.shards) byTarget.set(target, (byTarget.get(target) ?? 0) + 1);
    }
    return { extents: records.size, byTarget };
  };
  const waitDown = (s: Stack, names: string[]): Promise<ClusterHealth> =>
    waitFor(
      `cairnctl status to show ${names.join(', ')} down (the lease expires within ~5 s)`,
      async () => {
        const h = await status(s);
        const down = h.zones.flatMap((z) => z.down);
        return names.every((n) => down.includes(n)) ? h : undefined;
      },
      30_000,
      { intervalMs: 250 },
    );

  it('is healthy once data is written: 16 + 3 extents written, nothing at risk', async () => {
    const s = stack();
    await s.createVolume('full', '16MiB');
    await s.createVolume('part', '64MiB');
    await s.createVolume('empty', '32MiB');
    const mark = s.devFrontendLog().length;
    await nbdsh(
      'write every extent of full',
      'h.pwrite(b"\\x5a" * (16 << 20), 0); h.flush()',
      {},
      { uri: s.uri('full') },
    );
    // Extents 0, 10 and 63 of part: one 4 KiB write each.
    await nbdsh(
      'write three extents of part',
      'for e in (0, 10, 63): h.pwrite(bytes([e + 1]) * 4096, e << 20)\nh.flush()',
      {},
      { uri: s.uri('part') },
    );
    await s.waitForDevDetach('full', mark);
    await s.waitForDevDetach('part', mark);

    const h = await status(s);
    expect(h.verdict.state, h.verdict.summary).to.equal('healthy');
    expect(h.verdict.summary).to.equal('HEALTHY: 6 nodes up in 3 zones; 3 volumes, no data at risk');
    expect(h).to.deep.include({ nodesUp: 6, nodesDown: 0 });
    expect(h.cluster).to.deep.equal({ defaultProfile: '4+2', extentBytes: MiB, zonesRequired: 1, targets: 'any' });
    expect(h.zones.map((z) => `${z.zone}:${z.nodesUp}/${z.nodesDown}`)).to.deep.equal(['a:2/0', 'b:2/0', 'c:2/0']);
    const full = volumeOf(h, 'full');
    expect(full).to.deep.include({ state: 'ok', extents: 16, writtenExtents: 16, atRiskBytes: 0, attachedBy: null });
    expect(volumeOf(h, 'part')).to.deep.include({ state: 'ok', extents: 64, writtenExtents: 3, atRiskBytes: 0 });
    expect(volumeOf(h, 'empty')).to.deep.include({ state: 'ok', writtenExtents: 0 });
  });

  it('after a SIGKILL of b-1: b-1 down, each extent with a shard on it degraded, 1 MiB at risk per extent', async () => {
    const s = stack();
    // From etcd directly: which extents have a shard on b-1 (with six nodes and 4+2 over three
    // zones, every extent has exactly one shard on every node).
    const fullShards = await shardsByTarget(s, 'full');
    const partShards = await shardsByTarget(s, 'part');
    expect(fullShards.extents).to.equal(16);
    expect(partShards.extents).to.equal(3);
    const onB1Full = fullShards.byTarget.get('b-1') ?? 0;
    const onB1Part = partShards.byTarget.get('b-1') ?? 0;
    expect([onB1Full, onB1Part]).to.deep.equal([16, 3]);

    await s.killNode('b-1');
    const h = await waitDown(s, ['b-1']);
    expect(h).to.deep.include({ nodesUp: 5, nodesDown: 1 });
    expect(h.zones.find((z) => z.zone === 'b')).to.deep.equal({
      zone: 'b',
      nodesUp: 1,
      nodesDown: 1,
      s3Targets: 0,
      down: ['b-1'],
    });

    const full = volumeOf(h, 'full');
    expect(full).to.deep.include({
      state: 'degraded',
      writtenExtents: 16,
      degradedExtents: onB1Full,
      unreadableExtents: 0,
      atRiskBytes: onB1Full * MiB, // 16 extents x 1 MiB = 16777216
      unreadableBytes: 0,
      missingShards: onB1Full,
      repairBacklogExtents: 16,
    });
    expect(full.atRiskBytes).to.equal(16_777_216);
    expect(full.missingShardsByZone).to.deep.equal({ a: 0, b: 16, c: 0 });
    expect(full.extentsByShardsLost).to.deep.equal([0, 16, 0, 0, 0, 0, 0]);
    expect(full.affectedExtents).to.deep.equal([...Array(16).keys()]);

    const part = volumeOf(h, 'part');
    expect(part).to.deep.include({ state: 'degraded', degradedExtents: 3, atRiskBytes: 3 * MiB, missingShards: 3 });
    expect(part.affectedExtents).to.deep.equal([0, 10, 63]);
    expect(volumeOf(h, 'empty')).to.deep.include({ state: 'ok', degradedExtents: 0, atRiskBytes: 0 });

    expect(h.totals).to.deep.include({
      degradedVolumes: 2,
      degradedExtents: 19,
      atRiskBytes: 19 * MiB,
      unreadableExtents: 0,
      repairBacklogExtents: 19,
    });
    expect(h.verdict.state).to.equal('degraded');
    expect(h.verdict.summary).to.match(/^DEGRADED: 19 MiB at risk in 19 degraded extents of 2 volumes \(full, part\)/);

    // The same for a person.
    const text = (await s.cairnctl('cairnctl status', ['status'])).stdout.trimEnd().split('\n');
    expect(text[1]).to.equal('Nodes: 5 up, 1 down');
    expect(text.find((l) => l.startsWith('b '))).to.match(/^b\s+1\s+1\s+0\s+b-1$/);
    expect(text.find((l) => l.startsWith('full '))).to.match(/degraded: 16 extents, 16 MiB at risk/);
    expect(text.find((l) => l.startsWith('part '))).to.match(/degraded: 3 extents, 3 MiB at risk/);
    expect(text).to.include('  full: 16 in zone b; extents 0-15');
    expect(text).to.include('  part: 3 in zone b; extents 0, 10, 63');
    expect(text.at(-1)).to.equal(h.verdict.summary);
  });

  it('with zone b gone (m = 2 lost) data is still readable; one more node (3 > m) makes it unreadable', async () => {
    const s = stack();
    await s.killNode('b-2');
    const zoneDown = await waitDown(s, ['b-1', 'b-2']);
    expect(volumeOf(zoneDown, 'full')).to.deep.include({
      state: 'degraded',
      degradedExtents: 16,
      unreadableExtents: 0,
      atRiskBytes: 16 * MiB,
      missingShards: 32,
    });
    expect(volumeOf(zoneDown, 'full').missingShardsByZone).to.deep.equal({ a: 0, b: 32, c: 0 });
    expect(volumeOf(zoneDown, 'full').extentsByShardsLost).to.deep.equal([0, 0, 16, 0, 0, 0, 0]);
    expect(zoneDown.verdict.state).to.equal('degraded');
    // And it really is readable: the frontend decodes from the four shards left.
    const read = await nbdsh(
      'read full back with zone b down',
      'print(h.pread(16 << 20, 0) == b"\\x5a" * (16 << 20))',
      {},
      { uri: s.uri('full'), deadlineMs: 120_000 },
    );
    expect(read.trim()).to.equal('True');

    await s.killNode('a-1');
    const h = await waitDown(s, ['a-1', 'b-1', 'b-2']);
    const full = volumeOf(h, 'full');
    expect(full).to.deep.include({
      state: 'unreadable',
      degradedExtents: 0,
      unreadableExtents: 16,
      atRiskBytes: 16 * MiB,
      unreadableBytes: 16 * MiB,
      missingShards: 48,
    });
    expect(full.missingShardsByZone).to.deep.equal({ a: 16, b: 32, c: 0 });
    expect(volumeOf(h, 'part')).to.deep.include({
      state: 'unreadable',
      unreadableExtents: 3,
      unreadableBytes: 3 * MiB,
    });
    expect(h.verdict.state).to.equal('unavailable');
    expect(h.verdict.summary).to.equal(
      'UNAVAILABLE: 19 extents (19 MiB) of 2 volumes (full, part) lost more than m shards and cannot be read until their targets return; 3 nodes down (a-1, b-1, b-2)',
    );
  });
});
