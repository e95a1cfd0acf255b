#!/usr/bin/env bash
# make bench-scale: the scale phases of cmd/cdp-bench (issue 18): what one Get costs, counted
# (OSD requests from the plugin client's admin socket, CPU from /proc), for this tree and for the
# plugin built from SCALE_BASE (default: the last commit whose Get opened the image); the HTTP
# requests of a Cinder-mode call; List of a pool of 100,000 images; N plugin instances on one
# Ceph; a restart with many mounted volumes. Writes the scale section of docs/BENCHMARKS.md and
# keeps the rest of the file. BENCH_ARGS passes more flags to cdp-bench (e.g. '-hosts-n 1,10').
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
need_root
apt_ensure libradospp-dev g++
export PATH="$PATH:/usr/local/go/bin"
base=${SCALE_BASE:-1cbab1d}
bin=$LAB_DIR/bench-bin
mkdir -p "$bin"
log "building the plugin at $base (the figures before)"
src=$(mktemp -d)
trap 'rm -rf "$src"' EXIT
git archive "$base" | tar -x -C "$src"
(cd "$src" && go build -tags "${GOTAGS:-pacific}" -o "$bin/ceph-docker-plugin-before" ./cmd/ceph-docker-plugin)
# scripts/bench.sh builds this tree and runs cdp-bench; later flags win over its own.
BENCH_ARGS="-plugin-before $bin/ceph-docker-plugin-before -before-ref $base -work $LAB_DIR/bench-scale \
  -phases getcost,cindercost,biglist,hosts,reconcile ${BENCH_ARGS:-}" scripts/bench.sh
