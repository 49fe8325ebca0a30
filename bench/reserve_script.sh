#!/usr/bin/env bash
# What the distributed gate's purchase script costs Redis, in instructions per purchase counted
# by valgrind's callgrind: unlike CPU time, the count does not move when the machine is busy, so
# two versions of the script compare exactly.
#
#   bash bench/reserve_script.sh                      # the script in src/gate/redis.rs
#   SCRIPT=old.lua ARGS=old.args bash bench/reserve_script.sh   # another version, its own ARGV
#   WARM=2000 PROFILE=1 bash bench/reserve_script.sh  # on a sale with 40,000 buyers; where it goes
#
# A private redis-server under callgrind on a free port takes CALLS script calls of GROUP new
# buyers each (redis-benchmark, 4 connections; `__rand_int__` makes every buyer and order id
# new), on a sale with unbounded stock and a limit of 1, as in bench/ratio.sh's selling run.
# The instructions of the calls alone (counters zeroed after the set-up) over the purchases made.
# Confirmations are not sent, so the pending set grows: the figure is for comparing scripts.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/callgrind_redis.sh
CALLS="${CALLS:-2000}"
GROUP="${GROUP:-20}"

if [ -n "${SCRIPT:-}" ]; then
  cp "$SCRIPT" "$WORK/script.lua"
  ARGV_LINE=$(cat "$ARGS")
else
  # The script as the gate sends it: the shared prelude, then the reservation.
  script_from src/gate/redis.rs BUYERS RESERVE
  ARGV_LINE=$(python3 -c "
print(' '.join(['1764137000000'] + [f'u{i}:__rand_int__ 0190a1b2-c3d4-7e5f-8a9b-__rand_int__' for i in range($GROUP)]))")
fi

start_redis
KEYS=(b:meta b:buyers b:pending b:holds b:deadlines)
cli hset b:meta stock 1000000000 limit 1 remaining 1000000000 window 0 >/dev/null
# WARM=N: N calls first, not counted, so the counted ones meet a sale with N x GROUP buyers
# already (as in a selling run) rather than a fresh one.
WARM="${WARM:-0}"
# shellcheck disable=SC2086 # the ARGV line is split into arguments on purpose
if [ "$WARM" -gt 0 ]; then redis-benchmark -p "$PORT" -r 100000000000 -n "$WARM" -c 4 EVALSHA "$SHA" 5 "${KEYS[@]}" $ARGV_LINE >/dev/null; fi
BEFORE=$(cli hget b:meta remaining)
# shellcheck disable=SC2086
counted "$CALLS" 5 "${KEYS[@]}" $ARGV_LINE
SOLD=$((BEFORE - $(cli hget b:meta remaining)))
IR=$(stop_redis)
python3 -c "print(f'{$SOLD:,} purchases in $CALLS calls of $GROUP: {$IR / max($SOLD, 1):,.0f} redis-server instructions per purchase')"
