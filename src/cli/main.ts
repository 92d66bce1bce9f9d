/**
 * cairnctl's command tree (yargs). One file per noun registers its commands here; this file only
 * assembles them and turns yargs' own validation failures into one line and exit code 2.
 */
import yargs from 'yargs';
import { benchCommand } from './bench.js';
import { codecCommand } from './codec.js';
import { repairCommands } from './repair.js';
import { devCommand } from './dev.js';
import { nbdCommand } from './nbd.js';
import { gcCommand } from './gc.js';
import { initCommand } from './init.js';
import { nodeCommand } from './node.js';
import { placementCommand } from './placement.js';
import { statusCommand } from './status.js';
import { targetCommand } from './target.js';
import { volumeCommand } from './volume.js';
import type { CliContext } from './context.js';

/** Runs cairnctl with `args` (argv without node and script) and returns the exit code. */
export async function runCli(args: readonly string[], ctx: CliContext): Promise<number> {
  let usageError = false;
  const parser = yargs([...args])
    .scriptName('cairnctl')
    .usage(
      'cairnctl <command> [options]\n\nAdminister a Cairn cluster: erasure-coded block volumes over etcd and storage nodes.',
    )
    .command(initCommand(ctx))
    .command(volumeCommand(ctx))
    .command(statusCommand(ctx))
    .command(nodeCommand(ctx))
    .command(targetCommand(ctx))
    .command(placementCommand(ctx))
    .command(nbdCommand(ctx))
    .command(devCommand(ctx))
    .command(repairCommands(ctx).repair)
    .command(repairCommands(ctx).scrub)
    .command(repairCommands(ctx).rebalance)
    .command(gcCommand(ctx))
    .command(codecCommand(ctx))
    .command(benchCommand(ctx))
    .demandCommand(1, 'Name a command; cairnctl --help lists them')
    .strict()
    .recommendCommands()
    .help()
    .alias('h', 'help')
    .version(false)
    .wrap(Math.min(110, process.stdout.columns || 110))
    .exitProcess(false)
    .fail((message, err) => {
      if (err) throw err;
      usageError = true;
      ctx.io.err(`cairnctl: ${message.split('\n')[0]} (see --help)`);
    });
  try {
    await parser.parseAsync();
  } catch (err) {
    ctx.io.err(`cairnctl: ${err instanceof Error ? err.message.split('\n')[0] : String(err)}`);
    return 2;
  }
  if (usageError) return 2;
  return ctx.exitCode;
}
