/**
 * Starts a real S3 server for tests: Ceph RGW (Debian `radosgw`) on a throwaway RADOS cluster of
 * one monitor and one memstore OSD, all on loopback, free ports, in a temp dir (on /dev/shm when
 * it exists). Pacific's RGW cannot run without RADOS, so this is the smallest real S3 there is.
 *
 * What it keeps true: every step has its own deadline (RGW's monitor auth is known to hang for
 * 300 s when misconfigured, and the `ceph` CLI waits forever for a missing monitor); the daemons
 * run in the foreground as our children, so they are stopped by pid (SIGTERM, wait, SIGKILL) and
 * die with us if the test process exits early; the handle is returned only after a signed S3
 * request with the created user's keys has succeeded.
 *
 * What it leaves out: persistence (memstore is RAM; stop loses everything), auth between daemons
 * (`auth none`), and installing packages (`make setup` installs radosgw, ceph-mon, ceph-osd).
 *
 * sharedRgw() starts one instance lazily per test process for every S3 test file; the root hook
 * in test/integration/_rgw_root_hooks.test.ts stops it after the last test.
 */
import { ListBucketsCommand, S3Client } from '@aws-sdk/client-s3';
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes, randomUUID } from 'node:crypto';
import { get as httpGet } from 'node:http';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort, stopChild, waitFor } from '../../src/dev/index.js';

export interface RgwHandle {
  /** S3 endpoint, e.g. http://127.0.0.1:43121 */
  readonly endpoint: string;
  readonly accessKeyId: string;
  readonly secretAccessKey: string;
  readonly region: string;
  /** Pids of the monitor, the OSD and radosgw, in start order. */
  readonly pids: readonly number[];
  /** The cluster's temp dir: ceph.conf, logs under log/. Removed by stop(). */
  readonly dir: string;
  /** Wall time from the call to startRgw() until the first signed S3 request succeeded. */
  readonly startMs: number;
  /** Stops radosgw and the OSD, then the monitor, each by pid with a SIGKILL fallback; removes dir. */
  stop(): Promise<void>;
  /** The pid of the radosgw process serving now (it changes when startRadosgw() starts another). */
  radosgwPid(): number;
  /**
   * Stops ONLY radosgw (SIGTERM by pid, SIGKILL after a short grace, then waits for the exit). The
   * monitor and the memstore OSD keep running, so every object stays; S3 requests are refused.
   */
  stopRadosgw(): Promise<void>;
  /**
   * Starts radosgw again on the same port with the same config, after stopRadosgw(), and resolves
   * once it answers HTTP. stop() stops it like the first one.
   */
  startRadosgw(): Promise<void>;
}

export interface RgwOptions {
  /** Bound on the whole start; each step also has its own, smaller deadline. */
  readonly startDeadlineMs?: number;
}

/** One-shot tools (mkfs, `ceph osd new`, user create) take well under a second when healthy. */
const toolDeadlineMs = 20_000;
/** The OSD reports up within about a second of starting on memstore. */
const osdUpDeadlineMs = 30_000;
/** RGW creates its ~8 pools before it listens: about 1 s with the fast paxos settings below. */
const rgwServingDeadlineMs = 60_000;
const startDeadlineMsDefault = 120_000;
/** ceph-osd took more than 3 s to leave once (INFRA.md); give each daemon this long before SIGKILL. */
const stopGraceMs = 10_000;
/**
 * radosgw logs "final shutdown" within 0.2 s of SIGTERM but then waits for every client's idle
 * keep-alive connection to close (measured: 50 ms with none open, never with one open). Its data
 * is throwaway memstore, so it gets a short grace before SIGKILL.
 */
const rgwStopGraceMs = 2_000;
/** The OSD allocates RAM as objects arrive; tests write a few hundred MiB at most. */
const memstoreBytes = 2 * 1024 * 1024 * 1024;
const stderrTailChars = 4000;

const region = 'us-east-1';

function cephConf(dir: string, fsid: string, monV2Port: number, monV1Port: number, rgwPort: number): string {
  return `[global]
fsid = ${fsid}
mon host = [v2:127.0.0.1:${monV2Port},v1:127.0.0.1:${monV1Port}]
public addr = 127.0.0.1
auth cluster required = none
auth service required = none
auth client required = none
# With auth none, clients default to "secure" mode only and then loop on auth for 300 s.
ms mon client mode = crc secure
ms client mode = crc secure
ms bind ipv6 = false
osd pool default size = 1
osd pool default min size = 1
# RGW creates ~8 pools; at the default 32 PGs each they exceed the per-OSD PG limit.
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
mon max pg per osd = 1000
mon allow pool size one = true
mon warn on pool no redundancy = false
mon data avail warn = 1
# Each pool RGW creates costs one osdmap epoch, and the monitor batches proposals once a second
# by default: RGW took 9 s to start. At 50 ms it takes about 0.6 s.
paxos propose interval = 0.05
paxos min wait = 0.01
osd crush chooseleaf type = 0
run dir = ${dir}/run
admin socket = ${dir}/run/$name.asok
log file = ${dir}/log/$name.log
keyring = ${dir}/keyring
[mon.a]
mon data = ${dir}/mon.a
[osd.0]
osd data = ${dir}/osd.0
osd objectstore = memstore
memstore device bytes = ${memstoreBytes}
[client.rgw.a]
# Without tcp_nodelay a small ranged GET at queue depth 1 takes 44-48 ms (Nagle + delayed ACK).
rgw frontends = beast endpoint=127.0.0.1:${rgwPort} tcp_nodelay=1
rgw data = ${dir}/rgw
`;
}

/** Runs a one-shot tool with a deadline; rejects with its stderr when it fails or overruns. */
function runTool(file: string, args: readonly string[], cwd: string, deadlineMs = toolDeadlineMs): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(
      file,
      args,
      { cwd, timeout: deadlineMs, killSignal: 'SIGKILL', maxBuffer: 1 << 20 },
      (err, stdout, stderr) => {
        if (err === null) {
          resolve(stdout);
          return;
        }
        const why = (err as { killed?: boolean }).killed
          ? `did not finish within ${deadlineMs} ms`
          : (err as { code?: unknown }).code === 'ENOENT'
            ? 'is not installed (run make setup)'
            : err.message;
        reject(
          new Error(
            `Cannot start RGW: ${file} ${args.slice(0, 4).join(' ')} ${why}: ${stderr.trim().slice(-stderrTailChars)}`,
          ),
        );
      },
    );
  });
}

/** True when `url` answers any HTTP status. No keep-alive: an idle socket would delay RGW's stop. */
function answersHttp(url: string): Promise<boolean> {
  return new Promise((resolve) => {
    const req = httpGet(url, { agent: false, timeout: 1_000 }, (res) => {
      res.resume();
      resolve(res.statusCode !== undefined);
    });
    req.on('timeout', () => req.destroy());
    req.on('error', () => resolve(false));
  });
}

function logTail(dir: string, name: string): string {
  try {
    return readFileSync(join(dir, 'log', `${name}.log`), 'utf8').slice(-stderrTailChars);
  } catch {
    return '(no log)';
  }
}

/** Pids of daemons started by a handle not yet stopped; SIGKILLed if the process exits first. */
const livePids = new Set<number>();
const liveDirs = new Set<string>();
let exitHookInstalled = false;

function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  // 'exit' handlers must be synchronous: SIGKILL is, and so is rmSync. This only matters when a
  // run ends without the root after() hook (a crash, or a file run on its own).
  process.on('exit', () => {
    for (const pid of livePids) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // Already gone.
      }
    }
    for (const dir of liveDirs) rmSync(dir, { recursive: true, force: true });
  });
}

/** Starts a mini Ceph cluster with RGW and an S3 user. See the file comment. */
export async function startRgw(options: RgwOptions = {}): Promise<RgwHandle> {
  const started = Date.now();
  const base = existsSync('/dev/shm') ? '/dev/shm' : tmpdir();
  const dir = mkdtempSync(join(base, 'cairn-rgw-'));
  installExitHook();
  liveDirs.add(dir);
  for (const sub of ['run', 'log', 'mon.a', 'osd.0', 'rgw']) mkdirSync(join(dir, sub));

  const [monV2Port, monV1Port, rgwPort] = [await freePort(), await freePort(), await freePort()];
  const fsid = randomUUID();
  const conf = join(dir, 'ceph.conf');
  writeFileSync(conf, cephConf(dir, fsid, monV2Port, monV1Port, rgwPort));
  const endpoint = `http://127.0.0.1:${rgwPort}`;
  const accessKeyId = `AK${randomBytes(9).toString('hex').toUpperCase()}`;
  const secretAccessKey = randomBytes(24).toString('base64url');

  const children: { name: string; child: ChildProcess }[] = [];
  let failure: Error | undefined;
  // Any daemon leaving during start fails the start at once, with its log, instead of at a deadline.
  let rejectEarlyExit: (err: Error) => void = () => undefined;
  const earlyExit = new Promise<never>((_, reject) => {
    rejectEarlyExit = reject;
  });
  earlyExit.catch(() => undefined);

  // Set when the start has failed: steps still running in the background (a poll, a tool) must
  // not start daemons that stop() has already accounted for.
  let abandoned = false;
  const tool = (file: string, args: readonly string[]): Promise<string> =>
    abandoned ? Promise.reject(new Error('Cannot start RGW: start abandoned')) : runTool(file, args, dir);

  function daemon(name: string, file: string, args: readonly string[]): void {
    if (abandoned) throw new Error(`Cannot start RGW: start abandoned before ${name}`);
    const child = spawn(file, [...args, '-f'], { cwd: dir, stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr?.on('data', (chunk: Buffer) => {
      stderr = (stderr + chunk.toString()).slice(-stderrTailChars);
    });
    child.once('error', (err) => {
      failure ??= new Error(`Cannot start RGW: cannot run ${file}: ${err.message} (is it installed? run make setup)`);
      rejectEarlyExit(failure);
    });
    child.once('exit', (code, signal) => {
      if (child.pid !== undefined) livePids.delete(child.pid);
      failure ??= new Error(
        `Cannot start RGW: ${name} exited (${signal ?? `code ${code}`}) during start: ${stderr.trim()} ${logTail(dir, name)}`,
      );
      rejectEarlyExit(failure);
    });
    if (child.pid !== undefined) livePids.add(child.pid);
    children.push({ name, child });
  }

  let stopped: Promise<void> | undefined;
  const stop = (): Promise<void> => {
    stopped ??= (async () => {
      // Reverse start order, one at a time: radosgw unregisters its watches through the OSD as
      // it leaves (with the OSD stopping beside it, it hung until SIGKILL), and the OSD reports
      // its exit to the monitor. Measured: 180 + 40 + 40 ms.
      for (const c of [...children].reverse()) {
        await stopChild(c.child, c.name === 'client.rgw.a' ? rgwStopGraceMs : stopGraceMs);
      }
      for (const c of children) if (c.child.pid !== undefined) livePids.delete(c.child.pid);
      rmSync(dir, { recursive: true, force: true });
      liveDirs.delete(dir);
    })();
    return stopped;
  };

  const steps = async (): Promise<void> => {
    const cephArgs = ['-c', conf, '--connect-timeout', String(Math.ceil(toolDeadlineMs / 1000))];
    await tool('ceph-authtool', ['--create-keyring', 'keyring', '--gen-key', '-n', 'mon.', '--cap', 'mon', 'allow *']);
    const monAddr = `[v2:127.0.0.1:${monV2Port},v1:127.0.0.1:${monV1Port}]`;
    await tool('monmaptool', ['--create', '--fsid', fsid, '--addv', 'a', monAddr, 'monmap']);
    await tool('ceph-mon', ['-c', conf, '--mkfs', '-i', 'a', '--monmap', 'monmap', '--keyring', 'keyring']);
    daemon('mon.a', 'ceph-mon', ['-c', conf, '-i', 'a']);

    const osdUuid = randomUUID();
    const osdId = (await tool('ceph', [...cephArgs, 'osd', 'new', osdUuid])).trim();
    if (osdId !== '0') throw new Error(`Cannot start RGW: expected osd id 0 from a fresh cluster, got "${osdId}"`);
    await tool('ceph-osd', ['-c', conf, '-i', osdId, '--mkfs', '--osd-uuid', osdUuid]);
    daemon('osd.0', 'ceph-osd', ['-c', conf, '-i', osdId]);
    await waitFor(
      'the OSD to report up',
      async () => /\b1 up\b/.test(await tool('ceph', [...cephArgs, 'osd', 'stat'])),
      osdUpDeadlineMs,
      { intervalMs: 100 },
    );

    // --no-mon-config: otherwise RGW asks the monitor for its config, with auth it cannot do here.
    daemon('client.rgw.a', 'radosgw', ['-c', conf, '-n', 'client.rgw.a', '--no-mon-config']);
    await waitFor(`RGW to answer HTTP at ${endpoint}`, () => answersHttp(endpoint), rgwServingDeadlineMs, {
      intervalMs: 50,
    });
    // As client.admin, so it does not fight the running radosgw for client.rgw.a's admin socket.
    await tool('radosgw-admin', [
      '-c',
      conf,
      '-n',
      'client.admin',
      '--no-mon-config',
      'user',
      'create',
      '--uid=cairn-test',
      '--display-name=cairn-test',
      `--access-key=${accessKeyId}`,
      `--secret-key=${secretAccessKey}`,
    ]);
    const client = new S3Client({
      endpoint,
      region,
      forcePathStyle: true,
      credentials: { accessKeyId, secretAccessKey },
      maxAttempts: 1,
    });
    try {
      await waitFor(
        `a signed S3 request to succeed at ${endpoint}`,
        async () =>
          (await client.send(new ListBucketsCommand({}), { abortSignal: AbortSignal.timeout(2_000) })).Buckets !==
          undefined,
        toolDeadlineMs,
        { intervalMs: 50 },
      );
    } finally {
      client.destroy();
    }
  };

  const deadlineMs = options.startDeadlineMs ?? startDeadlineMsDefault;
  let timer: NodeJS.Timeout | undefined;
  const overall = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`Cannot start RGW: not serving within ${deadlineMs} ms`)), deadlineMs);
  });
  try {
    await Promise.race([steps(), earlyExit, overall]);
  } catch (err) {
    abandoned = true;
    await stop();
    throw err;
  } finally {
    clearTimeout(timer);
  }
  // From here on a daemon exiting is the test's business (a test may stop RGW on purpose).
  rejectEarlyExit = () => undefined;

  // Restarting radosgw alone (fault tests): the newest radosgw child is the serving one; a restart
  // appends a new child, so stop() (reverse start order) stops it before the OSD and monitor.
  const rgwName = 'client.rgw.a';
  const currentRgw = () => [...children].reverse().find((c) => c.name === rgwName);
  const radosgwPid = (): number => currentRgw()?.child.pid ?? -1;
  const stopRadosgw = async (): Promise<void> => {
    const c = currentRgw();
    if (c === undefined) return;
    await stopChild(c.child, rgwStopGraceMs);
    if (c.child.pid !== undefined) livePids.delete(c.child.pid);
  };
  const startRadosgw = async (): Promise<void> => {
    const c = currentRgw();
    if (stopped !== undefined) throw new Error('Cannot start radosgw: the RGW handle was stopped');
    if (c !== undefined && c.child.exitCode === null && c.child.signalCode === null)
      throw new Error(`Cannot start radosgw: pid ${c.child.pid} still runs (call stopRadosgw() first)`);
    daemon(rgwName, 'radosgw', ['-c', conf, '-n', rgwName, '--no-mon-config']);
    const fresh = currentRgw()!;
    await waitFor(
      `the restarted RGW (pid ${fresh.child.pid}) to answer HTTP at ${endpoint}`,
      () => {
        if (fresh.child.exitCode !== null || fresh.child.signalCode !== null)
          throw new Error(`radosgw exited: ${logTail(dir, rgwName)}`);
        return answersHttp(endpoint);
      },
      rgwServingDeadlineMs,
      { intervalMs: 50 },
    );
  };
  return {
    endpoint,
    accessKeyId,
    secretAccessKey,
    region,
    pids: children.map((c) => c.child.pid ?? -1),
    dir,
    startMs: Date.now() - started,
    stop,
    radosgwPid,
    stopRadosgw,
    startRadosgw,
  };
}

let shared: Promise<RgwHandle> | undefined;

/**
 * The test run's one RGW, started on first use. A failed start stays failed for the run, so every
 * S3 test fails fast with the same reason instead of retrying a slow start each time.
 */
export function sharedRgw(): Promise<RgwHandle> {
  if (shared === undefined) {
    shared = startRgw();
    shared.catch(() => undefined);
  }
  return shared;
}

/** Stops the shared RGW if it was started. Safe to call more than once. */
export async function stopSharedRgw(): Promise<void> {
  const current = shared;
  shared = undefined;
  if (current === undefined) return;
  const handle = await current.catch(() => undefined);
  await handle?.stop();
}
