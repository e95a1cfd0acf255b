#!/usr/bin/env bash
# make bench: the plugin binary, driven over its socket as dockerd drives it, side by side with the
# raw tools doing the same work by hand; writes docs/BENCHMARKS.md from that one run.
# The Makefile starts the lab Ceph and Keystone + Cinder first. Installs fio if missing, builds the
# plugin and cmd/cdp-bench, and runs it (about 10-15 minutes). BENCH_ARGS passes flags to
# cdp-bench (e.g. BENCH_ARGS='-phases latency -n 5' for a quick look; see cdp-bench -h).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
need_root
apt_ensure fio rbd-fuse e2fsprogs mount util-linux
export PATH="$PATH:/usr/local/go/bin"
for f in "$LAB_DIR/ceph/env" "$LAB_DIR/openstack/env"; do
  [ -f "$f" ] || die "$f is missing: run make ceph-up openstack-up (make bench does)"
done
set -a; . "$LAB_DIR/ceph/env"; . "$LAB_DIR/openstack/env"; set +a

bin=$LAB_DIR/bench-bin
mkdir -p "$bin"
log "building the plugin and cdp-bench"
go build -tags "${GOTAGS:-pacific}" -o "$bin/ceph-docker-plugin" ./cmd/ceph-docker-plugin
go build -tags "${GOTAGS:-pacific}" -o "$bin/cdp-bench" ./cmd/cdp-bench
log "load average before the run: $(cut -d' ' -f1-3 /proc/loadavg)"
# shellcheck disable=SC2086 # BENCH_ARGS is a list of flags
"$bin/cdp-bench" -plugin "$bin/ceph-docker-plugin" -work "$LAB_DIR/bench" -out docs/BENCHMARKS.md ${BENCH_ARGS:-}
