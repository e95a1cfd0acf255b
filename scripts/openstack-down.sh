#!/usr/bin/env bash
# Stop what openstack-up.sh started (by the pids it recorded), and its RabbitMQ.
#   openstack-down.sh --purge   also delete the state (databases, keys, logs)
set -uo pipefail
. "$(dirname "$0")/lib.sh"
ST=$LAB_DIR/openstack/state
ETC=$LAB_DIR/openstack/etc
. "$(dirname "$0")/openstack/procs.sh"
for n in cinder-volume cinder-scheduler cinder-api nova-stub keystone mariadb; do
  f=$ST/run/$n.pid; [ -f "$f" ] || continue
  p=$(cat "$f")
  if os_alive "$n"; then
    kill -TERM -- "-$p" 2>/dev/null || kill -TERM "$p"
    for _ in $(seq 1 40); do kill -0 "$p" 2>/dev/null || break; sleep 0.25; done
    kill -0 "$p" 2>/dev/null && kill -KILL -- "-$p" 2>/dev/null
    log "stopped $n"
  fi
  rm -f "$f"
done
if os_alive rabbitmq; then
  timeout 60 rabbitmqctl -q stop >/dev/null 2>&1 || true
  log "stopped rabbitmq"
fi
rm -f "$ST/run/rabbitmq.pid"
if [ "${1:-}" = --purge ]; then rm -rf "$LAB_DIR/openstack"; log "purged $LAB_DIR/openstack"; fi
true
