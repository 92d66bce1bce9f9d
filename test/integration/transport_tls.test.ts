/**
 * Transport security with real processes: cairnd with mutual TLS (its HTTPS shard API and its TLS
 * journal port) against clients with and without the right certificates; metrics behind a bearer
 * token; and a `cairnctl dev up --tls` cluster, whose etcd requires client certificates and a
 * password, used from a shell that sourced DIR/env.
 */
import { expect } from 'chai';
import { request as httpRequest } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AuthRejectedError, ShardNotFoundError } from '../../src/core/index.js';
import { makeTlsDir, type TlsFiles } from '../../src/dev/index.js';
import { JournalNodeClient, NodeShardStore, type NodeClientTls } from '../../src/shard/index.js';
import { startCairnd, type CairndHandle } from '../harness/cairnd.js';
import { cairnctlPath } from '../harness/cli.js';
import { runClient } from '../harness/stack.js';
import { startEtcd, type EtcdHandle } from '../harness/etcd.js';
import { freePort } from '../../src/dev/index.js';

interface Answer {
  readonly status: number;
  readonly body: string;
}

/** One HTTP(S) GET; rejects on a transport failure (a refused handshake, a reset). */
function get(url: string, options: { ca?: Buffer; cert?: Buffer; key?: Buffer; token?: string } = {}): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const headers = options.token === undefined ? {} : { authorization: `Bearer ${options.token}` };
    const send = url.startsWith('https:') ? httpsRequest : httpRequest;
    const req = send(
      url,
      {
        headers,
        timeout: 5_000,
        ...(options.ca === undefined ? {} : { ca: options.ca }),
        ...(options.cert === undefined ? {} : { cert: options.cert, key: options.key }),
      },
      (res) => {
        let body = '';
        res.on('data', (c: Buffer) => (body += c.toString()));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
        res.on('error', reject);
      },
    );
    req.on('timeout', () => req.destroy(new Error('timed out')));
    req.on('error', reject);
    req.end();
  });
}

describe('cairnd with mutual TLS', function () {
  this.timeout(60_000);
  let dir: string;
  let tls: TlsFiles;
  let other: TlsFiles;
  let etcd: EtcdHandle;
  let node: CairndHandle;
  let metricsPort: number;
  const token = 'metrics-token-0123456789abcdef';
  let good: NodeClientTls;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'cairn-tls-'));
    tls = makeTlsDir(join(dir, 'tls'));
    other = makeTlsDir(join(dir, 'other'));
    writeFileSync(join(dir, 'token'), `${token}\n`);
    good = {
      ca: readFileSync(tls.caCert),
      cert: readFileSync(tls.clientCert),
      key: readFileSync(tls.clientKey),
      caSource: `CAIRN_NODE_CA ${tls.caCert}`,
    };
    etcd = await startEtcd();
    metricsPort = await freePort();
    node = await startCairnd({
      etcd: etcd.endpoint,
      name: 'tls-1',
      zone: 'a',
      extraArgs: [
        '--tls-cert',
        tls.serverCert,
        '--tls-key',
        tls.serverKey,
        '--tls-ca',
        tls.caCert,
        '--metrics-listen',
        `127.0.0.1:${metricsPort}`,
        '--metrics-token-file',
        join(dir, 'token'),
      ],
    });
  });

  after(async () => {
    await node?.stop();
    await etcd?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('registers tls: true in its etcd records', async () => {
    const { Etcd3 } = await import('etcd3');
    const client = new Etcd3({ hosts: etcd.endpoint });
    try {
      const target = JSON.parse((await client.get('cairn/v1/targets/tls-1').string()) ?? '{}') as { tls?: boolean };
      const alive = JSON.parse((await client.get('cairn/v1/alive/tls-1').string()) ?? '{}') as { tls?: boolean };
      expect(target.tls).to.equal(true);
      expect(alive.tls).to.equal(true);
    } finally {
      client.close();
    }
  });

  it('refuses a shard request without a client certificate (401) and a plaintext request, and keeps serving', async () => {
    const noCert = await get(`https://${node.address}/v1/shards/x/y`, { ca: good.ca! });
    expect(noCert.status).to.equal(401);
    expect(noCert.body).to.match(/no client certificate/);
    let plainFailed = false;
    try {
      await get(`http://${node.address}/v1/health`);
    } catch {
      plainFailed = true;
    }
    expect(plainFailed, 'a plaintext HTTP request must fail').to.equal(true);
    // The journal port refuses a client without a certificate in the handshake.
    const journal = new JournalNodeClient({
      name: 'tls-1',
      address: node.journalAddress,
      tls: { ca: good.ca! },
      timeoutMs: 5_000,
    });
    try {
      const err = await journal.hello().then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(err).to.be.instanceOf(AuthRejectedError);
    } finally {
      journal.close();
    }
    // Still serving a good client.
    const store = new NodeShardStore({ name: 'tls-1', address: node.address, tls: good });
    try {
      expect(await store.head('still/there')).to.equal(null);
    } finally {
      store.close();
    }
  });

  it('lets a client with the wrong CA refuse the node, naming the CA', async () => {
    const wrong: NodeClientTls = {
      ca: readFileSync(other.caCert),
      cert: readFileSync(other.clientCert),
      key: readFileSync(other.clientKey),
      caSource: `CAIRN_NODE_CA ${other.caCert}`,
    };
    const store = new NodeShardStore({ name: 'tls-1', address: node.address, tls: wrong });
    const err = await store.get('a/b').then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).to.be.instanceOf(AuthRejectedError);
    expect((err as Error).message)
      .to.include('node "tls-1"')
      .and.include(other.caCert);
    const journal = new JournalNodeClient({
      name: 'tls-1',
      address: node.journalAddress,
      tls: wrong,
      timeoutMs: 5_000,
    });
    try {
      const jerr = await journal.hello().then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(jerr).to.be.instanceOf(AuthRejectedError);
      expect((jerr as Error).message).to.include(other.caCert);
    } finally {
      journal.close();
    }
  });

  it('serves a client with the cluster CA and its certificate: shards over HTTPS and over the journal port', async () => {
    const data = new Uint8Array(70_000).map((_, i) => (i * 7) & 0xff);
    const http = new NodeShardStore({ name: 'tls-1', address: node.address, tls: good });
    const binary = new NodeShardStore({
      name: 'tls-1',
      address: node.address,
      journalAddress: node.journalAddress,
      tls: good,
    });
    try {
      await http.put('tls/http', data);
      await binary.put('tls/binary', data);
      expect(Buffer.from(await binary.get('tls/http')).equals(Buffer.from(data))).to.equal(true);
      expect(Buffer.from(await http.get('tls/binary')).equals(Buffer.from(data))).to.equal(true);
      await http.delete('tls/http');
      const gone = await http.get('tls/http').then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(gone).to.be.instanceOf(ShardNotFoundError);
    } finally {
      http.close();
      binary.close();
    }
  });

  it('checks the node certificate against CAIRN_NODE_TLS_SERVER_NAME instead of the address when given', async () => {
    const named = new NodeShardStore({
      name: 'tls-1',
      address: node.address,
      tls: { ...good, serverName: 'localhost' },
    });
    const wrongName = new NodeShardStore({
      name: 'tls-1',
      address: node.address,
      tls: { ...good, serverName: 'cairnd.example' },
    });
    try {
      expect(await named.head('no/such')).to.equal(null);
      const err = await wrongName.head('no/such').then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(err).to.be.instanceOf(AuthRejectedError);
      expect((err as Error).message).to.include('cairnd.example');
    } finally {
      named.close();
      wrongName.close();
    }
  });

  it('answers metrics and health only with the bearer token (401 without, 200 with)', async () => {
    // Metrics use the node's certificate; scrapers need no client certificate.
    const without = await get(`https://127.0.0.1:${metricsPort}/metrics`, { ca: good.ca! });
    expect(without.status).to.equal(401);
    const wrong = await get(`https://127.0.0.1:${metricsPort}/metrics`, { ca: good.ca!, token: 'nope-nope-nope-nope' });
    expect(wrong.status).to.equal(401);
    const ok = await get(`https://127.0.0.1:${metricsPort}/metrics`, { ca: good.ca!, token });
    expect(ok.status).to.equal(200);
    expect(ok.body).to.include('cairn_');
    expect((await get(`https://${node.address}/v1/health`, { ca: good.ca! })).status).to.equal(401);
    const health = await get(`https://${node.address}/v1/health`, { ca: good.ca!, token });
    expect(health.status).to.equal(200);
    expect(JSON.parse(health.body)).to.include({ name: 'tls-1' });
  });
});

/** Parses DIR/env's `export NAME='VALUE'` lines. */
function envOf(path: string): Record<string, string> {
  const env: Record<string, string> = {};
  for (const line of readFileSync(path, 'utf8').split('\n')) {
    const m = /^export ([A-Z_]+)='(.*)'$/.exec(line);
    if (m !== null) env[m[1]!] = m[2]!;
  }
  return env;
}

describe('cairnctl dev up --tls', function () {
  this.timeout(180_000);
  let dir: string;
  /** The parent's environment without any Cairn variable: what a fresh shell has. */
  let bare: NodeJS.ProcessEnv;

  const cairnctl = (args: readonly string[], env: NodeJS.ProcessEnv) =>
    runClient(process.execPath, [cairnctlPath, ...args], { deadlineMs: 60_000, env });

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'cairn-devtls-'));
    bare = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('CAIRN_')));
    const up = await runClient(process.execPath, [cairnctlPath, 'dev', 'up', '--dir', dir, '--tls'], {
      deadlineMs: 120_000,
      env: bare,
    });
    expect(up.code, up.stderr).to.equal(0);
  });

  after(async () => {
    await runClient(process.execPath, [cairnctlPath, 'dev', 'down', '--dir', dir, '--purge'], {
      deadlineMs: 60_000,
      env: bare,
    });
    rmSync(dir, { recursive: true, force: true });
  });

  it('records TLS, the nbds:// URI and DIR/env with every variable', () => {
    const cluster = JSON.parse(readFileSync(join(dir, 'cluster.json'), 'utf8')) as {
      tls?: boolean;
      etcd: string;
      frontend: { nbdUri: string };
    };
    expect(cluster.tls).to.equal(true);
    expect(cluster.etcd).to.match(/^https:\/\//);
    expect(cluster.frontend.nbdUri).to.match(/^nbds:\/\/127\.0\.0\.1:\d+$/);
    const env = envOf(join(dir, 'env'));
    expect(Object.keys(env)).to.include.members([
      'CAIRN_ETCD',
      'CAIRN_NODE_SECRET_FILE',
      'CAIRN_ETCD_CA',
      'CAIRN_ETCD_CERT',
      'CAIRN_ETCD_KEY',
      'CAIRN_ETCD_USER',
      'CAIRN_ETCD_PASSWORD_FILE',
      'CAIRN_NODE_CA',
      'CAIRN_NODE_CERT',
      'CAIRN_NODE_KEY',
    ]);
  });

  it('works through . DIR/env (volume create, status) and fails naming etcd without credentials', async () => {
    const env = { ...bare, ...envOf(join(dir, 'env')) };
    const created = await cairnctl(['volume', 'create', 'tv', '16MiB'], env);
    expect(created.code, created.stderr).to.equal(0);
    const status = await cairnctl(['status'], env);
    expect(status.code, status.stderr).to.equal(0);
    expect(status.stdout).to.include('tv');
    expect(status.stderr).to.not.include('DeprecationWarning');

    const endpoint = env['CAIRN_ETCD']!;
    const none = await cairnctl(['status', '--etcd', endpoint], bare);
    expect(none.code).to.not.equal(0);
    expect(none.stderr)
      .to.include(`etcd at ${endpoint}`)
      .and.match(/not trusted|CAIRN_ETCD_CA/);
    const noPassword = await cairnctl(['status'], {
      ...env,
      CAIRN_ETCD_USER: '',
      CAIRN_ETCD_PASSWORD_FILE: '',
    });
    expect(noPassword.code).to.not.equal(0);
    expect(noPassword.stderr).to.include(`etcd at ${endpoint}`).and.include('permission denied');
    writeFileSync(join(dir, 'bad-password'), 'wrong\n');
    const badPassword = await cairnctl(['status'], { ...env, CAIRN_ETCD_PASSWORD_FILE: join(dir, 'bad-password') });
    expect(badPassword.code).to.not.equal(0);
    expect(badPassword.stderr).to.include(`etcd at ${endpoint}`).and.include('authentication failed');
  });

  it('serves a volume over nbds:// to nbdinfo with the client certificates in DIR/tls', async () => {
    const cluster = JSON.parse(readFileSync(join(dir, 'cluster.json'), 'utf8')) as { frontend: { nbdUri: string } };
    const info = await runClient('nbdinfo', [`${cluster.frontend.nbdUri}/tv?tls-certificates=${join(dir, 'tls')}`], {
      deadlineMs: 30_000,
    });
    expect(info.code, info.stderr).to.equal(0);
    expect(info.stdout).to.include('export-size: 16777216').and.include('with TLS');
    const plain = await runClient('nbdinfo', [`${cluster.frontend.nbdUri.replace('nbds:', 'nbd:')}/tv`], {
      deadlineMs: 30_000,
    });
    expect(plain.code).to.not.equal(0);
  });
});
