/**
 * Listing exports against a real frontend (`cairnctl nbd serve`) and real etcd, with nbdinfo:
 * NBD_OPT_LIST and the NBD_OPT_INFO that `nbdinfo --list` sends for each export answer from the
 * volumes' etcd records and attach nothing (no write lock, no epoch bump). NBD_OPT_GO still
 * attaches. Volumes are written straight into etcd, so hundreds cost well under a second.
 * (The 10,000-volume figure is a benchmark: scripts/bench/list_bench.mjs.)
 */
import { expect } from 'chai';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { initCluster } from '../../src/api/index.js';
import { EtcdMeta, keys, rootPrefix } from '../../src/meta/index.js';
import { startEtcd, type EtcdHandle } from '../harness/etcd.js';
import { describeResult, nbdsh, runClient, startFrontendProcess, type Frontend } from '../harness/stack.js';
import { createVolumeRecords, listAndInfoScript, volumeRecordBytes } from '../harness/volumes.js';

/**
 * Volumes nbdinfo lists: it asks each export's meta contexts too, and libnbd 1.14 holds that
 * option about 200 ms in its socket (MSG_MORE), so this stays small; nbdsh lists them all.
 */
const nbdinfoCount = 20;
/** Enough that attaching each (about 140 ms apiece before the fix) would overrun the deadline. */
const volumeCount = 300;
const listDeadlineMs = 30_000;

describe('nbdinfo --list against a frontend', function () {
  let etcd: EtcdHandle;
  let meta: EtcdMeta;
  let frontend: Frontend | undefined;
  let dir: string;

  before(async function () {
    this.timeout(60_000);
    etcd = await startEtcd({ name: 'nbd-list' });
    meta = new EtcdMeta([etcd.endpoint], { timeoutMs: 5000 });
    await initCluster(meta, {});
    await createVolumeRecords(meta, nbdinfoCount);
    dir = mkdtempSync(join(tmpdir(), 'cairn-nbd-list-'));
    frontend = await startFrontendProcess({ etcd: etcd.endpoint, dir, label: 'list' });
  });

  after(async function () {
    this.timeout(60_000);
    await frontend?.stop();
    meta?.close();
    await etcd?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  async function keysUnder(prefix: string): Promise<string[]> {
    return meta.client.getAll().prefix(prefix).keys();
  }

  async function expectNothingAttached(fe: Frontend): Promise<void> {
    expect(await keysUnder(`${rootPrefix}locks/`), 'locks taken by listing').to.deep.equal([]);
    expect(await keysUnder(`${rootPrefix}epochs/`), 'epochs bumped by listing').to.deep.equal([]);
    expect(fe.logText()).to.not.match(/attached volume/);
  }

  it(`nbdinfo --list shows ${nbdinfoCount} volumes with their sizes, taking no lock and bumping no epoch`, async function () {
    this.timeout(listDeadlineMs + 10_000);
    const fe = frontend!;
    const listed = await runClient('/usr/bin/nbdinfo', ['--list', '--json', `nbd://127.0.0.1:${fe.port}`], {
      deadlineMs: listDeadlineMs,
    });
    expect(listed.code, `${describeResult(listed)}\nfrontend log: ${fe.logText().slice(-2000)}`).to.equal(0);
    const body = JSON.parse(listed.stdout) as { exports: { 'export-name': string; 'export-size': number }[] };
    const sizes = new Map(body.exports.map((e) => [e['export-name'], e['export-size']]));
    expect(sizes.size).to.equal(nbdinfoCount);
    for (let i = 0; i < nbdinfoCount; i++)
      expect(sizes.get(`v-${String(i).padStart(5, '0')}`), `volume ${i}`).to.equal(volumeRecordBytes(i));
    await expectNothingAttached(fe);
  });

  it(`NBD_OPT_LIST and an NBD_OPT_INFO for each of ${volumeCount} volumes attach none`, async function () {
    this.timeout(listDeadlineMs + 30_000);
    await createVolumeRecords(meta, volumeCount - nbdinfoCount, { prefix: 'w' });
    const fe = frontend!;
    const out = await nbdsh(
      'list and info every export',
      listAndInfoScript,
      {
        uri: `nbd://127.0.0.1:${fe.port}`,
      },
      { deadlineMs: listDeadlineMs },
    );
    const sizes = JSON.parse(out) as Record<string, number>;
    expect(Object.keys(sizes).length).to.equal(volumeCount);
    for (let i = 0; i < volumeCount - nbdinfoCount; i++)
      expect(sizes[`w-${String(i).padStart(5, '0')}`], `volume w ${i}`).to.equal(volumeRecordBytes(i));
    await expectNothingAttached(fe);
  });

  it('still attaches a volume for NBD_OPT_GO, taking its lock at a new epoch', async function () {
    this.timeout(60_000);
    const fe = frontend!;
    const size = await runClient('/usr/bin/nbdinfo', ['--size', `nbd://127.0.0.1:${fe.port}/v-00003`], {
      deadlineMs: 30_000,
    });
    expect(size.code, describeResult(size)).to.equal(0);
    expect(Number(size.stdout.trim())).to.equal(volumeRecordBytes(3));
    expect(fe.logText()).to.match(/attached volume v-00003 for writing \(epoch 1\)/);
    expect(await meta.client.get(keys.epoch('v-00003')).string()).to.equal('1');
  });
});
