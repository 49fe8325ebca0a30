#!/usr/bin/env bash
# What `--redis-wait-replicas 1` costs: distributed selling with the gate's Redis master
# answering alone, then waiting for its replica (WAIT) before each group's answers, in one run.
#
#   bash bench/replicas.sh             # 10 s per wrk run
#   DURATION=5 bash bench/replicas.sh
#
# A Redis master and one replica of its own (free ports, no persistence), a tansu broker,
# MariaDB on 3306; wrk -t2 -c100 on the classic purchase route, a new buyer per request.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/deps.sh
ensure_wrk; ensure_redis; ensure_mariadb; ensure_tansu
DURATION="${DURATION:-10}"
WRK=(wrk -t2 -c100 -d"${DURATION}s" -s bench/post.lua)
cargo build --release --locked --bin seckill >/dev/null 2>&1
BIN="${BIN:-target/release/seckill}"
WORK=$(mktemp -d)
RUN=$(date +%s)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  for db in $(mariadb -h 127.0.0.1 -uroot -N -e "SHOW DATABASES LIKE 'replicas\\_%\\_$RUN'" 2>/dev/null); do
    mariadb -h 127.0.0.1 -uroot -e "DROP DATABASE IF EXISTS \`$db\`" 2>/dev/null || true
  done
  rm -rf "$WORK"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }

MASTER=$(free_port); REPLICA=$(free_port); BROKER=$(free_port)
redis-server --bind 127.0.0.1 --port "$MASTER" --save "" --appendonly no --dir "$WORK" >/dev/null 2>&1 &
PIDS+=($!)
redis-server --bind 127.0.0.1 --port "$REPLICA" --save "" --appendonly no --dir "$WORK" \
  --replicaof 127.0.0.1 "$MASTER" >/dev/null 2>&1 &
PIDS+=($!)
"$(command -v tansu || echo "$HOME/.cargo/bin/tansu")" broker --storage-engine memory://tansu/ \
  --listener-url "tcp://127.0.0.1:$BROKER" --advertised-listener-url "tcp://127.0.0.1:$BROKER" >"$WORK/tansu.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 100); do redis-cli -p "$REPLICA" info replication 2>/dev/null | grep -q master_link_status:up && break; sleep 0.1; done
sleep 1

# selling WAIT_REPLICAS: req/s of a fresh engine on a fresh sale.
selling() {
  local name="w$1" pid url
  mkdir -p "$WORK/$name"
  SECKILL_LOG=warn "$BIN" serve --listen 127.0.0.1:0 --data-dir "$WORK/$name" --demo-stock 1000000000 \
    --backend distributed --redis-url "redis://127.0.0.1:$MASTER" --redis-wait-replicas "$1" \
    --kafka-brokers "127.0.0.1:$BROKER" --kafka-topic "replicas-$name-$RUN" --redis-prefix "replicas-$name-$RUN" \
    --database-url "mysql://root@127.0.0.1:3306/replicas_${name}_$RUN" >"$WORK/$name.out" 2>"$WORK/$name.log" &
  pid=$!
  PIDS+=("$pid")
  for _ in $(seq 300); do grep -q listening "$WORK/$name.out" 2>/dev/null && break; sleep 0.05; done
  url=$(awk '/listening on/ {print $4}' "$WORK/$name.out")
  "${WRK[@]}" "$url/seckill/seckill" | awk '/Requests\/sec/ {print $2}'
  kill "$pid"; wait "$pid" 2>/dev/null || true
}

ALONE=$(selling 0)
WAITED=$(selling 1)
echo "| selling, distributed | req/s |"
echo "|---|---:|"
echo "| answered once the master has it | $ALONE |"
echo "| answered once a replica has it too (--redis-wait-replicas 1) | $WAITED |"
python3 -c "print(f'ratio {$WAITED / $ALONE:.2f}')"
