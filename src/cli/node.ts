/** `cairnctl node list`: storage nodes with zone, address, state, capacity and use. */
import type { Argv } from 'yargs';
import { formatBytes } from '../core/index.js';
import { listNodes } from '../node/index.js';
import { clusterOptions, isJson, table, withMeta } from './common.js';
import { type CliContext, withErrors } from './context.js';
import { emit } from './output.js';

export function nodeCommand(ctx: CliContext) {
  return {
    command: 'node <action>',
    describe: 'Inspect storage nodes',
    builder: (y: Argv) =>
      y
        .command({
          command: 'list',
          describe: 'List storage nodes: name, zone, address, state (up/down), capacity, used',
          builder: (a: Argv) => clusterOptions(a),
          handler: withErrors(ctx, async (argv) => {
            const nodes = await withMeta(argv, (meta) =>
              listNodes(meta.client, { endpoints: meta.endpoints, timeoutMs: Number(argv['etcd-timeout']) }),
            );
            emit(ctx.io, isJson(argv), nodes, (list) =>
              list.length === 0
                ? ['No storage nodes registered.']
                : table(
                    ['NAME', 'ZONE', 'ADDRESS', 'STATE', 'CAPACITY', 'USED'],
                    list.map((n) => [
                      n.name,
                      n.zone,
                      n.address,
                      n.state,
                      formatBytes(n.capacityBytes),
                      n.usedBytes === null ? '-' : formatBytes(n.usedBytes),
                    ]),
                  ),
            );
          }),
        })
        .demandCommand(1, 'Name an action: list'),
    handler: () => undefined,
  };
}
