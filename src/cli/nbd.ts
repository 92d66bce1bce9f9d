/**
 * `cairnctl nbd serve`: the frontend process. Serves every volume as an NBD export of the same
 * name, over TCP and/or a Unix socket, until SIGTERM or SIGINT; then stops accepting, flushes
 * every volume's cache and releases its lock. Logs are JSON lines on stderr (src/metrics/log.ts);
 * with --metrics-listen it serves Prometheus metrics (docs/metrics.md).
 */
import type { Argv } from 'yargs';
import { hostname } from 'node:os';
import { rmSync } from 'node:fs';
import { InvalidArgumentError, errorMessage, parseSize } from '../core/index.js';
import { VolumeFrontend, readTopology } from '../api/index.js';
import { createFrontendMetrics, createLogger, serveMetrics, type FrontendMetrics } from '../metrics/index.js';
import { CodecPool } from '../codec/index.js';
import { NbdServer } from '../nbd/index.js';
import { parseHostPort } from '../shard/index.js';
import { clusterOptions, endpointsFrom, stringArg } from './common.js';
import { type CliContext, withErrors } from './context.js';
import { EtcdMeta } from '../meta/index.js';

export function nbdCommand(ctx: CliContext) {
  return {
    command: 'nbd <action>',
    describe: 'Serve volumes over NBD (the frontend)',
    builder: (y: Argv) =>
      y
        .command({
          command: 'serve',
          describe: 'Serve every volume as an NBD export named after it, until SIGTERM',
          builder: (a: Argv) =>
            clusterOptions(a)
              .option('listen', {
                type: 'string',
                describe: 'TCP HOST:PORT (default 127.0.0.1:10809 when no --socket)',
              })
              .option('socket', { type: 'string', describe: 'Unix socket path' })
              .option('read-only', { type: 'boolean', default: false, describe: 'serve every volume read-only' })
              .option('force-takeover', {
                type: 'boolean',
                default: false,
                describe: 'take volumes over from another frontend at once (fences it)',
              })
              .option('lock-wait', {
                type: 'number',
                default: 12_000,
                describe: "ms to wait for another frontend's lock to expire before refusing a volume",
              })
              .option('cache-size', { type: 'string', default: '512MiB', describe: 'cache per volume (clean + dirty)' })
              .option('dirty-max', {
                type: 'string',
                default: '256MiB',
                describe: 'dirty bytes per volume before writers wait for a flush',
              })
              .option('flush-age', {
                type: 'number',
                default: 5000,
                describe: 'ms after which dirty data is flushed in the background',
              })
              .option('threads', { type: 'number', describe: 'codec worker threads (default: cores)' })
              .option('metrics-listen', {
                type: 'string',
                describe: 'HOST:PORT serving Prometheus metrics at /metrics (default: off)',
              })
              .example('$0 nbd serve --listen 0.0.0.0:10809', 'then: nbdinfo nbd://HOST:10809/VOLUME'),
          handler: withErrors(ctx, async (argv) => {
            const listen =
              argv['listen'] === undefined
                ? argv['socket'] === undefined
                  ? '127.0.0.1:10809'
                  : undefined
                : String(argv['listen']);
            const tcp = listen === undefined ? undefined : parseHostPort(listen, '--listen address');
            const socket = argv['socket'] === undefined ? undefined : String(argv['socket']);
            const dirtyBytesMax = parseSize(stringArg(argv, 'dirty-max'), '--dirty-max');
            const cacheBytesMax = parseSize(stringArg(argv, 'cache-size'), '--cache-size');
            if (cacheBytesMax < dirtyBytesMax)
              throw new InvalidArgumentError('--cache-size must be at least --dirty-max');
            const metricsListen =
              argv['metrics-listen'] === undefined
                ? undefined
                : parseHostPort(String(argv['metrics-listen']), '--metrics-listen address');
            const logger = createLogger({ name: 'cairnctl-nbd', write: (line) => ctx.io.err(line) });
            const log = logger.line;
            const metrics =
              metricsListen === undefined
                ? undefined
                : createFrontendMetrics({
                    onError: (what, err) => logger.warn(`metrics: ${what} failed: ${errorMessage(err)}`),
                  });
            const meta = new EtcdMeta(endpointsFrom(argv), { timeoutMs: Number(argv['etcd-timeout']) });
            await meta.requireCluster();
            const pool = await CodecPool.start(
              argv['threads'] === undefined ? {} : { threads: Number(argv['threads']) },
            );
            const frontend = new VolumeFrontend({
              meta,
              pool,
              secrets: ctx.secrets,
              owner: `${hostname()}/${process.pid}`,
              readOnly: Boolean(argv['read-only']),
              forceTakeover: Boolean(argv['force-takeover']),
              lockWaitMs: Number(argv['lock-wait']),
              cache: { dirtyBytesMax, cacheBytesMax, flushAgeMs: Number(argv['flush-age']) },
              log,
              ...(metrics === undefined ? {} : { onFlush: (volume, extents) => metrics.flush(volume, extents) }),
            });
            const server = new NbdServer({
              provider: frontend,
              readOnly: Boolean(argv['read-only']),
              log,
              ...(metrics === undefined ? {} : { onRequest: (command, bytes) => metrics.nbdRequest(command, bytes) }),
            });
            const where: string[] = [];
            if (tcp !== undefined) {
              await server.listenTcp(tcp.host, tcp.port);
              where.push(`nbd://${listen}`);
            }
            if (socket !== undefined) {
              // listenUnix replaces a stale socket file but refuses one a live server holds.
              await server.listenUnix(socket);
              where.push(`nbd+unix:///VOLUME?socket=${socket}`);
            }
            const metricsServer =
              metrics === undefined || metricsListen === undefined
                ? undefined
                : await serveFrontendMetrics(metrics, metricsListen, { meta, frontend, server, log }).catch(
                    async (err: unknown) => {
                      await server.close();
                      await frontend.close();
                      await pool.close();
                      meta.close();
                      throw err;
                    },
                  );
            ctx.io.out(`cairnctl serving NBD on ${where.join(' and ')} (pid ${process.pid})`);
            if (metricsServer !== undefined)
              logger.info(`metrics on http://${metricsServer.address}/metrics`, { metrics: metricsServer.address });
            await new Promise<void>((resolve) => {
              const stop = (signal: string) => {
                log(`${signal}: stopping; flushing every volume`);
                resolve();
              };
              process.once('SIGTERM', () => stop('SIGTERM'));
              process.once('SIGINT', () => stop('SIGINT'));
            });
            try {
              await server.close();
              await frontend.close();
            } catch (err) {
              log(`shutdown: ${errorMessage(err)}`);
            } finally {
              await metricsServer?.close();
              await pool.close();
              meta.close();
              if (socket !== undefined) rmSync(socket, { force: true });
            }
          }),
        })
        .demandCommand(1, 'Name an action: serve'),
    handler: () => undefined,
  };
}

/**
 * Serves the frontend's metrics; gauges are read at each scrape from the frontend's status and,
 * for the health of the volumes it writes, the live topology (two etcd reads). When etcd does
 * not answer, that scrape has no health gauges rather than stale ones.
 */
async function serveFrontendMetrics(
  metrics: FrontendMetrics,
  listen: { host: string; port: number },
  from: { meta: EtcdMeta; frontend: VolumeFrontend; server: NbdServer; log: (line: string) => void },
) {
  metrics.snapshotFrom(async () => {
    const topology = await readTopology(from.meta).catch((err: unknown) => {
      from.log(`metrics: cannot read the topology for volume health: ${errorMessage(err)}`);
      return undefined;
    });
    const volumes = await from.frontend.status(topology === undefined ? {} : { topology });
    return {
      volumes: volumes.map((v) => ({
        name: v.name,
        dirtyBytes: v.dirtyBytes,
        cachedBytes: v.cachedBytes,
        connections: v.handles,
        readDegradedExtents: v.degradedExtents,
        ...(v.health === undefined ? {} : { health: v.health }),
      })),
    };
  });
  metrics.connectionsFrom(() => from.server.connectionCount);
  return serveMetrics(metrics, { ...listen, log: from.log });
}
