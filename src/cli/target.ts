/**
 * `cairnctl target add s3|list|remove`: register S3 buckets as shard targets in zones. Storage
 * nodes register themselves (cairnd); they are listed here too. Credentials are read from the
 * environment (see api/stores.ts) and never written to etcd.
 */
import type { Argv } from 'yargs';
import { checkName, errorMessage, formatBytes, parseSize, InvalidArgumentError } from '../core/index.js';
import { readTopology, storeForTarget } from '../api/index.js';
import type { TargetRecord } from '../meta/index.js';
import { S3ShardStore } from '../shard/index.js';
import { clusterOptions, isJson, table, withMeta, stringArg } from './common.js';
import { type CliContext, withErrors } from './context.js';
import { emit } from './output.js';

export function targetCommand(ctx: CliContext) {
  return {
    command: 'target <action>',
    describe: 'Register, list and remove shard targets (S3 buckets; nodes register themselves)',
    builder: (y: Argv) =>
      y
        .command({
          command: 'add <kind>',
          describe: 'Register an S3 bucket as a shard target in a zone (checks it can be written first)',
          builder: (a: Argv) =>
            clusterOptions(a)
              .positional('kind', { type: 'string', choices: ['s3'], describe: 'target kind' })
              .option('name', { type: 'string', demandOption: true, describe: 'target name' })
              .option('zone', { type: 'string', demandOption: true, describe: 'zone of the bucket' })
              .option('endpoint', {
                type: 'string',
                demandOption: true,
                describe: 'S3 endpoint URL, e.g. http://rgw:7480',
              })
              .option('bucket', { type: 'string', demandOption: true, describe: 'bucket (created if missing)' })
              .option('region', { type: 'string', default: 'us-east-1' })
              .option('capacity', { type: 'string', default: '1TiB', describe: 'capacity placement may assume' })
              .option('verify', {
                type: 'boolean',
                default: true,
                describe: 'check the bucket exists (or create it) and honours create-only writes',
              })
              .epilogue('Credentials: CAIRN_S3_CREDENTIALS_FILE (JSON) or AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY.'),
          handler: withErrors(ctx, async (argv) => {
            const name = checkName(stringArg(argv, 'name'), 'target');
            const zone = checkName(stringArg(argv, 'zone'), 'zone');
            const endpoint = stringArg(argv, 'endpoint');
            if (!/^https?:\/\/[^/]+/.test(endpoint))
              throw new InvalidArgumentError(
                `Invalid --endpoint "${endpoint}": expected http://HOST:PORT or https://HOST`,
              );
            const record: TargetRecord = {
              name,
              kind: 's3',
              zone,
              endpoint,
              bucket: stringArg(argv, 'bucket'),
              region: stringArg(argv, 'region'),
              capacityBytes: parseSize(stringArg(argv, 'capacity'), 'capacity'),
              addedAt: new Date().toISOString(),
            };
            if (argv['verify']) {
              const store = storeForTarget(record, ctx.secrets);
              try {
                if (store instanceof S3ShardStore) await store.ensureBucket();
                // A put of a probe object proves the credentials and create-only writes work.
                const probe = `.cairn-target-check/${Date.now().toString(36)}`;
                await store.put(probe, new Uint8Array(1));
                await store.delete(probe);
              } catch (err) {
                throw new InvalidArgumentError(
                  `Cannot use bucket "${record.bucket}" at ${endpoint} as target "${name}": ${errorMessage(err)}`,
                );
              } finally {
                store.close?.();
              }
            }
            await withMeta(argv, (meta) => meta.addTarget(record));
            emit(ctx.io, isJson(argv), record, (r) => [
              `Added S3 target ${r.name} in zone ${r.zone}: bucket ${r.bucket} at ${r.endpoint}`,
            ]);
          }),
        })
        .command({
          command: 'list',
          describe: 'List shard targets (nodes and S3 buckets) with zone and state',
          builder: (a: Argv) => clusterOptions(a),
          handler: withErrors(ctx, async (argv) => {
            const { targets, topology } = await withMeta(argv, async (meta) => ({
              targets: await meta.listTargets(),
              topology: await readTopology(meta),
            }));
            const rows = targets.map((t) => {
              const info = topology.targets.find((i) => i.id === t.name);
              return {
                ...t,
                state: info?.up ? 'up' : 'down',
                capacityBytes: info?.capacityBytes ?? 0,
                usedBytes: info?.usedBytes ?? 0,
              };
            });
            emit(ctx.io, isJson(argv), rows, (list) =>
              list.length === 0
                ? ['No targets.']
                : table(
                    ['NAME', 'KIND', 'ZONE', 'STATE', 'WHERE', 'CAPACITY'],
                    list.map((t) => [
                      t.name,
                      t.kind,
                      t.zone,
                      t.state,
                      t.kind === 'node' ? (t.address ?? '') : `${t.endpoint}/${t.bucket}`,
                      formatBytes(t.capacityBytes),
                    ]),
                  ),
            );
          }),
        })
        .command({
          command: 'remove <name>',
          describe: 'Unregister a target (its shards are not moved: drain first)',
          builder: (a: Argv) => clusterOptions(a).positional('name', { type: 'string' }),
          handler: withErrors(ctx, async (argv) => {
            const name = stringArg(argv, 'name');
            await withMeta(argv, (meta) => meta.removeTarget(name));
            emit(ctx.io, isJson(argv), { removed: name }, () => [`Removed target ${name}`]);
          }),
        })
        .demandCommand(1, 'Name an action: add, list or remove'),
    handler: () => undefined,
  };
}
