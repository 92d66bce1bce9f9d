/**
 * cairnd's life: open the shard directory, serve the shard API, register in etcd, print one
 * ready line; on SIGTERM or SIGINT stop accepting, let requests in flight finish (bounded),
 * revoke the lease so the node shows down at once, and return exit code 0. A second signal
 * during that ends the process at once (exit 1).
 *
 * What it keeps true: the ready line is printed only once the node is registered and serving,
 * so a script or test that waits for it can use the node. A start that fails (etcd unreachable,
 * zone mismatch, port taken) releases what it took and throws; the entry point maps the error
 * to an exit code.
 *
 * What it leaves out: tiering to S3, scrub and repair (they will run beside this, not in it).
 */
import { Etcd3 } from 'etcd3';
import { errorMessage } from '../core/index.js';
import { FileShardStore } from '../shard/index.js';
import type { DaemonConfig } from './args.js';
import { NodeRegistration } from './registration.js';
import { ShardServer } from './server.js';

export interface DaemonIo {
  out(line: string): void;
  err(line: string): void;
}

type StopSignal = 'SIGTERM' | 'SIGINT';

/** Runs the node until SIGTERM/SIGINT; resolves with the exit code. Throws when the start fails. */
export async function runDaemon(config: DaemonConfig, io: DaemonIo): Promise<number> {
  const log = (line: string): void => io.err(`cairnd ${config.name}: ${line}`);
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
  const server = new ShardServer({
    store,
    name: config.name,
    zone: config.zone,
    log,
    ...(config.authSecret === undefined ? {} : { authSecret: config.authSecret }),
  });
  const bound = await server.listen(config.listenHost, config.listenPort);
  const address = config.advertise ?? bound.address;
  const etcd = new Etcd3({ hosts: [...config.etcdEndpoints], dialTimeout: config.etcdTimeoutMs });
  const registration = new NodeRegistration({
    etcd,
    endpoints: config.etcdEndpoints,
    timeoutMs: config.etcdTimeoutMs,
    name: config.name,
    zone: config.zone,
    address,
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
    await registration.stop().catch(() => undefined);
    etcd.close();
    throw err;
  }
  if (first === 'started') {
    io.out(`cairnd ${config.name} zone ${config.zone} serving on ${address}`);
    first = await stopRequested;
  }

  log(`${first}: stopping (waiting up to ${config.drainMs} ms for requests in flight)`);
  // Revoke while draining: clients should stop choosing this node as soon as it stops accepting.
  const [cut] = await Promise.all([
    server.close(config.drainMs),
    registration
      .stop()
      .catch((err: unknown) => log(`cannot revoke the lease; the alive key expires with it: ${errorMessage(err)}`)),
  ]);
  if (cut > 0) log(`cut off ${cut} requests still running after ${config.drainMs} ms`);
  etcd.close();
  process.off('SIGTERM', handler);
  process.off('SIGINT', handler);
  log('stopped');
  return 0;
}
