#!/usr/bin/env bash
# A shop with many sales: what listing them costs.
#   SALES sales are created, then GET /api/sales (one page, the default limit) is measured:
#   answer size, wrk -t2 -c128 throughput and latency, the engine's RSS before and after,
#   /metrics size; and, with DISTRIBUTED=1, the same on Redis + Kafka (tansu) + MariaDB.
#
#   bash bench/catalogue.sh
#   SALES=10000 DURATION=10 DISTRIBUTED=1 bash bench/catalogue.sh
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/deps.sh
ensure_wrk
if [ -n "${DISTRIBUTED:-}" ]; then ensure_redis; ensure_mariadb; ensure_tansu; fi

SALES="${SALES:-10000}"
DURATION="${DURATION:-10}"
cargo build --release --locked --bin seckill >/dev/null 2>&1
BIN="${BIN:-target/release/seckill}"
export SECKILL_ADMIN_TOKEN="catalogue-bench-admin-$$"
WORK=$(mktemp -d)
PIDS=()
TANSU_PID=""
DATABASES=()
cleanup() {
  for p in "${PIDS[@]}" $TANSU_PID; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  for db in "${DATABASES[@]}"; do
    mariadb -h 127.0.0.1 -uroot -e "DROP DATABASE IF EXISTS $db" 2>/dev/null || true
    redis-cli -h 127.0.0.1 --scan --pattern "$db:*" | xargs -r -n 500 redis-cli -h 127.0.0.1 del >/dev/null || true
  done
  rm -rf "$WORK"
}
trap cleanup EXIT

# start_engine NAME [extra serve flags]: sets URL and PID.
start_engine() {
  local name=$1
  shift
  mkdir -p "$WORK/$name"
  SECKILL_LOG=warn "$BIN" serve --listen 127.0.0.1:0 --data-dir "$WORK/$name" "$@" \
    >"$WORK/$name.out" 2>"$WORK/$name.log" &
  PID=$!
  PIDS+=("$PID")
  for _ in $(seq 600); do
    grep -q listening "$WORK/$name.out" 2>/dev/null && break
    sleep 0.05
  done
  URL=$(awk '/listening on/ {print $4}' "$WORK/$name.out")
}

rss_mib() { awk '/VmRSS/ {printf "%.1f", $2 / 1024}' "/proc/$1/status"; }

# create_sales N: over one keep-alive connection.
create_sales() {
  python3 - "$URL" "$1" <<'PY'
import http.client, json, os, sys, urllib.parse
url = urllib.parse.urlparse(sys.argv[1])
conn = http.client.HTTPConnection(url.hostname, url.port)
headers = {"Authorization": "Bearer " + os.environ["SECKILL_ADMIN_TOKEN"], "Content-Type": "application/json"}
for i in range(int(sys.argv[2])):
    conn.request("POST", "/api/sales", json.dumps({"name": f"sale {i}", "stock": 100, "per_user_limit": 1}), headers)
    r = conn.getresponse(); r.read()
    assert r.status == 201, r.status
PY
}

# measure NAME: prints one line of figures for the running engine.
measure() {
  local name=$1 size metrics before after rps p99 one
  size=$(curl -s "$URL/api/sales" | wc -c)
  metrics=$(curl -s "$URL/metrics" | wc -c)
  one=$(curl -s -o /dev/null -w '%{time_total}' "$URL/api/sales")
  before=$(rss_mib "$PID")
  wrk -t2 -c128 -d"${DURATION}s" --latency "$URL/api/sales" >"$WORK/$name.wrk"
  after=$(rss_mib "$PID")
  rps=$(awk '/Requests\/sec/ {print $2}' "$WORK/$name.wrk")
  p99=$(awk '$1 == "99%" {print $2}' "$WORK/$name.wrk")
  echo "| $name | $SALES | $size B | $(python3 -c "print(f'{$one*1000:.1f}')") ms | $rps | $p99 | $before → $after MiB | $metrics B |"
}

echo "| mode | sales | GET /api/sales answer | one call | wrk -c128 req/s | p99 | RSS before → after | /metrics |"
echo "|---|---:|---:|---:|---:|---:|---|---:|"
start_engine embedded
create_sales "$SALES"
measure embedded
kill "$PID"; wait "$PID" 2>/dev/null || true

if [ -n "${DISTRIBUTED:-}" ]; then
  TANSU=$(command -v tansu || echo "$HOME/.cargo/bin/tansu")
  PORT=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
  "$TANSU" broker --storage-engine memory://tansu/ --listener-url "tcp://127.0.0.1:$PORT" \
    --advertised-listener-url "tcp://127.0.0.1:$PORT" >"$WORK/tansu.log" 2>&1 &
  TANSU_PID=$!
  sleep 1
  RUN="catalogue_$(date +%s)"
  DATABASES+=("$RUN")
  start_engine distributed --backend distributed --kafka-brokers "127.0.0.1:$PORT" --kafka-topic "$RUN" \
    --redis-prefix "$RUN" --database-url "mysql://root@127.0.0.1:3306/$RUN"
  create_sales "$SALES"
  measure distributed
  # A second instance started after the sales exist: its listing is as fast (nothing rescanned).
  start_engine distributed-2 --backend distributed --kafka-brokers "127.0.0.1:$PORT" --kafka-topic "$RUN" \
    --redis-prefix "$RUN" --database-url "mysql://root@127.0.0.1:3306/$RUN"
  measure distributed-2
fi
