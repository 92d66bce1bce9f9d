#!/usr/bin/env node
// Metadata benchmark: `cairnctl volume create` work against a real local etcd (what the issue
// promises stays well under 100 ms), next to its peer in the same run: one plain etcd put of a
// value of the same size, the floor any create must pay. Prints one JSON line per result.
// Usage: node scripts/bench/meta_bench.mjs [COUNT]     (needs `make build`; starts its own etcd)
import { startEtcd } from '../../dist/test/harness/etcd.js';
import { EtcdMeta } from '../../dist/src/meta/index.js';
import { createVolume, initCluster } from '../../dist/src/api/index.js';
import { registerPaperTargets } from '../../dist/test/harness/volumes.js';

const count = Number(process.argv[2] ?? 200);
if (!Number.isSafeInteger(count) || count < 1) {
  console.error('meta_bench: COUNT must be a positive whole number');
  process.exit(2);
}
const percentile = (sorted, p) => sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
const summary = (name, samples) => {
  const sorted = [...samples].sort((a, b) => a - b);
  const round = (x) => Math.round(x * 1000) / 1000;
  return {
    bench: name,
    count: samples.length,
    p50Ms: round(percentile(sorted, 50)),
    p99Ms: round(percentile(sorted, 99)),
    maxMs: round(sorted.at(-1)),
  };
};

const etcd = await startEtcd({ name: 'bench' });
const meta = new EtcdMeta([etcd.endpoint]);
try {
  await initCluster(meta, { defaultProfile: { k: 1, m: 0 }, zonesRequired: 1 });
  // A volume needs targets its policy can use: register one node target, marked alive.
  await registerPaperTargets(meta, [{ name: 'n1', zone: 'a' }]);
  const creates = [];
  const puts = [];
  const value = JSON.stringify({
    name: 'v-000000',
    id: '0123456789abcdef',
    sizeBytes: 2 ** 34,
    profile: { k: 1, m: 0 },
    extentBytes: 4 << 20,
    zonesRequired: 1,
    targets: 'any',
    createdAt: new Date().toISOString(),
    state: 'ready',
  });
  for (let i = 0; i < count; i++) {
    let t = performance.now();
    await createVolume(meta, { name: `v-${i}`, sizeBytes: 2 ** 34, allowNoRedundancy: true });
    creates.push(performance.now() - t);
    t = performance.now();
    await meta.client.put(`bench/peer/${i}`).value(value);
    puts.push(performance.now() - t);
  }
  const create = summary('volume-create', creates);
  const put = summary('etcd-put-peer', puts);
  console.log(JSON.stringify(create));
  console.log(JSON.stringify(put));
  console.log(
    JSON.stringify({
      summary: 'meta',
      createOverPutP50: Math.round((create.p50Ms / put.p50Ms) * 100) / 100,
      targetCreateP50Ms: 100,
    }),
  );
} finally {
  meta.close();
  await etcd.stop();
}
