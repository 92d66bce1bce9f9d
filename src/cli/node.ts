/** `cairnctl node list`: storage nodes with zone, address, state, capacity and use. */
import type { Argv } from 'yargs';
import { listNodes, type NodeStatus, type RepairSummary } from '../api/index.js';
import { drainThroughApi, viaApiOrMeta } from './via_api.js';
import { formatBytes } from '../core/index.js';
import { planRepair, runRepair, type RepairReport } from '../repair/index.js';
import type { EtcdMeta } from '../meta/index.js';
import { withRepairTools } from './repair.js';
import { clusterOptions, isJson, table, stringArg } from './common.js';
import { type CliContext, withErrors } from './context.js';
import { emit } from './output.js';

/** Moves every shard off the targets marked draining (one repair pass over those items only). */
export function moveDrainingShards(meta: EtcdMeta, ctx: CliContext): Promise<RepairReport> {
  return withRepairTools(meta, ctx, async (pool, stores) => {
    const plan = await planRepair(meta);
    const mine = { ...plan, items: plan.items.filter((i) => i.draining.length > 0) };
    return runRepair(meta, stores, pool, mine);
  });
}

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
            const nodes = await viaApiOrMeta(
              argv,
              (api) => api.request<NodeStatus[]>('GET', '/nodes'),
              (meta) => listNodes(meta.client, { endpoints: meta.endpoints, timeoutMs: Number(argv['etcd-timeout']) }),
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
        .command({
          command: 'drain <name>',
          describe: 'Move every shard off a node (placement stops choosing it), so it can be removed',
          builder: (a: Argv) =>
            clusterOptions(a)
              .positional('name', { type: 'string' })
              .option('undo', {
                type: 'boolean',
                default: false,
                describe: 'stop draining: the node takes new shards again',
              })
              .option('wait', {
                type: 'boolean',
                default: true,
                describe: 'move the shards now (else only mark it; the repairer moves them)',
              }),
          handler: withErrors(ctx, async (argv) => {
            const name = stringArg(argv, 'name');
            const result = await viaApiOrMeta(
              argv,
              (api) => drainThroughApi(api, name, { undo: argv['undo'] === true, wait: argv['wait'] !== false }),
              async (meta) => {
                const record = await meta.setDraining(name, !argv['undo']);
                if (argv['undo'] || !argv['wait'])
                  return { target: record.name, draining: record.draining === true, moved: null };
                const report = await moveDrainingShards(meta, ctx);
                return { target: record.name, draining: true, moved: report as RepairSummary };
              },
            );
            emit(ctx.io, isJson(argv), result, (r) =>
              r.moved === null
                ? [`${r.target}: ${r.draining ? 'draining (the repairer will move its shards)' : 'no longer draining'}`]
                : [
                    `${r.target}: draining; moved ${r.moved.shardsRebuilt} shards (${formatBytes(r.moved.bytesWritten)}) of ${r.moved.extentsTotal} extents`,
                    ...r.moved.errors.map((e) => `  failed: ${e}`),
                    ...(r.moved.failed === 0
                      ? [`It holds no published shard now: cairnctl target remove ${r.target} after stopping it.`]
                      : []),
                  ],
            );
            if (result.moved !== null && result.moved.failed > 0) ctx.exitCode = 1;
          }),
        })
        .demandCommand(1, 'Name an action: list or drain'),
    handler: () => undefined,
  };
}
