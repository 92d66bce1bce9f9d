/**
 * A serving frontend process, assembled: etcd metadata, the codec pool, the volume provider, the
 * NBD server on TCP and/or a Unix socket, and optionally Prometheus metrics. `cairnctl nbd serve`
 * parses its flags into FrontendServeOptions and calls startFrontend(); stop() undoes it all in
 * order (stop accepting, flush and detach every volume, release locks, close the pool).
 *
 * What it keeps true: a start that fails half-way releases what it took before it throws.
 */
import { rmSync } from 'node:fs';
import { LimitLog, WaitingBudget, errorMessage, type Clock } from '../core/index.js';
import { CodecPool } from '../codec/index.js';
import { EtcdMeta } from '../meta/index.js';
import { NbdServer, type NbdLimits, type NbdTlsOptions } from '../nbd/index.js';
import { createFrontendMetrics, serveMetrics, type FrontendMetrics, type MetricsServer } from '../metrics/index.js';
import { IoStatsPublisher } from './io_stats.js';
import { readTopology, type SecretSource } from '../api/index.js';
import {
  SharedCacheBudget,
  cacheBudgetBytesDefault,
  publishBytesMaxDefault,
  type WriteBackCacheOptions,
} from '../cache/index.js';
import { frontendLimitLogIntervalMs } from './limits.js';
import { VolumeFrontend } from './provider.js';
import type { Kek } from '../crypt/index.js';

export interface FrontendServeOptions {
  readonly etcdEndpoints: readonly string[];
  readonly etcdTimeoutMs: number;
  readonly secrets: SecretSource;
  readonly owner: string;
  readonly tcp?: { readonly host: string; readonly port: number };
  readonly socket?: string;
  readonly readOnly: boolean;
  readonly forceTakeover: boolean;
  readonly lockWaitMs: number;
  /** How long a volume with no clients left retries a failing final flush (`--final-flush-retry`). */
  readonly finalFlushRetryMs?: number;
  readonly cache: Omit<WriteBackCacheOptions, 'readOnly' | 'log' | 'publishBudget' | 'onPublishWait' | 'sharedCache'>;
  /** Caps on NBD connections and WRITE bytes in flight (`--max-connections`, ...). */
  readonly nbdLimits?: Partial<NbdLimits>;
  /** Volumes attached at once (`--max-volumes`). */
  readonly maxVolumes?: number;
  /** Extent image bytes published at once across volumes (`--publish-budget`). */
  readonly publishBytesMax?: number;
  /** Clean cache bytes of all volumes together (`--cache-budget`). */
  readonly cacheBudgetBytes?: number;
  readonly threads?: number;
  /** The zone this frontend runs in (`--zone`): reads prefer shards there. Absent: no preference. */
  readonly zone?: string;
  readonly metricsListen?: { readonly host: string; readonly port: number };
  /** NBD_OPT_STARTTLS (`--tls` and friends); absent: no TLS. */
  readonly tls?: NbdTlsOptions;
  /** Key-encryption keys for encrypted volumes (`--kek-file`, CAIRN_KEK_FILE). */
  readonly keks?: readonly Kek[] | (() => readonly Kek[]);
  readonly clock?: Clock;
  readonly log: (line: string) => void;
  readonly warn: (line: string) => void;
}

export interface ServingFrontend {
  /** Where clients connect: `nbd://HOST:PORT` and/or `nbd+unix:///VOLUME?socket=PATH`. */
  readonly where: readonly string[];
  /** The metrics address, when serving metrics. */
  readonly metricsAddress: string | undefined;
  /** Stops accepting, flushes and detaches every volume, releases everything. Never throws. */
  stop(): Promise<void>;
}

export async function startFrontend(options: FrontendServeOptions): Promise<ServingFrontend> {
  const { log } = options;
  const metrics =
    options.metricsListen === undefined
      ? undefined
      : createFrontendMetrics({
          onError: (what, err) => options.warn(`metrics: ${what} failed: ${errorMessage(err)}`),
        });
  const meta = new EtcdMeta(options.etcdEndpoints, { timeoutMs: options.etcdTimeoutMs });
  const undo: (() => Promise<void> | void)[] = [() => meta.close()];
  const unwind = async (): Promise<void> => {
    for (const step of undo.reverse()) {
      try {
        await step();
      } catch (err) {
        log(`shutdown: ${errorMessage(err)}`);
      }
    }
    undo.length = 0;
  };
  try {
    await meta.requireCluster();
    if (options.zone !== undefined) await checkZone(meta, options.zone, { log, warn: options.warn });
    const pool = await CodecPool.start(options.threads === undefined ? {} : { threads: options.threads });
    undo.push(() => pool.close());
    // Shared by every volume: flushes and folds take their images' bytes before building them.
    const publishBudget = new WaitingBudget(options.publishBytesMax ?? publishBytesMaxDefault);
    const limitHit = (limit: string): void => metrics?.limitHit(limit);
    const publishLog = new LimitLog(log, limitHit, frontendLimitLogIntervalMs);
    const sharedCache = new SharedCacheBudget(options.cacheBudgetBytes ?? cacheBudgetBytesDefault, (dropped, held) =>
      publishLog.hit(
        'cache_bytes',
        `dropped ${dropped} bytes of the least recently used clean cache: volumes hold ${held} clean bytes (--cache-budget ${options.cacheBudgetBytes ?? cacheBudgetBytesDefault})`,
      ),
    );
    const frontend = new VolumeFrontend({
      meta,
      pool,
      secrets: options.secrets,
      owner: options.owner,
      readOnly: options.readOnly,
      forceTakeover: options.forceTakeover,
      lockWaitMs: options.lockWaitMs,
      cache: {
        ...options.cache,
        publishBudget,
        sharedCache,
        onPublishWait: (bytes) =>
          publishLog.hit(
            'publish_bytes',
            `a flush or fold waits to publish ${bytes} bytes of extent images: ${publishBudget.inUse} bytes are being published (--publish-budget ${publishBudget.max})`,
          ),
      },
      ...(options.maxVolumes === undefined ? {} : { maxVolumes: options.maxVolumes }),
      onLimit: limitHit,
      ...(options.zone === undefined ? {} : { zone: options.zone }),
      ...(options.keks === undefined ? {} : { keks: options.keks }),
      log,
      ...(options.clock === undefined ? {} : { clock: options.clock }),
      ...(options.finalFlushRetryMs === undefined ? {} : { finalFlushRetryMs: options.finalFlushRetryMs }),
      ...(metrics === undefined
        ? {}
        : {
            onFlush: (volume, extents) => metrics.flush(volume, extents),
            onFinalFlush: (volume, event) => metrics.finalFlush(volume, event),
          }),
    });
    undo.push(() => frontend.close());
    // The API's IO chart reads these counters from etcd (io_stats.ts); metrics are separate.
    const ioStats = new IoStatsPublisher(meta, options.owner, log);
    ioStats.start();
    undo.push(() => ioStats.stop());
    const server = new NbdServer({
      provider: frontend,
      readOnly: options.readOnly,
      log,
      ...(options.nbdLimits === undefined ? {} : { limits: options.nbdLimits }),
      onLimit: limitHit,
      onRequest: (command, bytes) => {
        const counted = ioStats.observe(command, bytes);
        const measured = metrics?.nbdRequest(command, bytes);
        return (outcome) => {
          counted(outcome);
          measured?.(outcome);
        };
      },
      ...(options.tls === undefined ? {} : { tls: options.tls }),
    });
    undo.push(() => server.close());
    const where: string[] = [];
    if (options.tcp !== undefined) {
      await server.listenTcp(options.tcp.host, options.tcp.port);
      where.push(`${options.tls === undefined ? 'nbd' : 'nbds'}://${options.tcp.host}:${options.tcp.port}`);
    }
    if (options.socket !== undefined) {
      const socket = options.socket;
      // listenUnix replaces a stale socket file but refuses one a live server holds.
      await server.listenUnix(socket);
      undo.push(() => rmSync(socket, { force: true }));
      where.push(`nbd+unix:///VOLUME?socket=${socket}`);
    }
    let metricsServer: MetricsServer | undefined;
    if (metrics !== undefined && options.metricsListen !== undefined) {
      metricsServer = await serveFrontendMetrics(metrics, options.metricsListen, {
        meta,
        frontend,
        server,
        publishBudget,
        sharedCache,
        log,
      });
      const m = metricsServer;
      undo.push(() => m.close());
    }
    // Shut down in this order: metrics, socket file... then the NBD server stops accepting, the
    // frontend flushes and detaches, the pool and etcd close last (undo runs in reverse).
    return { where, metricsAddress: metricsServer?.address, stop: unwind };
  } catch (err) {
    await unwind();
    throw err;
  }
}

/**
 * Warns when no registered target is in the frontend's zone: every read then crosses zones, which
 * is allowed (targets may be added later) but more likely a mistyped --zone.
 */
async function checkZone(
  meta: EtcdMeta,
  zone: string,
  out: { log: (line: string) => void; warn: (line: string) => void },
): Promise<void> {
  const targets = await meta.listTargets();
  const inZone = targets.filter((t) => t.zone === zone).length;
  if (inZone > 0) {
    out.log(`zone ${zone}: reads prefer the ${inZone} registered targets in it`);
    return;
  }
  const zones = [...new Set(targets.map((t) => t.zone))].sort();
  out.warn(
    `--zone ${zone}: no registered target is in zone "${zone}" (zones: ${zones.join(', ') || 'none'}); reads will prefer no shard`,
  );
}

/**
 * Serves the frontend's metrics; gauges are read at each scrape from the frontend's status and,
 * for the health of the volumes it writes, the live topology (two etcd reads) and each such
 * volume's last shard census (one read each). When etcd does
 * not answer, that scrape has no health gauges rather than stale ones.
 */
async function serveFrontendMetrics(
  metrics: FrontendMetrics,
  listen: { host: string; port: number },
  from: {
    meta: EtcdMeta;
    frontend: VolumeFrontend;
    server: NbdServer;
    publishBudget: WaitingBudget;
    sharedCache: SharedCacheBudget;
    log: (line: string) => void;
  },
): Promise<MetricsServer> {
  metrics.snapshotFrom(async () => {
    const topology = await readTopology(from.meta).catch((err: unknown) => {
      from.log(`metrics: cannot read the topology for volume health: ${errorMessage(err)}`);
      return undefined;
    });
    const volumes = await from.frontend.status(
      topology === undefined ? {} : { topology, census: (volumeId) => from.meta.getCensus(volumeId).catch(() => null) },
    );
    return {
      volumes: volumes.map((v) => ({
        name: v.name,
        dirtyBytes: v.dirtyBytes,
        cachedBytes: v.cachedBytes,
        connections: v.handles,
        readDegradedExtents: v.degradedExtents,
        ...(v.finalFlush === undefined ? {} : { finalFlushAttempts: v.finalFlush.attempts }),
        shardReads: v.shardReads,
        crossZoneShardReads: v.crossZoneShardReads,
        ...(v.health === undefined ? {} : { health: v.health }),
      })),
    };
  });
  metrics.loadFrom(() => ({
    connections: from.server.connectionCount,
    writeBytesInFlight: from.server.writeBytesInFlight,
    publishBytesInFlight: from.publishBudget.inUse,
    attachedVolumes: from.frontend.attachedCount,
    cleanCacheBytes: from.sharedCache.heldBytes,
  }));
  return serveMetrics(metrics, { ...listen, log: from.log });
}
