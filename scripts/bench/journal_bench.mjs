#!/usr/bin/env node
// Journal benchmark: 4 KiB writes appended to one real cairnd's journal (encoded records sent
// over its TCP protocol, written and fdatasync'd on the node with group commit, acknowledged) at
// QD1 and QD32, next to their peer in the same run: the same record bytes written with
// fs.write + fdatasync on a preallocated local file in the same directory (same file system), no
// network, no process hop, no group commit. One JSON line per result, then a summary of ratios
// (cairnd over the peer: above 1 means cairnd did better).
// Usage: node scripts/bench/journal_bench.mjs [--count N] [--dir DIR]
//   --count  appends per job (default 4000)
//   --dir    where the node's data dir and the peer's file go (default: the system temp dir)
// Needs `make build`; starts its own etcd and cairnd and stops them by pid.
import { mkdtempSync, rmSync, statfsSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startCairnd } from '../../dist/test/harness/cairnd.js';
import { startEtcd } from '../../dist/test/harness/etcd.js';
import { encodeRecord } from '../../dist/src/journal/index.js';
import { JournalNodeClient } from '../../dist/src/shard/index.js';

const args = process.argv.slice(2);
const option = (name, fallback) => {
  const at = args.indexOf(name);
  return at === -1 ? fallback : args[at + 1];
};
const count = Number(option('--count', '4000'));
const baseDir = option('--dir', tmpdir());
const dataBytes = 4096;
const queueDepths = [1, 32];
if (!Number.isSafeInteger(count) || count < 1 || count > 15_000) {
  console.error('journal_bench: --count must be a whole number from 1 to 15000 (one 64 MiB segment per job)');
  process.exit(2);
}

const percentile = (sorted, p) => sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
const round = (x, digits = 3) => Math.round(x * 10 ** digits) / 10 ** digits;

/** Runs `op(i)` for i in [0, count) with `qd` of them in flight; returns per-op latencies and wall time. */
async function drive(qd, op) {
  const latencies = new Array(count);
  let next = 0;
  const started = performance.now();
  await Promise.all(
    Array.from({ length: qd }, async () => {
      for (let i = next++; i < count; i = next++) {
        const t = performance.now();
        await op(i);
        latencies[i] = performance.now() - t;
      }
    }),
  );
  return { latencies, seconds: (performance.now() - started) / 1000 };
}

function result(impl, qd, recordBytes, run, extra = {}) {
  const sorted = [...run.latencies].sort((a, b) => a - b);
  const iops = count / run.seconds;
  return {
    bench: 'journal-append-4k',
    impl,
    qd,
    count,
    recordBytes,
    iops: round(iops, 0),
    MBps: round((iops * recordBytes) / 1e6, 2),
    p50Ms: round(percentile(sorted, 50)),
    p99Ms: round(percentile(sorted, 99)),
    meanMs: round(sorted.reduce((s, x) => s + x, 0) / sorted.length),
    ...extra,
  };
}

const workDir = mkdtempSync(join(baseDir, 'cairn-journal-bench-'));
const fsType = (() => {
  try {
    return `0x${statfsSync(workDir).type.toString(16)}`;
  } catch {
    return 'unknown';
  }
})();
const etcd = await startEtcd({ name: 'journal-bench' });
let node;
let client;
try {
  node = await startCairnd({ etcd: etcd.endpoint, name: 'bench-j', zone: 'a', dataDir: join(workDir, 'node') });
  client = new JournalNodeClient({ name: node.name, address: node.journalAddress });
  const volume = 'bench0123456789a';
  const records = Array.from({ length: count }, (_, i) => {
    const data = new Uint8Array(dataBytes);
    for (let j = 0; j < dataBytes; j += 4) data[j] = (i * 31 + j) & 0xff;
    return data;
  });
  const rows = [];
  for (const qd of queueDepths) {
    // cairnd: a fresh, preallocated segment per job; records encoded before the clock starts.
    const segment = qd;
    await client.create({ volume, segment, epoch: 1 });
    const requests = records.map((data, i) => ({
      volume,
      segment,
      epoch: 1,
      lsn: i + 1,
      record: encodeRecord({
        volume,
        epoch: 1,
        lsn: i + 1,
        ranges: [{ offset: i * dataBytes, length: dataBytes }],
        data,
      }),
    }));
    const recordBytes = requests[0].record.length;
    const before = await client.stats();
    const cairn = await drive(qd, (i) => client.append(requests[i]));
    const after = await client.stats();
    const fsyncs = after.fsyncs - before.fsyncs;
    const row = result('cairnd', qd, recordBytes, cairn, { fsyncs, appendsPerFsync: round(count / fsyncs, 2) });
    console.log(JSON.stringify(row));
    rows.push(row);

    // The peer: the same bytes, pwrite + fdatasync per write on a preallocated file.
    const file = await open(join(workDir, `peer-qd${qd}.log`), 'w+');
    try {
      const zeros = new Uint8Array(1 << 20);
      for (let at = 0; at < count * recordBytes; at += zeros.length) await file.write(zeros, 0, zeros.length, at);
      await file.sync();
      const peer = await drive(qd, async (i) => {
        await file.write(requests[i].record, 0, recordBytes, i * recordBytes);
        await file.datasync();
      });
      const peerRow = result('local-fdatasync', qd, recordBytes, peer, { fsyncs: count, appendsPerFsync: 1 });
      console.log(JSON.stringify(peerRow));
      rows.push(peerRow);
    } finally {
      await file.close();
    }
  }
  const ratio = (qd, field) => {
    const c = rows.find((r) => r.impl === 'cairnd' && r.qd === qd);
    const p = rows.find((r) => r.impl === 'local-fdatasync' && r.qd === qd);
    return round(field === 'iops' ? c.iops / p.iops : p[field] / c[field], 3);
  };
  const summary = { summary: 'journal', dir: workDir, fsType, cpus: (await import('node:os')).cpus().length };
  for (const qd of queueDepths) {
    summary[`qd${qd}IopsOverPeer`] = ratio(qd, 'iops');
    summary[`qd${qd}PeerP50OverCairnP50`] = ratio(qd, 'p50Ms');
  }
  console.log(JSON.stringify(summary));
} finally {
  client?.close();
  await node?.stop({ keepData: true });
  await etcd.stop();
  rmSync(workDir, { recursive: true, force: true });
}
