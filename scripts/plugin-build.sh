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
# The build tree is the engine's own: make e2e-all builds the same plugin for both engines at once,
# and their suites read the binary and tree afterwards (rootfs trees are shared, below).
B=$DOCKER_LAB/plugin-build/${PLUGIN%%:*}
rm -rf "$B"; mkdir -p "$B/ctx" "$B/plugin"
export PATH=$PATH:/usr/local/go/bin
(cd "$TOP" && go build -tags pacific -trimpath -o "$B/ctx/ceph-docker-plugin" ./cmd/ceph-docker-plugin)
cp "$TOP/plugin/Dockerfile" "$B/ctx/"
# The rootfs depends only on the binary and the Dockerfile: one built for them (by any engine, for
# any plugin name) is reused, so the second plugin and the second engine skip the docker build.
KEY=$(cat "$B/ctx/ceph-docker-plugin" "$B/ctx/Dockerfile" | sha256sum | cut -c1-16)
CACHE=$LAB_DIR/plugin-build/rootfs-$KEY
if [ ! -d "$CACHE" ]; then
  # Builds may run at once (the e2e suites, the guest lab's build): each has its own image tag and
  # its own temporary tree, and the first to finish installs the tree; the others drop theirs.
  timeout 900 docker build --network host -q -t "ceph-docker-plugin-rootfs:$KEY" "$B/ctx" >/dev/null || die "docker build of the plugin rootfs failed"
  cid=$(docker create "ceph-docker-plugin-rootfs:$KEY")
  tmp=$(mktemp -d "$CACHE.tmp.XXXXXX"); chmod 755 "$tmp"   # the rootfs's / (mktemp makes it 0700)
  docker export "$cid" | tar -C "$tmp" -x
  docker rm "$cid" >/dev/null
  docker rmi "ceph-docker-plugin-rootfs:$KEY" >/dev/null 2>&1 || true   # its layers stay cached
  # Keep the newest few rootfs trees only (never another build's temporary one).
  for old in $(ls -dt "$LAB_DIR"/plugin-build/rootfs-* 2>/dev/null | grep -v '\.tmp' | tail -n +4); do rm -rf "$old"; done
  mv -T "$tmp" "$CACHE" 2>/dev/null || rm -rf "$tmp"   # -T: never into a tree another build installed
else
  log "reusing the rootfs built for this binary and Dockerfile ($CACHE)"
fi
cp -al "$CACHE" "$B/plugin/rootfs"   # hard links: instant; nothing in it is written in place
cp "$TOP/plugin/$CONFIG" "$B/plugin/config.json"
# config.json asks for CAP_SYS_RESOURCE (ext4 grows while mounted only with it). A dockerd whose
# bounding set lacks it cannot start such a plugin (runc: "unable to apply caps: operation not
# permitted"), so the plugin built for it goes without: its ext4 volumes then grow at their next
# first Mount, and the plugin's start-up log and doctor say so.
DOCKERD_PID=$(cat "$DOCKER_LAB/dockerd.pid" 2>/dev/null || true)
CAPBND=$(awk '/^CapBnd:/{print $2}' "/proc/${DOCKERD_PID:-self}/status" 2>/dev/null || awk '/^CapBnd:/{print $2}' /proc/self/status)
if (( (0x$CAPBND >> 24 & 1) == 0 )); then
  /usr/bin/python3 - "$B/plugin/config.json" <<'PY'
import json, sys
p = sys.argv[1]
c = json.load(open(p))
c["linux"]["capabilities"] = [x for x in c["linux"]["capabilities"] if x != "CAP_SYS_RESOURCE"]
json.dump(c, open(p, "w"), indent=2)
PY
  log "the dockerd at $DOCKER_HOST lacks CAP_SYS_RESOURCE in its bounding set (CapBnd $CAPBND): $PLUGIN built WITHOUT it, so its ext4 volumes grow at their next first Mount, not while mounted (xfs grows while mounted either way)"
fi
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
