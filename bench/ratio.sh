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
CLUSTER_PIDS=()
cleanup() {
  for p in "${PIDS[@]}" $TANSU_PID "${CLUSTER_PIDS[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  # The distributed runs' keys and databases (named after RUN) go too.
  if [ -n "${RUN:-}" ]; then
    redis-cli -h 127.0.0.1 --scan --pattern "ratio-*-$RUN:*" | xargs -r -n 500 redis-cli -h 127.0.0.1 del >/dev/null || true
    for db in $(mariadb -h 127.0.0.1 -uroot -N -e "SHOW DATABASES LIKE 'ratio\\_%\\_$RUN'" 2>/dev/null); do
      mariadb -h 127.0.0.1 -uroot -e "DROP DATABASE IF EXISTS \`$db\`" 2>/dev/null || true
    done
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT

# The engines and the bench share it: the audit is an admin route.
export SECKILL_ADMIN_TOKEN="${SECKILL_ADMIN_TOKEN:-ratio-admin-token}"

rps() { awk '/Requests\/sec/ {print $2}'; }

# Every measured run follows one second of the same load, so each server is measured warm (a
# distributed engine's first second also fetches its topic and producer id and joins its
# consumer group: sold-out runs measured cold gave 100k-105k req/s, warm 123k-131k).
warm() { wrk -t2 -c100 -d1s -s bench/post.lua "$1" >/dev/null; }
# measured_rps URL: req/s of the measured run, after the warm-up.
measured_rps() { warm "$1"; "${WRK[@]}" "$1" | rps; }

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

# CPU seconds a process has used (user + system), from /proc.
TICKS=$(getconf CLK_TCK)
cpu_s() { awk -v t="$TICKS" '{print ($14 + $15) / t}' "/proc/$1/stat"; }
# The same for a process that may not run (empty pid): 0.
other_cpu_s() { if [ -n "$1" ] && [ -r "/proc/$1/stat" ]; then cpu_s "$1"; else echo 0; fi; }

# Redis on 6379: CPU seconds (user + system, main thread and children) and script calls so far.
redis_cpu_s() { { redis-cli -h 127.0.0.1 info cpu 2>/dev/null || true; } | tr -d '\r' | awk -F: '/^used_cpu_(sys|user):/ {s += $2} END {print s + 0}'; }
redis_scripts() {
  { redis-cli -h 127.0.0.1 info commandstats 2>/dev/null || true; } | tr -d '\r' |
    awk -F'[:=,]' '/^cmdstat_(evalsha|eval|fcall):/ {n += $3} END {print n + 0}'
}

# selling_run URL: wrk on the purchase route of the engine last started; sets RPS, REQS and
# ENGINE_US (the engine's CPU microseconds per request), REDIS_US and SCRIPTS_PER (Redis CPU
# microseconds and script calls per request) for a gate on 6379, and TANSU_US and MARIADB_US
# (the broker's and MariaDB's CPU microseconds per request; 0 when they are not running).
selling_run() {
  local pid=${PIDS[-1]} cpu0 rcpu0 calls0 tcpu0 mcpu0 maria
  # Steady state (see `warm`): a sale opens long after its engine starts.
  warm "$1"
  maria=$(pidof mariadbd || true); maria=${maria%% *}
  cpu0=$(cpu_s "$pid"); rcpu0=$(redis_cpu_s); calls0=$(redis_scripts)
  tcpu0=$(other_cpu_s "${TANSU_PID:-}"); mcpu0=$(other_cpu_s "$maria")
  "${WRK[@]}" "$1" >"$WORK/wrk.txt"
  RPS=$(rps <"$WORK/wrk.txt")
  REQS=$(awk '/requests in/ {print $1}' "$WORK/wrk.txt")
  per() { python3 -c "print(f'{($1 - $2) * 1e6 / $REQS:.1f}')"; }
  ENGINE_US=$(per "$(cpu_s "$pid")" "$cpu0")
  REDIS_US=$(per "$(redis_cpu_s)" "$rcpu0")
  TANSU_US=$(per "$(other_cpu_s "${TANSU_PID:-}")" "$tcpu0")
  MARIADB_US=$(per "$(other_cpu_s "$maria")" "$mcpu0")
  SCRIPTS_PER=$(python3 -c "print(f'{($(redis_scripts) - $calls0) / $REQS:.3f}')")
}

echo "== baseline: bare axum, POST /seckill/seckill"
target/release/examples/bare 127.0.0.1:3099 >/dev/null &
PIDS+=($!)
sleep 0.3
BARE=$(measured_rps http://127.0.0.1:3099/seckill/seckill)
stop_all
echo "   $BARE req/s"

echo "== sold-out path: demo stock 0"
start_engine soldout 0
SOLDOUT=$(measured_rps "$URL/seckill/seckill")
stop_all
echo "   $SOLDOUT req/s"

echo "== selling path: every request a new buyer, every success fsynced (group commit)"
start_engine selling 1000000000
selling_run "$URL/seckill/seckill"
SELLING=$RPS
EMBEDDED_US=$ENGINE_US
SOLD=$(curl -s -H "authorization: Bearer $SECKILL_ADMIN_TOKEN" "$URL/api/sales/1/audit")
stop_all
echo "   $SELLING req/s, engine CPU $EMBEDDED_US µs per purchase; audit after: $SOLD"

echo "== the classic scenario: 2,000 buyers at once on 1,000 stock, served and persisted"
start_engine classic 1000
"$BIN" bench --url "$URL" -n 2000 -c 2000 --report "$WORK/classic.json" >"$WORK/classic.txt" || { cat "$WORK/classic.txt"; exit 1; }
CLASSIC_TOTAL=$(python3 -c "import json;r=json.load(open('$WORK/classic.json'));print(f\"{r['elapsed_s']+r['drain_s']:.3f}\")")
stop_all
echo "   served + persisted in $CLASSIC_TOTAL s"

free_port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }

# start_redis_cluster: three masters on free ports, no persistence (like the 6379 Redis of
# deps.sh), killed at exit; sets CLUSTER_URL for --redis-url. Explicit bus ports: the default
# (port + 10000) may be taken or beyond 65535.
start_redis_cluster() {
  local nodes=() urls=() port bus n ok
  for _ in 1 2 3; do
    port=$(free_port); bus=$(free_port)
    mkdir -p "$WORK/redis-$port"
    redis-server --bind 127.0.0.1 --port "$port" --cluster-enabled yes --cluster-port "$bus" \
      --cluster-config-file "$WORK/redis-$port/nodes.conf" --dir "$WORK/redis-$port" --save "" --appendonly no \
      >"$WORK/redis-$port.log" 2>&1 &
    CLUSTER_PIDS+=($!)
    nodes+=("127.0.0.1:$port"); urls+=("redis://127.0.0.1:$port")
  done
  for n in "${nodes[@]}"; do
    for _ in $(seq 100); do redis-cli -p "${n#*:}" ping 2>/dev/null | grep -q PONG && break; sleep 0.05; done
  done
  redis-cli --cluster create "${nodes[@]}" --cluster-replicas 0 --cluster-yes >"$WORK/redis-cluster.log"
  for _ in $(seq 100); do
    ok=1
    for n in "${nodes[@]}"; do redis-cli -p "${n#*:}" cluster info | grep -q cluster_state:ok || ok=0; done
    [ "$ok" = 1 ] && break
    sleep 0.1
  done
  CLUSTER_URL=$(IFS=,; echo "${urls[*]}")
}

DIST_SELLING=""; DIST_CLUSTER=""; DRAIN_100K=""; DRAIN_RATIO=""; DIST_SOLDOUT=""
DIST_US=""; DIST_REDIS_US=""; DIST_SCRIPTS=""
if [ -z "${EMBEDDED_ONLY:-}" ]; then
  TANSU=$(command -v tansu || echo "$HOME/.cargo/bin/tansu")
  PORT=$(free_port)
  "$TANSU" broker --storage-engine memory://tansu/ --listener-url "tcp://127.0.0.1:$PORT" \
    --advertised-listener-url "tcp://127.0.0.1:$PORT" >"$WORK/tansu.log" 2>&1 &
  TANSU_PID=$!
  sleep 1
  RUN=$(date +%s)
  dist() {  # dist NAME STOCK [extra serve flags]: sets URL
    local name=$1 stock=$2
    shift 2
    start_engine "$name" "$stock" --backend distributed --kafka-brokers "127.0.0.1:$PORT" \
      --kafka-topic "ratio-$name-$RUN" --redis-prefix "ratio-$name-$RUN" \
      --database-url "mysql://root@127.0.0.1:3306/ratio_${name}_$RUN" "$@"
  }

  echo "== distributed selling path: Redis gate, success after the broker's ack, consumer into MariaDB"
  dist selling 1000000000
  selling_run "$URL/seckill/seckill"
  DIST_SELLING=$RPS; DIST_US=$ENGINE_US; DIST_REDIS_US=$REDIS_US; DIST_SCRIPTS=$SCRIPTS_PER
  stop_all
  echo "   $DIST_SELLING req/s; per purchase: engine CPU $DIST_US µs, redis-server CPU $DIST_REDIS_US µs, $DIST_SCRIPTS script calls,"
  echo "   tansu CPU $TANSU_US µs, MariaDB CPU $MARIADB_US µs (the consumer's writes)"

  echo "== distributed sold-out path: demo stock 0"
  dist soldout 0
  DIST_SOLDOUT=$(measured_rps "$URL/seckill/seckill")
  stop_all
  echo "   $DIST_SOLDOUT req/s"

  echo "== the same, the gate on a three-master Redis Cluster instead of one Redis"
  start_redis_cluster
  dist cluster 1000000000 --redis-url "$CLUSTER_URL" --redis-cluster
  DIST_CLUSTER=$(measured_rps "$URL/seckill/seckill")
  stop_all
  for p in "${CLUSTER_PIDS[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  CLUSTER_PIDS=()
  echo "   $DIST_CLUSTER req/s"

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
  for db in selling soldout cluster drain; do mariadb -h 127.0.0.1 -uroot -e "DROP DATABASE IF EXISTS ratio_${db}_$RUN" || true; done
fi

python3 - "$BARE" "$SOLDOUT" "$SELLING" "$CLASSIC_TOTAL" "$DIST_SELLING" "$DRAIN_100K" "$DRAIN_RATIO" "$DIST_CLUSTER" \
  "$EMBEDDED_US" "$DIST_US" "$DIST_REDIS_US" "$DIST_SCRIPTS" "$DIST_SOLDOUT" <<'PY'
import sys
bare, soldout, selling, classic = map(float, sys.argv[1:5])
dist, drain100k, drain_ratio, cluster = sys.argv[5:9]
embedded_us, dist_us, redis_us, scripts, dist_soldout = sys.argv[9:14]
rows = [
    ("bare axum (baseline)", f"{bare:,.0f} req/s", "1.00x", "", None),
    ("sold-out path, embedded", f"{soldout:,.0f} req/s", f"{soldout / bare:.2f}x bare", ">= 0.8x bare", soldout / bare >= 0.8),
    ("selling path, embedded, every success fsynced", f"{selling:,.0f} req/s", f"{selling / bare:.2f}x bare", ">= 0.5x bare", selling / bare >= 0.5),
    ("classic scenario (2,000 buyers, 1,000 stock) served + persisted", f"{classic:.3f} s", "", "< 1 s", classic < 1),
]
if dist:
    d = float(dist)
    rows.append(("selling path, distributed (ack before success)", f"{d:,.0f} req/s", f"{d / selling:.2f}x embedded", ">= 0.5x embedded", d / selling >= 0.5))
    e, du = float(embedded_us), float(dist_us)
    rows.append(("engine CPU per purchase, distributed vs embedded", f"{du:.1f} vs {e:.1f} µs", f"{du / e:.2f}x", "<= 1.5x", du / e <= 1.5))
    rows.append(("redis-server CPU per purchase (INFO cpu, before/after)", f"{float(redis_us):.1f} µs", "", "<= 5 µs", float(redis_us) <= 5))
    rows.append(("Redis script calls (round trips) per purchase (INFO commandstats)", f"{float(scripts):.3f}", "", "<= 0.1", float(scripts) <= 0.1))
    ds = float(dist_soldout)
    rows.append(("sold-out path, distributed", f"{ds:,.0f} req/s", f"{ds / bare:.2f}x bare", ">= 0.8x bare", ds / bare >= 0.8))
    # One sale (the demo), so one shard takes the load: this is the cluster client's cost.
    c = float(cluster)
    rows.append(("selling path, distributed, gate on a 3-master Redis Cluster", f"{c:,.0f} req/s", f"{c / d:.2f}x one Redis", "", None))
    rows.append(("distributed: 100,000 orders, drain after the last answer", f"{float(drain100k):.2f} s", "", "", None))
    rows.append(("consumer drain into MariaDB vs plain multi-row INSERT", "", f"{float(drain_ratio):.2f}x", ">= 0.7x", float(drain_ratio) >= 0.7))
print()
print("| measurement | figure | ratio | target | met |")
print("|---|---:|---:|---|---|")
for name, figure, ratio, target, met in rows:
    print(f"| {name} | {figure} | {ratio} | {target} | {'' if met is None else ('yes' if met else 'NO')} |")
sys.exit(0 if all(m is not False for *_, m in rows) else 1)
PY
