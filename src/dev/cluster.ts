/**
 * A local development cluster as background processes: a real etcd, storage nodes in zones
 * a, b, c, ... and one NBD frontend, all on loopback, described by DIR/cluster.json. The processes
 * outlive the command that started them; `down` stops each one by the pid it recorded (SIGTERM,
 * then SIGKILL after a grace period), never by name.
 *
 * Secure by default: every `up` makes a new random node secret (DIR/node-secret, 0600) that the
 * nodes require and every client sends, and writes DIR/env, `export NAME=VALUE` lines giving a
 * shell what cairnctl and cairnd need to reach the cluster (`. DIR/env`). With `tls` it also makes
 * a throwaway CA and certificates (DIR/tls, src/dev/tls.ts), runs etcd with client TLS
 * (--client-cert-auth) and authentication on (users `root`, password in DIR/etcd-root-password,
 * and `cairn`, allowed only Cairn's keys, password in DIR/etcd-password), the nodes with mutual
 * TLS, and the frontend with TLS required on its TCP port (`nbds://`). The Unix socket stays
 * plaintext: only local users with access to DIR reach it.
 */
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import {
  chmodSync,
  existsSync,
  mkdirSync,
  openSync,
  closeSync,
  readFileSync,
  rmSync,
  writeFileSync,
  renameSync,
} from 'node:fs';
import { join, resolve } from 'node:path';
import { CairnError, InvalidArgumentError, errorMessage, formatProfile, type Profile } from '../core/index.js';
import { EtcdMeta, enableEtcdAuth, etcdCredentialEnv, type EtcdCredentials } from '../meta/index.js';
import { initCluster } from '../api/index.js';
import { etcdArgs, etcdHealthy, type EtcdHealthTls } from './etcd.js';
import { makeTlsDir } from './tls.js';
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
  /** Started with --tls: etcd, the nodes and the frontend's TCP port speak TLS (files in DIR/tls). */
  readonly tls?: boolean;
  /** DIR/env: `. DIR/env` gives a shell the variables to reach this cluster. */
  readonly env?: string;
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
  /** TLS everywhere and etcd authentication (see the file comment). */
  readonly tls?: boolean;
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

/** The files `dev up --tls` uses, in DIR/tls (made by makeTlsDir, kept across `up`s). */
interface DevTlsFiles {
  readonly ca: string;
  readonly serverCert: string;
  readonly serverKey: string;
  readonly clientCert: string;
  readonly clientKey: string;
}

function devTlsFiles(dir: string): DevTlsFiles {
  const tls = join(dir, 'tls');
  return {
    ca: join(tls, 'ca-cert.pem'),
    serverCert: join(tls, 'server-cert.pem'),
    serverKey: join(tls, 'server-key.pem'),
    clientCert: join(tls, 'client-cert.pem'),
    clientKey: join(tls, 'client-key.pem'),
  };
}

/** The etcd user every Cairn process of a `--tls` dev cluster logs in as. */
export const devEtcdUser = 'cairn';

/** Writes `text` to `path` readable by its owner only (0600, also when the file existed). */
function writePrivate(path: string, text: string): void {
  writeFileSync(path, text, { mode: 0o600 });
  chmodSync(path, 0o600);
}

/** 32 random bytes as 64 hex characters: a node secret or a password. */
function randomSecret(): string {
  return randomBytes(32).toString('hex');
}

/** The variables of DIR/env this module sets; a child process never inherits other values of them. */
const devEnvNames = [
  'CAIRN_ETCD',
  'CAIRN_NODE_SECRET_FILE',
  'CAIRN_NODE_SECRET',
  'CAIRN_NODE_CA',
  'CAIRN_NODE_CERT',
  'CAIRN_NODE_KEY',
  ...Object.values(etcdCredentialEnv),
];

/** What DIR/env exports: every client of this cluster needs exactly these. */
export function devClientEnv(dir: string, etcd: string, tls: boolean): Record<string, string> {
  const files = devTlsFiles(dir);
  return {
    CAIRN_ETCD: etcd,
    CAIRN_NODE_SECRET_FILE: join(dir, 'node-secret'),
    // Key-encryption keys of encrypted volumes: files put here are read at each attach.
    CAIRN_KEK_DIR: join(dir, 'keks'),
    ...(tls
      ? {
          [etcdCredentialEnv.ca]: files.ca,
          [etcdCredentialEnv.cert]: files.clientCert,
          [etcdCredentialEnv.key]: files.clientKey,
          [etcdCredentialEnv.user]: devEtcdUser,
          [etcdCredentialEnv.passwordFile]: join(dir, 'etcd-password'),
          CAIRN_NODE_CA: files.ca,
          CAIRN_NODE_CERT: files.clientCert,
          CAIRN_NODE_KEY: files.clientKey,
        }
      : {}),
  };
}

/** `export NAME='VALUE'` lines, single-quoted for any POSIX shell. */
export function envFileText(env: Readonly<Record<string, string>>): string {
  const quote = (v: string): string => `'${v.replace(/'/g, `'\\''`)}'`;
  return Object.entries(env)
    .map(([k, v]) => `export ${k}=${quote(v)}\n`)
    .join('');
}

/** This process's environment without any value of the variables DIR/env sets, then `env`. */
function childEnv(env: Readonly<Record<string, string>>): NodeJS.ProcessEnv {
  const out: NodeJS.ProcessEnv = { ...process.env };
  for (const name of devEnvNames) delete out[name];
  return { ...out, ...env };
}

/** The PEM bytes a `--tls` cluster's clients present to etcd's /health. */
function healthTls(dir: string): EtcdHealthTls {
  const files = devTlsFiles(dir);
  return { ca: readFileSync(files.ca), cert: readFileSync(files.clientCert), key: readFileSync(files.clientKey) };
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
    const tls = options.tls === true;
    const files = devTlsFiles(dir);
    // Kept across `up`s, so a shell that sourced DIR/env keeps working.
    if (tls && !existsSync(files.ca)) makeTlsDir(join(dir, 'tls'));
    writePrivate(join(dir, 'node-secret'), `${randomSecret()}\n`);
    const clientPort = await freePort();
    const peerPort = await freePort();
    const etcd = `${tls ? 'https' : 'http'}://127.0.0.1:${clientPort}`;
    const peer = `http://127.0.0.1:${peerPort}`;
    const etcdLog = join(dir, 'etcd.log');
    const etcdFresh = !existsSync(join(etcdDataDir(dir), 'member'));
    const etcdPid = startDetached(
      'etcd',
      etcdArgs({
        name: 'dev',
        dataDir: etcdDataDir(dir),
        clientUrl: etcd,
        peerUrl: peer,
        logLevel: 'warn',
        compactionRetentionRevisions: etcdCompactionRetentionRevisions,
        ...(tls ? { tls: { cert: files.serverCert, key: files.serverKey, ca: files.ca } } : {}),
      }),
      etcdLog,
    );
    pids.push(etcdPid);
    const health = tls ? healthTls(dir) : undefined;
    await waitStarted(`etcd at ${etcd} (${etcdLog}: ${logTail(etcdLog)})`, async () => {
      if (!pidAlive(etcdPid)) throw new CairnError('EEXIT', `etcd exited: ${logTail(etcdLog)}`);
      return etcdHealthy(etcd, undefined, health);
    });
    options.log(`etcd ${etcd} (pid ${etcdPid}${tls ? ', TLS and authentication' : ''})`);
    const clientEnv = devClientEnv(dir, etcd, tls);
    mkdirSync(join(dir, 'keks'), { recursive: true, mode: 0o700 });
    const envPath = join(dir, 'env');
    if (tls) await ensureEtcdAuth(dir, etcd, etcdFresh);
    writePrivate(envPath, envFileText(clientEnv));
    const env = childEnv(clientEnv);
    const meta = new EtcdMeta([etcd], { credentials: devCredentials(dir, tls) });
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
              ...(tls ? ['--tls-cert', files.serverCert, '--tls-key', files.serverKey, '--tls-ca', files.ca] : []),
            ],
            join(nodesDir, `${name}.log`),
            env,
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
        [
          options.cairnctlPath,
          'nbd',
          'serve',
          '--etcd',
          etcd,
          '--listen',
          `127.0.0.1:${nbdPort}`,
          '--socket',
          socket,
          ...(tls
            ? ['--tls', 'require', '--tls-cert', files.serverCert, '--tls-key', files.serverKey, '--tls-ca', files.ca]
            : []),
        ],
        frontendLog,
        { ...env, ...options.frontendEnv },
      );
      pids.push(frontendPid);
      await waitStarted(`the NBD frontend (${frontendLog})`, () => {
        if (!pidAlive(frontendPid)) throw new CairnError('EEXIT', `the frontend exited: ${logTail(frontendLog)}`);
        return readFileSync(frontendLog, 'utf8').includes('serving NBD');
      });
      const nbdUri = `${tls ? 'nbds' : 'nbd'}://127.0.0.1:${nbdPort}`;
      const cluster: DevCluster = {
        etcd,
        etcdPid,
        nodes,
        frontend: { pid: frontendPid, nbdUri, socket },
        dir,
        ...(tls ? { tls: true } : {}),
        env: envPath,
      };
      const tmp = `${clusterFile(dir)}.tmp`;
      writeFileSync(tmp, `${JSON.stringify(cluster, null, 2)}\n`);
      renameSync(tmp, clusterFile(dir));
      options.log(
        `NBD frontend ${nbdUri} and ${socket} (pid ${frontendPid}); profile ${formatProfile(options.profile)}`,
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
    healthy = await etcdHealthy(cluster.etcd, statusEtcdDeadlineMs, cluster.tls === true ? healthTls(dir) : undefined);
  } catch (err) {
    void errorMessage(err);
  }
  return { cluster, processes, etcdHealthy: healthy };
}

/**
 * The etcd credentials of a dev cluster's clients: none without TLS (never this shell's
 * CAIRN_ETCD_* variables: they may name another cluster), else the client certificate and the
 * `cairn` user.
 */
function devCredentials(dir: string, tls: boolean): EtcdCredentials {
  if (!tls) return {};
  const files = devTlsFiles(dir);
  return {
    ca: readFileSync(files.ca),
    cert: readFileSync(files.clientCert),
    key: readFileSync(files.clientKey),
    username: devEtcdUser,
    password: readFileSync(join(dir, 'etcd-password'), 'utf8').trim(),
  };
}

/**
 * Turns etcd authentication on in a fresh data dir (random passwords for root and `cairn`, each
 * in a 0600 file), or checks that an existing one has its password file.
 */
async function ensureEtcdAuth(dir: string, etcd: string, fresh: boolean): Promise<void> {
  const passwordFile = join(dir, 'etcd-password');
  if (!fresh) {
    if (existsSync(passwordFile)) return;
    throw new InvalidArgumentError(
      `${etcdDataDir(dir)} holds an etcd started without --tls, so it has no users: use a new --dir for a --tls cluster`,
    );
  }
  const rootPassword = randomSecret();
  const password = randomSecret();
  writePrivate(join(dir, 'etcd-root-password'), `${rootPassword}\n`);
  writePrivate(passwordFile, `${password}\n`);
  const { username: _user, password: _password, ...tlsOnly } = devCredentials(dir, true);
  // Before auth is on, any client etcd's CA signed may manage users.
  const admin = new EtcdMeta([etcd], { credentials: tlsOnly });
  try {
    await admin.call('enable authentication', () =>
      enableEtcdAuth(admin.client, { rootPassword, user: devEtcdUser, password }),
    );
  } finally {
    admin.close();
  }
}
