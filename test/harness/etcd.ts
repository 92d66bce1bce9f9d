/**
 * Starts a real etcd (Debian `etcd-server`) for a test run: loopback only, free ports, a temp data
 * dir (on /dev/shm when it exists, which roughly halves put latency), and stops it by its pid.
 * Tests that say "etcd" use this, never a mock.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { etcdArgs, etcdHealthy, freePort, stopChild, waitFor } from '../../src/dev/index.js';

export interface EtcdHandle {
  /** Client URL, e.g. http://127.0.0.1:43121 */
  readonly endpoint: string;
  readonly pid: number;
  readonly dataDir: string;
  readonly process: ChildProcess;
  /** Stops etcd by pid (SIGTERM, then SIGKILL after a grace period) and removes its data dir. */
  stop(): Promise<void>;
}

export async function startEtcd(options: { name?: string; startDeadlineMs?: number } = {}): Promise<EtcdHandle> {
  const base = existsSync('/dev/shm') ? '/dev/shm' : tmpdir();
  const dataDir = mkdtempSync(join(base, 'cairn-etcd-'));
  const clientPort = await freePort();
  const peerPort = await freePort();
  const name = options.name ?? 'cairn-test';
  const client = `http://127.0.0.1:${clientPort}`;
  const peer = `http://127.0.0.1:${peerPort}`;
  const child = spawn('etcd', etcdArgs({ name, dataDir, clientUrl: client, peerUrl: peer, logLevel: 'error' }), {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let stderr = '';
  child.stderr?.on('data', (chunk: Buffer) => {
    stderr = (stderr + chunk.toString()).slice(-4000);
  });
  const spawnError = new Promise<never>((_, reject) => {
    child.once('error', (err) =>
      reject(new Error(`Cannot start etcd: ${err.message} (is etcd-server installed? run make setup)`)),
    );
    child.once('exit', (code) =>
      reject(new Error(`etcd exited with code ${code} before it was healthy: ${stderr.trim()}`)),
    );
  });
  spawnError.catch(() => undefined);
  const handle: EtcdHandle = {
    endpoint: client,
    pid: child.pid ?? -1,
    dataDir,
    process: child,
    async stop() {
      await stopChild(child);
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
  try {
    await Promise.race([
      spawnError,
      waitFor(`etcd at ${client} to report healthy`, () => etcdHealthy(client), options.startDeadlineMs ?? 15_000),
    ]);
  } catch (err) {
    await handle.stop();
    throw err;
  }
  return handle;
}
