#!/usr/bin/env bash
# Install what building the project needs: the Ceph client libraries go-ceph links against.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
need_root
mkdir -p "$LAB_DIR"
command -v go >/dev/null || [ -x /usr/local/go/bin/go ] || die "Go is not installed (need Go >= 1.22 on PATH or in /usr/local/go)"
apt_ensure librbd-dev librados-dev libradospp-dev gcc g++ pkg-config
