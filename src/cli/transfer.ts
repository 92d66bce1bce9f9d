/** `cairnctl volume export|import|export-diff|import-diff`: volumes in and out as files. */
import { createReadStream } from 'node:fs';
import type { Argv, CommandModule } from 'yargs';
import { formatBytes, parseSize } from '../core/index.js';
import {
  exportDiff,
  exportVolume,
  importDiff,
  importVolume,
  outputStream,
  type TransferProgress,
} from '../frontend/index.js';
import { clusterOptions, encryptionRequest, isJson, stdioArg, stringArg, withMeta } from './common.js';
import { type CliContext, withErrors } from './context.js';
import { emit } from './output.js';
import { cliOwner, withLocalFrontend } from './snapshot.js';

/** At most one progress line a second on stderr (none with --json, none for tiny transfers). */
function progressPrinter(ctx: CliContext, argv: Record<string, unknown>, what: string, unit: 'bytes' | 'extents') {
  const startedAt = Date.now();
  let shownAt = startedAt;
  return (p: TransferProgress): void => {
    const now = Date.now();
    if (isJson(argv) || now - shownAt < 1000 || p.bytesDone >= p.bytesTotal) return;
    shownAt = now;
    const pct = p.bytesTotal === 0 ? 100 : Math.floor((100 * p.bytesDone) / p.bytesTotal);
    const done =
      unit === 'bytes'
        ? `${formatBytes(p.bytesDone)} of ${formatBytes(p.bytesTotal)}`
        : `${p.bytesDone} of ${p.bytesTotal} extents`;
    ctx.io.err(`${what}: ${pct}% (${done}, ${((now - startedAt) / 1000).toFixed(0)} s)`);
  };
}

/** A file argument: '-' for standard input or output (main.ts passes it as stdioArg), else a path. */
const stdioOrPath = (arg: string): string => (arg === stdioArg ? '-' : arg);

const extents = (n: number): string => `${n} ${n === 1 ? 'extent' : 'extents'}`;

const seconds = (startedAt: number): number => Math.round((Date.now() - startedAt) / 10) / 100;

export function transferCommands(ctx: CliContext): CommandModule[] {
  return [
    {
      command: 'export <source> <file>',
      describe:
        "Write a volume's contents to a raw image: FILE is sparse where the volume has holes, '-' writes every byte to standard output. SOURCE is VOL@SNAP, or VOL while no frontend has it attached for writing",
      builder: (a: Argv) =>
        clusterOptions(a)
          .positional('source', { type: 'string', describe: 'VOL@SNAP (or a detached VOL)' })
          .positional('file', { type: 'string', describe: "the image to write, or '-'" })
          .example('$0 volume export pg-data@nightly /backup/pg-data.img', ''),
      handler: withErrors(ctx, async (argv) => {
        const source = stringArg(argv, 'source');
        const file = stdioOrPath(stringArg(argv, 'file'));
        const startedAt = Date.now();
        const result = await withMeta(argv, (meta) =>
          withLocalFrontend(meta, ctx, argv, (f) =>
            exportVolume(
              f,
              meta,
              source,
              file === '-' ? { stream: process.stdout } : { path: file },
              progressPrinter(ctx, argv, `export ${source}`, 'bytes'),
            ),
          ),
        );
        const out = { ...result, file, seconds: seconds(startedAt) };
        // With '-' the image is on stdout: the summary goes to stderr.
        const print = file === '-' ? { ...ctx.io, out: ctx.io.err } : ctx.io;
        emit(print, isJson(argv), out, (r) => [
          `Exported ${r.volume} to ${r.file}: ${formatBytes(r.sizeBytes)}, ${formatBytes(r.dataBytes)} of data in ${r.dataExtents} extents (${r.zeroExtents} holes) in ${r.seconds} s`,
        ]);
      }),
    },
    {
      command: 'import <file> <name>',
      describe:
        "Create volume NAME from a raw image (FILE, or '-' for standard input with --size); extents of zeros stay holes",
      builder: (a: Argv) =>
        clusterOptions(a)
          .positional('file', { type: 'string', describe: "the image, or '-'" })
          .positional('name', { type: 'string', describe: 'the volume to create' })
          .option('size', { type: 'string', describe: 'volume size (default: the file size, rounded up to 512 bytes)' })
          .option('profile', { type: 'string', describe: 'K+M (default: the cluster default)' })
          .option('extent-size', { type: 'string', describe: 'extent size (default: the cluster default)' })
          .option('encrypt', {
            type: 'boolean',
            describe: 'encrypt the new volume at rest with a new data key wrapped by --kek-file (or --kms)',
          })
          .option('kms', {
            type: 'string',
            describe: 'a key service (Vault transit interface) that wraps the data key',
          })
          .option('kms-key', { type: 'string', describe: 'the key in the --kms service' })
          .example('$0 volume import /backup/pg-data.img pg-restored', '')
          .example('$0 volume import /backup/pg-data.img pg-secure --encrypt --kek-file ./pg.kek', ''),
      handler: withErrors(ctx, async (argv) => {
        const file = stdioOrPath(stringArg(argv, 'file'));
        const name = stringArg(argv, 'name');
        const startedAt = Date.now();
        const result = await withMeta(argv, (meta) =>
          withLocalFrontend(meta, ctx, argv, (f) =>
            importVolume(
              f,
              meta,
              file === '-' ? { stream: process.stdin } : { path: file },
              {
                name,
                ...(argv['size'] === undefined ? {} : { sizeBytes: parseSize(String(argv['size']), '--size') }),
                ...(argv['profile'] === undefined ? {} : { profile: String(argv['profile']) }),
                ...(argv['extent-size'] === undefined
                  ? {}
                  : { extentBytes: parseSize(String(argv['extent-size']), '--extent-size') }),
                ...encryptionRequest(argv),
              },
              progressPrinter(ctx, argv, `import ${name}`, 'bytes'),
            ),
          ),
        );
        emit(ctx.io, isJson(argv), { ...result, seconds: seconds(startedAt) }, (r) => [
          `Imported ${file} into new volume ${r.volume}: ${formatBytes(r.sizeBytes)}, ${formatBytes(r.dataBytes)} of data in ${r.dataExtents} extents (${r.zeroExtents} left holes) in ${r.seconds} s`,
        ]);
      }),
    },
    {
      command: 'export-diff <source> <file>',
      describe:
        "Write the extents that changed between snapshot --from and SOURCE (VOL@SNAP) to FILE or '-'; without --from, every written extent (the start of a chain). import-diff applies it",
      builder: (a: Argv) =>
        clusterOptions(a)
          .positional('source', { type: 'string', describe: 'VOL@SNAP' })
          .positional('file', { type: 'string', describe: "the diff to write, or '-'" })
          .option('from', { type: 'string', describe: 'the older snapshot of the same volume (the base)' })
          .example('$0 volume export-diff pg-data@tuesday --from monday /backup/pg-data.tue.diff', ''),
      handler: withErrors(ctx, async (argv) => {
        const source = stringArg(argv, 'source');
        const file = stdioOrPath(stringArg(argv, 'file'));
        const startedAt = Date.now();
        const result = await withMeta(argv, (meta) =>
          withLocalFrontend(meta, ctx, argv, (f) => {
            const out = outputStream(file);
            return exportDiff(
              f,
              meta,
              source,
              argv['from'] === undefined ? undefined : String(argv['from']),
              out.stream,
              out.owned,
              progressPrinter(ctx, argv, `export-diff ${source}`, 'extents'),
            );
          }),
        );
        const print = file === '-' ? { ...ctx.io, out: ctx.io.err } : ctx.io;
        emit(print, isJson(argv), { ...result, file, from: argv['from'] ?? null, seconds: seconds(startedAt) }, (r) => [
          `Wrote the diff of ${r.volume}${r.from === null ? '' : ` since ${String(r.from)}`} to ${r.file}: ${extents(r.dataExtents + r.zeroExtents)} changed (${formatBytes(r.dataBytes)} of data) in ${r.seconds} s`,
        ]);
      }),
    },
    {
      command: 'import-diff <file> <name>',
      describe:
        "Apply a diff (FILE or '-') to volume NAME, which must hold the diff's base snapshot unchanged (a diff without a base creates NAME); then snapshot NAME as the diff's target. Refused, changing nothing, on the wrong base",
      builder: (a: Argv) =>
        clusterOptions(a)
          .positional('file', { type: 'string', describe: "the diff, or '-'" })
          .positional('name', { type: 'string', describe: 'the volume to apply it to' })
          .option('profile', {
            type: 'string',
            describe: 'K+M for a volume the diff creates (default: the cluster default)',
          })
          .example('$0 volume import-diff /backup/pg-data.tue.diff pg-replica', ''),
      handler: withErrors(ctx, async (argv) => {
        const file = stdioOrPath(stringArg(argv, 'file'));
        const name = stringArg(argv, 'name');
        const startedAt = Date.now();
        const result = await withMeta(argv, (meta) =>
          withLocalFrontend(meta, ctx, argv, (f) =>
            importDiff(
              f,
              meta,
              file === '-' ? process.stdin : createReadStream(file),
              name,
              {
                owner: cliOwner(),
                ...(argv['profile'] === undefined ? {} : { createOptions: { profile: String(argv['profile']) } }),
              },
              progressPrinter(ctx, argv, `import-diff ${name}`, 'extents'),
            ),
          ),
        );
        emit(ctx.io, isJson(argv), { ...result, seconds: seconds(startedAt) }, (r) => [
          `Applied ${file} to ${r.created ? 'new ' : ''}volume ${r.volume}: ${extents(r.dataExtents + r.zeroExtents)} (${formatBytes(r.dataBytes)} of data) in ${r.seconds} s; it now has snapshot ${r.volume}@${r.snapshot}`,
        ]);
      }),
    },
  ];
}
