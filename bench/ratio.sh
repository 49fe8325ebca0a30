#!/usr/bin/env bash
# Speed targets as ratios against a baseline measured in the same run (issue 4).
#
#   bash bench/ratio.sh            # 10 s per wrk run
#   DURATION=5 bash bench/ratio.sh
#
# Baseline: a bare axum server answering the same POST with a small JSON body
# (examples/bare.rs). Every figure is wrk -t2 -c100 on loopback, on this machine, in this run.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/deps.sh
ensure_wrk

DURATION="${DURATION:-10}"
WRK=(wrk -t2 -c100 -d"${DURATION}s" -s bench/post.lua)
cargo build --release --locked --example bare --bin seckill >/dev/null 2>&1
BIN=target/release/seckill
WORK=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT

rps() { awk '/Requests\/sec/ {print $2}'; }

# start_engine NAME STOCK -> URL on stdout
start_engine() {
  local name=$1 stock=$2
  mkdir -p "$WORK/$name"
  SECKILL_LOG=warn "$BIN" serve --listen 127.0.0.1:0 --data-dir "$WORK/$name" --demo-stock "$stock" \
    >"$WORK/$name.out" 2>"$WORK/$name.log" &
  PIDS+=($!)
  for _ in $(seq 100); do
    grep -q listening "$WORK/$name.out" 2>/dev/null && break
    sleep 0.05
  done
  awk '/listening on/ {print $4}' "$WORK/$name.out"
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
URL=$(start_engine soldout 0)
SOLDOUT=$("${WRK[@]}" "$URL/seckill/seckill" | rps)
stop_all
echo "   $SOLDOUT req/s"

echo "== selling path: every request a new buyer, every success fsynced (group commit)"
URL=$(start_engine selling 1000000000)
SELLING=$("${WRK[@]}" "$URL/seckill/seckill" | rps)
SOLD=$(curl -s "$URL/api/sales/1/audit")
stop_all
echo "   $SELLING req/s; audit after: $SOLD"

echo "== the seed's scenario: 2,000 buyers at once on 1,000 stock, served and persisted"
URL=$(start_engine seed 1000)
"$BIN" bench --url "$URL" -n 2000 -c 2000 --report "$WORK/seed.json" >"$WORK/seed.txt" || { cat "$WORK/seed.txt"; exit 1; }
SEED_TOTAL=$(python3 -c "import json;r=json.load(open('$WORK/seed.json'));print(f\"{r['elapsed_s']+r['drain_s']:.3f}\")")
stop_all
echo "   served + persisted in $SEED_TOTAL s"

python3 - "$BARE" "$SOLDOUT" "$SELLING" "$SEED_TOTAL" <<'PY'
import sys
bare, soldout, selling, seed = map(float, sys.argv[1:])
rows = [
    ("bare axum (baseline)", bare, 1.0, None),
    ("sold-out path", soldout, soldout / bare, 0.8),
    ("selling path, embedded, durable", selling, selling / bare, 0.5),
]
print()
print("| path | req/s | ratio to bare | target | met |")
print("|---|---:|---:|---:|---|")
ok = True
for name, r, ratio, target in rows:
    met = "" if target is None else ("yes" if ratio >= target else "NO")
    ok &= met != "NO"
    print(f"| {name} | {r:,.0f} | {ratio:.2f}x | {'' if target is None else f'>= {target}x'} | {met} |")
print(f"| seed scenario (2,000 buyers, 1,000 stock): served + persisted | {seed:.3f} s | | < 1 s | {'yes' if seed < 1 else 'NO'} |")
ok &= seed < 1
sys.exit(0 if ok else 1)
PY
