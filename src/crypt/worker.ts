/**
 * A crypto pool worker: runs xtsUnits and ctrRecord (units.ts) on what the main thread posts and
 * posts the bytes back. Bytes in shared memory (the codec's wasm memory) are worked in place and
 * not posted back; others arrive as a transferred ArrayBuffer and return the same way.
 */
import { parentPort } from 'node:worker_threads';
import { ctrRecord, xtsUnits } from './units.js';
import type { CryptJob, CryptReply } from './pool.js';

const port = parentPort;
if (port === null) throw new Error('crypt/worker.js runs as a worker thread');

port.on('message', (job: CryptJob) => {
  let reply: CryptReply;
  try {
    const view = new Uint8Array(job.buffer, job.offset, job.length);
    if (job.op === 'ctr') {
      view.set(ctrRecord(job.key, view, job.epoch, job.lsn));
    } else {
      xtsUnits(job.key, view, job.at, job.op === 'encrypt');
    }
    reply = { id: job.id, ok: true, buffer: job.buffer };
  } catch (err) {
    reply = { id: job.id, ok: false, error: err instanceof Error ? err.message : String(err) };
  }
  const transfer = reply.ok && reply.buffer instanceof ArrayBuffer ? [reply.buffer] : [];
  port.postMessage(reply, transfer);
});
