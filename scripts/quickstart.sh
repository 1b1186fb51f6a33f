#!/usr/bin/env bash
# On a fresh Debian host: install what is missing, build and install stap-server, then start
# one compile server per installed kernel (building the image on first use).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/prerequisites.sh
cargo install --quiet --locked --path . --root /usr/local
stap-server start -i "$@"
stap-server status
