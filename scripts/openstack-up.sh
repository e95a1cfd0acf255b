#!/usr/bin/env bash
# Stand up real Keystone (Zed) + Cinder (Zed) from Debian's packages on 127.0.0.1, with Cinder's
# RBD backend on the lab Ceph (scripts/ceph-up.sh): MariaDB and RabbitMQ started by hand,
# keystone and cinder-api under uwsgi, cinder-scheduler and cinder-volume as plain processes, and a
# 404-only "Nova" so that Cinder can delete attachments. Installs what is missing (about 3.5 min
# the first time). Idempotent; state under $LAB_DIR/openstack; every wait bounded.
# Writes $LAB_DIR/openstack/env: OS_* for the demo user (project demo, role member).
set -eEuo pipefail
. "$(dirname "$0")/lib.sh"
trap note_failure ERR
need_root
HERE=$(cd "$(dirname "$0")" && pwd)
OSL=$LAB_DIR/openstack
ST=$OSL/state
ETC=$OSL/etc
PW=${OS_LAB_PASSWORD:-secret}
KS=http://127.0.0.1:5000/v3
mkdir -p "$ST"/{log,run,cinder,lock} "$ETC"

"$HERE/ceph-up.sh"
. "$CEPH_LAB/env"

if ! dpkg-query -W -f='${Status}' cinder-volume 2>/dev/null | grep -q 'install ok installed'; then
  debconf-set-selections <<'SEL'
keystone keystone/configure_db boolean false
keystone keystone/create-admin-tenant boolean false
keystone keystone/register-endpoint boolean false
cinder-common cinder/configure_db boolean false
cinder-common cinder/configure_rabbit boolean false
cinder-common cinder/configure_ksat boolean false
cinder-common cinder/ksat-create-service-user boolean false
cinder-api cinder/configure_api-endpoint boolean false
SEL
fi
# No service may start during the install (no systemd here anyway).
printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d
apt_ensure keystone cinder-api cinder-scheduler cinder-volume rabbitmq-server python3-openstackclient \
  python3-rbd python3-rados mariadb-server uwsgi uwsgi-plugin-python3 curl
rm -f /usr/sbin/policy-rc.d

. "$HERE/openstack/procs.sh"
alive() { os_alive "$1"; }
start() { local n=$1; shift; alive "$n" && return 0
  setsid "$@" >>"$ST/log/$n.out" 2>&1 </dev/null & echo $! >"$ST/run/$n.pid"; }
http_ok() { curl -fs -o /dev/null "$1"; }
fail_logs() { for f in "$ST"/log/*.out "$ST"/log/*.log; do if [ -f "$f" ]; then echo "--- $f" >&2; tail -n 8 "$f" >&2; fi; done; }
trap 'rc=$?; if [ $rc -ne 0 ]; then fail_logs || true; log "FAILED (exit $rc) at ${FAILED_AT:-an unknown step}"; fi; exit $rc' EXIT

# ---- Cinder's own pool and cephx user on the lab Ceph; the hosts' user (client.docker) may map
# its images too (Cinder returns no key: hosts map with their own).
CPOOL=cinder
CEPH_A=(timeout 30 ceph -c "$CEPH_CONF" -n client.admin -k "$CEPH_ADMIN_KEYRING")
if ! "${CEPH_A[@]}" osd pool ls | grep -qx "$CPOOL"; then
  "${CEPH_A[@]}" osd pool create "$CPOOL" 16 16 >/dev/null
  "${CEPH_A[@]}" osd pool set "$CPOOL" size 1 --yes-i-really-mean-it >/dev/null
  timeout 60 rbd -c "$CEPH_CONF" -n client.admin -k "$CEPH_ADMIN_KEYRING" pool init "$CPOOL"
fi
if ! "${CEPH_A[@]}" auth get client.$CEPH_USER 2>/dev/null | grep -q "pool=$CPOOL"; then
  "${CEPH_A[@]}" auth caps client.$CEPH_USER mon 'profile rbd' \
    osd "profile rbd pool=$RBD_POOL, profile rbd pool=$CPOOL" mgr "profile rbd pool=$RBD_POOL, profile rbd pool=$CPOOL" >/dev/null
fi
CINDER_KR=$ETC/ceph.client.cinder.keyring
if [ ! -s "$CINDER_KR" ]; then
  timeout 30 ceph -c "$CEPH_CONF" -n client.admin -k "$CEPH_ADMIN_KEYRING" auth get-or-create client.cinder \
    mon 'profile rbd' osd "profile rbd pool=$CPOOL" mgr "profile rbd pool=$CPOOL" -o "$CINDER_KR"
fi
if ! "${CEPH_A[@]}" auth get client.cinder 2>/dev/null | grep -q "osd = \"profile rbd pool=$CPOOL\""; then
  "${CEPH_A[@]}" auth caps client.cinder mon 'profile rbd' osd "profile rbd pool=$CPOOL" mgr "profile rbd pool=$CPOOL" >/dev/null
fi
{ grep -v '^\[client\]' "$CEPH_LAB/client.conf"; printf '[client.cinder]\nkeyring = %s\n' "$CINDER_KR"; } >"$ETC/ceph.conf"

# ---- RabbitMQ on loopback
cat >/etc/rabbitmq/rabbitmq-env.conf <<'RENV'
NODENAME=rabbit@localhost
NODE_IP_ADDRESS=127.0.0.1
NODE_PORT=5672
export ERL_EPMD_ADDRESS=127.0.0.1
SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}"
RENV
rabbit_up() { timeout 2 bash -c 'echo > /dev/tcp/127.0.0.1/5672'; }
rabbit_up 2>/dev/null || start rabbitmq /usr/sbin/rabbitmq-server

# ---- MariaDB, throwaway
SOCK=$ST/mysqld.sock
cat >"$ETC/my.cnf" <<MY
[mysqld]
datadir=$ST/mysql
socket=$SOCK
bind-address=127.0.0.1
port=3306
user=mysql
performance_schema=OFF
innodb_buffer_pool_size=64M
innodb_log_file_size=16M
innodb_flush_log_at_trx_commit=0
innodb_doublewrite=0
skip-log-bin
skip-name-resolve
max_connections=200
character-set-server=utf8mb4
collation-server=utf8mb4_general_ci
MY
chown mysql:mysql "$ST"
[ -d "$ST/mysql" ] || mariadb-install-db --defaults-file="$ETC/my.cnf" --skip-test-db >"$ST/log/mariadb-install.out" 2>&1
start mariadb mariadbd --defaults-file="$ETC/my.cnf"
db_up() { mariadb-admin --socket="$SOCK" ping; }
wait_until 60 "MariaDB" db_up
mariadb --socket="$SOCK" -uroot <<SQL
CREATE DATABASE IF NOT EXISTS keystone; CREATE DATABASE IF NOT EXISTS cinder;
CREATE USER IF NOT EXISTS 'os'@'127.0.0.1' IDENTIFIED BY '$PW';
GRANT ALL ON keystone.* TO 'os'@'127.0.0.1'; GRANT ALL ON cinder.* TO 'os'@'127.0.0.1';
SQL
KS_DB="mysql+pymysql://os:$PW@127.0.0.1/keystone?charset=utf8mb4"
CI_DB="mysql+pymysql://os:$PW@127.0.0.1/cinder?charset=utf8mb4"
log "mariadb up"

# ---- Cinder config (a changed config restarts the running Cinder services)
cat >"$ETC/cinder.conf.new" <<CONF
[DEFAULT]
host = lab
my_ip = 127.0.0.1
state_path = $ST/cinder
log_dir = $ST/log
transport_url = rabbit://guest:guest@127.0.0.1:5672/
auth_strategy = keystone
api_paste_config = /etc/cinder/api-paste.ini
rootwrap_config = /etc/cinder/rootwrap.conf
osapi_volume_listen = 127.0.0.1
osapi_volume_listen_port = 8776
osapi_volume_workers = 1
enabled_backends = rbd
default_volume_type = rbd
[database]
connection = $CI_DB
[oslo_concurrency]
lock_path = $ST/lock
[keystone_authtoken]
www_authenticate_uri = http://127.0.0.1:5000/
auth_url = http://127.0.0.1:5000/
auth_type = password
user_domain_name = Default
project_domain_name = Default
project_name = service
username = cinder
password = $PW
[coordination]
backend_url = file://$ST/lock
[rbd]
volume_driver = cinder.volume.drivers.rbd.RBDDriver
volume_backend_name = rbd
rbd_pool = $CPOOL
rbd_user = cinder
rbd_ceph_conf = $ETC/ceph.conf
report_discard_supported = true
CONF
if ! cmp -s "$ETC/cinder.conf.new" "$ETC/cinder.conf"; then
  for n in cinder-volume cinder-scheduler cinder-api; do
    if alive "$n"; then kill -TERM -- "-$(cat "$ST/run/$n.pid")" 2>/dev/null; log "config changed: restarting $n"; fi
  done
  for n in cinder-volume cinder-scheduler cinder-api; do
    for _ in $(seq 40); do alive "$n" || break; sleep 0.25; done
    alive "$n" && kill -KILL -- "-$(cat "$ST/run/$n.pid")" 2>/dev/null
    rm -f "$ST/run/$n.pid"
  done
fi
mv "$ETC/cinder.conf.new" "$ETC/cinder.conf"
CM="cinder-manage --config-file $ETC/cinder.conf"
if [ -f "$ST/cinder.synced" ]; then true & else { timeout 300 $CM db sync >"$ST/log/cinder-dbsync.out" 2>&1 && touch "$ST/cinder.synced"; } & fi
dbsync=$!

# ---- Keystone
cat >"$ETC/keystone.conf" <<CONF
[DEFAULT]
log_file = $ST/log/keystone.log
[database]
connection = $KS_DB
[fernet_tokens]
key_repository = $ST/fernet-keys
[credential]
key_repository = $ST/credential-keys
[token]
provider = fernet
expiration = ${OS_TOKEN_EXPIRATION:-86400}
[cache]
enabled = true
backend = dogpile.cache.memory
[identity]
password_hash_rounds = 4
CONF
export OS_KEYSTONE_CONFIG_FILES=$ETC/keystone.conf
KM="keystone-manage --config-file $ETC/keystone.conf"
if [ ! -f "$ST/keystone.synced" ]; then
  timeout 300 $KM db_sync & a=$!
  timeout 120 $KM fernet_setup --keystone-user root --keystone-group root & b=$!
  timeout 120 $KM credential_setup --keystone-user root --keystone-group root & c=$!
  wait $a; wait $b; wait $c
  timeout 120 $KM bootstrap --bootstrap-password "$PW" --bootstrap-region-id RegionOne \
    --bootstrap-admin-url $KS/ --bootstrap-internal-url $KS/ --bootstrap-public-url $KS/
  touch "$ST/keystone.synced"
fi
start keystone uwsgi --plugin python3 --http-socket 127.0.0.1:5000 \
  --wsgi-file /usr/bin/keystone-wsgi-public --master --processes 1 --threads 4 \
  --enable-threads --lazy-apps --die-on-term --buffer-size 65535 \
  --add-header 'Connection: close' --env OS_KEYSTONE_CONFIG_FILES="$ETC/keystone.conf"
wait_until 120 "Keystone on 127.0.0.1:5000" http_ok $KS
log "keystone up"

mkdir -p "$ST/nova-stub/image"
echo '{"versions":[{"id":"v2.15","status":"CURRENT","links":[{"rel":"self","href":"http://127.0.0.1:8774/image/v2/"}]}]}' \
  >"$ST/nova-stub/image/index.html"
start nova-stub /usr/bin/python3 -m http.server --bind 127.0.0.1 --directory "$ST/nova-stub" 8774
OS_LAB_PASSWORD=$PW timeout 120 /usr/bin/python3 "$HERE/openstack/bootstrap.py"

# ---- Cinder services
wait $dbsync || die "cinder-manage db sync failed: $(tail -n 3 "$ST/log/cinder-dbsync.out")"
wait_until 120 "RabbitMQ on 127.0.0.1:5672" rabbit_up
timeout 90 rabbitmqctl -q await_startup --timeout 60 >/dev/null
start cinder-api uwsgi --plugin python3 --http-socket 127.0.0.1:8776 \
  --wsgi-file /usr/bin/cinder-wsgi --pyargv "--config-file $ETC/cinder.conf" \
  --master --processes 1 --threads 4 --enable-threads --lazy-apps --die-on-term \
  --buffer-size 65535 --add-header 'Connection: close'
# cinder-volume sends its capabilities to the scheduler once at start (then every 60 s, after a
# random delay of up to 60 s), on a fanout exchange that drops what no queue is bound to yet; and
# creates wait for those capabilities for up to 60 s, then fail with "No valid backend". Start the
# scheduler first and cinder-volume only once the scheduler's fanout queue exists.
start cinder-scheduler cinder-scheduler --config-file "$ETC/cinder.conf"
# (A dead scheduler's fanout queue outlives it for 30 min: count only queues with a consumer.)
scheduler_listens() { timeout 20 rabbitmqctl -q list_queues name consumers | awk '$1 ~ /^cinder-scheduler_fanout_/ && $2 > 0 {f=1} END {exit !f}'; }
alive cinder-volume || wait_until 120 "cinder-scheduler's queue on RabbitMQ" scheduler_listens
start cinder-volume cinder-volume --config-file "$ETC/cinder.conf"
wait_until 120 "cinder-api on 127.0.0.1:8776" http_ok http://127.0.0.1:8776/
OS_LAB_PASSWORD=$PW BACKENDS=rbd timeout 330 /usr/bin/python3 "$HERE/openstack/cinder_types.py"

cat >"$OSL/env" <<ENV
OS_AUTH_URL=$KS
OS_IDENTITY_API_VERSION=3
OS_USERNAME=demo
OS_PASSWORD=$PW
OS_PROJECT_NAME=demo
OS_USER_DOMAIN_NAME=Default
OS_PROJECT_DOMAIN_NAME=Default
OS_REGION_NAME=RegionOne
OS_VOLUME_API_VERSION=3
ENV
cat >"$OSL/admin-env" <<ENV
OS_AUTH_URL=$KS
OS_IDENTITY_API_VERSION=3
OS_USERNAME=admin
OS_PASSWORD=$PW
OS_PROJECT_NAME=admin
OS_USER_DOMAIN_NAME=Default
OS_PROJECT_DOMAIN_NAME=Default
OS_REGION_NAME=RegionOne
OS_VOLUME_API_VERSION=3.54
ENV
log "keystone + cinder ready; env in $OSL/env (demo user), $OSL/admin-env (admin, for tests)"
