#!/usr/bin/env bash
# The test suite, from a fresh machine: installs what the tests need when it is missing
# (Debian's chromium + chromium-driver for the page test), then runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/deps.sh
source scripts/deps.sh

ensure_chromium

cargo test --release --locked "$@"
