#!/usr/bin/env bash
# make demo: on a fresh machine, stand up real Ceph and a real dockerd, build and install the
# managed plugin, and walk the user's scenario with the real docker CLI, narrating each step.
# BACKEND=cinder (make demo BACKEND=cinder): also real Keystone + Cinder, and the plugin provisions
# through Cinder; the demo then shows the Cinder volume and the attachment that names the container.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
need_root
TOP=$(cd "$(dirname "$0")/.." && pwd)
BACKEND=${BACKEND:-rbd}
case $BACKEND in rbd|cinder) ;; *) die "BACKEND=$BACKEND: use rbd or cinder" ;; esac
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
show() { printf '$ %s\n' "$*"; "$@"; }

say "1. A real single-node Ceph (pacific) on 127.0.0.1, with a least-privilege cephx user client.docker"
"$TOP/scripts/ceph-up.sh"
. "$LAB_DIR/ceph/env"
[ "$ETC_CEPH" = ours ] || die "/etc/ceph/ceph.conf belongs to another cluster; the demo's plugin reads /etc/ceph"
if [ "$BACKEND" = cinder ]; then
  say "1b. Real Keystone + Cinder (Debian's packages) on 127.0.0.1, Cinder's RBD backend on that Ceph"
  "$TOP/scripts/openstack-up.sh"
  OS_ENV=$LAB_DIR/openstack/env
  # The openstack CLI, as the plugin's user (project demo), to show the Cinder side.
  os() { (set -a; . "$OS_ENV"; set +a; timeout 60 openstack "$@"); }
fi

say "2. A private dockerd (DOCKER_ENGINE=${DOCKER_ENGINE:-20.10}: Debian's docker.io), and base images without a registry"
"$TOP/scripts/docker-up.sh"
"$TOP/scripts/docker-images.sh"
docker_env
D=/usr/bin/docker
if [ "$BACKEND" = rbd ]; then
  PLUGIN=ceph:latest
  say "3. Build the managed plugin (config.json + rootfs) and install it, as client.docker"
  PLUGIN=$PLUGIN "$TOP/scripts/plugin-build.sh" CEPH_USER=docker CEPH_KEYRING=/etc/ceph/ceph.client.docker.keyring
else
  # A name of its own, so that the demo does not replace an installed BACKEND=rbd plugin.
  PLUGIN=ceph-cinder:latest
  say "3. Build the managed plugin and install it with BACKEND=cinder (Keystone user demo; maps as client.docker)"
  # The settings go through argv, not the log: OS_PASSWORD is never printed.
  ( set -a; . "$OS_ENV"; set +a
    PLUGIN=$PLUGIN "$TOP/scripts/plugin-build.sh" BACKEND=cinder CEPH_USER=docker \
      CEPH_KEYRING=/etc/ceph/ceph.client.docker.keyring OS_AUTH_URL="$OS_AUTH_URL" OS_USERNAME="$OS_USERNAME" \
      OS_PASSWORD="$OS_PASSWORD" OS_PROJECT_NAME="$OS_PROJECT_NAME" OS_REGION_NAME="$OS_REGION_NAME" )
fi
show $D plugin ls

V=demo-$(date +%s)
cleanup_demo() {
  $D service rm demo-db >/dev/null 2>&1 || true
  for i in $(seq 60); do [ -z "$($D ps -aq --filter label=com.docker.swarm.service.name=demo-db)" ] && break; sleep 1; done
  $D rm -f demo-writer demo-reader >/dev/null 2>&1 || true
  for v in "$V" demo-db.1 demo-db.2 demo-db.3; do $D volume rm -f "$v" >/dev/null 2>&1 || true; done
  $D swarm leave --force >/dev/null 2>&1 || true
}
trap cleanup_demo EXIT

say "4. Create a volume with options"
show $D volume create --driver $PLUGIN -o size=1G -o fstype=xfs "$V"
show $D volume ls

say "5. A container writes to it, and is removed"
show $D run --rm --network none -v "$V":/data busybox sh -c 'echo "written at $(date)" > /data/hello; sync; cat /data/hello'

say "6. A new container reads the data back"
show $D run --rm --network none --volume-driver $PLUGIN -v "$V":/data busybox cat /data/hello

say "7. docker volume inspect: what the plugin reports"
show $D volume inspect "$V"

say "8. Two running containers share the volume: one mapping, two references; it cannot be removed"
$D run -d --name demo-writer --network none -v "$V":/data busybox sleep 600 >/dev/null
$D run -d --name demo-reader --network none -v "$V":/data busybox sleep 600 >/dev/null
show $D volume inspect -f '{{json .Status}}' "$V"
if [ "$BACKEND" = cinder ]; then
  echo "The Cinder volume behind it, in use, with this host's attachment (the containers in its mount point):"
  show os volume show "$V" -f yaml -c name -c status -c size -c attachments
fi
show $D volume rm "$V" || true
$D rm -f demo-writer demo-reader >/dev/null

say "9. A swarm service with per-slot volumes, scaled 3 -> 1 -> 3: each slot keeps its data"
$D swarm init --advertise-addr 127.0.0.1 --listen-addr "$SWARM_LISTEN_ADDR" >/dev/null
show $D service create --detach --name demo-db --replicas 3 --network host --env 'SLOT={{.Task.Slot}}' \
  --mount "type=volume,src=demo-db.{{.Task.Slot}},dst=/data,volume-driver=$PLUGIN,volume-opt=size=64M" \
  busybox sh -c '[ -f /data/first ] || { echo "slot $SLOT first started $(date +%T)" > /data/first; sync; }; exec sleep 3600'
wait_n() { for i in $(seq 180); do [ "$($D ps -q --filter label=com.docker.swarm.service.name=demo-db | wc -l)" = "$1" ] && return 0; sleep 1; done; die "service did not reach $1 tasks"; }
wait_n 3
show $D volume ls --filter driver=$PLUGIN
show $D service scale --detach demo-db=1; wait_n 1
show $D run --rm --network none -v demo-db.3:/data busybox cat /data/first
show $D service scale --detach demo-db=3; wait_n 3
for c in $($D ps -q --filter label=com.docker.swarm.service.name=demo-db); do $D exec "$c" cat /data/first; done

say "10. Clean up the demo's containers, service and volumes"
trap - EXIT
cleanup_demo
show $D volume ls --filter driver=$PLUGIN

if [ "$BACKEND" = cinder ]; then
  say "Done. Still running: the lab Ceph, Keystone + Cinder (under $LAB_DIR) and the private dockerd ($DOCKER_HOST) with the plugin."
else
  say "Done. Still running: the lab Ceph (under $LAB_DIR/ceph) and the private dockerd ($DOCKER_HOST) with the plugin."
fi
echo "Use them:   export DOCKER_HOST=$DOCKER_HOST; /usr/bin/docker volume create --driver $PLUGIN -o size=1G myvol"
echo "Stop them:  make down"
