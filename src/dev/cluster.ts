/**
 * A local development cluster as background processes: a real etcd, storage nodes in zones
 * a, b, c, ... and one NBD frontend, all on loopback, described by DIR/cluster.json. The processes
 * outlive the command that started them; `down` stops each one by the pid it recorded (SIGTERM,
 * then SIGKILL after a grace period), never by name.
 */
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, openSync, closeSync, readFileSync, rmSync, writeFileSync, renameSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { CairnError, InvalidArgumentError, errorMessage, formatProfile, type Profile } from '../core/index.js';
import { EtcdMeta } from '../meta/index.js';
import { initCluster } from '../api/index.js';
import { etcdArgs, etcdHealthy } from './etcd.js';
import { freePort, freePorts, pidAlive, stopPid, waitFor } from './processes.js';

/** One storage node in cluster.json: `address` is host:port, `dataDir` absolute. */
export interface DevNode {
  readonly name: string;
  readonly zone: string;
  readonly pid: number;
  readonly address: string;
  readonly dataDir: string;
}

/**
 * The contents of DIR/cluster.json: what `dev up` started (etcd's client URL, every pid, the
 * frontend's addresses), read by `dev status`, `dev down`, scripts/demo.sh and the test harness.
 */
export interface DevCluster {
  readonly etcd: string;
  readonly etcdPid: number;
  readonly nodes: readonly DevNode[];
  readonly frontend: { readonly pid: number; readonly nbdUri: string; readonly socket: string };
  readonly dir: string;
}

export interface DevUpOptions {
  readonly dir: string;
  readonly zones: number;
  readonly nodesPerZone: number;
  readonly profile: Profile;
  readonly extentBytes: number;
  /** Absolute paths of dist/src/bin/cairnd.js and cairnctl.js. */
  readonly cairndPath: string;
  readonly cairnctlPath: string;
  readonly log: (line: string) => void;
  /** Extra environment for the frontend (cache sizes, for tests). */
  readonly frontendEnv?: Readonly<Record<string, string>>;
}

/** Each process (etcd, all the nodes, the frontend) gets this long to become ready. */
const startDeadlineMs = 30_000;
/** How often `dev up` looks whether a process it started is ready. */
const startPollMs = 50;
/** Time between SIGTERM and SIGKILL when `dev down` stops a process. */
const stopGraceMs = 10_000;
/** Revisions etcd keeps: docs/operations.md, a long-running cluster needs compaction. */
const etcdCompactionRetentionRevisions = 1000;

/** Where the dev cluster's etcd keeps its data; its command line names it, so pidRuns finds it. */
function etcdDataDir(dir: string): string {
  return join(dir, 'etcd');
}

/** Waits for a process `dev up` started: `startDeadlineMs`, polled every `startPollMs`. */
function waitStarted(what: string, ready: () => Promise<boolean> | boolean): Promise<boolean> {
  return waitFor(what, ready, startDeadlineMs, { intervalMs: startPollMs });
}

/** Starts a detached process whose output goes to `logPath`; returns its pid. */
function startDetached(
  command: string,
  args: readonly string[],
  logPath: string,
  env: NodeJS.ProcessEnv = process.env,
): number {
  const fd = openSync(logPath, 'a');
  try {
    const child = spawn(command, [...args], { detached: true, stdio: ['ignore', fd, fd], env });
    child.unref();
    if (child.pid === undefined) throw new CairnError('ESPAWN', `Cannot start ${command}`);
    return child.pid;
  } finally {
    closeSync(fd);
  }
}

function logTail(path: string): string {
  try {
    return readFileSync(path, 'utf8').trim().split('\n').slice(-3).join(' | ');
  } catch {
    return '';
  }
}

export function clusterFile(dir: string): string {
  return join(dir, 'cluster.json');
}

export function readDevCluster(dir: string): DevCluster {
  const path = clusterFile(dir);
  if (!existsSync(path))
    throw new InvalidArgumentError(
      `No dev cluster in ${dir}: ${path} does not exist (run cairnctl dev up --dir ${dir})`,
    );
  return JSON.parse(readFileSync(path, 'utf8')) as DevCluster;
}

export async function devUp(options: DevUpOptions): Promise<DevCluster> {
  const dir = resolve(options.dir);
  if (!Number.isSafeInteger(options.zones) || options.zones < 1 || options.zones > 26)
    throw new InvalidArgumentError(`Invalid --zones ${options.zones}: use 1 to 26`);
  if (!Number.isSafeInteger(options.nodesPerZone) || options.nodesPerZone < 1 || options.nodesPerZone > 16) {
    throw new InvalidArgumentError(`Invalid --nodes-per-zone ${options.nodesPerZone}: use 1 to 16`);
  }
  if (existsSync(clusterFile(dir))) {
    const old = readDevCluster(dir);
    const alive = [old.etcdPid, old.frontend.pid, ...old.nodes.map((n) => n.pid)].filter(pidAlive);
    if (alive.length > 0)
      throw new InvalidArgumentError(
        `A dev cluster is already running in ${dir} (pids ${alive.join(', ')}); run cairnctl dev down --dir ${dir} first`,
      );
  }
  mkdirSync(dir, { recursive: true });
  const pids: number[] = [];
  try {
    // etcd
    const clientPort = await freePort();
    const peerPort = await freePort();
    const etcd = `http://127.0.0.1:${clientPort}`;
    const peer = `http://127.0.0.1:${peerPort}`;
    const etcdLog = join(dir, 'etcd.log');
    const etcdPid = startDetached(
      'etcd',
      etcdArgs({
        name: 'dev',
        dataDir: etcdDataDir(dir),
        clientUrl: etcd,
        peerUrl: peer,
        logLevel: 'warn',
        compactionRetentionRevisions: etcdCompactionRetentionRevisions,
      }),
      etcdLog,
    );
    pids.push(etcdPid);
    await waitStarted(`etcd at ${etcd} (${etcdLog}: ${logTail(etcdLog)})`, async () => {
      if (!pidAlive(etcdPid)) throw new CairnError('EEXIT', `etcd exited: ${logTail(etcdLog)}`);
      return etcdHealthy(etcd);
    });
    options.log(`etcd ${etcd} (pid ${etcdPid})`);
    const meta = new EtcdMeta([etcd]);
    try {
      if ((await meta.getCluster()) === null)
        await initCluster(meta, { defaultProfile: options.profile, extentBytes: options.extentBytes });

      // storage nodes
      const nodes: DevNode[] = [];
      const nodesDir = join(dir, 'nodes');
      mkdirSync(nodesDir, { recursive: true });
      // Two ports per node (shards, journal), all chosen at once so none is handed out twice; the
      // journal's default (shard port + 1) may be taken.
      const ports = await freePorts(2 * options.zones * options.nodesPerZone);
      for (let z = 0; z < options.zones; z++) {
        const zone = String.fromCharCode(97 + z);
        for (let i = 1; i <= options.nodesPerZone; i++) {
          const name = `${zone}-${i}`;
          const port = ports.pop()!;
          const address = `127.0.0.1:${port}`;
          const journalPort = ports.pop()!;
          const dataDir = join(nodesDir, name);
          const pid = startDetached(
            process.execPath,
            [
              options.cairndPath,
              '--etcd',
              etcd,
              '--name',
              name,
              '--zone',
              zone,
              '--data-dir',
              dataDir,
              '--listen',
              address,
              '--journal-listen',
              `127.0.0.1:${journalPort}`,
            ],
            join(nodesDir, `${name}.log`),
          );
          pids.push(pid);
          nodes.push({ name, zone, pid, address, dataDir });
        }
      }
      await waitStarted('every storage node to register', async () => {
        for (const n of nodes)
          if (!pidAlive(n.pid))
            throw new CairnError('EEXIT', `cairnd ${n.name} exited: ${logTail(join(nodesDir, `${n.name}.log`))}`);
        const alive = await meta.listAlive();
        return nodes.every((n) => alive.some((a) => a.name === n.name));
      });
      options.log(`${nodes.length} storage nodes in zones ${[...new Set(nodes.map((n) => n.zone))].join(', ')}`);

      // the NBD frontend
      const nbdPort = await freePort();
      const socket = join(dir, 'nbd.sock');
      rmSync(socket, { force: true });
      const frontendLog = join(dir, 'frontend.log');
      const frontendPid = startDetached(
        process.execPath,
        [options.cairnctlPath, 'nbd', 'serve', '--etcd', etcd, '--listen', `127.0.0.1:${nbdPort}`, '--socket', socket],
        frontendLog,
        { ...process.env, ...options.frontendEnv },
      );
      pids.push(frontendPid);
      await waitStarted(`the NBD frontend (${frontendLog})`, () => {
        if (!pidAlive(frontendPid)) throw new CairnError('EEXIT', `the frontend exited: ${logTail(frontendLog)}`);
        return readFileSync(frontendLog, 'utf8').includes('serving NBD');
      });
      const cluster: DevCluster = {
        etcd,
        etcdPid,
        nodes,
        frontend: { pid: frontendPid, nbdUri: `nbd://127.0.0.1:${nbdPort}`, socket },
        dir,
      };
      const tmp = `${clusterFile(dir)}.tmp`;
      writeFileSync(tmp, `${JSON.stringify(cluster, null, 2)}\n`);
      renameSync(tmp, clusterFile(dir));
      options.log(
        `NBD frontend nbd://127.0.0.1:${nbdPort} and ${socket} (pid ${frontendPid}); profile ${formatProfile(options.profile)}`,
      );
      return cluster;
    } finally {
      meta.close();
    }
  } catch (err) {
    // These pids are our own children from moments ago: no reuse check needed.
    for (const pid of pids.reverse()) await stopPid(pid, { graceMs: stopGraceMs });
    throw err;
  }
}

/** A process cluster.json records, with what its command line contains while it runs (pidRuns). */
export interface DevProcess {
  readonly what: string;
  readonly pid: number;
  readonly needle: string;
}

/**
 * The recorded processes, each with a needle only it has on its command line: the frontend its
 * socket, a node its data dir, etcd its data dir. A recorded pid that no longer runs its needle
 * exited and may have been reused: it is not ours to signal.
 */
export function devProcesses(cluster: DevCluster): {
  readonly frontend: DevProcess;
  readonly nodes: readonly DevProcess[];
  readonly etcd: DevProcess;
} {
  return {
    frontend: { what: 'frontend', pid: cluster.frontend.pid, needle: cluster.frontend.socket },
    nodes: cluster.nodes.map((n) => ({ what: `node ${n.name}`, pid: n.pid, needle: n.dataDir })),
    etcd: { what: 'etcd', pid: cluster.etcdPid, needle: etcdDataDir(cluster.dir) },
  };
}

export interface DevDownResult {
  readonly stopped: { readonly what: string; readonly pid: number; readonly outcome: string }[];
}

/**
 * Stops the frontend first (so it flushes), then the nodes, then etcd, each by its recorded pid,
 * and only when that pid still runs the command we started (see pidRuns).
 */
export async function devDown(dir: string, purge: boolean): Promise<DevDownResult> {
  const recorded = devProcesses(readDevCluster(dir));
  const stop = async ({ what, pid, needle }: DevProcess) => ({
    what,
    pid,
    outcome: await stopPid(pid, { graceMs: stopGraceMs, needle }),
  });
  const stopped: { what: string; pid: number; outcome: string }[] = [];
  stopped.push(await stop(recorded.frontend));
  stopped.push(...(await Promise.all(recorded.nodes.map(stop))));
  stopped.push(await stop(recorded.etcd));
  rmSync(clusterFile(dir), { force: true });
  if (purge) rmSync(dir, { recursive: true, force: true });
  return { stopped };
}

export interface DevStatus {
  readonly cluster: DevCluster;
  readonly processes: { readonly what: string; readonly pid: number; readonly alive: boolean }[];
  readonly etcdHealthy: boolean;
}

/** `dev status` asks etcd's /health for this long: a member without quorum hangs. */
const statusEtcdDeadlineMs = 2000;

export async function devStatus(dir: string): Promise<DevStatus> {
  const cluster = readDevCluster(dir);
  const processes = [
    { what: 'etcd', pid: cluster.etcdPid, alive: pidAlive(cluster.etcdPid) },
    ...cluster.nodes.map((n) => ({ what: `node ${n.name} (zone ${n.zone})`, pid: n.pid, alive: pidAlive(n.pid) })),
    { what: 'frontend', pid: cluster.frontend.pid, alive: pidAlive(cluster.frontend.pid) },
  ];
  let healthy = false;
  try {
    healthy = await etcdHealthy(cluster.etcd, statusEtcdDeadlineMs);
  } catch (err) {
    void errorMessage(err);
  }
  return { cluster, processes, etcdHealthy: healthy };
}
