# Shared helpers for the lab scripts. Source it; do not run it.
# Everything the rigs create lives under LAB_DIR so that `make down` stops only what they started.
LAB_DIR=${LAB_DIR:-/var/lib/ceph-docker-plugin-lab}
export LAB_DIR
CEPH_LAB=$LAB_DIR/ceph
export DEBIAN_FRONTEND=noninteractive

_t0=$(date +%s%N)
log() { local ms=$(( ($(date +%s%N) - _t0) / 1000000 )); printf '[%s %3d.%01ds] %s\n' "${0##*/}" $((ms/1000)) $((ms%1000/100)) "$*" >&2; }
# die MESSAGE: log the error and exit 1; the message is kept in FAILED_AT for an EXIT trap that
# prints it again after a dump of logs (CI shows only the end of the output).
FAILED_AT=
die() { FAILED_AT="ERROR: $*"; log "ERROR: $*"; exit 1; }
# note_failure: for `trap note_failure ERR` under set -eE: keep the first command that failed.
note_failure() { [ -n "$FAILED_AT" ] || FAILED_AT="line ${BASH_LINENO[0]}: $BASH_COMMAND"; }

# need_root: the rigs start daemons and mount things.
need_root() { [ "$(id -u)" = 0 ] || die "must run as root (starts Ceph daemons, maps and mounts devices)"; }

# apt_ensure PKG...: install the Debian packages that are missing. Bounded and retried:
# another apt may hold the archives lock, which DPkg::Lock::Timeout does not cover.
apt_ensure() {
  local missing=() p
  for p in "$@"; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  log "installing ${missing[*]}"
  local stamp=/var/lib/apt/periodic/ceph-docker-plugin-update
  if [ ! -f "$stamp" ] || [ -n "$(find "$stamp" -mmin +360)" ]; then
    timeout 300 apt-get -o DPkg::Lock::Timeout=300 update -q >/dev/null || log "apt-get update failed (continuing)"
    mkdir -p "${stamp%/*}"; touch "$stamp"
  fi
  local i
  for i in 1 2 3 4 5; do
    timeout 900 apt-get -o DPkg::Lock::Timeout=300 install -y -q --no-install-recommends "${missing[@]}" >"$LAB_DIR/apt.log" 2>&1 && return 0
    log "apt-get install failed (try $i), retrying in 10s: $(tail -n 2 "$LAB_DIR/apt.log" | tr '\n' ' ')"
    sleep 10
  done
  die "could not install ${missing[*]}: see $LAB_DIR/apt.log"
}

# wait_until SECONDS DESCRIPTION CMD...: poll CMD every 0.5 s until it succeeds or time runs out.
wait_until() {
  local secs=$1 what=$2; shift 2
  local end=$(( $(date +%s) + secs ))
  until "$@" >/dev/null 2>&1; do
    [ "$(date +%s)" -ge "$end" ] && die "timed out after ${secs}s waiting for $what"
    sleep 0.5
  done
}

# pid_alive PIDFILE [PATTERN]: the pid in PIDFILE runs, and (if given) its command line contains PATTERN.
pid_alive() {
  local pf=$1 pat=${2:-} pid
  [ -f "$pf" ] || return 1
  pid=$(cat "$pf" 2>/dev/null) || return 1
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 1
  [ -z "$pat" ] || tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$pat"
}

# stop_pidfile PIDFILE PATTERN NAME: stop the process only if it is the one we started.
stop_pidfile() {
  local pf=$1 pat=$2 name=$3 pid i
  if pid_alive "$pf" "$pat"; then
    pid=$(cat "$pf"); kill "$pid" 2>/dev/null
    for i in $(seq 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    kill -0 "$pid" 2>/dev/null && kill -9 "$pid" 2>/dev/null
    log "stopped $name (pid $pid)"
  fi
  rm -f "$pf"
}

# docker_engine: the Docker engine the docker rigs use, chosen by DOCKER_ENGINE, and its paths:
#   20.10  Debian 12's docker.io (installed from bookworm): $LAB_DIR/docker, exec-root /run/cdp-docker
#   28     Debian forky's docker.io 28.x and containerd 2.x, unpacked privately under
#          $LAB_DIR/engines/28 (nothing installed over the system; Debian 12's runc runs it):
#          $LAB_DIR/docker-28, exec-root /run/cdp-docker28
# Sets DOCKER_LAB (state, env file, log), DOCKER_EXEC (exec-root; short: plugin sockets live
# at <exec-root>/plugins/<64-hex-id>/, within the 108-byte limit of a socket path) and
# SWARM_LISTEN_ADDR (a swarm manager port of its own, so that both engines can run a swarm).
docker_engine() {
  DOCKER_ENGINE=${DOCKER_ENGINE:-20.10}
  case $DOCKER_ENGINE in
    20.10) DOCKER_LAB=$LAB_DIR/docker; DOCKER_EXEC=/run/cdp-docker; SWARM_LISTEN_ADDR=127.0.0.1:2377 ;;
    28) DOCKER_LAB=$LAB_DIR/docker-28; DOCKER_EXEC=/run/cdp-docker28; SWARM_LISTEN_ADDR=127.0.0.1:2378 ;;
    *) die "DOCKER_ENGINE=$DOCKER_ENGINE: use 20.10 (Debian 12's docker.io) or 28 (Debian forky's, unpacked privately)" ;;
  esac
  export DOCKER_ENGINE DOCKER_LAB DOCKER_EXEC SWARM_LISTEN_ADDR
}

# docker_env: load the chosen engine's env file (DOCKER_HOST, ...), written by docker-up.sh.
docker_env() {
  docker_engine
  [ -f "$DOCKER_LAB/env" ] || die "no $DOCKER_LAB/env: run scripts/docker-up.sh (DOCKER_ENGINE=$DOCKER_ENGINE) first"
  . "$DOCKER_LAB/env"; export DOCKER_HOST
}
