/**
 * What the CSI node service does to its host: run tools (mount, losetup, mkfs, nbdfuse,
 * nbd-client), read the mount table, and attach a volume's NBD export as a block device through
 * one of two backends:
 *
 * - `nbd-client`: the kernel NBD client (`nbd-client HOST PORT /dev/nbdN -N VOL`); production,
 *   needs the nbd kernel module. Not exercised on the project's machines (no nbd module there).
 * - `nbdfuse`: nbdfuse shows the export as a file in a FUSE directory, and a loop device
 *   (`losetup`) makes it a block device: hosts without the nbd module.
 *
 * An attached device is described by a record (AttachedDevice) the node service keeps under its
 * state directory, so a restarted plugin can detach what an earlier one attached. nbdfuse runs
 * detached from the plugin, so restarting the plugin never drops a device in use.
 */
import { execFile, spawn } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { InvalidArgumentError, UnavailableError, errorMessage } from '../core/index.js';

/** How long one host command may take before it is reported as hung. */
export const hostCommandMsDefault = 120_000;

export interface HostResult {
  readonly stdout: string;
  readonly stderr: string;
}

/** Runs a host command; rejects with UnavailableError naming it (and its stderr) when it fails. */
export function runHost(
  command: string,
  args: readonly string[],
  deadlineMs = hostCommandMsDefault,
): Promise<HostResult> {
  return new Promise((resolve, reject) => {
    execFile(command, [...args], { timeout: deadlineMs, maxBuffer: 4 * 1024 * 1024 }, (err, stdout, stderr) => {
      if (err === null) resolve({ stdout, stderr });
      else
        reject(
          new UnavailableError(
            `${[command, ...args].join(' ')} failed: ${String(stderr).trim().split('\n').slice(-3).join(' / ') || errorMessage(err)}`,
          ),
        );
    });
  });
}

/** Unescapes a /proc/self/mountinfo path (octal escapes for space, tab, newline, backslash). */
function unescapeMountPath(text: string): string {
  return text.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
}

/** Mount points of this mount namespace, and what is mounted at each (source device). */
export function mountTable(): Map<string, string> {
  const out = new Map<string, string>();
  for (const line of readFileSync('/proc/self/mountinfo', 'utf8').split('\n')) {
    if (line === '') continue;
    const fields = line.split(' ');
    const dash = fields.indexOf('-');
    if (fields.length < 5 || dash < 0) continue;
    out.set(unescapeMountPath(fields[4]!), unescapeMountPath(fields[dash + 2] ?? ''));
  }
  return out;
}

export const isMountPoint = (path: string): boolean => mountTable().has(path);

/** A volume's NBD export as a block device on this host. */
export interface AttachedDevice {
  readonly backend: 'nbdfuse' | 'nbd-client';
  /** The block device: /dev/loopN or /dev/nbdN. */
  readonly device: string;
  /** nbdfuse: its FUSE directory and pid. */
  readonly fuseDir?: string;
  readonly pid?: number;
}

export interface Attacher {
  readonly name: 'nbdfuse' | 'nbd-client';
  /** Attaches `volume`'s export; `workDir` is this volume's own directory for the backend's files. */
  attach(volume: string, options: { readonly readOnly: boolean; readonly workDir: string }): Promise<AttachedDevice>;
  /** Undoes attach; idempotent (a device or process already gone is not an error). */
  detach(device: AttachedDevice): Promise<void>;
}

/** The export URI of `volume` on the frontend at `base` (nbd://host:port or nbd+unix:///?socket=PATH). */
export function exportUri(base: string, volume: string): string {
  let u: URL;
  try {
    u = new URL(base);
  } catch {
    throw new InvalidArgumentError(`Invalid --nbd "${base}": use nbd://HOST:PORT or nbd+unix:///?socket=PATH`);
  }
  if (u.protocol !== 'nbd:' && u.protocol !== 'nbd+unix:')
    throw new InvalidArgumentError(`Invalid --nbd "${base}": use nbd://HOST:PORT or nbd+unix:///?socket=PATH`);
  u.pathname = `/${volume}`;
  return u.toString();
}

const processAlive = (pid: number): boolean => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

/** Waits for `condition`, polling every 50 ms, up to `deadlineMs`; false when it never held. */
async function poll(condition: () => boolean, deadlineMs: number): Promise<boolean> {
  const until = Date.now() + deadlineMs;
  while (!condition()) {
    if (Date.now() > until) return false;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  return true;
}

export class NbdfuseAttacher implements Attacher {
  readonly name = 'nbdfuse';
  constructor(private readonly nbdBase: string) {
    exportUri(nbdBase, 'check');
  }

  async attach(
    volume: string,
    options: { readonly readOnly: boolean; readonly workDir: string },
  ): Promise<AttachedDevice> {
    const fuseDir = join(options.workDir, 'fuse');
    mkdirSync(fuseDir, { recursive: true });
    const file = join(fuseDir, 'nbd');
    // Detached, its messages to a file of its own: a restart of the plugin must not take the
    // device away from a running pod.
    const logPath = join(options.workDir, 'nbdfuse.log');
    const logFd = openSync(logPath, 'a');
    let child;
    try {
      child = spawn(
        '/usr/bin/nbdfuse',
        [...(options.readOnly ? ['-r'] : []), fuseDir, exportUri(this.nbdBase, volume)],
        {
          detached: true,
          stdio: ['ignore', 'ignore', logFd],
        },
      );
    } finally {
      closeSync(logFd);
    }
    child.unref();
    const pid = child.pid;
    if (pid === undefined) throw new UnavailableError(`Cannot start nbdfuse for volume "${volume}"`);
    const shown = await poll(() => existsSync(file) && statSync(file).size > 0, 30_000);
    const stderr = existsSync(logPath) ? readFileSync(logPath, 'utf8').slice(-2000) : '';
    if (!shown) {
      await this.detach({ backend: 'nbdfuse', device: '', fuseDir, pid });
      throw new UnavailableError(
        `nbdfuse did not show volume "${volume}" (${exportUri(this.nbdBase, volume)}) within 30 s: ${stderr.trim() || 'no message'}`,
      );
    }
    try {
      const r = await runHost('/usr/sbin/losetup', ['-f', '--show', ...(options.readOnly ? ['-r'] : []), file]);
      const device = r.stdout.trim();
      if (!device.startsWith('/dev/loop')) throw new UnavailableError(`losetup printed "${device}"`);
      return { backend: 'nbdfuse', device, fuseDir, pid };
    } catch (err) {
      await this.detach({ backend: 'nbdfuse', device: '', fuseDir, pid });
      throw err;
    }
  }

  async detach(d: AttachedDevice): Promise<void> {
    if (d.device !== '' && existsSync(d.device)) {
      const backing = await runHost('/usr/sbin/losetup', ['--list', '--noheadings', '-O', 'BACK-FILE', d.device]).catch(
        () => undefined,
      );
      if (backing !== undefined && backing.stdout.trim() !== '') await runHost('/usr/sbin/losetup', ['-d', d.device]);
    }
    if (d.fuseDir !== undefined && isMountPoint(d.fuseDir))
      await runHost('/usr/bin/fusermount3', ['-u', d.fuseDir]).catch(() =>
        runHost('/usr/bin/umount', ['-l', d.fuseDir!]),
      );
    if (d.pid !== undefined && processAlive(d.pid)) {
      // nbdfuse does not always exit by itself after the unmount: by pid, TERM then KILL.
      process.kill(d.pid, 'SIGTERM');
      if (!(await poll(() => !processAlive(d.pid!), 5_000)) && processAlive(d.pid)) process.kill(d.pid, 'SIGKILL');
    }
  }
}

export class NbdClientAttacher implements Attacher {
  readonly name = 'nbd-client';
  private readonly host: string;
  private readonly port: string;
  constructor(nbdBase: string) {
    const u = new URL(exportUri(nbdBase, 'check'));
    if (u.protocol !== 'nbd:')
      throw new InvalidArgumentError(`--attach nbd-client needs --nbd nbd://HOST:PORT (not "${nbdBase}")`);
    this.host = u.hostname;
    this.port = u.port === '' ? '10809' : u.port;
  }

  async attach(volume: string, options: { readonly readOnly: boolean }): Promise<AttachedDevice> {
    // The first /dev/nbdN with no connection (its pid file absent).
    for (let i = 0; i < 1024 && existsSync(`/dev/nbd${i}`); i++) {
      if (existsSync(`/sys/block/nbd${i}/pid`)) continue;
      const device = `/dev/nbd${i}`;
      await runHost('/usr/sbin/nbd-client', [
        this.host,
        this.port,
        device,
        '-N',
        volume,
        '-persist',
        ...(options.readOnly ? ['-readonly'] : []),
      ]);
      return { backend: 'nbd-client', device };
    }
    throw new UnavailableError('No free /dev/nbdN device: load the nbd module (modprobe nbd nbds_max=64)');
  }

  async detach(d: AttachedDevice): Promise<void> {
    const name = d.device.replace('/dev/', '');
    if (existsSync(`/sys/block/${name}/pid`)) await runHost('/usr/sbin/nbd-client', ['-d', d.device]);
  }
}
