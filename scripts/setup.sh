#!/usr/bin/env bash
# Installs what Cairn needs on a Debian 12 machine with Node 20, and is quick when it is all there:
# Debian packages (etcd for tests, libisal for the codec benchmark peer) and the npm packages
# pinned in package-lock.json. Safe to run again; runs apt-get only for what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

# etcd: metadata store (tests, dev cluster). libisal-dev: codec benchmark peer.
# radosgw, ceph-mon, ceph-osd: a real S3 server (Ceph RGW on a one-OSD memstore cluster) for tests.
# libnbd-bin (nbdinfo, nbdcopy, nbdfuse), python3-libnbd (nbdsh), qemu-utils (qemu-io, qemu-img), fio,
# nbdkit and nbd-server: real NBD clients and reference servers. fuse3, e2fsprogs: a real ext4 on
# an export (nbdfuse + losetup + mkfs.ext4). xfsprogs: the CSI node service's other filesystem.
# chromium: the real browser the dashboard's tests drive headless (through playwright-core, which
# downloads no browser of its own).
DEBIAN_PACKAGES=(etcd-server etcd-client libisal-dev radosgw ceph-mon ceph-osd
  libnbd-bin python3-libnbd qemu-utils fio nbdkit nbd-server fuse3 e2fsprogs xfsprogs iproute2
  chromium)

node_major=$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)
if [ "$node_major" -lt 20 ]; then
  echo "setup: Node.js 20 or newer is required (found $(node --version 2>/dev/null || echo none))" >&2
  exit 1
fi

missing=()
for p in "${DEBIAN_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing Debian packages: ${missing[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# npm ci only when the lock file changed since the last install (npm writes its own copy).
if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "setup: installing npm packages"
  npm ci --no-audit --no-fund --loglevel=error 2>&1 | grep -v 'Unknown user config "nodedir"' || true
  test -d node_modules/typescript || { echo "setup: npm ci failed" >&2; exit 1; }
fi
