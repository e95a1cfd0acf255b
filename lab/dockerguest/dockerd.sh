#!/bin/sh
# /usr/local/sbin/lab-dockerd start|stop: the docker guest's dockerd (containerd runs apart).
# No bridge and no iptables: test containers run with --network none, and the managed plugin uses
# the guest's own network (the route to the host's 127.0.0.1, see lab-docker-init).
# stop sends SIGTERM (dockerd stops its containers and plugins) and waits up to 60 s.
set -eu
pidf=/run/lab-dockerd.pid
running() { [ -f $pidf ] && [ -d /proc/"$(cat $pidf)" ] && ! grep -q '^State:.*Z' /proc/"$(cat $pidf)"/status 2>/dev/null; }
case ${1:-} in
start)
  running && exit 0
  setsid dockerd --containerd=/run/containerd/containerd.sock --bridge=none --iptables=false --ip6tables=false \
    --storage-driver=overlay2 >>/var/log/dockerd.log 2>&1 </dev/null &
  echo $! >$pidf
  ;;
stop)
  running || exit 0
  kill "$(cat $pidf)"
  i=0
  while running; do
    i=$((i + 1))
    [ $i -le 600 ] || { echo "dockerd did not stop within 60 s" >&2; exit 1; }
    sleep 0.1
  done
  ;;
*) echo "usage: lab-dockerd start|stop" >&2; exit 2 ;;
esac
