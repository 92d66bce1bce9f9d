/**
 * Observability: Cairn's Prometheus metrics (names in catalog.ts, prom-client kept behind
 * registry.ts, the /metrics endpoint in http.ts) and its structured JSON logs (pino, log.ts).
 * Every metric is described in docs/metrics.md.
 */
export {
  allMetricSpecs,
  metricSpecs,
  onDemandMetricKeys,
  type MetricComponent,
  type MetricKey,
  type MetricSpec,
  type MetricType,
} from './catalog.js';
export {
  createFrontendMetrics,
  createNodeMetrics,
  nbdCommandLabel,
  nbdCommandLabels,
  nbdOutcomeLabel,
  nodeRouteLabels,
  type FrontendMetrics,
  type FrontendSnapshot,
  type MetricsOptions,
  type MetricsSource,
  type NodeMetrics,
  type NodeRequestDone,
  type NodeRoute,
  type RepairMetrics,
  type RepairOutcome,
  type RepairRunTotals,
  type VolumeHealthSnapshot,
  type VolumeSnapshot,
} from './registry.js';
export {
  metricsPath,
  metricsTlsFromEnv,
  metricsTokenFromEnv,
  readMetricsToken,
  serveMetrics,
  type MetricsServer,
  type ServeMetricsOptions,
} from './http.js';
export {
  classifyLine,
  createLogger,
  logLevelFrom,
  logLevels,
  type LogFields,
  type LogLevel,
  type Logger,
  type LoggerOptions,
} from './log.js';
