#!/usr/bin/env bash
# One hot sale on a three-master Redis Cluster, its stock on one hash tag (stock_shards 1), then
# split over three (stock_shards 3, one tag per master), in one run: the distributed gate alone
# (examples/gate.rs: no log, no store, every reservation confirmed), 100 concurrent buyers.
# Reports reservations/s and each master's CPU per reservation (from its INFO cpu), which is
# what the projection for K shards on K machines in the README is made from.
#
#   bash bench/shards.sh
#   DURATION=5 bash bench/shards.sh
#
# Three cluster masters on free ports, no persistence; everything it starts is stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/deps.sh
ensure_redis
DURATION="${DURATION:-10}"
cargo build --release --locked --features distributed --example gate >/dev/null 2>&1
WORK=$(mktemp -d)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT
# A free port whose cluster bus port (+10000) is free too.
free_port() {
  python3 -c '
import random, socket
while True:
    port = random.randint(20000, 40000)
    try:
        for p in (port, port + 10000):
            socket.socket().bind(("127.0.0.1", p))
    except OSError:
        continue
    print(port)
    break'
}

PORTS=()
for i in 0 1 2; do
  port=$(free_port)
  mkdir -p "$WORK/node$i"
  redis-server --bind 127.0.0.1 --port "$port" --cluster-enabled yes --cluster-config-file nodes.conf \
    --save "" --appendonly no --dir "$WORK/node$i" >/dev/null 2>&1 &
  PIDS+=($!); PORTS+=("$port")
done
for port in "${PORTS[@]}"; do
  for _ in $(seq 100); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.05; done
done
redis-cli --cluster create "${PORTS[@]/#/127.0.0.1:}" --cluster-yes >/dev/null
for _ in $(seq 200); do
  redis-cli -p "${PORTS[0]}" cluster info | grep -q cluster_state:ok && break; sleep 0.05
done
sleep 1
NODES=$(printf 'redis://127.0.0.1:%s,' "${PORTS[@]}" | sed 's/,$//')
for shards in 1 3; do
  target/release/examples/gate --cluster --redis "$NODES" --shards "$shards" --secs "$DURATION"
done
