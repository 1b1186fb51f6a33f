#!/usr/bin/env bash
# The whole test suite: lints, unit tests, the tests against the real engine, image and stap
# client (which build the image on first use; the kernel debuginfo and systemtap's examples
# they compile are fetched once into a cache by scripts/test-prerequisites.sh), then a short
# fuzzing run of the configuration parser and of option resolution (FUZZ_SECONDS per target;
# README: Reliability).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/prerequisites.sh
scripts/test-prerequisites.sh
cargo fmt --check
cargo clippy --all-targets --locked -- -D warnings
cargo test --locked --no-fail-fast -- --test-threads=4
command -v cargo-fuzz >/dev/null || cargo install --locked cargo-fuzz
for target in config options; do
  mkdir -p "fuzz/corpus/$target"
  # cargo-fuzz needs nightly flags; RUSTC_BOOTSTRAP lets the stable toolchain take them.
  (cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run -O "$target" "corpus/$target" "seeds/$target" -- \
    -max_total_time="${FUZZ_SECONDS:-25}" -timeout=10 -dict="$target.dict")
done
