#!/usr/bin/env bash
# Stop the lab Ceph that ceph-up.sh started (only daemons whose pid files and command lines are ours).
#   ceph-down.sh          stop the daemons, keep the data (ceph-up.sh restarts them in seconds)
#   ceph-down.sh --purge  also delete the cluster's data, config and keys
set -uo pipefail
. "$(dirname "$0")/lib.sh"
CONF=$CEPH_LAB/ceph.conf
for n in osd.0 mgr.x mon.a; do
  stop_pidfile "$CEPH_LAB/run/ceph-$n.pid" "ceph-${n%.*} -c $CONF -i ${n#*.}" "ceph $n"
done
if [ "${1:-}" = --purge ]; then
  rm -rf "$CEPH_LAB"
  if grep -q 'written by ceph-docker-plugin' /etc/ceph/ceph.conf 2>/dev/null; then
    rm -f /etc/ceph/ceph.conf /etc/ceph/ceph.client.docker.keyring
  fi
  log "purged $CEPH_LAB"
fi
