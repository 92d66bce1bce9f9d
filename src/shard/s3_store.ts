/**
 * S3ShardStore: shards as objects in one S3 bucket (Ceph RGW, AWS, anything S3-compatible), one
 * object per key, each holding the framed shard of format.ts.
 *
 * What it keeps true:
 * - Every byte get() returns has passed its block's CRC-32. A range read is one GET with a Range
 *   header covering exactly the framed blocks it needs, each carrying its own CRC, so the server's
 *   own checksums are never relied on (RGW 16 has none of the flexible ones).
 * - put() is create-only on the server (`If-None-Match: *`; 412 -> ShardExistsError). Servers
 *   that ignore the header would silently overwrite, so each store checks once, with a probe
 *   object, that the header is honoured, and refuses to store anything where it is not.
 * - Every request has a deadline (requestTimeoutMs, body included) and goes through a bounded
 *   queue (`concurrency` in flight, s3QueuedRequestsMax waiting). A failure is a typed error
 *   whose message names the action, the shard, the target, the bucket and the endpoint; never
 *   the credentials.
 * - The SDK is used with requestChecksumCalculation/responseChecksumValidation WHEN_REQUIRED: the
 *   default streams aws-chunked bodies that RGW refuses and other servers corrupt (INFRA.md §2).
 *
 * What it leaves out:
 * - Retries. The SDK is told to try once (maxAttempts 1); errors say `retryable`, and the caller
 *   decides (a volume read would rather ask another shard than wait on a slow one).
 * - Multipart upload: a shard is at most an extent (64 MiB), which one PUT carries.
 * - Bucket lifecycle beyond ensureBucket().
 */
let sdkLoading: Promise<typeof S3Sdk> | undefined;
/** The S3 SDK, imported once, when a store first talks to S3. */
const loadSdk = (): Promise<typeof S3Sdk> => (sdkLoading ??= import('@aws-sdk/client-s3'));

// The SDK is loaded on first use: a fifth of a second that every cairnctl command paid before,
// S3 target or not (docs/dependencies.md).
import type * as S3Sdk from '@aws-sdk/client-s3';
import type { GetObjectCommandOutput, S3Client, S3ClientConfig } from '@aws-sdk/client-s3';
import { createHash, randomBytes } from 'node:crypto';
import { Agent as HttpAgent } from 'node:http';
import { Agent as HttpsAgent } from 'node:https';
import PQueue from 'p-queue';
import {
  CairnError,
  ChecksumMismatchError,
  InvalidArgumentError,
  ShardExistsError,
  ShardNotFoundError,
  StorageIoError,
  UnavailableError,
  assert,
  checksumBlockBytes,
  extentBytesMax,
  targetId,
  zoneId,
  type ByteRange,
  type ShardStat,
  type ShardExpectation,
  type ShardPutOptions,
  type ShardStore,
  type ShardStoreCapabilities,
  type TargetId,
  type ZoneId,
  AuthRejectedError,
} from '../core/index.js';
import {
  checkExpectedSize,
  checkRange,
  dataBytesOfFramed,
  decodeFrame,
  decodeHeader,
  encodeFrame,
  frameHeaderBytes,
  framedBytes,
  framedSpan,
  unframeSpan,
  type FrameHeader,
} from './format.js';
import { checkShardKey, checkShardPrefix } from './keys.js';
import { listLimitDefault, listLimitMax } from './limits.js';

/** Long enough for a 64 MiB shard at ~10 MiB/s; short enough that a dead target is noticed. */
export const s3RequestTimeoutMsDefault = 10_000;
export const s3RequestTimeoutMsMax = 10 * 60_000;
/** RGW on this machine kind peaked at about 8 requests in flight (INFRA.md §2 throughput table). */
export const s3ConcurrencyDefault = 8;
export const s3ConcurrencyMax = 64;
/** Requests waiting for a slot beyond this fail at once (UnavailableError) instead of piling up. */
export const s3QueuedRequestsMax = 1024;
/** S3 returns at most 1000 keys per ListObjectsV2 page. */
const listPageKeysMax = 1000;
/** listLimitMax / listPageKeysMax pages is the need; a server may return short pages, so allow more. */
const listPagesMax = 100;
/** A shard is at most one extent (k >= 1), so no object this store reads whole is larger. */
export const s3ShardBytesMax = extentBytesMax;
const objectBytesMax = framedBytes(s3ShardBytesMax);
/** Probe objects live outside every Cairn key space (volume names never start with '.'). */
const probePrefix = '.cairn-probe/';
/** crc (4) + block: the framed size of one full block. */
const framedBlockBytes = checksumBlockBytes + 4;
const bucketPattern = /^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/;

export interface S3ShardStoreOptions {
  /** The target's name, for messages and placement: `zone-c`. */
  readonly name: string;
  /** The zone the bucket's server lives in. */
  readonly zone: string;
  /** `http://127.0.0.1:7480` or `https://s3.example.com`; path-style addressing is always used. */
  readonly endpoint: string;
  readonly bucket: string;
  /** Default us-east-1 (RGW ignores it, but SigV4 signs it). */
  readonly region?: string;
  readonly credentials: { readonly accessKeyId: string; readonly secretAccessKey: string };
  /** Deadline of one request, from leaving the queue to the last body byte. */
  readonly requestTimeoutMs?: number;
  /** Requests in flight at once (and keep-alive sockets kept). */
  readonly concurrency?: number;
}

/** The server does not honour `If-None-Match: *` on PUT, so create-only puts are impossible there. */
export class CreateOnlyUnsupportedError extends StorageIoError {
  override readonly code: string = 'ENOTSUP';
}

/** Our own deadline fired; turned into UnavailableError by failure(). */
class RequestDeadlineError extends Error {
  override readonly name = 'RequestDeadlineError';
}

interface SdkErrorShape {
  readonly name?: string;
  readonly code?: string;
  readonly message?: string;
  readonly $metadata?: { readonly httpStatusCode?: number };
}

function httpStatusOf(err: unknown): number | undefined {
  return (err as SdkErrorShape | null)?.$metadata?.httpStatusCode;
}

function errorNameOf(err: unknown): string {
  const e = err as SdkErrorShape | null;
  return e?.name ?? e?.code ?? 'Error';
}

/** What each operation makes of a 404 and a 412, the two statuses whose meaning depends on it. */
type Operation = 'put' | 'get' | 'head' | 'delete' | 'list' | 'bucket';

export class S3ShardStore implements ShardStore {
  readonly description: string;
  readonly name: TargetId;
  readonly zone: ZoneId;
  readonly bucket: string;
  readonly endpoint: string;
  /** Made on first use (send), from clientConfig. */
  private client: S3Client | undefined;
  private readonly clientConfig: S3ClientConfig;
  private readonly queue: PQueue;
  private readonly requestTimeoutMs: number;
  /** Resolves once If-None-Match is known to be honoured; reset when the probe could not finish. */
  private createOnlyChecked: Promise<void> | undefined;

  constructor(options: S3ShardStoreOptions) {
    this.name = targetId(options.name);
    this.zone = zoneId(options.zone);
    if (!bucketPattern.test(options.bucket) || options.bucket.includes('..')) {
      throw new InvalidArgumentError(
        `Invalid bucket name "${options.bucket}" for s3 target "${options.name}": use 3-63 lowercase letters, digits, '.' or '-'`,
      );
    }
    this.bucket = options.bucket;
    let url: URL;
    try {
      url = new URL(options.endpoint);
    } catch {
      throw new InvalidArgumentError(
        `Invalid endpoint "${options.endpoint}" for s3 target "${options.name}": expected http://host:port or https://host`,
      );
    }
    if ((url.protocol !== 'http:' && url.protocol !== 'https:') || url.username !== '' || url.password !== '') {
      throw new InvalidArgumentError(
        `Invalid endpoint "${url.origin}" for s3 target "${options.name}": use http:// or https:// without user info`,
      );
    }
    this.endpoint = options.endpoint.replace(/\/+$/, '');
    const concurrency = options.concurrency ?? s3ConcurrencyDefault;
    if (!Number.isSafeInteger(concurrency) || concurrency < 1 || concurrency > s3ConcurrencyMax) {
      throw new InvalidArgumentError(
        `Invalid concurrency ${concurrency} for s3 target "${options.name}": use 1-${s3ConcurrencyMax}`,
      );
    }
    this.requestTimeoutMs = options.requestTimeoutMs ?? s3RequestTimeoutMsDefault;
    if (
      !Number.isSafeInteger(this.requestTimeoutMs) ||
      this.requestTimeoutMs < 1 ||
      this.requestTimeoutMs > s3RequestTimeoutMsMax
    ) {
      throw new InvalidArgumentError(
        `Invalid request timeout ${this.requestTimeoutMs} ms for s3 target "${options.name}": use 1-${s3RequestTimeoutMsMax}`,
      );
    }
    this.description = `s3 "${this.name}" (bucket ${this.bucket} at ${this.endpoint})`;
    this.queue = new PQueue({ concurrency });
    // One keep-alive socket per request slot: a range GET then costs one round trip, not a
    // TCP handshake too.
    const agentOptions = { keepAlive: true, maxSockets: concurrency, maxFreeSockets: concurrency };
    this.clientConfig = {
      endpoint: this.endpoint,
      region: options.region ?? 'us-east-1',
      forcePathStyle: true,
      // Copied so that the caller's object is not retained; the SDK holds the only reference.
      credentials: {
        accessKeyId: options.credentials.accessKeyId,
        secretAccessKey: options.credentials.secretAccessKey,
      },
      requestChecksumCalculation: 'WHEN_REQUIRED',
      responseChecksumValidation: 'WHEN_REQUIRED',
      maxAttempts: 1,
      requestHandler: { httpAgent: new HttpAgent(agentOptions), httpsAgent: new HttpsAgent(agentOptions) },
    };
  }

  /** Sends the command `make` builds from the SDK, making the client on first use. */
  private async send<T = unknown>(
    make: (sdk: typeof S3Sdk) => unknown,
    options: { abortSignal: AbortSignal },
  ): Promise<T> {
    const sdk = await loadSdk();
    this.client ??= new sdk.S3Client(this.clientConfig);
    // Each command's own output type is named at its call site.
    return (await this.client.send(make(sdk) as Parameters<S3Client['send']>[0], options)) as T;
  }

  capabilities(): ShardStoreCapabilities {
    // atomicCreate holds because put() refuses to run where If-None-Match is ignored.
    return { rangeRead: true, atomicCreate: true };
  }

  /** Creates the bucket if it does not exist. Idempotent; fails if another account owns the name. */
  async ensureBucket(): Promise<void> {
    const what = `Cannot create bucket ${this.bucket} on ${this.description}`;
    try {
      await this.call((signal) =>
        this.send((m) => new m.CreateBucketCommand({ Bucket: this.bucket }), { abortSignal: signal }),
      );
    } catch (err) {
      const name = errorNameOf(err);
      if (name === 'BucketAlreadyOwnedByYou') return;
      if (name !== 'BucketAlreadyExists') throw this.failure(err, what, 'bucket');
      // RGW answers BucketAlreadyExists for a bucket we own too; whether we may use it is what counts.
      try {
        await this.call((signal) =>
          this.send((m) => new m.HeadBucketCommand({ Bucket: this.bucket }), { abortSignal: signal }),
        );
      } catch (headErr) {
        throw this.failure(headErr, `${what}: the name exists but is not usable with these credentials`, 'bucket');
      }
    }
  }

  async put(key: string, data: Uint8Array, options: ShardPutOptions = {}): Promise<void> {
    checkShardKey(key);
    const what = `Cannot store shard ${key} on ${this.description}`;
    if (data.length > s3ShardBytesMax) {
      throw new InvalidArgumentError(
        `${what}: ${data.length} bytes is more than a shard may hold (${s3ShardBytesMax})`,
      );
    }
    await this.checkCreateOnly();
    const framed = encodeFrame(data, options.seed);
    try {
      await this.putFramed(key, framed);
    } catch (err) {
      throw this.failure(err, what, 'put');
    }
  }

  async get(key: string, range?: ByteRange, expect?: ShardExpectation): Promise<Uint8Array> {
    checkShardKey(key);
    const what = `Cannot read shard ${key} from ${this.description}`;
    try {
      if (range === undefined) return decodeFrame(await this.getObject(key, undefined, what), what, expect);
      // Offsets must be safe and non-negative before they become a Range header.
      checkRange(range, Number.MAX_SAFE_INTEGER);
      if (range.length === 0) return await this.getEmptyRange(key, range, what);
      // A range read carries no header: without a record to say the seed, the header tells it.
      const seed = expect?.seed ?? (await this.headerOf(key, what)).seed;
      return await this.getRange(key, range, what, seed, expect);
    } catch (err) {
      throw this.failure(err, what, 'get');
    }
  }

  async head(key: string): Promise<ShardStat | null> {
    checkShardKey(key);
    const what = `Cannot stat shard ${key} on ${this.description}`;
    let contentLength: number | undefined;
    try {
      const out = await this.call((signal) =>
        this.send<S3Sdk.HeadObjectCommandOutput>((m) => new m.HeadObjectCommand({ Bucket: this.bucket, Key: key }), {
          abortSignal: signal,
        }),
      );
      contentLength = out.ContentLength;
    } catch (err) {
      if (httpStatusOf(err) === 404 && errorNameOf(err) !== 'NoSuchBucket') return null;
      throw this.failure(err, what, 'head');
    }
    // The framed size determines the data size, so head() needs no read of the object.
    const dataBytes = contentLength === undefined ? -1 : dataBytesOfFramed(contentLength);
    if (dataBytes < 0) {
      throw new ChecksumMismatchError(
        `${what}: an object of ${contentLength ?? 'unknown'} bytes is not a framed shard`,
      );
    }
    return { key, dataBytes };
  }

  async delete(key: string): Promise<void> {
    checkShardKey(key);
    const what = `Cannot delete shard ${key} from ${this.description}`;
    try {
      await this.call((signal) =>
        this.send((m) => new m.DeleteObjectCommand({ Bucket: this.bucket, Key: key }), { abortSignal: signal }),
      );
    } catch (err) {
      // S3 answers 204 for a missing key; some servers say 404 NoSuchKey. Either is success.
      if (errorNameOf(err) === 'NoSuchKey') return;
      throw this.failure(err, what, 'delete');
    }
  }

  async list(prefix: string, options: { startAfter?: string; limit?: number } = {}): Promise<string[]> {
    checkShardPrefix(prefix);
    const what = `Cannot list shards under "${prefix}" on ${this.description}`;
    const limit = Math.max(0, Math.min(options.limit ?? listLimitDefault, listLimitMax));
    const keys: string[] = [];
    let token: string | undefined;
    try {
      for (let page = 0; page < listPagesMax && keys.length < limit; page++) {
        const input = {
          Bucket: this.bucket,
          Prefix: prefix,
          MaxKeys: Math.min(listPageKeysMax, limit - keys.length),
          ...(token === undefined
            ? options.startAfter === undefined
              ? {}
              : { StartAfter: options.startAfter }
            : { ContinuationToken: token }),
        };
        const out = await this.call((signal) =>
          this.send<S3Sdk.ListObjectsV2CommandOutput>((m) => new m.ListObjectsV2Command(input), {
            abortSignal: signal,
          }),
        );
        for (const object of out.Contents ?? []) {
          if (object.Key === undefined || object.Key.startsWith(probePrefix) || keys.length >= limit) continue;
          keys.push(object.Key);
        }
        if (out.IsTruncated !== true || out.NextContinuationToken === undefined) break;
        token = out.NextContinuationToken;
      }
    } catch (err) {
      throw this.failure(err, what, 'list');
    }
    return keys;
  }

  /** Closes the keep-alive sockets. The store must not be used afterwards. */
  close(): void {
    this.client?.destroy();
  }

  private putFramed(key: string, framed: Uint8Array): Promise<unknown> {
    // Content-MD5 makes the server check the bytes it received: the upload half of the
    // checksum pair whose download half is the per-block CRC.
    const contentMd5 = createHash('md5').update(framed).digest('base64');
    return this.call((signal) =>
      this.send(
        (m) =>
          new m.PutObjectCommand({
            Bucket: this.bucket,
            Key: key,
            Body: framed,
            ContentLength: framed.length,
            ContentMD5: contentMd5,
            IfNoneMatch: '*',
          }),
        { abortSignal: signal },
      ),
    );
  }

  /**
   * Finds out once per store whether the server honours `If-None-Match: *` on PUT: creates a
   * probe object twice and expects the second to fail with 412. A server that lets it through
   * (s3rver, fauxqs) or does not implement it (Swift s3api: 501) would let a put replace a
   * shard, so this store then refuses every put with CreateOnlyUnsupportedError.
   */
  private checkCreateOnly(): Promise<void> {
    if (this.createOnlyChecked === undefined) {
      const probe = this.probeCreateOnly();
      this.createOnlyChecked = probe;
      // A verdict sticks; a probe that could not finish (target down) is tried again next put.
      probe.catch((err: unknown) => {
        if (!(err instanceof CreateOnlyUnsupportedError) && this.createOnlyChecked === probe) {
          this.createOnlyChecked = undefined;
        }
      });
    }
    return this.createOnlyChecked;
  }

  private async probeCreateOnly(): Promise<void> {
    const key = `${probePrefix}${randomBytes(12).toString('hex')}`;
    const what = `Cannot use ${this.description} as a shard target`;
    const body = encodeFrame(new Uint8Array(0));
    try {
      await this.putFramed(key, body);
    } catch (err) {
      throw this.unsupportedOr(err, what, key);
    }
    try {
      await this.putFramed(key, body);
    } catch (err) {
      if (httpStatusOf(err) === 412) return;
      throw this.unsupportedOr(err, what, key);
    } finally {
      await this.call((signal) =>
        this.send((m) => new m.DeleteObjectCommand({ Bucket: this.bucket, Key: key }), { abortSignal: signal }),
      ).catch(
        () => undefined, // A leftover probe object is harmless: list() skips the prefix.
      );
    }
    throw new CreateOnlyUnsupportedError(
      `${what}: the server ignored If-None-Match: * (a second create of probe object ${key} succeeded), so a put could silently replace a shard`,
    );
  }

  private unsupportedOr(err: unknown, what: string, key: string): Error {
    const status = httpStatusOf(err);
    if (status === 501 || (status === 400 && errorNameOf(err) === 'NotImplemented')) {
      return new CreateOnlyUnsupportedError(
        `${what}: the server does not implement If-None-Match: * on PUT (${errorNameOf(err)}, HTTP ${status})`,
        {
          cause: err,
        },
      );
    }
    return this.failure(err, `${what}: probe put of ${key} failed`, 'bucket');
  }

  /**
   * A zero-length read still has to say whether the shard exists and the offset is inside it:
   * the 32-byte header answers both, and its own CRC vouches for the size it states.
   */
  private async getEmptyRange(key: string, range: ByteRange, what: string): Promise<Uint8Array> {
    checkRange(range, (await this.headerOf(key, what)).dataBytes);
    return new Uint8Array(0);
  }

  /** The shard's header, read on its own (its CRC vouches for it). */
  private async headerOf(key: string, what: string): Promise<FrameHeader> {
    return decodeHeader((await this.getObject(key, { start: 0, end: frameHeaderBytes }, what)).bytes, what);
  }

  /**
   * One GET for a range read. The framed span depends on the shard's size only through the
   * length of its last block, so the request asks for whole blocks [first, last] and lets the
   * server cut the final one short; the size then comes from the response's Content-Range total
   * (framed size -> data size is exact, see dataBytesOfFramed). This saves the HEAD round trip
   * (~3.7 ms per small read on RGW) that asking for the size first would cost. The total is not
   * checksummed, but a wrong one cannot pass: every returned block is checked against its CRC and
   * the span's length must match.
   *
   * Worked example, range [5000, 5100) of a 10000-byte shard: block 1, request framed bytes
   * 32 + 4100 = 4132 to 4132 + 4100 - 1 = 8231; Content-Range "bytes 4132-8231/10044" gives
   * dataBytes 10000; framedSpan() agrees on [4132, 8232).
   */
  private async getRange(
    key: string,
    range: ByteRange,
    what: string,
    seed: number,
    expect: ShardExpectation | undefined,
  ): Promise<Uint8Array> {
    const firstBlock = Math.floor(range.offset / checksumBlockBytes);
    const lastBlock = Math.floor((range.offset + range.length - 1) / checksumBlockBytes);
    const start = frameHeaderBytes + firstBlock * framedBlockBytes;
    const end = frameHeaderBytes + (lastBlock + 1) * framedBlockBytes;
    const got = await this.getObject(key, { start, end }, what);
    if (got.totalBytes === undefined) {
      // The server ignored Range and sent the whole object (allowed by HTTP): cut it here.
      const dataBytes = this.dataBytesOf(got.bytes.length, what, expect);
      checkRange(range, dataBytes);
      const span = framedSpan(range, dataBytes);
      const shape = { blockBytes: checksumBlockBytes, dataBytes, seed };
      return unframeSpan(got.bytes.subarray(span.start, span.end), span, range, shape, what);
    }
    const dataBytes = this.dataBytesOf(got.totalBytes, what, expect);
    checkRange(range, dataBytes);
    const span = framedSpan(range, dataBytes);
    if (got.start !== span.start) {
      throw new ChecksumMismatchError(
        `${what}: asked for framed bytes from ${span.start}, the server sent from ${got.start}`,
      );
    }
    return unframeSpan(got.bytes, span, range, { blockBytes: checksumBlockBytes, dataBytes, seed }, what);
  }

  /** The data size of an object of `totalBytes`; it must be the one `expect` names, when given. */
  private dataBytesOf(totalBytes: number, what: string, expect?: ShardExpectation): number {
    const dataBytes = dataBytesOfFramed(totalBytes);
    if (dataBytes < 0) {
      throw new ChecksumMismatchError(`${what}: an object of ${totalBytes} bytes is not a framed shard`);
    }
    checkExpectedSize(dataBytes, expect, what);
    return dataBytes;
  }

  /** GETs the whole object, or framed bytes [start, end) of it. */
  private getObject(key: string, span: undefined, what: string): Promise<Uint8Array>;
  private getObject(
    key: string,
    span: { start: number; end: number },
    what: string,
  ): Promise<{ bytes: Uint8Array; start: number; totalBytes: number | undefined }>;
  private async getObject(
    key: string,
    span: { start: number; end: number } | undefined,
    what: string,
  ): Promise<Uint8Array | { bytes: Uint8Array; start: number; totalBytes: number | undefined }> {
    assert(span === undefined || (span.end > span.start && span.start >= 0), 'empty or negative framed span');
    return this.call(async (signal) => {
      const out = await this.send<GetObjectCommandOutput>(
        (m) =>
          new m.GetObjectCommand({
            Bucket: this.bucket,
            Key: key,
            ...(span === undefined ? {} : { Range: `bytes=${span.start}-${span.end - 1}` }),
          }),
        { abortSignal: signal },
      );
      const bytes = await readBody(out, signal, what);
      if (span === undefined) return bytes;
      const contentRange =
        out.ContentRange === undefined ? undefined : /^bytes (\d+)-(\d+)\/(\d+)$/.exec(out.ContentRange);
      if (contentRange === undefined || contentRange === null) return { bytes, start: 0, totalBytes: undefined };
      return { bytes, start: Number(contentRange[1]), totalBytes: Number(contentRange[3]) };
    });
  }

  /**
   * Runs one request in the queue under the store's deadline. The deadline starts when the
   * request leaves the queue: time spent waiting behind this store's own requests is the
   * caller's load, not the target's slowness.
   */
  private call<T>(work: (signal: AbortSignal) => Promise<T>): Promise<T> {
    if (this.queue.size >= s3QueuedRequestsMax) {
      return Promise.reject(
        new UnavailableError(
          `${this.queue.size} requests are queued for this target already (limit ${s3QueuedRequestsMax})`,
        ),
      );
    }
    return this.queue.add(async () => {
      const controller = new AbortController();
      let timer: NodeJS.Timeout | undefined;
      const deadline = new Promise<never>((_, reject) => {
        timer = setTimeout(() => {
          const err = new RequestDeadlineError(`no answer within ${this.requestTimeoutMs} ms`);
          controller.abort(err);
          reject(err);
        }, this.requestTimeoutMs);
      });
      const request = work(controller.signal);
      request.catch(() => undefined); // It may still reject after the deadline has won.
      try {
        return await Promise.race([request, deadline]);
      } finally {
        clearTimeout(timer);
      }
    });
  }

  /** The one switch from S3/transport failures to Cairn's error classes. */
  private failure(err: unknown, what: string, operation: Operation): Error {
    if (err instanceof CairnError) {
      if (err.message.startsWith(what)) return err;
      // Errors raised below this store (a range check, the queue limit) get the action and target.
      if (err instanceof InvalidArgumentError) {
        return new InvalidArgumentError(`${what}: ${err.message}`, { cause: err });
      }
      if (err instanceof UnavailableError) return new UnavailableError(`${what}: ${err.message}`, { cause: err });
      return err;
    }
    const status = httpStatusOf(err);
    const name = errorNameOf(err);
    const message = (err as SdkErrorShape | null)?.message ?? String(err);
    const detail = `${name}${status === undefined ? '' : ` (HTTP ${status})`}${message && message !== name && message !== 'UnknownError' ? `: ${message}` : ''}`;
    const options = { cause: err };
    if (err instanceof RequestDeadlineError) return new UnavailableError(`${what}: ${err.message}`, options);
    // No HTTP status: the request never got an answer (refused, reset, DNS, aborted).
    if (status === undefined) return new UnavailableError(`${what}: ${detail}`, options);
    if (name === 'NoSuchBucket') return new StorageIoError(`${what}: bucket ${this.bucket} does not exist`, options);
    if (status === 401 || status === 403) {
      return new AuthRejectedError(`${what}: access denied (${detail}); check the target's access key and secret`, {
        ...options,
        retryable: false,
      });
    }
    if (status === 404 && operation !== 'bucket' && operation !== 'list') {
      return new ShardNotFoundError(`${what}: no such shard`, options);
    }
    if (status === 412 && operation === 'put') return new ShardExistsError(`${what}: it already exists`, options);
    if (status === 416) return new InvalidArgumentError(`${what}: the range starts past the end of the shard`, options);
    // Content-MD5 mismatch: the bytes were damaged on the way; sending them again may work.
    if (name === 'BadDigest') {
      return new UnavailableError(`${what}: the server received damaged bytes (${detail})`, options);
    }
    if (status === 408 || status === 429 || status >= 500) return new UnavailableError(`${what}: ${detail}`, options);
    return new StorageIoError(`${what}: ${detail}`, options);
  }
}

/** Reads a GetObject body whole, checking its size first; destroys it if the deadline fires. */
async function readBody(out: GetObjectCommandOutput, signal: AbortSignal, what: string): Promise<Uint8Array> {
  const body = out.Body;
  if (body === undefined) return new Uint8Array(0);
  if (out.ContentLength !== undefined && out.ContentLength > objectBytesMax) {
    (body as { destroy?: () => void }).destroy?.();
    throw new ChecksumMismatchError(
      `${what}: an object of ${out.ContentLength} bytes is larger than any shard (${objectBytesMax} framed bytes)`,
    );
  }
  // The SDK stops watching the signal once headers arrive; a body that stalls is cut here.
  const onAbort = (): void =>
    (body as { destroy?: (err?: Error) => void }).destroy?.(signal.reason instanceof Error ? signal.reason : undefined);
  signal.addEventListener('abort', onAbort, { once: true });
  try {
    return await body.transformToByteArray();
  } finally {
    signal.removeEventListener('abort', onAbort);
  }
}
