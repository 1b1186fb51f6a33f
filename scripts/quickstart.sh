#!/usr/bin/env bash
# On a fresh Debian host: install what is missing, build the Debian package and install it (as
# a packaged install is: /usr/bin, the manual page, units, /etc/sysconfig/stap-server), then
# start one compile server per installed kernel (building the image on first use) and wait
# until they have made their first compiles.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/prerequisites.sh
deb=$(scripts/package.sh)
# apt installs what the package depends on and recommends; it replaces Debian's
# systemtap-server (the classic script), which ships /usr/bin/stap-server too.
DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$deb"
stap-server start -i "$@"
# The servers serve already; their first compiles are made ahead of clients meanwhile (README:
# Warm start). Waiting for them means a first script here compiles as fast as any later one.
if stap-server status "$@" | grep -q 'warm-up warming'; then
  echo "stap-server: the servers are making their first compiles ahead of clients (a few minutes)..." >&2
  while stap-server status "$@" | grep -q 'warm-up warming'; do sleep 5; done
fi
stap-server status "$@"
