/**
 * The metrics endpoint: a plain HTTP server answering `GET /metrics` with the Prometheus text
 * exposition of one MetricsSource. It listens on its own address (`--metrics-listen`), apart
 * from the shard API and NBD ports, so it needs no shared secret and can be exposed to a
 * Prometheus on another network than the data.
 *
 * What it keeps true: a scrape never throws out of the server: a failing source answers 500 with
 * the reason (logged once per failure). Only GET and HEAD of /metrics are served; anything else
 * is 404 or 405. close() stops accepting and drops open keep-alive connections.
 *
 * What it leaves out: TLS and authentication (bind it to a private address), push gateways.
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { StorageIoError, errorMessage } from '../core/index.js';
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
}

/**
 * Starts serving `source` on host:port. Throws StorageIoError when the address cannot be bound.
 * @example
 * const server = await serveMetrics(metrics, { host: '127.0.0.1', port: 9464 });
 * // curl http://127.0.0.1:9464/metrics
 * await server.close();
 */
export async function serveMetrics(source: MetricsSource, options: ServeMetricsOptions): Promise<MetricsServer> {
  const log = options.log ?? (() => undefined);
  const server: Server = createServer((req, res) => {
    const path = (req.url ?? '').split('?')[0];
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
  });
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
