/**
 * `cairnctl csi serve`: the CSI driver, serving the CSI Identity service and, with --controller,
 * the Controller service on a Unix socket until SIGTERM or SIGINT. See docs/kubernetes.md.
 */
import { readFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';
import type { Argv } from 'yargs';
import { CodecPool } from '../codec/index.js';
import { VolumeFrontend } from '../frontend/index.js';
import { CsiController, CsiNode, NbdClientAttacher, NbdfuseAttacher, serveCsi, socketPath } from '../csi/index.js';
import { zoneId } from '../core/index.js';
import { clusterOptions, keksOf, stringArg, withMeta } from './common.js';
import { type CliContext, withErrors } from './context.js';

/** The version CSI's GetPluginInfo reports: package.json's. */
function driverVersion(repoRoot: string): string {
  const parsed = JSON.parse(readFileSync(join(repoRoot, 'package.json'), 'utf8')) as { version?: unknown };
  return typeof parsed.version === 'string' ? parsed.version : '0.0.0';
}

export function csiCommand(ctx: CliContext) {
  return {
    command: 'csi <action>',
    describe: 'The Kubernetes CSI driver (create, delete, clone, snapshot and expand volumes through CSI)',
    builder: (y: Argv) =>
      y
        .command({
          command: 'serve',
          describe: 'Serve CSI Identity (and with --controller, Controller) over gRPC on a Unix socket, until SIGTERM',
          builder: (a: Argv) =>
            clusterOptions(a)
              .option('endpoint', {
                type: 'string',
                demandOption: true,
                describe: 'where to listen: unix:///PATH (the CSI sidecars and kubelet connect there)',
              })
              .option('controller', {
                type: 'boolean',
                default: false,
                describe: 'serve the Controller service (CreateVolume, snapshots, expansion, capacity)',
              })
              .option('topology', {
                type: 'boolean',
                default: false,
                describe:
                  'with --controller: pin volumes to the zones CreateVolume requires (topology.cairn.io/zone); nodes then need --zone',
              })
              .option('node', {
                type: 'boolean',
                default: false,
                describe: 'serve the Node service: stage (attach, format, mount) and publish volumes on this host',
              })
              .option('node-id', {
                type: 'string',
                describe: "this node's id for the CO (with --node; default: the host name)",
              })
              .option('zone', { type: 'string', describe: "this node's zone, offered as topology.cairn.io/zone" })
              .option('attach', {
                choices: ['nbdfuse', 'nbd-client'],
                default: 'nbd-client',
                describe:
                  'how a volume becomes a block device: the kernel nbd-client (needs the nbd module), or nbdfuse + a loop device',
              })
              .option('nbd', {
                type: 'string',
                default: 'nbd://127.0.0.1:10809',
                describe:
                  "this node's NBD frontend (nbd://HOST:PORT or nbd+unix:///?socket=PATH); the export is the volume",
              })
              .option('kek-dir', {
                type: 'string',
                describe:
                  "with --node: put a volume's key-encryption key from its node-stage secret (key kek) here while it is staged, for the frontend on this node (its CAIRN_KEK_DIR)",
              })
              .option('state-dir', {
                type: 'string',
                default: '/run/cairn/csi',
                describe: 'where staged volumes are recorded, so a restarted plugin finds its devices',
              })
              .example('$0 csi serve --endpoint unix:///run/cairn/csi.sock --controller', '')
              .example(
                '$0 csi serve --endpoint unix:///var/lib/kubelet/plugins/csi.cairn.io/csi.sock --node --zone a --attach nbdfuse',
                '',
              ),
          handler: withErrors(ctx, async (argv) => {
            const log = (line: string): void => ctx.io.err(`cairnctl csi: ${line}`);
            const endpoint = stringArg(argv, 'endpoint');
            socketPath(endpoint); // a bad endpoint is refused before anything starts
            await withMeta(argv, async (meta) => {
              // Lazy: taking a snapshot or growing a detached volume never codes.
              const pool = await CodecPool.start({ lazy: true });
              const owner = `${hostname()}/${process.pid} (csi)`;
              const keks = keksOf(argv);
              const controller = new CsiController({
                meta,
                withFrontend: async (work) => {
                  const f = new VolumeFrontend({ meta, pool, secrets: ctx.secrets, owner, lockWaitMs: 0, log, keks });
                  try {
                    return await work(f);
                  } finally {
                    await f.close();
                  }
                },
                owner,
                startGc: () => void ctx.startBackgroundGc(argv),
                version: driverVersion(ctx.repoRoot),
                topology: argv['topology'] === true,
                log,
              });
              const nbd = stringArg(argv, 'nbd');
              const node =
                argv['node'] === true
                  ? new CsiNode({
                      nodeId: typeof argv['node-id'] === 'string' ? argv['node-id'] : hostname(),
                      ...(typeof argv['zone'] === 'string' ? { zone: zoneId(argv['zone']) } : {}),
                      stateDir: stringArg(argv, 'state-dir'),
                      attacher: argv['attach'] === 'nbdfuse' ? new NbdfuseAttacher(nbd) : new NbdClientAttacher(nbd),
                      volumeExists: async (id) => (await meta.getVolume(id)) !== null,
                      ...(typeof argv['kek-dir'] === 'string' ? { kekDir: argv['kek-dir'] } : {}),
                      log,
                    })
                  : undefined;
              try {
                const server = await serveCsi({
                  endpoint,
                  controller,
                  withController: argv['controller'] === true,
                  ...(node === undefined ? {} : { node }),
                  log,
                });
                ctx.io.out(`cairnctl serving CSI on unix://${server.path} (pid ${process.pid})`);
                await new Promise<void>((resolve) => {
                  const stop = (signal: string): void => {
                    log(`${signal}: stopping`);
                    resolve();
                  };
                  process.once('SIGTERM', () => stop('SIGTERM'));
                  process.once('SIGINT', () => stop('SIGINT'));
                });
                await server.close();
              } finally {
                await pool.close();
              }
            });
          }),
        })
        .demandCommand(1, 'Name an action: serve'),
    handler: () => undefined,
  };
}
