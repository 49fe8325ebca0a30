#!/usr/bin/env bash
# The whole test suite, from a fresh machine: installs and starts what the tests need when it
# is missing (Chromium for the page tests, openssl for RS256 keys, schemathesis for the API's fuzzing; Redis, MariaDB and the tansu
# broker for the distributed mode), then runs every test of every crate with every feature.
# A test whose service is missing fails; none is skipped. (With only Rust installed,
# `cargo test --no-default-features` runs the embedded suite.)
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/deps.sh
source scripts/deps.sh

ensure_chromium
ensure_openssl
ensure_schemathesis
ensure_redis
ensure_mariadb
ensure_tansu

cargo test --release --locked --workspace --all-features "$@"
