/**
 * The etcd command line, written once for every etcd Cairn starts as a local process: the dev
 * cluster's single member (`cairnctl dev up`), the test harness's single member
 * (test/harness/etcd.ts) and its multi-member clusters (test/harness/faults.ts).
 *
 * What it keeps true: every member listens on, and advertises, exactly the client and peer URLs it
 * is given (loopback in practice), logs through zap, and belongs to the cluster it is told of and no
 * other (a multi-member cluster gets its own token). Everything else is etcd's default unless the
 * caller asks: log level, raft timing, compaction.
 * What it leaves out: choosing ports and data dirs (callers pick free ports and, in tests, /dev/shm),
 * spawning and stopping (processes.ts), and the Kubernetes StatefulSet, whose members listen on
 * 0.0.0.0 and advertise pod DNS names (k8s/src/etcd.ts).
 */
import { get as httpsGet } from 'node:https';
import { tlsMinVersion } from '../core/index.js';

export interface EtcdMemberOptions {
  /** --name; also this member's entry in --initial-cluster when it is alone. */
  readonly name: string;
  readonly dataDir: string;
  /** Where clients connect, e.g. http://127.0.0.1:43121 (listened on and advertised). */
  readonly clientUrl: string;
  /** Where members talk to each other, e.g. http://127.0.0.1:43122 (listened on and advertised). */
  readonly peerUrl: string;
  /** zap's level: the dev cluster keeps warnings in its log; tests want errors only. */
  readonly logLevel: 'warn' | 'error';
  /**
   * A new cluster of several members: every member as `name=peerUrl`, comma-separated, and a token
   * unique to this cluster (members of another cluster on the same machine never join it). Without
   * it the member forms a cluster of its own, `name=peerUrl`.
   */
  readonly cluster?: { readonly initialCluster: string; readonly token: string };
  /** Raft timing in ms; etcd's defaults (100 and 1000) when absent. */
  readonly raft?: { readonly heartbeatIntervalMs: number; readonly electionTimeoutMs: number };
  /** Auto-compaction by revision, keeping this many revisions; no compaction when absent. */
  readonly compactionRetentionRevisions?: number;
  /**
   * Client TLS (the client URL must then be https://): etcd serves `cert`/`key` and, with
   * --client-cert-auth, takes only clients whose certificate `ca` signed. Peers stay plaintext
   * (a single loopback member has none to talk to).
   */
  readonly tls?: { readonly cert: string; readonly key: string; readonly ca: string };
}

/**
 * The arguments of `etcd` for one member, e.g. for the dev cluster:
 * `--name dev --logger zap --log-level warn --data-dir DIR/etcd --listen-client-urls C
 * --advertise-client-urls C --listen-peer-urls P --initial-advertise-peer-urls P
 * --initial-cluster dev=P --auto-compaction-mode revision --auto-compaction-retention 1000`.
 */
export function etcdArgs(options: EtcdMemberOptions): string[] {
  const { name, clientUrl, peerUrl, cluster, raft } = options;
  return [
    '--name',
    name,
    '--logger',
    'zap',
    '--log-level',
    options.logLevel,
    '--data-dir',
    options.dataDir,
    '--listen-client-urls',
    clientUrl,
    '--advertise-client-urls',
    clientUrl,
    '--listen-peer-urls',
    peerUrl,
    '--initial-advertise-peer-urls',
    peerUrl,
    '--initial-cluster',
    cluster?.initialCluster ?? `${name}=${peerUrl}`,
    ...(cluster === undefined ? [] : ['--initial-cluster-state', 'new', '--initial-cluster-token', cluster.token]),
    ...(raft === undefined
      ? []
      : [
          '--heartbeat-interval',
          String(raft.heartbeatIntervalMs),
          '--election-timeout',
          String(raft.electionTimeoutMs),
        ]),
    ...(options.compactionRetentionRevisions === undefined
      ? []
      : [
          '--auto-compaction-mode',
          'revision',
          '--auto-compaction-retention',
          String(options.compactionRetentionRevisions),
        ]),
    ...(options.tls === undefined
      ? []
      : [
          '--cert-file',
          options.tls.cert,
          '--key-file',
          options.tls.key,
          '--trusted-ca-file',
          options.tls.ca,
          '--client-cert-auth',
        ]),
  ];
}

/** PEM bytes a client presents to a TLS etcd's /health (its CA, and a certificate it signed). */
export interface EtcdHealthTls {
  readonly ca: Buffer;
  readonly cert: Buffer;
  readonly key: Buffer;
}

/**
 * True when the member at `clientUrl` answers GET /health with `{"health":"true"}` (in etcd 3.4
 * that needs an elected leader); over https with `tls`. Throws when it does not answer, or after
 * `timeoutMs` when given: a member without quorum can hang.
 */
export async function etcdHealthy(clientUrl: string, timeoutMs?: number, tls?: EtcdHealthTls): Promise<boolean> {
  if (tls === undefined) {
    const res = await fetch(
      `${clientUrl}/health`,
      timeoutMs === undefined ? undefined : { signal: AbortSignal.timeout(timeoutMs) },
    );
    return ((await res.json()) as { health?: string }).health === 'true';
  }
  const body = await new Promise<string>((resolve, reject) => {
    const req = httpsGet(
      `${clientUrl}/health`,
      {
        ca: tls.ca,
        cert: tls.cert,
        key: tls.key,
        minVersion: tlsMinVersion,
        ...(timeoutMs === undefined ? {} : { timeout: timeoutMs }),
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
        res.on('error', reject);
      },
    );
    req.on('timeout', () => req.destroy(new Error(`no answer within ${timeoutMs} ms`)));
    req.on('error', reject);
  });
  return (JSON.parse(body) as { health?: string }).health === 'true';
}
