#!/usr/bin/env bash
# What the distributed gate's purchase script costs Redis, in instructions per purchase counted
# by valgrind's callgrind: unlike CPU time, the count does not move when the machine is busy, so
# two versions of the script compare exactly.
#
#   bash bench/reserve_script.sh                      # the script in src/gate/redis.rs
#   SCRIPT=old.lua ARGS=old.args bash bench/reserve_script.sh   # another version, its own ARGV
#
# A private redis-server under callgrind on a free port takes CALLS script calls of GROUP new
# buyers each (redis-benchmark, 4 connections; `__rand_int__` makes every buyer and order id
# new), on a sale with unbounded stock and a limit of 1, as in bench/ratio.sh's selling run.
# The instructions of the calls alone (counters zeroed after the set-up) over the purchases made.
# Confirmations are not sent, so the pending set grows: the figure is for comparing scripts.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/deps.sh
ensure_redis
command -v valgrind >/dev/null || { echo "installing valgrind"; apt_install valgrind; }
CALLS="${CALLS:-2000}"
GROUP="${GROUP:-20}"
WORK=$(mktemp -d)
VG_PID=""
cleanup() {
  if [ -n "$VG_PID" ]; then kill "$VG_PID" 2>/dev/null || true; wait "$VG_PID" 2>/dev/null || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT

if [ -n "${SCRIPT:-}" ]; then
  cp "$SCRIPT" "$WORK/script.lua"
  ARGV_LINE=$(cat "$ARGS")
else
  # The script as the gate sends it: the shared prelude, then the reservation.
  python3 - "$WORK/script.lua" <<'PY'
import re, sys
src = open("src/gate/redis.rs").read()
const = lambda name: re.search(r'const %s: &str = r#"(.*?)"#;' % name, src, re.S).group(1)
open(sys.argv[1], "w").write(const("BUYERS") + const("RESERVE"))
PY
  ARGV_LINE=$(python3 -c "
print(' '.join(['1764137000000'] + [f'u{i}:__rand_int__ 0190a1b2-c3d4-7e5f-8a9b-__rand_int__' for i in range($GROUP)]))")
fi

PORT=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
valgrind --tool=callgrind --callgrind-out-file="$WORK/cg.out" \
  redis-server --bind 127.0.0.1 --port "$PORT" --save "" --appendonly no >"$WORK/redis.log" 2>&1 &
VG_PID=$!
cli() { redis-cli -p "$PORT" "$@"; }
for _ in $(seq 200); do cli ping 2>/dev/null | grep -q PONG && break; sleep 0.2; done
SHA=$(cli script load "$(cat "$WORK/script.lua")")
KEYS=(b:meta b:buyers b:pending b:holds b:deadlines)
cli hset b:meta stock 1000000000 limit 1 remaining 1000000000 window 0 >/dev/null
callgrind_control -z "$VG_PID" >/dev/null 2>&1
# shellcheck disable=SC2086 # the ARGV line is split into arguments on purpose
redis-benchmark -p "$PORT" -r 100000000000 -n "$CALLS" -c 4 EVALSHA "$SHA" 5 "${KEYS[@]}" $ARGV_LINE >/dev/null
callgrind_control -d "$VG_PID" >/dev/null 2>&1
SOLD=$((1000000000 - $(cli hget b:meta remaining)))
cli shutdown nosave >/dev/null 2>&1 || true
wait "$VG_PID" 2>/dev/null || true
VG_PID=""
IR=$(grep -h '^totals:' "$WORK"/cg.out.* | tail -1 | awk '{print $2}')
python3 -c "print(f'{$SOLD:,} purchases in $CALLS calls of $GROUP: {$IR / max($SOLD, 1):,.0f} redis-server instructions per purchase')"
