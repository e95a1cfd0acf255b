#!/usr/bin/env bash
# Start a private dockerd (Debian's docker.io) for the e2e suite and the demo; install it if
# missing. Private data-root, exec-root and socket under $LAB_DIR/docker, so it never touches
# another dockerd on the machine; test traffic stays on loopback (--bridge=none --iptables=false).
# Idempotent. Writes $LAB_DIR/docker/env (DOCKER_HOST, ...).
set -euo pipefail
. "$(dirname "$0")/lib.sh"
need_root
apt_ensure docker.io containerd runc tini iptables debootstrap busybox-static docker-registry
D=$LAB_DIR/docker
EXEC=/run/cdp-docker   # short: plugin sockets live at <exec-root>/plugins/<64-hex-id>/ (108-byte limit)
SOCK=$EXEC/docker.sock
mkdir -p "$D" "$EXEC"
cat >"$D/env" <<ENV
DOCKER_HOST=unix://$SOCK
DOCKER_EXEC_ROOT=$EXEC
DOCKER_DATA_ROOT=$D/root
ENV
export DOCKER_HOST=unix://$SOCK
# /lib/modules is bind-mounted read-only into the plugin; a kernel without modules has none.
[ -d /lib/modules ] || mkdir -p /lib/modules
if pid_alive "$D/dockerd.pid" "$D/root" && timeout 5 docker version >/dev/null 2>&1; then
  log "dockerd already running"; exit 0
fi
# dockerd trusts containerd's pid file: a stale one whose PID another process now has makes it
# wait for a containerd that is not there ("containerd is still running", then a timeout).
if [ -f "$EXEC/containerd/containerd.pid" ] && ! pid_alive "$EXEC/containerd/containerd.pid" containerd; then
  log "removing a stale containerd pid file"; rm -f "$EXEC/containerd/containerd.pid"
fi
nohup dockerd -H "$DOCKER_HOST" --data-root "$D/root" --exec-root "$EXEC" --pidfile "$D/dockerd.pid" \
  --bridge=none --iptables=false --ip-masq=false >>"$D/dockerd.log" 2>&1 &
docker_ok() { docker version; }
wait_until 60 "dockerd to answer on $SOCK" docker_ok
log "dockerd up ($(docker version -f '{{.Server.Version}}'))"
