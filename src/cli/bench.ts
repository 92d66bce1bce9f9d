/** `cairnctl bench codec`: codec throughput next to its peers, one JSON line per result. */
import type { Argv } from 'yargs';
import { InvalidArgumentError, formatBytes, parseProfile, parseSize } from '../core/index.js';
import { benchCodec, codecImpls, type CodecBenchLine, type CodecImpl } from '../bench/index.js';
import { table, stringArg } from './common.js';
import { type CliContext, withErrors } from './context.js';

function parseImpls(text: string | undefined): readonly CodecImpl[] | undefined {
  if (text === undefined) return undefined;
  const list = text.split(',').map((s) => s.trim());
  for (const impl of list) {
    if (!codecImpls.includes(impl as CodecImpl))
      throw new InvalidArgumentError(`Unknown implementation "${impl}": use ${codecImpls.join(', ')}`);
  }
  return list as CodecImpl[];
}

export function benchCommand(ctx: CliContext) {
  return {
    command: 'bench <what>',
    describe: 'Benchmarks that print one JSON line per result (make bench runs them all)',
    builder: (y: Argv) =>
      y
        .command({
          command: 'codec',
          describe: 'Erasure-coding throughput: cairn, cairn-pool, subspace, isa-l, isa-l-avx2',
          builder: (a: Argv) =>
            a
              .option('profile', { type: 'string', default: '8+3', describe: 'K+M' })
              .option('extent-size', { type: 'string', default: '1MiB', describe: 'bytes coded per call' })
              .option('seconds', { type: 'number', default: 2, describe: 'minimum timed seconds per loop' })
              .option('impl', { type: 'string', describe: `comma-separated subset of ${codecImpls.join(',')}` })
              .option('threads', { type: 'number', describe: 'worker threads for cairn-pool (default: cores)' })
              .option('json', { type: 'boolean', default: false, describe: 'one JSON object per line' }),
          handler: withErrors(ctx, async (argv) => {
            const impls = parseImpls(argv['impl'] as string | undefined);
            const lines: CodecBenchLine[] = [];
            await benchCodec(
              {
                profile: parseProfile(stringArg(argv, 'profile')),
                extentBytes: parseSize(stringArg(argv, 'extent-size'), 'extent size'),
                minSeconds: Number(argv['seconds']),
                repoRoot: ctx.repoRoot,
                ...(impls === undefined ? {} : { impls }),
                ...(argv['threads'] === undefined ? {} : { threads: Number(argv['threads']) }),
              },
              (line) => {
                if (argv['json']) ctx.io.out(JSON.stringify(line));
                else lines.push(line);
              },
            );
            if (argv['json']) return;
            const rows: string[][] = [];
            for (const l of lines) {
              if ('encodeMBps' in l) {
                rows.push([
                  l.impl,
                  l.encodeMBps === null ? '-' : l.encodeMBps.toFixed(0),
                  l.reconstructMBps === null ? '-' : l.reconstructMBps.toFixed(0),
                  String(l.threads ?? ''),
                  l.variant ?? '',
                ]);
              } else if ('skipped' in l) rows.push([l.impl, 'skipped:', l.skipped, '', '']);
            }
            const first = lines.find((l) => 'k' in l);
            if (first !== undefined && 'k' in first)
              ctx.io.out(`RS(${first.k}+${first.m}), extent ${formatBytes(first.extentBytes)}, MB/s of extent data`);
            for (const line of table(['IMPL', 'ENCODE', 'RECONSTRUCT', 'THREADS', 'KERNEL'], rows))
              ctx.io.out(`  ${line}`);
            const s = lines.find((l) => 'summary' in l);
            if (s !== undefined && 'summary' in s) {
              const f = (x: number | null) => (x === null ? 'n/a' : `${x}x`);
              ctx.io.out(
                `  cairn/subspace ${f(s.cairnOverSubspace)} (target >= 10x), cairn/isa-l-avx2 ${f(s.cairnOverIsalAvx2)} (target >= 0.5x), pool/cairn ${f(s.poolOverCairn)} (target >= 1.7x)`,
              );
            }
          }),
        })
        .demandCommand(1, 'Name a benchmark: codec'),
    handler: () => undefined,
  };
}
