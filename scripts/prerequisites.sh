#!/usr/bin/env bash
# Installs what stap-server and its tests need on a Debian host, where missing: the kernel
# headers (build trees to serve), mmdebstrap (the image without a registry), the stap client,
# and the classic user servers run as.
set -euo pipefail
need=()
command -v mmdebstrap >/dev/null || need+=(mmdebstrap)
command -v stap >/dev/null || need+=(systemtap-client)
command -v openssl >/dev/null || need+=(openssl)
ls /lib/modules/*/build/Makefile >/dev/null 2>&1 || need+=(linux-headers-amd64)
if [ "${#need[@]}" -gt 0 ]; then
  echo "stap-server: installing ${need[*]}" >&2
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need[@]}"
fi
getent passwd stap-server >/dev/null ||
  useradd --system --home-dir /var/lib/stap-server --no-create-home --shell /usr/sbin/nologin stap-server
command -v docker >/dev/null && docker version >/dev/null || {
  echo "stap-server: the Docker engine is not reachable: is dockerd running?" >&2
  exit 1
}
