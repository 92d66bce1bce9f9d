/**
 * Encryption at rest end to end, with real processes: `cairnctl volume create --encrypt`, a
 * frontend given the key-encryption key, real clients writing and reading, and then every file
 * every storage node holds (shards and journal segments) searched for what was written.
 */
import { expect } from 'chai';
import { randomBytes } from 'node:crypto';
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  readdirSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { join } from 'node:path';
import {
  ClientProcess,
  describeResult,
  nbdsh,
  runClient,
  runOk,
  sha256,
  skipWithoutFilesystem,
  useStack,
  type Frontend,
  type Stack,
} from '../harness/stack.js';
import { cairnctlPath } from '../harness/cli.js';
import { freePort } from '../harness/nbd.js';
import { mountWriter, deferStagedCleanup, startDriver } from '../harness/csi.js';
import { status } from '../../src/csi/index.js';
import { GetObjectCommand, ListObjectsV2Command, S3Client } from '@aws-sdk/client-s3';
import { startEtcd } from '../harness/etcd.js';
import { addS3Targets, cairnctl, startFrontendProcess } from '../harness/faults.js';
import { sharedRgw } from '../harness/rgw.js';
import './_rgw_root_hooks.test.js';

const MiB = 1024 * 1024;
const marker = 'CAIRN-PLAINTEXT-MARKER';

/** `blocks` 4 KiB blocks, each starting with the marker and its index, then bytes of its own. */
function recognisable(blocks: number, salt: number): Buffer {
  const out = Buffer.alloc(blocks * 4096);
  for (let b = 0; b < blocks; b++) {
    const block = out.subarray(b * 4096, (b + 1) * 4096);
    for (let i = 0; i < 4096; i++) block[i] = (i * 13 + b * 7 + salt) % 251;
    block.write(`${marker}-${salt}-${b}-`, 0, 'latin1');
  }
  return out;
}

/** Every regular file under `dir`. */
function filesUnder(dir: string): string[] {
  const out: string[] = [];
  for (const name of readdirSync(dir)) {
    const path = join(dir, name);
    const st = statSync(path);
    if (st.isDirectory()) out.push(...filesUnder(path));
    else if (st.isFile()) out.push(path);
  }
  return out;
}

/** Files on any node of `s` holding `needle`, and how many files and bytes were searched. */
function nodeFilesHolding(s: Stack, needles: readonly Buffer[]): { hits: string[]; files: number; bytes: number } {
  const hits: string[] = [];
  let files = 0;
  let bytes = 0;
  for (const node of s.cluster.nodes)
    for (const file of filesUnder(node.dataDir)) {
      const body = readFileSync(file);
      files += 1;
      bytes += body.length;
      for (const n of needles)
        if (body.includes(n)) hits.push(`${file} holds ${JSON.stringify(n.subarray(0, 32).toString('latin1'))}`);
    }
  return { hits, files, bytes };
}

async function readAll(uri: string, path: string): Promise<Buffer> {
  await runOk(`nbdcopy ${uri}`, '/usr/bin/nbdcopy', [uri, path], { deadlineMs: 60_000 });
  return readFileSync(path);
}

describe('Encryption at rest: real clients against a dev cluster', function () {
  this.timeout(240_000);
  const stack = useStack();

  it('nodes hold ciphertext only (shards and journal); the key reads it back; no key, a wrong key, and a key rekeyed away are refused', async () => {
    const s = stack();
    const kekA = s.path('a.kek');
    const kekB = s.path('b.kek');
    writeFileSync(kekA, randomBytes(32));
    writeFileSync(kekB, randomBytes(32).toString('hex'));
    await s.cairnctl('create an encrypted volume', [
      'volume',
      'create',
      'enc',
      '16MiB',
      '--extent-size',
      '1MiB',
      '--encrypt',
      '--kek-file',
      kekA,
    ]);
    const info = JSON.parse((await s.cairnctl('volume info', ['volume', 'info', 'enc', '--json'])).stdout) as {
      encryption: { keyId: string; wrappedKey: string };
    };
    expect(info.encryption.keyId).to.match(/^kek-[0-9a-f]{16}$/);
    expect(JSON.stringify(await s.etcdGetPrefix('')), 'etcd holds no KEK').to.not.include(
      readFileSync(kekA).toString('hex'),
    );

    // A frontend with the key; folds held back so the small writes stay in the journal a while.
    const fe: Frontend = await s.startFrontend({ extraArgs: ['--kek-file', kekA, '--fold-age', '600000'] });
    const whole = recognisable(2048, 1); // 8 MiB: whole extents, erasure-coded at the flush
    const small = recognisable(4, 2); // 16 KiB: journaled at the flush
    writeFileSync(s.path('whole.img'), whole);
    writeFileSync(s.path('small.img'), small);
    await nbdsh(
      'write 8 MiB and 16 KiB, flush after each',
      'h.pwrite(open(A["whole"], "rb").read(), 0)\nh.flush()\nh.pwrite(open(A["small"], "rb").read(), 12 * 1024 * 1024 + 4096)\nh.flush()',
      { whole: s.path('whole.img'), small: s.path('small.img') },
      { uri: fe.uri('enc'), deadlineMs: 90_000 },
    );
    const needles = [Buffer.from(marker, 'latin1'), whole.subarray(4096, 8192), small.subarray(0, 4096)];
    const journaled = nodeFilesHolding(s, needles);
    expect(journaled.hits, 'plaintext on a node while journaled').to.deep.equal([]);
    expect(journaled.bytes, 'the search read the data (6 shards of 8 extents at least)').to.be.greaterThan(8 * MiB);

    const expected = Buffer.alloc(16 * MiB);
    whole.copy(expected, 0);
    small.copy(expected, 12 * MiB + 4096);
    expect(sha256(await readAll(fe.uri('enc'), s.path('back.img')))).to.equal(sha256(expected));
    // Detach folds the journal into erasure-coded generations: still ciphertext only.
    await fe.stop();
    expect(nodeFilesHolding(s, needles).hits, 'plaintext on a node after the fold').to.deep.equal([]);

    // No key: the dev frontend refuses to attach it, naming the key it needs.
    const since = s.devFrontendLog().length;
    const none = await runClient('/usr/bin/nbdinfo', [s.uri('enc')], { deadlineMs: 30_000 });
    expect(none.code, describeResult(none)).to.not.equal(0);
    await s.waitForDevFrontendLog(new RegExp(`encrypted with key ${info.encryption.keyId}`), since);
    // The wrong key: refused the same way; the volume is not served.
    const wrong = await s.startFrontend({ extraArgs: ['--kek-file', kekB] });
    const refused = await runClient('/usr/bin/nbdinfo', [wrong.uri('enc')], { deadlineMs: 30_000 });
    expect(refused.code, describeResult(refused)).to.not.equal(0);
    await wrong.waitForLog(/encrypted with key kek-/);

    // Rekey: the data key is rewrapped under B; B now opens it, A no longer does.
    const rekey = JSON.parse(
      (await s.cairnctl('rekey', ['volume', 'rekey', 'enc', '--kek-file', kekA, '--new-kek-file', kekB, '--json']))
        .stdout,
    ) as { keyId: string };
    expect(rekey.keyId).to.not.equal(info.encryption.keyId);
    expect(sha256(await readAll(wrong.uri('enc'), s.path('after-rekey.img')))).to.equal(sha256(expected));
    await wrong.stop();
    const old = await runClient(
      process.execPath,
      [cairnctlPath, 'volume', 'export', 'enc', s.path('old.img'), '--kek-file', kekA, '--etcd', s.etcd],
      { deadlineMs: 60_000 },
    );
    expect(old.code, `the old key no longer opens it: ${describeResult(old)}`).to.equal(1);
    expect(old.stderr).to.include(`encrypted with key ${rekey.keyId}`);

    // Snapshots and clones keep the key; a local export with the key reads them.
    // A detached volume is attached here to take it (its journal may hold writes to fold): with the key.
    await s.cairnctl('snapshot', ['snapshot', 'create', 'enc', 's1', '--kek-file', kekB]);
    await s.cairnctl('clone', ['volume', 'clone', 'enc@s1', 'encc']);
    for (const ref of ['enc@s1', 'encc']) {
      const file = s.path(`${ref.replace('@', '-')}.img`);
      await s.cairnctl(`export ${ref}`, ['volume', 'export', ref, file, '--kek-file', kekB]);
      expect(sha256(readFileSync(file)), ref).to.equal(sha256(expected));
    }
    // An encrypted import reads back the same; its nodes hold no plaintext of it either.
    await s.cairnctl('import', ['volume', 'import', s.path('whole.img'), 'encimp', '--encrypt', '--kek-file', kekA]);
    await s.cairnctl('export encimp', ['volume', 'export', 'encimp', s.path('encimp.img'), '--kek-file', kekA]);
    expect(readFileSync(s.path('encimp.img')).equals(whole)).to.equal(true);
    expect(nodeFilesHolding(s, needles).hits, 'plaintext on a node after the import').to.deep.equal([]);
  });

  it('a policy rule can require encryption: a matching volume without a key is refused, naming the rule', async () => {
    const s = stack();
    await s.cairnctl('policy add', ['policy', 'add', 'secure', '--selector', 'tier=prod', '--set', 'encrypted=true']);
    const r = await runClient(
      process.execPath,
      [cairnctlPath, 'volume', 'create', 'p1', '16MiB', '--label', 'tier=prod', '--etcd', s.etcd],
      { deadlineMs: 60_000 },
    );
    expect(r.code, describeResult(r)).to.equal(2);
    expect(r.stderr).to.match(/Cannot create volume "p1" encrypted \(rule secure\): no key-encryption key was given/);
    const kek = s.path('p.kek');
    writeFileSync(kek, randomBytes(32).toString('base64'));
    const made = JSON.parse(
      (
        await s.cairnctl('create with the key', [
          'volume',
          'create',
          'p1',
          '16MiB',
          '--label',
          'tier=prod',
          '--kek-file',
          kek,
          '--json',
        ])
      ).stdout,
    ) as { encryption?: { keyId: string }; settingSources: Record<string, string> };
    expect(made.encryption?.keyId).to.match(/^kek-/);
    // A --kek-file given to create asks for encryption itself.
    expect(made.settingSources['encrypted']).to.equal('request');
  });
});

describe('Encryption at rest with a key service (cairnctl kms serve, the Vault transit interface)', function () {
  this.timeout(240_000);
  const stack = useStack();

  it('the service wraps the data key; a frontend with its token serves the volume; without the service nothing attaches', async () => {
    const s = stack();
    const tokenFile = s.path('kms.token');
    writeFileSync(tokenFile, randomBytes(16).toString('hex'), { mode: 0o600 });
    const port = await freePort();
    const kms = new ClientProcess(
      process.execPath,
      [
        cairnctlPath,
        'kms',
        'serve',
        '--listen',
        `127.0.0.1:${port}`,
        '--dir',
        s.path('kms-keys'),
        '--token-file',
        tokenFile,
        '--key',
        'cairn',
      ],
      { deadlineMs: 600_000 },
    );
    s.defer('the key service', async () => {
      if (kms.running()) kms.kill('SIGTERM');
      await kms.exit();
    });
    await kms.waitForOutput(/serving the transit interface/);
    const url = `http://127.0.0.1:${port}`;
    const env = { CAIRN_ETCD: s.etcd, CAIRN_KMS_TOKEN_FILE: tokenFile };
    await runOk(
      'create with --kms',
      process.execPath,
      [
        cairnctlPath,
        'volume',
        'create',
        'kv',
        '16MiB',
        '--encrypt',
        '--kms',
        url,
        '--kms-key',
        'cairn',
        '--extent-size',
        '1MiB',
      ],
      { deadlineMs: 60_000, env },
    );
    const info = JSON.parse((await s.cairnctl('info', ['volume', 'info', 'kv', '--json'])).stdout) as {
      encryption: { keyId: string; kms: { url: string; key: string } };
    };
    expect(info.encryption.keyId).to.equal('transit:cairn');
    expect(info.encryption.kms).to.deep.equal({ kind: 'transit', url, key: 'cairn' });
    const fe = await s.startFrontend({ env: { CAIRN_KMS_TOKEN_FILE: tokenFile } });
    const data = recognisable(1024, 4);
    writeFileSync(s.path('kv.img'), data);
    await nbdsh(
      'write and flush',
      'h.pwrite(open(A["f"], "rb").read(), 0)\nh.flush()',
      { f: s.path('kv.img') },
      { uri: fe.uri('kv'), deadlineMs: 90_000 },
    );
    expect((await readAll(fe.uri('kv'), s.path('kv-back.img'))).subarray(0, data.length).equals(data)).to.equal(true);
    await fe.stop();
    expect(nodeFilesHolding(s, [Buffer.from(marker, 'latin1')]).hits).to.deep.equal([]);
    // The service gone: an attach fails naming it, and nothing is served.
    kms.kill('SIGTERM');
    await kms.exit();
    const r = await runClient(
      process.execPath,
      [cairnctlPath, 'volume', 'export', 'kv', s.path('kv-x.img'), '--etcd', s.etcd],
      { deadlineMs: 60_000, env: { CAIRN_KMS_TOKEN_FILE: tokenFile } },
    );
    expect(r.code, describeResult(r)).to.not.equal(0);
    expect(r.stderr).to.include(`Cannot reach key service ${url}`);
  });
});

describe('Encryption at rest through CSI: provisioner and node-stage secrets', function () {
  this.timeout(240_000);
  const stack = useStack();

  it('CreateVolume wraps with the provisioner secret; NodeStage hands the node-stage secret to the frontend, which attaches only then; unstage takes it away', async function () {
    if (skipWithoutFilesystem(this)) return;
    const s = stack();
    const kekDir = s.path('node-keks');
    const stateDir = s.path('csi-state');
    // A frontend that reads the node plugin's key directory at each attach.
    mkdirSync(kekDir, { recursive: true, mode: 0o700 });
    const fe = await s.startFrontend({ env: { CAIRN_KEK_DIR: kekDir } });
    const base = fe.uri('').replace(/\/$/, '');
    const nodeArgs = ['--node', '--node-id', 'n1', '--attach', 'nbdfuse', '--nbd', base];
    deferStagedCleanup(s, base, stateDir);
    const csi = await startDriver(s, [...nodeArgs, '--state-dir', stateDir, '--kek-dir', kekDir]);
    const kek = randomBytes(32).toString('hex');
    await csi.refused(
      'CreateVolume',
      {
        name: 'pvc-enc',
        volume_capabilities: [mountWriter],
        capacity_range: { required_bytes: String(32 * MiB) },
        parameters: { extentSize: '1MiB', encrypted: 'true' },
      },
      status.INVALID_ARGUMENT,
      /no key-encryption key was given/,
    );
    await csi.ok('Controller', 'CreateVolume', {
      name: 'pvc-enc',
      volume_capabilities: [mountWriter],
      capacity_range: { required_bytes: String(32 * MiB) },
      parameters: { extentSize: '1MiB', encrypted: 'true' },
      secrets: { kek },
    });
    const staging = s.path('kubelet/staging/pvc-enc');
    const stage = { volume_id: 'pvc-enc', staging_target_path: staging, volume_capability: mountWriter };
    // Without the node-stage secret the frontend has no key: nothing is attached or formatted.
    const none = await csi.call('Node', 'NodeStageVolume', stage);
    expect(none.ok, 'stage without the key').to.equal(false);
    await fe.waitForLog(/encrypted with key kek-/);
    await csi.refused('NodeStageVolume', { ...stage, secrets: { kek: 'nope' } }, status.INVALID_ARGUMENT, /kek/);
    await csi.ok('Node', 'NodeStageVolume', { ...stage, secrets: { kek } });
    expect(statSync(join(kekDir, 'pvc-enc.kek')).mode & 0o777).to.equal(0o600);
    const file = join(staging, 'secret.txt');
    const text = `${marker}-csi `.repeat(4000);
    writeFileSync(file, text);
    await runOk('sync', '/usr/bin/sync', [], { deadlineMs: 60_000 });
    expect(readFileSync(file, 'utf8')).to.equal(text);
    await csi.ok('Node', 'NodeUnstageVolume', { volume_id: 'pvc-enc', staging_target_path: staging });
    expect(existsSync(join(kekDir, 'pvc-enc.kek')), 'the key leaves with the volume').to.equal(false);
    await fe.stop();
    expect(nodeFilesHolding(s, [Buffer.from(marker, 'latin1')]).hits).to.deep.equal([]);
  });
});

describe('Encryption at rest on S3 targets (a real Ceph RGW)', function () {
  this.timeout(180_000);

  it('every object in the buckets is ciphertext; the key reads the volume back', async () => {
    const rgw = await sharedRgw();
    const env = { AWS_ACCESS_KEY_ID: rgw.accessKeyId, AWS_SECRET_ACCESS_KEY: rgw.secretAccessKey };
    const etcd = await startEtcd();
    const dir = mkdtempSync(join('/dev/shm', 'cairn-enc-s3-'));
    const s3 = new S3Client({
      endpoint: rgw.endpoint,
      region: rgw.region,
      forcePathStyle: true,
      credentials: { accessKeyId: rgw.accessKeyId, secretAccessKey: rgw.secretAccessKey },
    });
    let fe: Frontend | undefined;
    try {
      await cairnctl('init', etcd.endpoint, ['init', '--profile', '2+1', '--extent-size', '1MiB', '--targets', 's3']);
      const buckets = await addS3Targets(etcd.endpoint, rgw, `enc-${randomBytes(3).toString('hex')}`);
      const kek = join(dir, 'kek');
      writeFileSync(kek, randomBytes(32));
      await cairnctl('create', etcd.endpoint, ['volume', 'create', 'encs3', '8MiB', '--encrypt', '--kek-file', kek]);
      fe = await startFrontendProcess({ etcd: etcd.endpoint, dir, label: 's3', env, extraArgs: ['--kek-file', kek] });
      const data = recognisable(1024, 3); // 4 MiB
      writeFileSync(join(dir, 'data.img'), data);
      await nbdsh(
        'write 4 MiB and flush',
        'h.pwrite(open(A["data"], "rb").read(), 1024 * 1024)\nh.flush()',
        { data: join(dir, 'data.img') },
        { uri: fe.uri('encs3'), deadlineMs: 90_000 },
      );
      const needles = [Buffer.from(marker, 'latin1'), data.subarray(8192, 12288)];
      let objects = 0;
      for (const bucket of buckets) {
        const list = await s3.send(new ListObjectsV2Command({ Bucket: bucket }));
        for (const o of list.Contents ?? []) {
          const body = Buffer.from(
            await (await s3.send(new GetObjectCommand({ Bucket: bucket, Key: o.Key! }))).Body!.transformToByteArray(),
          );
          objects += 1;
          for (const n of needles) expect(body.includes(n), `${bucket}/${o.Key} holds plaintext`).to.equal(false);
        }
      }
      expect(objects, 'shards of 4 extents, 3 each').to.be.at.least(12);
      const back = await readAll(fe.uri('encs3'), join(dir, 'back.img'));
      expect(back.subarray(MiB, 5 * MiB).equals(data)).to.equal(true);
    } finally {
      await fe?.stop().catch(() => fe?.kill());
      s3.destroy();
      await etcd.stop();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
