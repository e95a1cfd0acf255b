#!/usr/bin/env bash
# Build the managed plugin: the binary (-tags pacific, against bookworm's librbd), the rootfs from
# plugin/Dockerfile, config.json; then `docker plugin create` it as $PLUGIN (default ceph:latest)
# and, with settings given as arguments (KEY=VALUE), set and enable it.
# CONFIG=config-csi.json builds the swarm cluster-volume (CSI) plugin from the same binary and rootfs.
#   scripts/plugin-build.sh [KEY=VALUE ...]
set -euo pipefail
. "$(dirname "$0")/lib.sh"
docker_env
TOP=$(cd "$(dirname "$0")/.." && pwd)
PLUGIN=${PLUGIN:-ceph:latest}
CONFIG=${CONFIG:-config.json}
B=$LAB_DIR/plugin-build/${PLUGIN%%:*}
rm -rf "$B"; mkdir -p "$B/ctx" "$B/plugin"
export PATH=$PATH:/usr/local/go/bin
(cd "$TOP" && go build -tags pacific -trimpath -o "$B/ctx/ceph-docker-plugin" ./cmd/ceph-docker-plugin)
cp "$TOP/plugin/Dockerfile" "$B/ctx/"
# The rootfs depends only on the binary and the Dockerfile: one built for them (by any engine, for
# any plugin name) is reused, so the second plugin and the second engine skip the docker build.
KEY=$(cat "$B/ctx/ceph-docker-plugin" "$B/ctx/Dockerfile" | sha256sum | cut -c1-16)
CACHE=$LAB_DIR/plugin-build/rootfs-$KEY
if [ ! -d "$CACHE" ]; then
  timeout 900 docker build --network host -q -t ceph-docker-plugin-rootfs "$B/ctx" >/dev/null || die "docker build of the plugin rootfs failed"
  cid=$(docker create ceph-docker-plugin-rootfs)
  rm -rf "$CACHE.tmp"; mkdir -p "$CACHE.tmp"
  docker export "$cid" | tar -C "$CACHE.tmp" -x
  docker rm "$cid" >/dev/null
  # Keep the newest few rootfs trees only.
  for old in $(ls -dt "$LAB_DIR"/plugin-build/rootfs-*[^p] 2>/dev/null | tail -n +4); do rm -rf "$old"; done
  mv "$CACHE.tmp" "$CACHE"
else
  log "reusing the rootfs built for this binary and Dockerfile ($CACHE)"
fi
cp -al "$CACHE" "$B/plugin/rootfs"   # hard links: instant; nothing in it is written in place
cp "$TOP/plugin/$CONFIG" "$B/plugin/config.json"
# dockerd refuses a second plugin whose rootfs layer is byte-identical to an installed one's.
# (A new file, not a write through a hard link into the cache.)
rm -f "$B/plugin/rootfs/etc/ceph-docker-plugin.name"
echo "$PLUGIN" >"$B/plugin/rootfs/etc/ceph-docker-plugin.name"
if docker plugin inspect "$PLUGIN" >/dev/null 2>&1; then
  docker plugin disable -f "$PLUGIN" >/dev/null 2>&1 || true
  docker plugin rm -f "$PLUGIN" >/dev/null
fi
docker plugin create "$PLUGIN" "$B/plugin" >/dev/null
log "plugin $PLUGIN created ($(du -sh "$B/plugin/rootfs" | cut -f1) rootfs)"
if [ $# -gt 0 ]; then
  docker plugin set "$PLUGIN" "$@"
fi
if [ "${ENABLE:-1}" = 1 ]; then
  # --timeout 120: without it dockerd gives every call to the plugin 30 s (moby pluginPostStart),
  # below CALL_TIMEOUT, and abandons slow Mounts that the plugin then completes.
  timeout 150 docker plugin enable --timeout 120 "$PLUGIN" >/dev/null || die "enable failed: see the plugin's log in $DOCKER_LAB/dockerd.log"
  log "plugin $PLUGIN enabled"
fi
