#!/usr/bin/env bash
# Install the tools the integration tests use beside the services: a real Prometheus server
# (Debian's) that scrapes the plugin's metrics endpoint (nothing is started here: each test starts
# its own Prometheus on loopback and stops it); dosfstools and btrfs-progs, with which the
# hostile-input suite writes filesystems the plugin must refuse onto volumes by hand.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
need_root
mkdir -p "$LAB_DIR"
apt_ensure prometheus dosfstools btrfs-progs
