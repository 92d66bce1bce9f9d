#!/usr/bin/env node
// Snapshot benchmark: what snapshots, clones, exports and incremental diffs cost, each against a
// peer measured in the same run on the same cluster (`cairnctl dev up`: etcd, six storage nodes
// in zones a, b, c, the dev frontend; 4+2, 4 MiB extents; shards on /dev/shm when it exists).
//
// Setup: one volume of --size (default 1 GiB), every byte written (nbdcopy of pseudo-random
// bytes), then held attached for writing by an idle nbdsh connection through the dev frontend,
// as a database's volume would be.
//   - "snapshot-create": `cairnctl snapshot create VOL sN` while the volume is attached (the
//     frontend holding it cuts the snapshot: its writes held, flush, fold, one etcd transaction),
//     against "volume-create": `cairnctl volume create` of a new volume of the same size. Both
//     are whole cairnctl processes (Node start-up included in both); p50 of --n runs each.
//   - "clone": `cairnctl volume clone VOL@s0 cN` (a new volume whose map copies the snapshot's
//     records: one 10 KiB page per 256 written extents, no data), against volume-create.
//   - "export": `cairnctl volume export VOL@s0 FILE` against `nbdcopy nbd://.../VOL@s0 FILE`
//     (libnbd, several connections and requests in flight) of the same snapshot export; both
//     files are checked to hold the same bytes.
//   - "export-diff": 1 % of the extents rewritten (whole extents, flushed), snapshot s1, then
//     `cairnctl volume export-diff VOL@s1 --from s0 FILE` against the full export above
//     (target: under 5 % of its time). Both as whole processes ("ms": Node start-up and module
//     loading, about 0.5 s for any cairnctl command, included) and as the time each command
//     reports for its own work ("workMs": from its attach to its last byte).
// Prints one JSON line per result and a summary line with the ratios. Progress on stderr.
// Usage: node scripts/bench/snapshot_bench.mjs [--size SIZE] [--n N] [--tiny]
import { appendFileSync, createReadStream, rmSync, writeFileSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { parseSize } from '../../dist/src/core/index.js';
import { waitFor } from '../../dist/src/dev/index.js';
import { cairnctlPath } from '../../dist/test/harness/cli.js';
import { nbdshProcess, runClient, seededBytes, startStack } from '../../dist/test/harness/stack.js';

const MiB = 1024 * 1024;

function usage(message) {
  console.error(`snapshot_bench: ${message}`);
  console.error('usage: node scripts/bench/snapshot_bench.mjs [--size SIZE] [--n N] [--tiny]');
  process.exit(2);
}

const o = { size: undefined, n: undefined, tiny: false };
for (let i = 2; i < process.argv.length; i++) {
  const a = process.argv[i];
  const value = () => process.argv[++i] ?? usage(`${a} needs a value`);
  if (a === '--size') o.size = parseSize(value(), '--size');
  else if (a === '--n') o.n = Number(value());
  else if (a === '--tiny') o.tiny = true;
  else usage(`unknown option ${a}`);
}
// Tiny: what the test suite runs so the script never rots; the numbers mean nothing.
const sizeBytes = o.size ?? (o.tiny ? 32 * MiB : 1024 * MiB);
const n = o.n ?? (o.tiny ? 2 : 5);
if (!Number.isSafeInteger(n) || n < 1) usage('--n must be a whole number >= 1');
const extentBytes = 4 * MiB;
if (sizeBytes % extentBytes !== 0) usage('--size must be whole 4 MiB extents');

const log = (line) => process.stderr.write(`snapshot_bench: ${line}\n`);
const emit = (row) => process.stdout.write(`${JSON.stringify(row)}\n`);
const p50 = (xs) => [...xs].sort((a, b) => a - b)[Math.floor((xs.length - 1) / 2)];
const round = (x) => Math.round(x * 10) / 10;

/** A file's sha256, streamed (an export may be larger than a Buffer holds). */
async function fileSha256(path) {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(path, { highWaterMark: 8 * MiB })) hash.update(chunk);
  return hash.digest('hex');
}

let lastStdout = '';
async function timed(step, command, args, env) {
  const started = process.hrtime.bigint();
  const r = await runClient(command, args, { deadlineMs: 600_000, env });
  const ms = Number(process.hrtime.bigint() - started) / 1e6;
  if (r.code !== 0) throw new Error(`${step}: exit ${r.code}: ${r.stderr.slice(-2000)}`);
  lastStdout = r.stdout;
  return ms;
}
/** The time a transfer command reports for its own work (its --json "seconds"), in ms. */
const workMs = () => JSON.parse(lastStdout.trim().split('\n').pop()).seconds * 1000;

const stack = await startStack();
let holder;
try {
  const env = { CAIRN_ETCD: stack.etcd };
  const cli = (step, args) => timed(step, process.execPath, [cairnctlPath, ...args], env);
  const volume = 'snapbench';
  const size = `${sizeBytes}`;
  await cli('volume create', ['volume', 'create', volume, size]);
  log(`writing ${sizeBytes / MiB} MiB`);
  const image = stack.path('image.raw');
  // In pieces of at most 1 GiB: a Buffer holds at most 2 GiB (--size 4GiB and up).
  writeFileSync(image, '');
  for (let at = 0, piece = 0; at < sizeBytes; at += 1024 * MiB, piece++)
    appendFileSync(image, seededBytes(`snapshot-bench-${piece}`, Math.min(1024 * MiB, sizeBytes - at)));
  await timed('nbdcopy in', '/usr/bin/nbdcopy', [image, stack.uri(volume)]);
  rmSync(image);
  // Held attached for writing by an idle connection, as a database's volume is.
  holder = nbdshProcess(
    'import sys\nh.pread(512, 0)\nprint("ready", flush=True)\nsys.stdin.read()',
    {},
    {
      uri: stack.uri(volume),
      deadlineMs: 3_600_000,
    },
  );
  await waitFor('the holding connection', () => holder.stdout().includes('ready'), 60_000);

  const create = [];
  const snap = [];
  for (let i = 0; i < n; i++) {
    create.push(await cli('volume create', ['volume', 'create', `peer${i}`, size]));
    snap.push(await cli('snapshot create', ['snapshot', 'create', volume, `s${i}`]));
  }
  log(`snapshot create p50 ${round(p50(snap))} ms, volume create p50 ${round(p50(create))} ms`);
  const base = { sizeBytes, extentBytes, profile: '4+2', n };
  emit({ bench: 'snapshot', mode: 'volume-create', ...base, p50Ms: round(p50(create)), samplesMs: create.map(round) });
  emit({
    bench: 'snapshot',
    mode: 'snapshot-create',
    attached: true,
    ...base,
    p50Ms: round(p50(snap)),
    samplesMs: snap.map(round),
  });

  const clone = [];
  for (let i = 0; i < n; i++) clone.push(await cli('clone', ['volume', 'clone', `${volume}@s0`, `clone${i}`]));
  emit({ bench: 'snapshot', mode: 'clone', ...base, p50Ms: round(p50(clone)), samplesMs: clone.map(round) });

  log('exporting');
  const mine = stack.path('export.raw');
  const theirs = stack.path('nbdcopy.raw');
  const exportMs = await cli('export', ['volume', 'export', `${volume}@s0`, mine, '--json']);
  const exportWorkMs = workMs();
  const nbdcopyMs = await timed('nbdcopy out', '/usr/bin/nbdcopy', [stack.uri(`${volume}@s0`), theirs]);
  const same = (await fileSha256(mine)) === (await fileSha256(theirs));
  rmSync(theirs);
  if (!same) throw new Error('the export and nbdcopy of the same snapshot differ');
  emit({
    bench: 'snapshot',
    mode: 'export',
    ...base,
    ms: round(exportMs),
    workMs: round(exportWorkMs),
    MBps: round(sizeBytes / 1e6 / (exportMs / 1000)),
    peer: 'nbdcopy',
    peerMs: round(nbdcopyMs),
    peerMBps: round(sizeBytes / 1e6 / (nbdcopyMs / 1000)),
    sameBytes: same,
  });

  // 1 % of the extents rewritten whole, flushed, then a snapshot and the diff.
  const extents = sizeBytes / extentBytes;
  const changed = Math.max(1, Math.round(extents / 100));
  const script = [
    'data = open(A["file"], "rb").read()',
    'for i, e in enumerate(A["extents"]):',
    '    h.pwrite(data[i * A["eb"]:(i + 1) * A["eb"]], e * A["eb"])',
    'h.flush()',
  ].join('\n');
  const chunk = stack.path('changed.raw');
  writeFileSync(chunk, seededBytes('snapshot-bench-changed', changed * extentBytes));
  const picks = Array.from({ length: changed }, (_, i) => Math.floor((i * extents) / changed));
  const w = await nbdshProcess(
    script,
    { file: chunk, extents: picks, eb: extentBytes },
    { uri: stack.uri(volume) },
  ).exit();
  if (w.code !== 0) throw new Error(`rewriting 1 %: ${w.stderr}`);
  await cli('snapshot s-diff', ['snapshot', 'create', volume, 'after']);
  const diffFile = stack.path('after.diff');
  const diffMs = await cli('export-diff', [
    'volume',
    'export-diff',
    `${volume}@after`,
    '--from',
    's0',
    diffFile,
    '--json',
  ]);
  const diffWorkMs = workMs();
  emit({
    bench: 'snapshot',
    mode: 'export-diff',
    ...base,
    changedExtents: changed,
    ms: round(diffMs),
    workMs: round(diffWorkMs),
    peer: 'export (full)',
    peerMs: round(exportMs),
    peerWorkMs: round(exportWorkMs),
    overPeer: round((diffMs / exportMs) * 1000) / 1000,
    workOverPeerWork: round((diffWorkMs / exportWorkMs) * 1000) / 1000,
  });
  emit({
    summary: 'snapshot',
    sizeBytes,
    snapshotOverVolumeCreateP50: round((p50(snap) / p50(create)) * 100) / 100,
    cloneOverVolumeCreateP50: round((p50(clone) / p50(create)) * 100) / 100,
    exportOverNbdcopy: round((exportMs / nbdcopyMs) * 100) / 100,
    diffOverExport: round((diffMs / exportMs) * 1000) / 1000,
    diffWorkOverExportWork: round((diffWorkMs / exportWorkMs) * 1000) / 1000,
    diffTarget: 0.05,
  });
} finally {
  if (holder !== undefined) {
    holder.endInput();
    await holder.exit();
  }
  const problems = await stack.down();
  for (const p of problems) log(p);
}
