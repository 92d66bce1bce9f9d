/** `cairnctl trash list|restore|purge`: volumes `volume delete` moved to the trash. */
import type { Argv } from 'yargs';
import { formatBytes, volumeName } from '../core/index.js';
import { NotFoundError, type EtcdMeta, type TrashRecord } from '../meta/index.js';
import { clusterOptions, isJson, stringArg, table, withMeta } from './common.js';
import { type CliContext, withErrors } from './context.js';
import { emit } from './output.js';

/** The trashed volume a name or an id names: an id always, a name when exactly one has it. */
async function findTrashed(meta: EtcdMeta, nameOrId: string): Promise<TrashRecord> {
  const all = await meta.listTrash();
  const byId = all.find((t) => t.volume.id === nameOrId);
  if (byId !== undefined) return byId;
  const named = all.filter((t) => t.volume.name === nameOrId);
  if (named.length === 1) return named[0]!;
  if (named.length > 1)
    throw new NotFoundError(
      `${named.length} volumes named "${nameOrId}" are in the trash (ids ${named.map((t) => t.volume.id).join(', ')}); name one by its id`,
    );
  throw new NotFoundError(`No volume named or with id "${nameOrId}" in the trash (see cairnctl trash list)`);
}

export function trashCommand(ctx: CliContext) {
  return {
    command: 'trash <action>',
    describe: 'Volumes moved to the trash by `volume delete`: list, restore, purge',
    builder: (y: Argv) =>
      y
        .command({
          command: 'list',
          describe: 'List the volumes in the trash, most recently deleted first',
          builder: (a: Argv) => clusterOptions(a),
          handler: withErrors(ctx, async (argv) => {
            const rows = await withMeta(argv, (meta) => meta.listTrash());
            emit(
              ctx.io,
              isJson(argv),
              rows.map((t) => ({ ...t.volume, deletedAt: t.deletedAt })),
              (list) =>
                list.length === 0
                  ? ['The trash is empty.']
                  : table(
                      ['NAME', 'ID', 'SIZE', 'DELETED'],
                      list.map((v) => [v.name, v.id, formatBytes(v.sizeBytes), v.deletedAt]),
                    ),
            );
          }),
        })
        .command({
          command: 'restore <volume>',
          describe: 'Bring a volume back from the trash, with its data and snapshots (by name or id)',
          builder: (a: Argv) =>
            clusterOptions(a)
              .positional('volume', { type: 'string', describe: 'its name or id' })
              .option('as', { type: 'string', describe: 'restore it under this name (its old one may be taken)' }),
          handler: withErrors(ctx, async (argv) => {
            const as = argv['as'] === undefined ? undefined : volumeName(String(argv['as']));
            const restored = await withMeta(argv, async (meta) => {
              const t = await findTrashed(meta, stringArg(argv, 'volume'));
              return meta.restoreFromTrash(t.volume.id, as);
            });
            emit(ctx.io, isJson(argv), restored, (v) => [`Restored volume ${v.name} (id ${v.id}) from the trash`]);
          }),
        })
        .command({
          command: 'purge [volume]',
          describe:
            'Delete a volume in the trash for good (or every one with --all): its shards and snapshots are removed in the background',
          builder: (a: Argv) =>
            clusterOptions(a)
              .positional('volume', { type: 'string', describe: 'its name or id' })
              .option('all', { type: 'boolean', default: false, describe: 'purge every volume in the trash' }),
          handler: withErrors(ctx, async (argv) => {
            const purged = await withMeta(argv, async (meta) => {
              if (argv['all'] === true) {
                const out: TrashRecord[] = [];
                for (const t of await meta.listTrash()) out.push(await meta.purgeTrash(t.volume.id));
                return out;
              }
              if (typeof argv['volume'] !== 'string')
                throw new NotFoundError('Name the volume to purge (name or id), or pass --all');
              return [await meta.purgeTrash((await findTrashed(meta, argv['volume'])).volume.id)];
            });
            const gc = purged.length === 0 ? null : ctx.startBackgroundGc(argv);
            emit(
              ctx.io,
              isJson(argv),
              { purged: purged.map((t) => ({ name: t.volume.name, id: t.volume.id })), gcPid: gc },
              (r) =>
                r.purged.length === 0
                  ? ['The trash is empty.']
                  : [
                      `Purged ${r.purged.map((p) => `${p.name} (${p.id})`).join(', ')}; shards are being removed in the background${gc === null ? ' (run cairnctl gc to finish)' : ` (pid ${gc})`}`,
                    ],
            );
          }),
        })
        .demandCommand(1, 'Name an action: list, restore or purge'),
    handler: () => undefined,
  };
}
