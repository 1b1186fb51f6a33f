#!/usr/bin/env bash
# Builds the Debian package target/debian/stap-server_VERSION_ARCH.deb and prints its path.
#
# dpkg-deb rather than cargo-deb: it is part of dpkg, on every Debian host and CI machine
# already, while cargo-deb would be one more tool to build (minutes on a fresh machine); and
# the package's whole layout is then in this one file. The manual page and the completions
# come from the clap definitions (examples/dist_files.rs), so they say what the binary does.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v dpkg-deb >/dev/null || { echo "package.sh: missing prerequisite: dpkg-deb (dpkg)" >&2; exit 1; }
command -v objdump >/dev/null || { echo "package.sh: missing prerequisite: objdump (binutils)" >&2; exit 1; }

VERSION=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -1)
ARCH=$(dpkg --print-architecture)
cargo build --release --locked --quiet --bin stap-server --example dist_files

OUT=target/debian
ROOT=$OUT/root
rm -rf "$ROOT"
mkdir -p "$ROOT/DEBIAN"
install -D -m 0755 -s target/release/stap-server "$ROOT/usr/bin/stap-server"
GEN=$OUT/generated
target/release/examples/dist_files "$GEN"
install -d "$ROOT/usr/share/man/man8"
gzip -9n -c "$GEN/stap-server.8" > "$ROOT/usr/share/man/man8/stap-server.8.gz"
install -D -m 0644 "$GEN/stap-server" "$ROOT/usr/share/bash-completion/completions/stap-server"
install -D -m 0644 "$GEN/_stap-server" "$ROOT/usr/share/zsh/vendor-completions/_stap-server"
install -D -m 0644 dist/stap-server.service "$ROOT/lib/systemd/system/stap-server.service"
install -D -m 0644 dist/stap-server-announce.service "$ROOT/lib/systemd/system/stap-server-announce.service"
install -D -m 0644 dist/sysconfig/stap-server "$ROOT/etc/sysconfig/stap-server"
install -D -m 0644 dist/logrotate/stap-server "$ROOT/etc/logrotate.d/stap-server"
# A conffile in conf.d keeps the directory (and what the admin put there) when the package is
# removed; purge removes it.
install -D -m 0644 dist/conf.d-README "$ROOT/etc/stap-server/conf.d/README"
install -d -m 0755 "$ROOT/var/log/stap-server"
install -D -m 0644 README.md "$ROOT/usr/share/doc/stap-server/README.md"
gzip -9n "$ROOT/usr/share/doc/stap-server/README.md"

# The newest glibc symbol version the binary needs.
GLIBC=$(objdump -T "$ROOT/usr/bin/stap-server" | grep -o 'GLIBC_[0-9.]*' | sed 's/GLIBC_//' | sort -V | tail -1)
SIZE=$(du -sk --exclude=DEBIAN "$ROOT" | cut -f1)
sed -e "s/@VERSION@/$VERSION/" -e "s/@ARCH@/$ARCH/" -e "s/@SIZE@/$SIZE/" \
  -e "s/@LIBC@/libc6 (>= $GLIBC)/" dist/debian/control.in > "$ROOT/DEBIAN/control"
printf '%s\n' /etc/sysconfig/stap-server /etc/logrotate.d/stap-server /etc/stap-server/conf.d/README \
  > "$ROOT/DEBIAN/conffiles"
install -m 0755 dist/debian/postinst dist/debian/prerm dist/debian/postrm "$ROOT/DEBIAN/"

DEB=$OUT/stap-server_${VERSION}_${ARCH}.deb
dpkg-deb --root-owner-group -Zxz --build "$ROOT" "$DEB" >/dev/null
echo "$PWD/$DEB"
