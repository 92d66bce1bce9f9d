/**
 * An S3-backed volume whose S3 server goes away and comes back: the shared Ceph RGW (real S3,
 * test/harness/rgw.ts) with one bucket per zone registered as three S3 targets, a 2+1 volume on
 * `--targets s3`, a real etcd, and frontends given the S3 keys in their environment.
 *
 * Only radosgw is stopped (SIGTERM by pid, then waited for); the memstore OSD keeps every object,
 * so the restarted radosgw on the same port serves the same shards. While it is down, reads of
 * cold data must fail with an NBD error (never return other bytes), and a FLUSH must fail; once
 * it is back, the same reads return the bytes written and a FLUSH of the data written during the
 * outage succeeds.
 */
import { expect } from 'chai';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { get as httpGet } from 'node:http';
import { join } from 'node:path';
import { startEtcd, type EtcdHandle } from '../harness/etcd.js';
import { addS3Targets, cairnctl, readExtents, startFrontendProcess, type ExtentReadResult } from '../harness/faults.js';
import { sharedRgw, type RgwHandle } from '../harness/rgw.js';
import { pidGone, waitFor } from '../../src/dev/index.js';
import {
  describeResult,
  expectSameBytes,
  nbdshProcess,
  runOk,
  seededBytes,
  type ClientProcess,
  type Frontend,
} from '../harness/stack.js';
import './_rgw_root_hooks.test.js';

const MiB = 1024 * 1024;
const extentBytes = MiB;
const volumeBytes = 12 * MiB;
const phaseBytes = 4 * MiB;
/** A FLUSH retries transient shard failures for ~10 s before it fails. */
const flushAnswerMs = 40_000;

const sha256 = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');

function answersHttp(url: string): Promise<boolean> {
  return new Promise((resolve) => {
    const req = httpGet(url, { agent: false, timeout: 1_000 }, (res) => {
      res.resume();
      resolve(true);
    });
    req.on('timeout', () => req.destroy());
    req.on('error', () => resolve(false));
  });
}

interface CmdResult {
  readonly cmd: string;
  readonly ok: boolean;
  readonly errno?: string;
  readonly message?: string;
  readonly ms: number;
}

describe('S3 targets on a Ceph RGW that is stopped and restarted (2+1 volume, one bucket per zone)', function () {
  this.timeout(150_000);
  const dir = mkdtempSync(join('/dev/shm', 'cairn-fault-s3-'));
  let etcd: EtcdHandle | undefined;
  let rgw: RgwHandle | undefined;
  let env: NodeJS.ProcessEnv = {};
  const frontends: Frontend[] = [];
  const clients: ClientProcess[] = [];

  before(async function () {
    this.timeout(150_000);
    rgw = await sharedRgw();
    env = { AWS_ACCESS_KEY_ID: rgw.accessKeyId, AWS_SECRET_ACCESS_KEY: rgw.secretAccessKey };
    etcd = await startEtcd();
    await cairnctl('init', etcd.endpoint, ['init', '--profile', '2+1', '--extent-size', '1MiB', '--targets', 's3']);
    await addS3Targets(etcd.endpoint, rgw, `fault-${randomBytes(3).toString('hex')}`);
    await cairnctl('volume create', etcd.endpoint, [
      'volume',
      'create',
      'fcold',
      '12MiB',
      '--profile',
      '2+1',
      '--targets',
      's3',
    ]);
  });

  after(async function () {
    this.timeout(90_000);
    for (const c of clients) {
      c.kill('SIGKILL');
      await c.exit();
    }
    for (const fe of frontends) await fe.stop().catch(() => fe.kill());
    // Leave the shared RGW serving for the files that run after this one.
    if (rgw !== undefined && pidGone(rgw.radosgwPid())) await rgw.startRadosgw();
    await etcd?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('RGW down: cold reads fail with an NBD error, never other bytes, and a FLUSH fails; RGW back: the reads match and a FLUSH succeeds', async () => {
    const s3 = rgw!;
    const etcdUrl = etcd!.endpoint;
    const data = seededBytes('fault-s3', volumeBytes);
    writeFileSync(join(dir, 'data'), data);
    const frontend = async (label: string, readOnly: boolean): Promise<Frontend> => {
      const fe = await startFrontendProcess({ etcd: etcdUrl, dir, label, env, readOnly, flushAgeMs: 600_000 });
      frontends.push(fe);
      return fe;
    };
    /** What the volume must hold once phases `phases` were flushed: their bytes, zeros elsewhere. */
    const expected = (phases: number): Buffer =>
      Buffer.concat([data.subarray(0, phases * phaseBytes), Buffer.alloc(volumeBytes - phases * phaseBytes)]);
    /** Extents that read back bytes other than `want` (an NBD error is not counted here). */
    const wrongReads = (results: ExtentReadResult[], want: Buffer): string[] =>
      results
        .filter(
          (r) =>
            r.sha !== undefined &&
            r.sha !== sha256(want.subarray(r.extent * extentBytes, (r.extent + 1) * extentBytes)),
        )
        .map((r) => `extent ${r.extent} read other bytes`);

    // A writer session: an nbdsh that runs "write P" / "flush" / "quit" from stdin on its own
    // frontend. A read-only frontend is refused while a writer holds the volume, so the cold
    // reads below happen while no writer is attached.
    const session = async (label: string) => {
      const fe = await frontend(label, false);
      const writer = nbdshProcess(
        `
import time
data = open(A["data"], "rb").read()
P = A["phaseBytes"]
for line in sys.stdin:
    cmd = line.strip()
    if cmd == "quit": break
    t = time.time()
    try:
        if cmd.startswith("write "):
            p = int(cmd.split()[1])
            h.pwrite(data[p * P:(p + 1) * P], p * P)
        h.flush()
        print(json.dumps({"cmd": cmd, "ok": True, "ms": int((time.time() - t) * 1000)}), flush=True)
    except nbd.Error as e:
        print(json.dumps({"cmd": cmd, "ok": False, "errno": e.errno, "message": e.string, "ms": int((time.time() - t) * 1000)}), flush=True)
`,
        { data: join(dir, 'data'), phaseBytes },
        { uri: fe.uri('fcold'), deadlineMs: 140_000 },
      );
      clients.push(writer);
      const results = (): CmdResult[] =>
        writer
          .stdout()
          .split('\n')
          .filter((l) => l.startsWith('{'))
          .map((l) => JSON.parse(l) as CmdResult);
      const send = async (cmd: string): Promise<CmdResult> => {
        const n = results().length;
        writer.write(`${cmd}\n`);
        return waitFor(
          `the writer to answer "${cmd}"`,
          () => {
            if (!writer.running()) throw new Error(`the writer exited: ${writer.stderr().slice(-1500)}`);
            return results()[n];
          },
          flushAnswerMs,
        );
      };
      const end = async (): Promise<void> => {
        writer.write('quit\n');
        const wr = await writer.exit();
        expect(wr.code, describeResult(wr)).to.equal(0);
        await fe.stop();
      };
      return { fe, send, end };
    };

    const first = await session('writer');
    expect(await first.send('write 0'), `write+flush with RGW up; log: ${first.fe.logText().slice(-1500)}`).to.include({
      ok: true,
    });
    await first.end();

    // Stop only radosgw, by pid. The monitor and the memstore OSD keep the objects.
    const oldPid = s3.radosgwPid();
    await s3.stopRadosgw();
    expect(pidGone(oldPid), `radosgw pid ${oldPid} is gone`).to.equal(true);
    expect(await answersHttp(s3.endpoint), `nothing answers at ${s3.endpoint}`).to.equal(false);

    // A cold reader during the outage: every extent fails, never other bytes. The written ones
    // have every shard behind RGW; so do the map pages that say which extents were never written,
    // and an extent the reader cannot look up is an error, not zeros.
    const reader = await frontend('reader', true);
    const during = await readExtents(reader.uri('fcold'), volumeBytes, extentBytes);
    expect(wrongReads(during, expected(1)), 'reads during the outage that returned other bytes').to.deep.equal([]);
    const failed = during.filter((r) => r.sha === undefined);
    expect(
      failed.map((r) => r.extent),
      `extents whose read failed during the outage (all: the map pages are on the buckets too); first error: ${failed[0]?.message}`,
    ).to.deep.equal(Array.from({ length: volumeBytes / extentBytes }, (_, e) => e));
    expect(reader.logText(), "the reader's log names the map page it could not read").to.match(/map page/);
    expect([...new Set(failed.map((r) => r.errno))], 'errno of the failed reads').to.deep.equal(['EIO']);
    expect(reader.running(), 'the reader survives an unreachable S3').to.equal(true);
    // Its view detaches once its last client is gone and the reads in flight have failed; a writer
    // attaching before that would leave the view stale (EPERM) for the reads after the restart.
    await reader.waitForLog(/detached volume fcold/, 0, 90_000);

    // A FLUSH during the outage fails (after its retries); the data stays dirty in the cache.
    const second = await session('writer2');
    const outageFlush = await second.send('write 1');
    expect(outageFlush, `write+flush during the outage must fail; log: ${second.fe.logText().slice(-1500)}`).to.include(
      {
        ok: false,
      },
    );

    // radosgw back on the same port.
    await s3.startRadosgw();
    const restartedPid = s3.radosgwPid();
    expect(restartedPid, 'a new radosgw process').to.not.equal(oldPid);
    const attempts: CmdResult[] = [await second.send('flush')];
    // The first request on a pooled connection may meet the dead server's socket: allow one retry.
    if (!attempts[0]!.ok) attempts.push(await second.send('flush'));
    expect(
      attempts.map((a) => (a.ok ? 'ok' : `${a.errno}: ${a.message}`)),
      `FLUSH after the restart; log: ${second.fe.logText().slice(-1500)}`,
    ).to.satisfy((l: string[]) => l.at(-1) === 'ok');
    await second.end();

    // The reader that failed before now reads every byte (no failure was cached), and so does a new one.
    const after = await readExtents(reader.uri('fcold'), volumeBytes, extentBytes);
    expect(wrongReads(after, expected(2)), 'reads after the restart that returned other bytes').to.deep.equal([]);
    expect(
      after.filter((r) => r.sha === undefined).map((r) => `extent ${r.extent}: ${r.errno} ${r.message}`),
      `reads after the restart that failed; the reader's log ends: ${reader.logText().slice(-2500)}`,
    ).to.deep.equal([]);
    const cold = await frontend('cold', true);
    const out = join(dir, 'out');
    await runOk('nbdcopy from a new cold reader after the restart', '/usr/bin/nbdcopy', [cold.uri('fcold'), out], {
      deadlineMs: 60_000,
    });
    expectSameBytes(readFileSync(out), expected(2), 'the volume after RGW came back', extentBytes);
    console.log(
      `      RGW outage: ${failed.length} cold extent reads failed (EIO), none wrong; outage FLUSH ${outageFlush.errno} after ${outageFlush.ms} ms; ` +
        `FLUSH after restart: ${attempts.map((a) => (a.ok ? `ok ${a.ms} ms` : `${a.errno}`)).join(', ')}`,
    );
  });
});
