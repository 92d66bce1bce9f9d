/** `cairnctl dev up|status|down`: a whole local cluster from one command, for trying Cairn. */
import type { Argv } from 'yargs';
import { join } from 'node:path';
import { parseProfile, parseSize } from '../core/index.js';
import { devDown, devStatus, devUp } from '../dev/index.js';
import { isJson, table, stringArg } from './common.js';
import { type CliContext, withErrors } from './context.js';
import { emit } from './output.js';

export function devCommand(ctx: CliContext) {
  const bin = (name: string) => join(ctx.repoRoot, 'dist', 'src', 'bin', name);
  return {
    command: 'dev <action>',
    describe: 'A local cluster on loopback: etcd, storage nodes in zones, an NBD frontend',
    builder: (y: Argv) =>
      y
        .command({
          command: 'up',
          describe: 'Start etcd, storage nodes (zones a, b, c, ...) and an NBD frontend in the background',
          builder: (a: Argv) =>
            a
              .option('dir', {
                type: 'string',
                demandOption: true,
                describe: 'directory for data, logs and cluster.json',
              })
              .option('zones', { type: 'number', default: 3 })
              .option('nodes-per-zone', { type: 'number', default: 2 })
              .option('profile', { type: 'string', default: '4+2', describe: 'default K+M of new volumes' })
              .option('extent-size', {
                type: 'string',
                default: '4MiB',
                describe: 'default extent size of new volumes',
              })
              .option('tls', {
                type: 'boolean',
                default: false,
                describe:
                  'TLS everywhere: a throwaway CA in DIR/tls, etcd with client certificates and authentication, nodes with mutual TLS, the frontend requiring TLS (nbds://)',
              })
              .option('json', { type: 'boolean', default: false }),
          handler: withErrors(ctx, async (argv) => {
            const cluster = await devUp({
              tls: argv['tls'] === true,
              dir: stringArg(argv, 'dir'),
              zones: Number(argv['zones']),
              nodesPerZone: Number(argv['nodes-per-zone']),
              profile: parseProfile(stringArg(argv, 'profile')),
              extentBytes: parseSize(stringArg(argv, 'extent-size'), 'extent size'),
              cairndPath: bin('cairnd.js'),
              cairnctlPath: bin('cairnctl.js'),
              log: (line) => {
                if (!isJson(argv)) ctx.io.out(line);
              },
            });
            emit(ctx.io, isJson(argv), cluster, (c) => [
              `Cluster up. Before using cairnctl against it: . ${c.env ?? `${c.dir}/env`}`,
              `A volume V is served at ${c.frontend.nbdUri}/V${c.tls === true ? `?tls-certificates=${c.dir}/tls` : ''} and nbd+unix:///V?socket=${c.frontend.socket}`,
              `Encrypted volumes: put their key-encryption keys in ${c.dir}/keks (the frontend and . ${c.dir}/env read it at each attach)`,
              `Stop it with: cairnctl dev down --dir ${c.dir}`,
            ]);
          }),
        })
        .command({
          command: 'status',
          describe: 'Show the processes of a dev cluster and whether they run',
          builder: (a: Argv) =>
            a.option('dir', { type: 'string', demandOption: true }).option('json', { type: 'boolean', default: false }),
          handler: withErrors(ctx, async (argv) => {
            const status = await devStatus(stringArg(argv, 'dir'));
            emit(ctx.io, isJson(argv), status, (s) => [
              `etcd ${s.cluster.etcd} ${s.etcdHealthy ? 'healthy' : 'NOT healthy'}; NBD ${s.cluster.frontend.nbdUri}`,
              ...table(
                ['PROCESS', 'PID', 'STATE'],
                s.processes.map((p) => [p.what, String(p.pid), p.alive ? 'running' : 'gone']),
              ),
            ]);
            if (status.processes.some((p) => !p.alive) || !status.etcdHealthy) ctx.exitCode = 1;
          }),
        })
        .command({
          command: 'down',
          describe: 'Stop every process of a dev cluster, by pid (frontend first, so it flushes)',
          builder: (a: Argv) =>
            a
              .option('dir', { type: 'string', demandOption: true })
              .option('purge', { type: 'boolean', default: false, describe: 'also delete the directory and its data' })
              .option('json', { type: 'boolean', default: false }),
          handler: withErrors(ctx, async (argv) => {
            const result = await devDown(stringArg(argv, 'dir'), Boolean(argv['purge']));
            emit(ctx.io, isJson(argv), result, (r) => r.stopped.map((s) => `${s.what} (pid ${s.pid}): ${s.outcome}`));
          }),
        })
        .demandCommand(1, 'Name an action: up, status or down'),
    handler: () => undefined,
  };
}
