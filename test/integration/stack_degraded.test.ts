/**
 * Degraded reads through the whole stack: a 4+2 volume written and flushed through the dev
 * frontend, then storage nodes SIGKILLed one after another (by the pids in cluster.json), and
 * the volume read back by a NEW read-only frontend each time, so no cache can hide a lost shard.
 * With m = 2 shards lost every byte must come back; with m + 1 = 3 lost, extents that lost three
 * shards must fail with an NBD error, and no read may ever return different bytes.
 */
import { expect } from 'chai';
import { readFileSync, writeFileSync } from 'node:fs';
import { extentMap } from '../harness/faults.js';
import {
  describeResult,
  expectSameBytes,
  nbdsh,
  runClient,
  runOk,
  seededBytes,
  useStack,
  type Frontend,
} from '../harness/stack.js';

const MiB = 1024 * 1024;
const volumeBytes = 64 * MiB;
const extentBytes = MiB;
const extents = volumeBytes / extentBytes;

describe('Full stack: degraded reads with storage nodes SIGKILLed (4+2, cold read-only frontends)', function () {
  this.timeout(120_000);
  const stack = useStack();
  const data = seededBytes('degraded', volumeBytes);
  /** For each extent, the node holding each of its 6 shards (from the extent map in etcd). */
  let shardNodes: string[][] = [];
  const killed: string[] = [];
  let reader: Frontend | undefined;

  before(async function () {
    this.timeout(120_000);
    const s = stack();
    await s.createVolume('deg', '64MiB', { profile: '4+2', extentSize: '1MiB' });
    writeFileSync(s.path('deg.src'), data);
    await runOk('nbdcopy --flush the data into volume deg', '/usr/bin/nbdcopy', [
      '--flush',
      s.path('deg.src'),
      s.uri('deg'),
    ]);
    const id = await s.volumeId('deg');
    const map = await extentMap([s.etcd], id);
    shardNodes = [...map.entries()].sort(([a], [b]) => a - b).map(([, r]) => r.shards.map((x) => x.target));
  });

  afterEach(async () => {
    await reader?.stop();
    reader = undefined;
  });

  /** Shards of extent e on nodes killed so far. */
  const lost = (e: number) => shardNodes[e]!.filter((n) => killed.includes(n)).length;

  async function killAndReadBack(node: string): Promise<{ fe: Frontend; out: Buffer }> {
    const s = stack();
    await s.killNode(node);
    killed.push(node);
    reader = await s.startFrontend({ readOnly: true });
    await runOk(`nbdcopy from a cold read-only frontend with ${killed.join(', ')} killed`, '/usr/bin/nbdcopy', [
      reader.uri('deg'),
      s.path('deg.out'),
    ]);
    return { fe: reader, out: readFileSync(s.path('deg.out')) };
  }

  it('the flushed volume has all 64 extents, each with 6 shards on 6 different nodes', () => {
    expect(shardNodes.length, 'extents in the etcd map after nbdcopy --flush').to.equal(extents);
    for (const [e, nodes] of shardNodes.entries()) {
      expect(new Set(nodes).size, `extent ${e} shards on nodes ${nodes.join(', ')}`).to.equal(6);
    }
  });

  it('with one node SIGKILLed (a-1), a cold read-only frontend returns identical bytes, decoding', async () => {
    const { fe, out } = await killAndReadBack('a-1');
    // The read-only frontend says so, and refuses a write a client sends anyway (strict mode off,
    // so libnbd does not stop it on the client side).
    const info = JSON.parse(
      (await runOk('nbdinfo on the read-only frontend', '/usr/bin/nbdinfo', ['--json', fe.uri('deg')])).stdout,
    ) as {
      exports: { is_read_only: boolean }[];
    };
    expect(info.exports[0]?.is_read_only, 'nbdinfo is_read_only on a --read-only frontend').to.equal(true);
    const write = await nbdsh(
      'a write sent to the read-only frontend',
      `
h.set_strict_mode(0)
h.connect_uri(A["uri"])
try:
    h.pwrite(b"\\xff" * 4096, 0); print("written")
except nbd.Error as e:
    print("refused", e.errno)
`,
      { uri: fe.uri('deg') },
    );
    expect(write.trim(), 'a WRITE to a read-only export must be refused (EPERM)').to.equal('refused EPERM');
    expectSameBytes(out, data, 'read with node a-1 killed', extentBytes);
    const degraded = shardNodes.filter((_, e) => lost(e) > 0).length;
    expect(degraded, 'extents with a shard on a-1').to.be.greaterThan(0);
    expect(fe.logText(), 'the frontend should log degraded reads (it decoded from parity)').to.match(/read degraded/);
  });

  it('with two nodes SIGKILLed (a-1, b-1: m = 2), a new cold read-only frontend still returns identical bytes', async () => {
    const { out } = await killAndReadBack('b-1');
    expect(Math.max(...shardNodes.map((_, e) => lost(e))), 'most shards lost by one extent').to.equal(2);
    expectSameBytes(out, data, 'read with nodes a-1 and b-1 killed', extentBytes);
  });

  it('with three SIGKILLed (m + 1): extents that lost 3 shards fail with an NBD error, never with other bytes', async () => {
    const s = stack();
    await s.killNode('c-1');
    killed.push('c-1');
    reader = await s.startFrontend({ readOnly: true });
    const copy = await runClient('/usr/bin/nbdcopy', [reader.uri('deg'), s.path('deg.out3')]);
    const unreadable = shardNodes.map((_, e) => e).filter((e) => lost(e) >= 3);
    expect(unreadable.length, 'extents that lost 3 shards (precondition)').to.be.greaterThan(0);
    expect(copy.code, `nbdcopy of a volume with unreadable extents must fail: ${describeResult(copy)}`).to.not.equal(0);

    // Extent by extent: each read either fails or returns exactly the data written.
    writeFileSync(s.path('deg.src'), data);
    const out = await nbdsh(
      'read every extent with 3 nodes down',
      `
import hashlib
src = open(A["src"], "rb").read()
for e in range(A["extents"]):
    off = e * A["extentBytes"]
    try:
        got = h.pread(A["extentBytes"], off)
        print(json.dumps({"extent": e, "result": "same" if got == src[off:off + A["extentBytes"]] else "DIFFERENT"}))
    except nbd.Error as err:
        print(json.dumps({"extent": e, "result": "error", "errno": err.errno, "message": err.string}))
`,
      { src: s.path('deg.src'), extents, extentBytes },
      { uri: reader.uri('deg') },
    );
    const results = out
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as { extent: number; result: string; errno?: string; message?: string });
    expect(results.length, 'one result per extent').to.equal(extents);
    const different = results.filter((r) => r.result === 'DIFFERENT').map((r) => r.extent);
    expect(different, 'extents that read back DIFFERENT bytes instead of failing (silent corruption)').to.deep.equal(
      [],
    );
    const failed = results.filter((r) => r.result === 'error').map((r) => r.extent);
    expect(
      failed,
      `extents whose read failed (must be exactly those with 3 shards lost); first error: ${results.find((r) => r.result === 'error')?.message}`,
    ).to.deep.equal(unreadable);
    const errnos = new Set(results.filter((r) => r.result === 'error').map((r) => r.errno));
    expect([...errnos], 'errno of the failed reads').to.deep.equal(['EIO']);
    expect(reader.running(), 'the frontend must survive unreadable extents').to.equal(true);
    expect(reader.logText(), 'the frontend must not log a BUG for a storage failure').to.not.match(/\bBUG\b/);
  });
});
