#!/usr/bin/env bash
# Starts a throwaway S3 server for manual use (demos, benchmarks, poking with the aws CLI): the
# same Ceph RGW on a 1-mon + 1-memstore-OSD cluster the tests use (test/harness/rgw.ts), so there
# is one recipe, not two. Prints one JSON line with the endpoint and the generated keys, then runs
# until Ctrl-C or SIGTERM and stops every daemon by pid. Memstore: nothing survives the stop.
# Needs `make setup` (radosgw, ceph-mon, ceph-osd) and a build (`make build`).
# Usage: scripts/rgw.sh
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -f dist/test/harness/rgw.js ]; then
  echo "rgw.sh: dist/test/harness/rgw.js is missing; run make build first" >&2
  exit 1
fi
exec node --input-type=module -e '
import { startRgw } from "./dist/test/harness/rgw.js";
const rgw = await startRgw();
const { endpoint, accessKeyId, secretAccessKey, region, pids, dir, startMs } = rgw;
console.log(JSON.stringify({ endpoint, accessKeyId, secretAccessKey, region, pids, dir, startMs }));
let stopping = false;
const stop = async () => {
  if (stopping) return;
  stopping = true;
  await rgw.stop();
  process.exit(0);
};
process.on("SIGINT", stop);
process.on("SIGTERM", stop);
setInterval(() => undefined, 1 << 30);
'
