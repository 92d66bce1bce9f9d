#!/usr/bin/env node
// Map benchmark (issue 15): builds the copy-on-write extent map of one volume through the real
// map code (src/extent/map_tree.ts) on a real file-backed store (FileShardStore: every page a
// file, fsynced, as a node keeps shards), then measures what a commit of 1, 100 and 10,000
// changed extents writes, lookups from cached pages on one core, attaching (a fresh reader's
// first lookup) and the walk gc would make. Peer in the same run: the same records as today's
// per-extent etcd keys (key + JSON value, as src/meta writes them), the bytes etcd holds.
// Prints one JSON line per result.
//
// Usage: node scripts/bench/map_bench.mjs [--extents N] [--batch N] [--lookups N] [--dir DIR]
//   --extents  extents in the volume, all written (default 10,000,000: 40 TiB of 4 MiB extents)
//   --batch    extents per commit while building (default 100,000)
//   --lookups  timed lookups from cached pages (default 2,000,000)
// Needs `make build`. Everything it creates is under a temp dir, removed at the end.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { shardKey } from '../../dist/src/core/index.js';
import { MapTree } from '../../dist/src/extent/index.js';
import { FileShardStore } from '../../dist/src/shard/index.js';

const opts = { extents: 10_000_000, batch: 100_000, lookups: 2_000_000, dir: undefined };
const argv = process.argv.slice(2);
for (let i = 0; i < argv.length; i += 2) {
  const [flag, value] = [argv[i], argv[i + 1]];
  if (flag === '--dir') opts.dir = value;
  else if (
    ['--extents', '--batch', '--lookups'].includes(flag) &&
    Number.isSafeInteger(Number(value)) &&
    Number(value) > 0
  )
    opts[flag.slice(2)] = Number(value);
  else {
    console.error(`map_bench: bad option ${flag} ${value ?? ''}`);
    console.error('usage: node scripts/bench/map_bench.mjs [--extents N] [--batch N] [--lookups N] [--dir DIR]');
    process.exit(2);
  }
}

const extentBytes = 4 * 1024 * 1024;
const volumeId = 'bench-vol';
const targets = ['a-1', 'a-2', 'b-1', 'b-2', 'c-1', 'c-2', 'a-3', 'b-3', 'c-3'];
const round = (x, digits = 3) => Math.round(x * 10 ** digits) / 10 ** digits;
const emit = (row) => console.log(JSON.stringify({ bench: 'map', ...row }));
const log = (line) => console.error(`map_bench: ${line}`);

/** A 4+2 record as the engine writes one: generation, shard size, seed, six targets, journal LSN. */
function recordFor(extent, generation) {
  return {
    generation,
    shardBytes: extentBytes / 4,
    shards: Array.from({ length: 6 }, (_, i) => ({
      target: targets[(extent + i * 3) % targets.length],
      key: shardKey(volumeId, extent, generation, i),
    })),
    journalLsn: extent * 3,
    seed: (extent * 2654435761) >>> 0 || 1,
  };
}

const dir = opts.dir ?? mkdtempSync(join(tmpdir(), 'cairn-map-bench-'));
const files = await FileShardStore.open(join(dir, 'pages'));
const store = { get: (key) => files.get(key), put: (key, bytes) => files.put(key, bytes) };
try {
  const tree = new MapTree({ volumeId, extents: opts.extents, store, cachePages: 1 << 20 });
  let root = tree.emptyRoot();
  let generation = 2 ** 32;

  // Build: every extent written, `batch` at a time.
  let started = performance.now();
  let pages = 0;
  let mapBytes = 0;
  for (let from = 0; from < opts.extents; from += opts.batch) {
    const changes = new Map();
    for (let e = from; e < Math.min(opts.extents, from + opts.batch); e++) changes.set(e, recordFor(e, generation));
    const c = await tree.commit(root, changes, generation++);
    root = c.root;
    pages += c.pagesWritten.length;
    mapBytes += c.bytesWritten;
    if ((from / opts.batch) % 10 === 0)
      log(`built ${Math.min(opts.extents, from + opts.batch)} of ${opts.extents} extents`);
  }
  const buildS = (performance.now() - started) / 1000;
  const dataTiB = (opts.extents * extentBytes) / 2 ** 40;
  // The peer: what today's schema keeps in etcd for the same records (key + JSON value).
  let etcdBytes = 0;
  const sample = Math.min(opts.extents, 100_000);
  for (let e = 0; e < sample; e++) {
    const key = `cairn/v1/extents/${volumeId}/${String(e).padStart(12, '0')}`;
    etcdBytes += key.length + JSON.stringify(recordFor(e, 2 ** 32 + 7)).length;
  }
  const etcdBytesPerExtent = etcdBytes / sample;
  emit({
    phase: 'build',
    extents: opts.extents,
    levels: tree.levels,
    commits: Math.ceil(opts.extents / opts.batch),
    seconds: round(buildS, 2),
    pages,
    mapBytes,
    mapBytesPerTiB: Math.round(mapBytes / dataTiB),
    etcdKeysPerVolume: 1,
    peerEtcdKeysPerVolume: opts.extents,
    peerEtcdBytesPerTiB: Math.round((etcdBytesPerExtent * opts.extents) / dataTiB),
  });

  // Commits of 1, 100 and 10,000 changed extents, spread over the volume.
  for (const n of [1, 100, 10_000]) {
    const changes = new Map();
    const stride = Math.max(1, Math.floor(opts.extents / n));
    for (let i = 0; i < n && i * stride < opts.extents; i++) changes.set(i * stride, recordFor(i * stride, generation));
    started = performance.now();
    const c = await tree.commit(root, changes, generation++);
    root = c.root;
    emit({
      phase: 'commit',
      changedExtents: changes.size,
      pagesWritten: c.pagesWritten.length,
      bytesWritten: c.bytesWritten,
      ms: round(performance.now() - started),
      etcdWrites: 1,
      peerEtcdKeysWritten: changes.size,
    });
  }

  // Lookups from cached pages, one core (every page on the paths is cached by now): peek(), the
  // synchronous path a reader takes when the pages are cached, and lookup(), the async API.
  let x = 12345;
  const next = () => (x = (x * 1103515245 + 12345) >>> 0) % opts.extents;
  for (let i = 0; i < 100_000; i++) await tree.lookup(root, next());
  for (const api of ['peek', 'lookup']) {
    started = performance.now();
    let found = 0;
    if (api === 'peek') {
      for (let i = 0; i < opts.lookups; i++) {
        const r = tree.peek(root, next());
        if (r !== undefined && typeof r === 'object') found++;
      }
    } else for (let i = 0; i < opts.lookups; i++) if ((await tree.lookup(root, next())) !== undefined) found++;
    const lookupS = (performance.now() - started) / 1000;
    emit({
      phase: 'lookup',
      api,
      lookups: opts.lookups,
      found,
      lookupsPerS: Math.round(opts.lookups / lookupS),
      target: 1_000_000,
      met: opts.lookups / lookupS >= 1_000_000,
    });
  }

  // Attach: a fresh reader (empty cache) answers its first lookup, then reads one extent per leaf.
  const fresh = new MapTree({ volumeId, extents: opts.extents, store, cachePages: 1 << 20 });
  started = performance.now();
  await fresh.lookup(root, opts.extents - 1);
  const firstMs = performance.now() - started;
  emit({ phase: 'attach', firstLookupMs: round(firstMs), pagesLoaded: fresh.cachedPages });

  // The walk gc makes: every page and record the root reaches, from files.
  started = performance.now();
  let walkedPages = 0;
  let walkedRecords = 0;
  for await (const item of new MapTree({ volumeId, extents: opts.extents, store, cachePages: 16 }).walk(root)) {
    if ('pageKey' in item) walkedPages++;
    else walkedRecords++;
  }
  emit({
    phase: 'gc-walk',
    pages: walkedPages,
    records: walkedRecords,
    seconds: round((performance.now() - started) / 1000, 2),
    // The whole benchmark process, with the writer's cache of every page it committed.
    rssMiB: Math.round(process.memoryUsage().rss / 2 ** 20),
  });
} finally {
  await files.close();
  if (opts.dir === undefined) rmSync(dir, { recursive: true, force: true });
}
