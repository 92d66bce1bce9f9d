/**
 * Volume and cluster health from the extent map and liveness alone: the arithmetic of degraded,
 * unreadable and at-risk extents at the m and m+1 boundaries, and the verdict. Pure; no etcd.
 */
import { expect } from 'chai';
import type { TargetId, ZoneId } from '../../../src/core/index.js';
import {
  assessExtentMap,
  livenessOf,
  summarizeHealth,
  unregisteredZone,
  type VolumeInput,
} from '../../../src/api/health.js';
import type { ClusterConfig, ExtentRecord, VolumeRecord } from '../../../src/meta/index.js';
import type { Topology } from '../../../src/placement/index.js';

const MiB = 1 << 20;
const nodes = ['a-1', 'a-2', 'b-1', 'b-2', 'c-1', 'c-2'];

function topology(down: readonly string[] = [], names: readonly string[] = nodes): Topology {
  return {
    targets: names.map((name) => ({
      id: name as TargetId,
      zone: name.slice(0, 1) as ZoneId,
      kind: 'node' as const,
      capacityBytes: 1 << 40,
      usedBytes: 0,
      up: !down.includes(name),
    })),
  };
}

/** One shard of every extent on each node, rotated so shard i of extent e sits on node (e+i) % 6. */
function extents(count: number, first = 0): Map<number, ExtentRecord> {
  const out = new Map<number, ExtentRecord>();
  for (let e = first; e < first + count; e++) {
    out.set(e, {
      generation: 1,
      shardBytes: MiB / 4,
      shards: nodes.map((_, i) => ({ target: nodes[(e + i) % nodes.length]!, key: `v/${e}/1/${i}` })),
    });
  }
  return out;
}

const profile = { k: 4, m: 2 };
const volume = (name: string, sizeBytes: number): VolumeRecord => ({
  name,
  id: `${name}-id`,
  sizeBytes,
  profile,
  extentBytes: MiB,
  zonesRequired: 1,
  targets: 'any',
  createdAt: '2026-01-01T00:00:00.000Z',
  state: 'ready',
});
const config: ClusterConfig = {
  schema: 1,
  createdAt: '2026-01-01T00:00:00.000Z',
  defaultProfile: profile,
  extentBytes: MiB,
  zonesRequired: 1,
  targets: 'any',
};

describe('assessExtentMap()', () => {
  const assess = (down: string[], map = extents(16), sizeBytes = 16 * MiB, readDegraded?: Set<number>) =>
    assessExtentMap({
      sizeBytes,
      extentBytes: MiB,
      profile,
      extents: map,
      liveness: livenessOf(topology(down)),
      ...(readDegraded === undefined ? {} : { readDegraded }),
    });

  it('counts shards a census found missing from live targets as lost: three of one extent make it unreadable', () => {
    const h = assessExtentMap({
      sizeBytes: 16 * MiB,
      extentBytes: MiB,
      profile,
      extents: extents(16),
      liveness: livenessOf(topology([])),
      absent: new Set(['v/3/1/0', 'v/3/1/1', 'v/3/1/2', 'v/7/1/4', 'v/99/1/0']),
    });
    expect(h).to.deep.include({
      degradedExtents: 1,
      unreadableExtents: 1,
      atRiskBytes: 2 * MiB,
      unreadableBytes: MiB,
      missingShards: 4,
    });
    // Shard i of extent e sits on node (e + i) % 6: extent 3's 0, 1, 2 on b-2, c-1, c-2; extent 7's 4 on c-2.
    expect(h.missingShardsByZone).to.deep.equal({ a: 0, b: 1, c: 3 });
    expect(h.affectedExtents).to.deep.equal([3, 7]);
  });

  it('finds nothing at risk when every target is up, and lists every zone with 0', () => {
    const h = assess([]);
    expect(h).to.deep.include({
      writtenExtents: 16,
      degradedExtents: 0,
      unreadableExtents: 0,
      atRiskBytes: 0,
      missingShards: 0,
      repairBacklogExtents: 0,
    });
    expect(h.missingShardsByZone).to.deep.equal({ a: 0, b: 0, c: 0 });
    expect(h.extentsByShardsLost).to.deep.equal([16, 0, 0, 0, 0, 0, 0]);
  });

  it('one node down: every extent lost 1 of its m = 2 spares; 16 x 1 MiB at risk, 16 shards missing in its zone', () => {
    const h = assess(['b-1']);
    expect(h).to.deep.include({
      degradedExtents: 16,
      unreadableExtents: 0,
      atRiskBytes: 16 * MiB,
      unreadableBytes: 0,
      missingShards: 16,
      repairBacklogExtents: 16,
    });
    expect(h.missingShardsByZone).to.deep.equal({ a: 0, b: 16, c: 0 });
    expect(h.extentsByShardsLost).to.deep.equal([0, 16, 0, 0, 0, 0, 0]);
    expect(h.affectedExtents).to.have.length(16);
  });

  it('m = 2 lost (a whole zone) is still degraded, readable; m + 1 = 3 lost is unreadable', () => {
    const zone = assess(['b-1', 'b-2']);
    expect(zone).to.deep.include({
      degradedExtents: 16,
      unreadableExtents: 0,
      atRiskBytes: 16 * MiB,
      missingShards: 32,
    });
    expect(zone.missingShardsByZone).to.deep.equal({ a: 0, b: 32, c: 0 });
    const three = assess(['b-1', 'b-2', 'a-1']);
    expect(three).to.deep.include({
      degradedExtents: 0,
      unreadableExtents: 16,
      atRiskBytes: 16 * MiB,
      unreadableBytes: 16 * MiB,
      missingShards: 48,
    });
    expect(three.extentsByShardsLost).to.deep.equal([0, 0, 0, 16, 0, 0, 0]);
  });

  it('counts only written extents, each at its own length: a short last extent is at risk for its bytes', () => {
    // 3.5 MiB volume: extents 0..3, the last one 0.5 MiB; extents 1 and 3 written.
    const map = new Map([...extents(4)].filter(([e]) => e === 1 || e === 3));
    const h = assess(['c-2'], map, 3.5 * MiB);
    expect(h.writtenExtents).to.equal(2);
    expect(h.degradedExtents).to.equal(2);
    expect(h.atRiskBytes).to.equal(MiB + MiB / 2);
    expect(h.affectedExtents).to.deep.equal([1, 3]);
  });

  it('counts shards on a target no longer registered as missing, in the (unregistered) zone', () => {
    const map = extents(2);
    const rec = map.get(0)!;
    map.set(0, { ...rec, shards: rec.shards.map((s, i) => (i === 0 ? { ...s, target: 'gone-1' } : s)) });
    const h = assess([], map, 2 * MiB);
    expect(h.degradedExtents).to.equal(1);
    expect(h.missingShardsByZone).to.deep.equal({ a: 0, b: 0, c: 0, [unregisteredZone]: 1 });
  });

  it('adds extents a read found degraded to the repair backlog, once each', () => {
    const h = assess(['a-1'], extents(4), 4 * MiB, new Set([2, 3, 99]));
    // 4 lost a shard to a-1; 2 and 3 are among them; 99 is not written.
    expect(h.repairBacklogExtents).to.equal(4);
    const healthy = assess([], extents(4), 4 * MiB, new Set([2]));
    expect(healthy.repairBacklogExtents).to.equal(1);
    expect(healthy.atRiskBytes).to.equal(0);
  });
});

describe('summarizeHealth()', () => {
  const now = new Date('2026-11-21T10:00:00.000Z');
  const vols = (): VolumeInput[] => [
    { record: volume('data', 16 * MiB), extents: extents(16), lock: { owner: 'host/42', epoch: 3 } },
    { record: volume('empty', 64 * MiB), extents: new Map(), lock: null },
  ];

  it('healthy: everything up, nothing at risk', () => {
    const h = summarizeHealth(config, topology(), vols(), now);
    expect(h.verdict.state).to.equal('healthy');
    expect(h.verdict.summary).to.equal('HEALTHY: 6 nodes up in 3 zones; 2 volumes, no data at risk');
    expect(h.nodesUp).to.equal(6);
    expect(h.volumes.map((v) => [v.name, v.state, v.writeBlocked])).to.deep.equal([
      ['data', 'ok', null],
      ['empty', 'ok', null],
    ]);
    expect(h.volumes[0]!.attachedBy).to.deep.equal({ owner: 'host/42', epoch: 3 });
    expect(h.volumes[1]!.extents).to.equal(64);
  });

  it('warning: a node down that holds no written data', () => {
    const seven = [...nodes, 'c-3'];
    const h = summarizeHealth(config, topology(['c-3'], seven), vols(), now);
    expect(h.verdict.state).to.equal('warning');
    expect(h.verdict.summary).to.equal('WARNING: 1 node down (c-3); no written data has shards on them');
    expect(h.zones.find((z) => z.zone === 'c')).to.deep.equal({
      zone: 'c',
      nodesUp: 2,
      nodesDown: 1,
      s3Targets: 0,
      down: ['c-3'],
    });
  });

  it('degraded: bytes at risk, and flushes that placement cannot take', () => {
    const h = summarizeHealth(config, topology(['b-1']), vols(), now);
    expect(h.verdict.state).to.equal('degraded');
    expect(h.totals).to.deep.include({
      degradedVolumes: 1,
      degradedExtents: 16,
      atRiskBytes: 16 * MiB,
      writeBlockedVolumes: 2,
    });
    expect(h.verdict.summary).to.match(
      /^DEGRADED: 16 MiB at risk in 16 degraded extents of 1 volume \(data\); flushes to 2 volumes \(data, empty\) will fail \(6 distinct usable targets needed, 5 of 6 usable/,
    );
    expect(h.verdict.summary).to.match(/1 node down \(b-1\)$/);
  });

  it('warning: a volume with m = 0 has no redundancy, even with every node up', () => {
    const bare: VolumeInput = {
      record: { ...volume('scratch', 16 * MiB), profile: { k: 6, m: 0 } },
      extents: extents(16),
      lock: null,
    };
    const h = summarizeHealth(config, topology(), [...vols(), bare], now);
    expect(h.volumes.map((v) => [v.name, v.state, v.noRedundancy])).to.deep.equal([
      ['data', 'ok', false],
      ['empty', 'ok', false],
      ['scratch', 'ok', true],
    ]);
    expect(h.totals.noRedundancyVolumes).to.equal(1);
    expect(h.verdict).to.deep.equal({
      state: 'warning',
      summary: 'WARNING: 1 volume (scratch) has no redundancy: losing any one shard loses data',
    });
    // One node down: every 6+0 extent lost a shard, more than m = 0, and cannot be read.
    const down = summarizeHealth(config, topology(['a-1']), [bare], now);
    expect(down.verdict.state).to.equal('unavailable');
    expect(down.volumes[0]).to.deep.include({ state: 'unreadable', unreadableExtents: 16, noRedundancy: true });
  });

  it('degraded: writes of a volume whose final flush keeps failing are not yet durable', () => {
    const pendingFlush = {
      owner: 'host/42',
      epoch: 3,
      since: '2026-11-21T09:59:00.000Z',
      attempts: 4,
      dirtyBytes: 3 * MiB,
      lastError: 'Cannot place extent 2',
      giveUpAt: '2026-11-21T10:01:00.000Z',
    };
    const [data, empty] = vols();
    const h = summarizeHealth(config, topology(), [{ ...data!, pendingFlush }, empty!], now);
    expect(h.volumes[0]!.pendingFlush).to.deep.equal(pendingFlush);
    expect(h.volumes[1]!.pendingFlush).to.equal(null);
    expect(h.totals).to.deep.include({ pendingFlushVolumes: 1, pendingFlushBytes: 3 * MiB });
    expect(h.verdict.state).to.equal('degraded');
    expect(h.verdict.summary).to.equal(
      'DEGRADED: 3 MiB written to 1 volume (data) not yet durable: their clients are gone and the final flush keeps failing (retried until it succeeds or gives up); every node up',
    );
  });

  it('unavailable: extents that lost more than m shards come first', () => {
    const h = summarizeHealth(config, topology(['a-1', 'b-1', 'c-1']), vols(), now);
    expect(h.verdict.state).to.equal('unavailable');
    expect(h.volumes[0]!.state).to.equal('unreadable');
    expect(h.verdict.summary).to.match(
      /^UNAVAILABLE: 16 extents \(16 MiB\) of 1 volume \(data\) lost more than m shards and cannot be read until their targets return; 3 nodes down \(a-1, b-1, c-1\)$/,
    );
  });
});
