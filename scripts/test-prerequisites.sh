#!/usr/bin/env bash
# What the tests need beyond scripts/prerequisites.sh, kept in a cache on this machine
# (STAP_TEST_CACHE, default /var/cache/stap-server-tests) so a second run fetches nothing:
#  - the vmlinux debuginfo of every installed kernel headers' release, from its
#    linux-image-RELEASE-dbg package (858 MB; only vmlinux is extracted, to /usr/lib/debug),
#    so that DWARF probes (kernel.function with $variables) are really compiled;
#  - systemtap's example scripts (systemtap-doc) of the image's systemtap version, from the
#    same suite the image is built from (trixie), for the conformance test;
#  - systemtap's own compile-server test cases of that same version (testsuite/systemtap.server,
#    and systemtap.base/jennie.c, the program its uprobes case probes), from the upstream
#    tarball of trixie's systemtap source package, for tests/systemtap_server.rs;
#  - the arm64 and ppc64el headers of every installed amd64 headers' version
#    (linux-headers-V-arm64, linux-headers-V-powerpc64le), the Debian way: the architecture
#    added to dpkg's, the package downloaded and unpacked with dpkg-deb -x to
#    /usr/src/linux-headers-V-FLAVOUR, next to the installed -common tree and linux-kbuild it
#    uses; for the cross-architecture tests. Their /lib/modules links are left out: the host's
#    modules directory keeps only the trees of installed packages.
#  - the image of the swarm lab's nodes (tests/common/swarm.rs), stap-server-test-node:bookworm:
#    Debian bookworm with docker.io, and avahi-daemon, avahi-utils and dbus (each node runs
#    the announcer, and avahi, as an admin's nodes would), whose root filesystem mmdebstrap
#    makes from the host's own apt sources (kept in the cache as
#    swarm-node-bookworm-avahi.tar, about 400 MB), imported, with tests/swarm-node/entrypoint
#    on top; made again when that entrypoint or the root filesystem changes.
# Downloads are verified by apt as usual; they run as root into the cache, which apt warns of.
set -euo pipefail
cache=${STAP_TEST_CACHE:-/var/cache/stap-server-tests}
mkdir -p "$cache/debs"

# apt with the host's sources rewritten to trixie (as the image's are), in a state of its own;
# with the same sources' deb-src too, for systemtap's source package.
trixie_apt() {
  local state=$cache/apt-trixie
  if [ ! -f "$state/sources.list.d/trixie.sources" ]; then
    mkdir -p "$state/lists/partial" "$state/sources.list.d"
    local src
    for src in /etc/apt/sources.list.d/*.sources; do
      [ -f "$src" ] && sed -E '/^Suites:/ s/bookworm/trixie/g' "$src"
    done > "$state/sources.list.d/trixie.sources"
    if [ -f /etc/apt/sources.list ]; then
      sed -E 's/bookworm/trixie/g' /etc/apt/sources.list > "$state/sources.list"
    else
      : > "$state/sources.list"
    fi
  fi
  if [ ! -f "$state/sources.list.d/trixie-src.sources" ]; then
    sed -E 's/^Types:.*/Types: deb-src/' "$state/sources.list.d/trixie.sources" \
      > "$state/sources.list.d/trixie-src.sources"
    grep -E '^deb ' "$state/sources.list" | sed -E 's/^deb /deb-src /' >> "$state/sources.list" || true
  fi
  apt-get -q -o Dir::Etc::SourceList="$state/sources.list" \
    -o Dir::Etc::SourceParts="$state/sources.list.d" -o Dir::State::Lists="$state/lists" \
    -o Acquire::Check-Valid-Until=false "$@"
}

for build in /lib/modules/*/build; do
  release=$(basename "$(dirname "$build")")
  [ -s "/usr/lib/debug/boot/vmlinux-$release" ] && continue
  deb=$(ls "$cache/debs/linux-image-$release-dbg_"*.deb 2>/dev/null | head -1 || true)
  if [ -z "$deb" ]; then
    echo "stap-server tests: fetching the kernel debuginfo of $release (about 860 MB, once)" >&2
    apt-get update -q >/dev/null
    (cd "$cache/debs" && apt-get download -q "linux-image-$release-dbg")
    deb=$(ls "$cache/debs/linux-image-$release-dbg_"*.deb | head -1)
  fi
  dpkg-deb --fsys-tarfile "$deb" | tar -x -C / --wildcards \
    "./usr/lib/debug/boot/vmlinux-$release" "./usr/lib/debug/lib/modules/$release/vmlinux" \
    "./usr/lib/debug/vmlinux-$release" 2>/dev/null || true
  [ -s "/usr/lib/debug/boot/vmlinux-$release" ] || {
    echo "stap-server tests: $deb holds no vmlinux for $release" >&2
    exit 1
  }
done

# Foreign architectures' headers: Debian architecture and kernel flavour of each.
for foreign in arm64:arm64 ppc64el:powerpc64le; do
  debarch=${foreign%%:*}
  flavour=${foreign#*:}
  for build in /lib/modules/*-amd64/build; do
    [ -e "$build" ] || continue
    release=$(basename "$(dirname "$build")")
    other=${release%-amd64}-$flavour
    [ -s "/usr/src/linux-headers-$other/include/config/kernel.release" ] && continue
    deb=$(ls "$cache/debs/linux-headers-${other}_"*"_$debarch.deb" 2>/dev/null | head -1 || true)
    if [ -z "$deb" ]; then
      echo "stap-server tests: fetching the $debarch headers linux-headers-$other (about 2 MB, once)" >&2
      dpkg --print-foreign-architectures | grep -qx "$debarch" || dpkg --add-architecture "$debarch"
      apt-get update -q >/dev/null
      (cd "$cache/debs" && apt-get download -q "linux-headers-$other:$debarch")
      deb=$(ls "$cache/debs/linux-headers-${other}_"*"_$debarch.deb" | head -1)
    fi
    unpacked=$(mktemp -d)
    dpkg-deb -x "$deb" "$unpacked"
    [ -d "$unpacked/usr/src/linux-headers-$other" ] || {
      echo "stap-server tests: $deb holds no /usr/src/linux-headers-$other" >&2
      exit 1
    }
    rm -rf "/usr/src/linux-headers-$other"
    mv "$unpacked/usr/src/linux-headers-$other" /usr/src/
    rm -rf "$unpacked"
  done
done

examples=$cache/examples
if [ ! -f "$examples/.version" ]; then
  echo "stap-server tests: fetching systemtap's example scripts (systemtap-doc, trixie)" >&2
  trixie_apt update -q >/dev/null
  rm -rf "$cache/doc" && mkdir -p "$cache/doc"
  (cd "$cache/doc" && trixie_apt download -q systemtap-doc)
  dpkg-deb -x "$cache/doc"/systemtap-doc_*.deb "$cache/doc/root"
  rm -rf "$examples"
  # Where the package keeps them: usr/share/systemtap/examples (older: under doc/).
  found=$(dirname "$(find "$cache/doc/root" -name '*.meta' | sort | head -1)")
  found=${found%/*}
  [ -d "$found" ] || { echo "stap-server tests: systemtap-doc holds no examples" >&2; exit 1; }
  cp -a "$found" "$examples"
  # Debian compresses the larger ones.
  find "$examples" -name '*.gz' -exec gunzip -f {} +
  basename "$cache/doc"/systemtap-doc_*.deb | cut -d_ -f2 > "$examples/.version"
  rm -rf "$cache/doc"
fi

# The compile-server test cases of the same systemtap version as the examples (so the image's),
# from the upstream tarball of trixie's source package, which apt verifies against the
# archive's signed index; or, where the archive serves no source packages, from a clone of
# systemtap's git named by SYSTEMTAP_GIT, at the release's tag. Only the cases' directory (and
# the one program it compiles from systemtap.base) is kept. Without either, the test that
# needs them says so and the others go on.
cases=$cache/server-testsuite
case_paths=(testsuite/systemtap.server testsuite/systemtap.base/jennie.c)
if [ ! -f "$cases/.version" ]; then
  version=$(cat "$examples/.version")
  upstream=${version#*:}
  upstream=${upstream%-*}
  echo "stap-server tests: fetching systemtap's server test cases (systemtap $version)" >&2
  rm -rf "$cache/src" "$cases" && mkdir -p "$cache/src" "$cases"
  trixie_apt update -q >/dev/null
  if (cd "$cache/src" && trixie_apt source -q --download-only "systemtap=$version"); then
    orig=$(ls "$cache/src"/systemtap_*.orig.tar.* | head -1)
    tar -x -f "$orig" -C "$cases" --strip-components=2 --wildcards \
      '*/testsuite/systemtap.server/*' '*/testsuite/systemtap.base/jennie.c'
    echo "apt: ${orig##*/}" > "$cases/.source"
  elif [ -n "${SYSTEMTAP_GIT:-}" ] &&
    git -C "$SYSTEMTAP_GIT" archive --format=tar "release-$upstream" "${case_paths[@]}" |
    tar -x -C "$cases" --strip-components=1; then
    echo "git: release-$upstream $(git -C "$SYSTEMTAP_GIT" rev-parse "release-$upstream^{commit}")" \
      > "$cases/.source"
  fi
  rm -rf "$cache/src"
  if [ -f "$cases/systemtap.server/server.exp" ]; then
    echo "$version" > "$cases/.version"
  else
    rm -rf "$cases"
    echo "stap-server tests: WARNING: no source of systemtap $version's test cases (the" \
      "archive's source package, or SYSTEMTAP_GIT=a clone of systemtap's git with the tag" \
      "release-$upstream): tests/systemtap_server.rs will fail for want of them" >&2
  fi
fi

# The swarm lab's node image. No registry: the root filesystem is made with mmdebstrap from the
# host's apt sources and imported; a build adds the entrypoint. The image carries the
# entrypoint's checksum, which the lab compares with the repository's, so a changed entrypoint
# makes the image again (from the imported root filesystem, or else the cached tar).
# The root filesystem's name says what it holds: a change of --include below gets a new name
# (tar and image), so a cache of the former one is never reused.
node_image=stap-server-test-node:bookworm
node_rootfs=stap-server-test-node-rootfs:bookworm-avahi
node_entrypoint=$(cd "$(dirname "$0")/.." && pwd)/tests/swarm-node/entrypoint
node_sum=$(sha256sum < "$node_entrypoint" | cut -d' ' -f1)
node_have=$(docker image inspect \
  --format '{{index .Config.Labels "io.stap-server.test.entrypoint"}} {{index .Config.Labels "io.stap-server.test.rootfs"}}' \
  "$node_image" 2>/dev/null || true)
if [ "$node_have" != "$node_sum $node_rootfs" ]; then
  node_tar=$cache/swarm-node-bookworm-avahi.tar
  # Former root filesystems (without avahi): no longer used.
  rm -f "$cache/swarm-node-bookworm.tar"
  docker rmi stap-server-test-node-rootfs:bookworm >/dev/null 2>&1 || true
  if ! docker image inspect "$node_rootfs" >/dev/null 2>&1; then
    if [ ! -s "$node_tar" ]; then
      echo "stap-server tests: making the swarm node's root filesystem (mmdebstrap, about 70 s, once)" >&2
      node_sources=()
      for f in /etc/apt/sources.list.d/*.sources /etc/apt/sources.list; do
        [ -s "$f" ] && node_sources+=("$f")
      done
      mmdebstrap --variant=minbase --format=tar \
        --include=docker.io,iproute2,ca-certificates,procps,avahi-daemon,avahi-utils,dbus \
        --aptopt='Acquire::Check-Valid-Until "false"' \
        --dpkgopt='path-exclude=/usr/share/man/*' \
        --dpkgopt='path-exclude=/usr/share/doc/*' \
        --dpkgopt='path-include=/usr/share/doc/*/copyright' \
        --dpkgopt='path-exclude=/usr/share/locale/*' \
        --dpkgopt='path-exclude=/usr/share/info/*' \
        bookworm "$node_tar.partial" "${node_sources[@]}"
      mv "$node_tar.partial" "$node_tar"
    fi
    docker import --change 'LABEL io.stap-server.test=node' "$node_tar" "$node_rootfs" >/dev/null
  fi
  node_context=$(mktemp -d)
  cp "$node_entrypoint" "$node_context/entrypoint"
  cat > "$node_context/Dockerfile" <<EOF
FROM $node_rootfs
COPY entrypoint /usr/local/sbin/stap-server-test-node
LABEL io.stap-server.test=node io.stap-server.test.entrypoint=$node_sum io.stap-server.test.rootfs=$node_rootfs
ENTRYPOINT ["/usr/local/sbin/stap-server-test-node"]
EOF
  node_old=$(docker image inspect --format '{{.Id}}' "$node_image" 2>/dev/null || true)
  tar -c -C "$node_context" . | docker build -q -t "$node_image" - >/dev/null
  rm -rf "$node_context"
  # The image of the former entrypoint, untagged now.
  [ -z "$node_old" ] || docker rmi "$node_old" >/dev/null 2>&1 || true
fi
