/**
 * Fault injection for the fault_*.test.ts files: the pieces a test needs to break a Cairn cluster
 * of real processes and to look at what is left afterwards.
 *
 * - A 3-member etcd cluster on loopback (INFRA.md §1 recipe: fast heartbeats, /dev/shm data dirs),
 *   its leader found through the v3 HTTP gateway, members stopped or killed by pid.
 * - Frontends (`cairnctl nbd serve`) against any etcd endpoint list and environment (S3 keys).
 * - NodeFleet: storage nodes by name, whether `cairnctl dev up` started them (recorded pids) or
 *   this harness did; kill any of them by pid and restart it with the SAME name, zone, data dir and
 *   port, as an operator would.
 * - Looking at the wreckage: shard and temp files in a node's data dir, extent maps and leases in
 *   etcd, node states, per-extent reads through nbdsh that report bytes or an NBD error.
 *
 * What it keeps true: every process is stopped by its pid (a dev-cluster pid only when /proc says
 * it still runs our command line), every wait is for a condition with a deadline, and every etcd
 * HTTP call has its own timeout (etcd hangs without quorum, INFRA.md §1).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startCairnd, type CairndHandle } from './cairnd.js';
import { cairnctlPath } from './cli.js';
import {
  etcdArgs,
  etcdHealthy,
  freePort,
  killPid,
  pidRuns,
  stopChild,
  waitFor,
  type DevNode,
} from '../../src/dev/index.js';
import { runClient, runOk, type ClientResult } from './stack.js';
import { EtcdMeta } from '../../src/meta/index.js';
import { VolumeMaps } from '../../src/api/index.js';

const MiB = 1024 * 1024;

/** Three members on /dev/shm report healthy in about 2 s (INFRA.md); generous for 2 busy cores. */
const etcdClusterStartDeadlineMs = 30_000;
/** INFRA.md §1: 50/500 ms elects a new leader about 1-1.5 s after the old one dies. */
const etcdRaft = { heartbeatIntervalMs: 50, electionTimeoutMs: 500 };
/** Graceful etcd stop takes 1-2 s per member (leader transfer); then SIGKILL. */
const etcdStopGraceMs = 5_000;
/** One etcd HTTP call; a member without quorum hangs, so every call has this deadline. */
const etcdHttpDeadlineMs = 2_000;

/** Awaits `promise`, or throws naming `what` once `deadlineMs` passed (the timer is always cleared). */
export async function within<T>(promise: Promise<T>, what: string, deadlineMs: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`Timed out after ${deadlineMs} ms waiting for ${what}`)), deadlineMs);
  });
  try {
    return await Promise.race([promise, late]);
  } finally {
    clearTimeout(timer);
  }
}

// ---------------------------------------------------------------------------------------------
// A 3-member etcd cluster.

export interface EtcdMember {
  readonly name: string;
  readonly clientUrl: string;
  readonly peerUrl: string;
  readonly dataDir: string;
  readonly child: ChildProcess;
  readonly pid: number;
  running(): boolean;
  stderr(): string;
}

export interface EtcdCluster {
  readonly members: readonly EtcdMember[];
  /** Client URLs of every member, in member order. */
  readonly endpoints: readonly string[];
  /** The endpoints as one --etcd argument: "http://a,http://b,http://c". */
  readonly etcdArg: string;
  /** The member every live member names as leader (waits until they agree). */
  leader(deadlineMs?: number): Promise<EtcdMember>;
  /** Signals one member by pid and waits until it has exited. */
  kill(member: EtcdMember, signal?: NodeJS.Signals): Promise<void>;
  /** Stops every member by pid (SIGTERM, SIGKILL after a grace period) and removes the data dirs. */
  stop(): Promise<void>;
}

/** POSTs JSON to an etcd v3 gateway path, with a deadline. int64 fields come back as strings. */
export async function etcdHttp<T>(endpoint: string, path: string, body: unknown): Promise<T> {
  const res = await fetch(`${endpoint}${path}`, {
    method: 'POST',
    body: JSON.stringify(body),
    headers: { 'content-type': 'application/json' },
    signal: AbortSignal.timeout(etcdHttpDeadlineMs),
  });
  const text = await res.text();
  if (!res.ok) throw new Error(`etcd ${endpoint}${path} -> HTTP ${res.status}: ${text.slice(0, 300)}`);
  return JSON.parse(text) as T;
}

interface EtcdStatus {
  header?: { member_id?: string };
  leader?: string;
}

/**
 * Starts `size` etcd members on loopback (free ports) as one new cluster and waits until every
 * member reports healthy (which, in etcd 3.4, needs an elected leader).
 */
export async function startEtcdCluster(options: { size?: number } = {}): Promise<EtcdCluster> {
  const size = options.size ?? 3;
  const base = existsSync('/dev/shm') ? '/dev/shm' : tmpdir();
  const root = mkdtempSync(join(base, 'cairn-etcd3-'));
  const token = `cairn-fault-${randomBytes(4).toString('hex')}`;
  const ports: { client: number; peer: number }[] = [];
  for (let i = 0; i < size; i++) ports.push({ client: await freePort(), peer: await freePort() });
  const names = ports.map((_, i) => `m${i + 1}`);
  const initialCluster = names.map((n, i) => `${n}=http://127.0.0.1:${ports[i]!.peer}`).join(',');
  const members: EtcdMember[] = names.map((name, i) => {
    const clientUrl = `http://127.0.0.1:${ports[i]!.client}`;
    const peerUrl = `http://127.0.0.1:${ports[i]!.peer}`;
    const dataDir = join(root, name);
    const child = spawn(
      'etcd',
      etcdArgs({
        name,
        dataDir,
        clientUrl,
        peerUrl,
        logLevel: 'error',
        cluster: { initialCluster, token },
        raft: etcdRaft,
      }),
      { stdio: ['ignore', 'ignore', 'pipe'] },
    );
    let stderr = '';
    child.stderr?.on('data', (c: Buffer) => (stderr = (stderr + c.toString()).slice(-8000)));
    child.once('error', (err) => (stderr += `\ncannot run etcd: ${err.message} (make setup installs etcd-server)`));
    return {
      name,
      clientUrl,
      peerUrl,
      dataDir,
      child,
      pid: child.pid ?? -1,
      running: () => child.exitCode === null && child.signalCode === null,
      stderr: () => stderr,
    };
  });
  const endpoints = members.map((m) => m.clientUrl);
  let stopped: Promise<void> | undefined;
  const cluster: EtcdCluster = {
    members,
    endpoints,
    etcdArg: endpoints.join(','),
    async leader(deadlineMs = 15_000) {
      return waitFor(
        `the live etcd members (${members
          .filter((m) => m.running())
          .map((m) => m.name)
          .join(', ')}) to agree on a leader`,
        async () => {
          const live = members.filter((m) => m.running());
          const statuses = await Promise.all(
            live.map((m) => etcdHttp<EtcdStatus>(m.clientUrl, '/v3/maintenance/status', {})),
          );
          const leaders = new Set(statuses.map((s) => s.leader));
          if (leaders.size !== 1) return undefined;
          const id = [...leaders][0];
          const index = statuses.findIndex((s) => s.header?.member_id === id);
          return index < 0 ? undefined : live[index];
        },
        deadlineMs,
      );
    },
    async kill(member, signal = 'SIGKILL') {
      if (!member.running()) return;
      const exited = new Promise<void>((r) => member.child.once('exit', () => r()));
      process.kill(member.pid, signal);
      await within(exited, `etcd member ${member.name} (pid ${member.pid}) to exit after ${signal}`, 15_000);
    },
    stop() {
      stopped ??= (async () => {
        await Promise.all(members.map((m) => stopChild(m.child, etcdStopGraceMs)));
        rmSync(root, { recursive: true, force: true });
      })();
      return stopped;
    },
  };
  try {
    await waitFor(
      `a new ${size}-member etcd cluster to report healthy on every member`,
      async () => {
        for (const m of members)
          if (!m.running()) throw new Error(`member ${m.name} exited: ${m.stderr().slice(-1500)}`);
        const health = await Promise.all(members.map((m) => etcdHealthy(m.clientUrl, etcdHttpDeadlineMs)));
        return health.every(Boolean);
      },
      etcdClusterStartDeadlineMs,
      { seen: () => members.map((m) => `${m.name}: ${m.stderr().slice(-300)}`).join(' | ') },
    );
  } catch (err) {
    await cluster.stop();
    throw err;
  }
  return cluster;
}

// ---------------------------------------------------------------------------------------------
// etcd reads through the v3 gateway (int64 values stay exact: the gateway sends them as strings).

export interface EtcdKv {
  readonly key: string;
  readonly value: string;
  /** Lease id in decimal, "0" or undefined when the key has none. */
  readonly lease: string | undefined;
  readonly modRevision: string;
}

/** Keys equal to `key`, or starting with it when `prefix`; tries each endpoint until one answers. */
export async function etcdRange(
  endpoints: readonly string[],
  key: string,
  options: { prefix?: boolean } = {},
): Promise<EtcdKv[]> {
  const b64 = (s: string | Buffer) => Buffer.from(s).toString('base64');
  const body: Record<string, string> = { key: b64(key) };
  if (options.prefix) {
    // range_end = the prefix with its last byte incremented (every key starting with it).
    const end = Buffer.from(key);
    end[end.length - 1] = end[end.length - 1]! + 1;
    body['range_end'] = b64(end);
  }
  let lastError: unknown;
  for (const endpoint of endpoints) {
    try {
      const res = await etcdHttp<{ kvs?: { key: string; value?: string; lease?: string; mod_revision: string }[] }>(
        endpoint,
        '/v3/kv/range',
        body,
      );
      return (res.kvs ?? []).map((kv) => ({
        key: Buffer.from(kv.key, 'base64').toString(),
        value: Buffer.from(kv.value ?? '', 'base64').toString(),
        lease: kv.lease,
        modRevision: kv.mod_revision,
      }));
    } catch (err) {
      lastError = err;
    }
  }
  throw new Error(`No etcd endpoint of ${endpoints.join(',')} answered a range of ${key}: ${String(lastError)}`);
}

/** Remaining and granted TTL of a lease (seconds); ttl -1 when the lease no longer exists. */
export async function leaseTimeToLive(
  endpoints: readonly string[],
  leaseId: string,
): Promise<{ ttl: number; grantedTtl: number }> {
  let lastError: unknown;
  for (const endpoint of endpoints) {
    try {
      const res = await etcdHttp<{ TTL?: string; grantedTTL?: string }>(endpoint, '/v3/lease/timetolive', {
        ID: leaseId,
      });
      return { ttl: Number(res.TTL ?? -1), grantedTtl: Number(res.grantedTTL ?? 0) };
    } catch (err) {
      lastError = err;
    }
  }
  throw new Error(`No etcd endpoint answered timetolive of lease ${leaseId}: ${String(lastError)}`);
}

export interface ShardRef {
  readonly target: string;
  readonly key: string;
}

export interface ExtentRecordView {
  readonly generation: number;
  readonly shardBytes: number;
  readonly shards: readonly ShardRef[];
}

/**
 * The published extent map of a volume: extent index -> record, read as cairnctl reads it (the
 * map tree under the volume's root in etcd, its pages from the shard targets).
 */
export async function extentMap(
  endpoints: readonly string[],
  volumeId: string,
): Promise<Map<number, ExtentRecordView>> {
  const meta = new EtcdMeta([...endpoints]);
  const maps = new VolumeMaps(meta);
  try {
    return await maps.listExtents(volumeId);
  } finally {
    maps.close();
    meta.close();
  }
}

/** The id of volume `name` (shard keys start with it). */
export async function volumeIdOf(endpoints: readonly string[], name: string): Promise<string> {
  const [kv] = await etcdRange(endpoints, `cairn/v1/volumes/${name}`);
  if (kv === undefined) throw new Error(`volume ${name} has no record in etcd`);
  return (JSON.parse(kv.value) as { id: string }).id;
}

/** The write lock of a volume: its record and the lease that keeps it. */
export async function lockOf(
  endpoints: readonly string[],
  volume: string,
): Promise<{ owner: string; epoch: number; lease: string } | undefined> {
  const [kv] = await etcdRange(endpoints, `cairn/v1/locks/${volume}`);
  if (kv === undefined) return undefined;
  const record = JSON.parse(kv.value) as { owner: string; epoch: number };
  return { ...record, lease: kv.lease ?? '0' };
}

// ---------------------------------------------------------------------------------------------
// cairnctl.

/** `cairnctl ARGS --etcd ETCD`; throws naming `step` unless it exits 0. */
export function cairnctl(
  step: string,
  etcd: string,
  args: readonly string[],
  options: { env?: NodeJS.ProcessEnv; deadlineMs?: number } = {},
): Promise<ClientResult> {
  return runOk(step, process.execPath, [cairnctlPath, ...args, '--etcd', etcd], {
    deadlineMs: options.deadlineMs ?? 60_000,
    ...(options.env === undefined ? {} : { env: options.env }),
  });
}

/** `cairnctl ARGS --json`, parsed. */
export async function cairnctlJson<T>(
  step: string,
  etcd: string,
  args: readonly string[],
  options: { env?: NodeJS.ProcessEnv; deadlineMs?: number } = {},
): Promise<T> {
  const r = await cairnctl(step, etcd, [...args, '--json'], options);
  return JSON.parse(r.stdout) as T;
}

/** Node name -> 'up' | 'down', from `cairnctl node list`. */
export async function nodeStates(etcd: string): Promise<Map<string, string>> {
  const list = await cairnctlJson<{ name: string; state: string }[]>('node list', etcd, ['node', 'list'], {
    deadlineMs: 20_000,
  });
  return new Map(list.map((n) => [n.name, n.state]));
}

/** Waits until every node in `names` shows `state` in `cairnctl node list`. */
export async function waitNodesState(
  etcd: string,
  names: readonly string[],
  state: 'up' | 'down',
  deadlineMs = 30_000,
): Promise<void> {
  let last = new Map<string, string>();
  await waitFor(
    `nodes ${names.join(', ')} to show as ${state}`,
    async () => {
      last = await nodeStates(etcd);
      return names.every((n) => last.get(n) === state);
    },
    deadlineMs,
    { seen: () => `node list: ${JSON.stringify([...last])}`, intervalMs: 200 },
  );
}

// ---------------------------------------------------------------------------------------------
// Frontends.

// startFrontendProcess lives in stack.ts, beside Stack.startFrontend which uses it.
export { startFrontendProcess, type FrontendProcessOptions } from './stack.js';

// ---------------------------------------------------------------------------------------------
// Storage nodes by name.

export interface NodeInfo {
  readonly name: string;
  readonly zone: string;
  readonly port: number;
  readonly address: string;
  readonly dataDir: string;
}

type NodeProcess = { kind: 'dev'; pid: number } | { kind: 'ours'; handle: CairndHandle } | { kind: 'none' };

/**
 * Every storage node of a test cluster by name, with the process that runs it now: the one
 * `cairnctl dev up` started (a recorded pid), one this fleet started, or none. kill() and
 * restart() keep the node's identity (name, zone, data dir, port), as an operator restarting a
 * crashed node would.
 */
export class NodeFleet {
  private readonly nodes = new Map<string, { info: NodeInfo; proc: NodeProcess; extraArgs: readonly string[] }>();

  constructor(
    /** --etcd for nodes this fleet starts. */
    readonly etcd: string,
    /** Parent of the data dirs of nodes this fleet creates (removed by the caller). */
    readonly dir: string,
  ) {}

  /** Takes over the nodes `cairnctl dev up` started (cluster.json). */
  adoptDev(nodes: readonly DevNode[]): void {
    for (const n of nodes) {
      const port = Number(n.address.slice(n.address.lastIndexOf(':') + 1));
      this.nodes.set(n.name, {
        info: { name: n.name, zone: n.zone, port, address: n.address, dataDir: n.dataDir },
        proc: { kind: 'dev', pid: n.pid },
        extraArgs: [],
      });
    }
  }

  /** Starts a new node (data dir `dir/nodes-extra/NAME` unless given) and waits for its ready line. */
  async add(
    name: string,
    zone: string,
    options: { dataDir?: string; extraArgs?: readonly string[] } = {},
  ): Promise<NodeInfo> {
    if (this.nodes.has(name)) throw new Error(`node ${name} is already in the fleet`);
    const dataDir = options.dataDir ?? join(this.dir, 'nodes-extra', name);
    mkdirSync(dataDir, { recursive: true });
    const handle = await startCairnd({
      etcd: this.etcd,
      name,
      zone,
      dataDir,
      ...(options.extraArgs === undefined ? {} : { extraArgs: options.extraArgs }),
    });
    const info = { name, zone, port: handle.port, address: handle.address, dataDir };
    this.nodes.set(name, { info, proc: { kind: 'ours', handle }, extraArgs: options.extraArgs ?? [] });
    return info;
  }

  info(name: string): NodeInfo {
    const n = this.nodes.get(name);
    if (n === undefined) throw new Error(`no node ${name} in the fleet`);
    return n.info;
  }

  names(): string[] {
    return [...this.nodes.keys()];
  }

  /** The pid running `name` now, or undefined. */
  pid(name: string): number | undefined {
    const n = this.nodes.get(name);
    if (n === undefined) return undefined;
    if (n.proc.kind === 'dev') return pidRuns(n.proc.pid, n.info.dataDir) ? n.proc.pid : undefined;
    if (n.proc.kind === 'ours')
      return n.proc.handle.process.exitCode === null && n.proc.handle.process.signalCode === null
        ? n.proc.handle.pid
        : undefined;
    return undefined;
  }

  running(name: string): boolean {
    return this.pid(name) !== undefined;
  }

  /** Signals the node's process by pid and waits until it is gone. SIGTERM lets cairnd revoke its lease. */
  async kill(name: string, signal: NodeJS.Signals = 'SIGKILL'): Promise<void> {
    const n = this.nodes.get(name);
    if (n === undefined) throw new Error(`no node ${name} in the fleet`);
    const pid = this.pid(name);
    if (pid === undefined) throw new Error(`node ${name} is not running`);
    if (n.proc.kind === 'ours') {
      const handle = n.proc.handle;
      process.kill(pid, signal);
      await within(handle.exit(), `node ${name} (pid ${pid}) to exit after ${signal}`, 20_000);
    } else {
      await killPid(pid, `storage node ${name}`, signal, 20_000);
    }
    n.proc = { kind: 'none' };
  }

  /**
   * Starts `name` again with the same name, zone, data dir and port (cairnd waits for the alive
   * key of its previous instance to expire, up to ~5 s after a SIGKILL).
   */
  async restart(name: string, options: { extraArgs?: readonly string[] } = {}): Promise<void> {
    const n = this.nodes.get(name);
    if (n === undefined) throw new Error(`no node ${name} in the fleet`);
    if (this.running(name)) throw new Error(`node ${name} still runs (pid ${this.pid(name)})`);
    const extraArgs = options.extraArgs ?? n.extraArgs;
    const handle = await startCairnd({
      etcd: this.etcd,
      name,
      zone: n.info.zone,
      dataDir: n.info.dataDir,
      port: n.info.port,
      extraArgs,
      // The previous instance's alive key can hold the name for its 5 s lease, and more on 2 busy cores.
      startDeadlineMs: 30_000,
    });
    n.proc = { kind: 'ours', handle };
  }

  /** Stops every node this fleet started (SIGTERM, SIGKILL after a grace period). Dev nodes are left to dev down. */
  async stopOurs(): Promise<void> {
    await Promise.all(
      [...this.nodes.values()].map(async (n) => {
        if (n.proc.kind === 'ours') await n.proc.handle.stop({ keepData: true, graceMs: 10_000 });
      }),
    );
  }

  /** Stderr of a node this fleet runs (empty for dev nodes: their logs are in the dev dir). */
  stderr(name: string): string {
    const n = this.nodes.get(name);
    return n?.proc.kind === 'ours' ? n.proc.handle.stderr() : '';
  }
}

// ---------------------------------------------------------------------------------------------
// Files on a node's disk.

/** Every regular file under `dir`, recursively (missing dir: none). */
export function filesUnder(dir: string): string[] {
  const out: string[] = [];
  const walk = (d: string) => {
    let names: string[];
    try {
      names = readdirSync(d);
    } catch {
      return;
    }
    for (const name of names) {
      const p = join(d, name);
      let st;
      try {
        st = statSync(p);
      } catch {
        continue; // removed meanwhile
      }
      if (st.isDirectory()) walk(p);
      else if (st.isFile()) out.push(p);
    }
  };
  walk(dir);
  return out;
}

/**
 * Data shard files of one volume on a node: key (relative path) -> absolute path. Temp files and
 * the volume's map pages (`<volume>/map/...`) excluded.
 */
export function shardFilesOf(dataDir: string, volumeId: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const p of filesUnder(join(dataDir, volumeId))) {
    const key = p.slice(dataDir.length + 1);
    if (!key.includes('~') && !key.startsWith(`${volumeId}/map/`)) out.set(key, p);
  }
  return out;
}

/** Files a put left half-done: temp names carry '~' (file_store.ts). */
export function tempFilesUnder(dir: string): string[] {
  // journal~/ holds the node's journal segments (docs/journal.md), not temp files.
  return filesUnder(dir).filter(
    (p) => p.slice(dir.length).includes('~') && !p.slice(dir.length).includes('/journal~/'),
  );
}

/** Generation of a shard key `<volume>/<extent>/<generation>/<shard>`. */
export function generationOfKey(key: string): number {
  return Number(key.split('/')[2]);
}

// ---------------------------------------------------------------------------------------------
// Sockets.

/**
 * Bytes waiting, unread, in the receive queues of the established IPv4 TCP sockets whose local port
 * is `port` (from /proc/net/tcp): with the server stopped (SIGSTOP), what clients sent it since.
 */
export function tcpReceiveQueues(port: number): number[] {
  const out: number[] = [];
  for (const line of readFileSync('/proc/net/tcp', 'utf8').split('\n').slice(1)) {
    const f = line.trim().split(/\s+/);
    if (f.length < 5) continue;
    const localPort = parseInt(f[1]!.split(':')[1]!, 16);
    // st 01 = ESTABLISHED; field 4 is tx_queue:rx_queue in hex.
    if (localPort === port && f[3] === '01') out.push(parseInt(f[4]!.split(':')[1]!, 16));
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// tmpfs.

/** Mounts a tmpfs of `size` (e.g. "2m") at `dir`; returns why it could not, or undefined. */
export async function mountTmpfs(dir: string, size: string): Promise<string | undefined> {
  if (process.getuid?.() !== 0) return 'mounting a tmpfs needs root';
  mkdirSync(dir, { recursive: true });
  const r = await runClient('/usr/bin/mount', ['-t', 'tmpfs', '-o', `size=${size},mode=0755`, 'tmpfs', dir], {
    deadlineMs: 20_000,
  });
  if (r.code !== 0) return `mount -t tmpfs failed: ${r.stderr.trim() || `exit ${r.code}`}`;
  return undefined;
}

export async function unmount(dir: string): Promise<void> {
  await runOk(`umount ${dir}`, '/usr/bin/umount', [dir], { deadlineMs: 30_000 });
}

// ---------------------------------------------------------------------------------------------
// Reads extent by extent through a real NBD client.

export interface ExtentReadResult {
  readonly extent: number;
  /** sha256 of the bytes read, or undefined when the read failed. */
  readonly sha?: string;
  readonly errno?: string;
  readonly message?: string;
}

/**
 * Reads every extent of the export at `uri` with nbdsh, one pread per extent, and reports for each
 * either the sha256 of what came back or the NBD error. A failed connect reports every extent as
 * failed with that error. Nothing is compared here: the caller knows what may come back.
 */
export async function readExtents(
  uri: string,
  sizeBytes: number,
  extentBytes: number,
  deadlineMs = 120_000,
): Promise<ExtentReadResult[]> {
  const script = `
import hashlib
A = json.loads(os.environ["CAIRN_TEST_ARGS"])
n = (A["size"] + A["extentBytes"] - 1) // A["extentBytes"]
try:
    h.connect_uri(A["uri"])
except nbd.Error as err:
    for e in range(n):
        print(json.dumps({"extent": e, "errno": err.errno or "ECONNECT", "message": "connect: " + str(err.string)}), flush=True)
    sys.exit(0)
for e in range(n):
    off = e * A["extentBytes"]
    try:
        got = h.pread(min(A["extentBytes"], A["size"] - off), off)
        print(json.dumps({"extent": e, "sha": hashlib.sha256(got).hexdigest()}), flush=True)
    except nbd.Error as err:
        print(json.dumps({"extent": e, "errno": err.errno, "message": err.string}), flush=True)
`;
  const r = await runClient('/usr/bin/nbdsh', ['-c', `import json, os, sys\n${script}`], {
    deadlineMs,
    env: { CAIRN_TEST_ARGS: JSON.stringify({ uri, size: sizeBytes, extentBytes }), LIBNBD_DEBUG: '0' },
  });
  const results = r.stdout
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l) as ExtentReadResult);
  const expected = Math.ceil(sizeBytes / extentBytes);
  if (r.code !== 0 || results.length !== expected)
    throw new Error(
      `reading ${expected} extents of ${uri}: got ${results.length} results (exit ${r.code}): ${r.stderr.slice(-2000)}`,
    );
  return results;
}

export { MiB };

/**
 * Registers one S3 target per zone on `rgw` (`s3-<zone>`, bucket `<bucketPrefix>-<zone>`) with
 * `cairnctl target add s3`; returns the buckets, in the order of `zones`.
 */
export async function addS3Targets(
  etcd: string,
  rgw: { readonly endpoint: string; readonly accessKeyId: string; readonly secretAccessKey: string },
  bucketPrefix: string,
  zones: readonly string[] = ['a', 'b', 'c'],
): Promise<string[]> {
  const env = { AWS_ACCESS_KEY_ID: rgw.accessKeyId, AWS_SECRET_ACCESS_KEY: rgw.secretAccessKey };
  const buckets: string[] = [];
  for (const zone of zones) {
    const bucket = `${bucketPrefix}-${zone}`;
    await cairnctl(
      `target add s3 in zone ${zone}`,
      etcd,
      ['target', 'add', 's3', '--name', `s3-${zone}`, '--zone', zone, '--endpoint', rgw.endpoint, '--bucket', bucket],
      { env },
    );
    buckets.push(bucket);
  }
  return buckets;
}
