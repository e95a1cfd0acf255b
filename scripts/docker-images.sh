#!/usr/bin/env bash
# Base images without a registry: busybox (from busybox-static) for test containers, and
# debian:bookworm-slim (debootstrap --variant=minbase from Debian's mirror, cached) for the
# plugin's Dockerfile. Skips what exists.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
docker_env
# The rootfs trees are cached once for every engine, in the 20.10 engine's directory.
D=$LAB_DIR/docker
mkdir -p "$D"
if ! docker image inspect busybox:latest >/dev/null 2>&1; then
  BB=$D/rootfs-busybox; rm -rf "$BB"; mkdir -p "$BB"/{bin,etc,tmp,proc,sys,dev,root,data}
  cp /bin/busybox "$BB/bin/busybox"
  for a in $("$BB/bin/busybox" --list); do [ "$a" = busybox ] || ln -sf busybox "$BB/bin/$a"; done
  echo 'root:x:0:0:root:/root:/bin/sh' >"$BB/etc/passwd"; echo 'root:x:0:' >"$BB/etc/group"
  tar -C "$BB" -c . | docker import -c 'CMD ["sh"]' - busybox:latest >/dev/null
  log "imported busybox:latest"
fi
if ! docker image inspect debian:bookworm-slim >/dev/null 2>&1; then
  DB=$D/rootfs-bookworm
  if [ ! -x "$DB/bin/bash" ]; then
    MIRROR=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
    [ -n "$MIRROR" ] || MIRROR=$(awk '/^deb /{print $2; exit}' /etc/apt/sources.list)
    rm -rf "$DB"
    log "debootstrap bookworm (minbase) from $MIRROR"
    timeout 600 debootstrap --variant=minbase bookworm "$DB" "$MIRROR" >"$D/debootstrap.log" 2>&1 || die "debootstrap failed: $(tail -n 3 "$D/debootstrap.log")"
  fi
  tar -C "$DB" -c . | docker import -c 'CMD ["bash"]' - debian:bookworm-slim >/dev/null
  log "imported debian:bookworm-slim"
fi
