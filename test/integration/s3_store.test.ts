/**
 * S3ShardStore against a real S3 server: Ceph RGW on a throwaway RADOS cluster (test/harness/rgw.ts),
 * started once per run and shared; each test gets its own bucket. Runs the ShardStore contract,
 * then the failures a deployment meets: the server gone, a port nobody listens on, a server that
 * accepts and never answers, wrong credentials, a missing bucket, and a server that ignores
 * If-None-Match (a small fake, since no real server here does).
 */
import { GetObjectCommand, PutObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { expect } from 'chai';
import { randomBytes } from 'node:crypto';
import { createServer as createHttpServer, type Server as HttpServer } from 'node:http';
import { createServer as createTcpServer, type Server as TcpServer, type Socket } from 'node:net';
import {
  InvalidArgumentError,
  ShardNotFoundError,
  StorageIoError,
  UnavailableError,
  checksumBlockBytes,
} from '../../src/core/index.js';
import { AuthRejectedError } from '../../src/core/index.js';
import {
  CreateOnlyUnsupportedError,
  S3ShardStore,
  frameHeaderBytes,
  type S3ShardStoreOptions,
} from '../../src/shard/index.js';
import { seededBytes } from '../support/bytes.js';
import { shardStoreContract } from '../support/shard_store_contract.js';
import { freePort } from '../../src/dev/index.js';
import { sharedRgw, startRgw, type RgwHandle } from '../harness/rgw.js';
import './_rgw_root_hooks.test.js';

/** Short, so failure tests finish quickly; a healthy loopback RGW answers in milliseconds. */
const failureTimeoutMs = 1_500;
/** Failure paths may take the timeout plus scheduling noise on 2 busy cores, never more. */
const failureSlackMs = 1_500;

async function rejection(promise: Promise<unknown>): Promise<Error> {
  try {
    await promise;
  } catch (err) {
    if (err instanceof Error) return err;
    throw new Error(`rejected with a non-Error: ${String(err)}`);
  }
  throw new Error('expected the promise to reject');
}

let bucketCounter = 0;
function freshBucket(): string {
  bucketCounter += 1;
  return `cairn-t${bucketCounter}-${randomBytes(4).toString('hex')}`;
}

function storeOptions(
  rgw: RgwHandle,
  bucket: string,
  overrides: Partial<S3ShardStoreOptions> = {},
): S3ShardStoreOptions {
  return {
    name: 'zone-c',
    zone: 'zone-c',
    endpoint: rgw.endpoint,
    bucket,
    region: rgw.region,
    credentials: { accessKeyId: rgw.accessKeyId, secretAccessKey: rgw.secretAccessKey },
    ...overrides,
  };
}

function rawClient(rgw: RgwHandle): S3Client {
  return new S3Client({
    endpoint: rgw.endpoint,
    region: rgw.region,
    forcePathStyle: true,
    credentials: { accessKeyId: rgw.accessKeyId, secretAccessKey: rgw.secretAccessKey },
    requestChecksumCalculation: 'WHEN_REQUIRED',
    responseChecksumValidation: 'WHEN_REQUIRED',
  });
}

describe('S3ShardStore', function () {
  const opened: (S3ShardStore | S3Client)[] = [];
  const closeAll = (): void => {
    for (const s of opened.splice(0))
      if (s instanceof S3ShardStore) s.close();
      else s.destroy();
  };
  // Keep-alive sockets left open would hold radosgw up at stop (it waits for idle clients).
  afterEach(closeAll);

  shardStoreContract('s3 (Ceph RGW)', async () => {
    const rgw = await sharedRgw();
    const bucket = freshBucket();
    const store = new S3ShardStore(storeOptions(rgw, bucket));
    opened.push(store);
    await store.ensureBucket();
    const raw = rawClient(rgw);
    opened.push(raw);
    return {
      store,
      // Rewrites the object behind the store's back (a plain PutObject, no If-None-Match) with
      // one data bit flipped: bit rot as the next reader sees it.
      async corrupt(key, dataOffset) {
        const got = await raw.send(new GetObjectCommand({ Bucket: bucket, Key: key }));
        const framed = await got.Body!.transformToByteArray();
        const block = Math.floor(dataOffset / checksumBlockBytes);
        const at = frameHeaderBytes + block * (checksumBlockBytes + 4) + 4 + (dataOffset % checksumBlockBytes);
        framed[at] = framed[at]! ^ 1;
        await raw.send(new PutObjectCommand({ Bucket: bucket, Key: key, Body: framed, ContentLength: framed.length }));
      },
    };
  });

  describe('on a real RGW', () => {
    let rgw: RgwHandle;
    before(async () => {
      rgw = await sharedRgw();
    });

    it('creates its bucket idempotently', async () => {
      const store = new S3ShardStore(storeOptions(rgw, freshBucket()));
      opened.push(store);
      await store.ensureBucket();
      await store.put('v/1/1/0', seededBytes(10, 1));
      await store.ensureBucket();
      expect(await store.list('v/')).to.deep.equal(['v/1/1/0']);
    });

    it('refuses a range that starts past the end (RGW answers 416) as an invalid argument', async () => {
      const store = new S3ShardStore(storeOptions(rgw, freshBucket()));
      opened.push(store);
      await store.ensureBucket();
      await store.put('v/1/1/0', seededBytes(10_000, 5));
      const err = await rejection(store.get('v/1/1/0', { offset: 20_000, length: 10 }));
      expect(err).to.be.instanceOf(InvalidArgumentError);
      expect(err.message).to.contain('Cannot read shard v/1/1/0 from s3 "zone-c"');
    });

    it('reports wrong credentials as access denied, not retryable, without the secret', async () => {
      const secret = 'not-the-secret-' + randomBytes(8).toString('hex');
      const good = new S3ShardStore(storeOptions(rgw, freshBucket()));
      opened.push(good);
      await good.ensureBucket();
      await good.put('v/1/1/0', seededBytes(10, 1));
      const store = new S3ShardStore(
        storeOptions(rgw, good.bucket, { credentials: { accessKeyId: rgw.accessKeyId, secretAccessKey: secret } }),
      );
      opened.push(store);
      for (const attempt of [
        () => store.get('v/1/1/0'),
        () => store.put('v/1/1/1', seededBytes(10, 1)),
        () => store.list('v/'),
      ]) {
        const err = await rejection(attempt());
        expect(err).to.be.instanceOf(AuthRejectedError);
        expect((err as AuthRejectedError).retryable).to.equal(false);
        expect(err.message).to.match(/access denied \(SignatureDoesNotMatch \(HTTP 403\)/);
        expect(err.message).to.contain(rgw.endpoint);
        expect(err.message).not.to.contain(secret);
      }
      const unknownKey = new S3ShardStore(
        storeOptions(rgw, good.bucket, { credentials: { accessKeyId: 'AKNOBODY', secretAccessKey: secret } }),
      );
      opened.push(unknownKey);
      const err = await rejection(unknownKey.get('v/1/1/0'));
      expect(err).to.be.instanceOf(AuthRejectedError);
      expect(err.message).to.contain('InvalidAccessKeyId');
    });

    it('reports a missing bucket as a storage error naming the bucket', async () => {
      const store = new S3ShardStore(storeOptions(rgw, freshBucket()));
      opened.push(store);
      const err = await rejection(store.get('v/1/1/0'));
      expect(err).to.be.instanceOf(StorageIoError);
      expect(err).not.to.be.instanceOf(ShardNotFoundError);
      expect(err.message).to.contain(`bucket ${store.bucket} does not exist`);
    });

    it('lists more keys than one S3 page holds, in order, stopping at the limit', async () => {
      const store = new S3ShardStore(storeOptions(rgw, freshBucket(), { concurrency: 16 }));
      opened.push(store);
      await store.ensureBucket();
      const keys = Array.from({ length: 1010 }, (_, i) => `v/${String(i).padStart(4, '0')}`);
      await Promise.all(keys.map((k) => store.put(k, new Uint8Array(0))));
      expect(await store.list('v/', { limit: 2000 })).to.deep.equal(keys);
      expect(await store.list('v/', { limit: 1005, startAfter: 'v/0002' })).to.deep.equal(keys.slice(3, 1008));
    });
  });

  describe('when the server fails', () => {
    it('reports an RGW that died as unavailable, naming the target and endpoint, within the timeout', async () => {
      // Its own RGW: killing the shared one would fail every test after this.
      const rgw = await startRgw();
      try {
        const store = new S3ShardStore(storeOptions(rgw, freshBucket(), { requestTimeoutMs: failureTimeoutMs }));
        opened.push(store);
        await store.ensureBucket();
        await store.put('v/1/1/0', seededBytes(5000, 1));
        // SIGKILL by pid: a crash, not a goodbye. pids are [mon, osd, radosgw].
        process.kill(rgw.pids[2]!, 'SIGKILL');
        for (const attempt of [
          () => store.get('v/1/1/0'),
          () => store.get('v/1/1/0', { offset: 10, length: 10 }),
          () => store.put('v/1/1/1', seededBytes(10, 1)),
          () => store.head('v/1/1/0'),
        ]) {
          const started = Date.now();
          const err = await rejection(attempt());
          expect(err).to.be.instanceOf(UnavailableError);
          expect((err as UnavailableError).retryable).to.equal(true);
          expect(err.message).to.contain(`s3 "zone-c" (bucket ${store.bucket} at ${rgw.endpoint})`);
          expect(Date.now() - started).to.be.below(failureTimeoutMs + failureSlackMs);
        }
      } finally {
        await rgw.stop();
      }
    });

    it('reports a port nobody listens on as unavailable, naming the endpoint', async () => {
      const endpoint = `http://127.0.0.1:${await freePort()}`;
      const store = new S3ShardStore({
        name: 'zone-c',
        zone: 'zone-c',
        endpoint,
        bucket: 'cairn-c',
        credentials: { accessKeyId: 'AK', secretAccessKey: 'SK' },
        requestTimeoutMs: failureTimeoutMs,
      });
      opened.push(store);
      const started = Date.now();
      const err = await rejection(store.get('v/1/1/0'));
      expect(err).to.be.instanceOf(UnavailableError);
      expect(err.message).to.contain(`Cannot read shard v/1/1/0 from s3 "zone-c" (bucket cairn-c at ${endpoint}): `);
      expect(err.message).to.contain('ECONNREFUSED');
      expect(Date.now() - started).to.be.below(failureTimeoutMs + failureSlackMs);
    });

    it('gives up on a server that accepts and never answers after requestTimeoutMs', async () => {
      const sockets = new Set<Socket>();
      const server: TcpServer = createTcpServer((socket) => {
        sockets.add(socket);
        socket.on('error', () => undefined);
      });
      await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
      const port = (server.address() as { port: number }).port;
      try {
        const store = new S3ShardStore({
          name: 'zone-c',
          zone: 'zone-c',
          endpoint: `http://127.0.0.1:${port}`,
          bucket: 'cairn-c',
          credentials: { accessKeyId: 'AK', secretAccessKey: 'SK' },
          requestTimeoutMs: failureTimeoutMs,
        });
        opened.push(store);
        const started = Date.now();
        const err = await rejection(store.get('v/1/1/0', { offset: 0, length: 10 }));
        const elapsed = Date.now() - started;
        expect(err).to.be.instanceOf(UnavailableError);
        expect(err.message).to.contain(`no answer within ${failureTimeoutMs} ms`);
        expect(elapsed).to.be.at.least(failureTimeoutMs - 50);
        expect(elapsed).to.be.below(failureTimeoutMs + failureSlackMs);
      } finally {
        for (const s of sockets) s.destroy();
        await new Promise((resolve) => server.close(resolve));
      }
    });

    it('refuses to store shards on a server that ignores If-None-Match, and overwrites nothing', async () => {
      // A stand-in for s3rver/fauxqs: every PUT succeeds, whatever its preconditions.
      const puts: string[] = [];
      const server: HttpServer = createHttpServer((req, res) => {
        req.resume();
        req.on('end', () => {
          if (req.method === 'PUT') puts.push(req.url ?? '');
          res.writeHead(req.method === 'DELETE' ? 204 : 200, { ETag: '"0"' });
          res.end();
        });
      });
      await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
      const port = (server.address() as { port: number }).port;
      try {
        const store = new S3ShardStore({
          name: 'zone-c',
          zone: 'zone-c',
          endpoint: `http://127.0.0.1:${port}`,
          bucket: 'cairn-c',
          credentials: { accessKeyId: 'AK', secretAccessKey: 'SK' },
          requestTimeoutMs: failureTimeoutMs,
        });
        opened.push(store);
        for (let attempt = 0; attempt < 2; attempt++) {
          const err = await rejection(store.put('v/1/1/0', seededBytes(10, 1)));
          expect(err).to.be.instanceOf(CreateOnlyUnsupportedError);
          expect(err.message).to.contain('ignored If-None-Match');
        }
        // One probe (two PUTs of the same probe key), remembered: no second probe, no shard.
        expect(puts).to.have.length(2);
        expect(puts.every((p) => p.startsWith('/cairn-c/.cairn-probe/'))).to.equal(true);
      } finally {
        server.closeAllConnections();
        await new Promise((resolve) => server.close(resolve));
      }
    });
  });
});
