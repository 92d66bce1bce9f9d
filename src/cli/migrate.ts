/**
 * `cairnctl migrate`: moves every volume's extent map from per-extent etcd keys (Cairn before map
 * pages) into map pages on the shard targets, keeping one root per volume in etcd. Idempotent and
 * resumable: run it again after any stop. A volume attached by a writer is reported, not waited for.
 */
import type { Argv } from 'yargs';
import { errorMessage } from '../core/index.js';
import { migrateVolumeMap, type MigrateResult } from '../frontend/index.js';
import { clusterOptions, isJson, withMeta } from './common.js';
import { type CliContext, withErrors } from './context.js';
import { emit } from './output.js';

export function migrateCommand(ctx: CliContext) {
  return {
    command: 'migrate',
    describe:
      'Move extent maps kept as per-extent etcd keys (older Cairn) into map pages; idempotent, resumable, with progress',
    builder: (y: Argv) =>
      clusterOptions(y)
        .option('volume', { type: 'string', describe: 'only this volume' })
        .option('dry-run', { type: 'boolean', default: false, describe: 'say what would be migrated, change nothing' }),
    handler: withErrors(ctx, async (argv) => {
      const json = isJson(argv);
      const report = await withMeta(argv, async (meta) => {
        const volumes =
          argv['volume'] === undefined ? await meta.listVolumes() : [await meta.requireVolume(String(argv['volume']))];
        const results: (MigrateResult | { volume: string; outcome: 'failed'; error: string })[] = [];
        for (const volume of volumes) {
          try {
            results.push(
              await migrateVolumeMap(meta, volume, {
                dryRun: argv['dry-run'] === true,
                onProgress: (p) => {
                  if (!json) ctx.io.err(`${p.volume}: ${p.extentsDone}/${p.extentsTotal} extents in map pages`);
                },
              }),
            );
          } catch (err) {
            results.push({ volume: volume.name, outcome: 'failed', error: errorMessage(err) });
          }
        }
        return { volumes: results };
      });
      emit(ctx.io, json, report, (r) =>
        r.volumes.length === 0
          ? ['No volumes']
          : r.volumes.map((v) =>
              'error' in v
                ? `${v.volume}: failed: ${v.error}`
                : `${v.volume}: ${v.outcome}${v.outcome === 'nothing to do' ? '' : ` (${v.extents} extents${v.pagesWritten > 0 ? `, ${v.pagesWritten} pages written` : ''})`}`,
            ),
      );
      if (report.volumes.some((v) => v.outcome === 'failed')) ctx.exitCode = 1;
    }),
  };
}
