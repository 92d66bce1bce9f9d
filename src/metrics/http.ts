/**
 * The metrics endpoint: an HTTP (or, with `tls`, HTTPS) server answering `GET /metrics` with the
 * Prometheus text exposition of one MetricsSource. It listens on its own address
 * (`--metrics-listen`), apart from the shard API and NBD ports, so it can be exposed to a
 * Prometheus on another network than the data; with `token` a scrape must send
 * `authorization: Bearer <token>` (Prometheus' `authorization.credentials_file`), else 401.
 *
 * What it keeps true: a scrape never throws out of the server: a failing source answers 500 with
 * the reason (logged once per failure). Only GET and HEAD of /metrics are served; anything else
 * is 404 or 405. close() stops accepting and drops open keep-alive connections.
 *
 * What it leaves out: per-scraper identities (one token for all), push gateways.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import { readFileSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import {
  InvalidArgumentError,
  StorageIoError,
  bearerMatches,
  errorMessage,
  tlsServerOptions,
  type ServerTls,
} from '../core/index.js';
import type { MetricsSource } from './registry.js';

export const metricsPath = '/metrics';

export interface MetricsServer {
  /** host:port it listens on (port 0 picked one). */
  readonly address: string;
  readonly port: number;
  close(): Promise<void>;
}

export interface ServeMetricsOptions {
  readonly host: string;
  /** 0 picks a free port. */
  readonly port: number;
  /** One line per failed scrape. */
  readonly log?: (line: string) => void;
  /**
   * Serve HTTPS only; with `tls.ca`, scrapers must present a certificate it signed. Absent: the
   * files CAIRN_METRICS_TLS_CERT and CAIRN_METRICS_TLS_KEY (and CAIRN_METRICS_TLS_CA) name, if
   * set, else plain HTTP.
   */
  readonly tls?: ServerTls;
  /**
   * Bearer token every scrape must send. Absent: the one in the file CAIRN_METRICS_TOKEN_FILE
   * names, if set (so every process that serves metrics honours it), else none.
   */
  readonly token?: string;
}

/** A token shorter than this is guessable. */
const metricsTokenCharsMin = 16;

/**
 * The metrics token in `path` (one line; a trailing newline dropped), `source` naming where the
 * path came from in errors. Throws InvalidArgumentError when unreadable, short or not printable.
 */
export function readMetricsToken(path: string, source: string): string {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw new InvalidArgumentError(`Cannot read ${source}: ${errorMessage(err)}`);
  }
  const token = text.replace(/[\r\n]+$/, '');
  if (token.length < metricsTokenCharsMin || !/^[\x21-\x7e]+$/.test(token))
    throw new InvalidArgumentError(
      `Invalid token in ${source}: use one line of at least ${metricsTokenCharsMin} printable ASCII characters without spaces`,
    );
  return token;
}

/** The TLS material CAIRN_METRICS_TLS_CERT, _KEY and _CA name, or undefined when none is set. */
export function metricsTlsFromEnv(env: NodeJS.ProcessEnv = process.env): ServerTls | undefined {
  const named = (name: string): { path: string; source: string } | undefined => {
    const path = env[name];
    return path === undefined || path === '' ? undefined : { path, source: `${name} ${path}` };
  };
  const cert = named('CAIRN_METRICS_TLS_CERT');
  const key = named('CAIRN_METRICS_TLS_KEY');
  const ca = named('CAIRN_METRICS_TLS_CA');
  if (cert === undefined && key === undefined && ca === undefined) return undefined;
  if (cert === undefined || key === undefined)
    throw new InvalidArgumentError('Metrics TLS needs both CAIRN_METRICS_TLS_CERT and CAIRN_METRICS_TLS_KEY');
  const read = (f: { path: string; source: string }): Buffer => {
    try {
      return readFileSync(f.path);
    } catch (err) {
      throw new InvalidArgumentError(`Cannot read ${f.source}: ${errorMessage(err)}`);
    }
  };
  return { cert: read(cert), key: read(key), ...(ca === undefined ? {} : { ca: read(ca) }) };
}

/** The token CAIRN_METRICS_TOKEN_FILE gives, or undefined when it is not set. */
export function metricsTokenFromEnv(env: NodeJS.ProcessEnv = process.env): string | undefined {
  const path = env['CAIRN_METRICS_TOKEN_FILE'];
  return path === undefined || path === '' ? undefined : readMetricsToken(path, `CAIRN_METRICS_TOKEN_FILE ${path}`);
}

/**
 * Starts serving `source` on host:port. Throws StorageIoError when the address cannot be bound.
 * @example
 * const server = await serveMetrics(metrics, { host: '127.0.0.1', port: 9464, token });
 * // curl -H "authorization: Bearer $TOKEN" http://127.0.0.1:9464/metrics
 * await server.close();
 */
export async function serveMetrics(source: MetricsSource, options: ServeMetricsOptions): Promise<MetricsServer> {
  const log = options.log ?? (() => undefined);
  const token = options.token ?? metricsTokenFromEnv();
  const tls = options.tls ?? metricsTlsFromEnv();
  const handler = (req: IncomingMessage, res: ServerResponse): void => {
    const path = (req.url ?? '').split('?')[0];
    if (token !== undefined && !bearerMatches(req.headers.authorization, token)) {
      res
        .writeHead(401, { 'content-type': 'text/plain', 'www-authenticate': 'Bearer' })
        .end('No or wrong bearer token: send authorization: Bearer <token>\n');
      return;
    }
    if (path !== metricsPath) {
      res.writeHead(404, { 'content-type': 'text/plain' }).end(`Not found; metrics are at ${metricsPath}\n`);
      return;
    }
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { 'content-type': 'text/plain', allow: 'GET, HEAD' }).end(`${req.method} is not allowed\n`);
      return;
    }
    source.text().then(
      (text) => {
        res.writeHead(200, { 'content-type': source.contentType, 'content-length': Buffer.byteLength(text) });
        res.end(req.method === 'HEAD' ? undefined : text);
      },
      (err: unknown) => {
        const message = `Cannot render metrics: ${errorMessage(err)}`;
        log(message);
        res.writeHead(500, { 'content-type': 'text/plain' }).end(`${message}\n`);
      },
    );
  };
  const server: Server =
    tls === undefined
      ? createServer(handler)
      : (createHttpsServer(tlsServerOptions(tls, true), handler) as unknown as Server);
  const shown = (port: number): string =>
    options.host.includes(':') ? `[${options.host}]:${port}` : `${options.host}:${port}`;
  await new Promise<void>((resolve, reject) => {
    const onError = (err: Error): void =>
      reject(
        new StorageIoError(`Cannot serve metrics on ${shown(options.port)}: ${errorMessage(err)}`, { cause: err }),
      );
    server.once('error', onError);
    server.listen(options.port, options.host, () => {
      server.off('error', onError);
      resolve();
    });
  });
  server.on('error', (err) => log(`metrics endpoint: ${errorMessage(err)}`));
  const port = (server.address() as AddressInfo).port;
  return {
    address: shown(port),
    port,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
