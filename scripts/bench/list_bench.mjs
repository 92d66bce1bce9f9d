#!/usr/bin/env node
// Export listing benchmark: COUNT volumes (default 10,000) written straight into a real local etcd,
// one `cairnctl nbd serve` in front of them, and one nbdsh client that sends NBD_OPT_LIST and then
// NBD_OPT_INFO for every export listed, on one connection (test/harness/volumes.ts). The peer, in
// the same run: the same client against `nbdkit file dir=DIR` over COUNT sparse files, a server
// that answers both options from memory. Listing must attach nothing, so the run also checks that
// etcd holds no lock and no epoch afterwards.
//
// Prints one JSON line per result ({"bench":"nbd-list","target","exports","ms","exportsPerS"}) and a
// summary line with the ratio and the lock check. Progress goes to standard error. Every process
// started here is stopped by pid, also on error.
//
// Not measured here: `nbdinfo --list`, which also lists each export's meta contexts and whose
// libnbd 1.14 holds that option about 200 ms in its own socket (MSG_MORE), against any server.
//
// Usage: node scripts/bench/list_bench.mjs [COUNT]   (needs `make build`, etcd and nbdkit)
import { spawn } from 'node:child_process';
import { closeSync, mkdirSync, mkdtempSync, openSync, rmSync, truncateSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { initCluster } from '../../dist/src/api/index.js';
import { EtcdMeta, rootPrefix } from '../../dist/src/meta/index.js';
import { freePort, stopChild, waitFor } from '../../dist/src/dev/index.js';
import { startEtcd } from '../../dist/test/harness/etcd.js';
import { nbdsh, startFrontendProcess } from '../../dist/test/harness/stack.js';
import { createVolumeRecords, listAndInfoScript, volumeRecordBytes } from '../../dist/test/harness/volumes.js';

const count = Number(process.argv[2] ?? 10_000);
if (!Number.isSafeInteger(count) || count < 1) {
  console.error('list_bench: COUNT must be a positive whole number');
  process.exit(2);
}
/** One listing of COUNT exports; generous, so a slow machine reports a number rather than a kill. */
const listDeadlineMs = 600_000;
const log = (line) => process.stderr.write(`list_bench: ${line}\n`);

/** Lists and asks about every export at `uri`; returns the time taken and the sizes seen. */
async function listAll(uri) {
  const started = performance.now();
  const out = await nbdsh(`list ${uri}`, listAndInfoScript, { uri }, { deadlineMs: listDeadlineMs });
  const ms = performance.now() - started;
  return { ms, sizes: JSON.parse(out) };
}

function row(target, ms) {
  return {
    bench: 'nbd-list',
    target,
    exports: count,
    ms: Math.round(ms),
    exportsPerS: Math.round(count / (ms / 1000)),
  };
}

const dir = mkdtempSync(join(tmpdir(), 'cairn-list-bench-'));
const etcd = await startEtcd({ name: 'list-bench' });
const meta = new EtcdMeta([etcd.endpoint], { timeoutMs: 30_000 });
let frontend;
let nbdkit;
try {
  await initCluster(meta, {});
  log(`writing ${count} volume records`);
  await createVolumeRecords(meta, count);
  frontend = await startFrontendProcess({ etcd: etcd.endpoint, dir, label: 'list' });
  log('listing through the Cairn frontend');
  const cairn = await listAll(`nbd://127.0.0.1:${frontend.port}`);
  const listed = Object.keys(cairn.sizes).length;
  const wrongSize = Object.entries(cairn.sizes).filter(([n, s]) => s !== volumeRecordBytes(Number(n.slice(2)))).length;
  const locks = (await meta.client.getAll().prefix(`${rootPrefix}locks/`).keys()).length;
  const epochs = (await meta.client.getAll().prefix(`${rootPrefix}epochs/`).keys()).length;
  console.log(JSON.stringify(row('cairn', cairn.ms)));

  log(`creating ${count} sparse files for nbdkit`);
  const files = join(dir, 'exports');
  mkdirSync(files);
  for (let i = 0; i < count; i++) {
    const path = join(files, `v-${String(i).padStart(5, '0')}`);
    closeSync(openSync(path, 'w'));
    truncateSync(path, volumeRecordBytes(i));
  }
  const port = await freePort();
  nbdkit = spawn(
    'nbdkit',
    ['-f', '--exit-with-parent', '-i', '127.0.0.1', '-p', String(port), 'file', `dir=${files}`],
    {
      stdio: 'ignore',
    },
  );
  await waitFor(
    `nbdkit on port ${port}`,
    async () => {
      if (nbdkit.exitCode !== null) throw new Error(`nbdkit exited (${nbdkit.exitCode})`);
      const probe = await nbdsh('probe nbdkit', 'h.set_opt_mode(True)\nh.connect_uri(A["uri"])\nh.opt_abort()', {
        uri: `nbd://127.0.0.1:${port}`,
      }).then(
        () => true,
        () => undefined,
      );
      return probe;
    },
    30_000,
  );
  log('listing through nbdkit');
  const peer = await listAll(`nbd://127.0.0.1:${port}`);
  console.log(JSON.stringify(row('nbdkit-file-dir', peer.ms)));
  console.log(
    JSON.stringify({
      summary: 'nbd-list',
      exports: count,
      listed,
      wrongSize,
      locksTaken: locks,
      epochsBumped: epochs,
      cairnOverNbdkitMs: Math.round((cairn.ms / peer.ms) * 100) / 100,
    }),
  );
  if (listed !== count || wrongSize !== 0 || locks !== 0 || epochs !== 0) process.exitCode = 1;
} finally {
  if (nbdkit !== undefined) await stopChild(nbdkit, 5_000);
  await frontend?.stop(60_000);
  meta.close();
  await etcd.stop();
  rmSync(dir, { recursive: true, force: true });
}
