#!/usr/bin/env bash
# Stop the private dockerd docker-up.sh started (and only it), after removing what the e2e suite
# and the demo left: swarm, services, containers, volumes of the plugin, the plugin itself.
set -uo pipefail
. "$(dirname "$0")/lib.sh"
# Each engine docker-up.sh may have started (DOCKER_ENGINE=20.10 and 28).
for DOCKER_ENGINE in 20.10 28; do
  docker_engine
  D=$DOCKER_LAB
  EXEC=$DOCKER_EXEC
  export DOCKER_HOST=unix://$EXEC/docker.sock
  if pid_alive "$D/dockerd.pid" "$D/root"; then
    timeout 30 docker swarm leave --force >/dev/null 2>&1 || true
    ids=$(timeout 10 docker ps -aq 2>/dev/null); [ -n "$ids" ] && timeout 60 docker rm -f $ids >/dev/null 2>&1
    vols=$(timeout 30 docker volume ls -q --filter driver=ceph:latest 2>/dev/null); [ -n "$vols" ] && timeout 120 docker volume rm -f $vols >/dev/null 2>&1
    timeout 60 docker plugin disable -f ceph >/dev/null 2>&1 || true
    stop_pidfile "$D/dockerd.pid" "$D/root" dockerd
  fi
  umount "$EXEC/netns/default" 2>/dev/null || true
  for m in $(grep -o " $D/root[^ ]*" /proc/self/mountinfo | sort -r); do umount -l "$m" 2>/dev/null; done
done
true
