#!/usr/bin/env node
// Hostile-client soak: one real cairnd on loopback, two verifying clients that keep writing and
// reading back 1 MiB shards (each compared byte for byte) for --seconds without an attack, then
// --seconds while three attacks run against the same node:
//   slow bodies   PUTs declaring 64 MiB that send one byte a second (from 127.0.0.2)
//   idle flood    connections that never send a byte (from 127.0.0.3-127.0.0.10)
//   unread GETs   connections pipelining 10 GETs of a 1 MiB shard and reading nothing (127.0.0.11)
// The attackers run in a child process of their own (this script with --attack-port), so their
// work does not stall the verifiers' event loop; on two shared cores they still compete for CPU.
// Each attacker reopens what the node closes (after 100 ms), until the phase ends (an unread-GET attacker reads
// nothing, so it never sees its close: the node's limit hits, reported from its metrics, are
// the record of what the node cut). The verifiers connect from
// 127.0.0.1, so the node's per-client shares are what keeps them served.
// One JSON line per verifier and phase, one for the attack, then a summary: the verifiers'
// throughput during the attack over without it (the reference peer is the same node, unattacked,
// in the same run), the longest time any of their requests kept failing or waited, and the
// node's resident memory in each phase. Loopback only; every process started is stopped by pid.
// Usage: node scripts/bench/hostile_bench.mjs [--seconds S] [--slow N] [--idle N] [--pipelines N]
//          [--body-rate-window MS] [--idle-timeout MS] [--bound-ms MS]
//   --seconds            length of each phase (default 20)
//   --slow               slow-body connections held open (default 64)
//   --idle               idle connections attempted, spread over 8 addresses (default 4000)
//   --pipelines          connections pipelining unread GETs (default 100)
//   --body-rate-window   the node's --body-rate-window (default: the node's own, 10000)
//   --idle-timeout       the node's --idle-timeout (default: the node's own, 60000)
//   --bound-ms           the longest a verifier may keep failing (default 2000): `withinBound`
// Needs `make build`; starts its own etcd and cairnd.
import { fork } from 'node:child_process';
import { readFileSync, mkdtempSync, rmSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startCairnd } from '../../dist/test/harness/cairnd.js';
import { startEtcd } from '../../dist/test/harness/etcd.js';
import { freePort } from '../../dist/src/dev/index.js';
import { NodeShardStore } from '../../dist/src/shard/index.js';

const args = process.argv.slice(2);
const option = (name, fallback) => {
  const at = args.indexOf(name);
  return at === -1 ? fallback : args[at + 1];
};
const count = (name, fallback, max) => {
  const value = Number(option(name, String(fallback)));
  if (!Number.isSafeInteger(value) || value < 0 || value > max) {
    console.error(`hostile_bench: ${name} must be a whole number from 0 to ${max}`);
    process.exit(2);
  }
  return value;
};
const seconds = Number(option('--seconds', '20'));
if (!(seconds > 0 && seconds <= 600)) {
  console.error('hostile_bench: --seconds must be above 0 and at most 600');
  process.exit(2);
}
const slowCount = count('--slow', 64, 1000);
const idleCount = count('--idle', 4000, 8000);
const pipelineCount = count('--pipelines', 100, 1000);
const boundMs = count('--bound-ms', 2000, 600_000);
const nodeArgs = [];
for (const flag of ['--body-rate-window', '--idle-timeout']) {
  const value = option(flag, undefined);
  if (value !== undefined) nodeArgs.push(flag, String(count(flag, 0, 600_000)));
}
const shardBytes = 1 << 20;
const round = (x, digits = 2) => Math.round(x * 10 ** digits) / 10 ** digits;
const pause = (ms) => new Promise((r) => setTimeout(r, ms));

/** The node's resident memory in MiB, from /proc. */
function rssMiB(pid) {
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m === null ? 0 : Number(m[1]) / 1024;
  } catch {
    return 0;
  }
}

/**
 * A verifier: writes a shard, reads it back and compares, again and again until `until`.
 * A failed request is retried after 20 ms; a failure streak lasts from the first failed
 * request's start to the next success's end.
 */
async function verify(store, id, until) {
  let ops = 0;
  let failures = 0;
  let mismatches = 0;
  let maxLatencyMs = 0;
  let longestFailMs = 0;
  let failingSince;
  let i = 0;
  const started = performance.now();
  while (performance.now() < until) {
    const data = new Uint8Array(shardBytes);
    for (let j = 0; j < shardBytes; j += 512) data[j] = (i * 7 + j + id) & 0xff;
    const key = `hostile/c${id}/${i % 64}`;
    const t = performance.now();
    try {
      await store.delete(key);
      await store.put(key, data);
      const back = await store.get(key);
      if (back.length !== data.length || Buffer.compare(Buffer.from(back), Buffer.from(data)) !== 0) mismatches += 1;
      ops += 1;
      i += 1;
      const now = performance.now();
      maxLatencyMs = Math.max(maxLatencyMs, now - t);
      if (failingSince !== undefined) longestFailMs = Math.max(longestFailMs, now - failingSince);
      failingSince = undefined;
    } catch {
      failures += 1;
      failingSince ??= t;
      await pause(20);
    }
  }
  if (failingSince !== undefined) longestFailMs = Math.max(longestFailMs, performance.now() - failingSince);
  const elapsed = (performance.now() - started) / 1000;
  return {
    ops,
    failures,
    mismatches,
    MiBps: round((ops * 2 * shardBytes) / (1 << 20) / elapsed),
    maxLatencyMs: round(maxLatencyMs, 1),
    longestFailMs: round(longestFailMs, 1),
  };
}

/** Keeps `n` attacker connections open (reopening what closes) until stop(); counts what happened. */
function attack(port, n, addressOf, onOpen) {
  const stats = { opened: 0, closedByNode: 0, answered408: 0, answered503: 0 };
  let stopped = false;
  const sockets = new Set();
  const open = (slot) => {
    if (stopped) return;
    const socket = connect({ host: '127.0.0.1', port, localAddress: addressOf(slot) });
    sockets.add(socket);
    let head = '';
    socket.on('connect', () => {
      stats.opened += 1;
      onOpen(socket);
    });
    socket.on('data', (chunk) => {
      if (head.length < 16) head += chunk.toString('latin1', 0, 16);
    });
    socket.on('error', () => undefined);
    socket.on('close', () => {
      sockets.delete(socket);
      clearInterval(socket.drip);
      if (stopped) return;
      stats.closedByNode += 1;
      if (head.startsWith('HTTP/1.1 408')) stats.answered408 += 1;
      if (head.startsWith('HTTP/1.1 503')) stats.answered503 += 1;
      setTimeout(() => open(slot), 100);
    });
  };
  for (let slot = 0; slot < n; slot++) open(slot);
  return {
    stats,
    stop() {
      stopped = true;
      for (const s of sockets) {
        clearInterval(s.drip);
        s.destroy();
      }
    },
  };
}

/** The node's limit hits by limit, from its metrics endpoint. */
async function limitHits(metricsPort) {
  const text = await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text();
  const hits = {};
  for (const m of text.matchAll(/^cairn_node_limit_hits_total\{[^}]*limit="([a-z_]+)"[^}]*\} (\d+)/gm))
    hits[m[1]] = Number(m[2]);
  return hits;
}

/** The attacks, in the child process: runs until the parent says stop, then reports. */
function runAttacks(port) {
  const slow = attack(
    port,
    slowCount,
    () => '127.0.0.2',
    (socket) => {
      socket.write(
        `PUT /v1/shards/hostile/slow HTTP/1.1\r\nhost: x\r\ncontent-length: ${64 << 20}\r\nx-cairn-crc32: 0\r\n\r\n`,
      );
      socket.drip = setInterval(() => socket.write('x'), 1000);
    },
  );
  const idle = attack(
    port,
    idleCount,
    (slot) => `127.0.0.${3 + (slot % 8)}`,
    () => undefined,
  );
  const unread = attack(
    port,
    pipelineCount,
    () => '127.0.0.11',
    (socket) => {
      socket.pause();
      socket.write('GET /v1/shards/hostile/target HTTP/1.1\r\nhost: x\r\n\r\n'.repeat(10));
    },
  );
  process.send({ started: true });
  process.on('message', () => {
    slow.stop();
    idle.stop();
    unread.stop();
    process.send({ slowBodies: slow.stats, idleFlood: idle.stats, unreadPipelines: unread.stats }, () =>
      process.exit(0),
    );
  });
}

const attackPort = option('--attack-port', undefined);
if (attackPort !== undefined) runAttacks(Number(attackPort));
else await main();

async function main() {
  const workDir = mkdtempSync(join(tmpdir(), 'cairn-hostile-bench-'));
  const etcd = await startEtcd({ name: 'hostile-bench' });
  let node;
  let attacker;
  const stores = [];
  try {
    const metricsPort = await freePort();
    node = await startCairnd({
      etcd: etcd.endpoint,
      name: 'bench-h',
      zone: 'a',
      dataDir: join(workDir, 'node'),
      extraArgs: ['--metrics-listen', `127.0.0.1:${metricsPort}`, ...nodeArgs],
    });
    // Two verifying clients, each with its own store (and connections).
    for (let i = 0; i < 2; i++)
      stores.push(new NodeShardStore({ name: node.name, address: node.address, timeoutMs: 10_000 }));
    await stores[0].put('hostile/target', new Uint8Array(shardBytes).fill(9));

    const phase = async (name) => {
      let rssMax = rssMiB(node.pid);
      const sampler = setInterval(() => (rssMax = Math.max(rssMax, rssMiB(node.pid))), 200);
      const until = performance.now() + seconds * 1000;
      const rows = await Promise.all(stores.map((store, i) => verify(store, i + 1, until)));
      clearInterval(sampler);
      rows.forEach((row, i) =>
        console.log(JSON.stringify({ bench: 'hostile-verify', phase: name, client: i + 1, ...row })),
      );
      return { rows, rssMax };
    };

    const baseline = await phase('baseline');
    attacker = fork(new URL(import.meta.url).pathname, [...args, '--attack-port', String(node.port)], {
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    });
    await new Promise((resolve, reject) => {
      attacker.once('message', resolve);
      attacker.once('exit', (code) => reject(new Error(`the attacker exited early (${code})`)));
    });
    const attacked = await phase('attack');
    const attackStats = await new Promise((resolve) => {
      attacker.removeAllListeners('exit');
      attacker.once('message', resolve);
      attacker.send({ stop: true });
    });
    await new Promise((resolve) => (attacker.exitCode === null ? attacker.once('exit', resolve) : resolve()));
    const hits = await limitHits(metricsPort);
    console.log(
      JSON.stringify({
        bench: 'hostile-attack',
        seconds,
        ...attackStats,
        limitHits: hits,
      }),
    );
    const sum = (rows, field) => rows.reduce((s, r) => s + r[field], 0);
    const longestFailMs = Math.max(...attacked.rows.map((r) => r.longestFailMs));
    console.log(
      JSON.stringify({
        summary: 'hostile',
        throughputRatio: round(sum(attacked.rows, 'MiBps') / Math.max(1e-9, sum(baseline.rows, 'MiBps')), 3),
        baselineMiBps: round(sum(baseline.rows, 'MiBps')),
        attackMiBps: round(sum(attacked.rows, 'MiBps')),
        failuresDuringAttack: sum(attacked.rows, 'failures'),
        mismatches: sum(baseline.rows, 'mismatches') + sum(attacked.rows, 'mismatches'),
        longestFailMs,
        maxLatencyMsDuringAttack: Math.max(...attacked.rows.map((r) => r.maxLatencyMs)),
        boundMs,
        withinBound: longestFailMs <= boundMs,
        nodeRssMaxMiB: { baseline: round(baseline.rssMax, 0), attack: round(attacked.rssMax, 0) },
      }),
    );
  } finally {
    if (attacker !== undefined && attacker.exitCode === null) attacker.kill('SIGKILL');
    for (const s of stores) s.close();
    await node?.stop();
    await etcd.stop();
    rmSync(workDir, { recursive: true, force: true });
  }
}
