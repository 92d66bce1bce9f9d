/** `cairnctl status` text: tables, missing shards by zone, and the verdict last. */
import { expect } from 'chai';
import { extentRanges, statusText } from '../../../src/cli/status.js';
import { summarizeHealth } from '../../../src/api/health.js';
import type { Profile, TargetId, ZoneId } from '../../../src/core/index.js';
import type { ClusterConfig, VolumeRecord } from '../../../src/meta/index.js';

/** Node targets named `<zone>-<i>`, up unless listed in `down`. */
const topologyOf = (names: readonly string[], down: readonly string[] = []) => ({
  targets: names.map((n) => ({
    id: n as TargetId,
    zone: n[0] as ZoneId,
    kind: 'node' as const,
    capacityBytes: 1 << 40,
    usedBytes: 0,
    up: !down.includes(n),
  })),
});

/** A ready 4 MiB volume of 1 MiB extents. */
const recordOf = (name: string, profile: Profile): VolumeRecord => ({
  name,
  id: name,
  sizeBytes: 4 << 20,
  profile,
  extentBytes: 1 << 20,
  zonesRequired: 1,
  targets: 'any',
  createdAt: '',
  state: 'ready',
});

const config = (defaultProfile: Profile): ClusterConfig => ({
  schema: 1,
  createdAt: '',
  defaultProfile,
  extentBytes: 1 << 20,
  zonesRequired: 1,
  targets: 'any',
});

describe('statusText()', () => {
  it('shows zones, each volume with its health, where shards are missing, and ends with the verdict', () => {
    const names = ['a-1', 'a-2', 'b-1', 'b-2', 'c-1', 'c-2'];
    const topology = topologyOf(names, ['b-1']);
    const record = recordOf('data', { k: 4, m: 2 });
    const map = new Map(
      [0, 1, 3].map((e) => [
        e,
        { generation: 1, shardBytes: 1, shards: names.map((t) => ({ target: t, key: `k${e}${t}` })) },
      ]),
    );
    const h = summarizeHealth(
      config({ k: 4, m: 2 }),
      topology,
      [{ record, extents: map, lock: { owner: 'host/7', epoch: 2 } }],
      new Date(0),
    );
    const lines = statusText(h);
    expect(lines[0]).to.equal('Cluster: default profile 4+2, extents of 1 MiB, 1 zone required, targets any');
    expect(lines[1]).to.equal('Nodes: 5 up, 1 down');
    expect(lines).to.include('b     1         1           0   b-1');
    const row = lines.find((l) => l.startsWith('data'));
    expect(row).to.match(
      /^data\s+4 MiB\s+4\+2\s+3\/4 extents\s+degraded: 3 extents, 3 MiB at risk; flushes fail\s+-\s+host\/7 \(epoch 2\)$/,
    );
    expect(lines).to.include('  data: 3 in zone b; extents 0-1, 3');
    expect(lines).to.include('Repair backlog: 3 extents');
    expect(lines.at(-1)).to.equal(h.verdict.summary);
    expect(lines.at(-1)).to.match(/^DEGRADED: 3 MiB at risk in 3 degraded extents of 1 volume \(data\)/);
  });

  it('says "no redundancy" for a volume with m = 0, not ok', () => {
    const h = summarizeHealth(
      config({ k: 1, m: 1 }),
      topologyOf(['a-1', 'b-1']),
      [
        { record: recordOf('bare', { k: 1, m: 0 }), extents: new Map(), lock: null },
        { record: recordOf('mirror', { k: 1, m: 1 }), extents: new Map(), lock: null },
      ],
      new Date(0),
    );
    const lines = statusText(h);
    expect(lines.find((l) => l.startsWith('bare'))).to.match(
      /^bare\s+4 MiB\s+1\+0\s+0\/4 extents\s+no redundancy\s+-\s+-$/,
    );
    expect(lines.find((l) => l.startsWith('mirror'))).to.match(/^mirror\s+4 MiB\s+1\+1\s+0\/4 extents\s+ok\s+-\s+-$/);
    expect(lines.at(-1)).to.equal('WARNING: 1 volume (bare) has no redundancy: losing any one shard loses data');
  });

  it('writes extent lists as ranges', () => {
    expect(extentRanges([])).to.equal('');
    expect(extentRanges([4])).to.equal('4');
    expect(extentRanges([0, 1, 2, 5, 7, 8])).to.equal('0-2, 5, 7-8');
  });
});
