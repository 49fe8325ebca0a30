#!/usr/bin/env bash
# What the production surface costs on the buy path (issue 6), as ratios against the plain
# per-user purchase (X-User-Id from a trusted gateway) measured in the same run:
#   * --auth jwt: every purchase carries an HS256 JWT the engine verifies
#   * + --require-purchase-token: every buyer first fetches a token (a second request), then buys
#   * + rate limits (per IP and per buyer, set high enough never to refuse): the buckets' cost
#
#   bash bench/production.sh               # 100,000 buyers per run
#   BUYERS=30000 bash bench/production.sh
#
# Load: `seckill bench` (closed loop, 100 in flight) against an embedded engine with enough stock
# that every purchase sells (the selling path, every success fsynced). The load generator shares
# the machine's cores with the engine, so absolute figures are below wrk's; the ratios are the point.
set -euo pipefail
cd "$(dirname "$0")/.."
BUYERS="${BUYERS:-100000}"
cargo build --release --locked --bin seckill >/dev/null 2>&1
BIN=target/release/seckill
WORK=$(mktemp -d)
PID=""
cleanup() { [ -n "$PID" ] && kill "$PID" 2>/dev/null; rm -rf "$WORK"; }
trap cleanup EXIT
# The admin token: the bench's checks read the audit, an admin route.
export SECKILL_JWT_SECRET=bench-jwt-secret SECKILL_PURCHASE_TOKEN_SECRET=bench-token-secret SECKILL_ADMIN_TOKEN=bench-admin-token

# run NAME JWT(0|1) [serve flags] -- [bench flags] -> purchases/s on stdout
run() {
  local name=$1 jwt=$2; shift 2
  local serve=() bench=()
  while [ $# -gt 0 ] && [ "$1" != "--" ]; do serve+=("$1"); shift; done
  [ $# -gt 0 ] && shift
  bench=("$@")
  mkdir -p "$WORK/$name"
  SECKILL_LOG=warn "$BIN" serve --listen 127.0.0.1:0 --data-dir "$WORK/$name" --demo-stock $((BUYERS * 2)) \
    "${serve[@]}" >"$WORK/$name.out" 2>"$WORK/$name.log" &
  PID=$!
  for _ in $(seq 300); do grep -q listening "$WORK/$name.out" 2>/dev/null && break; sleep 0.05; done
  local url
  url=$(awk '/listening on/ {print $4}' "$WORK/$name.out")
  local bench_secret=""
  [ "$jwt" = 1 ] && bench_secret=bench-jwt-secret
  SECKILL_BENCH_JWT_SECRET="$bench_secret" "$BIN" bench --url "$url" --users "$BUYERS" -n "$BUYERS" -c 100 \
    --report "$WORK/$name.json" "${bench[@]}" >"$WORK/$name.txt" || { cat "$WORK/$name.txt" >&2; exit 1; }
  kill "$PID"; wait "$PID" 2>/dev/null || true; PID=""
  python3 -c "import json;r=json.load(open('$WORK/$name.json'));assert r['counts']['success']==$BUYERS,r['counts'];print(f\"{r['counts']['success']/r['elapsed_s']:.0f}\")"
}

echo "== per-user purchase, X-User-Id (baseline)"
PLAIN=$(run plain 0 --)
echo "   $PLAIN purchases/s"
echo "== --auth jwt (HS256 verified per purchase)"
JWT=$(run jwt 1 --auth jwt --)
echo "   $JWT purchases/s"
echo "== --auth jwt + --require-purchase-token (token fetched, then purchase)"
TOKEN=$(run token 1 --auth jwt --require-purchase-token -- --purchase-token)
echo "   $TOKEN purchases/s"
echo "== X-User-Id + rate limits per IP (1e6/s) and per buyer (100/s), never refusing"
LIMITS=$(run limits 0 --rate-limit-ip 1000000 --rate-limit-user 100 --)
echo "   $LIMITS purchases/s"

python3 - "$PLAIN" "$JWT" "$TOKEN" "$LIMITS" <<'PY'
import sys
plain, jwt, token, limits = map(float, sys.argv[1:5])
print()
print("| buy path | purchases/s | ratio to X-User-Id |")
print("|---|---:|---:|")
for name, v in [("X-User-Id (baseline)", plain), ("JWT (HS256)", jwt),
                ("JWT + purchase token (2 requests per buyer)", token), ("rate limits on", limits)]:
    print(f"| {name} | {v:,.0f} | {v / plain:.2f}x |")
PY
