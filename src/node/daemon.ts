/**
 * cairnd's life: open the shard directory and the journal (`<data dir>/journal~`), serve the
 * shard API and the journal protocol (src/node/journal_server.ts, on its own port), register both
 * addresses in etcd, print one ready line; on SIGTERM or SIGINT stop accepting, let requests in
 * flight finish (bounded), revoke the lease so the node shows down at once, and return exit code 0. A second signal
 * during that ends the process at once (exit 1). Logs are JSON lines on stderr (src/metrics/log.ts);
 * with --metrics-listen it also serves Prometheus metrics on that address (docs/metrics.md).
 *
 * What it keeps true: the ready line is printed only once the node is registered and serving,
 * so a script or test that waits for it can use the node. A start that fails (etcd unreachable,
 * zone mismatch, port taken) releases what it took and throws; the entry point maps the error
 * to an exit code.
 *
 * What it leaves out: tiering to S3, scrub and repair (they will run beside this, not in it).
 */
import { Etcd3 } from 'etcd3';
import { join } from 'node:path';
import { errorMessage } from '../core/index.js';
import { etcd3CredentialOptions } from '../meta/index.js';
import { createLogger, createNodeMetrics, serveMetrics, type MetricsServer } from '../metrics/index.js';
import { FileShardStore, formatHostPort } from '../shard/index.js';
import type { DaemonConfig } from './args.js';
import { JournalServer } from './journal_server.js';
import { JournalStore, journalDirName } from './journal_store.js';
import { NodeRegistration } from './registration.js';
import { ShardServer, sharedPutBudget } from './server.js';

export interface DaemonIo {
  /** The ready line, plain, for scripts and tests that wait for it. */
  out(line: string): void;
  /** Logs: one JSON object per line (src/metrics/log.ts). */
  err(line: string): void;
}

type StopSignal = 'SIGTERM' | 'SIGINT';

/** Runs the node until SIGTERM/SIGINT; resolves with the exit code. Throws when the start fails. */
export async function runDaemon(config: DaemonConfig, io: DaemonIo): Promise<number> {
  const logger = createLogger({ name: 'cairnd', fields: { node: config.name, zone: config.zone }, write: io.err });
  const log = logger.line;
  let onSignal: (signal: StopSignal) => void = () => undefined;
  const stopRequested = new Promise<StopSignal>((resolve) => (onSignal = resolve));
  let signals = 0;
  const handler = (signal: StopSignal): void => {
    signals += 1;
    if (signals > 1) {
      log(`${signal} again: exiting without waiting`);
      process.exit(1);
    }
    onSignal(signal);
  };
  process.on('SIGTERM', handler);
  process.on('SIGINT', handler);

  const store = await FileShardStore.open(config.dataDir, {
    description: `node "${config.name}"`,
    ...(config.capacityBytes === undefined ? {} : { capacityBytes: config.capacityBytes }),
  });
  const metrics =
    config.metricsListen === undefined
      ? undefined
      : createNodeMetrics({
          defaultLabels: { node: config.name, zone: config.zone },
          onError: (what, err) => logger.warn(`metrics: ${what} failed: ${errorMessage(err)}`),
        });
  metrics?.usageFrom(() => store.usage());
  // One PUT budget for both servers: a client's shard bodies count once, whichever way they come.
  const putBudget = sharedPutBudget(config.limits);
  const onLimit = metrics === undefined ? {} : { onLimit: metrics.limitHit };
  const server = new ShardServer({
    store,
    name: config.name,
    zone: config.zone,
    log,
    limits: config.limits,
    putBudget,
    ...onLimit,
    ...(config.authSecret === undefined ? {} : { authSecret: config.authSecret }),
    ...(config.tls === undefined ? {} : { tls: config.tls }),
    ...(config.metricsToken === undefined ? {} : { healthToken: config.metricsToken }),
    ...(metrics === undefined ? {} : { onRequestDone: (done) => metrics.requestDone(done) }),
  });
  const journalStore = await JournalStore.open(join(config.dataDir, journalDirName), {
    description: `node "${config.name}"`,
    segmentBytes: config.journalSegmentBytes,
    spareSegments: config.journalSpares,
    log,
  });
  const journalServer = new JournalServer({
    store: journalStore,
    shards: store,
    name: config.name,
    zone: config.zone,
    log,
    limits: config.limits,
    putBudget,
    ...onLimit,
    ...(metrics === undefined ? {} : { onShardRequestDone: (done) => metrics.requestDone(done) }),
    ...(config.authSecret === undefined ? {} : { authSecret: config.authSecret }),
    ...(config.tls === undefined ? {} : { tls: config.tls }),
  });
  metrics?.loadFrom(() => {
    const http = server.stats();
    return {
      httpConnections: http.connections,
      journalConnections: journalServer.stats().connections,
      requestsInFlight: http.requestsInFlight,
      putBytesInFlight: http.putBytesInFlight,
      responseBytesInFlight: http.responseBytesInFlight,
    };
  });
  const bound = await server.listen(config.listenHost, config.listenPort);
  let metricsServer: MetricsServer | undefined;
  let journalBound: { port: number };
  try {
    journalBound = await journalServer.listen(config.journalListenHost, config.journalListenPort);
    if (metrics !== undefined && config.metricsListen !== undefined)
      metricsServer = await serveMetrics(metrics, {
        ...config.metricsListen,
        log,
        ...(config.metricsTls === undefined ? {} : { tls: config.metricsTls }),
        ...(config.metricsToken === undefined ? {} : { token: config.metricsToken }),
      });
  } catch (err) {
    await server.close(0);
    await journalServer.close(0);
    await journalStore.close();
    throw err;
  }
  const address = config.advertise ?? bound.address;
  const journalAddress = formatHostPort(config.journalAdvertiseHost, journalBound.port);
  let etcd: Etcd3;
  try {
    etcd = new Etcd3({
      hosts: [...config.etcdEndpoints],
      ...etcd3CredentialOptions(config.etcdEndpoints, config.etcdCredentials),
      dialTimeout: config.etcdTimeoutMs,
    });
  } catch (err) {
    await server.close(0);
    await journalServer.close(0);
    await journalStore.close();
    await metricsServer?.close();
    throw err;
  }
  const registration = new NodeRegistration({
    etcd,
    endpoints: config.etcdEndpoints,
    timeoutMs: config.etcdTimeoutMs,
    name: config.name,
    zone: config.zone,
    address,
    journal: journalAddress,
    tls: config.tls !== undefined,
    usage: () => store.usage(),
    log,
  });

  const started = registration.start().then(() => 'started' as const);
  started.catch(() => undefined);
  let first: 'started' | StopSignal;
  try {
    first = await Promise.race([started, stopRequested]);
  } catch (err) {
    await server.close(0);
    await journalServer.close(0);
    await journalStore.close();
    await metricsServer?.close();
    await registration.stop().catch(() => undefined);
    etcd.close();
    throw err;
  }
  if (first === 'started') {
    io.out(`cairnd ${config.name} zone ${config.zone} serving on ${address}, journal on ${journalAddress}`);
    if (config.tls !== undefined)
      logger.info(
        config.tls.ca === undefined
          ? 'TLS on the shard API and the journal port (no client certificates asked)'
          : 'mutual TLS on the shard API and the journal port: clients need a certificate the --tls-ca signed',
      );
    // Once serving (a node that refuses to start says only why): an open node says so.
    if (config.authSecret === undefined && config.tls?.ca === undefined)
      logger.warn(
        `WARNING: no shared secret (--auth-secret-file, CAIRN_NODE_SECRET_FILE or CAIRN_NODE_SECRET) and no client CA (--tls-ca): this node is OPEN, any client that reaches ${address} can read, write and delete shards`,
      );
    if (config.tls === undefined)
      logger.warn(
        `no TLS (--tls-cert, --tls-key): shards, journal records and the shared secret cross the network in plaintext`,
      );
    if (metricsServer !== undefined) {
      const url = `${config.metricsTls === undefined ? 'http' : 'https'}://${metricsServer.address}/metrics`;
      logger.info(`metrics on ${url}`, { metrics: metricsServer.address });
    }
    first = await stopRequested;
  }

  log(`${first}: stopping (waiting up to ${config.drainMs} ms for requests in flight)`);
  // Revoke while draining: clients should stop choosing this node as soon as it stops accepting.
  const [cut, journalCut] = await Promise.all([
    server.close(config.drainMs),
    journalServer.close(config.drainMs),
    registration
      .stop()
      .catch((err: unknown) => log(`cannot revoke the lease; the alive key expires with it: ${errorMessage(err)}`)),
  ]);
  if (cut > 0) log(`cut off ${cut} requests still running after ${config.drainMs} ms`);
  if (journalCut > 0) log(`cut off ${journalCut} journal requests still running after ${config.drainMs} ms`);
  await journalStore.close();
  await store.close();
  await metricsServer?.close();
  etcd.close();
  process.off('SIGTERM', handler);
  process.off('SIGINT', handler);
  log('stopped');
  return 0;
}
