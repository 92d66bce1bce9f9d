#!/usr/bin/env node
// NBD benchmark: fio's nbd engine against Cairn and two reference servers, all in the same run.
//
// Jobs (each time-based, one fio job, one connection): 4k random read qd32, 4k random write qd32,
// 1M sequential write qd8, 1M sequential read qd8, over the first --size bytes of each export.
// Targets:
//   cairn-hot      a 4+2 volume whose working set fits the frontend cache. It is prefilled (written
//                  once and flushed), so reads are cache hits; writes land in the write-back cache
//                  and are not flushed during the run (age-based flushing is off: --flush-age 1 h,
//                  --dirty-max twice the working set).
//   cairn-ec       a 4+2 volume through to the six local storage nodes. Writes: a frontend with the
//                  product defaults (--cache-size 512MiB --dirty-max 256MiB --flush-age 5000) and
//                  fio's --end_fsync=1, so each job's time includes the NBD FLUSH that persists
//                  every byte it wrote to the nodes. Reads: a fresh frontend whose cache holds two
//                  extents (--cache-size = --dirty-max = 2 extents), far smaller than the working
//                  set, so reads go to the nodes.
//   cairn-ec-encrypted  cairn-ec again, on a volume created with --encrypt (AES-256-XTS, the key
//                  wrapped by a KEK file the frontend is given): what encryption costs, as the
//                  ratio of each job's result to cairn-ec's (issue 12: at least 0.75).
//   nbdkit-memory  `nbdkit memory SIZE` on loopback (writes with --end_fsync=1; its flush is a no-op).
//   nbd-server     nbd-server 3.x exporting a file on the local disk (writes with --end_fsync=1).
// Every export is prefilled with one sequential 1M write of the whole working set (end_fsync), so
// reads read data, not holes. A Cairn volume is held open by one idle NBD connection for the whole
// target, as a mounted device would be; otherwise each fio disconnect would flush and, 1.5 s
// later, detach the volume and drop its cache.
//
// Prints one JSON line per result ({"bench":"nbd","target","job","iops","MBps","latP99Ms",
// "runtimeS", ...}: MB = 10^6 bytes, latP99Ms = fio's completion latency p99, runtimeS = fio's job
// runtime, which includes the end fsync) and summary lines with the issue's targets as ratios.
// Progress goes to standard error. Every process started here is stopped by pid, also on error.
//
// Usage: node scripts/bench/nbd_bench.mjs [--seconds N] [--size SIZE] [--tiny]
//          [--targets cairn-hot,cairn-ec,nbdkit-memory,nbd-server] [--jobs randread-4k-qd32,...]
//          [--extent-size SIZE] [--cpu-prof DIR] [--work-dir DIR] [--keep] [--journal-replicas R]
// --journal-replicas R creates the Cairn volumes with R journal replicas (default: the product's,
// m+1 = 3 for 4+2), to see what each replica costs.
// --cpu-prof DIR writes V8 CPU profiles of every Cairn frontend and storage node into DIR.
// Needs `make build` and fio, nbdkit, nbd-server, etcd (make setup). It starts its own dev cluster.
import { execFile, spawn } from 'node:child_process';
import {
  closeSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readFileSync,
  readdirSync,
  rmSync,
  statSync,
  truncateSync,
  writeFileSync,
} from 'node:fs';
import { randomBytes } from 'node:crypto';
import { createConnection, createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseSize } from '../../dist/src/core/index.js';
import { nbdWire } from '../../dist/src/nbd/index.js';
import { RawNbdClient, connectPipe } from '../../dist/test/harness/nbd.js';

const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const cairnctlPath = join(repoRoot, 'dist/src/bin/cairnctl.js');
const MiB = 1024 * 1024;

const allTargets = ['nbdkit-memory', 'cairn-hot', 'nbd-server', 'cairn-ec', 'cairn-ec-encrypted'];
// The commit path: a 4 KiB random write followed by a FLUSH, one at a time (fio --fsync=1), as a
// database commits. seqwrite writes the working set once (not time-based), then flushes.
const allJobs = {
  'randread-4k-qd32': { rw: 'randread', bs: '4k', iodepth: 32 },
  'seqread-1m-qd8': { rw: 'read', bs: '1M', iodepth: 8 },
  'commit-4k-qd1-fsync': { rw: 'randwrite', bs: '4k', iodepth: 1, fsyncEvery: 1 },
  'randwrite-4k-qd32': { rw: 'randwrite', bs: '4k', iodepth: 32 },
  'seqwrite-1m-qd8': { rw: 'write', bs: '1M', iodepth: 8, once: true },
};
const isWrite = (job) => allJobs[job].rw.includes('write');

// ------------------------------------------------------------------------------------------------
// Options.

function usage(message) {
  console.error(`nbd_bench: ${message}`);
  console.error(
    'usage: node scripts/bench/nbd_bench.mjs [--seconds N] [--size SIZE] [--tiny] [--targets LIST] [--jobs LIST] [--extent-size SIZE] [--cpu-prof DIR] [--work-dir DIR] [--keep] [--journal-replicas R]',
  );
  process.exit(2);
}

function parseArgs(argv) {
  const o = { seconds: undefined, size: undefined, tiny: false, targets: allTargets, jobs: Object.keys(allJobs) };
  o.extentBytes = 4 * MiB;
  o.cpuProf = undefined;
  o.workDir = undefined;
  o.keep = false;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const value = () => {
      const v = argv[++i];
      if (v === undefined) usage(`${a} needs a value`);
      return v;
    };
    const list = (v, known, what) => {
      const items = v.split(',').filter((s) => s !== '');
      for (const s of items) if (!known.includes(s)) usage(`unknown ${what} "${s}" (known: ${known.join(', ')})`);
      return items;
    };
    const size = (v, what) => {
      try {
        return parseSize(v, what);
      } catch (err) {
        usage(err.message);
      }
    };
    if (a === '--seconds') {
      o.seconds = Number(value());
      if (!Number.isFinite(o.seconds) || o.seconds < 1) usage('--seconds must be a number >= 1');
    } else if (a === '--size') o.size = size(value(), '--size');
    else if (a === '--tiny') o.tiny = true;
    else if (a === '--targets') o.targets = list(value(), allTargets, 'target');
    else if (a === '--jobs') o.jobs = list(value(), Object.keys(allJobs), 'job');
    else if (a === '--extent-size') o.extentBytes = size(value(), '--extent-size');
    else if (a === '--cpu-prof') o.cpuProf = resolve(value());
    else if (a === '--work-dir') o.workDir = resolve(value());
    else if (a === '--keep') o.keep = true;
    else if (a === '--journal-replicas') {
      o.journalReplicas = Number(value());
      if (!Number.isSafeInteger(o.journalReplicas) || o.journalReplicas < 0 || o.journalReplicas > 6)
        usage('--journal-replicas must be a whole number from 0 to 6');
    } else usage(`unknown option ${a}`);
  }
  // Tiny: what the test suite runs so the script never rots; the numbers mean nothing.
  o.seconds ??= o.tiny ? 1 : 10;
  o.size ??= o.tiny ? 16 * MiB : 1024 * MiB;
  o.rampS = o.tiny ? 0 : 2;
  if (o.size % o.extentBytes !== 0 || o.size % MiB !== 0)
    usage('--size must be a multiple of the extent size and of 1 MiB');
  return o;
}

const opts = parseArgs(process.argv.slice(2));
const log = (line) => process.stderr.write(`nbd_bench: ${line}\n`);
// A reader that goes away (`| head`) must not kill the script before it stops what it started.
let stdoutGone = false;
process.stdout.on('error', (err) => {
  if (err.code !== 'EPIPE') throw err;
  stdoutGone = true;
});
const emit = (row) => {
  if (!stdoutGone) process.stdout.write(`${JSON.stringify(row)}\n`);
};
const round = (x, digits) => (x === null || x === undefined ? null : Math.round(x * 10 ** digits) / 10 ** digits);

// ------------------------------------------------------------------------------------------------
// Processes: everything started here is recorded with how to stop it, and stopped in reverse order.

const stoppers = [];
let cleaningUp = null;

function pidAlive(pid) {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** SIGTERM, wait up to graceMs for `gone()`, then SIGKILL. */
async function stopPid(pid, graceMs, gone = () => !pidAlive(pid)) {
  if (gone()) return 'gone';
  try {
    process.kill(pid, 'SIGTERM');
  } catch {
    return 'gone';
  }
  const until = Date.now() + graceMs;
  while (Date.now() < until) {
    if (gone()) return 'stopped';
    await sleep(50);
  }
  try {
    process.kill(pid, 'SIGKILL');
  } catch {
    return 'gone';
  }
  return 'killed';
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Starts a child whose stdout and stderr go to logPath; it is stopped by pid at cleanup. */
function startChild(label, command, args, logPath, { graceMs = 10_000, env = process.env } = {}) {
  const fd = openSync(logPath, 'a');
  let child;
  try {
    child = spawn(command, args, { stdio: ['ignore', fd, fd], env });
  } finally {
    closeSync(fd);
  }
  if (child.pid === undefined) throw new Error(`Cannot start ${label} (${command})`);
  let exited = false;
  child.once('exit', () => (exited = true));
  child.once('error', () => (exited = true));
  const stop = async () => {
    const outcome = await stopPid(child.pid, graceMs, () => exited);
    log(`${label} (pid ${child.pid}): ${outcome}`);
  };
  stoppers.push(stop);
  return { pid: child.pid, exited: () => exited, stop: () => removeAndRun(stop) };
}

async function removeAndRun(stop) {
  const i = stoppers.indexOf(stop);
  if (i >= 0) stoppers.splice(i, 1);
  await stop();
}

/** The work directory, once made; removed at the end unless --keep or --work-dir. */
let workDir;

/** Stops everything, then removes the work directory we made. */
async function finish() {
  await cleanup();
  if (workDir !== undefined && !opts.keep && opts.workDir === undefined)
    rmSync(workDir, { recursive: true, force: true });
}

async function cleanup() {
  cleaningUp ??= (async () => {
    while (stoppers.length > 0) {
      const stop = stoppers.pop();
      try {
        await stop();
      } catch (err) {
        log(`cleanup: ${err.message}`);
      }
    }
  })();
  return cleaningUp;
}

for (const signal of ['SIGINT', 'SIGTERM']) {
  process.once(signal, () => {
    log(`${signal}: stopping everything started here`);
    void finish().finally(() => process.exit(130));
  });
}

function run(command, args, { timeoutMs = 60_000, env = process.env } = {}) {
  return new Promise((resolvePromise, reject) => {
    execFile(command, args, { timeout: timeoutMs, env, maxBuffer: 64 * MiB }, (err, stdout, stderr) => {
      if (err) reject(new Error(`${command} ${args.join(' ')}: ${err.message}\n${stdout}\n${stderr}`));
      else resolvePromise(stdout);
    });
  });
}

function freePort() {
  return new Promise((resolvePort, reject) => {
    const server = createServer();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolvePort(port));
    });
  });
}

function portAnswers(port) {
  return new Promise((resolveAnswer) => {
    const socket = createConnection({ host: '127.0.0.1', port });
    socket.once('connect', () => {
      socket.destroy();
      resolveAnswer(true);
    });
    socket.once('error', () => resolveAnswer(false));
  });
}

async function waitFor(what, check, deadlineMs = 30_000) {
  const until = Date.now() + deadlineMs;
  for (;;) {
    if (await check()) return;
    if (Date.now() > until) throw new Error(`Timed out after ${deadlineMs} ms waiting for ${what}`);
    await sleep(50);
  }
}

const logTail = (path) => {
  try {
    return readFileSync(path, 'utf8').trim().split('\n').slice(-5).join(' | ');
  } catch {
    return '';
  }
};

// CPU time of processes, from /proc (utime + stime + reaped children), in seconds.
let clockTicks = 100;
function cpuSeconds(pids) {
  let ticks = 0;
  for (const pid of pids) {
    try {
      const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
      const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      ticks += Number(f[11]) + Number(f[12]) + Number(f[13]) + Number(f[14]);
    } catch {
      // exited
    }
  }
  return ticks / clockTicks;
}

/** CPU seconds every process on the machine spent busy (all cores), from /proc/stat. */
/**
 * Bytes the block device under `dir` has written since boot (/sys/dev/block/MAJ:MIN/stat, write
 * sectors x 512). The device's own count: what reached the disk, including filesystem journals
 * and everything else that wrote meanwhile (etcd; nothing else runs during the benchmark).
 * Per-process /proc/PID/io write_bytes is not used: it counts whole page-cache folios as they are
 * dirtied, so a 4 KiB overwrite inside a large folio counted as up to 1 MiB on this kernel.
 */
function deviceWrittenBytes(dir) {
  const dev = statSync(dir).dev;
  // glibc's major() and minor() for device numbers below 2^32.
  const id = `${Math.floor(dev / 256) & 0xfff}:${(dev & 0xff) | (Math.floor(dev / 4096) & 0xfff00)}`;
  const stat = `/sys/dev/block/${id}/stat`;
  if (!existsSync(stat)) return null;
  const fields = readFileSync(stat, 'utf8').trim().split(/\s+/).map(Number);
  return fields[6] * 512;
}

function machineBusySeconds() {
  const f = readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1).map(Number);
  // user nice system idle iowait irq softirq steal: busy is everything but idle and iowait.
  return (f.slice(0, 8).reduce((a, b) => a + b, 0) - f[3] - f[4]) / clockTicks;
}

// ------------------------------------------------------------------------------------------------
// fio.

/**
 * Runs one fio job with the nbd engine and returns its numbers. `seconds` null: not time-based
 * (the prefill writes the working set once). CPU is measured over fio's whole run for `cpu` pids.
 */
async function fio(
  dir,
  uri,
  name,
  { rw, bs, iodepth, seconds, rampS = 0, endFsync = false, fsyncEvery = 0, cpu = {} },
) {
  const output = join(dir, `${name}.json`);
  rmSync(output, { force: true });
  const args = [
    `--name=${name}`,
    '--ioengine=nbd',
    `--uri=${uri}`,
    `--size=${opts.size}`,
    `--rw=${rw}`,
    `--bs=${bs}`,
    `--iodepth=${iodepth}`,
    '--numjobs=1',
    '--output-format=json',
    // fio prints "connected to NBD server" on stdout, so the JSON goes to a file.
    `--output=${output}`,
  ];
  if (seconds !== null) args.push('--time_based', `--runtime=${seconds}`);
  if (rampS > 0) args.push(`--ramp_time=${rampS}`);
  if (endFsync) args.push('--end_fsync=1');
  if (fsyncEvery > 0) args.push(`--fsync=${fsyncEvery}`);
  // Generous: a flush of the working set through to the nodes can take a while on 2 cores.
  const timeoutMs = ((seconds ?? 0) + rampS) * 1000 * 3 + 600_000;
  const before = Object.fromEntries(Object.entries(cpu).map(([k, pids]) => [k, cpuSeconds(pids)]));
  const diskBefore = deviceWrittenBytes(dir);
  const machineBefore = machineBusySeconds();
  const started = performance.now();
  const { code, stdout, stderr } = await new Promise((resolveRun, reject) => {
    const child = spawn('fio', args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (c) => (out += c));
    child.stderr.on('data', (c) => (err += c));
    const timer = setTimeout(() => {
      if (child.pid !== undefined) process.kill(child.pid, 'SIGKILL');
    }, timeoutMs);
    const stop = async () => {
      if (child.exitCode === null && child.pid !== undefined) process.kill(child.pid, 'SIGKILL');
    };
    stoppers.push(stop);
    child.once('error', (e) => {
      clearTimeout(timer);
      reject(new Error(`Cannot run fio: ${e.message} (run make setup)`));
    });
    child.once('close', (exitCode) => {
      clearTimeout(timer);
      const i = stoppers.indexOf(stop);
      if (i >= 0) stoppers.splice(i, 1);
      resolveRun({ code: exitCode, stdout: out, stderr: err });
    });
  });
  const wallS = (performance.now() - started) / 1000;
  if (code !== 0 || !existsSync(output))
    throw new Error(`fio ${name} on ${uri} exited ${code}: ${stdout.trim()} ${stderr.trim()}`);
  const job = JSON.parse(readFileSync(output, 'utf8')).jobs[0];
  if (job.error !== 0) throw new Error(`fio ${name} on ${uri}: error ${job.error}: ${stderr.trim()}`);
  const side = rw.includes('read') ? job.read : job.write;
  const cpuPct = Object.fromEntries(
    Object.entries(cpu).map(([k, pids]) => [k, round(((cpuSeconds(pids) - before[k]) / wallS) * 100, 0)]),
  );
  // Everything on the machine, ours or not (out of nproc x 100): shows when others share the cores.
  cpuPct.machine = round(((machineBusySeconds() - machineBefore) / wallS) * 100, 0);
  const diskAfter = deviceWrittenBytes(dir);
  const diskBytes = diskBefore === null || diskAfter === null ? null : diskAfter - diskBefore;
  const isWriteJob = rw.includes('write') && side.io_bytes > 0;
  return {
    // Bytes the disk wrote during the job per byte the client wrote (writes only). A device whose
    // counter did not move while durable writes landed on it does not count this filesystem's
    // writes (statistics off, or a layer in between): that is reported, not a ratio of 0.
    writeAmplification:
      isWriteJob && diskBytes !== null && diskBytes > 0 ? round(diskBytes / side.io_bytes, 2) : undefined,
    writeAmplificationUnavailable: !isWriteJob
      ? undefined
      : diskBytes === null
        ? `no block-device statistics for ${dir}`
        : diskBytes === 0
          ? `the device under ${dir} counted 0 bytes written while the client wrote ${side.io_bytes}`
          : undefined,
    iops: round(side.iops, 0),
    MBps: round(side.bw_bytes / 1e6, 1),
    latP99Ms: round((side.clat_ns.percentile?.['99.000000'] ?? NaN) / 1e6, 3),
    runtimeS: round(side.runtime / 1000, 3),
    ioBytes: side.io_bytes,
    fioCpuPct: round(job.usr_cpu + job.sys_cpu, 0),
    cpuPct,
  };
}

function resultRow(target, job, r, extra = {}) {
  const row = {
    bench: 'nbd',
    target,
    job,
    iops: r.iops,
    MBps: r.MBps,
    latP99Ms: r.latP99Ms,
    runtimeS: r.runtimeS,
    ioBytes: r.ioBytes,
    sizeBytes: opts.size,
    ...extra,
    ...(r.writeAmplification === undefined ? {} : { writeAmplification: r.writeAmplification }),
    ...(r.writeAmplificationUnavailable === undefined
      ? {}
      : { writeAmplificationUnavailable: r.writeAmplificationUnavailable }),
    fioCpuPct: r.fioCpuPct,
  };
  for (const [k, v] of Object.entries(r.cpuPct)) row[`${k}CpuPct`] = v;
  return row;
}

// ------------------------------------------------------------------------------------------------
// Targets.

/** Runs the prefill and then `jobs` against one export; returns the rows. */
async function runJobs(dir, target, uri, jobs, { endFsync, cpu }) {
  const rows = [];
  for (const job of jobs) {
    const { once, ...spec } = allJobs[job];
    const fsync = isWrite(job) && endFsync && spec.fsyncEvery === undefined;
    log(
      `${target}: ${job}${fsync ? ' (end_fsync)' : ''}, ${once ? `${opts.size / MiB} MiB once` : `${opts.seconds} s`}`,
    );
    // No ramp for jobs that flush: bytes written during a ramp would be flushed inside the
    // measured time without being counted.
    const r = await fio(dir, uri, `${target}-${job}`, {
      ...spec,
      seconds: once ? null : opts.seconds,
      rampS: fsync || spec.fsyncEvery !== undefined || once ? 0 : opts.rampS,
      endFsync: fsync,
      cpu,
    });
    const row = resultRow(target, job, r, { endFsync: fsync });
    emit(row);
    rows.push(row);
  }
  return rows;
}

async function prefill(dir, target, uri, cpu) {
  log(`${target}: prefill ${opts.size / MiB} MiB (sequential 1M qd8, end_fsync)`);
  const r = await fio(dir, uri, `${target}-prefill`, {
    rw: 'write',
    bs: '1M',
    iodepth: 8,
    seconds: null,
    endFsync: true,
    cpu,
  });
  emit(resultRow(target, 'prefill-1m-qd8', r, { endFsync: true }));
  return r;
}

async function nbdkitTarget(dir) {
  const port = await freePort();
  const logPath = join(dir, 'nbdkit.log');
  // -f: foreground, so the pid is our child's; --exit-with-parent as a second line of defence.
  const p = startChild(
    'nbdkit',
    'nbdkit',
    ['-f', '--exit-with-parent', '-i', '127.0.0.1', '-p', String(port), 'memory', String(opts.size)],
    logPath,
  );
  try {
    await waitFor(`nbdkit on port ${port} (${logPath}: ${logTail(logPath)})`, async () => {
      if (p.exited()) throw new Error(`nbdkit exited: ${logTail(logPath)}`);
      return portAnswers(port);
    });
    const uri = `nbd://127.0.0.1:${port}`;
    const cpu = { server: [p.pid] };
    await prefill(dir, 'nbdkit-memory', uri, cpu);
    return await runJobs(dir, 'nbdkit-memory', uri, opts.jobs, { endFsync: true, cpu });
  } finally {
    await p.stop();
  }
}

/** The pid listening on a TCP port, from `ss -ltnp` (nbd-server daemonizes). */
async function listenerPid(port) {
  const out = await run('ss', ['-ltnpH', `sport = :${port}`]);
  const m = /pid=(\d+)/.exec(out);
  return m === null ? null : Number(m[1]);
}

function childrenOf(pid) {
  const out = [];
  for (const entry of readdirSafe('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      if (Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]) === pid) out.push(Number(entry));
    } catch {
      // gone
    }
  }
  return out;
}

function readdirSafe(dir) {
  try {
    return readdirSync(dir);
  } catch {
    return [];
  }
}

async function nbdServerTarget(dir) {
  const port = await freePort();
  const image = join(dir, 'nbd-server-disk.img');
  writeFileSync(image, '');
  truncateSync(image, opts.size);
  const conf = join(dir, 'nbd-server.conf');
  const pidFile = join(dir, 'nbd-server.pid');
  writeFileSync(
    conf,
    [
      '[generic]',
      '    listenaddr = 127.0.0.1',
      `    port = ${port}`,
      '    allowlist = true',
      '    user = root',
      '    group = root',
      '[disk]',
      `    exportname = ${image}`,
      '    flush = true',
      '    fua = true',
      '    trim = true',
      '',
    ].join('\n'),
  );
  // It daemonizes (-d serves a single connection, and fio opens two), forking per connection.
  // Its pid comes from -p (the config file's pidfile setting writes nothing) and is checked
  // against the listener that `ss -ltnp` reports; per-connection children are stopped too.
  let pid = null;
  const stop = async () => {
    pid ??= await listenerPid(port).catch(() => null);
    if (pid === null) return;
    const children = childrenOf(pid);
    log(`nbd-server (pid ${pid}): ${await stopPid(pid, 10_000)}`);
    for (const c of children) await stopPid(c, 5_000);
  };
  stoppers.push(stop);
  try {
    await run('nbd-server', ['-C', conf, '-p', pidFile]);
    await waitFor(`nbd-server on port ${port}`, () => portAnswers(port));
    const fromSs = await listenerPid(port);
    const fromFile = existsSync(pidFile) ? Number(readFileSync(pidFile, 'utf8').trim()) : null;
    pid = fromSs ?? fromFile;
    if (pid === null) throw new Error(`Cannot find the pid of nbd-server on port ${port}`);
    if (fromFile !== null && fromSs !== null && fromFile !== fromSs)
      log(`nbd-server: pidfile says ${fromFile}, ss says ${fromSs}; using ${fromSs}`);
    const uri = `nbd://127.0.0.1:${port}/disk`;
    const cpu = { server: [pid] };
    await prefill(dir, 'nbd-server', uri, cpu);
    return await runJobs(dir, 'nbd-server', uri, opts.jobs, { endFsync: true, cpu });
  } finally {
    await removeAndRun(stop);
    rmSync(image, { force: true });
  }
}

/**
 * Writes a preload module that profiles a cairnd process from start to exit and writes
 * cairnd-NAME-PID.cpuprofile into the --cpu-prof directory; other processes ignore it.
 */
function nodeProfilerPreload(dir) {
  const path = join(dir, 'cpu_prof_preload.mjs');
  const out = join(opts.cpuProf, 'nodes');
  mkdirSync(out, { recursive: true });
  writeFileSync(
    path,
    `import { Session } from 'node:inspector';
import { writeFileSync } from 'node:fs';
if (process.argv[1]?.endsWith('cairnd.js')) {
  const name = process.argv[process.argv.indexOf('--name') + 1] ?? 'node';
  const session = new Session();
  session.connect();
  session.post('Profiler.enable');
  session.post('Profiler.start');
  // The in-process inspector answers synchronously, so this works inside 'exit'.
  process.on('exit', () => session.post('Profiler.stop', (err, result) => {
    if (!err) writeFileSync(${JSON.stringify(out)} + '/cairnd-' + name + '-' + process.pid + '.cpuprofile', JSON.stringify(result.profile));
  }));
}
`,
  );
  return path;
}

/** The dev cluster: etcd, six storage nodes in three zones (and its own idle frontend). */
async function startCluster(dir) {
  const clusterDir = join(dir, 'cluster');
  const stop = async () => {
    if (!existsSync(join(clusterDir, 'cluster.json'))) return;
    const out = await run(
      process.execPath,
      [cairnctlPath, 'dev', 'down', '--dir', clusterDir, ...(opts.keep ? [] : ['--purge']), '--json'],
      { timeoutMs: 120_000 },
    );
    log(
      `dev cluster down: ${JSON.parse(out)
        .stopped.map((s) => `${s.what} ${s.outcome}`)
        .join(', ')}`,
    );
  };
  stoppers.push(stop);
  const out = await run(
    process.execPath,
    [
      cairnctlPath,
      'dev',
      'up',
      '--dir',
      clusterDir,
      '--zones',
      '3',
      '--nodes-per-zone',
      '2',
      '--extent-size',
      String(opts.extentBytes),
      '--json',
    ],
    {
      timeoutMs: 120_000,
      // With --cpu-prof the storage nodes are profiled too: dev up passes its environment on, and
      // NODE_OPTIONS may not hold --cpu-prof, so a preload module runs the inspector's profiler.
      env:
        opts.cpuProf === undefined
          ? process.env
          : { ...process.env, NODE_OPTIONS: `--import=${nodeProfilerPreload(dir)}` },
    },
  );
  const cluster = JSON.parse(out);
  // The nodes refuse clients without the secret dev up made (DIR/node-secret, also in DIR/env):
  // every frontend and cairnctl started from here on inherits it.
  process.env.CAIRN_NODE_SECRET_FILE = join(clusterDir, 'node-secret');
  log(`dev cluster up: etcd ${cluster.etcd}, ${cluster.nodes.length} nodes`);
  return cluster;
}

async function createVolume(cluster, name, extra = []) {
  await run(
    process.execPath,
    [
      cairnctlPath,
      'volume',
      'create',
      name,
      String(opts.size),
      '--profile',
      '4+2',
      '--extent-size',
      String(opts.extentBytes),
      ...(opts.journalReplicas === undefined ? [] : ['--journal-replicas', String(opts.journalReplicas)]),
      ...extra,
    ],
    {
      env: { ...process.env, CAIRN_ETCD: cluster.etcd },
    },
  );
}

/** A Cairn frontend of our own, with the given cache flags; resolves once it serves. */
async function startFrontend(dir, cluster, label, flags) {
  const port = await freePort();
  const logPath = join(dir, `frontend-${label}.log`);
  const node =
    opts.cpuProf === undefined
      ? []
      : ['--cpu-prof', '--cpu-prof-dir', opts.cpuProf, '--cpu-prof-name', `frontend-${label}-${Date.now()}.cpuprofile`];
  const args = [
    ...node,
    cairnctlPath,
    'nbd',
    'serve',
    '--etcd',
    cluster.etcd,
    '--listen',
    `127.0.0.1:${port}`,
    ...flags,
  ];
  // A SIGTERM flushes every volume first: a dirty working set may take a while to persist.
  const p = startChild(`frontend ${label}`, process.execPath, args, logPath, { graceMs: 600_000 });
  await waitFor(`frontend ${label} (${logPath})`, () => {
    if (p.exited()) throw new Error(`frontend ${label} exited: ${logTail(logPath)}`);
    return readFileSync(logPath, 'utf8').includes('serving NBD');
  });
  return { ...p, port, uri: (volume) => `nbd://127.0.0.1:${port}/${volume}` };
}

/** One idle NBD connection that keeps the volume attached (and its cache) between fio runs. */
async function holdVolume(port, volume) {
  const pipe = await connectPipe({ port });
  const client = new RawNbdClient(pipe);
  await client.greet();
  await client.go(volume, { structured: false });
  return {
    /** NBD_CMD_FLUSH on this connection: resolves when everything written so far is persisted. */
    flush: async () => {
      client.send({ type: nbdWire.commandType.flush });
      const reply = await client.readReply(600_000);
      if (reply.errno !== 0) throw new Error(`FLUSH of ${volume} failed with errno ${reply.errno}`);
    },
    close: async () => {
      client.send({ type: nbdWire.commandType.disc });
      pipe.end();
      await Promise.race([pipe.closed, sleep(5_000)]);
    },
  };
}

const nodePids = (cluster) => cluster.nodes.map((n) => n.pid);

async function cairnHotTarget(dir, cluster) {
  await createVolume(cluster, 'hot');
  const twice = String(2 * Math.max(opts.size, 256 * MiB));
  const fe = await startFrontend(dir, cluster, 'hot', [
    '--cache-size',
    twice,
    '--dirty-max',
    twice,
    '--flush-age',
    '3600000',
  ]);
  try {
    const hold = await holdVolume(fe.port, 'hot');
    try {
      const cpu = { server: [fe.pid], nodes: nodePids(cluster) };
      await prefill(dir, 'cairn-hot', fe.uri('hot'), cpu);
      return await runJobs(
        dir,
        'cairn-hot',
        fe.uri('hot'),
        opts.jobs.filter((j) => allJobs[j].fsyncEvery === undefined),
        {
          endFsync: false,
          cpu,
        },
      );
    } finally {
      await hold.close();
    }
  } finally {
    await fe.stop();
  }
}

/**
 * cairn-ec, or with `encrypted` cairn-ec-encrypted: the same jobs on a volume created with
 * --encrypt, its frontends given the KEK file.
 */
async function cairnEcTarget(dir, cluster, encrypted = false) {
  const target = encrypted ? 'cairn-ec-encrypted' : 'cairn-ec';
  const volume = encrypted ? 'ecx' : 'ec';
  const kek = join(dir, 'bench.kek');
  if (encrypted) writeFileSync(kek, randomBytes(32), { mode: 0o600 });
  const keyFlags = encrypted ? ['--kek-file', kek] : [];
  await createVolume(cluster, volume, encrypted ? ['--encrypt', ...keyFlags] : []);
  const rows = [];
  {
    // Write amplification of the whole write phase, with the folds the jobs left behind (a job's
    // own line counts only what reached the disk while it ran; journaled bytes fold later).
    const diskBefore = deviceWrittenBytes(dir);
    let clientBytes = 0;
    const fe = await startFrontend(dir, cluster, `${volume}-write`, [
      ...keyFlags,
      '--cache-size',
      '512MiB',
      '--dirty-max',
      '256MiB',
      '--flush-age',
      '5000',
    ]);
    try {
      const hold = await holdVolume(fe.port, volume);
      try {
        const cpu = { server: [fe.pid], nodes: nodePids(cluster) };
        clientBytes += (await prefill(dir, target, fe.uri(volume), cpu)).ioBytes;
        const written = await runJobs(dir, target, fe.uri(volume), opts.jobs.filter(isWrite), {
          endFsync: true,
          cpu,
        });
        rows.push(...written);
        clientBytes += written.reduce((sum, row) => sum + row.ioBytes, 0);
        await hold.flush();
      } finally {
        await hold.close();
      }
    } finally {
      // Stopping the frontend folds everything still journaled.
      await fe.stop();
    }
    const diskAfter = deviceWrittenBytes(dir);
    if (diskBefore !== null && diskAfter !== null && diskAfter > diskBefore && clientBytes > 0)
      emit({
        bench: 'nbd',
        target,
        job: 'all-writes-with-folds',
        clientBytes,
        diskBytes: diskAfter - diskBefore,
        writeAmplification: round((diskAfter - diskBefore) / clientBytes, 2),
      });
  }
  const reads = opts.jobs.filter((j) => !isWrite(j));
  if (reads.length > 0) {
    const small = String(2 * opts.extentBytes);
    const fe = await startFrontend(dir, cluster, `${volume}-read`, [
      ...keyFlags,
      '--cache-size',
      small,
      '--dirty-max',
      small,
      '--flush-age',
      '5000',
    ]);
    try {
      const hold = await holdVolume(fe.port, volume);
      try {
        const cpu = { server: [fe.pid], nodes: nodePids(cluster) };
        rows.push(...(await runJobs(dir, target, fe.uri(volume), reads, { endFsync: false, cpu })));
      } finally {
        await hold.close();
      }
    } finally {
      await fe.stop();
    }
  }
  return rows;
}

// ------------------------------------------------------------------------------------------------
// Main.

async function haveTool(command, args) {
  try {
    await run(command, args, { timeoutMs: 10_000 });
    return true;
  } catch (err) {
    return !/ENOENT/.test(err.message);
  }
}

const rows = [];
workDir = opts.workDir ?? mkdtempSync(join(tmpdir(), 'cairn-nbd-bench-'));
mkdirSync(workDir, { recursive: true });
if (opts.cpuProf !== undefined) mkdirSync(opts.cpuProf, { recursive: true });
try {
  if (!(await haveTool('fio', ['--version']))) throw new Error('fio is not installed (run make setup)');
  clockTicks = Number((await run('getconf', ['CLK_TCK'])).trim()) || 100;
  log(`working set ${opts.size / MiB} MiB, ${opts.seconds} s per job, ramp ${opts.rampS} s, work dir ${workDir}`);
  const cairn = opts.targets.some((t) => t.startsWith('cairn-'));
  const cluster = cairn ? await startCluster(workDir) : null;
  for (const target of opts.targets) {
    const tool = { 'nbdkit-memory': 'nbdkit', 'nbd-server': 'nbd-server' }[target];
    if (tool !== undefined && !(await haveTool(tool, ['-V']))) {
      emit({ bench: 'nbd', target, skipped: `${tool} is not installed (run make setup)` });
      continue;
    }
    if (target === 'nbdkit-memory') rows.push(...(await nbdkitTarget(workDir)));
    else if (target === 'nbd-server') rows.push(...(await nbdServerTarget(workDir)));
    else if (target === 'cairn-hot') rows.push(...(await cairnHotTarget(workDir, cluster)));
    else rows.push(...(await cairnEcTarget(workDir, cluster, target === 'cairn-ec-encrypted')));
  }
  const find = (target, job) => rows.find((r) => r.target === target && r.job === job);
  const ratio = (name, a, b, job, metric, target) => {
    const x = find(a, job)?.[metric];
    const y = find(b, job)?.[metric];
    const value = x === undefined || y === undefined || y === 0 ? null : round(x / y, 3);
    emit({ summary: 'nbd', ratio: name, job, metric, value, target, met: value === null ? null : value >= target });
  };
  ratio('cairn-hot/nbdkit-memory', 'cairn-hot', 'nbdkit-memory', 'randread-4k-qd32', 'iops', 0.5);
  // Through to the storage nodes against a plain file export (issue 9's targets).
  ratio('cairn-ec/nbd-server', 'cairn-ec', 'nbd-server', 'commit-4k-qd1-fsync', 'iops', 0.3);
  ratio('cairn-ec/nbd-server', 'cairn-ec', 'nbd-server', 'randwrite-4k-qd32', 'iops', 0.5);
  ratio('cairn-ec/nbd-server', 'cairn-ec', 'nbd-server', 'seqwrite-1m-qd8', 'MBps', 0.5);
  ratio('cairn-ec/nbd-server', 'cairn-ec', 'nbd-server', 'randread-4k-qd32', 'iops', 0.3);
  ratio('cairn-ec/nbd-server', 'cairn-ec', 'nbd-server', 'seqread-1m-qd8', 'MBps', 0.3);
  // What encryption at rest costs (issue 12: at most 25 % of throughput on every job), and the
  // frontend's CPU per MB moved, encrypted over plain: on a shared machine a throughput ratio
  // moves with whatever else runs, the CPU each byte took much less.
  const cpuPerMB = (row) =>
    row?.serverCpuPct === undefined || !(row.ioBytes > 0)
      ? undefined
      : round(((row.serverCpuPct / 100) * row.runtimeS * 1000) / (row.ioBytes / 1e6), 2);
  for (const job of opts.jobs) {
    ratio(
      'cairn-ec-encrypted/cairn-ec',
      'cairn-ec-encrypted',
      'cairn-ec',
      job,
      job.includes('1m') ? 'MBps' : 'iops',
      0.75,
    );
    const plain = cpuPerMB(find('cairn-ec', job));
    const encrypted = cpuPerMB(find('cairn-ec-encrypted', job));
    if (plain !== undefined && encrypted !== undefined)
      emit({ cost: 'encryption', job, frontendCpuMsPerMB: { plain, encrypted }, ratio: round(encrypted / plain, 2) });
  }
} catch (err) {
  log(`failed: ${err.stack ?? err.message}`);
  process.exitCode = 1;
} finally {
  await finish();
}
