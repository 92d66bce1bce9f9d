/** `cairnctl gc`: remove the shards of deleted volumes and snapshots from every target. Safe to run any time. */
import type { Argv } from 'yargs';
import { collectGarbage, collectSnapshots, sweepOrphans } from '../repair/index.js';
import { journalClientFor, storeForTarget } from '../api/index.js';
import { errorMessage, formatBytes, type ShardStore } from '../core/index.js';
import { clusterOptions, isJson, withMeta } from './common.js';
import { type CliContext, withErrors } from './context.js';
import { emit } from './output.js';

export function gcCommand(ctx: CliContext) {
  return {
    command: 'gc',
    describe:
      'Delete the shards of deleted volumes and what deleted snapshots alone held (volume and snapshot delete start this in the background)',
    builder: (y: Argv) =>
      clusterOptions(y).option('orphans', {
        type: 'boolean',
        default: true,
        describe:
          'also delete shards no extent points to (stale copies, crashed writers) and map pages no root reaches',
      }),
    handler: withErrors(ctx, async (argv) => {
      const report = await withMeta(argv, async (meta) => {
        const stores = new Map<string, ShardStore>();
        try {
          for (const target of await meta.listTargets()) stores.set(target.name, storeForTarget(target, ctx.secrets));
          const journalNodes = (await meta.listTargets()).filter((t) => t.kind === 'node' && t.journal !== undefined);
          const deleted = await collectGarbage(meta, stores, {
            // The journal segments of a deleted volume, on every node that serves the journal.
            trimJournals: async (volumeId) => {
              const failures: string[] = [];
              for (const t of journalNodes) {
                const client = journalClientFor(ctx.secrets, {
                  name: t.name,
                  address: t.journal!,
                  tls: t.tls === true,
                });
                try {
                  await client.trim({ volume: volumeId, deleted: true });
                } catch (err) {
                  failures.push(`node ${t.name}: ${errorMessage(err)}`);
                } finally {
                  client.close();
                }
              }
              if (failures.length > 0) throw new Error(failures.join('; '));
            },
          });
          // Before the sweep: the sweep keeps a deleted snapshot's shards until this frees them.
          const snapshots = await collectSnapshots(meta, stores);
          const orphans = argv['orphans']
            ? await sweepOrphans(meta, stores)
            : { shardsScanned: 0, orphansDeleted: 0, pagesDeleted: 0, errors: [] };
          return {
            ...deleted,
            orphansScanned: orphans.shardsScanned,
            orphansDeleted: orphans.orphansDeleted,
            mapPagesDeleted: orphans.pagesDeleted,
            snapshots: snapshots.snapshots,
            snapshotShardsDeleted: snapshots.shardsDeleted,
            snapshotBytesFreed: snapshots.bytesFreed,
            snapshotsWaiting: snapshots.waiting,
            errors: [...deleted.errors, ...snapshots.errors, ...orphans.errors],
          };
        } finally {
          for (const s of stores.values()) s.close?.();
        }
      });
      emit(ctx.io, isJson(argv), report, (r) => [
        `Collected ${r.volumes} deleted volume(s): ${r.shardsDeleted} shard(s) removed`,
        `Collected ${r.snapshots} deleted snapshot(s): ${r.snapshotShardsDeleted} shard(s) removed, ${formatBytes(r.snapshotBytesFreed)} (${r.snapshotBytesFreed} bytes) freed`,
        ...(r.snapshotsWaiting === 0
          ? []
          : [
              `  ${r.snapshotsWaiting} deleted snapshot(s) wait: each is a branch point of rollbacks (three or more neighbours); they go once their neighbours are deleted`,
            ]),
        `Swept ${r.orphansScanned} shard(s) of live volumes: ${r.orphansDeleted} orphan(s) removed, ${r.mapPagesDeleted} unreachable map page copies removed`,
        ...r.errors.map((e) => `  not finished: ${e}`),
      ]);
      if (report.errors.length > 0) ctx.exitCode = 1;
    }),
  };
}
