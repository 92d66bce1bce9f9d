/**
 * Storage-node and frontend faults on one cluster of real processes: `cairnctl dev up` (etcd, six
 * cairnd in zones a, b, c, 4+2 with 1 MiB extents) plus a-3, b-3 and c-3, so every zone has three
 * nodes and a zone that loses a node can still take its two shards of every new extent.
 *
 * Each test runs a verifying workload through real NBD clients (nbdsh, nbdcopy, fio with
 * verify=crc32c) and checks, through a NEW read-only frontend (no cache can hide a lost shard),
 * that no byte acknowledged by a FLUSH is lost and that no read returns other bytes than written:
 * - a corrupt shard file is read around (degraded) and healed by `cairnctl scrub`;
 * - a frontend SIGKILLed while its FLUSH stores shards, and again while its commit transaction
 *   sits in a SIGSTOPped etcd, leaves every extent entirely old or entirely new, never torn;
 * - two nodes SIGKILLed during a write+flush loop (and a concurrent cold reader) lose nothing;
 * - a node that returns with stale shards never serves them;
 * - a node whose disk is full (a 2 MiB tmpfs) keeps no partial file and loses nothing flushed, and
 *   must not stop flushes (KNOWN BUG: it does; see the comment at that test);
 * - with the whole of zone c stopped, everything flushed before reads back.
 *
 * The tests share the cluster and run in this order; each puts back the nodes it stopped, except
 * the last (zone c). Workload sizes are small: the point is the fault, not the volume.
 */
import { expect } from 'chai';
import { createHash } from 'node:crypto';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { get as httpGet, request as httpRequest } from 'node:http';
import {
  NodeFleet,
  cairnctlJson,
  extentMap,
  filesUnder,
  generationOfKey,
  lockOf,
  mountTmpfs,
  nodeStates,
  shardFilesOf,
  tcpReceiveQueues,
  tempFilesUnder,
  unmount,
  volumeIdOf,
  waitNodesState,
  type ExtentRecordView,
} from '../harness/faults.js';
import { pidRuns, waitFor } from '../../src/dev/index.js';
import { crc32Of } from '../../src/core/index.js';
import { nodeHeaders, nodeShardsPath } from '../../src/shard/index.js';
import {
  describeResult,
  expectSameBytes,
  nbdshProcess,
  runClient,
  runOk,
  seededBytes,
  useStack,
  type ClientProcess,
  type Frontend,
} from '../harness/stack.js';

const MiB = 1024 * 1024;
const blockBytes = 4096;
/** Test frontends flush only when a client asks (or at disconnect). */
const noBackgroundFlushMs = 600_000;

/** Contents of block `index` at `version`: the same in Python (hashlib.shake_256) and here. */
function blockOf(tag: string, version: number, index: number): Buffer {
  return createHash('shake256', { outputLength: blockBytes }).update(`${tag}:${version}:${index}`).digest();
}

const pythonBlock = `
import hashlib
def block(tag, v, i):
    return hashlib.shake_256(("%s:%d:%d" % (tag, v, i)).encode()).digest(4096)
`;

function sha256(b: Uint8Array): string {
  return createHash('sha256').update(b).digest('hex');
}

/** JSON lines a client printed so far. */
function jsonLines<T>(p: ClientProcess): T[] {
  return p
    .stdout()
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l) as T);
}

/**
 * The dev cluster's node secret as an Authorization header (the harness names its file): these
 * requests model a client that holds it.
 */
function nodeAuth(): Record<string, string> {
  const file = process.env['CAIRN_NODE_SECRET_FILE'];
  return file === undefined || file === '' ? {} : { authorization: `Bearer ${readFileSync(file, 'utf8').trim()}` };
}

/** GET http://address/path; resolves with the status (body drained). */
function httpStatus(address: string, path: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = httpGet(`http://${address}${path}`, { agent: false, timeout: 5_000, headers: nodeAuth() }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode ?? 0));
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', reject);
  });
}

/** One request to a node's shard API; resolves with the status and body. */
function nodeHttp(
  address: string,
  method: 'GET' | 'PUT' | 'DELETE',
  key: string,
  body?: Uint8Array,
): Promise<{ status: number; body: Buffer }> {
  return new Promise((resolve, reject) => {
    const headers: Record<string, string | number> = { ...nodeAuth() };
    if (body !== undefined) {
      headers['content-length'] = body.length;
      headers[nodeHeaders.crc32] = crc32Of(body).toString(16).padStart(8, '0');
    }
    const req = httpRequest(
      `http://${address}${nodeShardsPath}/${key}`,
      { method, agent: false, timeout: 10_000, headers },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks) }));
      },
    );
    req.on('timeout', () => req.destroy(new Error(`${method} ${key} on ${address} timed out`)));
    req.on('error', reject);
    req.end(body);
  });
}

/** The data of a whole-shard GET's body: [CRC, block] pairs of 4 KiB blocks, CRCs dropped. */
function dataOfBlocks(framed: Buffer): Buffer {
  const parts: Buffer[] = [];
  for (let at = 0; at < framed.length; at += 4 + blockBytes) parts.push(framed.subarray(at + 4, at + 4 + blockBytes));
  return Buffer.concat(parts);
}

/** Deletes shard `key` on the node and PUTs `data` under it as raw data (the node frames it). */
async function replaceShard(address: string, key: string, data: Uint8Array): Promise<void> {
  expect((await nodeHttp(address, 'DELETE', key)).status, `DELETE ${key}`).to.be.oneOf([200, 204]);
  const put = await nodeHttp(address, 'PUT', key, data);
  expect(put.status, `PUT ${key}: ${put.body.toString()}`).to.equal(201);
}

interface FioJob {
  jobname: string;
  error: number;
  read: { io_bytes: number };
  write: { io_bytes: number };
}

async function fio(
  step: string,
  args: readonly string[],
  output: string,
  context: () => string = () => '',
  deadlineMs = 90_000,
): Promise<FioJob[]> {
  // fio prints "connected to NBD server" on stdout: the JSON goes to a file.
  const r = await runClient('/usr/bin/fio', [...args, '--output-format=json', `--output=${output}`], { deadlineMs });
  let jobs: FioJob[];
  try {
    // With --thread, the nbd engine's "connected to NBD server" line lands in the file before the JSON.
    const text = readFileSync(output, 'utf8');
    jobs = (JSON.parse(text.slice(text.indexOf('{'))) as { jobs: FioJob[] }).jobs;
  } catch (err) {
    throw new Error(`${step}: no JSON from fio (${String(err)}): ${describeResult(r)}\n${context()}`);
  }
  const errors = jobs.filter((j) => j.error !== 0).map((j) => `${j.jobname}: error ${j.error}`);
  expect(
    errors,
    `${step}: fio job errors (84 = EILSEQ, a verify failure); ${describeResult(r)}\n${context()}`,
  ).to.deep.equal([]);
  expect(r.code, `${step}: ${describeResult(r)}\n${context()}`).to.equal(0);
  return jobs;
}

describe('Faults on a 9-node cluster (4+2, zones a, b, c of 3 nodes): nothing flushed is lost, no read returns other bytes', function () {
  this.timeout(150_000);
  const stack = useStack({ profile: '4+2', extentSize: '1MiB' });
  let fleet: NodeFleet;
  const readers: Frontend[] = [];

  before(async function () {
    this.timeout(90_000);
    const s = stack();
    fleet = new NodeFleet(s.etcd, s.dir);
    fleet.adoptDev(s.cluster.nodes);
    // Our nodes stop before `dev down` stops etcd (deferred cleanups run first).
    s.defer('stop the nodes the fault tests started', () => fleet.stopOurs());
    await Promise.all(
      [
        ['a-3', 'a'],
        ['b-3', 'b'],
        ['c-3', 'c'],
      ].map(([name, zone]) => fleet.add(name!, zone!)),
    );
    await waitNodesState(s.etcd, fleet.names(), 'up');
  });

  afterEach(async () => {
    for (const r of readers.splice(0)) await r.stop();
  });

  /** A new read-only frontend (cold: empty cache), stopped after the test. */
  async function coldReader(): Promise<Frontend> {
    const fe = await stack().startFrontend({ readOnly: true });
    readers.push(fe);
    return fe;
  }

  /** nbdcopy of the whole volume through a new read-only frontend. */
  async function coldCopy(volume: string, label: string): Promise<{ out: Buffer; fe: Frontend }> {
    const fe = await coldReader();
    const path = stack().path(`${label}.out`);
    try {
      await runOk(
        `nbdcopy ${volume} from a cold read-only frontend (${label})`,
        '/usr/bin/nbdcopy',
        [fe.uri(volume), path],
        {
          deadlineMs: 120_000,
        },
      );
    } catch (err) {
      throw new Error(`${String(err)}\nthe reader's log: ${fe.logText().slice(-3000)}`);
    }
    return { out: readFileSync(path), fe };
  }

  /** Writes `data` into `volume` with nbdcopy --flush through the dev frontend and waits for it to detach. */
  async function fill(volume: string, data: Buffer): Promise<void> {
    const s = stack();
    const src = s.path(`${volume}.src`);
    writeFileSync(src, data);
    const mark = s.devFrontendLog().length;
    await runOk(`nbdcopy --flush into ${volume}`, '/usr/bin/nbdcopy', ['--flush', src, s.uri(volume)], {
      deadlineMs: 120_000,
    });
    await s.waitForDevDetach(volume, mark);
  }

  // -------------------------------------------------------------------------------------------

  it('a flipped byte in a shard file: a cold reader returns the right bytes (degraded), scrub rewrites the shard, the next read is clean', async () => {
    const s = stack();
    const data = seededBytes('fault-scrub', 8 * MiB);
    await s.createVolume('fscrub', '8MiB');
    await fill('fscrub', data);
    const id = await volumeIdOf([s.etcd], 'fscrub');
    const map = await extentMap([s.etcd], id);
    // Data shard 0 of extent 3: a plain read of the extent's first quarter goes to exactly it.
    const ref = map.get(3)!.shards[0]!;
    const file = shardFilesOf(fleet.info(ref.target).dataDir, id).get(ref.key);
    expect(file, `the file of shard ${ref.key} on ${ref.target}`).to.be.a('string');
    const bytes = readFileSync(file!);
    const at = Math.floor(bytes.length / 2);
    bytes[at] = bytes[at]! ^ 0x5a;
    writeFileSync(file!, bytes);

    const first = await coldCopy('fscrub', 'scrub-1');
    expectSameBytes(first.out, data, 'cold read with a corrupt data shard on disk', MiB);
    expect(first.fe.logText(), 'the reader should have decoded extent 3 from parity').to.match(
      /extent 3 read degraded/,
    );

    const healed = await cairnctlJson<Record<string, unknown>>('scrub', s.etcd, ['scrub', '--volume', 'fscrub']);
    expect(healed, `scrub report ${JSON.stringify(healed)}`).to.include({ corrupt: 1, healed: 1 });
    expect(healed['unhealed']).to.deep.equal([]);
    const again = await cairnctlJson<Record<string, unknown>>('scrub again', s.etcd, ['scrub', '--volume', 'fscrub']);
    expect(again, `second scrub report ${JSON.stringify(again)}`).to.include({ corrupt: 0, missing: 0, healed: 0 });

    const second = await coldCopy('fscrub', 'scrub-2');
    expectSameBytes(second.out, data, 'cold read after scrub', MiB);
    expect(second.fe.logText(), 'after scrub no read should need parity').to.not.match(/read degraded/);
  });

  // -------------------------------------------------------------------------------------------

  it("shards replaced through a node's API by bytes that pass its checks (a GET's framed bytes PUT back; the data with 16 bytes changed): reads return the right bytes, scrub finds and heals both", async () => {
    const s = stack();
    const data = seededBytes('fault-integrity', 8 * MiB);
    await s.createVolume('fint', '8MiB');
    await fill('fint', data);
    const id = await volumeIdOf([s.etcd], 'fint');
    const map = await extentMap([s.etcd], id);
    const replaced: string[] = [];
    // Extent 2, data shard 0: what a GET returns (framed) PUT back as if it were the data.
    const a = map.get(2)!.shards[0]!;
    const framed = await nodeHttp(fleet.info(a.target).address, 'GET', a.key);
    expect(framed.status, `GET ${a.key}`).to.equal(200);
    await replaceShard(fleet.info(a.target).address, a.key, framed.body);
    replaced.push(`${a.target}/${a.key}`);
    // Extent 5, data shard 1: its real data with 16 bytes changed, PUT as data.
    const b = map.get(5)!.shards[1]!;
    const real = dataOfBlocks((await nodeHttp(fleet.info(b.target).address, 'GET', b.key)).body);
    real.fill(0x5a, 1000, 1016);
    await replaceShard(fleet.info(b.target).address, b.key, real);
    replaced.push(`${b.target}/${b.key}`);
    // The nodes vouch for both: their own checks pass.
    for (const ref of [a, b]) {
      const got = await nodeHttp(fleet.info(ref.target).address, 'GET', ref.key);
      expect(got.status, `the node serves ${ref.key} as valid`).to.equal(200);
    }

    const first = await coldCopy('fint', 'integrity-1');
    expectSameBytes(first.out, data, `cold read with shards replaced (${replaced.join(', ')})`, MiB);
    expect(first.fe.logText()).to.match(/extent 2 read degraded/);
    expect(first.fe.logText()).to.match(/extent 5 read degraded/);

    const healed = await cairnctlJson<Record<string, unknown>>('scrub', s.etcd, ['scrub', '--volume', 'fint']);
    expect(healed, `scrub report ${JSON.stringify(healed)}`).to.include({ corrupt: 2, healed: 2 });
    const again = await cairnctlJson<Record<string, unknown>>('scrub again', s.etcd, ['scrub', '--volume', 'fint']);
    expect(again, `second scrub report ${JSON.stringify(again)}`).to.include({ corrupt: 0, missing: 0, healed: 0 });
    const second = await coldCopy('fint', 'integrity-2');
    expectSameBytes(second.out, data, 'cold read after scrub', MiB);
    expect(second.fe.logText(), 'after scrub no read should need parity').to.not.match(/read degraded/);
  });

  // -------------------------------------------------------------------------------------------

  it('a frontend SIGKILLed while its FLUSH stores shards, then while its commit sits in etcd: every extent reads entirely old or entirely new', async () => {
    const s = stack();
    // 160 extents of 256 KiB: one flush stores 960 shards, writes the map's one leaf (three copies)
    // and commits by one root swap in etcd.
    const extentBytes = 256 * 1024;
    const volumeBytes = 40 * MiB;
    const extents = volumeBytes / extentBytes;
    await s.createVolume('ftorn', '40MiB', { extentSize: '256KiB' });
    const id = await volumeIdOf([s.etcd], 'ftorn');
    const versions = ['A', 'B', 'C'].map((v) => seededBytes(`fault-torn-${v}`, volumeBytes));
    await fill('ftorn', versions[0]!);
    versions.forEach((v, i) => writeFileSync(s.path(`torn.${i}`), v));
    const slice = (v: number, e: number) => versions[v]!.subarray(e * extentBytes, (e + 1) * extentBytes);

    /** Shard files of generations of `epoch`, over every node's data dir. */
    const shardsOfEpoch = (epoch: number): number => {
      let n = 0;
      for (const name of fleet.names())
        for (const key of shardFilesOf(fleet.info(name).dataDir, id).keys())
          if (Math.floor(generationOfKey(key) / 2 ** 32) === epoch) n += 1;
      return n;
    };

    /** Which version (index) each extent holds now, read through `fe`; throws on torn or garbage extents. */
    const readVersions = async (fe: Frontend, allowed: (e: number) => number[], label: string): Promise<number[]> => {
      const path = s.path(`torn-${label}.out`);
      await runOk(`nbdcopy ftorn (${label})`, '/usr/bin/nbdcopy', [fe.uri('ftorn'), path], { deadlineMs: 60_000 });
      const out = readFileSync(path);
      expect(out.length).to.equal(volumeBytes);
      const seen: number[] = [];
      const bad: string[] = [];
      for (let e = 0; e < extents; e++) {
        const got = out.subarray(e * extentBytes, (e + 1) * extentBytes);
        const v = [0, 1, 2].find((i) => Buffer.compare(got, slice(i, e)) === 0);
        seen.push(v ?? -1);
        if (v === undefined || !allowed(e).includes(v)) {
          // Per 4 KiB block, which versions the extent mixes: the signature of a torn extent.
          const mix = new Set<string>();
          for (let b = 0; b < extentBytes; b += blockBytes) {
            const blk = got.subarray(b, b + blockBytes);
            const which = [0, 1, 2].find((i) => Buffer.compare(blk, slice(i, e).subarray(b, b + blockBytes)) === 0);
            mix.add(which === undefined ? 'garbage' : 'ABC'[which]!);
          }
          bad.push(
            `extent ${e}: ${v === undefined ? `torn/garbage (blocks: ${[...mix].join('+')})` : `version ${'ABC'[v]}`}, allowed ${allowed(
              e,
            )
              .map((i) => 'ABC'[i])
              .join('/')}`,
          );
        }
      }
      expect(bad.slice(0, 10), `${label}: ${bad.length} extents wrong`).to.deep.equal([]);
      return seen;
    };

    /**
     * Writes version `v` over the whole volume through `fe`, sends a FLUSH, waits for `moment` (given
     * the writer's epoch) and SIGKILLs `fe`; then runs `after`. Returns what `moment` returned.
     */
    const writeFlushKill = async <T>(
      fe: Frontend,
      v: number,
      moment: (epoch: number) => Promise<T>,
      after: () => void = () => undefined,
    ): Promise<T> => {
      const writer = nbdshProcess(
        `
data = open(A["src"], "rb").read()
M = 1 << 20
for off in range(0, len(data), 4 * M):
    h.pwrite(data[off:off + 4 * M], off)
print("WRITTEN", flush=True)
cookie = h.aio_flush()
print("FLUSHING", flush=True)
sys.stdin.readline()
`,
        { src: s.path(`torn.${v}`) },
        { uri: fe.uri('ftorn') },
      );
      try {
        await writer.waitForOutput(/WRITTEN/);
        const lock = await lockOf([s.etcd], 'ftorn');
        expect(lock?.owner, 'the writer frontend holds the lock').to.match(new RegExp(`/${fe.pid}$`));
        await writer.waitForOutput(/FLUSHING/);
        const at = await moment(lock!.epoch);
        await fe.kill();
        return at;
      } finally {
        after();
        writer.endInput();
        await writer.exit();
      }
    };
    /** Copies of map pages written at `epoch`, over every node's data dir. */
    const mapPagesOfEpoch = (epoch: number): number => {
      let n = 0;
      for (const name of fleet.names()) {
        const dir = join(fleet.info(name).dataDir, id, 'map');
        if (!existsSync(dir)) continue;
        for (const file of filesUnder(dir))
          if (!file.includes('~') && Math.floor(Number(file.split('/').at(-1)) / 2 ** 32) === epoch) n += 1;
      }
      return n;
    };
    const shardsAtLeast = (epoch: number, n: number): Promise<number> =>
      waitFor(
        `${n} shards of epoch ${epoch} on the nodes`,
        () => {
          const have = shardsOfEpoch(epoch);
          return have >= n ? have : undefined;
        },
        60_000,
        { seen: () => `${shardsOfEpoch(epoch)} so far`, intervalMs: 5 },
      );

    // Round 1: killed with about 40% of the flush's shards stored (before any commit). A dirty
    // budget twice the data keeps the background flusher (it starts at half the budget) from
    // publishing part of the writes early: the FLUSH must carry them all, in one commit.
    const fe1 = await s.startFrontend({ flushAgeMs: noBackgroundFlushMs, dirtyMax: '512MiB', cacheSize: '1GiB' });
    const shardsTotal = extents * 6;
    const atKill1 = await writeFlushKill(fe1, 1, (epoch) => shardsAtLeast(epoch, Math.floor(shardsTotal * 0.4)));
    expect(atKill1, 'shards stored when the frontend died (fewer than all: the flush was in flight)').to.be.below(
      shardsTotal,
    );
    const fe2 = await s.startFrontend({
      forceTakeover: true,
      // Round 2 stops etcd before the commit. When any etcd call passes its deadline (the
      // topology refresh, every 2 s, does within 5 s of the stop), the etcd3 client drops its
      // connection and dials a new one, which the stopped etcd never answers: a commit issued
      // after that waits unsent. Slow stores under load hit that in 3 of 6 full runs; a long
      // deadline keeps the commit on the open connection, into etcd's receive queue.
      etcdTimeoutMs: 120_000,
      flushAgeMs: noBackgroundFlushMs,
      dirtyMax: '512MiB',
      cacheSize: '1GiB',
    });
    const round1 = await readVersions(fe2, () => [0, 1], 'after kill 1');

    // Round 2: version C, killed while its commit (the root swap, a few hundred bytes) is on its
    // way to etcd or sits unread in its socket: etcd is SIGSTOPped halfway through the stores, and
    // the frontend dies once every shard and the commit's map pages are stored and etcd's receive
    // queues have grown since (the swap follows the pages at once; a keepalive that came first
    // makes this the kill between pages and root, which must hold as well). After SIGCONT etcd
    // may or may not apply the swap; either way every extent must be entirely old or entirely new.
    const etcdPid = s.cluster.etcdPid;
    const etcdPort = Number(new URL(s.etcd).port);
    expect(pidRuns(etcdPid, join(s.dir, 'etcd')), 'the dev etcd runs').to.equal(true);
    let etcdStopped = false;
    const inCommit = await writeFlushKill(
      fe2,
      2,
      async (epoch) => {
        // Halfway through the stores: the commit cannot have started (it follows the last store),
        // and the rest of the stores take about a second, well inside every etcd deadline and
        // lease. Stopped later, etcd could apply the first batch first and leave the second held
        // by HTTP/2 flow control, a few KiB in its queue (seen once the binary shard connection
        // made stores faster).
        await shardsAtLeast(epoch, shardsTotal / 2);
        process.kill(etcdPid, 'SIGSTOP');
        etcdStopped = true;
        await shardsAtLeast(epoch, shardsTotal);
        await waitFor(
          `the map pages of epoch ${epoch}`,
          () => (mapPagesOfEpoch(epoch) >= 3 ? true : undefined),
          20_000,
          {
            seen: () => `${mapPagesOfEpoch(epoch)} copies so far`,
            intervalMs: 5,
          },
        );
        const sum = () => tcpReceiveQueues(etcdPort).reduce((a, b) => a + b, 0);
        const baseline = sum();
        return waitFor(
          "the commit's root swap to reach the stopped etcd's receive queues",
          () => {
            const queued = sum();
            return queued > baseline ? queued : undefined;
          },
          20_000,
          {
            seen: () =>
              `receive queues on port ${etcdPort}: ${tcpReceiveQueues(etcdPort).join(', ')}; ` +
              `the frontend's log ends: ${fe2.logText().slice(-1500)}`,
            intervalMs: 5,
          },
        );
      },
      () => {
        if (etcdStopped) process.kill(etcdPid, 'SIGCONT');
      },
    );
    const fe3 = await s.startFrontend({ forceTakeover: true, flushAgeMs: noBackgroundFlushMs });
    const round2 = await readVersions(fe3, (e) => [round1[e]!, 2], 'after kill 2');
    // The takeover frontend can write and flush.
    const check = await runClient(
      '/usr/bin/nbdsh',
      [
        '-u',
        fe3.uri('ftorn'),
        '-c',
        'h.pwrite(b"\\x17" * 4096, 0)\nh.flush()\nprint(h.pread(4096, 0) == b"\\x17" * 4096)',
      ],
      { deadlineMs: 60_000 },
    );
    expect(check.stdout.trim(), `write+flush through the second takeover frontend: ${describeResult(check)}`).to.equal(
      'True',
    );
    await fe3.stop();
    const count = (r: number[], v: number) => r.filter((x) => x === v).length;
    console.log(
      `      frontend crash: kill 1 at ${atKill1}/${shardsTotal} shards -> ${count(round1, 0)} A + ${count(round1, 1)} B; ` +
        `kill 2 with ${inCommit} bytes of commit queued in etcd -> ${count(round2, 2)} C + ${extents - count(round2, 2)} old`,
    );
  });

  // -------------------------------------------------------------------------------------------

  it('two nodes SIGKILLed during a write+flush loop: every flushed byte reads back; flushes fail only transiently; a concurrent cold reader never sees other bytes', async () => {
    const s = stack();
    const tag = 'churn';
    const volumeBytes = 32 * MiB;
    const blocks = volumeBytes / blockBytes;
    const blocksPerExtent = MiB / blockBytes;
    const extents = volumeBytes / MiB;
    await s.createVolume('fchurn', '32MiB');
    await s.createVolume('fstatic', '16MiB');
    // Version 0 everywhere, flushed, so partial writes later read-modify-write through the nodes.
    const v0 = Buffer.concat(Array.from({ length: blocks }, (_, i) => blockOf(tag, 0, i)));
    await fill('fchurn', v0);
    const staticData = seededBytes('fault-static', 16 * MiB);
    await fill('fstatic', staticData);
    const chunk = 64 * 1024;
    const chunkShas = Array.from({ length: (16 * MiB) / chunk }, (_, c) =>
      sha256(staticData.subarray(c * chunk, (c + 1) * chunk)),
    );

    // The plan: batch b writes two whole extents and two partial ranges (read-modify-write), then flushes.
    const plan: [number, [number, number][]][] = [];
    for (let b = 1; b <= 400; b++) {
      const whole = [(2 * b) % extents, (2 * b + 1) % extents].map((e) => [e * blocksPerExtent, blocksPerExtent]);
      const p1: [number, number] = [((5 * b + 7) % extents) * blocksPerExtent + ((37 * b) % 240), 16];
      const p2: [number, number] = [((11 * b + 3) % extents) * blocksPerExtent + ((53 * b) % 200), 48];
      plan.push([b, [...(whole as [number, number][]), p1, p2]]);
    }
    writeFileSync(s.path('churn.plan'), JSON.stringify(plan));

    const writerFe = await s.startFrontend({ flushAgeMs: noBackgroundFlushMs });
    const readerFe = await s.startFrontend({ readOnly: true, cacheSize: '1MiB', dirtyMax: '1MiB' });
    readers.push(readerFe);
    const writer = nbdshProcess(
      `${pythonBlock}
import select, time
plan = json.load(open(A["plan"]))
last_ok = 0
for b, writes in plan:
    if select.select([sys.stdin], [], [], 0)[0]:
        break
    try:
        for start, count in writes:
            h.pwrite(b"".join(block(A["tag"], b, i) for i in range(start, start + count)), start * 4096)
    except nbd.Error as e:
        print(json.dumps({"batch": b, "write_error": e.errno, "message": e.string}), flush=True)
        break
    t = time.time()
    try:
        h.flush()
        print(json.dumps({"batch": b, "flush": True, "ms": int((time.time() - t) * 1000)}), flush=True)
    except nbd.Error as e:
        print(json.dumps({"batch": b, "flush": False, "errno": e.errno, "message": e.string, "ms": int((time.time() - t) * 1000)}), flush=True)
# A last FLUSH covers whatever a failed one left dirty; retried for a bounded time.
end = time.time() + A["finalSeconds"]
while True:
    try:
        h.flush(); print(json.dumps({"final": True}), flush=True); break
    except nbd.Error as e:
        if time.time() > end:
            print(json.dumps({"final": False, "errno": e.errno, "message": e.string}), flush=True); break
`,
      { plan: s.path('churn.plan'), tag, finalSeconds: 20 },
      { uri: writerFe.uri('fchurn'), deadlineMs: 140_000 },
    );
    const reader = nbdshProcess(
      `
import hashlib, select
shas = A["shas"]; n = len(shas); chunk = A["chunk"]
stats = {"ok": 0, "error": 0, "wrong": 0}
i = 0
while not select.select([sys.stdin], [], [], 0)[0]:
    c = (i * 7919) % n; i += 1
    try:
        got = h.pread(chunk, c * chunk)
        if hashlib.sha256(got).hexdigest() == shas[c]:
            stats["ok"] += 1
        else:
            stats["wrong"] += 1
            print(json.dumps({"wrong": c}), flush=True)
    except nbd.Error as e:
        stats["error"] += 1
        if stats["error"] <= 5: print(json.dumps({"error": c, "errno": e.errno, "message": e.string}), flush=True)
print(json.dumps({"stats": stats}), flush=True)
`,
      { shas: chunkShas, chunk },
      { uri: readerFe.uri('fstatic'), deadlineMs: 140_000 },
    );

    type BatchLine = {
      batch: number;
      flush?: boolean;
      errno?: string;
      message?: string;
      ms?: number;
      write_error?: string;
    };
    const batchLines = () => jsonLines<BatchLine>(writer).filter((l) => l.batch !== undefined);
    const waitBatches = (n: number, what: string) =>
      waitFor(
        `${what}: the writer to report ${n} batches`,
        () => {
          if (!writer.running()) throw new Error(`the writer exited: ${writer.stderr().slice(-1500)}`);
          return batchLines().length >= n;
        },
        60_000,
        { seen: () => `last lines: ${JSON.stringify(batchLines().slice(-3))}` },
      );

    // Both kills land while the writer is in the middle of its work (writes, flushes in flight).
    await waitBatches(3, 'before the kills');
    await fleet.kill('a-3');
    await fleet.kill('b-3');
    const afterSecond = batchLines().length;
    // Keep writing until the cluster has settled: 3 flushes in a row succeed after the second kill.
    await waitFor(
      'three successful flushes in a row after the second kill',
      () => {
        if (!writer.running()) throw new Error(`the writer exited: ${writer.stderr().slice(-1500)}`);
        const after = batchLines().slice(afterSecond);
        return after.length >= 3 && after.slice(-3).every((l) => l.flush === true);
      },
      60_000,
      { seen: () => `lines after the second kill: ${JSON.stringify(batchLines().slice(afterSecond).slice(-5))}` },
    );
    writer.write('stop\n');
    const wr = await writer.exit();
    reader.write('stop\n');
    const rr = await reader.exit();
    expect(wr.code, `writer: ${describeResult(wr)}`).to.equal(0);
    expect(rr.code, `reader: ${describeResult(rr)}`).to.equal(0);

    const lines = batchLines();
    expect(
      lines.filter((l) => l.write_error !== undefined),
      'writes that failed (they land in the cache)',
    ).to.deep.equal([]);
    const final = jsonLines<{ final?: boolean; errno?: string; message?: string }>(writer).find(
      (l) => l.final !== undefined,
    );
    expect(
      final,
      `the last FLUSH: ${JSON.stringify(final)}; frontend log: ${writerFe.logText().slice(-2000)}`,
    ).to.deep.include({
      final: true,
    });
    const failed = lines.filter((l) => l.flush === false);
    const slowest = Math.max(...lines.map((l) => l.ms ?? 0));

    // The reader: never other bytes; with at most m = 2 nodes down, never an error either.
    const readerStats = jsonLines<{ stats?: { ok: number; error: number; wrong: number } }>(reader).find(
      (l) => l.stats !== undefined,
    )?.stats;
    expect(readerStats, `reader output: ${reader.stdout().slice(-1000)}`).to.not.equal(undefined);
    expect(readerStats!.wrong, `reads of fstatic that returned other bytes: ${reader.stdout().slice(-1000)}`).to.equal(
      0,
    );
    expect(
      readerStats!.error,
      `reads of fstatic that failed with 2 nodes down: ${reader.stdout().slice(-1000)}`,
    ).to.equal(0);

    // The model: per block, the versions written in order; the newest one covered by a successful
    // FLUSH must be there, or a newer one (a failed flush may still have published some extents).
    const executed = lines.map((l) => l.batch);
    const lastOkBatch =
      final?.final === true ? Math.max(...executed) : Math.max(0, ...lines.filter((l) => l.flush).map((l) => l.batch));
    const history: number[][] = Array.from({ length: blocks }, () => [0]);
    for (const [b, writes] of plan) {
      if (!executed.includes(b)) break;
      for (const [start, count] of writes) for (let i = start; i < start + count; i++) history[i]!.push(b);
    }
    await writerFe.stop();
    const { out } = await coldCopy('fchurn', 'churn');
    const bad: string[] = [];
    let newerThanDurable = 0;
    for (let i = 0; i < blocks; i++) {
      const got = out.subarray(i * blockBytes, (i + 1) * blockBytes);
      const h = history[i]!;
      let durable = 0;
      for (let j = 0; j < h.length; j++) if (h[j]! <= lastOkBatch) durable = j;
      const candidates = h.slice(durable);
      const match = candidates.find((v) => Buffer.compare(got, blockOf(tag, v, i)) === 0);
      if (match === undefined) {
        const older = h.slice(0, durable).find((v) => Buffer.compare(got, blockOf(tag, v, i)) === 0);
        bad.push(
          `block ${i} (extent ${Math.floor(i / blocksPerExtent)}): ${older !== undefined ? `old version ${older} (LOST a flushed write)` : got.every((x) => x === 0) ? 'zeros' : 'garbage'}, expected one of ${candidates.join(',')}`,
        );
      } else if (match !== h[durable]) newerThanDurable += 1;
    }
    expect(bad.slice(0, 10), `${bad.length} blocks wrong after the kills`).to.deep.equal([]);
    console.log(
      `      node kills during writes: ${lines.length} batches, ${failed.length} flushes failed (${[...new Set(failed.map((f) => f.errno))].join(',') || '-'}), ` +
        `slowest flush ${slowest} ms, concurrent reader ${readerStats!.ok} reads ok; ${newerThanDurable} blocks newer than the last good flush`,
    );

    // Put the two nodes back (same name, zone, data dir, port) for the tests that follow.
    await fleet.restart('a-3');
    await fleet.restart('b-3');
    await waitNodesState(s.etcd, ['a-3', 'b-3'], 'up');
  });

  // -------------------------------------------------------------------------------------------

  it('a node that returns with stale shards (killed, data overwritten elsewhere, restarted on its old data dir) never serves them', async () => {
    const s = stack();
    const volumeBytes = 16 * MiB;
    const v1 = seededBytes('fault-stale-1', volumeBytes);
    const v2 = seededBytes('fault-stale-2', volumeBytes);
    await s.createVolume('fstale', '16MiB');
    await fill('fstale', v1);
    const id = await volumeIdOf([s.etcd], 'fstale');
    const before = await extentMap([s.etcd], id);
    const x = 'c-1';
    const onX = [...before].filter(([, r]) => r.shards.some((sh) => sh.target === x)).map(([e]) => e);
    expect(onX.length, `extents with a shard on ${x}`).to.be.above(0);

    await fleet.kill(x);
    await waitNodesState(s.etcd, [x], 'down');
    await fill('fstale', v2);
    const after = await extentMap([s.etcd], id);
    const stillOnX = [...after].filter(([, r]) => r.shards.some((sh) => sh.target === x)).map(([e]) => e);
    expect(stillOnX, `extents whose new generation has a shard on the dead ${x}`).to.deep.equal([]);
    for (const [e, r] of after)
      expect(r.generation, `extent ${e} has a new generation`).to.not.equal(before.get(e)!.generation);
    const stale = [...shardFilesOf(fleet.info(x).dataDir, id).keys()];
    const referenced = new Set([...after.values()].flatMap((r: ExtentRecordView) => r.shards.map((sh) => sh.key)));
    expect(stale.length, `stale shard files of the old generation on ${x}`).to.be.above(0);
    expect(
      stale.filter((k) => referenced.has(k)),
      'stale files the new map refers to',
    ).to.deep.equal([]);

    await fleet.restart(x);
    await waitNodesState(s.etcd, [x], 'up');
    const first = await coldCopy('fstale', 'stale-1');
    expectSameBytes(first.out, v2, `cold read with ${x} back on its stale data dir`, MiB);

    // And with another node down, so reads decode from parity while the stale shards sit on x.
    const y = 'c-3';
    await fleet.kill(y, 'SIGTERM');
    const second = await coldCopy('fstale', 'stale-2');
    expectSameBytes(second.out, v2, `cold read with ${x} stale and ${y} stopped`, MiB);
    await fleet.restart(y);
    await waitNodesState(s.etcd, [y], 'up');
    console.log(
      `      stale node: ${stale.length} stale shard files on ${x} (${onX.length} extents had a shard there); never read`,
    );
  });

  // -------------------------------------------------------------------------------------------

  // KNOWN BUG (open, src/): this test fails at "every FLUSH must succeed". A shard put refused
  // with 507 makes the flush retry (cache persistWithRetry) call persist() again, and placement,
  // a pure function of the topology in etcd, picks the same full node for the same shard every
  // time: its registration (configured capacity, or the file system's size, minus its shard
  // bytes) never says it is full. After ~10 s the FLUSH fails with EIO, and every later FLUSH of
  // those extents does too while the node is up. Fix: the frontend's placer leaves out a target
  // that refused a put (DiskFullError, UnavailableError) for a while (ShardPlacer.refused()).
  it('a node whose disk is full (2 MiB tmpfs): write+flush batches go on elsewhere, no partial file stays, every flushed byte reads back', async function () {
    const s = stack();
    const dir = s.path('full-a-4');
    const why = await mountTmpfs(dir, '2m');
    if (why !== undefined) {
      console.log(`      skipped: ${why}`);
      this.skip();
    }
    s.defer(`umount ${dir}`, () => unmount(dir));
    // The node looks like its peers to placement (same capacity), as a node does whose disk other
    // data filled, or whose --capacity exceeds its disk: cairnd reports the configured capacity or
    // the file system's size, not its free space. Its disk holds only 2 MiB (8 shards of 256 KiB).
    const peerCapacity = (
      await cairnctlJson<{ name: string; capacityBytes: number }[]>('node list', s.etcd, ['node', 'list'])
    ).find((n) => n.name === 'a-1')!.capacityBytes;
    const full = await fleet.add('a-4', 'a', { dataDir: dir, extraArgs: ['--capacity', String(peerCapacity)] });
    await waitNodesState(s.etcd, ['a-4'], 'up');
    const volumeBytes = 32 * MiB;
    const data = seededBytes('fault-full', volumeBytes);
    writeFileSync(s.path('full.src'), data);
    let writerFe: Frontend | undefined;
    try {
      await s.createVolume('ffull', '32MiB');
      writerFe = await s.startFrontend({ flushAgeMs: noBackgroundFlushMs });
      // Batch b writes extents 4b..4b+3 and flushes. A failed FLUSH has already been retried for
      // ~10 s by the frontend; the writer stops there (the frontend is then SIGKILLed, so its
      // disconnect does not retry the same flush twice more).
      const writer = nbdshProcess(
        `
import time
data = open(A["src"], "rb").read()
M = 1 << 20
for b in range(8):
    h.pwrite(data[4 * b * M:4 * (b + 1) * M], 4 * b * M)
    t = time.time()
    try:
        h.flush()
        print(json.dumps({"batch": b, "flush": True, "ms": int((time.time() - t) * 1000)}), flush=True)
    except nbd.Error as e:
        print(json.dumps({"batch": b, "flush": False, "errno": e.errno, "message": e.string, "ms": int((time.time() - t) * 1000)}), flush=True)
        break
print("DONE", flush=True)
sys.stdin.readline()
`,
        { src: s.path('full.src') },
        { uri: writerFe.uri('ffull'), deadlineMs: 120_000 },
      );
      await writer.waitForOutput(/DONE/, 100_000);
      const lines = jsonLines<{ batch: number; flush: boolean; errno?: string; message?: string; ms: number }>(writer);
      const frontendLog = writerFe.logText();
      await writerFe.kill();
      writer.endInput();
      await writer.exit();

      const nodeLog = fleet.stderr('a-4');
      // Refused over HTTP (507) or over the binary connection the frontend uses (SHARD_PUT).
      const refused = (nodeLog.match(/-> 507 ENOSPC|SHARD_PUT request \d+ -> ENOSPC/g) ?? []).length;
      expect(refused, `a-4 should have refused shard puts with ENOSPC (its log: ${nodeLog.slice(-1500)})`).to.be.above(
        0,
      );
      expect(tempFilesUnder(dir), `temp files left on the full node ${dir}`).to.deep.equal([]);
      // Every shard file on the full node is whole: the node serves each one, CRC-checked.
      const id = await volumeIdOf([s.etcd], 'ffull');
      const files = [...shardFilesOf(dir, id).keys()];
      for (const key of files) {
        const status = await httpStatus(full.address, `/v1/shards/${key}`);
        expect(status, `GET of ${key} from the full node`).to.equal(200);
      }

      // Flushed batches read back; the extents of a failed flush are old (zeros) or new, whole.
      const { out } = await coldCopy('ffull', 'full');
      const bad: string[] = [];
      for (let e = 0; e < volumeBytes / MiB; e++) {
        const b = Math.floor(e / 4);
        const line = lines.find((l) => l.batch === b);
        const got = out.subarray(e * MiB, (e + 1) * MiB);
        const isNew = Buffer.compare(got, data.subarray(e * MiB, (e + 1) * MiB)) === 0;
        const isZero = got.every((x) => x === 0);
        const allowed = line === undefined ? ['zero'] : line.flush ? ['new'] : ['zero', 'new'];
        const is = isNew ? 'new' : isZero ? 'zero' : 'garbage';
        if (!allowed.includes(is)) bad.push(`extent ${e}: ${is}, allowed ${allowed.join('/')}`);
      }
      expect(bad, 'extents read back wrong').to.deep.equal([]);

      const failed = lines.filter((l) => !l.flush);
      console.log(
        `      full disk: a-4 refused ${refused} shard puts, keeps ${files.length} whole shard files, no temp files; ` +
          `${lines.length - failed.length} of 8 batches flushed${failed.length > 0 ? `, then FLUSH ${failed[0]!.errno} after ${failed[0]!.ms} ms` : ''}`,
      );
      expect(
        failed.map((l) => `batch ${l.batch}: FLUSH ${l.errno} after ${l.ms} ms: ${l.message}`),
        // KNOWN BUG (see the report): the retry places the same shards on the same full node.
        `every FLUSH must succeed while 3 other nodes of zone a have room; frontend log: ${frontendLog
          .split('\n')
          .filter((l) => /retrying|FLUSH/.test(l))
          .slice(-3)
          .join('\n')}`,
      ).to.deep.equal([]);
      expect(lines.length, 'batches written').to.equal(8);
    } finally {
      await writerFe?.kill();
      // The full node leaves for good (SIGTERM revokes its lease: down at once); its disk goes with it.
      if (fleet.running('a-4')) await fleet.kill('a-4', 'SIGTERM');
      await waitNodesState(s.etcd, ['a-4'], 'down').catch(() => undefined);
    }
  });

  // -------------------------------------------------------------------------------------------

  it('with every node of zone c stopped (c-1 SIGKILLed, c-2 and c-3 SIGTERMed), fio verifies everything flushed before through a cold reader', async () => {
    const s = stack();
    await s.createVolume('fzone', '16MiB');
    const writerFe = await s.startFrontend({ flushAgeMs: noBackgroundFlushMs });
    // --thread: one process, so a deadline's SIGKILL stops all of fio (a forked job would outlive it).
    const common = [
      '--name=zone',
      '--thread',
      '--ioengine=nbd',
      '--rw=randwrite',
      '--bs=64k',
      '--size=16M',
      '--verify=crc32c',
    ];
    await fio(
      'fio randwrite before the zone stops',
      [...common, `--uri=${writerFe.uri('fzone')}`, '--iodepth=16', '--end_fsync=1', '--do_verify=0'],
      s.path('zone-write.json'),
    );
    await writerFe.stop();
    const id = await volumeIdOf([s.etcd], 'fzone');
    const zoneOf = (t: string) => fleet.info(t).zone;
    const map = await extentMap([s.etcd], id);
    expect(map.size, 'extents written').to.equal(16);
    const inC = [...map.values()].map((r) => r.shards.filter((sh) => zoneOf(sh.target) === 'c').length);
    expect(Math.max(...inC), 'most shards of one extent in zone c (the zone cap must be m = 2)').to.be.at.most(2);

    const zoneC = fleet.names().filter((n) => zoneOf(n) === 'c');
    expect(zoneC.sort()).to.deep.equal(['c-1', 'c-2', 'c-3']);
    for (const [name, signal] of [
      ['c-1', 'SIGKILL'],
      ['c-2', 'SIGTERM'],
      ['c-3', 'SIGTERM'],
    ] as const) {
      expect(fleet.running(name), `${name} runs before the zone stops`).to.equal(true);
      await fleet.kill(name, signal);
    }
    const states = await nodeStates(s.etcd);
    expect(
      ['c-2', 'c-3'].map((n) => states.get(n)),
      'SIGTERMed nodes are down at once',
    ).to.deep.equal(['down', 'down']);

    const reader = await coldReader();
    const jobs = await fio(
      'fio --verify_only with zone c stopped',
      [...common, `--uri=${reader.uri('fzone')}`, '--verify_only'],
      s.path('zone-verify.json'),
    );
    expect(
      jobs.map((j) => j.read.io_bytes),
      'bytes verified with zone c down',
    ).to.deep.equal([16 * MiB]);
    expect(reader.logText(), 'reads with zone c down decode from parity').to.match(/read degraded/);
  });
});
