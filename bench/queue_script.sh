#!/usr/bin/env bash
# What the distributed waiting room's join costs Redis, in instructions per join counted by
# valgrind's callgrind: unlike CPU time, the count does not move when the machine is busy, so
# two versions of the queue script compare exactly.
#
#   bash bench/queue_script.sh                       # the script in src/waiting_room/redis.rs
#   SCRIPT=old.lua NKEYS=6 bash bench/queue_script.sh  # another version (KEYS: its first NKEYS)
#
# A private redis-server under callgrind on a free port takes CALLS script calls of GROUP joins
# of new buyers each (redis-benchmark, 4 connections; `__rand_int__` makes every buyer and ticket
# new), on a `random_at_start` queue before its start, as in bench/waiting_room.sh's join run.
# The instructions of the calls alone (counters zeroed after the set-up) over the joins made.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/deps.sh
ensure_redis
command -v valgrind >/dev/null || { echo "installing valgrind"; apt_install valgrind; }
CALLS="${CALLS:-2000}"
GROUP="${GROUP:-20}"
NKEYS="${NKEYS:-7}"
WORK=$(mktemp -d)
VG_PID=""
cleanup() {
  if [ -n "$VG_PID" ]; then kill "$VG_PID" 2>/dev/null || true; wait "$VG_PID" 2>/dev/null || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT

if [ -n "${SCRIPT:-}" ]; then
  cp "$SCRIPT" "$WORK/script.lua"
else
  # The script as the room sends it: the shared prelude, then the queue.
  python3 - "$WORK/script.lua" <<'PY'
import re, sys
src = open("src/waiting_room/redis.rs").read()
const = lambda name: re.search(r'const %s: &str = r#"(.*?)"#;' % name, src, re.S).group(1)
open(sys.argv[1], "w").write(const("COMMON") + const("QUEUE"))
PY
fi
# The header (now, opens an hour later, rate, burst, ttl, mode, no seed before the start), then
# `join, user, new ticket, -` per buyer.
ARGV_LINE=$(python3 -c "
print(' '.join(['1764137000000', '1764140600000', '100', '10', '3600000', 'random_at_start', 'x']
               + [f'join u{i}:__rand_int__ 0123456789abcdef{i:04d}__rand_int__ -' for i in range($GROUP)]))")

PORT=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
valgrind --tool=callgrind --callgrind-out-file="$WORK/cg.out" \
  redis-server --bind 127.0.0.1 --port "$PORT" --save "" --appendonly no >"$WORK/redis.log" 2>&1 &
VG_PID=$!
cli() { redis-cli -p "$PORT" "$@"; }
for _ in $(seq 200); do cli ping 2>/dev/null | grep -q PONG && break; sleep 0.2; done
SHA=$(cli script load "$(cat "$WORK/script.lua")")
KEYS=(q:meta q:users q:tickets q:pre q:seen q:at q:joined)
callgrind_control -z "$VG_PID" >/dev/null 2>&1
# shellcheck disable=SC2086 # the ARGV line is split into arguments on purpose
redis-benchmark -p "$PORT" -r 100000000000 -n "$CALLS" -c 4 EVALSHA "$SHA" "$NKEYS" "${KEYS[@]:0:$NKEYS}" $ARGV_LINE >/dev/null
callgrind_control -d "$VG_PID" >/dev/null 2>&1
JOINS=$(cli hget q:meta arrivals)
cli shutdown nosave >/dev/null 2>&1 || true
wait "$VG_PID" 2>/dev/null || true
VG_PID=""
IR=$(grep -h '^totals:' "$WORK"/cg.out.* | tail -1 | awk '{print $2}')
python3 -c "print(f'{$JOINS:,} joins in $CALLS calls of $GROUP: {$IR / max($JOINS, 1):,.0f} redis-server instructions per join')"
