#!/usr/bin/env bash
# `make bench`: every benchmark at full size, one JSON line per result on stdout. Each compares
# Cairn with a peer measured in the same run. Record results in docs/bench/ with the date.
# BENCH_SECONDS sets the minimum timed seconds per codec loop (default 3).
set -euo pipefail
cd "$(dirname "$0")/.."
export AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED=true
S=${BENCH_SECONDS:-3}
for spec in "8+3 1MiB" "4+2 1MiB" "4+2 4MiB"; do
  set -- $spec
  node dist/src/bin/cairnctl.js bench codec --profile "$1" --extent-size "$2" --seconds "$S" --json
done
node scripts/bench/meta_bench.mjs "${BENCH_META_COUNT:-300}"
node scripts/bench/map_bench.mjs --extents "${BENCH_MAP_EXTENTS:-10000000}"
node scripts/bench/list_bench.mjs "${BENCH_LIST_COUNT:-10000}"
node scripts/bench/journal_bench.mjs --count "${BENCH_JOURNAL_COUNT:-4000}"
node scripts/bench/cache_bench.mjs --commits "${BENCH_CACHE_COMMITS:-20000}"
node scripts/bench/nbd_bench.mjs
node scripts/bench/failover_bench.mjs
node scripts/bench/hostile_bench.mjs --seconds "${BENCH_HOSTILE_SECONDS:-20}"
node scripts/bench/snapshot_bench.mjs --size "${BENCH_SNAPSHOT_SIZE:-1GiB}"
node scripts/bench/snapshot_scale.mjs --small "${BENCH_SNAPSHOTS_SMALL:-20}" --large "${BENCH_SNAPSHOTS_LARGE:-200}"
