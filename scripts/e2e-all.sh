#!/usr/bin/env bash
# make e2e-all: the end-to-end suites of both Docker engines at the same time. The 20.10 group
# (e2e-cinder, e2e) and the 28 group (e2e-cinder, e2e, e2e-csi) each run their suites in order, on
# their own dockerd ($LAB_DIR/docker, docker-28) with their own plugin builds, metrics and swarm
# ports; the suites mostly wait on dockerd and Ceph, so side by side they take about as long as the
# longer group. The Cinder suites come first in both: they start together, and the one test that
# stops Cinder's API waits for the other's (the suites' lock in plugin/e2e_test.go), which no
# `make openstack-up` of a group starting its Cinder suite meanwhile can then restart under it.
# Each group's output goes to a log of its own, printed whole once both have ended, after a header
# with its exit status and wall time. Exits non-zero if either group failed.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
cd "$(dirname "$0")/.."
MAKE=${MAKE:-make}
# Descriptors inherited beyond stdio are closed, the lock of `flock /tmp/cdp-docker.lock make
# e2e-all` among them (flock itself keeps it for the run): a daemon that a target or suite starts
# (dockerd, Cinder's API) would keep them, and the lock with them, for as long as it lives.
for fd in /proc/$$/fd/*; do
  fd=${fd##*/}
  if [ "$fd" -gt 2 ] && [ "$fd" != 255 ]; then eval "exec $fd>&-"; fi   # 255: bash's own script
done

# What both groups need, once, before they start: two apt-get runs at once would wait on dpkg's
# lock, and two bootstraps of one service would race.
"$MAKE" --no-print-directory test-deps ceph-up openstack-up

dir=$(mktemp -d /tmp/cdp-e2e-all.XXXXXX)
trap 'rm -rf "$dir"' EXIT
groups=(20.10 28)
declare -A targets=([20.10]="e2e-cinder e2e" [28]="e2e-cinder e2e e2e-csi")

# group ENGINE: run its targets; its exit status and wall time go to $dir/ENGINE.rc.
group() {
  local t0 rc=0
  t0=$(date +%s)
  # shellcheck disable=SC2086 # the targets are words
  "$MAKE" --no-print-directory ${targets[$1]} DOCKER_ENGINE="$1" >"$dir/$1.log" 2>&1 </dev/null || rc=$?
  echo "$rc $(( $(date +%s) - t0 ))" >"$dir/$1.rc"
}

t0=$(date +%s)
pids=()
for g in "${groups[@]}"; do
  log "starting make ${targets[$g]} DOCKER_ENGINE=$g (output: $dir/$g.log)"
  group "$g" &
  pids+=($!)
done
wait "${pids[@]}" || true

fail=0 summary=()
for g in "${groups[@]}"; do
  read -r rc secs <"$dir/$g.rc" || { rc=1 secs=?; }
  [ "$rc" = 0 ] || fail=1
  line="make ${targets[$g]} DOCKER_ENGINE=$g: exit $rc after ${secs}s"
  summary+=("$line")
  echo "=== e2e-all: $line, its output:"
  cat "$dir/$g.log"
done
echo "=== e2e-all: both groups done after $(( $(date +%s) - t0 ))s"
printf '=== e2e-all: %s\n' "${summary[@]}"
exit "$fail"
