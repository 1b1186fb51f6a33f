#!/usr/bin/env bash
# Installs what stap-server and its tests need on a Debian host, where missing: the kernel
# headers (build trees to serve), mmdebstrap (the image without a registry), the stap client,
# avahi (mDNS, limited to docker0 so that nothing is multicast beyond this machine), and the
# classic user servers run as, docker-compose (the compose deployments), what building and
# checking the Debian package needs (binutils, man-db, logrotate, systemd's systemd-analyze),
# and busybox-static (for the swarm lab's tests).
# Safe to run again.
set -euo pipefail
need=()
command -v mmdebstrap >/dev/null || need+=(mmdebstrap)
command -v stap >/dev/null || need+=(systemtap systemtap-client)
command -v openssl >/dev/null || need+=(openssl)
ls /lib/modules/*/build/Makefile >/dev/null 2>&1 || need+=(linux-headers-amd64)
command -v dbus-daemon >/dev/null || need+=(dbus)
command -v avahi-daemon >/dev/null || need+=(avahi-daemon)
command -v avahi-browse >/dev/null || need+=(avahi-utils)
command -v docker-compose >/dev/null || need+=(docker-compose)
command -v objdump >/dev/null || need+=(binutils)
command -v man >/dev/null || need+=(man-db)
command -v logrotate >/dev/null || need+=(logrotate)
command -v systemd-analyze >/dev/null || need+=(systemd)
# A static busybox: the one program of the tiny image the swarm lab's tests run on its nodes.
[ "$(dpkg-query -W -f='${Status}' busybox-static 2>/dev/null)" = "install ok installed" ] ||
  need+=(busybox-static)
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

# avahi-daemon answers and publishes on docker0 only (the engine's bridge, local to this
# machine), and never asks unicast DNS servers either.
conf=/etc/avahi/avahi-daemon.conf
changed=0
set_option() { # SECTION KEY VALUE
  if grep -q "^$2=$3\$" "$conf"; then return; fi
  if grep -q "^#\?$2=" "$conf"; then
    sed -i "s|^#\?$2=.*|$2=$3|" "$conf"
  else
    sed -i "/^\[$1\]/a $2=$3" "$conf"
  fi
  changed=1
}
set_option server allow-interfaces docker0
set_option wide-area enable-wide-area no
mkdir -p /etc/avahi/services /run/dbus
if ! dbus-send --system --dest=org.freedesktop.DBus --type=method_call --print-reply \
  /org/freedesktop/DBus org.freedesktop.DBus.GetId >/dev/null 2>&1; then
  rm -f /run/dbus/pid
  dbus-daemon --system --fork
fi
if avahi-daemon --check 2>/dev/null && [ "$changed" = 1 ]; then
  avahi-daemon --kill
  for _ in $(seq 50); do avahi-daemon --check 2>/dev/null || break; sleep 0.1; done
fi
avahi-daemon --check 2>/dev/null || avahi-daemon --daemonize
