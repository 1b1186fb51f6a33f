#!/usr/bin/env bash
# The conformance suite over every systemtap example with a plain `stap` test_check line
# (about 190; an hour or more on two cores), rather than CI's default set. Extra arguments go
# to the test harness.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/prerequisites.sh
scripts/test-prerequisites.sh
STAP_CONFORMANCE=all exec cargo test --locked --test conformance -- --nocapture "$@"
