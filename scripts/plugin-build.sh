#!/usr/bin/env bash
# Build the managed plugin: the binary (-tags pacific, against bookworm's librbd), the rootfs from
# plugin/Dockerfile, config.json; then `docker plugin create` it as $PLUGIN (default ceph:latest)
# and, with settings given as arguments (KEY=VALUE), set and enable it.
#   scripts/plugin-build.sh [KEY=VALUE ...]
set -euo pipefail
. "$(dirname "$0")/lib.sh"
docker_env
TOP=$(cd "$(dirname "$0")/.." && pwd)
PLUGIN=${PLUGIN:-ceph:latest}
B=$LAB_DIR/plugin-build/${PLUGIN%%:*}
rm -rf "$B"; mkdir -p "$B/ctx" "$B/plugin/rootfs"
export PATH=$PATH:/usr/local/go/bin
(cd "$TOP" && go build -tags pacific -trimpath -o "$B/ctx/ceph-docker-plugin" ./cmd/ceph-docker-plugin)
cp "$TOP/plugin/Dockerfile" "$B/ctx/"
timeout 900 docker build --network host -q -t ceph-docker-plugin-rootfs "$B/ctx" >/dev/null || die "docker build of the plugin rootfs failed"
cid=$(docker create ceph-docker-plugin-rootfs)
docker export "$cid" | tar -C "$B/plugin/rootfs" -x
docker rm "$cid" >/dev/null
cp "$TOP/plugin/config.json" "$B/plugin/config.json"
# dockerd refuses a second plugin whose rootfs layer is byte-identical to an installed one's.
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
  timeout 60 docker plugin enable "$PLUGIN" >/dev/null || die "enable failed: see the plugin's log in $DOCKER_LAB/dockerd.log"
  log "plugin $PLUGIN enabled"
fi
