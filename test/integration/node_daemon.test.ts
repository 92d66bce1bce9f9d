/**
 * cairnd as a process against a real etcd: registration and liveness (SIGTERM, SIGKILL, a lost
 * lease, a restart), what clients see when a node is down or stuck, and how it refuses bad
 * starts (arguments, zone, etcd unreachable). Every wait is for a condition, with a deadline.
 */
import { expect } from 'chai';
import { Etcd3 } from 'etcd3';
import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ChecksumMismatchError, StorageIoError, UnavailableError, crc32Of } from '../../src/core/index.js';
import { AuthRejectedError, DiskFullError } from '../../src/core/index.js';
import { listNodes, type NodeStatus } from '../../src/api/index.js';
import { decodeAlive as parseAliveRecord, decodeTarget as parseTargetRecord } from '../../src/meta/index.js';
import {
  NodeShardStore,
  encodeFrame,
  frameHeaderBytes,
  framedBytes,
  nodeFramedShardType,
} from '../../src/shard/index.js';
import { runCairnd, startCairnd, type CairndHandle, type CairndOptions } from '../harness/cairnd.js';
import { startEtcd, type EtcdHandle } from '../harness/etcd.js';
import { exited, freePort, stopChild, waitFor } from '../../src/dev/index.js';
import { seededBytes } from '../support/bytes.js';

async function rejection(promise: Promise<unknown>): Promise<unknown> {
  try {
    await promise;
  } catch (err) {
    return err;
  }
  throw new Error('expected the promise to reject');
}

describe('cairnd (process) with a real etcd', function () {
  let etcd: EtcdHandle;
  let client: Etcd3;
  const nodes: CairndHandle[] = [];
  const stores: NodeShardStore[] = [];
  const dirs: string[] = [];

  const start = async (name: string, zone = 'a', extra: Partial<CairndOptions> = {}): Promise<CairndHandle> => {
    const node = await startCairnd({ etcd: etcd.endpoint, name, zone, ...extra });
    nodes.push(node);
    return node;
  };
  const storeFor = (node: CairndHandle, extra: { authSecret?: string; timeoutMs?: number } = {}): NodeShardStore => {
    const store = new NodeShardStore({
      name: node.name,
      address: node.address,
      timeoutMs: extra.timeoutMs ?? 5_000,
      ...(extra.authSecret === undefined ? {} : { authSecret: extra.authSecret }),
    });
    stores.push(store);
    return store;
  };
  const statusOf = async (name: string): Promise<NodeStatus | undefined> =>
    (await listNodes(client, { endpoints: [etcd.endpoint] })).find((n) => n.name === name);
  const aliveValue = (name: string): Promise<string | null> => client.get(`cairn/v1/alive/${name}`).string();
  const tempDir = (): string => {
    const dir = mkdtempSync(join(tmpdir(), 'cairnd-test-'));
    dirs.push(dir);
    return dir;
  };

  before(async () => {
    etcd = await startEtcd();
    client = new Etcd3({ hosts: etcd.endpoint });
  });

  after(async () => {
    for (const store of stores) store.close();
    for (const node of nodes) await node.stop();
    client?.close();
    await etcd?.stop();
    for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
  });

  describe('registration', () => {
    it('writes targets/<name> (kind node) and alive/<name>, and listNodes shows it up', async () => {
      const node = await start('reg-1', 'b');
      const target = parseTargetRecord('t', (await client.get('cairn/v1/targets/reg-1').string())!);
      expect(target).to.include({ name: 'reg-1', kind: 'node', zone: 'b', address: node.address });
      expect(target.capacityBytes).to.be.greaterThan(0);
      const alive = parseAliveRecord('a', (await aliveValue('reg-1'))!);
      expect(alive).to.include({ name: 'reg-1', zone: 'b', address: node.address, pid: node.pid, usedBytes: 0 });
      expect(await statusOf('reg-1')).to.deep.include({
        name: 'reg-1',
        zone: 'b',
        address: node.address,
        state: 'up',
        usedBytes: 0,
      });
      // The alive key is leased (that is what makes a SIGKILLed node show down).
      const kv = (await client.get('cairn/v1/alive/reg-1').exec()).kvs[0]!;
      expect(kv.lease).to.not.equal('0');
    });

    it('refreshes usedBytes in alive/<name> after shards are stored', async () => {
      const node = await start('reg-used');
      await storeFor(node).put('v/1/1/0', seededBytes(100_000, 1));
      const status = await waitFor(
        'usedBytes to reach etcd',
        async () => {
          const s = await statusOf('reg-used');
          return s?.usedBytes === framedBytes(100_000) ? s : undefined;
        },
        15_000,
      );
      expect(status.state).to.equal('up');
    });

    it('on SIGTERM removes alive/<name> at once, keeps targets/<name>, and exits 0', async () => {
      const node = await start('term-1');
      const killedAt = Date.now();
      process.kill(node.pid, 'SIGTERM');
      await waitFor('alive/term-1 to disappear', async () => (await aliveValue('term-1')) === null, 5_000, {
        intervalMs: 10,
      });
      const goneMs = Date.now() - killedAt;
      expect(await node.exit()).to.equal(0);
      expect(goneMs).to.be.lessThan(3_000);
      expect(await statusOf('term-1')).to.deep.include({ state: 'down', usedBytes: null, address: node.address });
      expect(node.stderr()).to.match(/SIGTERM: stopping/);
    });

    it('on SIGTERM finishes a request already in flight before it exits', async () => {
      const node = await start('drain-1');
      const { request } = await import('node:http');
      const data = Buffer.from(seededBytes(1_000_000, 5));
      const answer = new Promise<number>((resolve, reject) => {
        const req = request(
          {
            host: '127.0.0.1',
            port: node.port,
            method: 'PUT',
            path: '/v1/shards/d/1',
            headers: { 'content-length': data.length, 'x-cairn-crc32': crc32Of(data).toString(16) },
          },
          (res) => {
            res.resume();
            resolve(res.statusCode ?? 0);
          },
        );
        req.on('error', reject);
        req.write(data.subarray(0, 500_000));
        // Finish the body only after the node has taken the signal (its alive key is gone).
        void waitFor('alive/drain-1 to disappear', async () => (await aliveValue('drain-1')) === null, 5_000, {
          intervalMs: 10,
        }).then(() => req.end(data.subarray(500_000)), reject);
      });
      // Signal only once the node holds the request (its headers are in), so it is in flight.
      await waitFor(
        'the PUT to be in flight',
        async () =>
          ((await (await fetch(`http://${node.address}/v1/health`)).json()) as { requestsInFlight: number })
            .requestsInFlight >= 1,
      );
      process.kill(node.pid, 'SIGTERM');
      expect(await answer).to.equal(201);
      expect(await node.exit()).to.equal(0);
      const again = await start('drain-1', 'a', { dataDir: node.dataDir, port: node.port });
      expect(Buffer.from(await storeFor(again).get('d/1')).equals(data)).to.equal(true);
    });

    it('after SIGKILL shows down once the lease expires, and a restart waits out the old key', async () => {
      const node = await start('kill-1');
      const dataDir = node.dataDir;
      await storeFor(node).put('k/1', seededBytes(5000, 9));
      process.kill(node.pid, 'SIGKILL');
      await node.exit();
      // The key outlives the process by up to the TTL: restart at once, and it must wait.
      const restarted = await start('kill-1', 'a', { dataDir, port: node.port });
      expect(restarted.stderr()).to.match(/waiting up to \d+ ms for cairn\/v1\/alive\/kill-1 of an earlier instance/);
      expect(parseAliveRecord('a', (await aliveValue('kill-1'))!).pid).to.equal(restarted.pid);
      expect(Buffer.from(await storeFor(restarted).get('k/1')).equals(Buffer.from(seededBytes(5000, 9)))).to.equal(
        true,
      );
      process.kill(restarted.pid, 'SIGKILL');
      await restarted.exit();
      const down = await waitFor(
        'kill-1 to show down',
        async () => {
          const s = await statusOf('kill-1');
          return s?.state === 'down' ? s : undefined;
        },
        20_000,
        { intervalMs: 100 },
      );
      expect(down.zone).to.equal('a');
    });

    it('registers again when its lease is lost (revoked behind its back, records deleted)', async () => {
      const node = await start('lost-1');
      const kv = (await client.get('cairn/v1/alive/lost-1').exec()).kvs[0]!;
      await client.delete().key('cairn/v1/targets/lost-1');
      // What an etcd that lost its data looks like to the node: the lease is gone.
      await client.leaseClient.leaseRevoke({ ID: kv.lease });
      await waitFor(
        'alive/lost-1 to come back under a new lease',
        async () => {
          const now = (await client.get('cairn/v1/alive/lost-1').exec()).kvs[0];
          return now !== undefined && now.lease !== kv.lease && now.lease !== '0';
        },
        20_000,
        { intervalMs: 50 },
      );
      expect(parseTargetRecord('t', (await client.get('cairn/v1/targets/lost-1').string())!).address).to.equal(
        node.address,
      );
      expect(node.stderr()).to.match(/lost the etcd lease/);
    });
  });

  describe('clients of a node that is down or stuck', () => {
    it('fail with UnavailableError naming the node and address when it is gone', async () => {
      const node = await start('gone-1');
      const store = storeFor(node);
      await store.put('g/1', seededBytes(10, 1));
      process.kill(node.pid, 'SIGKILL');
      await node.exit();
      const err = await rejection(store.get('g/1'));
      expect(err).to.be.instanceOf(UnavailableError);
      expect((err as Error).message).to.equal(
        `Cannot read shard g/1 from node "gone-1" at ${node.address}: connection refused`,
      );
      expect((err as UnavailableError).retryable).to.equal(true);
    });

    it('fail with UnavailableError within the timeout when it does not answer (SIGSTOP)', async () => {
      const node = await start('stuck-1');
      const store = storeFor(node, { timeoutMs: 500 });
      await store.put('s/1', seededBytes(10, 1));
      process.kill(node.pid, 'SIGSTOP');
      try {
        const began = Date.now();
        const err = await rejection(store.get('s/1'));
        const tookMs = Date.now() - began;
        expect(err).to.be.instanceOf(UnavailableError);
        expect((err as Error).message).to.equal(
          `Cannot read shard s/1 from node "stuck-1" at ${node.address}: no answer within 500 ms`,
        );
        expect(tookMs).to.be.within(450, 2_000);
      } finally {
        process.kill(node.pid, 'SIGCONT');
      }
      expect((await store.head('s/1'))?.dataBytes).to.equal(10);
    });
  });

  describe('a full node', () => {
    it('answers 507 and the client throws DiskFullError naming the shard and node', async () => {
      const node = await start('full-1', 'a', { extraArgs: ['--capacity', '10000'] });
      const store = storeFor(node);
      await store.put('f/1', seededBytes(6000, 1));
      const err = await rejection(store.put('f/2', seededBytes(6000, 2)));
      expect(err).to.be.instanceOf(DiskFullError).and.instanceOf(StorageIoError);
      expect((err as Error).message).to.match(/^Cannot store shard f\/2 on node "full-1": disk full \(ENOSPC\)/);
      expect(await store.head('f/2')).to.equal(null);
      expect(node.stderr()).to.match(/PUT \/v1\/shards\/f\/2 -> 507 ENOSPC/);
    });
  });

  describe('the HTTP API', () => {
    let node: CairndHandle;
    const secret = 'correct-horse-battery-staple';

    before(async () => {
      const dir = tempDir();
      writeFileSync(join(dir, 'secret'), `${secret}\n`);
      node = await start('api-1', 'c', { extraArgs: ['--auth-secret-file', join(dir, 'secret')] });
    });

    const url = (path: string): string => `http://${node.address}${path}`;
    const auth = { authorization: `Bearer ${secret}` };

    it('refuses a missing or wrong secret with 401, accepts the right one, and serves health without one', async () => {
      expect(await rejection(storeFor(node).put('a/1', seededBytes(10, 1)))).to.be.instanceOf(AuthRejectedError);
      const wrong = await rejection(storeFor(node, { authSecret: 'not-the-secret-at-all' }).get('a/1'));
      expect(wrong).to.be.instanceOf(AuthRejectedError);
      const res = await fetch(url('/v1/shards/a/1'), { headers: { authorization: 'Bearer nope' } });
      expect(res.status).to.equal(401);
      expect(await res.json()).to.deep.include({ code: 'EAUTH' });
      const good = storeFor(node, { authSecret: secret });
      await good.put('a/1', seededBytes(10, 1));
      expect(Buffer.from(await good.get('a/1')).equals(Buffer.from(seededBytes(10, 1)))).to.equal(true);
      const health = await (await fetch(url('/v1/health'))).json();
      expect(health).to.deep.include({ name: 'api-1', zone: 'c', usedBytes: framedBytes(10) });
      expect(node.stderr()).to.match(/-> 401 EAUTH/);
      // The scheme is case-insensitive; the secret is not.
      expect((await fetch(url('/v1/shards/a/1'), { headers: { authorization: `bearer ${secret}` } })).status).to.equal(
        200,
      );
      expect((await fetch(url('/v1/shards/a/1'), { headers: { authorization: `BEARER ${secret}` } })).status).to.equal(
        200,
      );
      const upper = await fetch(url('/v1/shards/a/1'), {
        headers: { authorization: `Bearer ${secret.toUpperCase()}` },
      });
      expect(upper.status).to.equal(401);
      await upper.body?.cancel();
      // Only the node's user may read what it stores.
      expect(statSync(join(node.dataDir, 'a', '1')).mode & 0o777, 'shard file').to.equal(0o600);
      expect(statSync(join(node.dataDir, 'a')).mode & 0o777, 'shard directory').to.equal(0o700);
      expect(node.stderr()).to.not.match(/this node is OPEN/);
    });

    it('says loudly, at start, when it runs without any shared secret', async () => {
      const open = await start('api-open', 'c');
      // Right after its ready line.
      await waitFor(
        'the open-node warning',
        () => /WARNING: no shared secret .* this node is OPEN/.test(open.stderr()),
        10_000,
      );
    });

    it('answers 500 ECHECKSUM for a shard damaged on disk, and the client throws ChecksumMismatchError', async () => {
      const good = storeFor(node, { authSecret: secret });
      await good.put('bad/1', seededBytes(9000, 2));
      const file = join(node.dataDir, 'bad', '1');
      const bytes = readFileSync(file);
      bytes[32 + 4 + 100] = bytes[32 + 4 + 100]! ^ 0x10;
      writeFileSync(file, bytes);
      const res = await fetch(url('/v1/shards/bad/1'), { headers: auth });
      expect(res.status).to.equal(500);
      const body = (await res.json()) as { code: string; message: string };
      expect(body.code).to.equal('ECHECKSUM');
      expect(body.message).to.match(/^Cannot read shard bad\/1 from node "api-1": checksum mismatch in block 0/);
      expect(await rejection(good.get('bad/1'))).to.be.instanceOf(ChecksumMismatchError);
      // Block 2 is intact and still reads.
      expect((await good.get('bad/1', { offset: 8192, length: 808 })).length).to.equal(808);
    });

    it('refuses a body that does not match its CRC with 400 and stores nothing', async () => {
      const body = Buffer.from(seededBytes(5000, 3));
      const res = await fetch(url('/v1/shards/crc/1'), {
        method: 'PUT',
        body,
        headers: { ...auth, 'x-cairn-crc32': ((crc32Of(body) ^ 1) >>> 0).toString(16) },
      });
      expect(res.status).to.equal(400);
      expect(await res.json()).to.deep.include({ code: 'EBODYCRC' });
      expect((await fetch(url('/v1/shards/crc/1'), { method: 'HEAD', headers: auth })).status).to.equal(404);
    });

    it('stores a shard the client framed as sent, and refuses one with a damaged block (400, nothing stored)', async () => {
      const good = storeFor(node, { authSecret: secret });
      const data = seededBytes(10_000, 7);
      const framed = Buffer.from(encodeFrame(data));
      const put = (path: string, body: Buffer) =>
        fetch(url(path), { method: 'PUT', body, headers: { ...auth, 'content-type': nodeFramedShardType } });
      expect((await put('/v1/shards/framed/1', framed)).status).to.equal(201);
      expect(Buffer.compare(Buffer.from(await good.get('framed/1')), Buffer.from(data))).to.equal(0);
      // One bit flipped inside block 1's data: the node's check of that block refuses the put.
      const damaged = Buffer.from(framed);
      damaged[frameHeaderBytes + 4100 + 4 + 17]! ^= 0x10;
      const res = await put('/v1/shards/framed/2', damaged);
      expect(res.status).to.equal(400);
      const body = (await res.json()) as { code: string; message: string };
      expect(body.code).to.equal('EBODYCRC');
      expect(body.message).to.match(/checksum mismatch in block 1/);
      expect((await fetch(url('/v1/shards/framed/2'), { method: 'HEAD', headers: auth })).status).to.equal(404);
      // A framed body whose header promises more data than it carries is refused too.
      expect((await put('/v1/shards/framed/3', framed.subarray(0, framed.length - 1))).status).to.equal(400);
    });

    it('maps bad requests to 400, 404, 409, 411/413 and 416 with JSON {code, message}', async () => {
      const put = (path: string, body: Buffer, headers: Record<string, string> = {}) =>
        fetch(url(path), {
          method: 'PUT',
          body,
          headers: { ...auth, 'x-cairn-crc32': crc32Of(body).toString(16), ...headers },
        });
      expect((await put('/v1/shards/r/1', Buffer.from(seededBytes(100, 1)))).status).to.equal(201);
      expect((await put('/v1/shards/r/1', Buffer.from(seededBytes(100, 1)))).status).to.equal(409);
      const outside = await fetch(url('/v1/shards/r/1'), { headers: { ...auth, range: 'bytes=50-100' } });
      expect(outside.status).to.equal(416);
      expect(await outside.json()).to.deep.include({ code: 'ERANGE' });
      expect((await fetch(url('/v1/shards/r/1'), { headers: { ...auth, range: 'bytes=9-3' } })).status).to.equal(400);
      expect((await fetch(url('/v1/shards/a%2F..%2Fx'), { headers: auth })).status).to.equal(400);
      expect((await fetch(url('/v1/shards/nothing/here'), { headers: auth })).status).to.equal(404);
      expect((await fetch(url('/v1/elsewhere'), { headers: auth })).status).to.equal(404);
      expect((await fetch(url('/v1/shards?limit=x'), { headers: auth })).status).to.equal(400);
      // A declared body over the shard limit is refused before a byte of it is read.
      const { request } = await import('node:http');
      const status = await new Promise<number>((resolve, reject) => {
        const req = request(
          {
            host: '127.0.0.1',
            port: node.port,
            method: 'PUT',
            path: '/v1/shards/big/1',
            headers: { ...auth, 'content-length': 65 * 1024 * 1024, 'x-cairn-crc32': '0' },
          },
          (res) => {
            res.resume();
            resolve(res.statusCode ?? 0);
          },
        );
        req.on('error', reject);
        req.flushHeaders();
      });
      expect(status).to.equal(413);
      // A body without a length (chunked) cannot be bounded before it is read.
      const chunked = await new Promise<number>((resolve, reject) => {
        const req = request(
          {
            host: '127.0.0.1',
            port: node.port,
            method: 'PUT',
            path: '/v1/shards/chunked/1',
            headers: { ...auth, 'x-cairn-crc32': '0' },
          },
          (res) => {
            res.resume();
            resolve(res.statusCode ?? 0);
          },
        );
        req.on('error', reject);
        req.write('abc'); // written before end(), so Node sends it chunked, without a length
        req.end();
      });
      expect(chunked).to.equal(411);
      const range = await fetch(url('/v1/shards/r/1'), { headers: { ...auth, range: 'bytes=10-19' } });
      expect(range.status).to.equal(200);
      expect(range.headers.get('x-cairn-framed-span')).to.equal('0,32,136,100');
      expect(range.headers.get('x-cairn-seed')).to.equal('0');
    });
    it('survives clients that hang up mid-body, send garbage or absurd paths, and keeps serving', async () => {
      const { connect } = await import('node:net');
      const exchange = (text: string): Promise<string> =>
        new Promise((resolve) => {
          let answer = '';
          const socket = connect(node.port, '127.0.0.1', () => socket.write(text));
          socket.on('data', (d: Buffer) => {
            answer += d.toString();
            socket.destroy();
          });
          socket.on('close', () => resolve(answer.split('\r\n')[0] ?? ''));
          socket.on('error', () => undefined);
          // A client that sends half a body and hangs up gets no answer: end it ourselves once
          // the node has taken the request in (it counts in requestsInFlight).
          if (text.includes('Content-Length: 100000')) {
            void waitFor(
              'the half body to be in flight',
              async () =>
                ((await (await fetch(url('/v1/health'))).json()) as { requestsInFlight: number }).requestsInFlight >= 1,
            ).then(() => socket.destroy());
          }
        });
      const key = `Authorization: Bearer ${secret}\r\n`;
      expect(
        await exchange(
          `PUT /v1/shards/h/1 HTTP/1.1\r\nHost: x\r\n${key}Content-Length: 100000\r\nx-cairn-crc32: 0\r\n\r\nabc`,
        ),
      ).to.equal('');
      expect(await exchange('GARBAGE\r\n\r\n')).to.match(/^HTTP\/1.1 400/);
      expect(await exchange(`GET /v1/shards/${'a/'.repeat(3000)}b HTTP/1.1\r\nHost: x\r\n${key}\r\n`)).to.match(
        /^HTTP\/1.1 400/,
      );
      expect(await exchange(`DELETE /v1/shards/%2e%2e/x HTTP/1.1\r\nHost: x\r\n${key}\r\n`)).to.match(/^HTTP\/1.1 400/);
      expect(await exchange(`GET /v1/shards/r/1 HTTP/1.1\r\nHost: x\r\n${key}Range: bytes=0-\r\n\r\n`)).to.match(
        /^HTTP\/1.1 400/,
      );
      await waitFor(
        'the node to let go of every broken request',
        async () =>
          ((await (await fetch(url('/v1/health'))).json()) as { requestsInFlight: number }).requestsInFlight === 0,
      );
      await storeFor(node, { authSecret: secret }).put('h/2', seededBytes(100, 1));
      expect(await storeFor(node, { authSecret: secret }).head('h/1')).to.equal(null);
    });
  });

  describe('refusing to start', () => {
    it('exits 2 with a one-line reason for bad arguments', async () => {
      const dir = tempDir();
      const base = [
        '--etcd',
        etcd.endpoint,
        '--name',
        'args-1',
        '--zone',
        'a',
        '--data-dir',
        dir,
        '--listen',
        '127.0.0.1:0',
      ];
      const cases: [string[], RegExp][] = [
        [base.filter((a) => a !== '--name' && a !== 'args-1'), /Missing required argument: name/],
        [[...base.slice(0, 4), '--zone', 'Zone A', ...base.slice(6)], /Invalid zone name "Zone A"/],
        [[...base.slice(0, 8), '--listen', 'localhost'], /Invalid --listen address "localhost"/],
        [[...base, '--capacity', 'lots'], /Invalid --capacity "lots"/],
        [[...base, '--auth-secret-file', join(dir, 'missing')], /Cannot read --auth-secret-file/],
        [base.slice(2), /Missing --etcd URL/],
        [[...base, '--frobnicate'], /Unknown argument: frobnicate/],
      ];
      for (const [args, reason] of cases) {
        const run = await runCairnd(args, { env: { ...process.env, CAIRN_ETCD: '' } });
        expect(run.code, run.stderr).to.equal(2);
        expect(run.stderr.trim().split('\n'), run.stderr).to.have.length(1);
        expect(run.stderr, args.join(' '))
          .to.match(/^cairnd: /)
          .and.match(reason);
      }
    });

    it('takes --etcd from CAIRN_ETCD', async () => {
      const node = await start('env-1', 'a', { etcd: undefined, env: { ...process.env, CAIRN_ETCD: etcd.endpoint } });
      expect(parseAliveRecord('a', (await aliveValue('env-1'))!).pid).to.equal(node.pid);
    });

    it('refuses to start in another zone than the one it is registered in', async () => {
      const node = await start('zone-1', 'a');
      await node.stop({ keepData: true });
      const run = await runCairnd([
        '--etcd',
        etcd.endpoint,
        '--name',
        'zone-1',
        '--zone',
        'b',
        '--data-dir',
        node.dataDir,
        '--listen',
        '127.0.0.1:0',
      ]);
      expect(run.code).to.equal(2);
      expect(run.stderr.trim()).to.equal(
        'cairnd: Cannot start node "zone-1" in zone "b": it is registered in zone "a" (cairn/v1/targets/zone-1); start it with --zone a, or remove the target first',
      );
    });

    it('exits non-zero within a few seconds, naming the endpoint, when etcd is unreachable', async () => {
      const port = await freePort();
      const endpoint = `http://127.0.0.1:${port}`;
      const run = await runCairnd(
        [
          '--etcd',
          endpoint,
          '--etcd-timeout',
          '2000',
          '--name',
          'noetcd-1',
          '--zone',
          'a',
          '--data-dir',
          tempDir(),
          '--listen',
          '127.0.0.1:0',
        ],
        { timeoutMs: 20_000 },
      );
      expect(run.code).to.equal(1);
      expect(run.stderr).to.include(`etcd at ${endpoint}`);
      expect(run.stderr.trim().split('\n')).to.have.length(1);
      expect(run.elapsedMs).to.be.lessThan(5_000);
    });

    it('refuses a second live process with the same name', async () => {
      await start('twin-1', 'a');
      const run = await runCairnd(
        [
          '--etcd',
          etcd.endpoint,
          '--name',
          'twin-1',
          '--zone',
          'a',
          '--data-dir',
          tempDir(),
          '--listen',
          '127.0.0.1:0',
        ],
        { timeoutMs: 40_000 },
      );
      expect(run.code).to.equal(1);
      expect(run.stderr).to.match(/another process holds cairn\/v1\/alive\/twin-1/);
    });
  });
});

describe('cairnd across etcd restarts', function () {
  let etcd: EtcdHandle;
  let client: Etcd3;
  let node: CairndHandle;
  let restarted: ChildProcess | undefined;
  const freshDirs: string[] = [];

  before(async () => {
    etcd = await startEtcd({ name: 'cairn-restart' });
    client = new Etcd3({ hosts: etcd.endpoint });
    node = await startCairnd({ etcd: etcd.endpoint, name: 'phoenix-1', zone: 'a' });
  });

  after(async () => {
    await node?.stop();
    client?.close();
    if (restarted !== undefined) await stopChild(restarted);
    await etcd?.stop();
    for (const dir of freshDirs) rmSync(dir, { recursive: true, force: true });
  });

  /** SIGKILLs etcd and starts it again with the same flags, on the same or on an empty data dir. */
  async function restartEtcd(keepData: boolean): Promise<void> {
    const current = restarted ?? etcd.process;
    const args = readFileSync(`/proc/${current.pid}/cmdline`, 'utf8')
      .split('\0')
      .filter((a) => a !== '');
    process.kill(current.pid!, 'SIGKILL');
    await exited(current);
    if (!keepData) {
      const at = args.indexOf('--data-dir') + 1;
      const fresh = mkdtempSync(join(existsSync('/dev/shm') ? '/dev/shm' : tmpdir(), 'cairn-etcd-fresh-'));
      freshDirs.push(fresh);
      args[at] = fresh;
    }
    restarted = spawn(args[0]!, args.slice(1), { stdio: 'ignore' });
    await waitFor(
      'etcd to be healthy again',
      async () => ((await (await fetch(`${etcd.endpoint}/health`)).json()) as { health?: string }).health === 'true',
      15_000,
    );
  }

  it('stays registered when etcd restarts with its data', async () => {
    const before = (await client.get('cairn/v1/alive/phoenix-1').exec()).kvs[0]!;
    await restartEtcd(true);
    // The lease outlives the restart (etcd persists leases); the node's keepalives resume on it.
    await waitFor(
      'keepalives to resume on the same lease',
      async () => {
        const ttl = await client.leaseClient.leaseTimeToLive({ ID: before.lease });
        return Number(ttl.TTL) > 0 && (await client.get('cairn/v1/alive/phoenix-1').string()) !== null;
      },
      15_000,
      { intervalMs: 100 },
    );
    const store = new NodeShardStore({ name: node.name, address: node.address });
    await store.put('p/1', seededBytes(10, 1));
    store.close();
  });

  it('registers again (targets and alive) when etcd comes back without its data', async () => {
    // A marker only this test writes proves the data is gone; the node's own records cannot,
    // because it may register again within milliseconds of etcd becoming healthy.
    await client.put('test/marker').value('before the restart');
    await restartEtcd(false);
    expect(await client.get('test/marker').string()).to.equal(null);
    const alive = await waitFor(
      'alive/phoenix-1 to be written again',
      async () => (await client.get('cairn/v1/alive/phoenix-1').string()) ?? undefined,
      20_000,
      { intervalMs: 100 },
    );
    expect(parseAliveRecord('a', alive).pid).to.equal(node.pid);
    expect(parseTargetRecord('t', (await client.get('cairn/v1/targets/phoenix-1').string())!)).to.include({
      zone: 'a',
      address: node.address,
    });
    expect(node.stderr()).to.match(/lost the etcd lease/);
    // And a SIGTERM still revokes the new lease.
    process.kill(node.pid, 'SIGTERM');
    await waitFor(
      'alive/phoenix-1 to disappear',
      async () => (await client.get('cairn/v1/alive/phoenix-1').string()) === null,
      5_000,
      { intervalMs: 10 },
    );
    expect(await node.exit()).to.equal(0);
  });
});
