#!/usr/bin/env node
// Write-back cache benchmark: the frontend's own cost of a commit (a 4 KiB write and a FLUSH that
// journals it) as journaled chunks pile up in the extents they touch, before a fold takes them.
// Runs the WriteBackCache in process over an in-memory journal and backend (no nodes, no disk),
// so the line measures the cache's bookkeeping alone. Jobs, each --commits commits:
//   spread  4 KiB writes at random over 4096 extents: about one journaled chunk per extent.
//   hot     the same writes into 4 extents (a database's log and hot pages): the chunks of one
//           extent number --commits / 4 by the end.
// The peer is `spread` in the same run; the summary's ratio is hot/spread commits per second (1.0:
// the cache's cost does not grow with chunks per extent; it was 0.16 when each flush rebuilt every
// journaled chunk of an extent to ask whether they cover it).
// Usage: node scripts/bench/cache_bench.mjs [--commits N] [--tiny]
// Needs `make build`.
import { WriteBackCache } from '../../dist/src/cache/index.js';

const args = process.argv.slice(2);
const tiny = args.includes('--tiny');
const at = args.indexOf('--commits');
const commits = at === -1 ? (tiny ? 2000 : 20000) : Number(args[at + 1]);
if (!Number.isSafeInteger(commits) || commits < 100 || commits > 1_000_000) {
  console.error('cache_bench: --commits must be a whole number from 100 to 1000000');
  process.exit(2);
}
const MiB = 1024 * 1024;
const extentBytes = 4 * MiB;

async function job(name, extents) {
  let next = 1;
  const journal = {
    get nextLsn() {
      return next;
    },
    append: async () => next++,
    folded() {},
  };
  const backend = {
    geometry: { sizeBytes: 4096 * extentBytes, extentBytes, k: 4 },
    isHole: () => true,
    versionOf: () => 0,
    readRange: (_e, _o, length) => Promise.resolve(new Uint8Array(length)),
    readWhole: () => Promise.resolve(new Uint8Array(extentBytes)),
    persist: async () => {},
    journal,
  };
  // No background work: folds by age or pressure would take the chunks this job piles up.
  const cache = new WriteBackCache(backend, { flushCheckMs: 0, cacheBytesMax: 2048 * MiB, dirtyBytesMax: 1024 * MiB });
  const data = new Uint8Array(4096).fill(7);
  let seed = 12345;
  const random = () => (seed = (seed * 1103515245 + 12345) % 2147483648);
  const started = performance.now();
  for (let i = 0; i < commits; i++) {
    await cache.write((random() % extents) * extentBytes + (random() % 1024) * 4096, data);
    await cache.flush();
  }
  const seconds = (performance.now() - started) / 1000;
  const row = {
    bench: 'cache-commit',
    job: name,
    extents,
    commits,
    chunksPerExtent: Math.round((commits / Math.min(extents, commits)) * 10) / 10,
    commitsPerSecond: Math.round(commits / seconds),
    journaledBytes: cache.journaledBytes,
  };
  console.log(JSON.stringify(row));
  await cache.close().catch(() => undefined);
  return row;
}

const spread = await job('spread', 4096);
const hot = await job('hot', 4);
console.log(
  JSON.stringify({
    summary: 'cache-commit',
    ratio: 'hot/spread',
    value: Math.round((hot.commitsPerSecond / spread.commitsPerSecond) * 1000) / 1000,
  }),
);
