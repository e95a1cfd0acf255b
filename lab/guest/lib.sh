# Sourced by the init of each lab guest (lab/guest/init.sh, lab/dockerguest/init.sh), installed
# as /lib/lab/guest.sh by scripts/lab-build.sh and scripts/lab-docker-build.sh.

# t logs a line on the console, stamped with the guest's uptime.
t() { echo "[guest $(cut -d' ' -f1 /proc/uptime)s] $*"; }

# slirp_net brings up eth0 on QEMU's user network so that the host's Ceph on 127.0.0.1 is
# reachable. The cluster advertises 127.0.0.1: lo stays down so that 127/8 is not local here,
# 127/8 is allowed on eth0 and routed to slirp's gateway, which connects to the host's 127.0.0.1.
slirp_net() {
  ip link set eth0 up
  ip addr add 10.0.2.15/24 dev eth0
  ip route add default via 10.0.2.2
  sysctl -qw net.ipv4.conf.all.route_localnet=1 net.ipv4.conf.eth0.route_localnet=1
  ip route add 127.0.0.0/8 via 10.0.2.2 dev eth0 || t "127/8 route failed"
}
