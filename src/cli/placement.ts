/** `cairnctl placement explain VOLUME EXTENT`: where each shard of an extent goes, and why. */
import type { Argv } from 'yargs';
import { InvalidArgumentError } from '../core/index.js';
import { explainVolumePlacement } from '../api/index.js';
import { clusterOptions, isJson, withMeta, stringArg } from './common.js';
import { type CliContext, withErrors } from './context.js';
import { emit } from './output.js';

export function placementCommand(ctx: CliContext) {
  return {
    command: 'placement <action>',
    describe: 'Inspect shard placement',
    builder: (y: Argv) =>
      y
        .command({
          command: 'explain <volume> <extent>',
          describe: 'Show the target of every shard of one extent and why it was chosen',
          builder: (a: Argv) =>
            clusterOptions(a)
              .positional('volume', { type: 'string' })
              .positional('extent', { type: 'string', describe: 'extent index, from 0' }),
          handler: withErrors(ctx, async (argv) => {
            const text = stringArg(argv, 'extent');
            if (!/^\d+$/.test(text))
              throw new InvalidArgumentError(`Invalid extent "${text}": use an extent index such as 0`);
            const explanation = await withMeta(argv, (meta) =>
              explainVolumePlacement(meta, stringArg(argv, 'volume'), Number(text)),
            );
            emit(ctx.io, isJson(argv), explanation, (e) => e.lines);
          }),
        })
        .demandCommand(1, 'Name an action: explain'),
    handler: () => undefined,
  };
}
