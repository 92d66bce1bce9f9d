/** `cairnctl init`: write the cluster config to etcd, once. */
import type { Argv } from 'yargs';
import { InvalidArgumentError, formatBytes, formatProfile, parseProfile, parseSize } from '../core/index.js';
import { allowNoRedundancyFlag, checkTargetPolicy, initCluster } from '../api/index.js';
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
        .option('force', { type: 'boolean', default: false, describe: 'overwrite an existing cluster config' })
        .option('allow-no-redundancy', {
          type: 'boolean',
          default: false,
          describe: 'accept a default profile with M = 0 (a lost shard loses data)',
        }),
    handler: withErrors(ctx, async (argv) => {
      const defaultProfile = parseProfile(stringArg(argv, 'profile'));
      if (defaultProfile.m === 0 && argv['allow-no-redundancy'] !== true)
        throw new InvalidArgumentError(
          `Cannot make ${formatProfile(defaultProfile)} the default profile: it has no redundancy, so losing any one shard of an extent loses its data. ` +
            `Pass ${allowNoRedundancyFlag} to accept that (volumes created with it still need the flag), or use a profile with M of 1 or more, such as ${defaultProfile.k}+2`,
        );
      const config = await withMeta(argv, (meta) =>
        initCluster(meta, {
          defaultProfile,
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
