/**
 * `cairnctl api serve`: the control-plane HTTP API (src/api/http, docs/api.md) and the dashboard
 * (src/web, docs/dashboard.md), on one listener. It wires the ports the API may not build itself: a
 * frontend in this process for snapshots and resizes of detached volumes, the repair tools for
 * drains and repair passes, background gc; the same functions the CLI commands use.
 *
 * Stateless: run any number behind a Service (k8s/src/api.ts runs two). SIGTERM stops accepting,
 * ends event streams and exits; a background drain or repair it started stops with it (the
 * repairer daemon finishes the work).
 */
import { hostname } from 'node:os';
import { readFileSync } from 'node:fs';
import type { Argv } from 'yargs';
import { InvalidArgumentError, errorMessage } from '../core/index.js';
import { EtcdMeta } from '../meta/index.js';
import { startApiServer, type ApiPorts, type RepairSummary } from '../api/index.js';
import { planRepair, runRepair, type RepairReport } from '../repair/index.js';
import { parseHostPort } from '../shard/index.js';
import { clusterOptions, endpointsFrom } from './common.js';
import { type CliContext, withErrors } from './context.js';
import { withLocalFrontend } from './snapshot.js';
import { dashboard } from '../web/index.js';
import { moveDrainingShards } from './node.js';
import { withRepairTools } from './repair.js';

const summaryOf = (r: RepairReport): RepairSummary => ({
  extentsTotal: r.extentsTotal,
  shardsRebuilt: r.shardsRebuilt,
  bytesWritten: r.bytesWritten,
  failed: r.failed,
  unrecoverable: r.unrecoverable,
  errors: r.errors.slice(0, 20),
});

function readPem(argv: Record<string, unknown>, flag: string): Buffer | undefined {
  const value = argv[flag];
  if (value === undefined) return undefined;
  try {
    return readFileSync(String(value));
  } catch (err) {
    throw new InvalidArgumentError(`Cannot read --${flag} ${String(value)}: ${errorMessage(err)}`);
  }
}

export function apiCommand(ctx: CliContext) {
  return {
    command: 'api <action>',
    describe: 'Serve the control-plane HTTP API (and the dashboard)',
    builder: (y: Argv) =>
      y
        .command({
          command: 'serve',
          describe: 'Serve the JSON API under /api/v1 (docs/api.md), /healthz, and the dashboard at /',
          builder: (a: Argv) =>
            clusterOptions(a)
              .option('listen', { type: 'string', default: '127.0.0.1:8080', describe: 'HOST:PORT to listen on' })
              .option('tls-cert', { type: 'string', describe: 'PEM server certificate: serve HTTPS' })
              .option('tls-key', { type: 'string', describe: 'PEM private key of --tls-cert' })
              .option('tls-ca', {
                type: 'string',
                describe:
                  'PEM CA: a client certificate it signed authenticates as its CN (a viewer unless --mtls-admin)',
              })
              .option('mtls-admin', {
                type: 'string',
                array: true,
                describe: 'a client-certificate CN that is an admin (repeatable)',
              })
              .example(
                '$0 api serve --listen 0.0.0.0:8080',
                'then: curl -H "Authorization: Bearer $TOKEN" http://HOST:8080/api/v1/cluster',
              ),
          handler: withErrors(ctx, async (argv) => {
            const listen = parseHostPort(String(argv['listen']), '--listen address');
            const cert = readPem(argv, 'tls-cert');
            const key = readPem(argv, 'tls-key');
            const ca = readPem(argv, 'tls-ca');
            if ((cert === undefined) !== (key === undefined))
              throw new InvalidArgumentError('Give --tls-cert and --tls-key together');
            if (ca !== undefined && cert === undefined)
              throw new InvalidArgumentError('--tls-ca needs --tls-cert and --tls-key (client certificates need TLS)');
            const admins = argv['mtls-admin'] === undefined ? [] : [argv['mtls-admin']].flat().map(String);
            if (admins.length > 0 && ca === undefined) throw new InvalidArgumentError('--mtls-admin needs --tls-ca');
            const meta = new EtcdMeta(endpointsFrom(argv), { timeoutMs: Number(argv['etcd-timeout']) });
            try {
              await meta.requireCluster();
              const ports: ApiPorts = {
                owner: `${hostname()}/${process.pid} (cairnctl api)`,
                attachAndSnapshot: (volume, snap) =>
                  withLocalFrontend(meta, ctx, argv, (f) => f.snapshot(volume, snap)),
                attachAndResize: (volume, sizeBytes, allowShrink) =>
                  withLocalFrontend(meta, ctx, argv, (f) => f.resize(volume, sizeBytes, { allowShrink })),
                drain: async () => summaryOf(await moveDrainingShards(meta, ctx)),
                repair: () =>
                  withRepairTools(meta, ctx, async (pool, stores) =>
                    summaryOf(await runRepair(meta, stores, pool, await planRepair(meta))),
                  ),
                startGc: () => ctx.startBackgroundGc(argv),
              };
              const server = await startApiServer({
                meta,
                listen,
                ...(cert === undefined || key === undefined
                  ? {}
                  : { tls: { cert, key, ...(ca === undefined ? {} : { ca }) } }),
                mtlsAdmins: admins,
                ports,
                web: dashboard({ log: (line) => ctx.io.err(line) }),
                log: (line) => ctx.io.err(line),
              });
              ctx.io.out(`cairnctl api serving on ${server.url} (pid ${process.pid})`);
              await new Promise<void>((resolve) => {
                process.once('SIGTERM', () => resolve());
                process.once('SIGINT', () => resolve());
              });
              await server.close();
            } finally {
              meta.close();
            }
            setTimeout(() => process.exit(ctx.exitCode), 5_000).unref();
          }),
        })
        .demandCommand(1, 'Name an action: serve'),
    handler: () => undefined,
  };
}
