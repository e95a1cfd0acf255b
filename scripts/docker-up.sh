#!/usr/bin/env bash
# Start a private dockerd for the e2e suite and the demo; install it if missing. DOCKER_ENGINE
# picks the engine (see docker_engine in lib.sh): 20.10, Debian 12's docker.io (the default), or
# 28, Debian forky's docker.io 28.x unpacked privately. Private data-root, exec-root and socket
# under $DOCKER_LAB, so it never touches another dockerd on the machine (both engines can run at
# once); test traffic stays on loopback (--bridge=none --iptables=false).
# Idempotent. Writes $DOCKER_LAB/env (DOCKER_HOST, ...).
set -euo pipefail
. "$(dirname "$0")/lib.sh"
need_root
# Debian 12's docker.io also for engine 28: its docker CLI, docker-init (tini) and runc.
apt_ensure docker.io containerd runc tini iptables debootstrap busybox-static docker-registry
docker_engine
D=$DOCKER_LAB
EXEC=$DOCKER_EXEC
SOCK=$EXEC/docker.sock
mkdir -p "$D" "$EXEC"
cat >"$D/env" <<ENV
DOCKER_ENGINE=$DOCKER_ENGINE
DOCKER_LAB=$D
DOCKER_HOST=unix://$SOCK
DOCKER_EXEC_ROOT=$EXEC
DOCKER_DATA_ROOT=$D/root
DOCKERD_LOG=$D/dockerd.log
SWARM_LISTEN_ADDR=$SWARM_LISTEN_ADDR
ENV
# Engine 28's own CLI (28.5, set up below): the cluster-volume flags of docker volume create are
# not in 20.10's.
[ "$DOCKER_ENGINE" != 28 ] || echo "DOCKER_CLI=$LAB_DIR/engines/28/bin/docker" >>"$D/env"
export DOCKER_HOST=unix://$SOCK
# /lib/modules is bind-mounted read-only into the plugin; a kernel without modules has none.
[ -d /lib/modules ] || mkdir -p /lib/modules
ENGINE_PATH=$PATH
EXTRA=()
if [ "$DOCKER_ENGINE" = 28 ]; then
  E=$LAB_DIR/engines/28
  if [ ! -x "$E/root/usr/sbin/dockerd" ] || [ ! -x "$E/root/usr/bin/containerd" ] || [ ! -x "$E/root/usr/bin/docker" ]; then
    # A private apt configuration naming forky: reads its index without touching the system's.
    A=$LAB_DIR/engines/apt; rm -rf "$E"; mkdir -p "$A/lists/partial" "$A/cache/archives/partial" "$E/debs"
    MIRROR=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
    [ -n "$MIRROR" ] || MIRROR=$(awk '/^deb /{print $2; exit}' /etc/apt/sources.list)
    echo "deb $MIRROR forky main" >"$A/sources.list"
    APTO=(-o Dir::Etc::sourcelist="$A/sources.list" -o Dir::Etc::sourceparts=/dev/null -o Dir::State::Lists="$A/lists"
          -o Dir::Cache="$A/cache" -o Debug::NoLocking=1 -o APT::Sandbox::User=root)
    log "fetching docker.io, docker-cli and containerd from Debian forky ($MIRROR), unpacked under $E"
    timeout 300 apt-get -q "${APTO[@]}" update >"$E/apt.log" 2>&1 || die "apt-get update (forky) failed: $(tail -n 3 "$E/apt.log")"
    (cd "$E/debs" && timeout 300 apt-get -q "${APTO[@]}" download docker.io/forky docker-cli/forky containerd/forky >>"$E/apt.log" 2>&1) \
      || die "apt-get download (forky) failed: $(tail -n 3 "$E/apt.log")"
    for deb in "$E"/debs/*.deb; do dpkg-deb -x "$deb" "$E/root"; done
    rm -rf "$E/debs"
  fi
  # A bin directory first on dockerd's PATH: forky's dockerd, containerd and shim; Debian 12's
  # runc (forky's needs glibc 2.38) and docker-init.
  mkdir -p "$E/bin"
  for b in usr/sbin/dockerd usr/sbin/docker-proxy usr/bin/containerd usr/bin/containerd-shim-runc-v2 usr/bin/ctr usr/bin/docker; do
    ln -sf "$E/root/$b" "$E/bin/${b##*/}"
  done
  ln -sf /usr/sbin/runc "$E/bin/runc"
  ln -sf /usr/bin/docker-init "$E/bin/docker-init"
  ENGINE_PATH=$E/bin:$PATH
  EXTRA=(--ip6tables=false)
fi
if pid_alive "$D/dockerd.pid" "$D/root" && timeout 5 docker version >/dev/null 2>&1; then
  log "dockerd $DOCKER_ENGINE already running"; exit 0
fi
# dockerd trusts containerd's pid file: a stale one whose PID another process now has makes it
# wait for a containerd that is not there ("containerd is still running", then a timeout).
if [ -f "$EXEC/containerd/containerd.pid" ] && ! pid_alive "$EXEC/containerd/containerd.pid" containerd; then
  log "removing a stale containerd pid file"; rm -f "$EXEC/containerd/containerd.pid"
fi
# The same for dockerd's own pid file: after a host restart its PID may belong to another process,
# and dockerd then refuses to start ("pid file found, ensure docker is not running").
if [ -f "$D/dockerd.pid" ] && ! pid_alive "$D/dockerd.pid" "$D/root"; then
  log "removing a stale dockerd pid file"; rm -f "$D/dockerd.pid"
fi
PATH=$ENGINE_PATH nohup dockerd -H "$DOCKER_HOST" --data-root "$D/root" --exec-root "$EXEC" --pidfile "$D/dockerd.pid" \
  --bridge=none --iptables=false --ip-masq=false "${EXTRA[@]}" >>"$D/dockerd.log" 2>&1 &
docker_ok() { docker version; }
wait_until 60 "dockerd to answer on $SOCK" docker_ok
log "dockerd $DOCKER_ENGINE up ($(docker version -f '{{.Server.Version}}'), socket $SOCK)"
