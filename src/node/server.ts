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
 * (a bug) still does. A body whose CRC does not match is refused and nothing is stored.
 *
 * Bounded against hostile or broken clients (limits.ts names each bound): bodies per request
 * (the largest shard), in total and per client (the PUT budget, shared with the journal
 * server), and in time (a minimum rate per window, else 408); connections in total and per
 * client (refused with a 503 and a log line); idle connections and connections whose client
 * stopped reading (closed after the idle timeout); GET bodies held in memory, in total and per
 * client (the response budget). A connection's requests run one at a time, in order, so a
 * client pipelining requests it never reads holds one response; past
 * nodeConnectionRequestsQueuedMax waiting requests the node stops reading it, and past
 * nodeConnectionRequestsPipelinedMax it closes it. Every request
 * counted in flight is uncounted exactly once: when its response closes or its connection does
 * (a queued pipelined response never closes on its own when the connection goes).
 *
 * What it leaves out: TLS, and streaming bodies to disk (a shard is written whole, framed).
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer, type Server as HttpsServer } from 'node:https';
import type { TLSSocket } from 'node:tls';
import type { AddressInfo, Socket } from 'node:net';
import { performance } from 'node:perf_hooks';
import {
  AssertionError,
  CairnError,
  ChecksumMismatchError,
  InvalidArgumentError,
  ShardExistsError,
  ShardNotFoundError,
  StorageIoError,
  UnavailableError,
  DiskFullError,
  assert,
  RangeOutsideError,
  crc32Of,
  bearerMatches,
  errorMessage,
  tlsServerOptions,
  type ByteRange,
  type ServerTls,
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

import { ClientBudget, LimitLog, clientOf } from './client_limits.js';
import { TlsRefusalLog, clientCertProblem } from './tls.js';
import {
  checkNodeLimits,
  nodeConnectionRequestsPipelinedMax,
  nodeConnectionRequestsQueuedMax,
  type NodeLimitName,
  type NodeLimits,
} from './limits.js';

/**
 * Headers of a request must arrive within this (Node's own check); bodies are bounded by rate
 * instead (NodeLimits.bodyRateMinBytesPerS), since a 64 MiB body on a slow link may need minutes.
 */
const headersTimeoutMs = 60_000;

/** A protocol-level failure with its own status (route, method, missing header). */
class HttpError extends CairnError {
  constructor(
    readonly status: number,
    code: string,
    message: string,
    /** True when a limit refused the request: its LimitLog line stands for the usual error line. */
    readonly byLimit = false,
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
  /**
   * When set the server speaks HTTPS only; with `tls.ca` every /v1/shards request must come on
   * a connection whose client certificate the CA signed (else 401). Combines with authSecret.
   */
  readonly tls?: ServerTls;
  /** When set, GET /v1/health needs `authorization: Bearer <token>` (--metrics-token-file). */
  readonly healthToken?: string;
  /** One line per error (without a trailing newline). */
  readonly log: (line: string) => void;
  /** Bounds against clients; each absent field takes its default from limits.ts. */
  readonly limits?: Partial<NodeLimits>;
  /**
   * The node's PUT budget, when the journal server shares it (see sharedPutBudget); otherwise
   * this server makes its own from `limits`.
   */
  readonly putBudget?: ClientBudget;
  /** Told about every request once its response is finished or its connection closed (metrics). */
  readonly onRequestDone?: (done: ShardRequestDone) => void;
  /** Told every time a limit refuses or cuts a client (metrics); the log line is rate-limited. */
  readonly onLimit?: (limit: NodeLimitName) => void;
}

/** What a ShardServer holds now (metrics and tests). */
export interface ShardServerStats {
  readonly connections: number;
  readonly requestsInFlight: number;
  readonly putBytesInFlight: number;
  readonly responseBytesInFlight: number;
}

/** One PUT budget for a node's two servers, so HTTP and journal shard bodies count together. */
export function sharedPutBudget(limits: Partial<NodeLimits> = {}): ClientBudget {
  const full = checkNodeLimits(limits);
  return new ClientBudget(full.putBytesMax, full.putBytesPerClientMax);
}

/**
 * One request on a connection, from the moment its headers arrive until its response closes or
 * its connection does. `run` starts it; `release` uncounts it (idempotent) and runs `cleanups`.
 */
interface RequestSlot {
  readonly res: ServerResponse;
  readonly run: () => void;
  readonly release: () => void;
  readonly cleanups: (() => void)[];
  started: boolean;
}

/** One admitted connection: its client and its requests, the first running, the rest waiting. */
interface HttpConnection {
  readonly socket: Socket;
  readonly client: string;
  readonly slots: RequestSlot[];
  /** True while this server has stopped reading the socket (too many requests waiting). */
  paused: boolean;
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
  private readonly server: Server | HttpsServer;
  private readonly clientCa: boolean;
  private readonly healthToken: string | undefined;
  private readonly store: FileShardStore;
  private readonly name: string;
  private readonly zone: string;
  private readonly log: (line: string) => void;
  private readonly onRequestDone: ((done: ShardRequestDone) => void) | undefined;
  /** Body bytes of GET answers, for onRequestDone (headers given to writeHead cannot be read back). */
  private readonly bodyBytesSent = new WeakMap<ServerResponse, number>();
  private readonly authSecret: string | undefined;
  private readonly limits: NodeLimits;
  private readonly putBudget: ClientBudget;
  private readonly responseBudget: ClientBudget;
  private readonly connectionCount: ClientBudget;
  private readonly connections = new Map<Socket, HttpConnection>();
  /** Sockets refused at the connection cap: their 503 is on its way, any request on them is dropped. */
  private readonly refused = new WeakSet<Socket>();
  private readonly limitLog: LimitLog;
  private requestsInFlight = 0;
  private draining = false;
  private idle: (() => void) | undefined;

  constructor(options: ShardServerOptions) {
    this.store = options.store;
    this.name = options.name;
    this.zone = options.zone;
    this.log = options.log;
    this.onRequestDone = options.onRequestDone;
    this.authSecret = options.authSecret;
    this.limits = checkNodeLimits(options.limits);
    this.putBudget = options.putBudget ?? sharedPutBudget(this.limits);
    this.responseBudget = new ClientBudget(this.limits.responseBytesMax, this.limits.responseBytesPerClientMax);
    this.connectionCount = new ClientBudget(this.limits.connectionsMax, this.limits.connectionsPerClientMax);
    this.limitLog = new LimitLog((line) => this.log(`node "${this.name}": ${line}`), options.onLimit);
    const httpOptions = {
      keepAliveTimeout: this.limits.idleTimeoutMs,
      headersTimeout: Math.min(headersTimeoutMs, this.limits.idleTimeoutMs),
      // Bodies are bounded by their rate (readBody), not by one deadline for every size.
      requestTimeout: 0,
    };
    const handler = (req: IncomingMessage, res: ServerResponse): void => this.serve(req, res);
    this.clientCa = options.tls?.ca !== undefined;
    this.healthToken = options.healthToken;
    if (options.tls === undefined) {
      this.server = createServer(httpOptions, handler);
      this.server.on('connection', (socket: Socket) => this.accept(socket));
    } else {
      // The handshake finishes without a client certificate so /v1/health answers probes;
      // authenticate() refuses /v1/shards to a connection without a verified one.
      const server = createHttpsServer({ ...httpOptions, ...tlsServerOptions(options.tls, false) }, handler);
      const refusals = new TlsRefusalLog(`node "${this.name}"`, this.log);
      server.on('tlsClientError', (err: Error, socket: TLSSocket) => refusals.note(err, socket));
      // Counted once the handshake is done: node:http's own listener is on the same event.
      server.on('secureConnection', (socket: TLSSocket) => this.accept(socket));
      this.server = server;
    }
    // Every connection gets the idle timeout; onTimeout decides what inactivity means.
    this.server.timeout = this.limits.idleTimeoutMs;
    this.server.on('timeout', (socket: Socket) => this.onTimeout(socket));
  }

  /** What this server holds now. */
  stats(): ShardServerStats {
    return {
      connections: this.connectionCount.inUse,
      requestsInFlight: this.requestsInFlight,
      putBytesInFlight: this.putBudget.inUse,
      responseBytesInFlight: this.responseBudget.inUse,
    };
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

  /**
   * Admits a connection, or refuses it at the cap with a 503 (retryable) and closes it. Runs
   * after node:http's own listener, so a refused socket is remembered and its requests dropped.
   */
  private accept(socket: Socket): void {
    const client = clientOf(socket);
    const refusal = this.connectionCount.take(client, 1);
    if (refusal !== undefined) {
      this.refused.add(socket);
      const limit: NodeLimitName = refusal === 'client' ? 'connections_per_client' : 'connections';
      const cap = refusal === 'client' ? this.limits.connectionsPerClientMax : this.limits.connectionsMax;
      const message = `node "${this.name}" has ${refusal === 'client' ? `${cap} connections from ${client}` : `${cap} connections`} open, its limit; retry later`;
      this.limitLog.hit(
        limit,
        `refused a connection from ${client}: ${cap} ${refusal === 'client' ? 'from that client' : 'in total'} are open`,
      );
      const body = JSON.stringify({ code: 'EBUSY', message });
      socket.on('error', () => undefined);
      socket.end(
        `HTTP/1.1 503 Service Unavailable\r\nconnection: close\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\n\r\n${body}`,
      );
      socket.destroySoon();
      return;
    }
    const connection: HttpConnection = { socket, client, slots: [], paused: false };
    this.connections.set(socket, connection);
    socket.once('close', () => {
      this.connections.delete(socket);
      this.connectionCount.give(client, 1);
      // Responses still queued behind others never close on their own: uncount them here.
      for (const slot of [...connection.slots]) slot.release();
    });
  }

  /**
   * A connection moved no bytes for the idle timeout. Closed when it has no request (idle) or
   * when its running request's response is written and not taken (its client stopped reading);
   * left alone while the node itself is working on its request or a body is arriving (bodies
   * have their own rate bound).
   */
  private onTimeout(socket: Socket): void {
    const connection = this.connections.get(socket);
    const head = connection?.slots[0];
    if (connection === undefined || head === undefined) {
      if (connection !== undefined)
        this.limitLog.hit(
          'idle',
          `closed a connection from ${connection.client} idle for ${this.limits.idleTimeoutMs} ms`,
        );
      socket.destroy();
      return;
    }
    if (head.res.writableEnded && !head.res.writableFinished) {
      this.limitLog.hit(
        'unread_responses',
        `closed a connection from ${connection.client} that read none of its response for ${this.limits.idleTimeoutMs} ms`,
      );
      socket.destroy();
    }
  }

  /**
   * Queues a request on its connection: it runs once those before it have finished, so one
   * connection holds at most one response in memory. Too many waiting stop reading the socket.
   */
  private serve(req: IncomingMessage, res: ServerResponse): void {
    const socket = req.socket;
    const connection = this.connections.get(socket);
    if (connection === undefined || this.refused.has(socket)) {
      res.destroy();
      return;
    }
    this.requestsInFlight += 1;
    const method = req.method ?? '';
    const url = req.url ?? '';
    const startedMs = performance.now();
    let released = false;
    const slot: RequestSlot = {
      res,
      started: false,
      cleanups: [],
      run: () => {
        slot.started = true;
        void this.handle(req, res, method, url, connection.client, slot);
      },
      release: () => {
        if (released) return;
        released = true;
        for (const cleanup of slot.cleanups) cleanup();
        this.requestsInFlight -= 1;
        assert(this.requestsInFlight >= 0, 'requests in flight went negative');
        const at = connection.slots.indexOf(slot);
        if (at !== -1) connection.slots.splice(at, 1);
        if (this.requestsInFlight === 0) this.idle?.();
        this.reportDone(method, url, req, res, startedMs);
        this.next(connection);
      },
    };
    res.once('close', slot.release);
    connection.slots.push(slot);
    if (connection.slots.length > nodeConnectionRequestsPipelinedMax) {
      this.limitLog.hit(
        'pipelined_requests',
        `closed a connection from ${connection.client} with more than ${nodeConnectionRequestsPipelinedMax} requests waiting`,
      );
      socket.destroy();
      return;
    }
    if (connection.slots.length > nodeConnectionRequestsQueuedMax && !connection.paused) {
      connection.paused = true;
      socket.pause();
    }
    this.next(connection);
  }

  /** Starts the connection's first request if it is waiting; reads the socket again when few wait. */
  private next(connection: HttpConnection): void {
    const head = connection.slots[0];
    if (head !== undefined && !head.started && !connection.socket.destroyed) head.run();
    if (connection.paused && connection.slots.length <= nodeConnectionRequestsQueuedMax / 2) {
      connection.paused = false;
      // node:http pauses the socket itself when its own write queue is long; it resumes it then.
      if ((connection.socket as Socket & { _paused?: boolean })._paused !== true) connection.socket.resume();
    }
  }

  private async handle(
    req: IncomingMessage,
    res: ServerResponse,
    method: string,
    url: string,
    client: string,
    slot: RequestSlot,
  ): Promise<void> {
    try {
      if (this.draining) {
        res.setHeader('connection', 'close');
        throw new HttpError(503, 'EUNAVAILABLE', `node "${this.name}" is shutting down`);
      }
      await this.route(method, url, req, res, client, slot);
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
      if (!(method === 'HEAD' && status === 404) && !(err instanceof HttpError && err.byLimit))
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

  private async route(
    method: string,
    url: string,
    req: IncomingMessage,
    res: ServerResponse,
    client: string,
    slot: RequestSlot,
  ): Promise<void> {
    const queryAt = url.indexOf('?');
    const path = queryAt === -1 ? url : url.slice(0, queryAt);
    const query = queryAt === -1 ? '' : url.slice(queryAt + 1);
    if (path === nodeHealthPath) {
      if (method !== 'GET' && method !== 'HEAD')
        throw new HttpError(405, 'EMETHOD', `${method} is not allowed on ${path}`);
      if (this.healthToken !== undefined && !bearerMatches(req.headers.authorization, this.healthToken))
        throw new HttpError(401, 'EAUTH', `node "${this.name}" refused ${path}: no or wrong bearer token`);
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
          return this.put(key, req, res, client);
        case 'GET':
          return this.get(key, req, res, client, slot);
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
    if (this.clientCa) {
      const problem = clientCertProblem(req.socket as TLSSocket);
      if (problem !== undefined)
        throw new HttpError(
          401,
          'EAUTH',
          `node "${this.name}" refused the request: ${problem}; present a certificate signed by the cluster CA (CAIRN_NODE_CERT and CAIRN_NODE_KEY)`,
        );
    }
    if (this.authSecret === undefined) return;
    const header = req.headers.authorization ?? '';
    // The scheme is case-insensitive (RFC 9110 11.1); the secret is not.
    if (!bearerMatches(header, this.authSecret)) {
      throw new HttpError(
        401,
        'EAUTH',
        `node "${this.name}" refused the request: ${header === '' ? 'no' : 'wrong'} shared secret`,
      );
    }
  }

  private async put(key: string, req: IncomingMessage, res: ServerResponse, client: string): Promise<void> {
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
    this.take(this.putBudget, client, length, 'put_bytes', `${what}: node "${this.name}" is receiving too much`);
    try {
      const body = await readBody(req, length, what, this.limits);
      if (body === 'slow') {
        const line = `${what}: the body came slower than ${this.limits.bodyRateMinBytesPerS} bytes/s over ${this.limits.bodyRateWindowMs} ms; aborted`;
        this.limitLog.hit('slow_body', `${line} (client ${client})`);
        throw new HttpError(408, 'ESLOWBODY', line, true);
      }
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
      this.putBudget.give(client, length);
    }
    res.writeHead(201, { 'content-length': 0 }).end();
  }

  /**
   * Takes `bytes` from `budget` for `client`, or refuses the request with 503 (retryable) and
   * says which limit bit: the node's whole budget or the client's share of it.
   */
  private take(
    budget: ClientBudget,
    client: string,
    bytes: number,
    limit: 'put_bytes' | 'response_bytes',
    what: string,
  ): void {
    const refusal = budget.take(client, bytes);
    if (refusal === undefined) return;
    const name: NodeLimitName = refusal === 'client' ? `${limit}_per_client` : limit;
    const line =
      refusal === 'client'
        ? `${what}: client ${client} already holds ${budget.usedBy(client)} of its ${budget.perClientMax}-byte share; retry`
        : `${what}: ${budget.inUse} of ${budget.max} bytes are in flight; retry`;
    this.limitLog.hit(name, line);
    throw new HttpError(503, 'EBUSY', line, true);
  }

  private async get(
    key: string,
    req: IncomingMessage,
    res: ServerResponse,
    client: string,
    slot: RequestSlot,
  ): Promise<void> {
    const rangeText = req.headers.range;
    const range = rangeText === undefined ? undefined : parseRange(rangeText, key, this.name);
    // The answer is counted from before it is read until the kernel has taken it (the slot's release).
    const read = await this.store.getFramed(key, range, (framedBytes) => {
      this.take(
        this.responseBudget,
        client,
        framedBytes,
        'response_bytes',
        `Cannot read shard ${key} from node "${this.name}": it is sending too much`,
      );
      slot.cleanups.push(() => this.responseBudget.give(client, framedBytes));
    });
    res.writeHead(200, {
      'content-type': 'application/octet-stream',
      'content-length': read.framed.length,
      [nodeHeaders.framedSpan]: `${read.span.firstBlock},${read.span.start},${read.span.end},${read.header.dataBytes}`,
      [nodeHeaders.seed]: String(read.header.seed),
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

/**
 * Reads exactly `length` body bytes into one buffer; Node's parser enforces Content-Length.
 * Resolves 'slow' (and stops reading) when a window of `bodyRateWindowMs` brings fewer than
 * `bodyRateMinBytesPerS` bytes a second and the body is not complete: the caller answers 408.
 */
function readBody(
  req: IncomingMessage,
  length: number,
  what: string,
  limits: Pick<NodeLimits, 'bodyRateMinBytesPerS' | 'bodyRateWindowMs'>,
): Promise<Buffer | 'slow'> {
  return new Promise((resolve, reject) => {
    const body = Buffer.allocUnsafe(length);
    let received = 0;
    // Worked example: 64 KiB/s over a 10 s window asks 640 KiB of every window (or the rest).
    const perWindow = Math.ceil((limits.bodyRateMinBytesPerS * limits.bodyRateWindowMs) / 1000);
    let receivedAtCheck = 0;
    const timer = setInterval(() => {
      if (received - receivedAtCheck < Math.min(perWindow, length - receivedAtCheck)) {
        clearInterval(timer);
        req.removeAllListeners('data');
        req.pause();
        resolve('slow');
        return;
      }
      receivedAtCheck = received;
    }, limits.bodyRateWindowMs);
    timer.unref();
    const settle = (): void => clearInterval(timer);
    req.on('data', (chunk: Buffer) => {
      if (received + chunk.length > length) {
        settle();
        req.destroy();
        reject(new HttpError(413, 'ETOOLARGE', `${what}: the body is longer than its Content-Length`));
        return;
      }
      chunk.copy(body, received);
      received += chunk.length;
    });
    req.on('end', () => {
      settle();
      if (received === length) resolve(body);
      else reject(new InvalidArgumentError(`${what}: the body ended after ${received} of ${length} bytes`));
    });
    req.on('error', (err) => {
      settle();
      reject(new InvalidArgumentError(`${what}: the body could not be read: ${errorMessage(err)}`, { cause: err }));
    });
    req.on('close', () => {
      settle();
      if (received < length)
        reject(
          new InvalidArgumentError(`${what}: the client closed the connection after ${received} of ${length} bytes`),
        );
    });
  });
}
