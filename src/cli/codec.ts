/**
 * `cairnctl codec encode|decode`: the erasure codec on plain files, so it can be checked from
 * outside (delete up to m shards, decode, compare).
 */
import type { Argv } from 'yargs';
import { formatBytes, parseProfile } from '../core/index.js';
import { decodeDir, encodeFile } from './codec_files.js';
import { stringArg } from './common.js';
import { type CliContext, withErrors } from './context.js';
import { emit } from './output.js';

export function codecCommand(ctx: CliContext) {
  return {
    command: 'codec <action>',
    describe: 'Erasure-code files into shards and rebuild them (the codec seen on files)',
    builder: (y: Argv) =>
      y
        .command({
          command: 'encode',
          describe: 'Split FILE into K data + M parity shards in DIR (shard.0 .. shard.<K+M-1> and manifest.json)',
          builder: (a: Argv) =>
            a
              .option('profile', {
                type: 'string',
                default: '4+2',
                describe: 'K+M: data and parity shards, 1 <= K, K+M <= 255',
              })
              .option('input', { type: 'string', demandOption: true, describe: 'file to encode' })
              .option('output-dir', {
                type: 'string',
                demandOption: true,
                describe: 'directory for the shards and manifest.json',
              })
              .option('force', {
                type: 'boolean',
                default: false,
                describe: 'replace an existing shard set in the directory',
              })
              .option('json', { type: 'boolean', default: false, describe: 'print the result as JSON' })
              .example(
                '$0 codec encode --profile 4+2 --input disk.img --output-dir shards/',
                'six shards, any four rebuild disk.img',
              ),
          handler: withErrors(ctx, async (argv) => {
            const result = await encodeFile({
              profile: parseProfile(stringArg(argv, 'profile')),
              input: stringArg(argv, 'input'),
              outputDir: stringArg(argv, 'output-dir'),
              force: Boolean(argv['force']),
              codec: ctx.codec,
            });
            emit(ctx.io, Boolean(argv['json']), result, (r) => [
              `Encoded ${formatBytes(r.size)} as ${r.k}+${r.m}: ${r.k + r.m} shards of ${formatBytes(r.shardBytes)} in ${r.outputDir}`,
              `Any ${r.k} of them rebuild the file; up to ${r.m} may be lost.`,
            ]);
          }),
        })
        .command({
          command: 'decode',
          describe: 'Rebuild the original file from any K good shards in DIR (corrupt shards count as missing)',
          builder: (a: Argv) =>
            a
              .option('input-dir', {
                type: 'string',
                demandOption: true,
                describe: 'directory with manifest.json and shards',
              })
              .option('output', { type: 'string', demandOption: true, describe: 'file to write' })
              .option('json', { type: 'boolean', default: false, describe: 'print the result as JSON' }),
          handler: withErrors(ctx, async (argv) => {
            const result = await decodeDir({
              inputDir: stringArg(argv, 'input-dir'),
              output: stringArg(argv, 'output'),
              codec: ctx.codec,
            });
            const names = (list: readonly number[]) => list.map((i) => `shard.${i}`).join(', ');
            emit(ctx.io, Boolean(argv['json']), result, (r) => [
              `Decoded ${formatBytes(r.size)} to ${r.output} (${r.k}+${r.m})`,
              ...(r.missing.length > 0 ? [`missing: ${names(r.missing)}`] : []),
              ...(r.corrupt.length > 0 ? [`corrupt (checksum mismatch, ignored): ${names(r.corrupt)}`] : []),
              ...(r.rebuilt.length > 0 ? [`rebuilt from parity: ${names(r.rebuilt)}`] : []),
            ]);
          }),
        })
        .demandCommand(1, 'Name an action: encode or decode'),
    handler: () => undefined,
  };
}
