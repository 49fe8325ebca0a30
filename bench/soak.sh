#!/usr/bin/env bash
# Memory under a long sale: does the engine's RSS level off?
#
#   bash bench/soak.sh                  # 10 minutes, then 1,000,000 distinct buyers
#   SOAK_SECS=120 BUYERS=200000 bash bench/soak.sh
#
# One embedded engine (release build) under four loads at once for SOAK_SECS: the sold-out path
# (the demo sale, stock 0), new buyers of a sale of SOAK_STOCK units (selling until it sells
# out, then the stampede's sold-out path: a buyer who got nothing leaves nothing behind), buyers'
# status polls (GET /api/sales/{id}) and admin reads (/api/admin/stats, /metrics). Memory grows
# with the buyers who hold units, which the gate must remember for the per-user limit; once the
# stock is gone it must stop growing.
# RSS is sampled every second into soak.csv and drawn as soak.svg (in OUT, default bench/out/).
# Levelled off = the mean RSS of the last fifth is within 10 % of the middle fifth's.
# Then memory per distinct buyer: RSS growth over BUYERS new buyers of a fresh engine, divided.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/deps.sh
ensure_wrk

SOAK_SECS="${SOAK_SECS:-600}"
SOAK_STOCK="${SOAK_STOCK:-200000}"
BUYERS="${BUYERS:-1000000}"
OUT="${OUT:-bench/out}"
BIN="${BIN:-target/release/seckill}"
cargo build --release --locked --bin seckill >/dev/null 2>&1
mkdir -p "$OUT"
WORK=$(mktemp -d)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT
export SECKILL_ADMIN_TOKEN="soak-admin-token"

# start_engine NAME DEMO_STOCK: sets URL and ENGINE (not in $(...), so cleanup sees the pid).
start_engine() {
  mkdir -p "$WORK/$1"
  SECKILL_LOG=warn "$BIN" serve --listen 127.0.0.1:0 --data-dir "$WORK/$1" --demo-stock "$2" \
    >"$WORK/$1.out" 2>"$WORK/$1.log" &
  ENGINE=$!
  PIDS+=("$ENGINE")
  for _ in $(seq 300); do grep -q listening "$WORK/$1.out" 2>/dev/null && break; sleep 0.05; done
  URL=$(awk '/listening on/ {print $4}' "$WORK/$1.out")
}

create_sale() {
  curl -sf -H "authorization: Bearer $SECKILL_ADMIN_TOKEN" -H 'content-type: application/json' \
    -d "{\"name\":\"soak\",\"stock\":$1,\"per_user_limit\":1}" "$URL/api/sales" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])'
}

# Every request a buyer never seen before: a per-thread prefix and a counter.
cat >"$WORK/buyers.lua" <<'LUA'
local threads = 0
function setup(thread) threads = threads + 1; thread:set("prefix", "t" .. threads .. "-") end
local n = 0
function request()
  n = n + 1
  return wrk.format("POST", wrk.path, { ["X-User-Id"] = prefix .. n }, nil)
end
LUA

rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }

echo "== soak: ${SOAK_SECS} s of sold-out, selling, status polls and admin reads"
start_engine soak 0
SALE=$(create_sale "$SOAK_STOCK")
: >"$OUT/soak.csv"
echo "second,rss_kib" >>"$OUT/soak.csv"
wrk -t1 -c20 -d"${SOAK_SECS}s" "$URL/seckill/seckill" -s bench/post.lua >"$WORK/soldout.txt" &
PIDS+=($!)
wrk -t1 -c20 -d"${SOAK_SECS}s" -s "$WORK/buyers.lua" "$URL/api/sales/$SALE/purchase" >"$WORK/selling.txt" &
PIDS+=($!)
wrk -t1 -c10 -d"${SOAK_SECS}s" "$URL/api/sales/$SALE" >"$WORK/status.txt" &
PIDS+=($!)
(
  end=$((SECONDS + SOAK_SECS))
  while [ $SECONDS -lt $end ]; do
    curl -s -o /dev/null -H "authorization: Bearer $SECKILL_ADMIN_TOKEN" "$URL/api/admin/stats" || true
    curl -s -o /dev/null "$URL/metrics" || true
    sleep 0.2
  done
) &
PIDS+=($!)
for s in $(seq "$SOAK_SECS"); do
  echo "$s,$(rss_kib "$ENGINE")" >>"$OUT/soak.csv"
  sleep 1
done
wait "${PIDS[@]:1}" 2>/dev/null || true
SOLD=$(curl -s "$URL/api/sales/$SALE" | python3 -c 'import json,sys; print(json.load(sys.stdin)["sold"])')
kill "$ENGINE"; wait "$ENGINE" 2>/dev/null || true
PIDS=()

LEVELLED=0
python3 - "$OUT/soak.csv" "$OUT/soak.svg" "$SOLD" <<'PY' || LEVELLED=1
import csv, sys
rows = [(int(r["second"]), int(r["rss_kib"])) for r in csv.DictReader(open(sys.argv[1]))]
n = len(rows)
fifth = max(1, n // 5)
middle = [r for _, r in rows[2 * fifth:3 * fifth]]
last = [r for _, r in rows[-fifth:]]
m, l = sum(middle) / len(middle), sum(last) / len(last)
growth = (l - m) / m
w, h, pad = 800, 300, 40
top = max(r for _, r in rows) * 1.1
pts = " ".join(f"{pad + (w - 2 * pad) * s / rows[-1][0]:.1f},{h - pad - (h - 2 * pad) * r / top:.1f}" for s, r in rows)
svg = f"""<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="white"/>
<polyline fill="none" stroke="#e77005" stroke-width="1.5" points="{pts}"/>
<line x1="{pad}" y1="{h - pad}" x2="{w - pad}" y2="{h - pad}" stroke="#888"/>
<line x1="{pad}" y1="{pad}" x2="{pad}" y2="{h - pad}" stroke="#888"/>
<text x="{pad}" y="{pad - 10}">engine RSS over {rows[-1][0]} s of load (max {top / 1.1 / 1024:.0f} MiB); {sys.argv[3]} units sold</text>
<text x="{w - pad - 60}" y="{h - pad + 20}">seconds</text>
</svg>"""
open(sys.argv[2], "w").write(svg)
print(f"   RSS: middle fifth {m / 1024:.1f} MiB, last fifth {l / 1024:.1f} MiB ({growth:+.1%}); "
      f"{sys.argv[3]} units sold; plot {sys.argv[2]}")
print("   levelled off" if growth < 0.10 else "   STILL GROWING")
sys.exit(0 if growth < 0.10 else 1)
PY
for f in soldout selling status; do echo "   $f: $(awk '/Requests\/sec/ {print $2}' "$WORK/$f.txt") req/s"; done

echo "== memory per distinct buyer: ${BUYERS} new buyers of a fresh engine"
start_engine buyers 0
SALE=$(create_sale "$BUYERS")
sleep 1
BEFORE=$(rss_kib "$ENGINE")
"$BIN" bench --url "$URL" --sale "$SALE" --users "$BUYERS" -n "$BUYERS" -c 200 --no-check >"$WORK/buyers.txt"
AFTER=$(rss_kib "$ENGINE")
python3 -c "print(f'   RSS {$BEFORE/1024:.1f} MiB -> {$AFTER/1024:.1f} MiB: {($AFTER-$BEFORE)*1024/$BUYERS:.0f} bytes per buyer')"
exit "$LEVELLED"
