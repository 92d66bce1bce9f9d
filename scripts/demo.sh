#!/usr/bin/env bash
# `make demo`: shows, with real files and real processes, what Cairn can do today.
# Today that is the erasure codec: encode a file into 4+2 shards, lose two, rebuild it
# byte-for-byte, see a third loss refused cleanly, and compare codec speed with its peers.
# (The cluster, NBD frontend and volumes join this demo as they land.)
set -euo pipefail
cd "$(dirname "$0")/.."
cairnctl() { node dist/src/bin/cairnctl.js "$@"; }
now_ms() { date +%s%3N; }

D=$(mktemp -d "${TMPDIR:-/tmp}/cairn-demo.XXXXXX")
trap 'rm -rf "$D"' EXIT
SIZE_MIB=${DEMO_SIZE_MIB:-64}

echo "== Cairn demo: Reed-Solomon erasure coding on a ${SIZE_MIB} MiB file"
head -c "$((SIZE_MIB * 1024 * 1024))" /dev/urandom > "$D/volume.img"
orig=$(sha256sum < "$D/volume.img" | cut -c1-16)
echo "   input: $D/volume.img, sha256 ${orig}..."

t0=$(now_ms)
cairnctl codec encode --profile 4+2 --input "$D/volume.img" --output-dir "$D/shards"
t1=$(now_ms)
echo "   encode + write took $((t1 - t0)) ms (process start, read, encode, fsync of 6 files)"
echo "   shards:"
ls -l "$D/shards" | awk 'NR > 1 { printf "     %-14s %12d bytes\n", $9, $5 }'

echo
echo "== Losing two shards (one data, one parity): shard.1 and shard.4"
rm "$D/shards/shard.1" "$D/shards/shard.4"
cairnctl codec decode --input-dir "$D/shards" --output "$D/rebuilt.img"
got=$(sha256sum < "$D/rebuilt.img" | cut -c1-16)
if [ "$got" = "$orig" ]; then
  echo "   rebuilt file sha256 ${got}... matches the original"
else
  echo "   MISMATCH: rebuilt ${got}..., original ${orig}..." >&2
  exit 1
fi

echo
echo "== Flipping one byte in shard.2: its checksum fails, so it counts as a third loss"
printf '\xff' | dd of="$D/shards/shard.2" bs=1 seek=4096 conv=notrunc status=none
if cairnctl codec decode --input-dir "$D/shards" --output "$D/again.img"; then
  echo "   UNEXPECTED: decode succeeded with three of six shards unusable" >&2
  exit 1
fi
[ ! -e "$D/again.img" ] && echo "   refused cleanly, as it must: no output file was written"

echo
echo "== Codec speed, RS(8+3) on 1 MiB extents (MB/s of extent data; higher is better)"
cairnctl bench codec --profile 8+3 --extent-size 1MiB --seconds "${DEMO_BENCH_SECONDS:-0.5}"
echo
echo "Done. The full benchmark is 'make bench'; results are kept in docs/bench/."
