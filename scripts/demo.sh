#!/usr/bin/env bash
# `make demo`: what Cairn does today, with real processes and a real NBD client.
#  1. A local cluster: etcd, six storage nodes in zones a, b, c, and the NBD frontend.
#  2. A 4+2 volume; 256 MiB of random data written with nbdcopy and read back, compared.
#  3. Snapshots, a clone, qemu's dirty bitmap between two snapshots, and an incremental backup
#     (export-diff, import-diff) rebuilt on another volume, compared.
#  4. SIGKILL of one storage node; the data read again from a second frontend with a cold
#     cache, so every byte comes back through the erasure code; compared again.
#  5. Where the shards went, and what a bad request gets. 6. The codec.
#  7. A second cluster with TLS everywhere (dev up --tls): data over nbds://, and what a plaintext
#     NBD client and a cairnctl without the etcd credentials get.
#  8. The dashboard and the JSON API (cairnctl api serve) on the first cluster: prints its URL and
#     an admin token. With DEMO_KEEP=1 (`make demo KEEP=1`) the cluster and the dashboard stay up
#     until Ctrl-C, then everything is stopped as usual.
# Every process it starts is stopped by pid when it ends, however it ends, and the last step
# checks that none is left: each carries this run's token in CAIRN_RUN_MARKER (inherited by every
# child, detached or not; see test/harness/leftovers.ts), and scripts/leftovers.mjs looks for it.
# DEMO_SIZE_MIB sets the data size (default 256).
set -euo pipefail
cd "$(dirname "$0")/.."
# For commands in the foreground only: started with `&`, a shell function runs in a subshell and
# $! is the subshell's pid, not node's. Background processes run node directly (see step 3).
cairnctl() { node dist/src/bin/cairnctl.js "$@"; }
now_ms() { date +%s%3N; }
rate() { awk -v b="$1" -v ms="$2" 'BEGIN { if (ms < 1) ms = 1; printf "%.0f MiB/s", b / 1048576 / (ms / 1000) }'; }

SIZE_MIB=${DEMO_SIZE_MIB:-256}
D=$(mktemp -d "${TMPDIR:-/tmp}/cairn-demo.XXXXXX")
MARKER="demo-$$-$(od -An -N4 -tx1 /dev/urandom | tr -d ' \n')"
export CAIRN_RUN_MARKER="${CAIRN_RUN_MARKER:+$CAIRN_RUN_MARKER }$MARKER"
EXTRA_PIDS=()
cleanup() {
  local status=$?
  for pid in "${EXTRA_PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${EXTRA_PIDS[@]}"; do
    for _ in $(seq 200); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
    kill -9 "$pid" 2>/dev/null || true
  done
  for c in "$D/cluster" "$D/tls-cluster"; do
    [ -f "$c/cluster.json" ] && node dist/src/bin/cairnctl.js dev down --dir "$c" > /dev/null 2>&1 || true
  done
  rm -rf "$D"
  if node scripts/leftovers.mjs "$MARKER"; then
    echo "No process of the demo is left behind."
  else
    echo "The demo left the processes above behind (now stopped by pid): a bug in scripts/demo.sh." >&2
    [ "$status" -ne 0 ] || status=1
  fi
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
free_port() { node -e 'const s=require("net").createServer();s.listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})'; }

echo "== 1. A local cluster (cairnctl dev up): real processes on loopback"
cairnctl dev up --dir "$D/cluster" --zones 3 --nodes-per-zone 2 --profile 4+2 --extent-size 4MiB | sed 's/^/   /'
# DIR/env: the etcd endpoint and the node secret dev up made (nodes refuse clients without it).
. "$D/cluster/env"
NBD=$(node -p "require('$D/cluster/cluster.json').frontend.nbdUri")
echo
cairnctl node list | sed 's/^/   /'

echo
echo "== 2. A 4+2 volume, ${SIZE_MIB} MiB of random data in and out with nbdcopy"
cairnctl volume create demo "${SIZE_MIB}MiB" --profile 4+2 | sed 's/^/   /'
head -c "$((SIZE_MIB * 1024 * 1024))" /dev/urandom > "$D/data.bin"
orig=$(sha256sum < "$D/data.bin" | cut -c1-16)
t0=$(now_ms)
nbdcopy --flush "$D/data.bin" "$NBD/demo"
t1=$(now_ms)
echo "   wrote ${SIZE_MIB} MiB in $((t1 - t0)) ms ($(rate $((SIZE_MIB * 1048576)) $((t1 - t0)))) including the final NBD FLUSH: on six nodes as 4+2 shards"
t0=$(now_ms)
nbdcopy "$NBD/demo" "$D/back.bin"
t1=$(now_ms)
got=$(sha256sum < "$D/back.bin" | cut -c1-16)
echo "   read it back in $((t1 - t0)) ms ($(rate $((SIZE_MIB * 1048576)) $((t1 - t0))), from the frontend's cache): sha256 $got... $([ "$got" = "$orig" ] && echo matches || echo DIFFERS)"
[ "$got" = "$orig" ] || exit 1
echo "   shard bytes on each node's disk (${SIZE_MIB} MiB at 1.5x = $((SIZE_MIB * 3 / 2)) MiB, plus checksums, and shards of generations a later flush replaced, deleted after a 30 s grace):"
total=0
for n in a-1 a-2 b-1 b-2 c-1 c-2; do
  bytes=$(du -sb "$D/cluster/nodes/$n" | cut -f1)
  total=$((total + bytes))
  printf '     %s: %.1f MiB\n' "$n" "$(awk -v b="$bytes" 'BEGIN { print b / 1048576 }')"
done
printf '     total: %.1f MiB\n' "$(awk -v b="$total" 'BEGIN { print b / 1048576 }')"

echo
echo "== 3. Snapshots, a clone and an incremental backup: nothing is copied to take them"
cairnctl snapshot create demo monday | sed 's/^/   /'
# 1 MiB of 'Z' written half-way after monday (the same bytes into our copy of the data).
AT=$((SIZE_MIB / 2))
qemu-io -f raw -c "write -P 0x5a ${AT}M 1M" "$NBD/demo" > /dev/null
head -c 1048576 /dev/zero | tr '\0' 'Z' | dd of="$D/data.bin" bs=1M seek="$AT" conv=notrunc status=none
orig=$(sha256sum < "$D/data.bin" | cut -c1-16)
cairnctl snapshot create demo tuesday | sed 's/^/   /'
echo "   what changed between them, as qemu's dirty bitmap on the read-only export demo@tuesday:"
nbdinfo --map=qemu:dirty-bitmap:monday "$NBD/demo@tuesday" | sed 's/^/     /'
cairnctl volume clone demo@monday demo-copy | sed 's/^/   /'
got=$(nbdcopy "$NBD/demo-copy" - | sha256sum | cut -c1-16)
want=$(nbdcopy "$NBD/demo@monday" - | sha256sum | cut -c1-16)
echo "   the clone reads as monday: sha256 $got... $([ "$got" = "$want" ] && echo matches || echo DIFFERS)"
[ "$got" = "$want" ] || exit 1
cairnctl volume export-diff demo@monday "$D/monday.diff" | sed 's/^/   /'
cairnctl volume export-diff demo@tuesday --from monday "$D/tuesday.diff" | sed 's/^/   /'
cairnctl volume import-diff "$D/monday.diff" replica | sed 's/^/   /'
cairnctl volume import-diff "$D/tuesday.diff" replica | sed 's/^/   /'
got=$(nbdcopy "$NBD/replica@tuesday" - | sha256sum | cut -c1-16)
echo "   replica@tuesday, rebuilt from a full and an incremental diff: sha256 $got... $([ "$got" = "$orig" ] && echo matches || echo DIFFERS)"
[ "$got" = "$orig" ] || exit 1
cairnctl snapshot list demo | sed 's/^/   /'

echo
echo "== 4. SIGKILL of storage node b-1, then a cold read through the erasure code"
B1=$(node -p "require('$D/cluster/cluster.json').nodes.find((n) => n.name === 'b-1').pid")
kill -9 "$B1"
PORT=$(free_port)
# node itself, not the cairnctl function, so that $! is the frontend's own pid.
node dist/src/bin/cairnctl.js nbd serve --read-only --listen "127.0.0.1:$PORT" > "$D/ro.out" 2> "$D/ro.log" &
EXTRA_PIDS+=($!)
for _ in $(seq 600); do grep -q 'serving NBD' "$D/ro.out" 2>/dev/null && break; sleep 0.05; done
t0=$(now_ms)
nbdcopy "nbd://127.0.0.1:$PORT/demo" "$D/degraded.bin"
t1=$(now_ms)
got=$(sha256sum < "$D/degraded.bin" | cut -c1-16)
echo "   read ${SIZE_MIB} MiB with b-1 dead in $((t1 - t0)) ms ($(rate $((SIZE_MIB * 1048576)) $((t1 - t0)))): sha256 $got... $([ "$got" = "$orig" ] && echo matches || echo DIFFERS)"
[ "$got" = "$orig" ] || exit 1
echo "   extents decoded from parity: $(grep -c 'read degraded' "$D/ro.log" || true) (the others had no shard on b-1 among the data shards read)"

echo
echo "== 5. Where extent 0's shards live: two per zone, so losing any one zone costs 2 = M shards"
cairnctl placement explain demo 0 | sed -n '1,10p' | sed 's/^/   /'
echo
echo "   Bad requests get one line and a non-zero exit:"
cairnctl volume create demo 1GiB 2>&1 | sed 's/^/   /' || true
cairnctl volume create far 1GiB --zones-required 4 2>&1 | sed 's/^/   /' || true
nbdinfo "$NBD/no-such-volume" 2>&1 | head -1 | sed 's/^/   /' || true

echo
echo "== 6. The codec under it, RS(8+3) on 1 MiB extents (MB/s of extent data)"
cairnctl bench codec --profile 8+3 --extent-size 1MiB --seconds "${DEMO_BENCH_SECONDS:-0.5}" | sed 's/^/   /'
echo
echo "== 7. TLS everywhere (cairnctl dev up --tls): etcd with certificates and a password, mutual TLS to the nodes, nbds://"
cairnctl dev up --dir "$D/tls-cluster" --tls --zones 3 --nodes-per-zone 2 --profile 4+2 --extent-size 4MiB > /dev/null
(
  . "$D/tls-cluster/env"
  NBDS=$(node -p "require('$D/tls-cluster/cluster.json').frontend.nbdUri")
  TLSQ="tls-certificates=$D/tls-cluster/tls"
  cairnctl volume create secure 8MiB | sed 's/^/   /'
  head -c 8388608 /dev/urandom > "$D/secure.bin"
  nbdcopy --flush "$D/secure.bin" "$NBDS/secure?$TLSQ"
  nbdcopy "$NBDS/secure?$TLSQ" "$D/secure.back"
  cmp -s "$D/secure.bin" "$D/secure.back" && echo "   8 MiB in and out over $NBDS: identical" || { echo "   over TLS: DIFFERS"; exit 1; }
  echo "   a plaintext NBD client: $(nbdinfo "${NBDS/nbds:/nbd:}/secure" 2>&1 > /dev/null | head -1)"
  echo "   cairnctl without the credentials: $(env -u CAIRN_ETCD_CA -u CAIRN_ETCD_CERT -u CAIRN_ETCD_KEY node dist/src/bin/cairnctl.js status 2>&1 | head -1)"
)
cairnctl dev down --dir "$D/tls-cluster" > /dev/null

echo
echo "== 8. The dashboard and the JSON API (cairnctl api serve): one process, one port"
API_PORT=$(free_port)
node dist/src/bin/cairnctl.js api serve --listen "127.0.0.1:$API_PORT" > "$D/api.out" 2> "$D/api.log" &
API_PID=$!
EXTRA_PIDS+=("$API_PID")
for _ in $(seq 600); do grep -q 'serving on' "$D/api.out" 2>/dev/null && break; sleep 0.05; done
DASH="http://127.0.0.1:$API_PORT"
ADMIN_TOKEN=$(cairnctl token create --role admin --name demo-admin | tail -1)
front=$(node -e 'fetch(process.argv[1], { headers: { authorization: `Bearer ${process.argv[2]}`, accept: "text/html" } })
  .then((r) => console.log(r.status), (e) => console.log(e.message))' "$DASH/" "$ADMIN_TOKEN")
[ "$front" = 200 ] || { echo "   the dashboard did not answer ($front): $(tail -3 "$D/api.log")" >&2; exit 1; }
echo "   dashboard: $DASH/?token=$ADMIN_TOKEN"
echo "   (the front page answers $front; a first visit trades the token for a session cookie)"
echo "   admin token: $ADMIN_TOKEN"
echo "   the same API as JSON: curl -H \"Authorization: Bearer \$TOKEN\" $DASH/api/v1/cluster"
echo "   b-1 is still down from step 4: the dashboard shows it red, and the data it held at risk until a repair."
if [ "${DEMO_KEEP:-0}" != 0 ]; then
  echo "   KEEP=1: the cluster and the dashboard stay up; press Ctrl-C to stop them."
  trap 'echo; echo "Ctrl-C: stopping the demo."; exit 0' INT TERM
  wait "$API_PID" || true
fi

echo
echo "Done; stopping every process by pid. Try it yourself: cairnctl dev up --dir /tmp/cairn (README)."
