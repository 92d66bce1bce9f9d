/**
 * `cairnctl gc` (orphan sweep) racing the processes that store shards before they publish them,
 * on a dev cluster of real processes (etcd, six cairnd, 4+2 with 1 MiB extents):
 * - a frontend attaches and flushes while a sweep is under way: its freshly published shards must
 *   survive the sweep (the sweep decides from an extent map and lock it read earlier);
 * - a repair has stored a rebuilt shard on its new node but not yet published it: the sweep must
 *   not delete that copy, or the published record points at nothing.
 *
 * The race windows are made wide and deterministic with SIGSTOP, never with sleeps: a stopped
 * storage node holds the sweep's list request (seen in the node's socket receive queue), and a
 * stopped `cairnctl repair` sits between its shard put and its compare-and-swap.
 */
import { expect } from 'chai';
import { createHash } from 'node:crypto';
import { existsSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { NodeFleet, extentMap, readExtents, tcpReceiveQueues, volumeIdOf, waitNodesState } from '../harness/faults.js';
import { cairnctlPath } from '../harness/cli.js';
import { waitFor } from '../../src/dev/index.js';
import { journalDirName } from '../../src/node/journal_store.js';
import { ClientProcess, describeResult, nbdsh, runClient, runOk, seededBytes, useStack } from '../harness/stack.js';

const MiB = 1024 * 1024;
const sha256 = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');

interface GcReport {
  orphansScanned: number;
  orphansDeleted: number;
  errors: string[];
}

describe('`cairnctl gc` orphan sweep racing writers and repair (dev cluster, 4+2)', function () {
  this.timeout(120_000);
  const stack = useStack({ profile: '4+2', extentSize: '1MiB' });
  let fleet: NodeFleet;
  /** Processes stopped with SIGSTOP that must get SIGCONT whatever happens. */
  const frozen = new Set<number>();

  before(() => {
    const s = stack();
    fleet = new NodeFleet(s.etcd, s.dir);
    fleet.adoptDev(s.cluster.nodes);
    s.defer('stop the nodes the gc tests started', () => fleet.stopOurs());
  });

  afterEach(() => {
    for (const pid of frozen) {
      try {
        process.kill(pid, 'SIGCONT');
      } catch {
        // gone
      }
    }
    frozen.clear();
  });

  const freeze = (pid: number) => {
    process.kill(pid, 'SIGSTOP');
    frozen.add(pid);
  };
  const thaw = (pid: number) => {
    process.kill(pid, 'SIGCONT');
    frozen.delete(pid);
  };

  const gcProcess = () =>
    new ClientProcess(process.execPath, [cairnctlPath, 'gc', '--json', '--etcd', stack().etcd], { deadlineMs: 90_000 });

  /** Writes `data` with nbdcopy --flush through the dev frontend and waits until it detached (no lock held). */
  async function fill(volume: string, data: Buffer): Promise<void> {
    const s = stack();
    const src = s.path(`${volume}.src`);
    writeFileSync(src, data);
    const mark = s.devFrontendLog().length;
    await runOk(`nbdcopy --flush into ${volume}`, '/usr/bin/nbdcopy', ['--flush', src, s.uri(volume)], {
      deadlineMs: 60_000,
    });
    await s.waitForDevDetach(volume, mark);
  }

  it('deletes every journal segment SIGKILLed writers left (one with records, one empty) once the volume is deleted', async () => {
    const s = stack();
    await s.createVolume('fgcj', '8MiB');
    const id = await volumeIdOf([s.etcd], 'fgcj');
    /** Segment files of the volume on every node. */
    const segmentFiles = (): string[] =>
      fleet.names().flatMap((n) => {
        const dir = join(fleet.info(n).dataDir, journalDirName, id);
        return existsSync(dir) ? readdirSync(dir).map((f) => `${n}/${f}`) : [];
      });
    // Writer 1 journals small writes and dies; writer 2 takes over (replays, folds, opens its own
    // segment) and dies without writing: its segment stays empty.
    const first = await s.startFrontend({ flushAgeMs: 600_000 });
    await nbdsh(
      'small writes and a FLUSH (journaled)',
      'for i in range(8): h.pwrite(b"\\x5a" * 4096, i * 1048576 + 8192)\nh.flush()\n',
      {},
      { uri: first.uri('fgcj') },
    );
    await first.kill();
    const second = await s.startFrontend({ forceTakeover: true, flushAgeMs: 600_000 });
    await nbdsh('attach', 'print(h.get_size())\n', {}, { uri: second.uri('fgcj') });
    await second.kill();
    expect(segmentFiles().length, `segment files before: ${segmentFiles().join(', ')}`).to.be.at.least(3);
    // The dead writer's lease must expire before the volume can be deleted.
    await waitFor(
      'the dead writer lock to expire',
      async () => ((await s.lockOf('fgcj')) === undefined ? true : undefined),
      30_000,
    );
    await runOk(
      'volume delete',
      process.execPath,
      [cairnctlPath, 'volume', 'delete', 'fgcj', '--now', '--etcd', s.etcd],
      {
        deadlineMs: 30_000,
      },
    );
    const r = await runClient(process.execPath, [cairnctlPath, 'gc', '--json', '--etcd', s.etcd], {
      deadlineMs: 90_000,
    });
    expect(r.code, `gc: ${describeResult(r)}`).to.equal(0);
    expect((JSON.parse(r.stdout) as GcReport).errors).to.deep.equal([]);
    expect(segmentFiles(), 'journal segment files left on the nodes').to.deep.equal([]);
  });

  // KNOWN BUG (open, src/api/volumes.ts sweepOrphans): fails. The sweep reads the volume's extent
  // map and lock once, then lists and deletes target by target. A writer that attaches after that
  // read and publishes a new generation has its shards deleted as orphans ("newer than published,
  // no lock"): every extent it flushed becomes unreadable.
  it('a frontend that attaches and flushes while a sweep runs keeps every byte it flushed', async () => {
    const s = stack();
    // a-0: first in name order, so the sweep lists it first; placement never picks it (4 KiB of
    // weight against the others' tens of GiB). Stopped, it holds the sweep's list request.
    const stall = await fleet.add('a-0', 'a', { extraArgs: ['--capacity', '4KiB'] });
    await waitNodesState(s.etcd, ['a-0'], 'up');
    const volumeBytes = 8 * MiB;
    const v1 = seededBytes('fault-gc-1', volumeBytes);
    const v2 = seededBytes('fault-gc-2', volumeBytes);
    await s.createVolume('fgcw', '8MiB');
    await fill('fgcw', v1);
    expect(await s.lockOf('fgcw'), 'no writer holds the volume when the sweep starts').to.equal(undefined);

    const stallPid = fleet.pid('a-0')!;
    freeze(stallPid);
    const gc = gcProcess();
    // The sweep has read the map and the lock once its list request sits in a-0's socket.
    await waitFor(
      "the sweep's list request to wait in the stopped a-0's socket",
      () => {
        if (!gc.running()) throw new Error(`gc exited first: ${gc.stdout()} ${gc.stderr()}`);
        return tcpReceiveQueues(stall.port).some((q) => q > 0);
      },
      30_000,
    );

    // Meanwhile a frontend attaches, writes a new version and flushes it.
    const writer = await s.startFrontend({ flushAgeMs: 600_000 });
    writeFileSync(s.path('fgcw.v2'), v2);
    await nbdsh(
      'write and flush v2 during the sweep',
      'd = open(A["src"], "rb").read()\nfor off in range(0, len(d), 1 << 20): h.pwrite(d[off:off + (1 << 20)], off)\nh.flush()\n',
      { src: s.path('fgcw.v2') },
      { uri: writer.uri('fgcw') },
    );
    await writer.stop();
    thaw(stallPid);
    const r = await gc.exit();
    expect(r.code, `gc: ${describeResult(r)}`).to.equal(0);
    const report = JSON.parse(r.stdout) as GcReport;
    await fleet.kill('a-0', 'SIGTERM');

    const reader = await s.startFrontend({ readOnly: true });
    const results = await readExtents(reader.uri('fgcw'), volumeBytes, MiB);
    await reader.stop();
    const wrong = results.filter(
      (x) => x.sha !== undefined && x.sha !== sha256(v2.subarray(x.extent * MiB, (x.extent + 1) * MiB)),
    );
    expect(
      wrong.map((x) => x.extent),
      'extents that read back other bytes than v2',
    ).to.deep.equal([]);
    const lost = results.filter((x) => x.sha === undefined);
    expect(
      lost.map((x) => `extent ${x.extent}: ${x.errno}`),
      `extents flushed during the sweep that can no longer be read (the sweep deleted ${report.orphansDeleted} "orphans"); first error: ${lost[0]?.message}`,
    ).to.deep.equal([]);
  });

  // KNOWN BUG (open, src/repair/gc.ts sweepOrphans vs src/repair/repair.ts): fails. Repair puts the
  // rebuilt shard under the SAME key on its new node, then publishes the move with a CAS. In
  // between, the copy is unreferenced and of the published generation, so the sweep deletes it;
  // the CAS then publishes a record that points at a shard that does not exist.
  it('a sweep between a repair storing a rebuilt shard and publishing it leaves that shard in place', async () => {
    const s = stack();
    // A seventh node, so every extent that loses a shard with the killed node has one to rebuild it on.
    await fleet.add('b-3', 'b');
    await waitNodesState(s.etcd, ['b-3'], 'up');
    await s.createVolume('fgcr', '4MiB');
    await fill('fgcr', seededBytes('fault-gc-repair', 4 * MiB));
    const id = await volumeIdOf([s.etcd], 'fgcr');
    // The node of zone b to kill: one that holds a shard (zone b holds two of the six, on two of
    // b-1, b-2, b-3; killing b-1 whatever the placement lost nothing one run in seven).
    const placed = await extentMap([s.etcd], id);
    const holds = (node: string) => [...placed.values()].some((r) => r.shards.some((sh) => sh.target === node));
    const victim = holds('b-1') ? 'b-1' : 'b-2';
    await fleet.kill(victim);
    await waitNodesState(s.etcd, [victim], 'down');
    const before = await extentMap([s.etcd], id);
    const lost = [...before].flatMap(([extent, rec]) =>
      rec.shards.flatMap((sh, index) => (sh.target === victim ? [{ extent, index, key: sh.key }] : [])),
    );
    expect(lost.length, `shards lost with ${victim}`).to.be.above(0);
    const live = fleet.names().filter((n) => n !== victim);

    // The rate limit makes repair wait ~0.5 s after each put before its CAS; it is frozen there.
    const repair = new ClientProcess(
      process.execPath,
      [cairnctlPath, 'repair', '--volume', 'fgcr', '--max-bytes-per-second', '512KiB', '--json', '--etcd', s.etcd],
      { deadlineMs: 90_000 },
    );
    const copy = await waitFor(
      'repair to store a rebuilt shard on a live node',
      () => {
        if (!repair.running()) throw new Error(`repair exited first: ${repair.stdout()} ${repair.stderr()}`);
        for (const l of lost)
          for (const n of live) if (existsSync(join(fleet.info(n).dataDir, l.key))) return { ...l, node: n };
        return undefined;
      },
      60_000,
      { intervalMs: 5 },
    );
    freeze(repair.pid);
    const rec = (await extentMap([s.etcd], id)).get(copy.extent)!;
    expect(
      rec.shards[copy.index]!.target,
      `precondition: repair has stored shard ${copy.index} of extent ${copy.extent} on ${copy.node} but not published it yet`,
    ).to.equal(victim);

    // gc exits 1 here: it cannot list the dead node (reported in errors); the rest of the sweep runs.
    const g = await runClient(process.execPath, [cairnctlPath, 'gc', '--json', '--etcd', s.etcd], {
      deadlineMs: 60_000,
    });
    expect(g.stdout.trim(), `gc during the repair printed no report: ${describeResult(g)}`).to.match(/^\{/);
    const report = JSON.parse(g.stdout) as GcReport;
    thaw(repair.pid);
    const rr = await repair.exit();
    expect(rr.code, `repair: ${describeResult(rr)}`).to.equal(0);

    // Every shard the published map names on a live node must be there.
    const after = await extentMap([s.etcd], id);
    const missing: string[] = [];
    for (const [e, r] of after)
      r.shards.forEach((sh, i) => {
        if (sh.target !== victim && !existsSync(join(fleet.info(sh.target).dataDir, sh.key)))
          missing.push(`extent ${e} shard ${i} on ${sh.target}`);
      });
    expect(
      missing,
      `published shards that do not exist after repair + a concurrent gc (gc deleted ${report.orphansDeleted} "orphans", among them ${copy.key} on ${copy.node})`,
    ).to.deep.equal([]);
  });
});
