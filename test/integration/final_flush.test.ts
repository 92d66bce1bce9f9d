/**
 * The final flush, with real processes (dev cluster, `cairnctl nbd serve`, nbdsh, cairnctl status):
 * when the last client of a volume disconnects while its flush cannot succeed (a storage node
 * SIGKILLed, and a volume that needs all k+m shards stored), the frontend keeps the volume
 * attached with its lock and cache, retries with backoff, says so in etcd (`cairnctl status`), and
 * a client that connects meanwhile reads the unflushed writes. Once the node is back the retry
 * succeeds, the volume detaches, and the writes read back through the erasure-coded store.
 */
import { expect } from 'chai';
import type { ClusterHealth } from '../../src/api/index.js';
import { NodeFleet } from '../harness/faults.js';
import { nbdsh, nbdshProcess, useStack, type ClientProcess } from '../harness/stack.js';

const MiB = 1 << 20;

/** nbdsh: write A.byte over [A.offset, A.offset + A.length), no flush, say so, hold until stdin closes. */
const writeAndHold = `
h.pwrite(bytes([A["byte"]]) * A["length"], A["offset"])
print("written", flush=True)
sys.stdin.readline()
`;

/** nbdsh: print whether [A.offset, A.offset + A.length) holds A.byte everywhere. */
const readsBack = `print(h.pread(A["length"], A["offset"]) == bytes([A["byte"]]) * A["length"])`;

describe('final flush: retried while it fails, the volume kept attached', function () {
  const stack = useStack({ profile: '4+2', extentSize: '1MiB' });
  const clients: ClientProcess[] = [];
  let fleet: NodeFleet | undefined;
  afterEach(async function () {
    this.timeout(60_000);
    for (const c of clients.splice(0)) if (c.running()) c.kill('SIGKILL');
    if (fleet !== undefined && !fleet.running('a-1')) await fleet.restart('a-1');
    await fleet?.stopOurs();
  });

  it('keeps unflushed writes through a failing final flush, serves them to a new client, and flushes them once the node returns', async function () {
    this.timeout(240_000);
    const s = stack();
    // No journal and all six shards required: with one node down, no flush can succeed.
    await s.cairnctl('create volume', ['volume', 'create', 'keep', '16MiB', '--journal-replicas', '0']);
    const fe = await s.startFrontend({ flushAgeMs: 3_600_000, finalFlushRetryMs: 180_000 });
    const data = { byte: 0x6b, length: 256 * 1024, offset: 3 * MiB };
    const writer = nbdshProcess(writeAndHold, data, { uri: fe.uri('keep') });
    clients.push(writer);
    await writer.waitForOutput(/written/);
    const epoch = (await s.lockOf('keep'))?.epoch;
    expect(epoch, 'the writer attached the volume').to.be.a('number');

    fleet = new NodeFleet(s.etcd, s.dir);
    fleet.adoptDev(s.cluster.nodes);
    await fleet.kill('a-1');
    const mark = fe.logText().length;
    writer.endInput();
    await writer.exit();
    await fe.waitForLog(/volume keep: final flush failed \(attempt \d+\)/, mark, 90_000);
    expect(fe.logText().slice(mark)).to.not.match(/are lost/);

    // cairnctl status reads the retrying from etcd.
    const status = JSON.parse((await s.cairnctl('status', ['status', '--json'])).stdout) as ClusterHealth;
    const keep = status.volumes.find((v) => v.name === 'keep');
    expect(keep?.pendingFlush?.dirtyBytes, 'status shows the bytes not yet durable').to.be.greaterThan(0);
    expect(keep?.attachedBy?.epoch).to.equal(epoch);
    expect(status.verdict.state).to.equal('degraded');
    expect(status.verdict.summary).to.match(
      /not yet durable: their clients are gone and the final flush keeps failing/,
    );
    const text = (await s.cairnctl('status', ['status'])).stdout;
    expect(text).to.match(/^keep .*final flush failing: .* not durable/m);

    // A client connecting now gets the still-attached volume, unflushed writes and all.
    const during = await nbdsh('read during the retries', readsBack, data, { uri: fe.uri('keep') });
    expect(during.trim(), 'the new client reads the unflushed writes').to.equal('True');
    expect((await s.lockOf('keep'))?.epoch, 'the volume was never detached').to.equal(epoch);

    // The node returns: a retry succeeds, the volume detaches, nothing was lost.
    const back = fe.logText().length;
    await fleet.restart('a-1');
    await fe.waitForLog(
      /volume keep: final flush succeeded after \d+ failed attempts; nothing was lost/,
      back,
      120_000,
    );
    await fe.waitForLog(/detached volume keep(?:\n|")/, back, 60_000);
    expect(fe.logText().slice(mark)).to.not.match(/are lost/);
    expect(await s.etcdGet('cairn/v1/pending-flush/keep')).to.equal(undefined);

    // Attached again from the store: the writes are there.
    const after = await nbdsh('read after the detach', readsBack, data, { uri: fe.uri('keep') });
    expect(after.trim(), 'the writes reached the store').to.equal('True');
    expect(fe.logText().slice(back)).to.match(/attached volume keep for writing \(epoch \d+\)/);
    await fe.stop();
  });
});
