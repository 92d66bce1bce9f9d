import { expect } from 'chai';
import { MapRootMovedError, UnavailableError } from '../../src/core/index.js';
import {
  AlreadyExistsError,
  EtcdMeta,
  FencedError,
  VolumeLockedError,
  extentsPerTxnMax,
  keys,
  parseEndpoints,
  type ClusterConfig,
  type VolumeRecord,
} from '../../src/meta/index.js';
import { startEtcd, type EtcdHandle } from '../harness/etcd.js';
import { setFailpoint } from '../../src/core/index.js';
import { CodecPool } from '../../src/codec/index.js';
import { EtcdExtentMap, EtcdMapRoots } from '../../src/frontend/index.js';
import { MapTree, ReplicatedMapPages, mapLevelsFor } from '../../src/extent/index.js';
import { MemoryShardStore } from '../../src/shard/index.js';
import { TreeExtentMapStore } from '../../src/volume/index.js';
import { checkFencedMultiBatchCommit, fencedCommitVolume } from '../support/fenced_commit.js';
import { freePort, waitFor } from '../../src/dev/index.js';
import { readFileSync } from 'node:fs';

const cluster: ClusterConfig = {
  schema: 1,
  createdAt: '2026-11-21T00:00:00Z',
  defaultProfile: { k: 4, m: 2 },
  extentBytes: 4 << 20,
  zonesRequired: 1,
  targets: 'any',
};

function volume(name: string): VolumeRecord {
  return {
    name,
    id: EtcdMeta.newVolumeId(),
    sizeBytes: 1 << 30,
    profile: { k: 4, m: 2 },
    extentBytes: 4 << 20,
    zonesRequired: 1,
    targets: 'any',
    createdAt: new Date().toISOString(),
    state: 'ready',
  };
}

async function rejection(p: Promise<unknown>): Promise<unknown> {
  try {
    await p;
  } catch (err) {
    return err;
  }
  throw new Error('expected a rejection');
}

describe('EtcdMeta against a real etcd', () => {
  let etcd: EtcdHandle;
  let meta: EtcdMeta;

  before(async () => {
    etcd = await startEtcd();
    meta = new EtcdMeta([etcd.endpoint], { timeoutMs: 3000 });
  });

  after(async () => {
    meta?.close();
    await etcd?.stop();
  });

  it('initialises the cluster once, and again only with force', async () => {
    await meta.initCluster(cluster, false);
    const err = await rejection(meta.initCluster({ ...cluster, extentBytes: 1 }, false));
    expect(err).to.be.instanceOf(AlreadyExistsError).and.have.property('message').that.contains('--force');
    expect((await meta.getCluster())?.extentBytes).to.equal(4 << 20);
    await meta.initCluster({ ...cluster, extentBytes: 8 << 20 }, true);
    expect((await meta.getCluster())?.extentBytes).to.equal(8 << 20);
  });

  it('creates a volume once; a duplicate is refused and the first record is kept', async () => {
    const first = volume('dup');
    await meta.createVolume(first);
    const err = await rejection(meta.createVolume(volume('dup')));
    expect(err).to.be.instanceOf(AlreadyExistsError).and.have.property('message', 'Volume "dup" already exists');
    expect((await meta.getVolume('dup'))?.id).to.equal(first.id);
  });

  it('keeps a map-tree root at maproots/<id>: swaps are fenced by the lock and by the root they replace', async () => {
    const v = volume('tree');
    await meta.createVolume(v);
    const extents = 256 * 300;
    const levels = mapLevelsFor(extents);
    const pages = new ReplicatedMapPages({
      targets: new Map(['p1', 'p2', 'p3'].map((n) => [n, new MemoryShardStore(n)])),
    });
    const rec = (e: number, g: number) => ({
      generation: g,
      shardBytes: 1024,
      shards: [{ target: 'n1', key: `${v.id}/${e}/${g}/0` }],
    });
    const a = await meta.acquireLock('tree', 'frontend-a');
    const mapOf = (lock: typeof a | undefined) =>
      new TreeExtentMapStore({
        volumeId: v.id,
        extents,
        pages,
        roots: new EtcdMapRoots(meta, v, lock, levels),
        epoch: lock?.epoch ?? 0,
      });
    const writerA = mapOf(a);
    expect((await writerA.load()).size).to.equal(0);
    await writerA.commit([
      { index: 7, record: rec(7, 1) },
      { index: 70_000, record: rec(70_000, 1) },
    ]);
    const root = await meta.readMapRoot(v.id, levels);
    expect(root.levels).to.equal(levels);
    expect(root.page?.checksum).to.match(/^[0-9a-f]{32}$/);
    expect([...(await mapOf(undefined).loadAll()).keys()]).to.deep.equal([7, 70_000]);
    // The root carries what attach needs without reading records: the count of written extents.
    expect(root.written).to.equal(2);

    // B takes the volume over and commits; A's next commit is refused and publishes nothing.
    const b = await meta.acquireLock('tree', 'frontend-b', { takeover: true });
    const writerB = mapOf(b);
    await writerB.load();
    await writerB.commit([{ index: 7, record: null }]);
    expect(await rejection(writerA.commit([{ index: 8, record: rec(8, 2) }]))).to.be.instanceOf(FencedError);
    // A swap over a root that is no longer current is refused, even under the lock, as a moved
    // root (the writer still holds the volume), not as fencing.
    const before = await meta.readMapRoot(v.id, levels);
    await writerB.commit([{ index: 9, record: rec(9, 3) }]);
    expect(await rejection(meta.swapMapRoot(b, v.id, before, before))).to.be.instanceOf(MapRootMovedError);
    expect([...(await mapOf(undefined).loadAll()).keys()]).to.deep.equal([9, 70_000]);

    // A repair replaces the root without the lock, only over the current one; the writer's next
    // commit finds the root moved and rebuilds on it: both changes are published.
    const repairEpoch = await meta.allocateEpoch('tree');
    expect(repairEpoch, 'an epoch above the writer').to.equal(b.epoch + 1);
    const repairTree = new MapTree({ volumeId: v.id, extents, store: pages });
    const current = await meta.readMapRoot(v.id, levels);
    const moved = await repairTree.commit(current, new Map([[70_000, rec(70_000, 4)]]), repairEpoch * 2 ** 32 + 1);
    expect(await meta.replaceMapRoot(v.id, before, moved.root), 'over a stale root').to.equal(false);
    expect(await meta.replaceMapRoot(v.id, current, moved.root), 'over the current root').to.equal(true);
    await writerB.commit([{ index: 10, record: rec(10, 5) }]);
    const after = await mapOf(undefined).loadAll();
    expect([...after.keys()]).to.deep.equal([9, 10, 70_000]);
    expect(after.get(70_000)?.generation, "the repair's record stays").to.equal(4);
    // The next lock gets an epoch above the one the repair took.
    await b.release();
    expect((await meta.acquireLock('tree', 'frontend-c')).epoch).to.equal(repairEpoch + 1);
    // A read-only view cannot commit.
    expect(await rejection(mapOf(undefined).commit([])))
      .to.have.property('message')
      .that.contains('read-only');
  });

  it('hands out increasing epochs and fences a writer whose lock was taken over', async () => {
    const v = volume('fenced');
    await meta.createVolume(v);
    const a = await meta.acquireLock('fenced', 'frontend-a');
    expect(a.epoch).to.equal(1);

    // A second writer is refused while A holds the lock...
    const refused = await rejection(meta.acquireLock('fenced', 'frontend-b'));
    expect(refused)
      .to.be.instanceOf(VolumeLockedError)
      .and.have.property('message')
      .that.contains('frontend-a (epoch 1)');

    // ...A can publish...
    const rec = (g: number) => ({ generation: g, shardBytes: 1024, shards: [{ target: 'n1', key: `k/${g}` }] });
    await meta.commitExtents(a, v.id, [{ index: 0, record: rec(1) }]);

    // ...until B takes over: B gets epoch 2 and A's next commit publishes nothing.
    const b = await meta.acquireLock('fenced', 'frontend-b', { takeover: true });
    expect(b.epoch).to.equal(2);
    const fenced = await rejection(
      meta.commitExtents(a, v.id, [
        { index: 0, record: rec(99) },
        { index: 1, record: rec(99) },
      ]),
    );
    expect(fenced).to.be.instanceOf(FencedError).and.have.property('message').that.contains('epoch 1');
    expect((await meta.getExtent(v.id, 0))?.generation).to.equal(1);
    expect(await meta.getExtent(v.id, 1)).to.equal(null);

    await meta.commitExtents(b, v.id, [{ index: 0, record: rec(2) }]);
    expect((await meta.getExtent(v.id, 0))?.generation).to.equal(2);

    // A's release must not remove B's lock.
    await a.release();
    expect((await meta.getLock('fenced'))?.owner).to.equal('frontend-b');
    await b.release();
    expect(await meta.getLock('fenced')).to.equal(null);
    const c = await meta.acquireLock('fenced', 'frontend-c');
    expect(c.epoch).to.equal(3);
    await c.release();
  });

  it('keeps the extents a fenced multi-batch commit published, and says which they were', async () => {
    // 150 extents are two etcd transactions (extentsPerTxnMax = 100); another frontend takes the
    // volume over between them. The first 100 are published and must stay readable.
    const v = { ...volume('fence-batches'), id: fencedCommitVolume.id, extentBytes: 4096, profile: { k: 2, m: 1 } };
    await meta.createVolume(v);
    const a = await meta.acquireLock(v.name, 'frontend-a');
    const other = new EtcdMeta([etcd.endpoint], { timeoutMs: 3000 });
    const pool = await CodecPool.start({ threads: 1, memoryBytes: 16 * 1024 * 1024 });
    const removeFailpoint = setFailpoint('meta.commit.between_batches', async () => {
      await other.acquireLock(v.name, 'frontend-b', { takeover: true });
    });
    try {
      const { published } = await checkFencedMultiBatchCommit({
        map: new EtcdExtentMap(meta, v, a),
        reload: () => other.listExtents(v.id),
        codec: pool,
        extents: extentsPerTxnMax + 50,
      });
      expect(published).to.equal(extentsPerTxnMax);
    } finally {
      removeFailpoint();
      await pool.close();
      other.close();
    }
  });

  it("records a pending final flush only for the lock's holder, and drops it with the lock", async () => {
    await meta.createVolume(volume('pending'));
    const pending = {
      owner: 'frontend-a',
      epoch: 0,
      since: '2026-12-07T00:00:00.000Z',
      attempts: 2,
      dirtyBytes: 4096,
      lastError: 'Cannot place extent 0',
      giveUpAt: '2026-12-07T00:02:00.000Z',
    };
    const a = await meta.acquireLock('pending', 'frontend-a');
    await a.setPendingFlush({ ...pending, epoch: a.epoch });
    expect((await meta.listPendingFlushes()).get('pending')).to.deep.equal({ ...pending, epoch: a.epoch });
    await a.setPendingFlush(null);
    expect((await meta.listPendingFlushes()).has('pending')).to.equal(false);
    await a.setPendingFlush({ ...pending, epoch: a.epoch });
    await a.release();
    expect((await meta.listPendingFlushes()).has('pending'), 'released with the lock').to.equal(false);

    // A writer that was taken over writes nothing.
    const b = await meta.acquireLock('pending', 'frontend-b');
    const c = await meta.acquireLock('pending', 'frontend-c', { takeover: true });
    await b.setPendingFlush({ ...pending, owner: 'frontend-b', epoch: b.epoch });
    expect((await meta.listPendingFlushes()).has('pending'), 'fenced writer').to.equal(false);
    await c.release();
    await b.release();
  });

  it('lets exactly one of two simultaneous writers take a free lock', async () => {
    const v = volume('race');
    await meta.createVolume(v);
    const other = new EtcdMeta([etcd.endpoint], { timeoutMs: 3000 });
    try {
      const results = await Promise.allSettled([
        meta.acquireLock('race', 'frontend-a'),
        other.acquireLock('race', 'frontend-b'),
      ]);
      const won = results.filter((r) => r.status === 'fulfilled');
      expect(won).to.have.length(1);
      const lost = results.find((r) => r.status === 'rejected') as PromiseRejectedResult;
      expect(lost.reason).to.be.instanceOf(VolumeLockedError);
      const lock = (won[0] as PromiseFulfilledResult<Awaited<ReturnType<EtcdMeta['acquireLock']>>>).value;
      expect(lock.epoch).to.equal(1);
      expect((await meta.getLock('race'))?.owner).to.equal(lock.owner);
      await lock.release();
    } finally {
      other.close();
    }
  });

  it('fences a writer whose lock key vanished (as when its lease expires)', async () => {
    const v = volume('expired');
    await meta.createVolume(v);
    const a = await meta.acquireLock('expired', 'frontend-a');
    await meta.client.delete().key(keys.lock('expired')).exec();
    const err = await rejection(
      meta.commitExtents(a, v.id, [{ index: 3, record: { generation: 1, shardBytes: 1, shards: [] } }]),
    );
    expect(err).to.be.instanceOf(FencedError);
    expect(await meta.getExtent(v.id, 3)).to.equal(null);
    await a.release();
  });

  it('refuses to delete an attached volume, and queues a deleted one for garbage collection', async () => {
    const v = volume('gone');
    await meta.createVolume(v);
    const lock = await meta.acquireLock('gone', 'frontend-a');
    expect(await rejection(meta.deleteVolume('gone'))).to.be.instanceOf(VolumeLockedError);
    await lock.release();
    await meta.deleteVolume('gone');
    expect(await meta.getVolume('gone')).to.equal(null);
    expect((await meta.listGcVolumes()).map((g) => g.id)).to.include(v.id);
  });

  it('names the endpoint when etcd is unreachable, within the deadline', async () => {
    const port = await freePort();
    const dead = new EtcdMeta([`http://127.0.0.1:${port}`], { timeoutMs: 1500 });
    const start = Date.now();
    const err = await rejection(dead.getCluster());
    dead.close();
    expect(err).to.be.instanceOf(UnavailableError);
    expect((err as Error).message).to.contain(`127.0.0.1:${port}`);
    expect(Date.now() - start).to.be.below(5000);
  });

  it('turns a hung etcd (no answer at all) into an error naming it, instead of hanging', async () => {
    const other = await startEtcd({ name: 'hung' });
    const hung = new EtcdMeta([other.endpoint], { timeoutMs: 1000 });
    try {
      await hung.getCluster();
      process.kill(other.pid, 'SIGSTOP');
      // Signal delivery is asynchronous; wait until the kernel reports every thread stopped.
      await waitFor('etcd to be stopped', () => readFileSync(`/proc/${other.pid}/stat`, 'utf8').split(' ')[2] === 'T');
      const err = await rejection(hung.getCluster());
      expect(err).to.be.instanceOf(UnavailableError);
      expect((err as Error).message)
        .to.contain(other.endpoint)
        .and.contain('did not answer within 1000 ms');
    } finally {
      process.kill(other.pid, 'SIGCONT');
      hung.close();
      await other.stop();
    }
  });

  it('parses endpoint lists and refuses malformed ones', () => {
    expect(parseEndpoints('127.0.0.1:2379,http://10.0.0.1:2379')).to.deep.equal([
      'http://127.0.0.1:2379',
      'http://10.0.0.1:2379',
    ]);
    expect(() => parseEndpoints('')).to.throw('pass --etcd');
    expect(() => parseEndpoints('http://host')).to.throw('a port is required');
  });
});
