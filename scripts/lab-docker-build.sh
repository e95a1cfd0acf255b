#!/usr/bin/env bash
# Build the docker guest of the krbd lab (make lab-docker): a Debian disk image that boots its own
# stock kernel under QEMU (TCG) and runs containerd + dockerd + the lab agent, so that the tests can
# create the real managed plugin in it (MAPPER=krbd) and drive it with the real docker CLI.
#
#   $OUT/tree                    debootstrap of $SUITE + its kernel + Docker's packages (cached:
#                                rebuilt only when the recipe below changes)
#   $LAB_DIR/lab-docker/root.img ext4 image of the tree + the guest's init + the lab agent (rebuilt
#                                when one of them changes); the tests boot it with snapshot=on
#   $LAB_DIR/lab-docker/vmlinuz, initrd.img   the tree's kernel and its initramfs-tools initrd
#   $LAB_DIR/lab-docker/plugin.tar  the managed plugin (config.json, config-csi.json, rootfs/) as built by
#                                scripts/plugin-build.sh, attached to the guest as a raw disk
#
# Suites: the base system and kernel come from trixie (Debian 13, stable: the debootstrap does not
# break on a testing transition, and its 6.12 LTS kernel has rbd.ko); Docker's engine (docker.io,
# containerd, runc, tini) from forky, the current engine (28.x, the one `make e2e
# DOCKER_ENGINE=28` runs on the host), pinned so that nothing else comes from forky. Both are
# settable: LAB_DOCKER_SUITE, LAB_DOCKER_ENGINE_SUITE (= LAB_DOCKER_SUITE for a single suite).
# Nothing is installed on the host beyond debootstrap, QEMU and e2fsprogs. No key goes in.
# LAB_DOCKER_PLUGIN=0 skips step 3 (the plugin's rootfs, which needs the host's lab dockerd).
set -euo pipefail
. "$(dirname "$0")/lib.sh"
need_root
TOP=$(cd "$(dirname "$0")/.." && pwd)
cd "$TOP"
export PATH=$PATH:/usr/local/go/bin
GO=${GO:-go}
SUITE=${LAB_DOCKER_SUITE:-trixie}
ENGINE_SUITE=${LAB_DOCKER_ENGINE_SUITE:-forky}
# LAB_DOCKER_OUT (the Makefile passes $(LAB_OUT)-docker): another directory lets a second checkout
# build and run its own docker guests.
OUT=${LAB_DOCKER_OUT:-$LAB_DIR/lab-docker}
mkdir -p "$OUT"
apt_ensure debootstrap qemu-system-x86 e2fsprogs busybox-static
MIRROR=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
[ -n "$MIRROR" ] || MIRROR=$(awk '/^deb /{print $2; exit}' /etc/apt/sources.list)
[ -n "$MIRROR" ] || die "no Debian mirror in the apt sources"

# systemd-standalone-sysusers satisfies docker.io's need for a sysusers without systemd, whose
# udev would also go into the initramfs (13 s more to boot under TCG).
BASE_PKGS="kmod iproute2 procps util-linux e2fsprogs ca-certificates systemd-standalone-sysusers"
ENGINE_PKGS="docker.io docker-cli containerd runc tini"
# Modules the guest needs from its kernel, in the initramfs (to mount the root disk) and after.
INITRD_MODULES="virtio_pci virtio_blk ext4"
# Whole driver trees no guest uses: pruned to keep the image small (the rest stays for dockerd).
PRUNE="sound drivers/gpu drivers/media drivers/net/wireless drivers/infiniband drivers/staging
  drivers/bluetooth net/bluetooth net/wireless net/mac80211 drivers/iio drivers/hid drivers/usb
  drivers/input drivers/scsi drivers/ata drivers/net/ethernet drivers/isdn drivers/nfc
  drivers/platform drivers/mtd drivers/hwmon drivers/thunderbolt"
T=$OUT/tree
BASE_RECIPE="v1 suite=$SUITE base=$BASE_PKGS initrd=$INITRD_MODULES"
RECIPE="$BASE_RECIPE engine=$ENGINE_SUITE engine-pkgs=$ENGINE_PKGS prune=$(echo $PRUNE)"

mounted=()
cleanup_mounts() {
  local i
  for ((i = ${#mounted[@]} - 1; i >= 0; i--)); do umount -l "${mounted[i]}" 2>/dev/null || true; done
  mounted=()
}
trap cleanup_mounts EXIT
chroot_mounts() {
  local m
  for m in proc sys dev dev/pts; do
    mkdir -p "$T/$m"
    case $m in
      proc) mount -t proc proc "$T/proc" ;;
      sys) mount -t sysfs sys "$T/sys" ;;
      dev) mount --bind /dev "$T/dev" ;;
      dev/pts) mount -t devpts devpts "$T/dev/pts" ;;
    esac
    mounted+=("$T/$m")
  done
}
# reset_tree: empty the tree, never through a mount left in it (a bind of /dev!).
reset_tree() {
  local m
  for m in dev/pts dev sys proc; do umount -l "$T/$m" 2>/dev/null || true; done
  ! awk -v t="$T/" 'index($2 "/", t) == 1' /proc/mounts | grep -q . || die "mounts left under $T: not removing it"
  rm -rf "$T"; mkdir -p "$T"
}
in_chroot() { chroot "$T" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin DEBIAN_FRONTEND=noninteractive "$@"; }

# 1. The tree (minutes; cached): the base system and kernel, then the engine over it.
if [ ! -f "$T/.done" ] || [ "$(cat "$T/.done")" != "$RECIPE" ]; then
  t0=$(date +%s)
  for m in dev/pts dev sys proc; do umount -l "$T/$m" 2>/dev/null || true; done
  if [ ! -f "$T/.base" ] || [ "$(cat "$T/.base")" != "$BASE_RECIPE" ]; then
    reset_tree
    script=$SUITE; [ -e "/usr/share/debootstrap/scripts/$SUITE" ] || script=sid
    log "debootstrap $SUITE (minbase + $BASE_PKGS) from $MIRROR"
    timeout 1200 debootstrap --variant=minbase --include="$(echo $BASE_PKGS | tr ' ' ,)" "$SUITE" "$T" "$MIRROR" "$script" \
      >"$OUT/debootstrap.log" 2>&1 || die "debootstrap $SUITE failed: $(tail -n 3 "$OUT/debootstrap.log")"
    chroot_mounts
    # A small initramfs with only what mounts the root disk.
    mkdir -p "$T/etc/initramfs-tools/conf.d"
    echo "MODULES=list" >"$T/etc/initramfs-tools/conf.d/lab.conf"
    echo "COMPRESS=gzip" >>"$T/etc/initramfs-tools/conf.d/lab.conf"
    printf '%s\n' $INITRD_MODULES >>"$T/etc/initramfs-tools/modules"
    log "installing the $SUITE kernel"
    in_chroot apt-get -q -y install --no-install-recommends linux-image-amd64 initramfs-tools >"$OUT/apt.log" 2>&1 \
      || die "kernel install failed: $(tail -n 5 "$OUT/apt.log")"
    cleanup_mounts
    echo "$BASE_RECIPE" >"$T/.base"
  fi
  chroot_mounts
  # No service starts in the chroot.
  printf '#!/bin/sh\nexit 101\n' >"$T/usr/sbin/policy-rc.d"; chmod 755 "$T/usr/sbin/policy-rc.d"
  ENGINE_SEL=$ENGINE_PKGS
  if [ "$ENGINE_SUITE" != "$SUITE" ]; then
    echo "deb $MIRROR $ENGINE_SUITE main" >"$T/etc/apt/sources.list.d/engine.list"
    printf 'Package: *\nPin: release n=%s\nPin-Priority: 100\n' "$ENGINE_SUITE" >"$T/etc/apt/preferences.d/engine"
    ENGINE_SEL=$(for p in $ENGINE_PKGS tini-static; do printf '%s/%s ' "$p" "$ENGINE_SUITE"; done)
  fi
  # The mirror may serve Release files past their Valid-Until (this host's apt is set up alike).
  timeout 600 chroot "$T" apt-get -q -o Acquire::Check-Valid-Until=false update >>"$OUT/apt.log" 2>&1 \
    || die "apt-get update failed: $(tail -n 3 "$OUT/apt.log")"
  log "installing $ENGINE_SEL"
  in_chroot apt-get -q -y install --no-install-recommends $ENGINE_SEL iptables >>"$OUT/apt.log" 2>&1 \
    || die "engine install failed: $(tail -n 5 "$OUT/apt.log")"
  in_chroot update-initramfs -u -k all >>"$OUT/apt.log" 2>&1 || die "update-initramfs failed: $(tail -n 5 "$OUT/apt.log")"
  in_chroot dpkg-query -W -f='${Package} ${Version}\n' docker.io containerd runc tini linux-image-amd64 >"$OUT/versions"
  rm -f "$T/etc/apt/sources.list.d/engine.list" "$T/etc/apt/preferences.d/engine" "$T/usr/sbin/policy-rc.d"
  in_chroot apt-get clean
  cleanup_mounts
  rm -rf "$T"/var/lib/apt/lists/* "$T"/usr/share/{doc,man,info,locale}/* "$T"/var/cache/debconf/*-old
  KV=$(ls "$T/lib/modules" | sort -V | tail -1)
  for d in $PRUNE; do rm -rf "$T/lib/modules/$KV/kernel/$d"; done
  depmod -b "$T" "$KV"
  echo "$RECIPE" >"$T/.done"
  log "tree built in $(( $(date +%s) - t0 ))s: $(du -sh "$T" | cut -f1); $(tr '\n' ';' <"$OUT/versions")"
fi
KV=$(ls "$T/lib/modules" | sort -V | tail -1)
[ -n "$KV" ] && [ -f "$T/boot/vmlinuz-$KV" ] && [ -f "$T/boot/initrd.img-$KV" ] || die "no kernel or initrd in $T/boot"

# 2. What goes over the tree: the init, the agent (static Go), a busybox image for test containers.
log "building the lab agent"
CGO_ENABLED=0 $GO build -trimpath -o "$OUT/lab-agent" ./lab/agent
install -D -m 755 lab/dockerguest/init.sh "$T/sbin/lab-docker-init"
install -D -m 644 lab/guest/lib.sh "$T/lib/lab/guest.sh"
install -D -m 755 lab/dockerguest/dockerd.sh "$T/usr/local/sbin/lab-dockerd"
install -D -m 644 lab/dockerguest/containerd.toml "$T/etc/lab/containerd.toml"
install -D -m 755 "$OUT/lab-agent" "$T/usr/local/bin/lab-agent"
BB=$OUT/busybox; rm -rf "$BB"; mkdir -p "$BB"/{bin,etc,tmp,proc,sys,dev,root,data}
cp /bin/busybox "$BB/bin/busybox"
for a in $("$BB/bin/busybox" --list); do [ "$a" = busybox ] || ln -sf busybox "$BB/bin/$a"; done
echo 'root:x:0:0:root:/root:/bin/sh' >"$BB/etc/passwd"; echo 'root:x:0:' >"$BB/etc/group"
mkdir -p "$T/opt/lab"
tar -C "$BB" --sort=name --mtime=@0 --owner=0 --group=0 -cf "$T/opt/lab/busybox.tar" .
rm -rf "$BB"
echo lab-docker >"$T/etc/hostname"
sum=$( (echo "$RECIPE"; sha256sum "$T/sbin/lab-docker-init" "$T/lib/lab/guest.sh" "$T/usr/local/sbin/lab-dockerd" "$T/etc/lab/containerd.toml" "$T/usr/local/bin/lab-agent" "$T/opt/lab/busybox.tar" | cut -d' ' -f1) | sha256sum | cut -d' ' -f1)
if [ ! -f "$OUT/root.img" ] || [ "$(cat "$OUT/root.sum" 2>/dev/null)" != "$sum" ]; then
  t0=$(date +%s)
  rm -f "$OUT/root.img.new"
  truncate -s 4G "$OUT/root.img.new"
  mkfs.ext4 -q -F -L lab-docker -d "$T" "$OUT/root.img.new" || die "mkfs.ext4 -d failed"
  mv "$OUT/root.img.new" "$OUT/root.img"
  echo "$sum" >"$OUT/root.sum"
  log "root.img written in $(( $(date +%s) - t0 ))s: $(du -h "$OUT/root.img" | cut -f1) used of 4G"
fi
cp "$T/boot/vmlinuz-$KV" "$OUT/vmlinuz"
cp "$T/boot/initrd.img-$KV" "$OUT/initrd.img"

# 3. The managed plugin, built by scripts/plugin-build.sh against the host's lab dockerd (a plugin
# of its own, ceph-guest:latest, left disabled there), as a tar on a raw disk for the guest.
if [ "${LAB_DOCKER_PLUGIN:-1}" = 1 ]; then
  PLUGIN=ceph-guest:latest ENABLE=0 scripts/plugin-build.sh
  B=$LAB_DIR/plugin-build/ceph-guest/plugin
  # The guests' dockerd can grant every capability the shipped config.json asks for (the host's
  # may lack CAP_SYS_RESOURCE, which the build above then dropped): the guests get it as shipped,
  # and config-csi.json beside it for the CSI plugin made from the same rootfs.
  cp plugin/config.json "$B/config.json"
  cp plugin/config-csi.json "$B/config-csi.json"
  tar -C "$B" --sort=name --mtime=@0 --owner=0 --group=0 -cf "$OUT/plugin.tar.new" config.json config-csi.json rootfs
  # Kept as it was when the build is the same: the tests cache a guest image made from it.
  if cmp -s "$OUT/plugin.tar.new" "$OUT/plugin.tar"; then rm -f "$OUT/plugin.tar.new"; else mv "$OUT/plugin.tar.new" "$OUT/plugin.tar"; fi
  log "plugin.tar: $(du -h "$OUT/plugin.tar" | cut -f1)"
  # The upgrade test's newer build: the same plugin with one file added, pushed to a registry
  # whose storage is kept in $OUT/registry; the test serves it on the host's loopback, which the
  # guests reach, and upgrades the guest's plugin from it.
  psum=$(sha256sum "$OUT/plugin.tar" | cut -d' ' -f1)
  if [ "$(cat "$OUT/registry/.plugin" 2>/dev/null)" != "$psum" ]; then
    R=$OUT/registry.new; rm -rf "$R" "$B.upgrade"; mkdir -p "$R/data"
    cp -a "$B" "$B.upgrade"
    rm -f "$B.upgrade/config-csi.json"
    echo "upgrade of $psum" >"$B.upgrade/rootfs/etc/ceph-docker-plugin-upgrade"
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    printf 'version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: %s\nhttp:\n  addr: 127.0.0.1:%s\n' "$R/data" "$port" >"$R/config.yml"
    docker-registry serve "$R/config.yml" >"$R/registry.log" 2>&1 &
    reg=$!
    for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
    ref=127.0.0.1:$port/ceph-guest-upgrade:latest
    docker_env
    docker plugin rm -f "$ref" >/dev/null 2>&1 || true
    ok=1
    docker plugin create "$ref" "$B.upgrade" >/dev/null && docker plugin push "$ref" >/dev/null || ok=0
    docker plugin rm -f "$ref" >/dev/null 2>&1 || true
    kill "$reg"; wait "$reg" 2>/dev/null || true
    rm -rf "$B.upgrade"
    [ $ok = 1 ] || die "could not push the upgrade build to the registry (see $R/registry.log)"
    echo "$psum" >"$R/.plugin"
    rm -rf "$OUT/registry"; mv "$R" "$OUT/registry"
    log "upgrade build pushed to $OUT/registry (ceph-guest-upgrade:latest)"
  fi
fi
cat >"$OUT/env" <<ENV
LAB_DOCKER_KERNEL=$OUT/vmlinuz
LAB_DOCKER_INITRD=$OUT/initrd.img
LAB_DOCKER_ROOT=$OUT/root.img
LAB_DOCKER_PLUGIN_TAR=$OUT/plugin.tar
LAB_DOCKER_REGISTRY=$OUT/registry/data
LAB_DOCKER_VERSIONS="$(tr '\n' ';' <"$OUT/versions")"
ENV
log "docker guest: kernel $KV, $(tr '\n' ';' <"$OUT/versions"): $OUT/env"
