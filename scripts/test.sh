#!/usr/bin/env bash
# The whole test suite: lints, unit tests, and the tests against the real engine, image and
# stap client (which build the image on first use).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/prerequisites.sh
cargo fmt --check
cargo clippy --all-targets --locked -- -D warnings
cargo test --locked -- --test-threads=4
