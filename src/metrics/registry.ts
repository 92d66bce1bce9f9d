/**
 * Cairn's metrics as typed objects over one prom-client Registry per process: createNodeMetrics()
 * for cairnd, createFrontendMetrics() for `cairnctl nbd serve`. Callers record events through
 * small methods (a request finished, a flush finished) and hand over a snapshot source for
 * gauges; nothing outside this folder touches prom-client.
 *
 * What it keeps true:
 * - Only metrics from catalog.ts are registered, each with the catalog's name, help, labels and
 *   buckets.
 * - Label values come from bounded sets: an NBD command or HTTP method outside the known lists
 *   becomes "other", so a client sending junk cannot grow the registry without bound.
 * - Gauges fed by a snapshot (and the per-volume shard read counters, running totals of the
 *   volume's engine) are refreshed once per scrape, before the text is rendered, and are reset
 *   first: a volume that was detached disappears instead of showing stale values. A snapshot
 *   source that fails leaves them empty for that scrape (the error is passed to `onError`), never
 *   the previous values.
 *
 * What it leaves out: serving the text over HTTP (http.ts) and reading any Cairn state itself;
 * the wiring (src/node/daemon.ts, src/cli/nbd.ts) says where numbers come from.
 */
import { readFileSync } from 'node:fs';
import { performance } from 'node:perf_hooks';
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import { metricSpecs, onDemandMetricKeys, type MetricComponent, type MetricKey, type MetricSpec } from './catalog.js';

/** NBD commands as label values (protocol names, lowercase); anything else is "other". */
export const nbdCommandLabels = [
  'read',
  'write',
  'flush',
  'trim',
  'cache',
  'write_zeroes',
  'block_status',
  'disc',
] as const;
/** Routes of the shard API as label values (see src/node/server.ts). */
export const nodeRouteLabels = ['shard', 'shard_list', 'health', 'other'] as const;
export type NodeRoute = (typeof nodeRouteLabels)[number];
const httpMethodLabels = new Set(['GET', 'PUT', 'HEAD', 'DELETE', 'POST']);

/** `READ` -> `read`, `WRITE_ZEROES` -> `write_zeroes`, `command 99` -> `other`. */
export function nbdCommandLabel(command: string): string {
  const label = command.toLowerCase();
  return (nbdCommandLabels as readonly string[]).includes(label) ? label : 'other';
}

/** An NBD request's outcome as a label: `OK` -> `ok`, `EIO` -> `eio`, `errno 99` -> `errno_99`. */
export function nbdOutcomeLabel(outcome: string): string {
  return outcome.toLowerCase().replace(/\s+/g, '_');
}

function methodLabel(method: string): string {
  return httpMethodLabels.has(method) ? method : 'other';
}

function routeLabel(route: string): NodeRoute {
  return (nodeRouteLabels as readonly string[]).includes(route) ? (route as NodeRoute) : 'other';
}

/** An HTTP status as a label; 0 (the connection closed before any response) is `aborted`. */
function statusLabel(status: number): string {
  if (status === 0) return 'aborted';
  return Number.isInteger(status) && status >= 100 && status <= 599 ? String(status) : 'other';
}

function cairnVersion(): string {
  try {
    // dist/src/metrics/registry.js -> the repository's package.json.
    const text = readFileSync(new URL('../../../package.json', import.meta.url), 'utf8');
    const version = (JSON.parse(text) as { version?: unknown }).version;
    return typeof version === 'string' ? version : 'unknown';
  } catch {
    return 'unknown';
  }
}

type Metric = Counter<string> | Gauge<string> | Histogram<string>;

/** A prom-client Registry holding the catalog's metrics for one component. */
class CatalogRegistry {
  readonly registry = new Registry();
  private readonly metrics = new Map<MetricKey, Metric>();
  private readonly refreshers: (() => Promise<void>)[] = [];

  constructor(
    readonly component: Exclude<MetricComponent, 'any'>,
    options: MetricsOptions,
  ) {
    if (options.defaultLabels !== undefined) this.registry.setDefaultLabels({ ...options.defaultLabels });
    if (options.processMetrics ?? true) collectDefaultMetrics({ register: this.registry });
    for (const [key, spec] of Object.entries(metricSpecs) as [MetricKey, MetricSpec][]) {
      if (spec.component === component || (spec.component === 'any' && !onDemandMetricKeys.has(key))) this.add(key);
    }
    this.gauge('buildInfo').set({ component, version: cairnVersion(), nodejs: process.version }, 1);
  }

  add(key: MetricKey): Metric {
    const existing = this.metrics.get(key);
    if (existing !== undefined) return existing;
    const spec: MetricSpec = metricSpecs[key];
    const common = { name: spec.name, help: spec.help, labelNames: [...spec.labels], registers: [this.registry] };
    let metric: Metric;
    if (spec.type === 'counter') metric = new Counter(common);
    else if (spec.type === 'gauge') metric = new Gauge(common);
    else metric = new Histogram({ ...common, buckets: [...(spec.buckets ?? [])] });
    this.metrics.set(key, metric);
    return metric;
  }

  counter(key: MetricKey): Counter<string> {
    const m = this.add(key);
    if (!(m instanceof Counter)) throw new TypeError(`${metricSpecs[key].name} is not a counter`);
    return m;
  }

  gauge(key: MetricKey): Gauge<string> {
    const m = this.add(key);
    if (!(m instanceof Gauge)) throw new TypeError(`${metricSpecs[key].name} is not a gauge`);
    return m;
  }

  histogram(key: MetricKey): Histogram<string> {
    const m = this.add(key);
    if (!(m instanceof Histogram)) throw new TypeError(`${metricSpecs[key].name} is not a histogram`);
    return m;
  }

  onScrape(refresh: () => Promise<void>): void {
    this.refreshers.push(refresh);
  }

  async text(): Promise<string> {
    for (const refresh of this.refreshers) await refresh();
    return this.registry.metrics();
  }
}

export interface MetricsOptions {
  /** Labels added to every series (cairnd adds node and zone). */
  readonly defaultLabels?: Readonly<Record<string, string>>;
  /** prom-client's process_* and nodejs_* metrics. Default true. */
  readonly processMetrics?: boolean;
  /** Told when a snapshot source fails during a scrape. */
  readonly onError?: (what: string, err: unknown) => void;
  /** Milliseconds, monotonic; tests pass their own. Default performance.now. */
  readonly nowMs?: () => number;
}

/** What an HTTP endpoint needs: the text and its content type. */
export interface MetricsSource {
  /** The Prometheus text exposition of every metric, after refreshing snapshot gauges. */
  text(): Promise<string>;
  readonly contentType: string;
}

export type RepairOutcome = 'repaired' | 'skipped' | 'failed' | 'unrecoverable';

/** Running totals of one repair run, as src/repair/repair.ts reports them to onProgress. */
export interface RepairRunTotals {
  /** Extents finished in any way (repaired, skipped or failed). */
  readonly extentsDone: number;
  readonly shardsRebuilt: number;
  readonly bytesWritten: number;
  /** Of extentsDone: skipped because a writer published a newer generation meanwhile. */
  readonly skippedChanged?: number;
  /** Of extentsDone: failed (too few shards readable, no destination, a store error). */
  readonly failed?: number;
}

/**
 * Metrics of a repair worker, registered the first time repair() is called.
 * @example
 * const repair = metrics.repair();
 * repair.planned(plan.items.length, plan.unrecoverable.length);
 * await runRepair(meta, stores, pool, plan, { onProgress: repair.progress() });
 */
export interface RepairMetrics {
  /** The latest plan: extents waiting for repair, and those that lost more than m shards. */
  planned(repairableExtents: number, unrecoverableExtents: number): void;
  /** One extent finished: `repaired` (shards rebuilt and published), `skipped`, `failed`, or `unrecoverable`. */
  extentDone(outcome: RepairOutcome): void;
  shardsRebuilt(count: number): void;
  bytesWritten(bytes: number): void;
  /**
   * A function for one run's onProgress: it turns the run's running totals into counter
   * increments (extents as repaired, skipped or failed). Use a new one per run.
   */
  progress(): (totals: RepairRunTotals) => void;
  /** The latest shard census: shards missing from live nodes, and how long it took. */
  census(absentShards: number, durationMs: number): void;
}

function repairMetricsOf(r: CatalogRegistry): RepairMetrics {
  const extents = r.counter('repairExtents');
  const pending = r.gauge('repairPending');
  const shards = r.counter('repairShards');
  const bytes = r.counter('repairBytes');
  const positive = (n: number): number => (Number.isFinite(n) && n > 0 ? n : 0);
  const censusAbsent = r.gauge('censusAbsent');
  const censusDuration = r.gauge('censusDuration');
  return {
    census: (absent, durationMs) => {
      censusAbsent.set({}, positive(absent));
      censusDuration.set({}, positive(durationMs) / 1000);
    },
    planned: (repairable, unrecoverable) => {
      pending.set({ state: 'repairable' }, repairable);
      pending.set({ state: 'unrecoverable' }, unrecoverable);
    },
    extentDone: (outcome) => extents.inc({ outcome }),
    shardsRebuilt: (count) => shards.inc(positive(count)),
    bytesWritten: (n) => bytes.inc(positive(n)),
    progress: () => {
      let last = { repaired: 0, skipped: 0, failed: 0, shards: 0, bytes: 0 };
      return (t) => {
        const skipped = t.skippedChanged ?? 0;
        const failed = t.failed ?? 0;
        const now = {
          repaired: t.extentsDone - skipped - failed,
          skipped,
          failed,
          shards: t.shardsRebuilt,
          bytes: t.bytesWritten,
        };
        extents.inc({ outcome: 'repaired' }, positive(now.repaired - last.repaired));
        extents.inc({ outcome: 'skipped' }, positive(now.skipped - last.skipped));
        extents.inc({ outcome: 'failed' }, positive(now.failed - last.failed));
        shards.inc(positive(now.shards - last.shards));
        bytes.inc(positive(now.bytes - last.bytes));
        last = now;
      };
    },
  };
}

// -----------------------------------------------------------------------------------------------
// cairnd

export interface NodeRequestDone {
  readonly route: string;
  readonly method: string;
  readonly status: number;
  readonly durationMs: number;
  /** Shard data bytes stored (a successful PUT), else 0. */
  readonly bytesWritten: number;
  /** Bytes of a successful GET's body, else 0. */
  readonly bytesRead: number;
}

/** What the node's servers hold now, read at every scrape. */
export interface NodeLoadSnapshot {
  readonly httpConnections: number;
  readonly journalConnections: number;
  readonly requestsInFlight: number;
  readonly putBytesInFlight: number;
  readonly responseBytesInFlight: number;
}

export interface NodeMetrics extends MetricsSource {
  requestDone(done: NodeRequestDone): void;
  /** A limit against clients bit (a name from nodeLimitNames in src/node/limits.ts). */
  limitHit(limit: string): void;
  /** Read at every scrape for the connection, in-flight and budget gauges. */
  loadFrom(source: () => NodeLoadSnapshot): void;
  /** Read at every scrape for cairn_node_capacity_bytes and cairn_node_used_bytes. */
  usageFrom(source: () => Promise<{ capacityBytes: number; usedBytes: number }>): void;
  repair(): RepairMetrics;
}

export function createNodeMetrics(options: MetricsOptions = {}): NodeMetrics {
  const r = new CatalogRegistry('node', options);
  const requests = r.counter('nodeHttpRequests');
  const duration = r.histogram('nodeHttpRequestDuration');
  const written = r.counter('nodeShardBytesWritten');
  const read = r.counter('nodeShardBytesRead');
  const capacity = r.gauge('nodeCapacity');
  const used = r.gauge('nodeUsed');
  const limitHits = r.counter('nodeLimitHits');
  const connections = r.gauge('nodeConnections');
  const inFlight = r.gauge('nodeRequestsInFlight');
  const putBytes = r.gauge('nodePutInFlight');
  const responseBytes = r.gauge('nodeResponseInFlight');
  let repair: RepairMetrics | undefined;
  return {
    contentType: r.registry.contentType,
    text: () => r.text(),
    limitHit: (limit) => limitHits.inc({ limit: /^[a-z_]{1,32}$/.test(limit) ? limit : 'other' }),
    loadFrom(source) {
      r.onScrape(() => {
        const load = source();
        connections.set({ server: 'http' }, load.httpConnections);
        connections.set({ server: 'journal' }, load.journalConnections);
        inFlight.set(load.requestsInFlight);
        putBytes.set(load.putBytesInFlight);
        responseBytes.set(load.responseBytesInFlight);
        return Promise.resolve();
      });
    },
    requestDone(done) {
      const route = routeLabel(done.route);
      const method = methodLabel(done.method);
      requests.inc({ route, method, status: statusLabel(done.status) });
      duration.observe({ route, method }, Math.max(0, done.durationMs) / 1000);
      if (done.bytesWritten > 0) written.inc(done.bytesWritten);
      if (done.bytesRead > 0) read.inc(done.bytesRead);
    },
    usageFrom(source) {
      r.onScrape(async () => {
        capacity.reset();
        used.reset();
        try {
          const usage = await source();
          capacity.set(usage.capacityBytes);
          used.set(usage.usedBytes);
        } catch (err) {
          options.onError?.('reading the node usage', err);
        }
      });
    },
    repair: () => (repair ??= repairMetricsOf(r)),
  };
}

// -----------------------------------------------------------------------------------------------
// The frontend

/** Health of a volume from its extent map and target liveness (src/api/health.ts computes it). */
export interface VolumeHealthSnapshot {
  readonly writtenExtents: number;
  readonly degradedExtents: number;
  readonly unreadableExtents: number;
  readonly atRiskBytes: number;
  readonly repairBacklogExtents: number;
  /** Shards on down or unregistered targets, by the zone the target was in. */
  readonly missingShardsByZone: Readonly<Record<string, number>>;
}

export interface VolumeSnapshot {
  readonly name: string;
  readonly dirtyBytes: number;
  readonly cachedBytes: number;
  readonly connections: number;
  readonly readDegradedExtents: number;
  /** Failed attempts of the final flush being retried (no clients left); absent or 0: none. */
  readonly finalFlushAttempts?: number;
  /** Shard reads since the volume was attached (absent: not reported), and those from another zone. */
  readonly shardReads?: number;
  readonly crossZoneShardReads?: number;
  /** Absent for volumes attached read-only (their writer reports them) or when etcd was unreachable. */
  readonly health?: VolumeHealthSnapshot;
}

export interface FrontendSnapshot {
  readonly volumes: readonly VolumeSnapshot[];
}

/** What the frontend's shared budgets hold now, read at every scrape. */
export interface FrontendLoadSnapshot {
  readonly connections: number;
  readonly writeBytesInFlight: number;
  readonly publishBytesInFlight: number;
  readonly attachedVolumes: number;
  readonly cleanCacheBytes: number;
}

export interface FrontendMetrics extends MetricsSource {
  /**
   * Call when an NBD request starts, with its protocol command name (`READ`) and length; call
   * the returned function once, with the errno of the reply (0 for success), when the reply is ready.
   */
  nbdRequest(command: string, bytes: number): (outcome: string) => void;
  /** Call when a flush of `extents` extents of `volume` starts; call the result with its outcome. */
  flush(volume: string, extents: number): (ok: boolean) => void;
  /** Call when a final flush failed and will be retried, or when a detach dropped `bytes` never made durable. */
  finalFlush(volume: string, event: { readonly outcome: 'retry' | 'lost'; readonly bytes: number }): void;
  /** Read at every scrape for the per-volume cache and health gauges. */
  snapshotFrom(source: () => Promise<FrontendSnapshot>): void;
  /** Read at every scrape for cairn_nbd_connections. */
  connectionsFrom(source: () => number): void;
  /** Read at every scrape for the connection, attached-volume and shared-budget gauges. */
  loadFrom(source: () => FrontendLoadSnapshot): void;
  /** A frontend limit bit (connections, connections_per_client, write_bytes, volumes, publish_bytes, cache_bytes). */
  limitHit(limit: string): void;
  repair(): RepairMetrics;
}

export function createFrontendMetrics(options: MetricsOptions = {}): FrontendMetrics {
  const r = new CatalogRegistry('frontend', options);
  const nowMs = options.nowMs ?? (() => performance.now());
  const requests = r.counter('nbdRequests');
  const duration = r.histogram('nbdRequestDuration');
  const requestBytes = r.counter('nbdRequestBytes');
  const flushDuration = r.histogram('flushDuration');
  const flushExtents = r.counter('flushExtents');
  const finalFlushRetries = r.counter('finalFlushRetries');
  const finalFlushLostBytes = r.counter('finalFlushLostBytes');
  const perVolume = {
    dirty: r.gauge('cacheDirty'),
    cached: r.gauge('cacheCached'),
    connections: r.gauge('volumeConnections'),
    finalFlushRetrying: r.gauge('volumeFinalFlushRetrying'),
    readDegraded: r.gauge('volumeReadDegradedExtents'),
    written: r.gauge('volumeWrittenExtents'),
    degraded: r.gauge('volumeDegradedExtents'),
    unreadable: r.gauge('volumeUnreadableExtents'),
    missing: r.gauge('volumeMissingShards'),
    atRisk: r.gauge('volumeAtRisk'),
    backlog: r.gauge('repairBacklog'),
  };
  // Running totals of each attached volume's engine, set at each scrape like the gauges: a
  // volume attached again starts from 0, which Prometheus reads as a counter reset.
  const perVolumeTotals = {
    shardReads: r.counter('volumeShardReads'),
    crossZoneShardReads: r.counter('volumeCrossZoneShardReads'),
  };
  const connections = r.gauge('nbdConnections');
  const limitHits = r.counter('frontendLimitHits');
  const writeInFlight = r.gauge('nbdWriteInFlight');
  const publishInFlight = r.gauge('frontendPublishInFlight');
  const attachedVolumes = r.gauge('frontendAttachedVolumes');
  const cleanCache = r.gauge('frontendCleanCache');
  let repair: RepairMetrics | undefined;
  return {
    contentType: r.registry.contentType,
    text: () => r.text(),
    limitHit: (limit) => limitHits.inc({ limit: /^[a-z_]{1,32}$/.test(limit) ? limit : 'other' }),
    loadFrom(source) {
      r.onScrape(() => {
        const load = source();
        connections.set(load.connections);
        writeInFlight.set(load.writeBytesInFlight);
        publishInFlight.set(load.publishBytesInFlight);
        attachedVolumes.set(load.attachedVolumes);
        cleanCache.set(load.cleanCacheBytes);
        return Promise.resolve();
      });
    },
    nbdRequest(command, bytes) {
      const label = nbdCommandLabel(command);
      const started = nowMs();
      let done = false;
      return (result) => {
        if (done) return;
        done = true;
        const outcome = nbdOutcomeLabel(result);
        requests.inc({ command: label, outcome });
        duration.observe({ command: label }, Math.max(0, nowMs() - started) / 1000);
        if (outcome === 'ok' && bytes > 0) requestBytes.inc({ command: label }, bytes);
      };
    },
    flush(volume, extents) {
      const started = nowMs();
      let done = false;
      return (ok) => {
        if (done) return;
        done = true;
        flushDuration.observe({ volume, outcome: ok ? 'ok' : 'error' }, Math.max(0, nowMs() - started) / 1000);
        if (ok && extents > 0) flushExtents.inc({ volume }, extents);
      };
    },
    finalFlush(volume, event) {
      if (event.outcome === 'retry') finalFlushRetries.inc({ volume });
      else if (event.bytes > 0) finalFlushLostBytes.inc({ volume }, event.bytes);
    },
    connectionsFrom(source) {
      r.onScrape(async () => connections.set(source()));
    },
    snapshotFrom(source) {
      r.onScrape(async () => {
        for (const g of Object.values(perVolume)) g.reset();
        for (const c of Object.values(perVolumeTotals)) c.reset();
        let snapshot: FrontendSnapshot;
        try {
          snapshot = await source();
        } catch (err) {
          options.onError?.('reading the frontend status', err);
          return;
        }
        for (const v of snapshot.volumes) {
          const volume = { volume: v.name };
          perVolume.dirty.set(volume, v.dirtyBytes);
          perVolume.cached.set(volume, v.cachedBytes);
          perVolume.connections.set(volume, v.connections);
          perVolume.readDegraded.set(volume, v.readDegradedExtents);
          perVolume.finalFlushRetrying.set(volume, v.finalFlushAttempts ?? 0);
          if (v.shardReads !== undefined) perVolumeTotals.shardReads.inc(volume, v.shardReads);
          if (v.crossZoneShardReads !== undefined)
            perVolumeTotals.crossZoneShardReads.inc(volume, v.crossZoneShardReads);
          const h = v.health;
          if (h === undefined) continue;
          perVolume.written.set(volume, h.writtenExtents);
          perVolume.degraded.set(volume, h.degradedExtents);
          perVolume.unreadable.set(volume, h.unreadableExtents);
          perVolume.atRisk.set(volume, h.atRiskBytes);
          perVolume.backlog.set(volume, h.repairBacklogExtents);
          for (const [zone, count] of Object.entries(h.missingShardsByZone))
            perVolume.missing.set({ volume: v.name, zone }, count);
        }
      });
    },
    repair: () => (repair ??= repairMetricsOf(r)),
  };
}
