/**
 * NodeShardStore: the ShardStore of one storage node (cairnd), spoken to over HTTP/1.1 with
 * keep-alive. This file also holds the wire protocol both sides share: routes, headers, limits,
 * and the one mapping from HTTP status back to Cairn's typed errors.
 *
 * What it keeps true:
 * - End-to-end checksums: a put carries the CRC-32 of its whole body (the node checks it before
 *   framing), and a get receives the node's framed blocks and verifies every block's CRC here,
 *   so bytes damaged on the disk, in the node or on the wire are never returned.
 * - Bounded: at most `concurrency` requests in flight per node and `queuedMax` waiting; each
 *   request has a deadline; response bodies are bounded by the largest shard.
 * - A node that refuses connections or does not answer in time is an UnavailableError naming
 *   the node and its address; retry loops may try another target.
 *
 * What it leaves out: retries (the caller decides), TLS (run it on a private network or behind a
 * proxy; the optional shared secret only authenticates).
 */
import { Agent, request as httpRequest, type IncomingHttpHeaders } from 'node:http';
import { Agent as HttpsAgent, request as httpsRequest } from 'node:https';
import PQueue from 'p-queue';
import {
  CairnError,
  ChecksumMismatchError,
  InvalidArgumentError,
  ShardExistsError,
  ShardNotFoundError,
  StorageIoError,
  UnavailableError,
  checksumBlockBytes,
  extentBytesMax,
  AuthRejectedError,
  DiskFullError,
  RangeOutsideError,
  type ByteRange,
  type ShardExpectation,
  type ShardPutOptions,
  type ShardStat,
  type ShardStore,
  type ShardStoreCapabilities,
} from '../core/index.js';
import {
  journalFrameOverheadBytes,
  journalRequestBytesMax,
  journalResponseBytesMax,
  type ShardGetAnswer,
} from '../journal/index.js';
import { JournalNodeClient } from './journal_client.js';
import { errnoOf, parseHostPort } from './net.js';
import { tlsConnectOptions, transportError, type NodeClientTls } from './tls.js';
import {
  checkExpectation,
  checkRange,
  encodeFrame,
  encodeFrameInto,
  expectedShape,
  FrameBufferPool,
  framedBytes,
  framedSpan,
  unframeSpan,
  unframeSpanInto,
  type FrameHeader,
  type FramedSpan,
} from './format.js';
import { checkShardKey, checkShardPrefix } from './keys.js';
import { listLimitMax } from './limits.js';

/** The largest shard a node accepts: a whole extent, the shard size of a k = 1 profile. */
export const nodeShardBytesMax = extentBytesMax;
/** Room for a list answer: listLimitMax keys of up to 512 characters, JSON-quoted. */
const listResponseBytesMax = listLimitMax * 520 + 1024;
/** Per-request deadline by default: a 64 MiB shard needs about 0.6 s at 1 Gbit/s; allow slow links. */
export const nodeRequestTimeoutMsDefault = 10_000;
/** Requests in flight to one node by default: enough to fill a 10 Gbit/s link with 256 KiB shards. */
export const nodeConcurrencyDefault = 16;
/** Requests waiting for a slot; beyond this the node is treated as overloaded. */
const queuedMax = 4096;
/** Idle keep-alive sockets close after this, well before the node's keepAliveTimeout (60 s). */
const idleSocketMs = 30_000;
/** Frame buffers of shard PUTs kept for reuse, across every node store of the process. */
const framePool = new FrameBufferPool(64 * 1024 * 1024);

/** HTTP headers of the node protocol. */
export const nodeHeaders = {
  /** PUT of raw data: lowercase hex CRC-32 (IEEE) of the whole request body. */
  crc32: 'x-cairn-crc32',
  /** GET: `firstBlock,start,end,dataBytes`: where the framed body sits in the shard. */
  /** GET: the seed the shard's block CRCs start from (0: none). */
  seed: 'x-cairn-seed',
  framedSpan: 'x-cairn-framed-span',
  /** GET: checksum block size of the shard (4096 for every shard Cairn writes). */
  blockBytes: 'x-cairn-block-bytes',
  /** HEAD: bytes of shard data. */
  dataBytes: 'x-cairn-data-bytes',
} as const;

/**
 * PUT body type of a shard the client framed itself (format.ts: header, then each block with its
 * CRC-32): the node verifies every block and stores the bytes as sent. Any other body is raw
 * shard data and must carry nodeHeaders.crc32; the node frames it.
 */
export const nodeFramedShardType = 'application/vnd.cairn.shard';

/** Largest framed shard a put sends on the binary connection (one frame); larger ones use HTTP. */
const binaryPutBytesMax = journalRequestBytesMax - journalFrameOverheadBytes;
/** Largest framed span a get asks for on the binary connection; a whole shard is tried there too. */
const binaryGetBytesMax = journalResponseBytesMax - journalFrameOverheadBytes;

export const nodeShardsPath = '/v1/shards';
export const nodeHealthPath = '/v1/health';

/** What GET /v1/health answers. */
export interface NodeHealth {
  readonly name: string;
  readonly zone: string;
  readonly capacityBytes: number;
  readonly usedBytes: number;
  /** Requests the node is serving, not counting the health request. */
  readonly requestsInFlight: number;
}

export interface NodeShardStoreOptions {
  /** The node's name, for messages: `node "b-1"`. */
  readonly name: string;
  /** host:port of its shard API, e.g. `127.0.0.1:4101` or `[::1]:4101`. */
  readonly address: string;
  /** Shared secret sent as `authorization: Bearer <secret>` when the node requires one. */
  readonly authSecret?: string;
  readonly timeoutMs?: number;
  readonly concurrency?: number;
  /**
   * host:port of the node's binary connection (its journal server, `journal` in its etcd target
   * record). When set, shard reads and writes that fit one frame go there, pipelined on one
   * persistent connection, instead of one HTTP request each; the rest (HEAD, DELETE, LIST) stay
   * on HTTP.
   */
  readonly journalAddress?: string;
  /**
   * Set when the node speaks TLS (its etcd record says `tls: true`): both the shard API and the
   * binary connection then go over TLS, verifying the node against `tls.ca`.
   */
  readonly tls?: NodeClientTls;
}

/**
 * The one mapping from a node's error answer to a typed error. `code` and `message` come from
 * the JSON body `{code, message}` (the message already names the shard and the node).
 */
export function errorFromStatus(status: number, code: string, message: string): CairnError {
  switch (status) {
    case 400:
      return code === 'EBODYCRC' ? new ChecksumMismatchError(message) : new InvalidArgumentError(message);
    case 401:
      return new AuthRejectedError(message);
    case 404:
      // Any other 404 means the address is not a cairnd shard API.
      return code === 'ENOENT' ? new ShardNotFoundError(message) : new StorageIoError(message);
    case 409:
      return new ShardExistsError(message);
    case 413:
      return new InvalidArgumentError(message);
    case 416:
      return new RangeOutsideError(message);
    case 500:
      return code === 'ECHECKSUM' ? new ChecksumMismatchError(message) : new StorageIoError(message);
    case 503:
      return new UnavailableError(message);
    case 507:
      return new DiskFullError(message);
    default:
      return status >= 500 ? new UnavailableError(message) : new StorageIoError(message);
  }
}

interface Answer {
  readonly status: number;
  readonly headers: IncomingHttpHeaders;
  readonly body: Buffer;
}

interface Call {
  readonly method: 'GET' | 'PUT' | 'HEAD' | 'DELETE';
  readonly path: string;
  /** "Cannot read shard K from": completed with the node and, for connection failures, its address. */
  readonly action: string;
  readonly headers?: Record<string, string>;
  readonly body?: Uint8Array;
  readonly responseBytesMax: number;
}

export class NodeShardStore implements ShardStore {
  readonly description: string;
  readonly name: string;
  readonly address: string;
  private readonly host: string;
  private readonly port: number;
  private readonly authHeader: string | undefined;
  private readonly timeoutMs: number;
  private readonly agent: Agent;
  private readonly tls: NodeClientTls | undefined;
  private readonly queue: PQueue;
  /** The node's binary connection, for shard GET and PUT, when it has one. */
  private readonly binary: JournalNodeClient | undefined;

  constructor(options: NodeShardStoreOptions) {
    const { host, port } = parseHostPort(options.address, `address of node "${options.name}"`);
    this.name = options.name;
    this.address = options.address;
    this.host = host;
    this.port = port;
    this.description = `node "${options.name}"`;
    this.authHeader = options.authSecret === undefined ? undefined : `Bearer ${options.authSecret}`;
    this.timeoutMs = options.timeoutMs ?? nodeRequestTimeoutMsDefault;
    const concurrency = options.concurrency ?? nodeConcurrencyDefault;
    if (!Number.isSafeInteger(this.timeoutMs) || this.timeoutMs <= 0)
      throw new InvalidArgumentError(`Invalid timeout ${this.timeoutMs} ms for ${this.description}`);
    if (!Number.isSafeInteger(concurrency) || concurrency <= 0)
      throw new InvalidArgumentError(`Invalid concurrency ${concurrency} for ${this.description}`);
    this.tls = options.tls;
    const agentOptions = { keepAlive: true, maxSockets: concurrency, timeout: idleSocketMs };
    this.agent =
      options.tls === undefined
        ? new Agent(agentOptions)
        : new HttpsAgent({ ...agentOptions, ...tlsConnectOptions(options.tls, host) });
    this.queue = new PQueue({ concurrency });
    this.binary =
      options.journalAddress === undefined
        ? undefined
        : new JournalNodeClient({
            name: options.name,
            address: options.journalAddress,
            timeoutMs: this.timeoutMs,
            ...(options.authSecret === undefined ? {} : { authSecret: options.authSecret }),
            ...(options.tls === undefined ? {} : { tls: options.tls }),
          });
  }

  capabilities(): ShardStoreCapabilities {
    return { rangeRead: true, atomicCreate: true };
  }

  async put(key: string, data: Uint8Array, options: ShardPutOptions = {}): Promise<void> {
    checkShardKey(key);
    const action = `Cannot store shard ${key} on`;
    if (data.length > nodeShardBytesMax) {
      throw new InvalidArgumentError(
        `${action} ${this.description}: ${data.length} bytes is more than the ${nodeShardBytesMax}-byte shard limit`,
      );
    }
    // Framed here, once: the checksums the node verifies are the ones it stores.
    const size = framedBytes(data.length);
    if (this.binary !== undefined && size <= binaryPutBytesMax) {
      const framed = encodeFrameInto(framePool.take(size), data, options.seed);
      await this.binary.shardPut(key, framed);
      // The node answered after it had every byte: the kernel took them, nothing refers to the
      // buffer now. (After a failure the socket may still hold it: it is left to the collector.)
      framePool.give(framed);
      return;
    }
    const framed = encodeFrame(data, options.seed);
    const answer = await this.call({
      method: 'PUT',
      path: shardPath(key),
      action,
      headers: { 'content-type': nodeFramedShardType },
      body: framed,
      responseBytesMax: 64 * 1024,
    });
    this.expectStatus(answer, 201, action);
  }

  async get(key: string, range?: ByteRange, expect?: ShardExpectation): Promise<Uint8Array> {
    checkShardKey(key);
    const action = `Cannot read shard ${key} from`;
    if (range !== undefined) {
      checkRange(range, Number.MAX_SAFE_INTEGER); // whole, non-negative numbers; the node checks the end
      if (range.length === 0) {
        // HTTP cannot ask for zero bytes (bytes=a-b is inclusive), and there is nothing to verify.
        const stat = await this.head(key);
        if (stat === null) throw new ShardNotFoundError(`${action} ${this.description}: no such shard`);
        checkRange(range, stat.dataBytes);
        return new Uint8Array(0);
      }
    }
    const f = await this.fetchSpan(key, range, action, expect);
    return unframeSpan(f.body, f.expected, f.want, f.shape, f.what);
  }

  async getInto(key: string, range: ByteRange, out: Uint8Array, at: number, expect?: ShardExpectation): Promise<void> {
    if (range.length === 0) {
      await this.get(key, range, expect);
      return;
    }
    checkShardKey(key);
    checkRange(range, Number.MAX_SAFE_INTEGER);
    const f = await this.fetchSpan(key, range, `Cannot read shard ${key} from`, expect);
    unframeSpanInto(f.body, f.expected, f.want, f.shape, f.what, out, at);
  }

  /**
   * The framed blocks of `range` (the whole shard when absent, never empty), from the binary
   * connection or HTTP, with the span they must be: checked against what the node said it sent,
   * and the shape (size, seed) to verify its blocks with: `expect`'s when given, which the
   * node's must then equal, else the node's.
   */
  private async fetchSpan(
    key: string,
    range: ByteRange | undefined,
    action: string,
    expect: ShardExpectation | undefined,
  ): Promise<{
    body: Uint8Array;
    expected: FramedSpan;
    want: ByteRange;
    shape: FrameHeader;
    what: string;
  }> {
    const what = `${action} ${this.description}`;
    let sent: SentSpan;
    let blockBytes: number;
    let body: Uint8Array;
    let got: ShardGetAnswer | undefined;
    if (this.binary !== undefined && (range === undefined || framedBytes(range.length) <= binaryGetBytesMax)) {
      got = await this.binary.shardGet(range === undefined ? { key } : { key, range }).catch((err: unknown) => {
        // A whole shard too large for one frame: the node says so, and HTTP carries it.
        if (err instanceof CairnError && err.code === 'ETOOLARGE') return undefined;
        throw err;
      });
    }
    if (got !== undefined) {
      sent = { firstBlock: got.firstBlock, start: got.start, end: got.end, dataBytes: got.dataBytes, seed: got.seed };
      blockBytes = got.blockBytes;
      body = got.framed;
    } else {
      const headers: Record<string, string> = {};
      if (range !== undefined) headers.range = `bytes=${range.offset}-${range.offset + range.length - 1}`;
      const answer = await this.call({
        method: 'GET',
        path: shardPath(key),
        action,
        headers,
        responseBytesMax: framedBytes(nodeShardBytesMax),
      });
      this.expectStatus(answer, 200, action);
      sent = parseSpanHeader(answer.headers[nodeHeaders.framedSpan], answer.headers[nodeHeaders.seed], what);
      blockBytes = Number(answer.headers[nodeHeaders.blockBytes] ?? checksumBlockBytes);
      body = answer.body;
    }
    if (!Number.isSafeInteger(blockBytes) || blockBytes <= 0)
      throw new ChecksumMismatchError(`${what}: the node sent an invalid block size`);
    const want = range ?? { offset: 0, length: sent.dataBytes };
    // Recompute the span ourselves: the node must have sent exactly the blocks the range needs.
    let expected: FramedSpan;
    try {
      expected = framedSpan(want, sent.dataBytes, blockBytes);
    } catch {
      throw new ChecksumMismatchError(
        `${what}: the node's span does not cover [${want.offset}, ${want.offset + want.length})`,
      );
    }
    if (expected.firstBlock !== sent.firstBlock || expected.start !== sent.start || expected.end !== sent.end) {
      throw new ChecksumMismatchError(
        `${what}: the node sent framed bytes [${sent.start}, ${sent.end}), expected [${expected.start}, ${expected.end})`,
      );
    }
    const stored = { blockBytes, dataBytes: sent.dataBytes, seed: sent.seed };
    checkExpectation(stored, expect, what);
    // Verified with the record's seed, not the node's word for it: the node only says where.
    return { body, expected, want, shape: expectedShape(stored, expect), what };
  }

  async head(key: string): Promise<ShardStat | null> {
    checkShardKey(key);
    const action = `Cannot read shard ${key} from`;
    const answer = await this.call({ method: 'HEAD', path: shardPath(key), action, responseBytesMax: 0 });
    if (answer.status === 404) return null;
    this.expectStatus(answer, 200, action);
    const dataBytes = Number(answer.headers[nodeHeaders.dataBytes]);
    if (!Number.isSafeInteger(dataBytes) || dataBytes < 0) {
      throw new StorageIoError(`${action} ${this.description}: the node sent no valid ${nodeHeaders.dataBytes} header`);
    }
    return { key, dataBytes };
  }

  async delete(key: string): Promise<void> {
    checkShardKey(key);
    const action = `Cannot delete shard ${key} from`;
    const answer = await this.call({ method: 'DELETE', path: shardPath(key), action, responseBytesMax: 64 * 1024 });
    this.expectStatus(answer, 204, action);
  }

  async list(prefix: string, options: { startAfter?: string; limit?: number } = {}): Promise<string[]> {
    checkShardPrefix(prefix);
    const action = `Cannot list shards with prefix "${prefix}" on`;
    const query = new URLSearchParams({ prefix });
    if (options.startAfter !== undefined) query.set('startAfter', options.startAfter);
    if (options.limit !== undefined) query.set('limit', String(Math.min(options.limit, listLimitMax)));
    const answer = await this.call({
      method: 'GET',
      path: `${nodeShardsPath}?${query}`,
      action,
      responseBytesMax: listResponseBytesMax,
    });
    this.expectStatus(answer, 200, action);
    const keys = parseJson(answer.body);
    if (!Array.isArray(keys) || !keys.every((k) => typeof k === 'string')) {
      throw new StorageIoError(`${action} ${this.description}: the node's answer is not a list of keys`);
    }
    return keys as string[];
  }

  /** The node's own view of itself (GET /v1/health, which needs no secret). */
  async health(): Promise<NodeHealth> {
    const action = 'Cannot read the health of';
    const answer = await this.call({ method: 'GET', path: nodeHealthPath, action, responseBytesMax: 64 * 1024 });
    this.expectStatus(answer, 200, action);
    const value = parseJson(answer.body) as Partial<NodeHealth> | undefined;
    if (
      typeof value?.name !== 'string' ||
      typeof value.zone !== 'string' ||
      typeof value.capacityBytes !== 'number' ||
      typeof value.usedBytes !== 'number' ||
      typeof value.requestsInFlight !== 'number'
    ) {
      throw new StorageIoError(`${action} ${this.description}: the answer is not a cairnd health record`);
    }
    return {
      name: value.name,
      zone: value.zone,
      capacityBytes: value.capacityBytes,
      usedBytes: value.usedBytes,
      requestsInFlight: value.requestsInFlight,
    };
  }

  /** Closes idle keep-alive connections; requests still running finish. */
  close(): void {
    this.agent.destroy();
    this.binary?.close();
  }

  // ---------------------------------------------------------------------------------------------

  private expectStatus(answer: Answer, status: number, action: string): void {
    if (answer.status === status) return;
    const body = parseJson(answer.body) as { code?: unknown; message?: unknown } | undefined;
    const code = typeof body?.code === 'string' ? body.code : '';
    const message =
      typeof body?.message === 'string'
        ? body.message
        : `${action} ${this.description}: HTTP ${answer.status} from ${this.address}`;
    throw errorFromStatus(answer.status, code, message);
  }

  private async call(call: Call): Promise<Answer> {
    if (this.queue.size >= queuedMax) {
      throw new UnavailableError(
        `${call.action} ${this.description} at ${this.address}: ${queuedMax} requests already waiting`,
      );
    }
    return this.queue.add(async () => {
      try {
        return await this.send(call);
      } catch (err) {
        // A keep-alive socket the node closed while idle fails at once with ECONNRESET; one
        // retry on a fresh socket is safe (a put that did land shows up as ShardExistsError).
        if (err instanceof StaleSocketError)
          return this.send(call).catch((again: unknown) =>
            Promise.reject(again instanceof StaleSocketError ? again.error : again),
          );
        throw err;
      }
    });
  }

  private send(call: Call): Promise<Answer> {
    const where = `${call.action} ${this.description} at ${this.address}`;
    return new Promise<Answer>((resolve, reject) => {
      const headers: Record<string, string> = { ...call.headers };
      if (this.authHeader !== undefined) headers.authorization = this.authHeader;
      if (call.body !== undefined) headers['content-length'] = String(call.body.length);
      let settled = false;
      const fail = (err: unknown): void => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        reject(err);
      };
      const request = this.tls === undefined ? httpRequest : httpsRequest;
      const req = request(
        { host: this.host, port: this.port, method: call.method, path: call.path, headers, agent: this.agent },
        (res) => {
          const declared = Number(res.headers['content-length'] ?? 0);
          if (call.method !== 'HEAD' && declared > Math.max(call.responseBytesMax, 64 * 1024)) {
            res.destroy();
            fail(new StorageIoError(`${where}: the answer of ${declared} bytes is larger than any valid one`));
            return;
          }
          const chunks: Buffer[] = [];
          let received = 0;
          res.on('data', (chunk: Buffer) => {
            received += chunk.length;
            if (received > Math.max(call.responseBytesMax, 64 * 1024)) {
              res.destroy();
              fail(new StorageIoError(`${where}: the answer is larger than any valid one`));
              return;
            }
            chunks.push(chunk);
          });
          res.on('error', (err) => fail(transportError(where, err, this.tls)));
          res.on('close', () => {
            if (!res.complete) fail(new UnavailableError(`${where}: the connection closed mid-answer`));
          });
          res.on('end', () => {
            if (settled) return;
            settled = true;
            clearTimeout(timer);
            resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks, received) });
          });
        },
      );
      const timer = setTimeout(() => {
        req.destroy();
        fail(new UnavailableError(`${where}: no answer within ${this.timeoutMs} ms`));
      }, this.timeoutMs);
      req.on('error', (err) => {
        const wrapped = transportError(where, err, this.tls);
        fail(
          req.reusedSocket && errnoOf(err) === 'ECONNRESET' && wrapped instanceof UnavailableError
            ? new StaleSocketError(wrapped)
            : wrapped,
        );
      });
      if (call.body !== undefined) req.end(call.body);
      else req.end();
    });
  }
}

function shardPath(key: string): string {
  // Keys hold only [A-Za-z0-9._/-] (checked before this), so they go into the path unescaped.
  return `${nodeShardsPath}/${key}`;
}

/**
 * The node's `firstBlock,start,end,dataBytes` header and its seed header (in a header of its own,
 * so clients from before seeds still parse the span; a node from before seeds sends none: 0).
 */
function parseSpanHeader(
  value: string | string[] | undefined,
  seedText: string | string[] | undefined,
  what: string,
): SentSpan {
  const parts = typeof value === 'string' ? value.split(',').map(Number) : [];
  const [firstBlock, start, end, dataBytes] = parts;
  const seed = seedText === undefined ? 0 : Number(seedText);
  if (
    parts.length !== 4 ||
    !parts.every((n) => Number.isSafeInteger(n) && n >= 0) ||
    !Number.isInteger(seed) ||
    seed < 0 ||
    seed >= 2 ** 32 ||
    firstBlock === undefined ||
    start === undefined ||
    end === undefined ||
    dataBytes === undefined
  ) {
    throw new ChecksumMismatchError(`${what}: the node sent no valid ${nodeHeaders.framedSpan} header`);
  }
  return { firstBlock, start, end, dataBytes, seed };
}

/** What the node says it sent: the span, and the size and seed of the shard it came from. */
type SentSpan = FramedSpan & { dataBytes: number; seed: number };

function parseJson(body: Buffer): unknown {
  try {
    return JSON.parse(body.toString('utf8'));
  } catch {
    return undefined;
  }
}

/** A request failed on a reused keep-alive socket before any answer: worth one retry. */
class StaleSocketError extends Error {
  constructor(readonly error: UnavailableError) {
    super(error.message);
  }
}
