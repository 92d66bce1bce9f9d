#!/usr/bin/env node
// Snapshot scale benchmark: does the cost of listing and deleting snapshots grow with the count
// of snapshots (it should not, past the diffs against a snapshot's neighbours)? Measured on
// `cairnctl dev up` (etcd, six storage nodes, 4+2), one 64 MiB volume of 1 MiB extents.
//
// One volume is attached for writing in this process (VolumeFrontend, as the dev frontend would
// hold it); before each snapshot it writes 4 KiB into extent 7i mod 63 and into extent 63 (so
// every snapshot differs from the one before by two extents, and alone holds its generation of
// extent 63), then takes snapshot s<i> (flush, fold, one transaction).
// At each checkpoint (--small snapshots, then --large), measured in this process:
//   - "list": snapshotUsage (what `cairnctl snapshot list` computes: the bytes each snapshot
//     alone holds), over all the volume's snapshots; and "list-per-snapshot", that over the count;
//   - "delete+gc": deleting the middle snapshot and collecting it (collectSnapshots: what
//     `cairnctl snapshot delete` and its gc do), checked to free what list said it alone held.
// The peers: the same measurement at the small count (per snapshot, the ratio large/small stays
// near 1 when each costs the same however many there are), and "list-all-roots", the same answer
// found by comparing each snapshot with every other root (as before the lineage, and still for
// snapshots older than it): it must agree byte for byte, and its cost per snapshot grows with the
// count. Prints one JSON line per result.
// Usage: node scripts/bench/snapshot_scale.mjs [--small N] [--large N] [--tiny]
import { CodecPool } from '../../dist/src/codec/index.js';
import { EtcdMeta } from '../../dist/src/meta/index.js';
import { VolumeFrontend } from '../../dist/src/frontend/index.js';
import {
  environmentSecrets,
  rootsReading,
  snapshotUsage,
  storeForTarget,
  uniqueShards,
} from '../../dist/src/api/index.js';
import { collectSnapshots } from '../../dist/src/repair/index.js';
import { runClient, startStack } from '../../dist/test/harness/stack.js';
import { cairnctlPath } from '../../dist/test/harness/cli.js';

const MiB = 1024 * 1024;

function usage(message) {
  console.error(`snapshot_scale: ${message}`);
  console.error('usage: node scripts/bench/snapshot_scale.mjs [--small N] [--large N] [--tiny]');
  process.exit(2);
}

const o = { small: undefined, large: undefined, tiny: false };
for (let i = 2; i < process.argv.length; i++) {
  const a = process.argv[i];
  const value = () => Number(process.argv[++i] ?? usage(`${a} needs a value`));
  if (a === '--small') o.small = value();
  else if (a === '--large') o.large = value();
  else if (a === '--tiny') o.tiny = true;
  else usage(`unknown option ${a}`);
}
// Tiny: what the test suite runs so the script never rots; the numbers mean nothing.
const small = o.small ?? (o.tiny ? 3 : 20);
const large = o.large ?? (o.tiny ? 6 : 200);
if (![small, large].every((n) => Number.isSafeInteger(n) && n >= 3) || large <= small)
  usage('--small and --large must be whole numbers >= 3, --large above --small');

const log = (line) => process.stderr.write(`snapshot_scale: ${line}\n`);
const emit = (row) => process.stdout.write(`${JSON.stringify(row)}\n`);
const ms = (started) => Math.round(Number(process.hrtime.bigint() - started) / 1e4) / 100;

const stack = await startStack();
const meta = new EtcdMeta([stack.etcd]);
const pool = await CodecPool.start();
const secrets = environmentSecrets();
const frontend = new VolumeFrontend({ meta, pool, secrets, owner: `snapshot-scale/${process.pid}`, lockWaitMs: 0 });
const volumeName = 'many';
const results = {};
try {
  const created = await runClient(
    process.execPath,
    [cairnctlPath, 'volume', 'create', volumeName, '64MiB', '--extent-size', '1MiB'],
    { deadlineMs: 60_000, env: { CAIRN_ETCD: stack.etcd } },
  );
  if (created.code !== 0) throw new Error(`volume create: ${created.stderr}`);
  const stores = new Map();
  for (const target of await meta.listTargets()) stores.set(target.name, storeForTarget(target, secrets));
  const handle = await frontend.open(volumeName, { readOnly: false });
  const block = Buffer.alloc(4096);
  let taken = 0;
  for (const count of [small, large]) {
    const started = process.hrtime.bigint();
    for (; taken < count; taken++) {
      block.writeUInt32LE(taken, 0);
      await handle.device.write(((7 * taken) % 63) * MiB, block);
      await handle.device.write(63 * MiB, block);
      await frontend.snapshot(volumeName, `s${taken}`);
    }
    log(`${count} snapshots (${ms(started)} ms for the last ${count === small ? small : large - small})`);
    const volume = await meta.requireVolume(volumeName);
    let t = process.hrtime.bigint();
    const usage = await snapshotUsage(meta, volume);
    const listMs = ms(t);
    // The peer: the same answer found by comparing each snapshot with every other root (how it
    // was found before the lineage, and still is for snapshots older than it).
    t = process.hrtime.bigint();
    const roots = await rootsReading(meta, volume);
    let allRootsBytes = 0;
    for (const u of usage) {
      const others = roots.filter((r) => r.what !== `snapshot ${volume.name}@${u.snapshot.name}`);
      const unique = await uniqueShards(meta, volume, u.snapshot, others);
      const bytes = unique.reduce((sum, x) => sum + x.bytes, 0);
      if (bytes !== u.uniqueBytes)
        throw new Error(`${u.snapshot.name}: the lineage says ${u.uniqueBytes} unique bytes, every root ${bytes}`);
      allRootsBytes += bytes;
    }
    const allRootsMs = ms(t);
    emit({ bench: 'snapshot-scale', snapshots: usage.length, listAllRootsMs: allRootsMs, uniqueBytes: allRootsBytes });
    const middle = usage[Math.floor(usage.length / 2)];
    await meta.deleteSnapshot(volume.id, middle.snapshot.name, volume.name);
    t = process.hrtime.bigint();
    const gc = await collectSnapshots(meta, stores);
    const gcMs = ms(t);
    if (gc.errors.length > 0 || gc.snapshots !== 1 || gc.bytesFreed !== middle.uniqueBytes || gc.bytesFreed === 0)
      throw new Error(
        `gc of ${middle.snapshot.name}: ${JSON.stringify(gc)}; snapshot list said ${middle.uniqueBytes} bytes`,
      );
    results[count] = { listMs, perSnapshotMs: listMs / usage.length, gcMs, allRootsMs };
    emit({ bench: 'snapshot-scale', snapshots: usage.length, listMs, listPerSnapshotMs: listMs / usage.length });
    emit({ bench: 'snapshot-scale', snapshots: usage.length, deleteGcMs: gcMs, freedBytes: gc.bytesFreed });
    // The deleted one's name is taken again so the next checkpoint counts the same snapshots.
    await frontend.snapshot(volumeName, middle.snapshot.name);
  }
  await handle.close();
  emit({
    bench: 'snapshot-scale',
    summary: true,
    small,
    large,
    listPerSnapshotRatio: Math.round((results[large].perSnapshotMs / results[small].perSnapshotMs) * 100) / 100,
    deleteGcRatio: Math.round((results[large].gcMs / results[small].gcMs) * 100) / 100,
    allRootsListPerSnapshotRatio:
      Math.round((results[large].allRootsMs / large / (results[small].allRootsMs / small)) * 100) / 100,
    lineageOverAllRootsAtLarge: Math.round((results[large].listMs / results[large].allRootsMs) * 1000) / 1000,
    countRatio: large / small,
  });
} finally {
  await frontend.close().catch(() => undefined);
  await pool.close().catch(() => undefined);
  meta.close();
  for (const p of await stack.down()) log(p);
}
