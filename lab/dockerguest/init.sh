#!/bin/sh
# /sbin/lab-docker-init: PID 1 of the docker guest of the krbd lab (scripts/lab-docker-build.sh),
# started by the initramfs (init=/sbin/lab-docker-init) on the root disk, booted with snapshot=on.
# Mounts what dockerd needs, brings up slirp networking so that the host's Ceph on 127.0.0.1 is
# reachable (slirp_net of lab/guest/lib.sh, shared with the krbd guests), starts the lab agent,
# then containerd and dockerd. The rbd module is not loaded here: the managed plugin loads it
# (modprobe, with the guest's /lib/modules).
# Kernel command line: lab_node=<hostname>. Powers off when the agent ends.
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
. /lib/lab/guest.sh
mountpoint -q /proc || mount -t proc proc /proc
mountpoint -q /sys || mount -t sysfs sys /sys
mountpoint -q /dev || mount -t devtmpfs dev /dev
mkdir -p /dev/pts /dev/shm /run /tmp
mountpoint -q /dev/pts || mount -t devpts -o gid=5,mode=620,ptmxmode=666 devpts /dev/pts
mountpoint -q /dev/shm || mount -t tmpfs -o mode=1777 shm /dev/shm
mountpoint -q /run || mount -t tmpfs -o mode=755 tmpfs /run
mount -t tmpfs -o mode=1777 tmpfs /tmp
mount -t cgroup2 cgroup2 /sys/fs/cgroup
mount -o remount,rw /
echo /sbin/modprobe >/proc/sys/kernel/modprobe
node=lab-docker
for w in $(cat /proc/cmdline); do case $w in lab_node=*) node=${w#lab_node=} ;; esac; done
echo "$node" >/proc/sys/kernel/hostname
echo "127.0.1.1 $node" >/etc/hosts
for m in virtio_net overlay; do modprobe "$m" 2>/dev/null || t "modprobe $m failed"; done
slirp_net
t "kernel $(uname -r), node $node, rbd loaded: $([ -e /sys/bus/rbd ] && echo yes || echo no)"

/usr/local/bin/lab-agent -listen :8080 >/var/log/lab-agent.log 2>&1 &
agent=$!
t "LAB_AGENT_START"
# Docker on the guest: no bridge, no iptables (the test containers run with --network none; the
# plugin uses the host network, which is the route trick above).
containerd -c /etc/lab/containerd.toml >/var/log/containerd.log 2>&1 &
i=0
while [ ! -S /run/containerd/containerd.sock ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i + 1)); done
t "containerd up"
lab-dockerd start
t "dockerd started"
wait $agent
t "lab-agent exited ($?)"
sync
echo 1 >/proc/sys/kernel/sysrq
echo o >/proc/sysrq-trigger
