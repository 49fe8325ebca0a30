#!/usr/bin/env bash
# Speed targets as ratios against a baseline measured in the same run.
#
#   bash bench/ratio.sh                 # 10 s per wrk run, 1,000,000 orders for the drain
#   DURATION=5 DRAIN_ORDERS=300000 bash bench/ratio.sh
#   EMBEDDED_ONLY=1 bash bench/ratio.sh # no Redis/MariaDB/tansu needed
#
# Baseline: a bare axum server answering the same POST with a small JSON body
# (examples/bare.rs). Every figure is wrk -t2 -c100 on loopback, on this machine, in this run.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/deps.sh
ensure_wrk
if [ -z "${EMBEDDED_ONLY:-}" ]; then ensure_redis; ensure_mariadb; ensure_tansu; fi

DURATION="${DURATION:-10}"
DRAIN_ORDERS="${DRAIN_ORDERS:-1000000}"
WRK=(wrk -t2 -c100 -d"${DURATION}s" -s bench/post.lua)
cargo build --release --locked --example bare --example drain --bin seckill >/dev/null 2>&1
# BIN=path/to/another/seckill measures another build against the same baseline.
BIN="${BIN:-target/release/seckill}"
WORK=$(mktemp -d)
PIDS=()
TANSU_PID=""
cleanup() {
  for p in "${PIDS[@]}" $TANSU_PID; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

# The engines and the bench share it: the audit is an admin route.
export SECKILL_ADMIN_TOKEN="${SECKILL_ADMIN_TOKEN:-ratio-admin-token}"

rps() { awk '/Requests\/sec/ {print $2}'; }

# start_engine NAME STOCK [extra serve flags]: sets URL. Not run in $(...): a subshell's
# PIDS+=() never reaches this shell, and stop_all would leave the engine running.
start_engine() {
  local name=$1 stock=$2
  shift 2
  mkdir -p "$WORK/$name"
  SECKILL_LOG=warn "$BIN" serve --listen 127.0.0.1:0 --data-dir "$WORK/$name" --demo-stock "$stock" "$@" \
    >"$WORK/$name.out" 2>"$WORK/$name.log" &
  PIDS+=($!)
  for _ in $(seq 300); do
    grep -q listening "$WORK/$name.out" 2>/dev/null && break
    sleep 0.05
  done
  URL=$(awk '/listening on/ {print $4}' "$WORK/$name.out")
}

stop_all() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done; PIDS=(); }

echo "== baseline: bare axum, POST /seckill/seckill"
target/release/examples/bare 127.0.0.1:3099 >/dev/null &
PIDS+=($!)
sleep 0.3
BARE=$("${WRK[@]}" http://127.0.0.1:3099/seckill/seckill | rps)
stop_all
echo "   $BARE req/s"

echo "== sold-out path: demo stock 0"
start_engine soldout 0
SOLDOUT=$("${WRK[@]}" "$URL/seckill/seckill" | rps)
stop_all
echo "   $SOLDOUT req/s"

echo "== selling path: every request a new buyer, every success fsynced (group commit)"
start_engine selling 1000000000
SELLING=$("${WRK[@]}" "$URL/seckill/seckill" | rps)
SOLD=$(curl -s -H "authorization: Bearer $SECKILL_ADMIN_TOKEN" "$URL/api/sales/1/audit")
stop_all
echo "   $SELLING req/s; audit after: $SOLD"

echo "== the classic scenario: 2,000 buyers at once on 1,000 stock, served and persisted"
start_engine classic 1000
"$BIN" bench --url "$URL" -n 2000 -c 2000 --report "$WORK/classic.json" >"$WORK/classic.txt" || { cat "$WORK/classic.txt"; exit 1; }
CLASSIC_TOTAL=$(python3 -c "import json;r=json.load(open('$WORK/classic.json'));print(f\"{r['elapsed_s']+r['drain_s']:.3f}\")")
stop_all
echo "   served + persisted in $CLASSIC_TOTAL s"

DIST_SELLING=""; DRAIN_100K=""; DRAIN_RATIO=""
if [ -z "${EMBEDDED_ONLY:-}" ]; then
  TANSU=$(command -v tansu || echo "$HOME/.cargo/bin/tansu")
  PORT=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
  "$TANSU" broker --storage-engine memory://tansu/ --listener-url "tcp://127.0.0.1:$PORT" \
    --advertised-listener-url "tcp://127.0.0.1:$PORT" >"$WORK/tansu.log" 2>&1 &
  TANSU_PID=$!
  sleep 1
  RUN=$(date +%s)
  dist() {  # dist NAME STOCK: sets URL
    start_engine "$1" "$2" --backend distributed --kafka-brokers "127.0.0.1:$PORT" --kafka-topic "ratio-$1-$RUN" \
      --redis-prefix "ratio-$1-$RUN" --database-url "mysql://root@127.0.0.1:3306/ratio_$1_$RUN"
  }

  echo "== distributed selling path: Redis gate, success after the broker's ack, consumer into MariaDB"
  dist selling 1000000000
  DIST_SELLING=$("${WRK[@]}" "$URL/seckill/seckill" | rps)
  stop_all
  echo "   $DIST_SELLING req/s"

  echo "== distributed: 100,000 buyers on 100,000 stock; drain = last answer → all rows in MariaDB"
  dist drain 100000
  "$BIN" bench --url "$URL" --users 100000 -n 100000 -c 200 --drain-timeout 300 --report "$WORK/drain.json" \
    >"$WORK/drain.txt" || { cat "$WORK/drain.txt"; exit 1; }
  DRAIN_100K=$(python3 -c "import json;r=json.load(open('$WORK/drain.json'));print(f\"{r['drain_s']:.2f}\")")
  grep -E "throughput|drain" "$WORK/drain.txt" | sed 's/^/   /'
  stop_all

  echo "== consumer drain of $DRAIN_ORDERS orders vs a plain multi-row INSERT of the same rows"
  SECKILL_LOG=warn target/release/examples/drain --orders "$DRAIN_ORDERS" --brokers "127.0.0.1:$PORT" | tee "$WORK/drain-ratio.txt" | sed 's/^/   /'
  DRAIN_RATIO=$(awk '/^ratio/ {print $2}' "$WORK/drain-ratio.txt")
  kill "$TANSU_PID" 2>/dev/null || true
  for db in selling drain; do mariadb -h 127.0.0.1 -uroot -e "DROP DATABASE IF EXISTS ratio_${db}_$RUN" || true; done
fi

python3 - "$BARE" "$SOLDOUT" "$SELLING" "$CLASSIC_TOTAL" "$DIST_SELLING" "$DRAIN_100K" "$DRAIN_RATIO" <<'PY'
import sys
bare, soldout, selling, classic = map(float, sys.argv[1:5])
dist, drain100k, drain_ratio = sys.argv[5:8]
rows = [
    ("bare axum (baseline)", f"{bare:,.0f} req/s", "1.00x", "", None),
    ("sold-out path, embedded", f"{soldout:,.0f} req/s", f"{soldout / bare:.2f}x bare", ">= 0.8x bare", soldout / bare >= 0.8),
    ("selling path, embedded, every success fsynced", f"{selling:,.0f} req/s", f"{selling / bare:.2f}x bare", ">= 0.5x bare", selling / bare >= 0.5),
    ("classic scenario (2,000 buyers, 1,000 stock) served + persisted", f"{classic:.3f} s", "", "< 1 s", classic < 1),
]
if dist:
    d = float(dist)
    rows.append(("selling path, distributed (ack before success)", f"{d:,.0f} req/s", f"{d / selling:.2f}x embedded", ">= 0.5x embedded", d / selling >= 0.5))
    rows.append(("distributed: 100,000 orders, drain after the last answer", f"{float(drain100k):.2f} s", "", "", None))
    rows.append(("consumer drain into MariaDB vs plain multi-row INSERT", "", f"{float(drain_ratio):.2f}x", ">= 0.7x", float(drain_ratio) >= 0.7))
print()
print("| measurement | figure | ratio | target | met |")
print("|---|---:|---:|---|---|")
for name, figure, ratio, target, met in rows:
    print(f"| {name} | {figure} | {ratio} | {target} | {'' if met is None else ('yes' if met else 'NO')} |")
sys.exit(0 if all(m is not False for *_, m in rows) else 1)
PY
