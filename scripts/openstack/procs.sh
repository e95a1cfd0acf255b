# The lab OpenStack's processes, shared by openstack-up.sh and openstack-down.sh. Source it after
# lib.sh with ST (the state directory) and ETC (its config directory) set.
#
# A pid file outlives its process: a session or CI machine that stops kills the processes but
# keeps $LAB_DIR, and this machine's pid_max is 32768, so the recorded pid may belong to another
# process by the next start. A pid counts as ours only if its command line still names what we
# started; otherwise start would skip a service that is not running, and stop would signal a
# stranger's process group.
os_pattern() {
  case $1 in
    mariadb) echo "--defaults-file=$ETC/my.cnf" ;;
    keystone) echo "--http-socket 127.0.0.1:5000" ;;
    cinder-api) echo "--http-socket 127.0.0.1:8776" ;;
    cinder-scheduler|cinder-volume) echo "$1 --config-file $ETC/cinder.conf" ;;
    nova-stub) echo "--directory $ST/nova-stub" ;;
    rabbitmq) echo "rabbitmq-server" ;;
    *) echo "unknown lab process $1" >&2; return 1 ;;
  esac
}
# os_alive NAME: the process recorded for NAME runs, and is the one we started.
os_alive() { pid_alive "$ST/run/$1.pid" "$(os_pattern "$1")"; }
