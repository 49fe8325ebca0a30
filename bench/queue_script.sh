#!/usr/bin/env bash
# What the distributed waiting room's join costs Redis, in instructions per join counted by
# valgrind's callgrind, as bench/reserve_script.sh does for the purchase script.
#
#   bash bench/queue_script.sh              # the quick join (PREJOIN), as the room sends every
#                                           # join before a keyed `random_at_start` start
#   QUEUE=1 bash bench/queue_script.sh      # the same joins through the QUEUE script (what a
#                                           # join of an unkeyed queue costs)
#   SCRIPT=old.lua ARGS=old.args NKEYS=6 bash bench/queue_script.sh  # another version, its own
#                                                   # ARGV, and KEYS: the first NKEYS
#
# A private redis-server under callgrind on a free port takes CALLS script calls of GROUP joins
# of new buyers each (redis-benchmark, 4 connections; `__rand_int__` makes every buyer and ticket
# new), on a `random_at_start` queue before its start, as in bench/waiting_room.sh's join run.
# The instructions of the calls alone (counters zeroed after the set-up) over the joins made.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/callgrind_redis.sh
CALLS="${CALLS:-2000}"
GROUP="${GROUP:-20}"
KEYS=(q:meta q:users q:tickets q:pre q:seen q:at q:joined q:early)
NKEYS="${NKEYS:-8}"
ARGV_LINE=${ARGS:+$(cat "${ARGS:-}")}

if [ -n "${SCRIPT:-}" ]; then
  cp "$SCRIPT" "$WORK/script.lua"
elif [ -z "${QUEUE:-}" ]; then
  script_from src/waiting_room/redis.rs PREJOIN
  # Its keys (meta, early, joined, seen), then the time and the buyers.
  KEYS=(q:meta q:early q:joined q:seen)
  NKEYS=4
  ARGV_LINE=$(python3 -c "print(' '.join(['1764137000000'] + [f'u{i}:__rand_int__' for i in range($GROUP)]))")
else
  # The script as the room sends it: the shared prelude, then the queue.
  script_from src/waiting_room/redis.rs COMMON QUEUE
fi
# The header (now, opens an hour later, rate, burst, ttl, mode, no seed before the start), then
# `join, user, new ticket` per buyer.
[ -n "$ARGV_LINE" ] || ARGV_LINE=$(python3 -c "
print(' '.join(['1764137000000', '1764140600000', '100', '10', '3600000', 'random_at_start', 'x']
               + [f'join u{i}:__rand_int__ 0123456789abcdef{i:04d}__rand_int__' for i in range($GROUP)]))")

start_redis
# shellcheck disable=SC2086 # the ARGV line is split into arguments on purpose
counted "$CALLS" "$NKEYS" "${KEYS[@]:0:$NKEYS}" $ARGV_LINE
# Joins made: the queue's arrivals, or the quick joins' set.
JOINS=$(cli hget q:meta arrivals)
[ -n "$JOINS" ] || JOINS=$(cli scard q:early)
IR=$(stop_redis)
python3 -c "print(f'{$JOINS:,} joins in $CALLS calls of $GROUP: {$IR / max($JOINS, 1):,.0f} redis-server instructions per join')"
