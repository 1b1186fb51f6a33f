#!/usr/bin/env bash
# On a fresh Debian host: install what is missing, build the Debian package and install it (as
# a packaged install is: /usr/bin, the manual page, units, /etc/sysconfig/stap-server), then
# start one compile server per installed kernel (building the image on first use).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/prerequisites.sh
deb=$(scripts/package.sh)
# apt installs what the package depends on and recommends; it replaces Debian's
# systemtap-server (the classic script), which ships /usr/bin/stap-server too.
DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$deb"
stap-server start -i "$@"
stap-server status
