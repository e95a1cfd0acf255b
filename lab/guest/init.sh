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
t() { echo "[guest $(cut -d' ' -f1 /proc/uptime)s] $*"; }
for m in virtio_pci virtio_net crc32c_intel crc32c_generic ext4 rbd; do modprobe "$m" 2>/dev/null || t "modprobe $m failed"; done
hostname "${lab_node:-lab-guest}"

# The cluster advertises 127.0.0.1: keep lo down so that 127/8 is not local here, allow 127/8 on
# eth0 and route it to slirp's gateway, which connects to the host's 127.0.0.1.
ip link set eth0 up
ip addr add 10.0.2.15/24 dev eth0
ip route add default via 10.0.2.2
sysctl -qw net.ipv4.conf.all.route_localnet=1 net.ipv4.conf.eth0.route_localnet=1
ip route add 127.0.0.0/8 via 10.0.2.2 dev eth0 || t "127/8 route failed"
t "kernel $(uname -r), node $(hostname), rbd: $([ -e /sys/bus/rbd/add_single_major ] && echo yes || echo NO)"
t "LAB_AGENT_START"
/bin/lab-agent -listen :8080
t "lab-agent exited ($?)"
poweroff -f
