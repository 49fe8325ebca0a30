#!/usr/bin/env bash
# A/B two builds of the engine on the same machine, alternating, with wrk -t2 -c100 on the classic API's
# POST /seckill/seckill: the sold-out path (stock 0) and the selling path (every success fsynced).
#
#   git worktree add /tmp/old <commit> && (cd /tmp/old && cargo build --release)
#   bash bench/ab.sh /tmp/old/target/release/seckill target/release/seckill
#
# Prints new/old per round: what a change costs or saves, with the noise visible across rounds.
set -euo pipefail
cd "$(dirname "$0")/.."
OLD=$1; NEW=$2; DURATION=${DURATION:-5}; ROUNDS=${ROUNDS:-2}
source scripts/deps.sh
ensure_wrk
PORT=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
rps() {  # rps BIN STOCK
  local dir pid
  dir=$(mktemp -d)
  SECKILL_LOG=warn "$1" serve --listen "127.0.0.1:$PORT" --data-dir "$dir" --demo-stock "$2" >/dev/null 2>&1 &
  pid=$!
  sleep 0.5
  wrk -t2 -c100 -d"${DURATION}s" -s bench/post.lua "http://127.0.0.1:$PORT/seckill/seckill" | awk '/Requests\/sec/ {print $2}'
  kill "$pid"; wait "$pid" 2>/dev/null || true; rm -rf "$dir"
}
for round in $(seq "$ROUNDS"); do
  for stock in 0 1000000000; do
    old=$(rps "$OLD" "$stock"); new=$(rps "$NEW" "$stock")
    path=$([ "$stock" = 0 ] && echo sold-out || echo selling)
    python3 -c "print(f'round $round  $path  old {$old:,.0f}  new {$new:,.0f}  new/old {$new/$old:.3f}')"
  done
done
