/**
 * `cairnctl nbd serve`: the frontend process. Serves every volume as an NBD export of the same
 * name, over TCP and/or a Unix socket, until SIGTERM or SIGINT; then stops accepting, flushes
 * every volume's cache and releases its lock.
 */
import type { Argv } from 'yargs';
import { hostname } from 'node:os';
import { rmSync } from 'node:fs';
import { InvalidArgumentError, errorMessage, parseSize } from '../core/index.js';
import { VolumeFrontend } from '../api/index.js';
import { CodecPool } from '../codec/index.js';
import { NbdServer } from '../nbd/index.js';
import { parseHostPort } from '../shard/index.js';
import { clusterOptions, endpointsFrom } from './common.js';
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
            const dirtyBytesMax = parseSize(String(argv['dirty-max']), '--dirty-max');
            const cacheBytesMax = parseSize(String(argv['cache-size']), '--cache-size');
            if (cacheBytesMax < dirtyBytesMax)
              throw new InvalidArgumentError('--cache-size must be at least --dirty-max');
            const log = (line: string) => ctx.io.err(`${new Date().toISOString()} ${line}`);
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
            });
            const server = new NbdServer({ provider: frontend, readOnly: Boolean(argv['read-only']), log });
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
            ctx.io.out(`cairnctl serving NBD on ${where.join(' and ')} (pid ${process.pid})`);
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
