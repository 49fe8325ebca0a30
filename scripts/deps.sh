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

ensure_openssl() {
  # The RS256 test makes its key pair with the openssl command.
  command -v openssl >/dev/null || { echo "installing openssl (RS256 test keys)"; apt_install openssl; }
}

ensure_wrk() {
  command -v wrk >/dev/null || { echo "installing wrk (benchmarks)"; apt_install wrk; }
}

ensure_redis() {
  # The fault tests also start Redis servers of their own: the binary is needed either way.
  command -v redis-server >/dev/null || { echo "installing redis-server"; apt_install redis-server; }
  if redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null | grep -q PONG; then return; fi
  echo "starting redis on 127.0.0.1:6379"
  mkdir -p /var/lib/redis /var/log/redis
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log
  for _ in $(seq 50); do redis-cli -h 127.0.0.1 ping 2>/dev/null | grep -q PONG && return; sleep 0.1; done
  echo "redis did not start" >&2; return 1
}

mariadb_tcp_ok() { mariadb -h 127.0.0.1 -P 3306 -uroot -e 'SELECT 1' >/dev/null 2>&1; }

ensure_mariadb() {
  # The fault tests also start MariaDB servers of their own (mariadb-install-db + mariadbd).
  if ! command -v mariadb-install-db >/dev/null || ! { command -v mariadbd >/dev/null || [ -x /usr/sbin/mariadbd ]; }; then
    echo "installing mariadb-server"; apt_install mariadb-server
  fi
  if mariadb_tcp_ok; then return; fi
  if ! mariadb -uroot -e 'SELECT 1' >/dev/null 2>&1; then
    echo "starting mariadb"
    mkdir -p /run/mysqld && chown mysql:mysql /run/mysqld 2>/dev/null || true
    start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd -- --user=mysql
    for _ in $(seq 100); do mariadb -uroot -e 'SELECT 1' >/dev/null 2>&1 && break; sleep 0.2; done
  fi
  if ! mariadb_tcp_ok; then
    # Debian's root authenticates by unix socket only; the tests connect over TCP as root with
    # no password (as on the project's machines), so allow that too.
    mariadb -uroot -e "ALTER USER root@localhost IDENTIFIED VIA unix_socket OR mysql_native_password USING PASSWORD(''); FLUSH PRIVILEGES;"
  fi
  mariadb_tcp_ok || { echo "mariadb is not reachable as root@127.0.0.1:3306" >&2; return 1; }
}

# tansu: the Kafka-protocol broker the distributed tests start (one per test). Built once into
# ~/.cargo/bin (about 12 minutes on 2 cores), then reused. `libsql` is its durable storage
# engine (a SQLite file that creates its own schema), which the broker-kill test needs; an older
# install without it is rebuilt.
TANSU_FEATURES="dynostore,libsql"

tansu_has_features() {
  local record="$HOME/.cargo/.crates2.json"
  [ -x "$HOME/.cargo/bin/tansu" ] && [ -f "$record" ] &&
    python3 -c 'import json,sys
installs = json.load(open(sys.argv[1]))["installs"]
want = set(sys.argv[2].split(","))
sys.exit(0 if any(k.startswith("tansu ") and want <= set(v.get("features", [])) for k, v in installs.items()) else 1)' \
      "$record" "$TANSU_FEATURES"
}

ensure_tansu() {
  if tansu_has_features; then return; fi
  echo "installing tansu with $TANSU_FEATURES (Kafka-protocol test broker; one-time build)"
  cargo install tansu --locked --features "$TANSU_FEATURES"
}

# schemathesis: fuzzes the HTTP API against its OpenAPI document (scripts/schemathesis.sh).
# Pinned: its command line changes between versions. Installed into the user's site-packages.
SCHEMATHESIS_VERSION=4.32.5

schemathesis_bin() { echo "$(python3 -m site --user-base)/bin/schemathesis"; }

ensure_schemathesis() {
  command -v python3 >/dev/null || { echo "installing python3 and pip (schemathesis)"; apt_install python3 python3-pip; }
  local bin
  bin="$(schemathesis_bin)"
  if [ -x "$bin" ] && "$bin" --version 2>/dev/null | grep -q "version $SCHEMATHESIS_VERSION\$"; then return; fi
  echo "installing schemathesis $SCHEMATHESIS_VERSION (API fuzzing)"
  # A system Python marked externally managed (PEP 668) refuses --user installs without the flag.
  python3 -m pip install --user --quiet "schemathesis==$SCHEMATHESIS_VERSION" 2>/dev/null ||
    python3 -m pip install --user --quiet --break-system-packages "schemathesis==$SCHEMATHESIS_VERSION"
}
