/**
 * The shard writer's thread (see file_writer.ts): stores each batch it is sent with synchronous
 * calls, phase by phase, and answers with one outcome per put.
 */
import {
  constants as fsConstants,
  closeSync,
  fsyncSync,
  linkSync,
  lstatSync,
  mkdirSync,
  openSync,
  unlinkSync,
  writeSync,
} from 'node:fs';
import { dirname } from 'node:path';
import { parentPort } from 'node:worker_threads';
import type { WriteJob, WriteOutcome } from './file_writer.js';

/** A concurrent delete may remove a directory between mkdir and open; retry that. */
const openAttemptsMax = 4;

interface Put {
  readonly job: WriteJob;
  outcome: WriteOutcome | undefined;
  fd: number | undefined;
  /** The first directory mkdir created for this put, if it created any. */
  createdDir: string | undefined;
  tempExists: boolean;
}

const errnoOf = (err: unknown): string | undefined => (err as { code?: string } | null)?.code;
const messageOf = (err: unknown): string => (err instanceof Error ? err.message : String(err));

function isDirectory(path: string): boolean {
  try {
    return lstatSync(path).isDirectory();
  } catch {
    return false;
  }
}

function fail(put: Put, kind: 'prefix' | 'under' | 'exists' | 'io', err: unknown): void {
  const code = errnoOf(err);
  put.outcome = { ok: false, kind, ...(code === undefined ? {} : { code }), message: messageOf(err) };
}

/** mkdir, open the temp file create-only, write every byte. */
function create(put: Put): void {
  const parent = dirname(put.job.path);
  for (let attempt = 1; put.fd === undefined; attempt++) {
    try {
      put.createdDir = mkdirSync(parent, { recursive: true, mode: 0o700 }) ?? put.createdDir;
      put.fd = openSync(put.job.temp, fsConstants.O_WRONLY | fsConstants.O_CREAT | fsConstants.O_EXCL, 0o600);
      put.tempExists = true;
    } catch (err) {
      const code = errnoOf(err);
      if (code === 'ENOTDIR' || (code === 'EEXIST' && put.createdDir === undefined && !isDirectory(parent)))
        return fail(put, 'prefix', err);
      // ENOENT: a concurrent delete removed the (empty) directory after our mkdir.
      if (code !== 'ENOENT' || attempt >= openAttemptsMax) return fail(put, 'io', err);
    }
  }
  const data = put.job.data;
  try {
    for (let at = 0; at < data.length;) {
      const n = writeSync(put.fd, data, at, data.length - at, at);
      if (n <= 0) throw new Error('write() made no progress without an error');
      at += n;
    }
  } catch (err) {
    fail(put, 'io', err);
  }
}

function syncAndClose(put: Put): void {
  const fd = put.fd!;
  put.fd = undefined;
  try {
    if (put.outcome === undefined) fsyncSync(fd);
  } catch (err) {
    fail(put, 'io', err);
  } finally {
    try {
      closeSync(fd);
    } catch (err) {
      if (put.outcome === undefined) fail(put, 'io', err);
    }
  }
}

function linkName(put: Put): void {
  try {
    linkSync(put.job.temp, put.job.path);
  } catch (err) {
    if (errnoOf(err) === 'EEXIST') return fail(put, isDirectory(put.job.path) ? 'under' : 'exists', err);
    fail(put, 'io', err);
  }
}

function removeTemp(put: Put): void {
  if (!put.tempExists) return;
  put.tempExists = false;
  try {
    unlinkSync(put.job.temp);
  } catch (err) {
    if (put.outcome === undefined) fail(put, 'io', err);
  }
}

/** Every directory from `top` down to `bottom` (a descendant or itself), parents first. */
function chain(top: string, bottom: string): string[] {
  const dirs: string[] = [];
  for (let d = bottom; ; d = dirname(d)) {
    dirs.push(d);
    if (d === top || dirname(d) === d) break;
  }
  return dirs.reverse();
}

function fsyncDirectory(dir: string): void {
  const fd = openSync(dir, 'r');
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

export function storeBatch(jobs: readonly WriteJob[]): WriteOutcome[] {
  const puts: Put[] = jobs.map((job) => ({
    job,
    outcome: undefined,
    fd: undefined,
    createdDir: undefined,
    tempExists: false,
  }));
  for (const put of puts) create(put);
  for (const put of puts) if (put.fd !== undefined) syncAndClose(put);
  for (const put of puts) if (put.outcome === undefined) linkName(put);
  for (const put of puts) removeTemp(put);
  // The new names, and any directories mkdir created, reach the disk before any put is answered:
  // each directory once, parents before children.
  const dirs = new Map<string, Put[]>();
  for (const put of puts) {
    if (put.outcome !== undefined) continue;
    const parent = dirname(put.job.path);
    for (const d of chain(put.createdDir === undefined ? parent : dirname(put.createdDir), parent)) {
      const users = dirs.get(d);
      if (users === undefined) dirs.set(d, [put]);
      else users.push(put);
    }
  }
  for (const d of [...dirs.keys()].sort((a, b) => a.length - b.length)) {
    try {
      fsyncDirectory(d);
    } catch (err) {
      for (const put of dirs.get(d)!) if (put.outcome === undefined) fail(put, 'io', err);
    }
  }
  return puts.map((put) => put.outcome ?? { ok: true });
}

parentPort?.on('message', (request: { id: number; jobs: WriteJob[] }) => {
  parentPort!.postMessage({ id: request.id, outcomes: storeBatch(request.jobs) });
});
