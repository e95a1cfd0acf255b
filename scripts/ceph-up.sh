#!/usr/bin/env bash
# Stand up (or restart) a real single-node Ceph pacific cluster on 127.0.0.1 for development and tests.
#   one mon (a), one mgr (x), one bluestore OSD (0) on a sparse file, cephx on,
#   pool `volumes` (rbd application, size 1), and a least-privilege client `client.docker`
#   (mon 'profile rbd' -- which includes blocklisting -- and osd/mgr 'profile rbd pool=volumes').
# Everything lives under $LAB_DIR/ceph; nothing in /etc/ceph is touched. Idempotent: a running cluster
# is left alone, a stopped one is restarted from its data, a missing one is bootstrapped.
# Writes $LAB_DIR/ceph/env (CEPH_CONF, CEPH_USER, CEPH_KEYRING, ...) for the tests and the Makefile.
# Bounded: every wait has a deadline; on failure it prints the reason and the daemon log tail.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
need_root
OSD_SIZE=${OSD_SIZE:-10G}
mkdir -p "$CEPH_LAB" "$LAB_DIR"
apt_ensure ceph-mon ceph-mgr ceph-osd ceph-common librbd-dev librados-dev libradospp-dev g++ rbd-fuse uuid-runtime e2fsprogs xfsprogs util-linux

CONF=$CEPH_LAB/ceph.conf
ADMIN_KR=$CEPH_LAB/ceph.client.admin.keyring
USER_KR=$CEPH_LAB/ceph.client.docker.keyring
RUN=$CEPH_LAB/run
ceph_() { timeout 30 ceph -c "$CONF" -n client.admin -k "$ADMIN_KR" "$@"; }
fail_logs() { for f in "$CEPH_LAB"/log/*.log; do [ -f "$f" ] && { echo "--- $f" >&2; tail -n 15 "$f" >&2; }; done; }
trap 'rc=$?; [ $rc -ne 0 ] && fail_logs; exit $rc' EXIT
mkdir -p "$RUN" "$CEPH_LAB/log"

# A client-only config for hosts and plugins (no lab paths in it), installed in /etc/ceph (which
# the managed plugin mounts read-only) unless /etc/ceph already holds a config that is not ours.
install_etc_ceph() {
  local fsid
  fsid=$(awk '/^fsid/{print $3}' "$CONF")
  cat >"$CEPH_LAB/client.conf" <<CC
# written by ceph-docker-plugin scripts/ceph-up.sh (lab cluster)
[global]
fsid = $fsid
mon host = [v2:127.0.0.1:3300,v1:127.0.0.1:6789]
auth cluster required = cephx
auth service required = cephx
auth client required = cephx
CC
  mkdir -p /etc/ceph
  if [ ! -f /etc/ceph/ceph.conf ] || grep -q 'written by ceph-docker-plugin' /etc/ceph/ceph.conf; then
    cp "$CEPH_LAB/client.conf" /etc/ceph/ceph.conf
    install -m 600 "$USER_KR" /etc/ceph/ceph.client.docker.keyring
    ETC_CEPH=ours
  else
    log "/etc/ceph/ceph.conf belongs to another cluster: left alone (the e2e suite and the demo need it to be ours)"
    ETC_CEPH=foreign
  fi
}

write_env() {
  cat >"$CEPH_LAB/env" <<ENV
CEPH_CONF=$CONF
CEPH_CLUSTER=ceph
CEPH_USER=docker
CEPH_KEYRING=$USER_KR
CEPH_ADMIN_KEYRING=$ADMIN_KR
RBD_POOL=volumes
CEPH_OSD_PIDFILE=$RUN/ceph-osd.0.pid
ETC_CEPH=${ETC_CEPH:-unknown}
ENV
}

if [ -f "$CONF" ] && pid_alive "$RUN/ceph-osd.0.pid" "ceph-osd -c $CONF -i 0" && ceph_ -s >/dev/null 2>&1 && [ -f "$USER_KR" ]; then
  install_etc_ceph; write_env; log "cluster already running: $(ceph_ health 2>&1)"; exit 0
fi

if [ ! -f "$CEPH_LAB/mon-a/done" ]; then
  FSID=$(uuidgen)
  log "bootstrapping a new cluster (fsid $FSID) in $CEPH_LAB"
  rm -rf "$CEPH_LAB/mon-a" "$CEPH_LAB/mgr-x" "$CEPH_LAB/osd-0"
  mkdir -p "$CEPH_LAB/mon-a" "$CEPH_LAB/mgr-x" "$CEPH_LAB/osd-0"
  cat >"$CONF" <<CFG
# written by ceph-docker-plugin scripts/ceph-up.sh -- a throwaway single-node lab cluster
[global]
fsid = $FSID
mon host = [v2:127.0.0.1:3300,v1:127.0.0.1:6789]
mon initial members = a
public network = 127.0.0.0/8
auth cluster required = cephx
auth service required = cephx
auth client required = cephx
auth allow insecure global id reclaim = false
osd pool default size = 1
osd pool default min size = 1
osd pool default pg autoscale mode = off
osd crush chooseleaf type = 0
mon allow pool size one = true
mon allow pool delete = true
mon warn on pool no redundancy = false
mon data avail warn = 5
mon data avail crit = 1
run dir = $RUN
pid file = $RUN/\$cluster-\$name.pid
log file = $CEPH_LAB/log/\$cluster-\$name.log
[client]
keyring = $CEPH_LAB/\$cluster.\$name.keyring
log file = /dev/null
rbd default features = 61
[mon]
mon data = $CEPH_LAB/mon-\$id
[mgr]
mgr data = $CEPH_LAB/mgr-\$id
[osd]
osd data = $CEPH_LAB/osd-\$id
osd objectstore = bluestore
osd memory target = 1073741824
bluestore block create = true
bluestore block size = $(numfmt --from=iec "$OSD_SIZE")
CFG
  TMP=$(mktemp -d)
  ceph-authtool --create-keyring "$TMP/mon.kr" --gen-key -n mon. --cap mon 'allow *' >/dev/null
  ceph-authtool --create-keyring "$ADMIN_KR" --gen-key -n client.admin \
    --cap mon 'allow *' --cap osd 'allow *' --cap mds 'allow *' --cap mgr 'allow *' >/dev/null
  chmod 600 "$ADMIN_KR"
  ceph-authtool "$TMP/mon.kr" --import-keyring "$ADMIN_KR" >/dev/null
  monmaptool --create --fsid "$FSID" --addv a '[v2:127.0.0.1:3300,v1:127.0.0.1:6789]' "$TMP/monmap" >/dev/null
  ceph-mon -c "$CONF" --mkfs -i a --monmap "$TMP/monmap" --keyring "$TMP/mon.kr"
  rm -rf "$TMP"; touch "$CEPH_LAB/mon-a/done"
fi

pid_alive "$RUN/ceph-mon.a.pid" "ceph-mon -c $CONF -i a" || { log "starting mon.a"; ceph-mon -c "$CONF" -i a; }
wait_until 60 "the monitor to answer" ceph_ mon stat
log "mon up"

[ -f "$CEPH_LAB/mgr-x/keyring" ] || ceph_ auth get-or-create mgr.x mon 'allow profile mgr' osd 'allow *' mds 'allow *' -o "$CEPH_LAB/mgr-x/keyring"
pid_alive "$RUN/ceph-mgr.x.pid" "ceph-mgr -c $CONF -i x" || { log "starting mgr.x"; ceph-mgr -c "$CONF" -i x; }

if [ ! -f "$CEPH_LAB/osd-0/done" ]; then
  log "creating osd.0 (bluestore on a ${OSD_SIZE} sparse file)"
  UUID=$(uuidgen); KEY=$(ceph-authtool --gen-print-key)
  ID=$(echo "{\"cephx_secret\": \"$KEY\"}" | ceph_ osd new "$UUID" -i -)
  [ "$ID" = 0 ] || die "expected osd id 0, got $ID"
  ceph-authtool --create-keyring "$CEPH_LAB/osd-0/keyring" --name osd.0 --add-key "$KEY" >/dev/null
  timeout 120 ceph-osd -c "$CONF" -i 0 --mkfs --osd-uuid "$UUID" >"$CEPH_LAB/log/osd-mkfs.log" 2>&1 || die "ceph-osd --mkfs failed: $(tail -n 3 "$CEPH_LAB/log/osd-mkfs.log")"
  touch "$CEPH_LAB/osd-0/done"
fi
pid_alive "$RUN/ceph-osd.0.pid" "ceph-osd -c $CONF -i 0" || { log "starting osd.0"; ceph-osd -c "$CONF" -i 0; }
osd_up() { ceph_ osd stat | grep -q '1 up'; }
wait_until 90 "osd.0 to come up" osd_up
log "osd.0 up"

if ! ceph_ osd pool ls | grep -qx volumes; then
  ceph_ osd pool create volumes 32 32 >/dev/null
  ceph_ osd pool set volumes size 1 --yes-i-really-mean-it >/dev/null
  timeout 60 rbd -c "$CONF" -n client.admin -k "$ADMIN_KR" pool init volumes
  log "pool volumes created"
fi

if [ ! -f "$USER_KR" ]; then
  ceph_ auth get-or-create client.docker mon 'profile rbd' osd 'profile rbd pool=volumes' \
    mgr 'profile rbd pool=volumes' -o "$USER_KR"
  chmod 600 "$USER_KR"
  log "least-privilege user client.docker created ($USER_KR)"
fi

healthy() { ceph_ pg stat | grep -qE '^[0-9]+ pgs: [0-9]+ active\+clean;'; }
wait_until 120 "all placement groups to be active+clean" healthy
install_etc_ceph
write_env
log "ready: $(ceph_ health 2>&1); env in $CEPH_LAB/env"
