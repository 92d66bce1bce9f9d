/**
 * The storage node's HTTP shard API (plain node:http, keep-alive), in front of a FileShardStore:
 *
 *   PUT    /v1/shards/<key>   body = the shard framed by the client (content-type
 *                             application/vnd.cairn.shard: every block verified, stored as sent),
 *                             or raw shard data with x-cairn-crc32 = CRC-32 of the body  -> 201
 *   GET    /v1/shards/<key>   optional `Range: bytes=a-b` over data bytes -> 200, body = the
 *                             framed blocks covering it, x-cairn-framed-span: firstBlock,start,end,dataBytes
 *   HEAD   /v1/shards/<key>   -> 200 with x-cairn-data-bytes, or 404
 *   DELETE /v1/shards/<key>   -> 204 (idempotent)
 *   GET    /v1/shards?prefix=&startAfter=&limit=  -> 200, JSON array of keys
 *   GET    /v1/health         -> 200, JSON {name, zone, capacityBytes, usedBytes, requestsInFlight}
 *                             (no secret needed, so probes and `node list` work without it)
 *
 * What it keeps true: every request is validated here (key, range, body size, checksum, secret)
 * and any failure is answered as JSON `{code, message}` with the status from one switch
 * (statusOf), logged as one line. Client input never crashes the process; a broken assertion
 * (a bug) still does. A body whose CRC does not match is refused and nothing is stored. Bodies
 * are bounded per request (the largest shard) and in total (bodyBytesInFlightMax).
 *
 * What it leaves out: TLS, and streaming bodies to disk (a shard is written whole, framed).
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { performance } from 'node:perf_hooks';
import {
  AssertionError,
  CairnError,
  ChecksumMismatchError,
  GiB,
  InvalidArgumentError,
  ShardExistsError,
  ShardNotFoundError,
  StorageIoError,
  UnavailableError,
  DiskFullError,
  RangeOutsideError,
  crc32Of,
  errorMessage,
  type ByteRange,
} from '../core/index.js';
import {
  checkShardKey,
  checkShardPrefix,
  dataBytesOfFramed,
  formatHostPort,
  framedBytes,
  listLimitMax,
  nodeFramedShardType,
  nodeHeaders,
  nodeHealthPath,
  nodeShardBytesMax,
  nodeShardsPath,
  shardKeyCharsMax,
  type FileShardStore,
  type NodeHealth,
} from '../shard/index.js';

/**
 * Request bodies held in memory at once, across all requests. 64 MiB shards from many clients
 * would otherwise exhaust memory; past this a PUT is answered 503 (retryable) before its body
 * is read.
 */
export const bodyBytesInFlightMaxDefault = 1 * GiB;
/** Idle keep-alive connections stay open this long; clients close theirs sooner (30 s). */
const keepAliveTimeoutMs = 60_000;
/** A whole request (headers and body) must arrive within this, against slow or stuck clients. */
const requestTimeoutMs = 120_000;

/** A protocol-level failure with its own status (route, method, missing header). */
class HttpError extends CairnError {
  constructor(
    readonly status: number,
    code: string,
    message: string,
  ) {
    super(code, message, { retryable: status === 503 });
  }
}

export interface ShardServerOptions {
  readonly store: FileShardStore;
  readonly name: string;
  readonly zone: string;
  /** When set, every /v1/shards request needs `authorization: Bearer <secret>`. */
  readonly authSecret?: string;
  /** One line per error (without a trailing newline). */
  readonly log: (line: string) => void;
  readonly bodyBytesInFlightMax?: number;
  /** Told about every request once its response is finished or its connection closed (metrics). */
  readonly onRequestDone?: (done: ShardRequestDone) => void;
}

/** One request as metrics see it. */
export interface ShardRequestDone {
  readonly route: 'shard' | 'shard_list' | 'health' | 'other';
  readonly method: string;
  /** The status sent; 0 when the connection closed before a response was sent. */
  readonly status: number;
  readonly durationMs: number;
  /** Shard data bytes stored (a 201 PUT), else 0. */
  readonly bytesWritten: number;
  /** Bytes of a 200 GET body, else 0. */
  readonly bytesRead: number;
}

function routeOf(url: string): ShardRequestDone['route'] {
  const path = url.split('?')[0] ?? '';
  if (path === nodeHealthPath) return 'health';
  if (path === nodeShardsPath) return 'shard_list';
  return path.startsWith(`${nodeShardsPath}/`) ? 'shard' : 'other';
}

/** True for a PUT whose body is a shard the client framed (content-type nodeFramedShardType). */
function isFramedPut(req: IncomingMessage): boolean {
  return (req.headers['content-type'] ?? '').split(';')[0]!.trim().toLowerCase() === nodeFramedShardType;
}

/** The one mapping from a thrown error to an HTTP status and a stable code. */
export function statusOf(err: unknown): { status: number; code: string } {
  if (err instanceof HttpError) return { status: err.status, code: err.code };
  if (err instanceof RangeOutsideError) return { status: 416, code: err.code };
  if (err instanceof InvalidArgumentError) return { status: 400, code: err.code };
  if (err instanceof ShardNotFoundError) return { status: 404, code: err.code };
  if (err instanceof ShardExistsError) return { status: 409, code: err.code };
  if (err instanceof ChecksumMismatchError) return { status: 500, code: err.code };
  if (err instanceof DiskFullError) return { status: 507, code: err.code };
  if (err instanceof StorageIoError) return { status: 500, code: err.code };
  if (err instanceof UnavailableError) return { status: 503, code: err.code };
  return { status: 500, code: 'EINTERNAL' };
}

export class ShardServer {
  private readonly server: Server;
  private readonly store: FileShardStore;
  private readonly name: string;
  private readonly zone: string;
  private readonly log: (line: string) => void;
  private readonly onRequestDone: ((done: ShardRequestDone) => void) | undefined;
  /** Body bytes of GET answers, for onRequestDone (headers given to writeHead cannot be read back). */
  private readonly bodyBytesSent = new WeakMap<ServerResponse, number>();
  private readonly secretDigest: Buffer | undefined;
  private readonly bodyBytesInFlightMax: number;
  private bodyBytesInFlight = 0;
  private requestsInFlight = 0;
  private draining = false;
  private idle: (() => void) | undefined;

  constructor(options: ShardServerOptions) {
    this.store = options.store;
    this.name = options.name;
    this.zone = options.zone;
    this.log = options.log;
    this.onRequestDone = options.onRequestDone;
    // Comparing fixed-length digests lets timingSafeEqual run whatever length the guess has.
    this.secretDigest = options.authSecret === undefined ? undefined : digest(options.authSecret);
    this.bodyBytesInFlightMax = options.bodyBytesInFlightMax ?? bodyBytesInFlightMaxDefault;
    this.server = createServer(
      { keepAliveTimeout: keepAliveTimeoutMs, requestTimeout: requestTimeoutMs },
      (req, res) => {
        void this.serve(req, res);
      },
    );
  }

  /** Starts listening; resolves with the bound address (port 0 picks a free port). */
  listen(host: string, port: number): Promise<{ host: string; port: number; address: string }> {
    return new Promise((resolve, reject) => {
      const onError = (err: Error): void =>
        reject(
          new StorageIoError(`Cannot listen on ${formatHostPort(host, port)}: ${errorMessage(err)}`, { cause: err }),
        );
      this.server.once('error', onError);
      this.server.listen(port, host, () => {
        this.server.off('error', onError);
        const bound = this.server.address() as AddressInfo;
        resolve({ host, port: bound.port, address: formatHostPort(host, bound.port) });
      });
    });
  }

  /**
   * Stops accepting connections, lets requests in flight finish for up to `drainMs`, then closes
   * every connection. Requests arriving meanwhile on open keep-alive connections get 503.
   * Resolves with the number of requests cut off.
   */
  async close(drainMs: number): Promise<number> {
    this.draining = true;
    const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
    this.server.closeIdleConnections();
    if (this.requestsInFlight > 0) {
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([
        new Promise<void>((resolve) => (this.idle = resolve)),
        new Promise<void>((resolve) => (timer = setTimeout(resolve, drainMs))),
      ]);
      clearTimeout(timer);
    }
    const cut = this.requestsInFlight;
    this.server.closeAllConnections();
    await closed;
    return cut;
  }

  // ---------------------------------------------------------------------------------------------

  private async serve(req: IncomingMessage, res: ServerResponse): Promise<void> {
    this.requestsInFlight += 1;
    const method = req.method ?? '';
    const url = req.url ?? '';
    const startedMs = performance.now();
    res.once('close', () => {
      this.requestsInFlight -= 1;
      if (this.requestsInFlight === 0) this.idle?.();
      this.reportDone(method, url, req, res, startedMs);
    });
    try {
      if (this.draining) {
        res.setHeader('connection', 'close');
        throw new HttpError(503, 'EUNAVAILABLE', `node "${this.name}" is shutting down`);
      }
      await this.route(method, url, req, res);
    } catch (err) {
      if (err instanceof AssertionError) {
        // A bug, not a client's mistake: die loudly rather than keep serving from a broken state.
        this.log(`${method} ${url.slice(0, 200)}: ${err.stack ?? err.message}`);
        process.nextTick(() => {
          throw err;
        });
        return;
      }
      const { status, code } = statusOf(err);
      const message = errorMessage(err);
      if (!(method === 'HEAD' && status === 404))
        this.log(`${method} ${url.slice(0, 200)} -> ${status} ${code}: ${message}`);
      if (res.headersSent) {
        res.destroy();
        return;
      }
      // An unread request body would be taken for the next request on this connection.
      if (!req.complete) res.setHeader('connection', 'close');
      const body = JSON.stringify({ code, message });
      res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
      res.end(body);
    }
  }

  private reportDone(method: string, url: string, req: IncomingMessage, res: ServerResponse, startedMs: number): void {
    if (this.onRequestDone === undefined) return;
    const status = res.headersSent ? res.statusCode : 0;
    const sent = this.bodyBytesSent.get(res) ?? 0;
    const received = Number(req.headers['content-length'] ?? 0);
    try {
      this.onRequestDone({
        route: routeOf(url),
        method,
        status,
        durationMs: performance.now() - startedMs,
        // Shard data bytes: a framed body's length less its header and block checksums.
        bytesWritten:
          method === 'PUT' && status === 201 && Number.isSafeInteger(received)
            ? isFramedPut(req)
              ? Math.max(0, dataBytesOfFramed(received))
              : received
            : 0,
        bytesRead: method === 'GET' && status === 200 && Number.isSafeInteger(sent) ? sent : 0,
      });
    } catch (err) {
      this.log(`reporting ${method} ${url.slice(0, 200)}: ${errorMessage(err)}`);
    }
  }

  private async route(method: string, url: string, req: IncomingMessage, res: ServerResponse): Promise<void> {
    const queryAt = url.indexOf('?');
    const path = queryAt === -1 ? url : url.slice(0, queryAt);
    const query = queryAt === -1 ? '' : url.slice(queryAt + 1);
    if (path === nodeHealthPath) {
      if (method !== 'GET' && method !== 'HEAD')
        throw new HttpError(405, 'EMETHOD', `${method} is not allowed on ${path}`);
      return this.health(res);
    }
    if (path === nodeShardsPath) {
      this.authenticate(req);
      if (method !== 'GET') throw new HttpError(405, 'EMETHOD', `${method} is not allowed on ${path}`);
      return this.list(query, res);
    }
    if (path.startsWith(`${nodeShardsPath}/`)) {
      this.authenticate(req);
      // The raw path, neither URL-decoded nor normalised: checkShardKey refuses '%', '..', '//',
      // and checking before the body is read spares reading a body that cannot be stored.
      const key = checkShardKey(path.slice(nodeShardsPath.length + 1));
      switch (method) {
        case 'PUT':
          return this.put(key, req, res);
        case 'GET':
          return this.get(key, req, res);
        case 'HEAD':
          return this.head(key, res);
        case 'DELETE':
          await this.store.delete(key);
          res.writeHead(204).end();
          return;
        default:
          throw new HttpError(405, 'EMETHOD', `${method} is not allowed on shards`);
      }
    }
    throw new HttpError(404, 'ENOROUTE', `No such route: ${method} ${path.slice(0, 200)}`);
  }

  private authenticate(req: IncomingMessage): void {
    if (this.secretDigest === undefined) return;
    const header = req.headers.authorization ?? '';
    const given = header.startsWith('Bearer ') ? header.slice('Bearer '.length) : '';
    if (!timingSafeEqual(digest(given), this.secretDigest)) {
      throw new HttpError(
        401,
        'EAUTH',
        `node "${this.name}" refused the request: ${header === '' ? 'no' : 'wrong'} shared secret`,
      );
    }
  }

  private async put(key: string, req: IncomingMessage, res: ServerResponse): Promise<void> {
    const what = `Cannot store shard ${key} on node "${this.name}"`;
    const framed = isFramedPut(req);
    const crcText = req.headers[nodeHeaders.crc32];
    if (!framed && (typeof crcText !== 'string' || !/^[0-9a-fA-F]{1,8}$/.test(crcText))) {
      throw new InvalidArgumentError(
        `${what}: the ${nodeHeaders.crc32} header (hex CRC-32 of the body) is missing or invalid`,
      );
    }
    const lengthText = req.headers['content-length'];
    if (lengthText === undefined || !/^\d+$/.test(lengthText))
      throw new HttpError(411, 'ELENGTH', `${what}: a Content-Length header is required`);
    const length = Number(lengthText);
    if (length > (framed ? framedBytes(nodeShardBytesMax) : nodeShardBytesMax)) {
      throw new HttpError(
        413,
        'ETOOLARGE',
        `${what}: ${length} bytes is more than the ${nodeShardBytesMax}-byte shard limit`,
      );
    }
    if (this.bodyBytesInFlight + length > this.bodyBytesInFlightMax) {
      throw new HttpError(503, 'EBUSY', `${what}: node "${this.name}" is receiving too much at once; retry`);
    }
    this.bodyBytesInFlight += length;
    try {
      const body = await readBody(req, length, what);
      if (framed) {
        try {
          await this.store.putFramed(key, body);
        } catch (err) {
          if (!(err instanceof ChecksumMismatchError)) throw err;
          throw new HttpError(
            400,
            'EBODYCRC',
            `${what}: the framed body fails its checksums (damaged in transit); nothing stored: ${errorMessage(err)}`,
          );
        }
        res.writeHead(201, { 'content-length': 0 }).end();
        return;
      }
      if (crc32Of(body) !== Number.parseInt(crcText as string, 16)) {
        throw new HttpError(
          400,
          'EBODYCRC',
          `${what}: the body does not match its ${nodeHeaders.crc32} checksum (damaged in transit); nothing stored`,
        );
      }
      await this.store.put(key, body);
    } finally {
      this.bodyBytesInFlight -= length;
    }
    res.writeHead(201, { 'content-length': 0 }).end();
  }

  private async get(key: string, req: IncomingMessage, res: ServerResponse): Promise<void> {
    const rangeText = req.headers.range;
    const range = rangeText === undefined ? undefined : parseRange(rangeText, key, this.name);
    const read = await this.store.getFramed(key, range);
    res.writeHead(200, {
      'content-type': 'application/octet-stream',
      'content-length': read.framed.length,
      [nodeHeaders.framedSpan]: `${read.span.firstBlock},${read.span.start},${read.span.end},${read.header.dataBytes},${read.header.seed}`,
      [nodeHeaders.blockBytes]: String(read.header.blockBytes),
    });
    res.end(read.framed);
    this.bodyBytesSent.set(res, read.framed.length);
  }

  private async head(key: string, res: ServerResponse): Promise<void> {
    const stat = await this.store.head(key);
    if (stat === null) throw new ShardNotFoundError(`Cannot read shard ${key} from node "${this.name}": no such shard`);
    res.writeHead(200, { [nodeHeaders.dataBytes]: String(stat.dataBytes) }).end();
  }

  private async list(query: string, res: ServerResponse): Promise<void> {
    const params = new URLSearchParams(query);
    const prefix = checkShardPrefix(params.get('prefix') ?? '');
    const options: { startAfter?: string; limit?: number } = {};
    const startAfter = params.get('startAfter');
    if (startAfter !== null) {
      if (startAfter.length > shardKeyCharsMax)
        throw new InvalidArgumentError(`Cannot list shards: startAfter is longer than ${shardKeyCharsMax} characters`);
      options.startAfter = startAfter;
    }
    const limitText = params.get('limit');
    if (limitText !== null) {
      const limit = Number(limitText);
      if (!/^\d+$/.test(limitText) || limit > listLimitMax)
        throw new InvalidArgumentError(
          `Cannot list shards: limit must be a whole number from 0 to ${listLimitMax}, got "${limitText.slice(0, 20)}"`,
        );
      options.limit = limit;
    }
    sendJson(res, 200, await this.store.list(prefix, options));
  }

  private async health(res: ServerResponse): Promise<void> {
    const usage = await this.store.usage();
    // Not counting this health request itself.
    const requestsInFlight = this.requestsInFlight - 1;
    const health: NodeHealth = {
      name: this.name,
      zone: this.zone,
      capacityBytes: usage.capacityBytes,
      usedBytes: usage.usedBytes,
      requestsInFlight,
    };
    sendJson(res, 200, health);
  }
}

function digest(text: string): Buffer {
  return createHash('sha256').update(text, 'utf8').digest();
}

function sendJson(res: ServerResponse, status: number, value: unknown): void {
  const body = JSON.stringify(value);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
  res.end(body);
}

/** `bytes=a-b` (inclusive, one range) as a half-open ByteRange; anything else is a 400. */
function parseRange(text: string, key: string, node: string): ByteRange {
  const match = /^bytes=(\d{1,16})-(\d{1,16})$/.exec(text.trim());
  const first = Number(match?.[1]);
  const last = Number(match?.[2]);
  if (match === null || !Number.isSafeInteger(first) || !Number.isSafeInteger(last) || last < first) {
    throw new InvalidArgumentError(
      `Cannot read shard ${key} from node "${node}": unsupported Range "${text.slice(0, 80)}" (use one bytes=FIRST-LAST)`,
    );
  }
  return { offset: first, length: last - first + 1 };
}

/** Reads exactly `length` body bytes into one buffer; Node's parser enforces Content-Length. */
function readBody(req: IncomingMessage, length: number, what: string): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const body = Buffer.allocUnsafe(length);
    let received = 0;
    req.on('data', (chunk: Buffer) => {
      if (received + chunk.length > length) {
        req.destroy();
        reject(new HttpError(413, 'ETOOLARGE', `${what}: the body is longer than its Content-Length`));
        return;
      }
      chunk.copy(body, received);
      received += chunk.length;
    });
    req.on('end', () => {
      if (received === length) resolve(body);
      else reject(new InvalidArgumentError(`${what}: the body ended after ${received} of ${length} bytes`));
    });
    req.on('error', (err) =>
      reject(new InvalidArgumentError(`${what}: the body could not be read: ${errorMessage(err)}`, { cause: err })),
    );
    req.on('close', () => {
      if (received < length)
        reject(
          new InvalidArgumentError(`${what}: the client closed the connection after ${received} of ${length} bytes`),
        );
    });
  });
}
