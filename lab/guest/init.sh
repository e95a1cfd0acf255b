#!/bin/sh
# /init of a krbd lab guest (Debian's stock kernel under QEMU): load the modules krbd needs, bring
# up slirp networking so that the host's Ceph on 127.0.0.1 is reachable, then run the lab agent,
# which the host-side tests drive over a forwarded port. Powers off when the agent ends.
# Kernel command line: lab_node=<hostname> (unknown key=value words become init's environment).
export PATH=/sbin:/usr/sbin:/bin:/usr/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mkdir -p /dev/pts /run /tmp /mnt /var/log /etc/ceph
mount -t tmpfs -o mode=755 tmpfs /run
mount -t tmpfs tmpfs /tmp
mount -t tmpfs tmpfs /mnt
echo /sbin/modprobe > /proc/sys/kernel/modprobe
. /lib/lab/guest.sh
for m in virtio_pci virtio_net crc32c_intel crc32c_generic ext4 rbd; do modprobe "$m" 2>/dev/null || t "modprobe $m failed"; done
hostname "${lab_node:-lab-guest}"
slirp_net
t "kernel $(uname -r), node $(hostname), rbd: $([ -e /sys/bus/rbd/add_single_major ] && echo yes || echo NO)"
t "LAB_AGENT_START"
/bin/lab-agent -listen :8080
t "lab-agent exited ($?)"
poweroff -f
