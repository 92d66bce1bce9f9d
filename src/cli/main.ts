/**
 * cairnctl's command tree (yargs). One file per noun registers its commands here; this file only
 * assembles them and turns yargs' own validation failures into one line and exit code 2.
 *
 * What it keeps true: a usage error changes nothing. yargs (18) validates a command's arguments
 * (required positionals, demanded options, unknown options under strict) inside parse, just
 * before it calls the command's handler, and reports each failure through `.fail()`; when that
 * callback returns, yargs carries on and runs the handler anyway, with the missing arguments
 * undefined. So our callback throws: the throw unwinds parse before any handler starts, and
 * runCli turns it into one line on stderr and exit code 2. One global check refuses what yargs
 * lets through (an empty value, a number that is not one, an option given twice).
 * What it leaves out: each command's own checks of values (sizes, profiles, names).
 */
import yargs from 'yargs';
import { InvalidArgumentError } from '../core/index.js';
import { benchCommand } from './bench.js';
import { codecCommand } from './codec.js';
import { repairCommands } from './repair.js';
import { migrateCommand } from './migrate.js';
import { devCommand } from './dev.js';
import { nbdCommand } from './nbd.js';
import { csiCommand } from './csi.js';
import { policyCommand } from './policy.js';
import { gcCommand } from './gc.js';
import { initCommand } from './init.js';
import { nodeCommand } from './node.js';
import { placementCommand } from './placement.js';
import { statusCommand } from './status.js';
import { targetCommand } from './target.js';
import { volumeCommand } from './volume.js';
import { snapshotCommand } from './snapshot.js';
import { trashCommand } from './trash.js';
import { apiCommand } from './api.js';
import { tokenCommand } from './token.js';
import { kmsCommand } from './kms.js';
import { stdioArg } from './common.js';
import type { CliContext } from './context.js';

/** A command line yargs refused: no handler ran. Exit code 2, as for every bad request. */
export class CliUsageError extends InvalidArgumentError {
  override readonly name: string = 'CliUsageError';
  override readonly code: string = 'EUSAGE';
}

/**
 * The usage line of the command that failed, e.g. "cairnctl volume delete <name>". yargs passes
 * its usage state as the third argument of the `.fail()` callback (typed as Argv in
 * @types/yargs, but it is the usage instance); read defensively, so a yargs without it only
 * loses the hint.
 */
function usageLineOf(state: unknown): string | undefined {
  const getUsage = (state as { getUsage?: unknown } | null)?.getUsage;
  if (typeof getUsage !== 'function') return undefined;
  const usages: unknown = getUsage.call(state);
  const first: unknown = Array.isArray(usages) && Array.isArray(usages[0]) ? usages[0][0] : undefined;
  return typeof first === 'string' ? first.split('\n')[0]?.replace(/\$0/g, 'cairnctl') : undefined;
}

/**
 * Options that take a list (given once per item): `policy add --set`, `volume create --label`,
 * `nbd serve --tls-allow`.
 */
const listOptions = new Set(['set', 'label', 'kek-file', 'tls-allow', 'mtls-admin', 'key']);

/**
 * Refuses values yargs accepts but no command can use: `--dir` with nothing after it (yargs gives
 * ''), `--zones abc` (NaN) and an option given twice (an array; only listOptions take a list).
 * It runs after yargs' validation and before the handler, for every command.
 */
function checkValues(argv: Record<string, unknown>): true {
  for (const [key, value] of Object.entries(argv)) {
    if (key === '_' || key === '$0') continue;
    if (value === '') throw new CliUsageError(`Missing value for ${key}`);
    if (typeof value === 'number' && Number.isNaN(value)) throw new CliUsageError(`Invalid number for ${key}`);
    if (Array.isArray(value)) {
      if (!listOptions.has(key)) throw new CliUsageError(`${key} given more than once`);
      if (value.some((v) => v === '')) throw new CliUsageError(`Missing value for ${key}`);
    }
  }
  return true;
}

/** Runs cairnctl with `args` (argv without node and script) and returns the exit code. */
export async function runCli(args: readonly string[], ctx: CliContext): Promise<number> {
  let hint: string | undefined;
  // yargs reads a lone '-' as an option with no name; file arguments use it for standard input
  // or output, so it reaches them as stdioArg instead.
  const parser = yargs(args.map((a) => (a === '-' ? stdioArg : a)))
    // English like every other word cairnctl prints, whatever the locale (and so the hint test
    // in .fail() below holds).
    .locale('en')
    // Options are read by their dashed names only; camelCase copies would be checked twice.
    .parserConfiguration({ 'camel-case-expansion': false })
    .scriptName('cairnctl')
    .usage(
      'cairnctl <command> [options]\n\nAdminister a Cairn cluster: erasure-coded block volumes over etcd and storage nodes.',
    )
    .command(initCommand(ctx))
    .command(volumeCommand(ctx))
    .command(snapshotCommand(ctx))
    .command(trashCommand(ctx))
    .command(statusCommand(ctx))
    .command(nodeCommand(ctx))
    .command(targetCommand(ctx))
    .command(placementCommand(ctx))
    .command(nbdCommand(ctx))
    .command(csiCommand(ctx))
    .command(policyCommand(ctx))
    .command(devCommand(ctx))
    .command(repairCommands(ctx).repair)
    .command(repairCommands(ctx).scrub)
    .command(repairCommands(ctx).census)
    .command(repairCommands(ctx).rebalance)
    .command(gcCommand(ctx))
    .command(migrateCommand(ctx))
    .command(codecCommand(ctx))
    .command(benchCommand(ctx))
    .command(apiCommand(ctx))
    .command(tokenCommand(ctx))
    .command(kmsCommand(ctx))
    .demandCommand(1, 'Name a command; cairnctl --help lists them')
    .strict()
    .recommendCommands()
    .help()
    .alias('h', 'help')
    .version(false)
    .wrap(Math.min(110, process.stdout.columns || 110))
    .exitProcess(false)
    .check(checkValues)
    .fail((message: string | null, err: Error | null | undefined, state: unknown): void => {
      // Throwing is what stops the handler: see the comment at the top. A YError is yargs' own
      // complaint about the command line (e.g. "Not enough arguments following: dir"); anything
      // else (our checks' errors) goes on as it is.
      if (err && err.name !== 'YError') throw err;
      const what = message ?? err?.message ?? 'Invalid command line';
      // recommendCommands reports its guess for an unknown command first, as a failure of its
      // own; no command matched, so nothing can run, and the real failure ("Unknown argument:
      // frob") follows at once. Keep the guess for that message.
      if (!err && what.startsWith('Did you mean ')) {
        hint = what;
        return;
      }
      const usage = usageLineOf(state);
      throw new CliUsageError(
        `${what}${hint === undefined ? '' : ` (${hint})`}${usage === undefined ? '' : `; usage: ${usage}`}`,
      );
    });
  try {
    await parser.parseAsync();
    if (hint !== undefined) throw new CliUsageError(hint);
  } catch (err) {
    const message = err instanceof Error ? err.message.split('\n')[0] : String(err);
    ctx.io.err(`cairnctl: ${message}${err instanceof CliUsageError ? ' (see --help)' : ''}`);
    return 2;
  }
  return ctx.exitCode;
}
