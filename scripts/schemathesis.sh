#!/usr/bin/env bash
# Fuzzes the HTTP API against its own OpenAPI document (`/api/openapi.json`) with schemathesis:
# no answer may be a 5xx, and every answer's status, content type and body must be one the
# document describes. Two runs: `--auth header` with the admin token (every admin route is
# reached), then `--auth jwt` with a valid HS256 buyer token in `Authorization`.
#
#   bash scripts/schemathesis.sh [path/to/seckill]      # default: target/release/seckill
#
# MAX_EXAMPLES (default 30) bounds the generated cases per operation and phase. Leaves nothing
# running; exits non-zero when either run finds a failure.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/deps.sh
source scripts/deps.sh

BIN="${1:-target/release/seckill}"
MAX_EXAMPLES="${MAX_EXAMPLES:-30}"
[ -x "$BIN" ] || { echo "no engine binary at $BIN (cargo build --release, or pass one)" >&2; exit 2; }
ensure_schemathesis
SCHEMATHESIS="$(schemathesis_bin)"

ADMIN_TOKEN="schemathesis-admin-token"
JWT_SECRET="schemathesis-jwt-secret"
WORK="$(mktemp -d)"
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# start_engine NAME [serve flags...]: starts an engine on a free port (the engine picks it and
# prints it) with its own data dir, and sets BASE.
start_engine() {
  local name="$1"
  shift
  mkdir -p "$WORK/$name"
  SECKILL_ADMIN_TOKEN="$ADMIN_TOKEN" SECKILL_JWT_SECRET="$JWT_SECRET" \
    SECKILL_PAYMENT_WEBHOOK_SECRET="schemathesis-webhook-secret" SECKILL_LOG=warn NO_COLOR=1 \
    "$BIN" serve --listen 127.0.0.1:0 --data-dir "$WORK/$name/data" --demo-stock 1000 "$@" \
    >"$WORK/$name/stdout" 2>"$WORK/$name/server.log" &
  PIDS+=("$!")
  BASE=""
  for _ in $(seq 200); do
    BASE="$(sed -n 's/^seckill listening on //p' "$WORK/$name/stdout" | head -n1)"
    [ -n "$BASE" ] && return
    kill -0 "${PIDS[-1]}" 2>/dev/null || break
    sleep 0.1
  done
  echo "the engine ($name) did not start:" >&2
  cat "$WORK/$name/server.log" >&2
  return 1
}

# An HS256 JWT for buyer `schemathesis-buyer`, valid for an hour.
mint_jwt() {
  python3 - "$JWT_SECRET" <<'PY'
import base64, hashlib, hmac, json, sys, time
def b64(data): return base64.urlsafe_b64encode(data).rstrip(b"=").decode()
header = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
claims = b64(json.dumps({"sub": "schemathesis-buyer", "exp": int(time.time()) + 3600}).encode())
signature = hmac.new(sys.argv[1].encode(), f"{header}.{claims}".encode(), hashlib.sha256).digest()
print(f"{header}.{claims}.{b64(signature)}")
PY
}

# fuzz NAME HEADER...: runs schemathesis against the engine at BASE, sending the HEADERs
# (`Name: value`) on every request. One worker: schemathesis's threads can trip CPython 3.11's
# compiler ("AST constructor recursion depth mismatch"), a runtime error of the tool's own.
fuzz() {
  local name="$1"
  shift
  local headers=()
  for header in "$@"; do headers+=(--header "$header"); done
  echo "== schemathesis: $name ($BASE)"
  (cd "$WORK/$name" && "$SCHEMATHESIS" run "$BASE/api/openapi.json" \
    --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance,response_headers_conformance \
    --max-examples "$MAX_EXAMPLES" \
    "${headers[@]}" \
    --generation-database none \
    --request-timeout 10 \
    --no-color \
    --workers 1)
}

failed=0
# Orders await payment, so the payment routes (cancel, the test provider's payment, the
# webhook) have something to act on.
PAYMENTS=(--payment-window-secs 600 --payment-provider test)
# Header mode ignores `Authorization` for buyers: the admin token and a buyer go together.
start_engine header --auth header "${PAYMENTS[@]}"
fuzz header "Authorization: Bearer $ADMIN_TOKEN" "X-User-Id: schemathesis-buyer" || failed=1
# JWT mode: `Authorization` names the buyer, so the admin routes answer 403 here.
start_engine jwt --auth jwt "${PAYMENTS[@]}"
fuzz jwt "Authorization: Bearer $(mint_jwt)" || failed=1
if [ "$failed" != 0 ]; then
  echo "schemathesis found failures (server logs were in $WORK, now removed)" >&2
fi
exit "$failed"
