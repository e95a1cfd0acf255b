#!/usr/bin/env bash
# Build what the krbd lab (make lab) boots: Debian's stock kernel, unpacked from its .deb into
# $LAB_DIR/lab/kernel (never installed on this host), and an initramfs with busybox, the modules
# krbd needs, the plugin binary with every shared library it loads, the tools it runs (blkid,
# mkfs.ext4, e2fsck) and the static lab agent (lab/agent). No key or cluster address goes into it:
# the tests upload ceph.conf and the keyring into each guest after boot.
# Idempotent; the kernel is fetched once, the binaries and the initramfs are rebuilt every run.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
need_root
cd "$(dirname "$0")/.."
export PATH=$PATH:/usr/local/go/bin
GO=${GO:-go}
GOTAGS=${GOTAGS:-pacific}
# LAB_OUT: where the build goes (default $LAB_DIR/lab); another one lets a second checkout build its
# own guests while the first runs.
OUT=${LAB_OUT:-$LAB_DIR/lab}
mkdir -p "$OUT"
apt_ensure qemu-system-x86 busybox-static cpio kmod e2fsprogs util-linux

# 1. The kernel: the package linux-image-amd64 depends on, downloaded and unpacked (no postinst),
# then pruned to vmlinuz and the modules the guests load (400 MB -> a few MB).
MODULES="virtio_pci virtio_net ext4 rbd crc32c_generic crc32c_intel"
KDIR=$OUT/kernel
STAMP="modules: $MODULES"
if [ ! -f "$KDIR/.done" ] || [ "$(cat "$KDIR/.done")" != "$STAMP" ]; then
  kpkg() { apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/{print $2; exit}'; }
  PKG=$(kpkg)
  if [ -z "$PKG" ]; then
    timeout 300 apt-get -o DPkg::Lock::Timeout=300 update -q >/dev/null || true
    PKG=$(kpkg)
  fi
  [ -n "$PKG" ] || die "apt knows no linux-image-amd64 (is a Debian mirror configured?)"
  log "fetching $PKG"
  rm -rf "$KDIR" "$OUT/deb"; mkdir -p "$KDIR" "$OUT/deb"
  chown _apt "$OUT/deb" 2>/dev/null || true
  if ! (cd "$OUT/deb" && timeout 600 apt-get download -q "$PKG" >/dev/null); then
    # The mirror may have moved on from the version in stale package lists.
    timeout 300 apt-get -o DPkg::Lock::Timeout=300 update -q >/dev/null || true
    PKG=$(kpkg)
    (cd "$OUT/deb" && timeout 600 apt-get download -q "$PKG" >/dev/null) || die "apt-get download $PKG failed"
  fi
  dpkg-deb -x "$OUT"/deb/"$PKG"_*.deb "$KDIR"
  rm -rf "$OUT/deb" "$KDIR/usr"
  KV=$(ls "$KDIR/lib/modules" | grep -- '-amd64$' | sort -V | tail -1)
  depmod -b "$KDIR" "$KV"
  keep=$(for m in $MODULES; do modprobe -d "$KDIR" --show-depends -S "$KV" "$m"; done | awk '$1=="insmod"{print $2}' | sort -u)
  [ -n "$keep" ] || die "modprobe finds none of $MODULES in $PKG"
  find "$KDIR/lib/modules/$KV/kernel" -name '*.ko*' | sort | comm -23 - <(echo "$keep") | xargs -r rm -f
  depmod -b "$KDIR" "$KV"
  echo "$STAMP" >"$KDIR/.done"
  log "kernel $KV unpacked and pruned: $(du -sh "$KDIR" | cut -f1)"
fi
KV=$(ls "$KDIR/lib/modules" | grep -- '-amd64$' | sort -V | tail -1)
[ -n "$KV" ] || die "no kernel modules in $KDIR"

# 2. The binaries.
log "building the plugin and the lab agent"
$GO build -tags "$GOTAGS" -o "$OUT/ceph-docker-plugin" ./cmd/ceph-docker-plugin
CGO_ENABLED=0 $GO build -o "$OUT/lab-agent" ./lab/agent

# 3. The root filesystem.
R=$OUT/root
rm -rf "$R"
mkdir -p "$R"/{bin,sbin,usr/bin,usr/sbin,proc,sys,dev,tmp,mnt,run,etc/ceph,var/log,lib64,lib/x86_64-linux-gnu,lib/modules/$KV}
cp /bin/busybox "$R/bin/busybox"
for a in $(/bin/busybox --list); do [ "$a" = busybox ] || ln -sf busybox "$R/bin/$a"; done
ln -sf /bin/busybox "$R/sbin/modprobe"   # the kernel's request_module runs /sbin/modprobe

for m in $MODULES; do
  modprobe -d "$KDIR" --show-depends -S "$KV" "$m" | awk '$1=="insmod"{print $2}'
done | sort -u | while read -r ko; do
  ko=${ko#"${KDIR%/}"}
  mkdir -p "$R$(dirname "$ko")"; cp "$KDIR/$ko" "$R$ko"
done
cp "$KDIR"/lib/modules/"$KV"/modules.{order,builtin,builtin.modinfo} "$R/lib/modules/$KV/" 2>/dev/null || true
depmod -b "$R" "$KV"

# copy_bin SRC DEST: a dynamic binary and every library ldd resolves for it.
copy_bin() {
  install -D -m 755 "$1" "$R$2"
  local l
  for l in $(ldd "$1" | grep -o '/[^ ]*\.so[^ ]*'); do
    [ -e "$R$l" ] || install -D -m 755 "$(readlink -f "$l")" "$R$l"
  done
}
copy_bin "$OUT/ceph-docker-plugin" /usr/bin/ceph-docker-plugin
# What the plugin runs (driver/volfs): util-linux blkid (busybox's lacks -p -o export) and mkfs.ext4;
# e2fsck and dumpe2fs for the tests' checks.
copy_bin /sbin/blkid /sbin/blkid
copy_bin /sbin/mke2fs /sbin/mke2fs
ln -sf mke2fs "$R/sbin/mkfs.ext4"
copy_bin /sbin/e2fsck /sbin/e2fsck
copy_bin /sbin/dumpe2fs /sbin/dumpe2fs
install -m 755 "$OUT/lab-agent" "$R/bin/lab-agent"
install -m 755 lab/guest/init.sh "$R/init"
install -D -m 644 lab/guest/lib.sh "$R/lib/lab/guest.sh"
echo "root:x:0:0:root:/:/bin/sh" >"$R/etc/passwd"
echo "root:x:0:" >"$R/etc/group"

(cd "$R" && find . | cpio -o -H newc --quiet | gzip -1) >"$OUT/initramfs.cpio.gz.new"
mv "$OUT/initramfs.cpio.gz.new" "$OUT/initramfs.cpio.gz"
cp "$KDIR/boot/vmlinuz-$KV" "$OUT/vmlinuz"
rm -rf "$R"
cat >"$OUT/env" <<ENV
LAB_KERNEL=$OUT/vmlinuz
LAB_INITRD=$OUT/initramfs.cpio.gz
LAB_KERNEL_VERSION=$KV
ENV
log "kernel $KV, initramfs $(du -h "$OUT/initramfs.cpio.gz" | cut -f1): $OUT/env"
