/**
 * Repair, scrub and drain against real processes: a dev cluster (etcd, six cairnd in zones a, b,
 * c, the frontend) plus two spare nodes, a 4+2 volume written with nbdcopy, then a node SIGKILLed
 * and repaired, a shard file corrupted on disk and scrubbed, a node drained, and finally two more
 * nodes killed: every read still returns the bytes written.
 */
import { expect } from 'chai';
import { existsSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { crc32 } from 'node:zlib';
import { startCairnd, type CairndHandle } from '../harness/cairnd.js';
import { waitFor } from '../../src/dev/index.js';
import { runOk, seededBytes, useStack, expectSameBytes } from '../harness/stack.js';
import { extentMap } from '../harness/faults.js';

const MiB = 1024 * 1024;

/** The data shard files of a volume on a node (its map pages, under `<volume>/map/`, left out). */
function shardFiles(dir: string, volumeId: string): string[] {
  const out: string[] = [];
  const walk = (d: string) => {
    for (const name of readdirSync(d)) {
      const p = join(d, name);
      if (p === join(dir, volumeId, 'map')) continue;
      if (statSync(p).isDirectory()) walk(p);
      else out.push(p);
    }
  };
  try {
    walk(join(dir, volumeId));
  } catch {
    // no shards of this volume on the node
  }
  return out;
}

describe('repair, scrub and drain on a cluster of real processes', function () {
  const stack = useStack({ profile: '4+2', extentSize: '1MiB' });
  const spares: CairndHandle[] = [];
  const data = seededBytes('repair', 24 * MiB);
  let volumeId = '';

  const ctl = async (args: string[]) =>
    JSON.parse((await stack().cairnctl(args.join(' '), [...args, '--json'])).stdout) as Record<string, unknown>;
  const extents = async () => {
    return [...(await extentMap([stack().etcd], volumeId)).values()];
  };
  const readBack = async (label: string) => {
    const f = await stack().startFrontend({ readOnly: true });
    try {
      const out = stack().path(`${label}.bin`);
      await runOk(`nbdcopy out (${label})`, 'nbdcopy', [f.uri('r'), out], { deadlineMs: 120_000 });
      expectSameBytes(readFileSync(out), data, label, MiB);
    } finally {
      await f.stop();
    }
  };
  const waitDown = (name: string) =>
    waitFor(
      `${name} to show as down`,
      async () => {
        const nodes = JSON.parse((await stack().cairnctl('node list', ['node', 'list', '--json'])).stdout) as {
          name: string;
          state: string;
        }[];
        return nodes.find((n) => n.name === name)?.state === 'down' ? true : undefined;
      },
      30_000,
    );

  before(async function () {
    this.timeout(120_000);
    for (const [name, zone] of [
      ['a-3', 'a'],
      ['b-3', 'b'],
    ] as const)
      spares.push(await startCairnd({ etcd: stack().etcd, name, zone }));
    await stack().createVolume('r', '24MiB', { profile: '4+2', extentSize: '1MiB' });
    volumeId = await stack().volumeId('r');
    const input = stack().path('input.bin');
    writeFileSync(input, data);
    await runOk('nbdcopy in', 'nbdcopy', ['--flush', input, stack().uri('r')], { deadlineMs: 120_000 });
  });

  after(async () => {
    await Promise.all(spares.map((s) => s.stop()));
  });

  it('repairs every extent that lost a shard on a SIGKILLed node, onto other nodes', async () => {
    await stack().killNode('b-1');
    await waitDown('b-1');
    const before = (await extents()).filter((e) => e.shards.some((s) => s.target === 'b-1')).length;
    expect(before, 'extents with a shard on b-1').to.be.above(0);
    const dry = await ctl(['repair', '--dry-run']);
    expect((dry['toRepair'] as unknown[]).length).to.equal(before);
    expect(
      (await extents()).filter((e) => e.shards.some((s) => s.target === 'b-1')).length,
      'dry run changes nothing',
    ).to.equal(before);

    const report = await ctl(['repair', '--max-bytes-per-second', '200MiB']);
    expect(report).to.include({ extentsTotal: before, extentsDone: before, shardsRebuilt: before, failed: 0 });
    const after = await extents();
    expect(after.filter((e) => e.shards.some((s) => s.target === 'b-1'))).to.have.length(0);
    for (const e of after)
      expect(new Set(e.shards.map((s) => s.target)).size, 'distinct targets per extent').to.equal(6);
    const checkpoint = JSON.parse((await stack().etcdGet('cairn/v1/repair/progress'))!) as Record<string, unknown>;
    expect(checkpoint).to.include({ state: 'done', extentsDone: before, shardsRebuilt: before });
    // A second run finds nothing left: repair is driven by state, so it resumes, never redoes.
    expect(await ctl(['repair'])).to.include({ extentsTotal: 0 });
    await readBack('after repair');
  });

  it('gc deletes the stale shards of a node that returns after repair, and nothing else', async () => {
    const b1 = stack().node('b-1');
    const stale = shardFiles(b1.dataDir, volumeId);
    expect(stale.length, 'shard files b-1 kept on disk').to.be.above(0);
    const port = Number(b1.address.split(':')[1]);
    spares.push(await startCairnd({ etcd: stack().etcd, name: 'b-1', zone: 'b', dataDir: b1.dataDir, port }));
    const report = await ctl(['gc']);
    expect(report).to.include({ orphansDeleted: stale.length });
    expect(shardFiles(b1.dataDir, volumeId)).to.deep.equal([]);
    // Every shard the extent map points to is still there: a second sweep finds no orphan and
    // a cold read returns every byte.
    expect(await ctl(['gc'])).to.include({ orphansDeleted: 0 });
    await readBack('after gc');
  });

  it('scrub finds a flipped byte in a shard file on disk and rewrites the shard from parity', async () => {
    const node = stack().node('a-1');
    const files = shardFiles(node.dataDir, volumeId);
    expect(files.length, 'shard files on a-1').to.be.above(0);
    const victim = files[0]!;
    const bytes = readFileSync(victim);
    bytes[bytes.length - 100] = bytes[bytes.length - 100]! ^ 0xff;
    writeFileSync(victim, bytes);
    const first = await ctl(['scrub', '--volume', 'r']);
    expect(first).to.include({ corrupt: 1, healed: 1 });
    expect(first['unhealed']).to.deep.equal([]);
    const second = await ctl(['scrub', '--volume', 'r']);
    expect(second).to.include({ corrupt: 0, missing: 0, healed: 0 });
    await readBack('after scrub');
  });

  /** The file of shard `key` on `target`: a dev node's or a spare's data dir. */
  const shardFile = (target: string, key: string): string => {
    const spare = spares.find((h) => h.name === target);
    return join(spare?.dataDir ?? stack().node(target).dataDir, key);
  };

  /** An extent of volume r, its record. */
  const extentRecord = async (e: number) => {
    const rec = (await extentMap([stack().etcd], volumeId)).get(e);
    expect(rec, `extent ${e} of volume r`).to.not.equal(undefined);
    return rec!;
  };

  it('scrub heals three shards of one extent each bad in a different 4 KiB block: every stripe still has five good blocks of six', async () => {
    const rec = await extentRecord(5);
    // Shards 0, 2 and 4: flip a byte in blocks 3, 10 and 40 (each block is [CRC, 4096 bytes] after a 32-byte header).
    const victims = [
      { shard: 0, block: 3 },
      { shard: 2, block: 10 },
      { shard: 4, block: 40 },
    ];
    for (const v of victims) {
      const ref = rec.shards[v.shard]!;
      const file = shardFile(ref.target, ref.key);
      const bytes = readFileSync(file);
      const at = 32 + v.block * 4100 + 4 + 77;
      bytes[at] = bytes[at]! ^ 0x10;
      writeFileSync(file, bytes);
    }
    const first = await ctl(['scrub', '--volume', 'r']);
    expect(first, JSON.stringify(first)).to.include({ corrupt: 3, healed: 3, blocksRebuilt: 3 });
    expect(first['unhealed']).to.deep.equal([]);
    const second = await ctl(['scrub', '--volume', 'r']);
    expect(second, JSON.stringify(second)).to.include({ corrupt: 0, missing: 0, inconsistent: 0, healed: 0 });
    await readBack('after block-level scrub');
  });

  it('scrub proves parity: a data block rewritten with CRCs that pass is found by re-encoding, and rewritten', async () => {
    const rec = await extentRecord(7);
    const ref = rec.shards[1]!;
    const file = shardFile(ref.target, ref.key);
    const bytes = readFileSync(file);
    // Block 20 of data shard 1: change 16 bytes and recompute its CRC with the seed in the header,
    // as a buggy writer that framed the wrong bytes would: every check a node or reader makes passes.
    const seed = bytes.readUInt32LE(20);
    const at = 32 + 20 * 4100;
    bytes.fill(0xa5, at + 4 + 100, at + 4 + 116);
    bytes.writeUInt32LE(crc32(bytes.subarray(at + 4, at + 4100), seed) >>> 0, at);
    writeFileSync(file, bytes);
    const first = await ctl(['scrub', '--volume', 'r']);
    expect(first, JSON.stringify(first)).to.include({ corrupt: 0, inconsistent: 1, healed: 1, blocksRebuilt: 1 });
    expect(first['unhealed']).to.deep.equal([]);
    expect(first['parityChecked']).to.be.above(0);
    const second = await ctl(['scrub', '--volume', 'r']);
    expect(second, JSON.stringify(second)).to.include({ corrupt: 0, inconsistent: 0, healed: 0 });
    await readBack('after parity scrub');
  });

  it('a census finds three shards deleted from live nodes: status counts them at risk, --heal rebuilds them in place', async () => {
    // Two shards of extent 9 and one of extent 10: both extents degraded, both still readable.
    const where = [
      { e: 9, i: 0 },
      { e: 9, i: 3 },
      { e: 10, i: 5 },
    ];
    const goneRefs = await Promise.all(where.map(async ({ e, i }) => (await extentRecord(e)).shards[i]!));
    for (const ref of goneRefs) rmSync(shardFile(ref.target, ref.key));
    type Status = { volumes: { name: string; atRiskBytes: number; missingShards: number; census: unknown }[] };
    const volumeOf = (st: Status) => st.volumes.find((v) => v.name === 'r')!;
    // Liveness alone cannot see it: every node holding them is up.
    expect(volumeOf((await ctl(['status'])) as unknown as Status).atRiskBytes).to.equal(0);

    const census = await ctl(['census', '--volume', 'r']);
    expect(census['census'], JSON.stringify(census)).to.include({ absentShards: 3 });
    const found = (census['census'] as { volumes: { record: { absent: string[] } }[] }).volumes[0]!.record.absent;
    // The found keys are listed sorted.
    expect(found).to.deep.equal(goneRefs.map((r) => r.key).sort());
    const after = volumeOf((await ctl(['status'])) as unknown as Status);
    expect(after, JSON.stringify(after)).to.include({ atRiskBytes: 2 * MiB, missingShards: 3 });
    expect(after.census).to.include({ absentShards: 3 });
    const text = (await stack().cairnctl('status', ['status'])).stdout;
    expect(text, text).to.match(/3 shards missing from nodes that are up/);

    const healed = await ctl(['census', '--volume', 'r', '--heal']);
    expect(healed['heal'], JSON.stringify(healed)).to.include({ missing: 3, healed: 3 });
    const clean = volumeOf((await ctl(['status'])) as unknown as Status);
    expect(clean, JSON.stringify(clean)).to.include({ atRiskBytes: 0, missingShards: 0 });
    for (const ref of goneRefs) expect(existsSync(shardFile(ref.target, ref.key)), ref.key).to.equal(true);
    await readBack('after census heal');
  });

  it('map pages: scrub rewrites a copy that fails its checksum, repair restores a copy deleted from its node', async () => {
    /** The map page files of volume r on every running node of zones a-c. */
    const pageFiles = () =>
      ['a-1', 'a-2', 'b-1', 'b-2', 'c-1', 'c-2', 'a-3', 'b-3'].flatMap((name) => {
        const spare = spares.find((h) => h.name === name);
        const dir = spare?.dataDir ?? stack().node(name).dataDir;
        const mapDir = join(dir, volumeId, 'map');
        if (!existsSync(mapDir)) return [];
        const out: string[] = [];
        const walk = (d: string) => {
          for (const n of readdirSync(d)) {
            const p = join(d, n);
            if (statSync(p).isDirectory()) walk(p);
            else if (!n.includes('~')) out.push(p);
          }
        };
        walk(mapDir);
        return out;
      });
    // The newest page's copies are the root's (a 24-extent map is a single leaf).
    const newest = () => {
      const files = pageFiles();
      const gen = (p: string) => Number(p.split('/').at(-1));
      const top = Math.max(...files.map(gen));
      return files.filter((p) => gen(p) === top);
    };
    const root = newest();
    expect(root.length, 'copies of the root page').to.equal(3);

    const bytes = readFileSync(root[0]!);
    bytes[bytes.length - 10] = bytes[bytes.length - 10]! ^ 0xff; // passes nothing: the node's CRC catches it too
    writeFileSync(root[0]!, bytes);
    const scrub = await ctl(['scrub', '--volume', 'r']);
    expect(scrub['mapPages']).to.include({ copiesCorrupt: 1, copiesWritten: 1 });
    expect(newest(), 'three good copies after scrub').to.have.length(3);
    expect((await ctl(['scrub', '--volume', 'r']))['mapPages']).to.include({ copiesCorrupt: 0, copiesWritten: 0 });

    rmSync(newest()[1]!);
    expect(newest()).to.have.length(2);
    const repair = await ctl(['repair', '--volume', 'r']);
    expect(repair['mapPages']).to.include({ copiesMissing: 1, copiesWritten: 1 });
    expect(newest(), 'three copies after repair').to.have.length(3);
    await readBack('after map page repair');
  });

  it('drains a node: its shards move elsewhere and it holds none afterwards', async () => {
    const holding = (await extents()).filter((e) => e.shards.some((s) => s.target === 'a-3')).length;
    expect(holding, 'extents with a shard on a-3 before the drain').to.be.above(0);
    const report = await ctl(['node', 'drain', 'a-3']);
    expect(report['draining']).to.equal(true);
    expect(report['moved']).to.include({ shardsRebuilt: holding, failed: 0 });
    expect((await extents()).filter((e) => e.shards.some((s) => s.target === 'a-3'))).to.have.length(0);
    expect(shardFiles(spares[0]!.dataDir, volumeId), 'shard files left on a-3').to.deep.equal([]);
  });

  it('rebalances onto a node that joins: only shards placement assigns to it move, by copy', async () => {
    spares.push(await startCairnd({ etcd: stack().etcd, name: 'c-3', zone: 'c' }));
    await waitFor(
      'c-3 to be up',
      async () => {
        const nodes = JSON.parse((await stack().cairnctl('node list', ['node', 'list', '--json'])).stdout) as {
          name: string;
          state: string;
        }[];
        return nodes.find((n) => n.name === 'c-3')?.state === 'up' ? true : undefined;
      },
      30_000,
    );
    const dry = await ctl(['rebalance', '--to', 'c-3', '--dry-run']);
    const planned = dry['planned'] as { moves: { to: string }[] }[];
    const shards = planned.reduce((n, p) => n + p.moves.length, 0);
    expect(shards, 'shards placement assigns to the new node').to.be.above(0);
    for (const p of planned) for (const m of p.moves) expect(m.to).to.equal('c-3');
    const done = await ctl(['rebalance', '--to', 'c-3']);
    expect(done['report']).to.include({ shardsRebuilt: shards, failed: 0 });
    const onC3 = (await extents()).filter((e) => e.shards.some((s) => s.target === 'c-3')).length;
    expect(onC3).to.equal(planned.length);
    expect(shardFiles(spares.at(-1)!.dataDir, volumeId)).to.have.length(shards);
    await readBack('after rebalance');
  });

  it('still reads every byte after two more nodes are SIGKILLed (m = 2 after repair)', async () => {
    await stack().killNode('c-1');
    await stack().killNode('c-2');
    await readBack('two more nodes down');
  });
});
