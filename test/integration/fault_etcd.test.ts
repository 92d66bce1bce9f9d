/**
 * The etcd leader SIGKILLed under a live cluster: a 3-member etcd cluster on loopback (INFRA.md §1
 * recipe, 50/500 ms heartbeat/election), `cairnctl init`, six cairnd in zones a, b, c and one
 * frontend, every process given all three endpoints. A writer flushes before the kill, right after
 * it and once the dust settled: the FLUSH after the kill may fail once (an etcd call in flight to
 * the dead leader waits out its 5 s deadline) but must succeed within ~15 s of the kill; the
 * frontend's lock lease must keep being renewed through the new leader (or the volume would be
 * fenced 10 s later); every node stays registered; and a cold reader, given the dead member's
 * endpoint too, reads back every flushed byte.
 */
import { expect } from 'chai';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  NodeFleet,
  cairnctl,
  leaseTimeToLive,
  lockOf,
  startEtcdCluster,
  startFrontendProcess,
  waitNodesState,
  type EtcdCluster,
} from '../harness/faults.js';
import { waitFor } from '../../src/dev/index.js';
import {
  describeResult,
  expectSameBytes,
  nbdshProcess,
  runOk,
  seededBytes,
  type ClientProcess,
  type Frontend,
} from '../harness/stack.js';

const MiB = 1024 * 1024;
const phaseBytes = 8 * MiB;
/** From the kill to a successful FLUSH: one etcd deadline (5 s), a new leader (~1.5 s), retries. */
const recoveryDeadlineMs = 15_000;

interface FlushResult {
  readonly cmd: string;
  readonly ok: boolean;
  readonly errno?: string;
  readonly message?: string;
  readonly ms: number;
}

describe('etcd leader SIGKILLed in a 3-member cluster: flushes recover within 15 s, the lock survives, nothing flushed is lost', function () {
  this.timeout(120_000);
  const dir = mkdtempSync(join('/dev/shm', 'cairn-fault-etcd-'));
  let etcd: EtcdCluster | undefined;
  let fleet: NodeFleet | undefined;
  const frontends: Frontend[] = [];
  const clients: ClientProcess[] = [];

  before(async function () {
    this.timeout(90_000);
    etcd = await startEtcdCluster({ size: 3 });
    await cairnctl('init', etcd.etcdArg, ['init', '--profile', '4+2', '--extent-size', '1MiB']);
    fleet = new NodeFleet(etcd.etcdArg, dir);
    const nodes = ['a', 'b', 'c'].flatMap((z) => [1, 2].map((i) => [`${z}-${i}`, z] as const));
    await Promise.all(nodes.map(([name, zone]) => fleet!.add(name, zone)));
    await waitNodesState(etcd.etcdArg, fleet.names(), 'up');
    await cairnctl('volume create', etcd.etcdArg, ['volume', 'create', 'fleader', '24MiB']);
  });

  after(async function () {
    this.timeout(90_000);
    for (const c of clients) {
      c.kill('SIGKILL');
      await c.exit();
    }
    for (const fe of frontends) await fe.stop().catch(() => fe.kill());
    await fleet?.stopOurs();
    await etcd?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('writes+flush before and after the leader dies; the flush after recovers within 15 s; a cold reader gets every byte', async () => {
    const cluster = etcd!;
    const data = seededBytes('fault-etcd-leader', 3 * phaseBytes);
    writeFileSync(join(dir, 'data'), data);
    const fe = await startFrontendProcess({ etcd: cluster.etcdArg, dir, label: 'writer', flushAgeMs: 600_000 });
    frontends.push(fe);

    // Commands on stdin: "write P" writes phase P's 8 MiB and flushes; "flush" only flushes.
    const writer = nbdshProcess(
      `
import time
data = open(A["data"], "rb").read()
P = A["phaseBytes"]
for line in sys.stdin:
    cmd = line.strip()
    if cmd == "quit": break
    t = time.time()
    try:
        if cmd.startswith("write "):
            p = int(cmd.split()[1])
            for off in range(p * P, (p + 1) * P, 1 << 20): h.pwrite(data[off:off + (1 << 20)], off)
        h.flush()
        print(json.dumps({"cmd": cmd, "ok": True, "ms": int((time.time() - t) * 1000)}), flush=True)
    except nbd.Error as e:
        print(json.dumps({"cmd": cmd, "ok": False, "errno": e.errno, "message": e.string, "ms": int((time.time() - t) * 1000)}), flush=True)
`,
      { data: join(dir, 'data'), phaseBytes },
      { uri: fe.uri('fleader'), deadlineMs: 110_000 },
    );
    clients.push(writer);
    const results = (): FlushResult[] =>
      writer
        .stdout()
        .split('\n')
        .filter((l) => l.startsWith('{'))
        .map((l) => JSON.parse(l) as FlushResult);
    const send = async (cmd: string): Promise<FlushResult> => {
      const n = results().length;
      writer.write(`${cmd}\n`);
      return waitFor(
        `the writer to answer "${cmd}"`,
        () => {
          if (!writer.running()) throw new Error(`the writer exited: ${writer.stderr().slice(-1500)}`);
          return results()[n];
        },
        60_000,
      );
    };

    const first = await send('write 0');
    expect(first, `write+flush before the kill; frontend log: ${fe.logText().slice(-1500)}`).to.include({ ok: true });
    const lock = await lockOf(cluster.endpoints, 'fleader');
    expect(lock?.owner, 'the frontend holds the lock').to.match(new RegExp(`/${fe.pid}$`));

    const leader = await cluster.leader();
    await cluster.kill(leader, 'SIGKILL');
    const killedAt = Date.now();
    const live = cluster.endpoints.filter((e) => e !== leader.clientUrl);

    // Right after the kill: write phase 1 and flush; retry the FLUSH until it succeeds.
    const attempts: FlushResult[] = [await send('write 1')];
    while (!attempts.at(-1)!.ok && Date.now() - killedAt < recoveryDeadlineMs) attempts.push(await send('flush'));
    const recoveredMs = Date.now() - killedAt;
    const newLeader = await cluster.leader();
    expect(newLeader.name, 'a new leader').to.not.equal(leader.name);
    expect(
      attempts.map((a) => (a.ok ? `ok in ${a.ms} ms` : `${a.errno} after ${a.ms} ms: ${a.message}`)),
      `FLUSHes after the leader (${leader.name}) died; frontend log: ${fe.logText().slice(-2500)}`,
    ).to.satisfy((list: string[]) => list.at(-1)!.startsWith('ok') && list.length <= 2);
    expect(recoveredMs, 'from the kill to a successful FLUSH').to.be.below(recoveryDeadlineMs + 5_000);

    // The lock's lease (10 s TTL) must be renewed through the new leader: its TTL goes back up.
    // A lease nobody renews would expire, the lock key with it, and every later commit be fenced.
    let firstTtl: number | undefined;
    let lastTtl = 0;
    await waitFor(
      `the lock lease ${lock!.lease} to be renewed after the leader change`,
      async () => {
        const { ttl } = await leaseTimeToLive(live, lock!.lease);
        lastTtl = ttl;
        if (ttl < 0) throw new Error(`the lock lease is gone (expired): the volume's writer has lost its lock`);
        firstTtl ??= ttl;
        return ttl > firstTtl;
      },
      recoveryDeadlineMs,
      {
        seen: () => `TTL first ${firstTtl}, last ${lastTtl}; frontend log: ${fe.logText().slice(-1500)}`,
        intervalMs: 250,
      },
    );
    await waitNodesState(cluster.etcdArg, fleet!.names(), 'up', 20_000);

    const third = await send('write 2');
    expect(third, `write+flush after the leader change; frontend log: ${fe.logText().slice(-1500)}`).to.include({
      ok: true,
    });
    const lockAfter = await lockOf(live, 'fleader');
    expect(lockAfter, 'the same lock, same epoch').to.deep.include({ epoch: lock!.epoch, owner: lock!.owner });
    writer.write('quit\n');
    const wr = await writer.exit();
    expect(wr.code, describeResult(wr)).to.equal(0);
    await fe.stop();

    // A cold reader given all three endpoints, the dead member's first.
    const reader = await startFrontendProcess({
      etcd: [leader.clientUrl, ...live].join(','),
      dir,
      label: 'reader',
      readOnly: true,
    });
    frontends.push(reader);
    const out = join(dir, 'out');
    await runOk(
      'nbdcopy from a cold reader after the leader change',
      '/usr/bin/nbdcopy',
      [reader.uri('fleader'), out],
      {
        deadlineMs: 60_000,
      },
    );
    expectSameBytes(readFileSync(out), data, 'the volume after the etcd leader was SIGKILLed', MiB);
    console.log(
      `      etcd leader ${leader.name} killed: ${attempts.length} flush attempt(s), ok ${recoveredMs} ms after the kill ` +
        `(${attempts.map((a) => (a.ok ? `ok ${a.ms} ms` : `${a.errno} ${a.ms} ms`)).join(', ')}); new leader ${newLeader.name}`,
    );
  });
});
