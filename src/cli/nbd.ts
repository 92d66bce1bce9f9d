/**
 * `cairnctl nbd serve`: the frontend process. Serves every volume as an NBD export of the same
 * name, over TCP and/or a Unix socket, until SIGTERM or SIGINT; then stops accepting, flushes
 * every volume's cache and releases its lock. Logs are JSON lines on stderr (src/metrics/log.ts);
 * with --metrics-listen it serves Prometheus metrics (docs/metrics.md); with --zone its reads
 * prefer shards in that zone (docs/operations.md).
 */
import type { Argv } from 'yargs';
import { hostname } from 'node:os';
import { InvalidArgumentError, formatBytes, parseSize, zoneId } from '../core/index.js';
import {
  cacheBudgetBytesDefault,
  cacheBytesMaxDefault,
  dirtyBytesMaxDefault,
  flushAgeMsDefault,
  foldAgeMsDefault,
  foldBytesPerSecondDefault,
  publishBytesMaxDefault,
} from '../cache/index.js';
import {
  attachedVolumesMaxDefault,
  finalFlushRetryMsDefault,
  lockWaitMsDefault,
  startFrontend,
} from '../frontend/index.js';
import { checkNbdLimits, nbdLimits } from '../nbd/index.js';
import { createLogger } from '../metrics/index.js';
import { parseHostPort } from '../shard/index.js';
import { clusterOptions, endpointsFrom, kekReader, stringArg } from './common.js';
import { type CliContext, withErrors } from './context.js';
import { nbdTlsFlags, nbdTlsOptionsOf } from './nbd_tls.js';

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
            nbdTlsFlags(clusterOptions(a))
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
                default: lockWaitMsDefault,
                describe: "ms to wait for another frontend's lock to expire before refusing a volume",
              })
              .option('final-flush-retry', {
                type: 'number',
                default: finalFlushRetryMsDefault,
                describe:
                  'ms a volume whose last client left keeps retrying a failing flush, attached with its lock, before dropping the writes that are still not durable',
              })
              .option('cache-size', {
                type: 'string',
                default: formatBytes(cacheBytesMaxDefault),
                describe:
                  'memory per volume: clean, dirty and journaled bytes (journaled bytes are durable and held until folded; past the size writers wait for a fold)',
              })
              .option('dirty-max', {
                type: 'string',
                default: formatBytes(dirtyBytesMaxDefault),
                describe: 'bytes written and not yet durable, per volume, before writers wait for a flush',
              })
              .option('flush-age', {
                type: 'number',
                default: flushAgeMsDefault,
                describe: 'ms after which dirty data is flushed in the background',
              })
              .option('fold-age', {
                type: 'number',
                default: foldAgeMsDefault,
                describe:
                  'ms after which journaled writes are folded into erasure-coded generations even without memory pressure (sooner: shorter replay, more write amplification)',
              })
              .option('fold-rate', {
                type: 'string',
                default: formatBytes(foldBytesPerSecondDefault),
                describe:
                  'extent bytes per second that folds by age may re-encode, so background folding leaves room for the workload (0: no limit; folds under memory pressure are never limited)',
              })
              .option('max-connections', {
                type: 'number',
                default: nbdLimits.connectionsMaxDefault,
                describe: 'NBD connections open at once; more are closed at once, with a log line',
              })
              .option('max-connections-per-client', {
                type: 'number',
                default: nbdLimits.connectionsPerClientMaxDefault,
                describe: 'NBD connections one client address may hold over TCP (keep it below --max-connections)',
              })
              .option('write-budget', {
                type: 'string',
                default: formatBytes(nbdLimits.writeInFlightBytesMaxDefault),
                describe:
                  'WRITE payload bytes held across connections; past it sockets are not read until writes drain',
              })
              .option('max-volumes', {
                type: 'number',
                default: attachedVolumesMaxDefault,
                describe: 'volumes attached at once; further attaches are refused (NBD_REP_ERR_POLICY) with a log line',
              })
              .option('cache-budget', {
                type: 'string',
                default: formatBytes(cacheBudgetBytesDefault),
                describe:
                  'clean cache of all volumes together; past it the least recently used extents are dropped, from any volume',
              })
              .option('publish-budget', {
                type: 'string',
                default: formatBytes(publishBytesMaxDefault),
                describe:
                  'extent image bytes flushes and folds build and store at once across volumes (about 5x this in RSS); past it they wait their turn',
              })
              .option('threads', { type: 'number', describe: 'codec worker threads (default: cores)' })
              .option('zone', {
                type: 'string',
                describe:
                  'the zone this frontend runs in: reads prefer shards there, and decode from k shards in it rather than read a data shard in another zone (default: no preference)',
              })
              .option('metrics-listen', {
                type: 'string',
                describe: 'HOST:PORT serving Prometheus metrics at /metrics (default: off)',
              })
              .example('$0 nbd serve --listen 0.0.0.0:10809', 'then: nbdinfo nbd://HOST:10809/VOLUME')
              .example(
                '$0 nbd serve --tls require --tls-cert server-cert.pem --tls-key server-key.pem --tls-ca ca-cert.pem',
                'then: nbdinfo nbds://HOST:10809/VOLUME?tls-certificates=DIR',
              ),
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
            const foldBytesPerSecond = parseSize(stringArg(argv, 'fold-rate'), '--fold-rate');
            if (cacheBytesMax < dirtyBytesMax)
              throw new InvalidArgumentError('--cache-size must be at least --dirty-max');
            const lockWaitMs = Number(argv['lock-wait']);
            if (!Number.isSafeInteger(lockWaitMs) || lockWaitMs < 0)
              throw new InvalidArgumentError(`--lock-wait must be a whole number of ms, not "${argv['lock-wait']}"`);
            const finalFlushRetryMs = Number(argv['final-flush-retry']);
            if (!Number.isSafeInteger(finalFlushRetryMs) || finalFlushRetryMs < 0)
              throw new InvalidArgumentError(
                `--final-flush-retry must be a whole number of ms, not "${argv['final-flush-retry']}"`,
              );
            const metricsListen =
              argv['metrics-listen'] === undefined
                ? undefined
                : parseHostPort(String(argv['metrics-listen']), '--metrics-listen address');
            const zone = argv['zone'] === undefined ? undefined : zoneId(String(argv['zone']));
            const maxConnections = wholeNumberArg(argv, 'max-connections');
            const maxConnectionsPerClient = wholeNumberArg(argv, 'max-connections-per-client');
            if (maxConnectionsPerClient > maxConnections)
              throw new InvalidArgumentError('--max-connections-per-client must be at most --max-connections');
            const nbdLimitsSet = checkNbdLimits({
              connectionsMax: maxConnections,
              connectionsPerClientMax: maxConnectionsPerClient,
              writeInFlightBytesMax: parseSize(stringArg(argv, 'write-budget'), '--write-budget'),
            });
            const maxVolumes = wholeNumberArg(argv, 'max-volumes');
            const publishBytesMax = parseSize(stringArg(argv, 'publish-budget'), '--publish-budget');
            if (publishBytesMax < 1) throw new InvalidArgumentError('--publish-budget must be above 0');
            const cacheBudgetBytes = parseSize(stringArg(argv, 'cache-budget'), '--cache-budget');
            if (cacheBudgetBytes < 1) throw new InvalidArgumentError('--cache-budget must be above 0');
            const tls = nbdTlsOptionsOf(argv);
            const logger = createLogger({ name: 'cairnctl-nbd', write: (line) => ctx.io.err(line) });
            const log = logger.line;
            const serving = await startFrontend({
              etcdEndpoints: endpointsFrom(argv),
              etcdTimeoutMs: Number(argv['etcd-timeout']),
              secrets: ctx.secrets,
              keks: kekReader(argv),
              owner: `${hostname()}/${process.pid}`,
              ...(tcp === undefined ? {} : { tcp }),
              ...(socket === undefined ? {} : { socket }),
              readOnly: Boolean(argv['read-only']),
              forceTakeover: Boolean(argv['force-takeover']),
              lockWaitMs,
              finalFlushRetryMs,
              cache: {
                dirtyBytesMax,
                cacheBytesMax,
                flushAgeMs: Number(argv['flush-age']),
                foldAgeMs: Number(argv['fold-age']),
                foldBytesPerSecond,
              },
              nbdLimits: nbdLimitsSet,
              maxVolumes,
              publishBytesMax,
              cacheBudgetBytes,
              ...(argv['threads'] === undefined ? {} : { threads: Number(argv['threads']) }),
              ...(zone === undefined ? {} : { zone }),
              ...(metricsListen === undefined ? {} : { metricsListen }),
              ...(tls === undefined ? {} : { tls }),
              log,
              warn: (line) => logger.warn(line),
            });
            ctx.io.out(`cairnctl serving NBD on ${serving.where.join(' and ')} (pid ${process.pid})`);
            if (serving.metricsAddress !== undefined)
              logger.info(`metrics on http://${serving.metricsAddress}/metrics`, { metrics: serving.metricsAddress });
            await new Promise<void>((resolve) => {
              const stop = (signal: string) => {
                log(`${signal}: stopping; flushing every volume`);
                resolve();
              };
              process.once('SIGTERM', () => stop('SIGTERM'));
              process.once('SIGINT', () => stop('SIGINT'));
            });
            await serving.stop();
            // Everything is flushed, detached and closed. A library handle left open after an
            // etcd member died (seen once: a reconnect to the killed leader) must not keep the
            // process alive past its shutdown: exit after a bounded wait instead.
            setTimeout(() => {
              log('exiting: handles were still open 5 s after shutdown');
              process.exit(ctx.exitCode);
            }, 5_000).unref();
          }),
        })
        .demandCommand(1, 'Name an action: serve'),
    handler: () => undefined,
  };
}

/** A flag that must be a whole number above 0. */
function wholeNumberArg(argv: Record<string, unknown>, flag: string): number {
  const value = Number(argv[flag]);
  if (!Number.isSafeInteger(value) || value < 1)
    throw new InvalidArgumentError(`--${flag} must be a whole number above 0, not "${String(argv[flag])}"`);
  return value;
}
