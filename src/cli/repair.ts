/**
 * `cairnctl repair` and `cairnctl scrub`: keep every extent at k+m good shards.
 *
 * The background repairer is `cairnctl repair --daemon`: run it anywhere that reaches etcd and
 * the targets (k8s/: a one-replica Deployment). Several may run; an etcd lease elects one leader,
 * so a second copy is a hot standby rather than a competing writer. It lives apart from the
 * frontends because repair must also cover volumes nobody has attached, and apart from cairnd
 * because rebuilding needs k shards from other nodes and the codec, which a storage node has no
 * reason to carry.
 */
import type { Argv } from 'yargs';
import { hostname } from 'node:os';
import { errorMessage, formatBytes, parseSize, type ShardStore } from '../core/index.js';
import {
  censusIntervalMsDefault,
  planRebalance,
  planRepair,
  repairMapPages,
  repairSnapshots,
  runCensus,
  runRepair,
  runScrub,
  type CensusReport,
  type RepairProgress,
  type RepairStores,
  type ScrubReport,
  type SnapshotRepairReport,
} from '../repair/index.js';
import { storeForTarget } from '../api/index.js';
import { CodecPool } from '../codec/index.js';
import { keys, type EtcdMeta } from '../meta/index.js';
import { createFrontendMetrics, serveMetrics } from '../metrics/index.js';
import { parseHostPort } from '../shard/index.js';
import { clusterOptions, isJson, withMeta, stringArg } from './common.js';
import { type CliContext, withErrors } from './context.js';
import { emit } from './output.js';
import { extentRanges } from './status.js';

/** Shard stores for every registered target, opened on first use. */
async function targetStores(
  meta: EtcdMeta,
  ctx: CliContext,
): Promise<{ store(target: string): ShardStore; zoneOf(target: string): string | undefined; close(): void }> {
  const records = new Map((await meta.listTargets()).map((t) => [t.name, t]));
  const open = new Map<string, ShardStore>();
  return {
    store(target: string): ShardStore {
      let s = open.get(target);
      if (s === undefined) {
        const record = records.get(target);
        if (record === undefined) throw new Error(`target "${target}" is not registered`);
        s = storeForTarget(record, ctx.secrets);
        open.set(target, s);
      }
      return s;
    },
    zoneOf: (target) => records.get(target)?.zone,
    close() {
      for (const s of open.values()) s.close?.();
    },
  };
}

/** --max-bytes-per-second (alias --rate) in bytes, or undefined when not given. */
export function rateFrom(argv: Record<string, unknown>): number | undefined {
  const text = argv['max-bytes-per-second'];
  return text === undefined ? undefined : parseSize(String(text), '--max-bytes-per-second');
}

/** Runs `work` with a codec pool and the stores of every registered target; closes both after. */
export async function withRepairTools<T>(
  meta: EtcdMeta,
  ctx: CliContext,
  work: (pool: CodecPool, stores: RepairStores) => Promise<T>,
): Promise<T> {
  const pool = await CodecPool.start();
  const stores = await targetStores(meta, ctx);
  try {
    return await work(pool, stores);
  } finally {
    stores.close();
    await pool.close();
  }
}

function progressLine(p: RepairProgress): string {
  const width = 30;
  const fraction = p.extentsTotal === 0 ? 1 : p.extentsDone / p.extentsTotal;
  const bar = '#'.repeat(Math.round(fraction * width)).padEnd(width, '-');
  const eta = p.etaSeconds === null ? '?' : `${p.etaSeconds}s`;
  return `[${bar}] ${(fraction * 100).toFixed(0)}% ${p.extentsDone}/${p.extentsTotal} extents, ${formatBytes(p.bytesWritten)} written, ${formatBytes(p.bytesPerSecond)}/s, ETA ${eta}`;
}

const rateOption = {
  type: 'string',
  alias: 'rate',
  describe: 'limit on bytes read + written per second, e.g. 50MiB',
} as const;

export function repairCommands(ctx: CliContext) {
  const repair = {
    command: 'repair',
    describe: 'Rebuild shards lost with down, removed or draining targets, most-degraded extents first',
    builder: (y: Argv) =>
      clusterOptions(y)
        .option('volume', { type: 'string', describe: 'only this volume' })
        .option('dry-run', { type: 'boolean', default: false, describe: 'show what would be repaired, change nothing' })
        .option('max-bytes-per-second', rateOption)
        .option('daemon', {
          type: 'boolean',
          default: false,
          describe: 'keep running: repair whenever something is degraded (one leader per cluster)',
        })
        .option('interval', { type: 'number', default: 30_000, describe: 'ms between scans with --daemon' })
        .option('scrub-interval', {
          type: 'number',
          default: 24 * 3600 * 1000,
          describe: 'ms between background scrubs with --daemon (0: never)',
        })
        .option('metrics-listen', {
          type: 'string',
          describe: 'HOST:PORT to serve Prometheus metrics (repair backlog and rate) on GET /metrics',
        })
        .option('scrub-rate', {
          type: 'string',
          default: '10MiB',
          describe: 'bytes per second a background scrub may read',
        })
        .option('census-interval', {
          type: 'number',
          default: censusIntervalMsDefault,
          describe:
            'ms between shard censuses with --daemon: list every live node against the extent map, no data read, and rebuild shards missing from live nodes (0: never)',
        }),
    handler: withErrors(ctx, async (argv) => {
      const maxBytesPerSecond = rateFrom(argv);
      await withMeta(argv, async (meta) => {
        const pool = argv['dry-run'] ? undefined : await CodecPool.start();
        const metrics = argv['metrics-listen'] === undefined ? undefined : createFrontendMetrics();
        const metricsServer =
          metrics === undefined
            ? undefined
            : await serveMetrics(metrics, parseHostPort(String(argv['metrics-listen']), '--metrics-listen address'));
        const repairMetrics = metrics?.repair();
        const stores = await targetStores(meta, ctx);
        try {
          const once = async () => {
            const plan = await planRepair(meta, argv['volume'] === undefined ? {} : { volume: String(argv['volume']) });
            repairMetrics?.planned(plan.items.length, plan.unrecoverable.length);
            // Map pages first: the extent repairs below publish through them.
            const mapPages = await repairMapPages(meta, {
              dryRun: argv['dry-run'] === true || pool === undefined,
              ...(argv['volume'] === undefined ? {} : { volume: String(argv['volume']) }),
            });
            if (argv['daemon'] && (mapPages.copiesWritten > 0 || mapPages.errors.length > 0))
              ctx.io.err(
                `map pages: ${mapPages.copiesWritten} copies rewritten${mapPages.errors.length > 0 ? `; ${mapPages.errors.join('; ')}` : ''}`,
              );
            // Snapshots after the live map (what the live repair moved, they adopt without copying):
            // run below, after runRepair; a daemon with nothing live to do still covers them.
            const snapshotPhase = async (): Promise<SnapshotRepairReport | null> => {
              if (argv['dry-run'] === true || pool === undefined) return null;
              const r = await repairSnapshots(
                meta,
                stores,
                pool,
                argv['volume'] === undefined ? {} : { volume: String(argv['volume']) },
              );
              if (argv['daemon'] && (r.snapshotsRepaired > 0 || r.errors.length > 0))
                ctx.io.err(snapshotLines(r).join('\n'));
              return r;
            };
            // A daemon speaks only when there is something to do.
            if (argv['daemon'] && plan.items.length === 0 && plan.unrecoverable.length === 0) {
              await snapshotPhase();
              return;
            }
            if (argv['dry-run'] || pool === undefined) {
              emit(
                ctx.io,
                isJson(argv),
                {
                  extentsScanned: plan.extentsScanned,
                  toRepair: plan.items,
                  unrecoverable: plan.unrecoverable,
                  bytesToWrite: plan.bytesToWrite,
                  mapPageCopiesMissing: mapPages.copiesMissing,
                },
                (r) => [
                  `Scanned ${r.extentsScanned} extents: ${r.toRepair.length} to repair (${formatBytes(r.bytesToWrite)} to write), ${r.unrecoverable.length} with more than m shards lost`,
                  ...r.toRepair
                    .slice(0, 20)
                    .map(
                      (i) =>
                        `  volume ${i.volume} extent ${i.extent}: shards ${i.lost.join(', ')}${i.draining.length > 0 ? ` (draining: ${i.draining.join(', ')})` : ''}`,
                    ),
                ],
              );
              return;
            }
            const tty = process.stderr.isTTY === true && !isJson(argv);
            let lastPrint = 0;
            const countProgress = repairMetrics?.progress();
            const report = await runRepair(meta, stores, pool, plan, {
              ...(maxBytesPerSecond === undefined ? {} : { maxBytesPerSecond }),
              onProgress: (p) => {
                countProgress?.(p);
                if (isJson(argv)) return;
                const now = Date.now();
                if (tty) process.stderr.write(`\r${progressLine(p)}`);
                else if (now - lastPrint > 2000 || p.extentsDone === p.extentsTotal) {
                  ctx.io.err(progressLine(p));
                  lastPrint = now;
                }
              },
            });
            if (tty) process.stderr.write('\n');
            const snapshots = await snapshotPhase();
            emit(ctx.io, isJson(argv), { ...report, mapPages, snapshots }, (r) => [
              `Map pages: ${r.mapPages.pages} checked, ${r.mapPages.copiesWritten} copies written (${r.mapPages.copiesMissing} were missing)`,
              `Repaired ${r.extentsDone - r.failed - r.skippedChanged} of ${r.extentsTotal} extents: ${r.shardsRebuilt} shards rebuilt, ${formatBytes(r.bytesWritten)} written at ${formatBytes(r.bytesPerSecond)}/s`,
              ...(r.skippedChanged > 0
                ? [`${r.skippedChanged} extents were rewritten by their writer meanwhile (nothing to repair)`]
                : []),
              ...(r.unrecoverable > 0
                ? [`${r.unrecoverable} extents have more than m shards lost: they need their targets back`]
                : []),
              ...r.errors.map((e) => `  failed: ${e}`),
              ...(r.snapshots === null ? [] : snapshotLines(r.snapshots)),
            ]);
            if (
              report.failed > 0 ||
              report.unrecoverable > 0 ||
              mapPages.errors.length > 0 ||
              (snapshots !== null && (snapshots.errors.length > 0 || snapshots.unrecoverable > 0))
            )
              ctx.exitCode = 1;
            for (const e of mapPages.errors) ctx.io.err(`  map page: ${e}`);
          };
          if (!argv['daemon']) return await once();
          const scrubEveryMs = Number(argv['scrub-interval']);
          const scrubRate = parseSize(stringArg(argv, 'scrub-rate'), '--scrub-rate');
          const censusEveryMs = Number(argv['census-interval']);
          let lastScrub = Date.now();
          let lastCensus = 0;
          await runAsLeader(
            meta,
            Number(argv['interval']),
            async () => {
              try {
                await once();
                if (censusEveryMs > 0 && pool !== undefined && Date.now() - lastCensus >= censusEveryMs) {
                  lastCensus = Date.now();
                  const r = await censusAndHeal(meta, stores, pool, { maxBytesPerSecond: scrubRate });
                  repairMetrics?.census(r.census.absentShards, r.census.durationMs);
                  if (r.census.absentShards > 0 || r.census.unlisted.length > 0) ctx.io.err(censusLines(r).join('\n'));
                }
                if (scrubEveryMs > 0 && pool !== undefined && Date.now() - lastScrub >= scrubEveryMs) {
                  lastScrub = Date.now();
                  const r = await runScrub(meta, stores, pool, { maxBytesPerSecond: scrubRate });
                  ctx.io.err(
                    `scrub: ${r.shardsChecked} shards verified, ${r.corrupt} corrupt, ${r.missing} missing, ${r.healed} rewritten`,
                  );
                }
              } catch (err) {
                ctx.io.err(`repair pass failed: ${errorMessage(err)}`);
              }
            },
            (line) => ctx.io.err(line),
          );
        } finally {
          stores.close();
          await metricsServer?.close();
          await pool?.close();
        }
      });
    }),
  };

  const scrub = {
    command: 'scrub',
    describe:
      'Read every shard, verify every block against its extent record and every stripe against its parity, and rewrite bad blocks from the good ones (exit 1 if any could not be healed)',
    builder: (y: Argv) =>
      clusterOptions(y)
        .option('volume', { type: 'string', describe: 'only this volume' })
        .option('max-bytes-per-second', rateOption),
    handler: withErrors(ctx, async (argv) => {
      const maxBytesPerSecond = rateFrom(argv);
      const progress = extentProgress(ctx, isJson(argv), 'scrubbed');
      const report = await withMeta(argv, async (meta) => {
        const data = await withRepairTools(meta, ctx, (pool, stores) =>
          runScrub(meta, stores, pool, {
            ...(argv['volume'] === undefined ? {} : { volume: String(argv['volume']) }),
            ...(maxBytesPerSecond === undefined ? {} : { maxBytesPerSecond }),
            onExtent: progress.update,
          }),
        );
        // The map pages too: every copy read and checked against its parent's checksum.
        const mapPages = await repairMapPages(meta, {
          verify: true,
          ...(argv['volume'] === undefined ? {} : { volume: String(argv['volume']) }),
        });
        return { ...data, mapPages, unhealed: [...data.unhealed, ...mapPages.errors.map((e) => `map page: ${e}`)] };
      }).finally(progress.end);
      emit(ctx.io, isJson(argv), report, (r) => [
        `Scrubbed ${r.extents} extents: ${r.shardsChecked} shards, ${formatBytes(r.bytesRead)} read and verified`,
        `map pages: ${r.mapPages.pages} verified, ${r.mapPages.copiesCorrupt} corrupt copies, ${r.mapPages.copiesWritten} copies rewritten`,
        `corrupt: ${r.corrupt}, missing: ${r.missing}, wrong by parity: ${r.inconsistent} (parity checked on ${r.parityChecked} extents)`,
        `rewritten: ${r.healed} shards (${r.blocksRebuilt} blocks rebuilt)`,
        ...r.unhealed.map((u) => `  not healed: ${u}`),
      ]);
      if (report.unhealed.length > 0) ctx.exitCode = 1;
    }),
  };
  const census = {
    command: 'census',
    describe:
      'List every live node against the extent map (no data read) to find published shards missing from nodes that are up; record the result for status, and with --heal rebuild them in place',
    builder: (y: Argv) =>
      clusterOptions(y)
        .option('volume', { type: 'string', describe: 'only this volume' })
        .option('heal', { type: 'boolean', default: false, describe: 'rebuild the missing shards from the others' })
        .option('max-bytes-per-second', rateOption),
    handler: withErrors(ctx, async (argv) => {
      const maxBytesPerSecond = rateFrom(argv);
      const volume = argv['volume'] === undefined ? {} : { volume: String(argv['volume']) };
      const result = await withMeta(argv, async (meta) =>
        withRepairTools(meta, ctx, (pool, stores) =>
          argv['heal']
            ? censusAndHeal(meta, stores, pool, {
                ...volume,
                ...(maxBytesPerSecond === undefined ? {} : { maxBytesPerSecond }),
              })
            : runCensus(meta, stores, volume).then((c) => ({ census: c, heal: null })),
        ),
      );
      emit(ctx.io, isJson(argv), result, censusLines);
      if (result.census.unlisted.length > 0 || (result.heal?.unhealed.length ?? 0) > 0) ctx.exitCode = 1;
    }),
  };
  const rebalance = {
    command: 'rebalance',
    describe:
      'Move shards to where placement now puts them (after nodes join): only onto targets that hold no shard of the extent',
    builder: (y: Argv) =>
      clusterOptions(y)
        .option('volume', { type: 'string', describe: 'only this volume' })
        .option('to', { type: 'string', describe: 'only moves onto this target (e.g. the node that joined)' })
        .option('dry-run', { type: 'boolean', default: false })
        .option('max-bytes-per-second', rateOption),
    handler: withErrors(ctx, async (argv) => {
      const maxBytesPerSecond = rateFrom(argv);
      const result = await withMeta(argv, async (meta) => {
        const plan = await planRebalance(meta, {
          ...(argv['volume'] === undefined ? {} : { volume: String(argv['volume']) }),
          ...(argv['to'] === undefined ? {} : { to: String(argv['to']) }),
        });
        const moves = plan.items.map((i) => ({
          volume: i.volume,
          extent: i.extent,
          moves: [...(i.destinations ?? [])].map(([shard, to]) => ({ shard, to })),
        }));
        if (argv['dry-run']) return { extentsScanned: plan.extentsScanned, planned: moves, report: null };
        const report = await withRepairTools(meta, ctx, (pool, stores) =>
          runRepair(meta, stores, pool, plan, maxBytesPerSecond === undefined ? {} : { maxBytesPerSecond }),
        );
        return { extentsScanned: plan.extentsScanned, planned: moves, report };
      });
      const shards = result.planned.reduce((n, p) => n + p.moves.length, 0);
      emit(ctx.io, isJson(argv), result, (r) => [
        `Scanned ${r.extentsScanned} extents: ${shards} shards of ${r.planned.length} extents ${r.report === null ? 'would move' : 'moved'}`,
        ...(r.report === null ? [] : [`${formatBytes(r.report.bytesWritten)} copied; ${r.report.failed} failed`]),
        ...(r.report?.errors ?? []).map((e) => `  failed: ${e}`),
      ]);
      if (result.report !== null && result.report.failed > 0) ctx.exitCode = 1;
    }),
  };
  return { repair, scrub, census, rebalance };
}

/**
 * Runs `pass` every `intervalMs` while this process holds the repairer lease in etcd; a standby
 * retries each interval. Stops on SIGTERM/SIGINT.
 */
async function runAsLeader(
  meta: EtcdMeta,
  intervalMs: number,
  pass: () => Promise<void>,
  log: (line: string) => void,
): Promise<void> {
  const me = `${hostname()}/${process.pid}`;
  let stopping = false;
  const stop = () => {
    stopping = true;
  };
  process.once('SIGTERM', stop);
  process.once('SIGINT', stop);
  const lease = meta.client.lease(10);
  try {
    const leaseId = await meta.call('grant the repairer lease', () => lease.grant());
    while (!stopping) {
      const result = await meta
        .call('elect a repairer', () =>
          meta.client
            .if(keys.repairerLock(), 'Create', '==', 0)
            .then(meta.client.put(keys.repairerLock()).value(me).lease(leaseId))
            .commit(),
        )
        .catch(() => undefined);
      const leader = await meta
        .call('read the repairer', () => meta.client.get(keys.repairerLock()).string())
        .catch(() => null);
      if (result?.succeeded || leader === me) await pass();
      else log(`repairer standby: ${leader ?? 'nobody'} is the leader`);
      const until = Date.now() + intervalMs;
      while (!stopping && Date.now() < until) await new Promise((r) => setTimeout(r, 200));
    }
  } finally {
    await lease.revoke().catch(() => undefined);
  }
}

function snapshotLines(r: SnapshotRepairReport): string[] {
  return [
    `Snapshots: ${r.snapshotsRepaired} repaired: ${r.recordsAdopted} extents moved with the volume's repair, ${r.recordsRebuilt} rebuilt (${r.shardsRebuilt} shards, ${formatBytes(r.bytesWritten)})${r.unrecoverable > 0 ? `; ${r.unrecoverable} extents with more than m shards lost` : ''}`,
    ...r.errors.map((e) => `  snapshot: ${e}`),
  ];
}

/** A census, then a scrub of the extents it found shards missing from, then a census of those volumes again. */
async function censusAndHeal(
  meta: EtcdMeta,
  stores: RepairStores,
  pool: CodecPool,
  options: { volume?: string; maxBytesPerSecond?: number },
): Promise<{ census: CensusReport; heal: ScrubReport | null }> {
  const census = await runCensus(meta, stores, options.volume === undefined ? {} : { volume: options.volume });
  const only = new Map(census.volumes.filter((v) => v.extents.size > 0).map((v) => [v.volumeId, v.extents]));
  if (only.size === 0) return { census, heal: null };
  const absent = new Set(census.volumes.flatMap((v) => v.record.absent));
  const heal = await runScrub(meta, stores, pool, {
    only,
    absent,
    ...(options.maxBytesPerSecond === undefined ? {} : { maxBytesPerSecond: options.maxBytesPerSecond }),
  });
  // Record what is still missing, so status stops counting what was rebuilt.
  for (const v of census.volumes) if (v.extents.size > 0) await runCensus(meta, stores, { volume: v.volume });
  return { census, heal };
}

function censusLines(r: { census: CensusReport; heal: ScrubReport | null }): string[] {
  const c = r.census;
  return [
    `Census of ${c.volumes.length} volumes: ${c.targetsListed} node listings, ${c.keysListed} shards listed in ${c.durationMs} ms; ${c.absentShards} published shards missing from live nodes`,
    ...c.volumes
      .filter((v) => v.record.absentCount > 0)
      .map(
        (v) =>
          `  ${v.volume}: ${v.record.absentCount} missing in extents ${extentRanges([...v.extents].sort((a, b) => a - b).slice(0, 20))}`,
      ),
    ...c.unlisted.map((u) => `  not listed: ${u}`),
    ...(r.heal === null
      ? []
      : [
          `rebuilt in place: ${r.heal.healed} shards (${r.heal.blocksRebuilt} blocks)`,
          ...r.heal.unhealed.map((u) => `  not healed: ${u}`),
        ]),
  ];
}

/**
 * Progress of a long pass over extents on standard error, for a person: a line redrawn in place
 * on a terminal, else a line every 2 s and one at the end; nothing with --json.
 */
function extentProgress(
  ctx: CliContext,
  json: boolean,
  verb: string,
): { update: (done: number, total: number) => void; end: () => void } {
  const tty = process.stderr.isTTY === true && !json;
  let lastPrint = 0;
  let drawn = false;
  return {
    update: (done, total) => {
      if (json) return;
      const line = `${verb} ${done}/${total} extents (${total === 0 ? 100 : Math.floor((done / total) * 100)}%)`;
      const now = Date.now();
      if (tty) {
        process.stderr.write(`\r${line}`);
        drawn = true;
      } else if (now - lastPrint > 2000 || done === total) {
        ctx.io.err(line);
        lastPrint = now;
      }
    },
    end: () => {
      if (drawn) process.stderr.write('\n');
    },
  };
}
