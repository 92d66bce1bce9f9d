/** `cairnctl init`: write the cluster config to etcd, once. */
import type { Argv } from 'yargs';
import { formatBytes, formatProfile, parseProfile, parseSize } from '../core/index.js';
import { initCluster } from '../api/index.js';
import { checkTargetPolicy } from '../api/index.js';
import { clusterOptions, isJson, withMeta, stringArg } from './common.js';
import { type CliContext, withErrors } from './context.js';
import { emit } from './output.js';

export function initCommand(ctx: CliContext) {
  return {
    command: 'init',
    describe: 'Initialise a cluster: write its config (default profile, extent size, zone policy) to etcd',
    builder: (y: Argv) =>
      clusterOptions(y)
        .option('profile', { type: 'string', default: '4+2', describe: 'default K+M for new volumes' })
        .option('extent-size', { type: 'string', default: '4MiB', describe: 'default extent size for new volumes' })
        .option('zones-required', {
          type: 'number',
          default: 1,
          describe: 'default minimum zones a volume spreads over',
        })
        .option('targets', { type: 'string', default: 'any', describe: 'default shard targets: node, s3 or any' })
        .option('force', { type: 'boolean', default: false, describe: 'overwrite an existing cluster config' }),
    handler: withErrors(ctx, async (argv) => {
      const config = await withMeta(argv, (meta) =>
        initCluster(meta, {
          defaultProfile: parseProfile(stringArg(argv, 'profile')),
          extentBytes: parseSize(stringArg(argv, 'extent-size'), 'extent size'),
          zonesRequired: Number(argv['zones-required']),
          targets: checkTargetPolicy(stringArg(argv, 'targets')),
          force: Boolean(argv['force']),
        }),
      );
      emit(ctx.io, isJson(argv), config, (c) => [
        `Initialised cluster: default profile ${formatProfile(c.defaultProfile)}, extent size ${formatBytes(c.extentBytes)}, ` +
          `zones required ${c.zonesRequired}, targets ${c.targets}`,
      ]);
    }),
  };
}
