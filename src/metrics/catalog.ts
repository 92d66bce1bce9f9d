/**
 * Every metric Cairn exports, in one place: its name, type, help text, label names and, for
 * histograms, bucket bounds in seconds. registry.ts builds prom-client objects from this table
 * and nothing else, and docs/metrics.md describes each row (a unit test checks both agree).
 *
 * What it keeps true: names follow Prometheus conventions (prefix `cairn_`, snake_case, base
 * units last: `_seconds`, `_bytes`; counters end in `_total`), and every label has a bounded set
 * of values: commands, routes, outcomes and HTTP statuses come from fixed lists (see
 * nbdCommandLabel and nodeRouteLabel in registry.ts), zones and volumes from the cluster's own
 * records, never from what a client sends.
 *
 * What it leaves out: prom-client's default process and Node.js metrics (process_*, nodejs_*),
 * which registry.ts adds under their usual names, and anything about how values are gathered.
 */

export type MetricType = 'counter' | 'gauge' | 'histogram';

/** Which process exports a metric: cairnd (`node`), `cairnctl nbd serve` (`frontend`), or both. */
export type MetricComponent = 'node' | 'frontend' | 'any';

export interface MetricSpec {
  readonly name: string;
  readonly type: MetricType;
  readonly help: string;
  readonly labels: readonly string[];
  /** Upper bounds of histogram buckets, ascending, in the metric's unit. */
  readonly buckets?: readonly number[];
  readonly component: MetricComponent;
}

/** Request latencies: from 100 µs (a cached read) to 30 s (a flush waiting on a slow node). */
const requestBucketsSeconds = [
  0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30,
] as const;
/** A flush encodes, stores k+m shards per extent and commits to etcd: milliseconds to minutes. */
const flushBucketsSeconds = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120] as const;

export const metricSpecs = {
  // -- both processes -------------------------------------------------------------------------
  buildInfo: {
    name: 'cairn_build_info',
    type: 'gauge',
    help: 'Always 1; the labels say which Cairn process and version this is.',
    labels: ['component', 'version', 'nodejs'],
    component: 'any',
  },

  // -- cairnd ---------------------------------------------------------------------------------
  nodeHttpRequests: {
    name: 'cairn_node_http_requests_total',
    type: 'counter',
    help: 'Requests answered by the shard API, by route, method and HTTP status.',
    labels: ['route', 'method', 'status'],
    component: 'node',
  },
  nodeHttpRequestDuration: {
    name: 'cairn_node_http_request_duration_seconds',
    type: 'histogram',
    help: 'Time from a shard API request arriving to its response being handed to the OS.',
    labels: ['route', 'method'],
    buckets: requestBucketsSeconds,
    component: 'node',
  },
  nodeShardBytesWritten: {
    name: 'cairn_node_shard_written_bytes_total',
    type: 'counter',
    help: 'Shard data bytes stored by successful PUTs.',
    labels: [],
    component: 'node',
  },
  nodeShardBytesRead: {
    name: 'cairn_node_shard_read_bytes_total',
    type: 'counter',
    help: 'Framed shard bytes (data plus block checksums) sent by successful GETs.',
    labels: [],
    component: 'node',
  },
  nodeCapacity: {
    name: 'cairn_node_capacity_bytes',
    type: 'gauge',
    help: 'Bytes this node may store (--capacity, or the file system size).',
    labels: [],
    component: 'node',
  },
  nodeUsed: {
    name: 'cairn_node_used_bytes',
    type: 'gauge',
    help: 'Bytes of shard files this node stores.',
    labels: [],
    component: 'node',
  },
  nodeLimitHits: {
    name: 'cairn_node_limit_hits_total',
    type: 'counter',
    help: 'Times a limit against clients refused a request or connection, or closed a connection, by limit.',
    labels: ['limit'],
    component: 'node',
  },
  nodeConnections: {
    name: 'cairn_node_connections',
    type: 'gauge',
    help: 'Open client connections, by server (http: the shard API, journal: the binary connection).',
    labels: ['server'],
    component: 'node',
  },
  nodeRequestsInFlight: {
    name: 'cairn_node_requests_in_flight',
    type: 'gauge',
    help: 'Shard API requests received and not yet answered (running or waiting behind another on their connection).',
    labels: [],
    component: 'node',
  },
  nodePutInFlight: {
    name: 'cairn_node_put_in_flight_bytes',
    type: 'gauge',
    help: 'Shard body bytes held by PUTs in progress, both servers (the PUT budget in use).',
    labels: [],
    component: 'node',
  },
  nodeResponseInFlight: {
    name: 'cairn_node_response_in_flight_bytes',
    type: 'gauge',
    help: 'GET body bytes of the shard API held until the kernel takes them (the response budget in use).',
    labels: [],
    component: 'node',
  },

  // -- the frontend: NBD ----------------------------------------------------------------------
  nbdRequests: {
    name: 'cairn_nbd_requests_total',
    type: 'counter',
    help: 'NBD transmission requests answered, by command and outcome (ok, or the NBD errno sent).',
    labels: ['command', 'outcome'],
    component: 'frontend',
  },
  nbdRequestDuration: {
    name: 'cairn_nbd_request_duration_seconds',
    type: 'histogram',
    help: 'Time from an NBD request being read to its reply being ready, by command.',
    labels: ['command'],
    buckets: requestBucketsSeconds,
    component: 'frontend',
  },
  nbdRequestBytes: {
    name: 'cairn_nbd_request_bytes_total',
    type: 'counter',
    help: 'Bytes covered by successful NBD requests, by command (block_status counts the range asked about).',
    labels: ['command'],
    component: 'frontend',
  },
  nbdConnections: {
    name: 'cairn_nbd_connections',
    type: 'gauge',
    help: 'Open NBD connections, in any phase.',
    labels: [],
    component: 'frontend',
  },

  nbdWriteInFlight: {
    name: 'cairn_nbd_write_in_flight_bytes',
    type: 'gauge',
    help: 'WRITE payload bytes held across NBD connections (the shared write budget in use).',
    labels: [],
    component: 'frontend',
  },

  // -- the frontend: limits -------------------------------------------------------------------
  frontendLimitHits: {
    name: 'cairn_frontend_limit_hits_total',
    type: 'counter',
    help: 'Times a frontend limit refused a connection or an attach, or made a write or publish wait, by limit.',
    labels: ['limit'],
    component: 'frontend',
  },
  frontendAttachedVolumes: {
    name: 'cairn_frontend_attached_volumes',
    type: 'gauge',
    help: 'Volumes attached (or attaching) on this frontend (bounded by --max-volumes).',
    labels: [],
    component: 'frontend',
  },
  frontendCleanCache: {
    name: 'cairn_frontend_clean_cache_bytes',
    type: 'gauge',
    help: 'Clean cache bytes (whole extents read or published) all attached volumes hold together (bounded by --cache-budget).',
    labels: [],
    component: 'frontend',
  },
  frontendPublishInFlight: {
    name: 'cairn_frontend_publish_in_flight_bytes',
    type: 'gauge',
    help: 'Extent image bytes being built, encoded and stored across volumes (the shared publish budget in use).',
    labels: [],
    component: 'frontend',
  },

  // -- the frontend: cache and flush ----------------------------------------------------------
  cacheDirty: {
    name: 'cairn_cache_dirty_bytes',
    type: 'gauge',
    help: 'Bytes of cache entries holding writes not yet flushed (whole extents), per attached volume.',
    labels: ['volume'],
    component: 'frontend',
  },
  cacheCached: {
    name: 'cairn_cache_cached_bytes',
    type: 'gauge',
    help: 'Bytes held by the cache (clean and dirty), per attached volume.',
    labels: ['volume'],
    component: 'frontend',
  },
  volumeConnections: {
    name: 'cairn_volume_connections',
    type: 'gauge',
    help: 'NBD connections using each attached volume.',
    labels: ['volume'],
    component: 'frontend',
  },
  flushDuration: {
    name: 'cairn_flush_duration_seconds',
    type: 'histogram',
    help: 'Time to publish one batch of dirty extents (encode, store k+m shards each, fenced commit), by outcome.',
    labels: ['volume', 'outcome'],
    buckets: flushBucketsSeconds,
    component: 'frontend',
  },
  flushExtents: {
    name: 'cairn_flush_extents_total',
    type: 'counter',
    help: 'Extents published by successful flushes.',
    labels: ['volume'],
    component: 'frontend',
  },
  volumeFinalFlushRetrying: {
    name: 'cairn_volume_final_flush_retrying',
    type: 'gauge',
    help: 'Attempts of the final flush that failed so far, while a volume with no clients left keeps retrying it (0 otherwise).',
    labels: ['volume'],
    component: 'frontend',
  },
  finalFlushRetries: {
    name: 'cairn_final_flush_retries_total',
    type: 'counter',
    help: 'Final flushes (the last client of a volume gone) that failed and were retried, the volume kept attached.',
    labels: ['volume'],
    component: 'frontend',
  },
  finalFlushLostBytes: {
    name: 'cairn_final_flush_lost_bytes_total',
    type: 'counter',
    help: 'Bytes written and never made durable, dropped when a volume detached after its final flush kept failing.',
    labels: ['volume'],
    component: 'frontend',
  },

  // -- the frontend: health of the volumes it writes (src/api/health.ts) -----------------------
  volumeWrittenExtents: {
    name: 'cairn_volume_written_extents',
    type: 'gauge',
    help: 'Extents of the volume with a published generation (never-written extents hold no shards).',
    labels: ['volume'],
    component: 'frontend',
  },
  volumeDegradedExtents: {
    name: 'cairn_volume_degraded_extents',
    type: 'gauge',
    help: 'Written extents that lost 1 to m shards (to targets down or gone): readable by decoding, at risk.',
    labels: ['volume'],
    component: 'frontend',
  },
  volumeUnreadableExtents: {
    name: 'cairn_volume_unreadable_extents',
    type: 'gauge',
    help: 'Written extents that lost more than m shards: unreadable until enough targets return.',
    labels: ['volume'],
    component: 'frontend',
  },
  volumeMissingShards: {
    name: 'cairn_volume_missing_shards',
    type: 'gauge',
    help: 'Shards of written extents whose target is down or no longer registered, by the zone they were in.',
    labels: ['volume', 'zone'],
    component: 'frontend',
  },
  volumeAtRisk: {
    name: 'cairn_volume_at_risk_bytes',
    type: 'gauge',
    help: 'Bytes of the volume in extents that lost at least one shard (degraded plus unreadable extents).',
    labels: ['volume'],
    component: 'frontend',
  },
  volumeReadDegradedExtents: {
    name: 'cairn_volume_read_degraded_extents',
    type: 'gauge',
    help: 'Extents a read found degraded (a shard missing, slow or corrupt) since the volume was attached.',
    labels: ['volume'],
    component: 'frontend',
  },
  volumeShardReads: {
    name: 'cairn_volume_shard_reads_total',
    type: 'counter',
    help: 'Shard reads (a range or a whole shard, from a store) made for the volume since it was attached.',
    labels: ['volume'],
    component: 'frontend',
  },
  volumeCrossZoneShardReads: {
    name: 'cairn_volume_cross_zone_shard_reads_total',
    type: 'counter',
    help: "Of the volume's shard reads, those from a target outside the frontend's --zone (0 without --zone).",
    labels: ['volume'],
    component: 'frontend',
  },
  repairBacklog: {
    name: 'cairn_repair_backlog_extents',
    type: 'gauge',
    help: 'Extents needing repair: those that lost a shard plus those a read found degraded.',
    labels: ['volume'],
    component: 'frontend',
  },

  // -- repair (whichever process runs it; registered on demand) -------------------------------
  repairExtents: {
    name: 'cairn_repair_extents_total',
    type: 'counter',
    help: 'Extents the repairer finished, by outcome (repaired, skipped, failed, unrecoverable). Its rate is the repair rate.',
    labels: ['outcome'],
    component: 'any',
  },
  repairPending: {
    name: 'cairn_repair_pending_extents',
    type: 'gauge',
    help: "Extents in the repairer's latest plan, by state: repairable, or unrecoverable (lost more than m shards).",
    labels: ['state'],
    component: 'any',
  },
  repairShards: {
    name: 'cairn_repair_shards_rebuilt_total',
    type: 'counter',
    help: 'Shards the repairer rebuilt and stored on a new target.',
    labels: [],
    component: 'any',
  },
  repairBytes: {
    name: 'cairn_repair_written_bytes_total',
    type: 'counter',
    help: 'Shard bytes the repairer wrote.',
    labels: [],
    component: 'any',
  },
  censusAbsent: {
    name: 'cairn_census_absent_shards',
    type: 'gauge',
    help: 'Published shards the latest shard census found missing from nodes that are up (before its heal).',
    labels: [],
    component: 'any',
  },
  censusDuration: {
    name: 'cairn_census_duration_seconds',
    type: 'gauge',
    help: 'How long the latest shard census took to list every live node against the extent map.',
    labels: [],
    component: 'any',
  },
} as const satisfies Record<string, MetricSpec>;

export type MetricKey = keyof typeof metricSpecs;

/** The catalog as a list, in declaration order. */
export const allMetricSpecs: readonly MetricSpec[] = Object.values(metricSpecs);

/** Specs registered only when something asks for them (the repair worker). */
export const onDemandMetricKeys: ReadonlySet<MetricKey> = new Set<MetricKey>([
  'censusAbsent',
  'censusDuration',
  'repairExtents',
  'repairPending',
  'repairShards',
  'repairBytes',
]);
