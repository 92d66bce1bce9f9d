/**
 * `cairnctl snapshot create|list|delete|rollback` and the clone commands' shared helper: a
 * frontend in this process, for the work only a writer can do (taking a snapshot of a volume no
 * frontend holds, folding a journal before a rollback, flattening a clone).
 */
import { hostname } from 'node:os';
import type { Argv } from 'yargs';
import {
  InvalidArgumentError,
  errorMessage,
  formatBytes,
  parseVolumeRef,
  snapshotName,
  volumeName,
} from '../core/index.js';
import { CodecPool } from '../codec/index.js';
import { VolumeFrontend } from '../frontend/index.js';
import { VolumeLockedError, type EtcdMeta } from '../meta/index.js';
import { requireSnapshot, rollbackVolume, snapshotRows, takeSnapshot, type SnapshotRow } from '../api/index.js';
import type { SnapshotRecord } from '../meta/index.js';
import { apiOf, seg, viaApiOrMeta } from './via_api.js';
import { clusterOptions, isJson, keksOf, stringArg, table, withMeta } from './common.js';
import { type CliContext, withErrors } from './context.js';
import { emit } from './output.js';

/** Who this command is, in locks and requests. */
export const cliOwner = (): string => `${hostname()}/${process.pid} (cairnctl)`;

/**
 * Runs `work` with a frontend in this process that attaches volumes for writing without waiting
 * for another holder (VolumeLockedError at once), and detaches them (flush, fold) afterwards.
 */
export async function withLocalFrontend<T>(
  meta: EtcdMeta,
  ctx: CliContext,
  argv: Record<string, unknown>,
  work: (frontend: VolumeFrontend) => Promise<T>,
): Promise<T> {
  const keks = keksOf(argv);
  // Lazy: an export or a diff of a healthy volume never codes; an import starts the workers at its first write.
  const pool = await CodecPool.start({ lazy: true });
  const frontend = new VolumeFrontend({ meta, pool, secrets: ctx.secrets, owner: cliOwner(), lockWaitMs: 0, keks });
  try {
    return await work(frontend);
  } finally {
    await frontend.close();
    await pool.close();
  }
}

/** `VOL SNAP` or `VOL@SNAP` as two positionals' worth: the volume and snapshot names, checked. */
function volumeAndSnapshot(argv: Record<string, unknown>): { volume: string; snapshot: string } {
  const first = stringArg(argv, 'volume');
  const ref = parseVolumeRef(first);
  const snap = ref.snapshot ?? (typeof argv['snapshot'] === 'string' ? argv['snapshot'] : undefined);
  if (snap === undefined || (ref.snapshot !== undefined && argv['snapshot'] !== undefined))
    throw new InvalidArgumentError(
      `Name one snapshot: VOL SNAP or VOL@SNAP (got "${first}"${argv['snapshot'] === undefined ? '' : ` and "${String(argv['snapshot'])}"`})`,
    );
  return { volume: ref.volume, snapshot: snapshotName(snap) };
}

const snapshotPositionals = (a: Argv) =>
  clusterOptions(a)
    .positional('volume', { type: 'string', describe: 'the volume (or VOL@SNAP)' })
    .positional('snapshot', { type: 'string', describe: 'the snapshot: lowercase letters, digits, -' });

export function snapshotCommand(ctx: CliContext) {
  return {
    command: 'snapshot <action>',
    describe: 'Take, list, delete and roll back to point-in-time snapshots of a volume (no data is copied)',
    builder: (y: Argv) =>
      y
        .command({
          command: 'create <volume> [snapshot]',
          describe:
            'Take a crash-consistent snapshot: it holds every write acknowledged before it. An attached volume keeps serving (its writes wait while the snapshot is cut); a detached one is attached here for the moment it takes',
          builder: (a: Argv) =>
            snapshotPositionals(a)
              .option('timeout', {
                type: 'number',
                default: 60_000,
                describe: 'ms to wait for the frontend holding the volume to take it',
              })
              .example('$0 snapshot create pg-data before-upgrade', ''),
          handler: withErrors(ctx, async (argv) => {
            const { volume, snapshot } = volumeAndSnapshot(argv);
            const made = await viaApiOrMeta(
              argv,
              (api) => api.request<SnapshotRecord>('POST', `/volumes/${seg(volume)}/snapshots`, { name: snapshot }),
              (meta) =>
                takeSnapshot(meta, volume, snapshot, {
                  owner: cliOwner(),
                  answerMs: Number(argv['timeout']),
                  attachAndTake: () => withLocalFrontend(meta, ctx, argv, (f) => f.snapshot(volume, snapshot)),
                }),
            );
            emit(ctx.io, isJson(argv), made, (s) => [
              `Took snapshot ${volume}@${s.name}: ${s.root.written ?? 0} extents written, ${formatBytes(s.sizeBytes)}; read it as the NBD export ${volume}@${s.name}`,
            ]);
          }),
        })
        .command({
          command: 'list <volume>',
          describe: "List a volume's snapshots with the bytes each alone holds (what deleting it frees)",
          builder: (a: Argv) => clusterOptions(a).positional('volume', { type: 'string' }),
          handler: withErrors(ctx, async (argv) => {
            const volume = volumeName(stringArg(argv, 'volume'));
            const rows = await viaApiOrMeta(
              argv,
              (api) => api.request<SnapshotRow[]>('GET', `/volumes/${seg(volume)}/snapshots`),
              (meta) => snapshotRows(meta, volume),
            );
            emit(ctx.io, isJson(argv), rows, (list) =>
              list.length === 0
                ? ['No snapshots.']
                : table(
                    ['NAME', 'CREATED', 'SIZE', 'WRITTEN EXTENTS', 'UNIQUE', 'CLONES'],
                    list.map((r) => [
                      r.name,
                      r.createdAt,
                      formatBytes(r.sizeBytes),
                      String(r.writtenExtents),
                      `${formatBytes(r.uniqueBytes)} (${r.uniqueBytes} bytes)`,
                      r.clones.join(',') || '-',
                    ]),
                  ),
            );
          }),
        })
        .command({
          command: 'delete <volume> [snapshot]',
          describe:
            'Delete a snapshot; what it alone held is freed in the background (refused while volumes cloned from it exist)',
          builder: (a: Argv) =>
            snapshotPositionals(a).option('gc', {
              type: 'boolean',
              default: true,
              describe: 'start gc in the background to free what it held (--no-gc: leave that to the next cairnctl gc)',
            }),
          handler: withErrors(ctx, async (argv) => {
            const { volume, snapshot } = volumeAndSnapshot(argv);
            const api = apiOf(argv);
            if (api !== undefined) {
              const r = await api.request<{ deleted: string; gcPid: number | null }>(
                'DELETE',
                `/volumes/${seg(volume)}/snapshots/${seg(snapshot)}`,
              );
              emit(ctx.io, isJson(argv), { deleted: r.deleted, gcPid: r.gcPid }, () => [
                `Deleted snapshot ${r.deleted}; what it alone held is being freed in the background by the API server`,
              ]);
              return;
            }
            const deleted = await withMeta(argv, async (meta) => {
              const v = await meta.requireVolume(volume);
              return meta.deleteSnapshot(v.id, snapshot, v.name);
            });
            const gc = argv['gc'] === false ? null : ctx.startBackgroundGc(argv);
            emit(ctx.io, isJson(argv), { deleted: `${volume}@${deleted.name}`, gcPid: gc }, () => [
              gc === null
                ? `Deleted snapshot ${volume}@${deleted.name}; run cairnctl gc to free what it alone held`
                : `Deleted snapshot ${volume}@${deleted.name}; what it alone held is being freed in the background (gc, pid ${gc})`,
            ]);
          }),
        })
        .command({
          command: 'rollback <volume> [snapshot]',
          describe:
            "Make the volume's contents the snapshot's (the volume must be detached); what was written since becomes garbage, the snapshot stays",
          builder: snapshotPositionals,
          handler: withErrors(ctx, async (argv) => {
            const { volume, snapshot } = volumeAndSnapshot(argv);
            const done = await withMeta(argv, async (meta) => {
              const v = await meta.requireVolume(volume);
              await requireSnapshot(meta, v, snapshot);
              const holder = await meta.getLock(v.name);
              if (holder !== null)
                throw new VolumeLockedError(
                  `Cannot roll volume "${volume}" back: it is attached by ${holder.owner} (epoch ${holder.epoch}); detach it first`,
                  holder.owner,
                  holder.epoch,
                );
              // A journal left by a writer that died is folded first (attach, then detach here).
              const layout = await meta.getJournal(v.id);
              if (layout !== null && layout.segments.length > 0)
                await withLocalFrontend(meta, ctx, argv, async (f) => {
                  const h = await f.open(v.name, { readOnly: false });
                  await h.close();
                });
              const lock = await meta.acquireLock(v.name, cliOwner());
              try {
                const snap = await rollbackVolume(meta, lock, v, snapshot);
                return { volume: v.name, snapshot: snap.name, createdAt: snap.createdAt };
              } finally {
                await lock
                  .release()
                  .catch((err: unknown) => ctx.io.err(`cannot release the lock: ${errorMessage(err)}`));
              }
            });
            const gc = ctx.startBackgroundGc(argv);
            emit(ctx.io, isJson(argv), { ...done, gcPid: gc }, (d) => [
              `Rolled volume ${d.volume} back to snapshot ${d.snapshot} (taken ${d.createdAt}); what was written since is being removed in the background`,
            ]);
          }),
        })
        .demandCommand(1, 'Name an action: create, list, delete or rollback'),
    handler: () => undefined,
  };
}
