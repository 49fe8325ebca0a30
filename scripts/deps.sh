#!/usr/bin/env bash
# Installs and starts what the tests and benchmarks need, each only when missing.
# Sourced by scripts/test.sh and bench/*.sh.

SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
APT_UPDATED=""

apt_install() {
  if [ -z "$APT_UPDATED" ]; then
    $SUDO apt-get update -qq
    APT_UPDATED=1
  fi
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "$@" >/dev/null
}

ensure_chromium() {
  if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then
    echo "installing chromium and chromium-driver (page test)"
    apt_install chromium chromium-driver
  fi
}

ensure_wrk() {
  command -v wrk >/dev/null || { echo "installing wrk (benchmarks)"; apt_install wrk; }
}
