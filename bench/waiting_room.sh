#!/usr/bin/env bash
# The waiting room's speed, as ratios against the sold-out path measured in the same run, and
# the memory a million joiners take.
#
#   bash bench/waiting_room.sh                   # 10 s per wrk run, 1,000,000 joiners
#   DURATION=5 JOINERS=200000 bash bench/waiting_room.sh
#   EMBEDDED_ONLY=1 bash bench/waiting_room.sh   # no Redis/MariaDB/tansu needed
#
# Per mode (embedded; distributed: Redis gate and queue, tansu, MariaDB), each on a fresh engine,
# wrk -t2 -c100 on loopback:
# - baseline: POST /api/sales/{id}/purchase on a sold-out sale, a new buyer per request;
# - join: POST /api/sales/{id}/queue on a `random_at_start` sale an hour before its start (the
#   stampede before a sale), a new buyer per request, so each takes a new ticket;
# - poll: GET /api/sales/{id}/queue/{ticket} over 10,000 tickets waiting in a started queue,
#   after a one-second pass that polls each once (steady state);
# - memory: JOINERS joins of new buyers into a fresh engine's room; embedded: the engine's RSS
#   before and after; distributed: Redis `used_memory` before and after.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/deps.sh
ensure_wrk
if [ -z "${EMBEDDED_ONLY:-}" ]; then ensure_redis; ensure_mariadb; ensure_tansu; fi

DURATION="${DURATION:-10}"
JOINERS="${JOINERS:-1000000}"
POLL_TICKETS="${POLL_TICKETS:-10000}"
THREADS=2
WRK=(wrk -t"$THREADS" -c100 -d"${DURATION}s")
cargo build --release --locked --bin seckill >/dev/null 2>&1
BIN="${BIN:-target/release/seckill}"
WORK=$(mktemp -d)
RUN=$(date +%s)
PREFIX="wroom-$RUN"
PIDS=()
TANSU_PID=""
cleanup() {
  for p in "${PIDS[@]}" $TANSU_PID; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  if [ -z "${EMBEDDED_ONLY:-}" ]; then
    redis-cli -h 127.0.0.1 --scan --pattern "$PREFIX:*" | xargs -r -n 1000 redis-cli -h 127.0.0.1 del >/dev/null || true
    for db in $(mariadb -h 127.0.0.1 -uroot -N -e "SHOW DATABASES LIKE 'wroom\\_%\\_$RUN'" 2>/dev/null); do
      mariadb -h 127.0.0.1 -uroot -e "DROP DATABASE IF EXISTS $db" || true
    done
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT

export SECKILL_ADMIN_TOKEN="${SECKILL_ADMIN_TOKEN:-waiting-room-admin-token}"

rps() { awk '/Requests\/sec/ {print $2}'; }
free_port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }

# start_engine NAME [extra serve flags]: sets URL and ENGINE_PID. Not in $(...), so PIDS keeps it.
start_engine() {
  local name=$1
  shift
  mkdir -p "$WORK/$name"
  SECKILL_LOG=warn "$BIN" serve --listen 127.0.0.1:0 --data-dir "$WORK/$name" --demo-stock 0 "$@" \
    >"$WORK/$name.out" 2>"$WORK/$name.log" &
  ENGINE_PID=$!
  PIDS+=("$ENGINE_PID")
  for _ in $(seq 600); do
    grep -q listening "$WORK/$name.out" 2>/dev/null && break
    sleep 0.05
  done
  URL=$(awk '/listening on/ {print $4}' "$WORK/$name.out")
  [ -n "$URL" ] || { cat "$WORK/$name.log" >&2; exit 1; }
}

stop_all() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done; PIDS=(); }

# create_sale JSON: prints the new sale's id.
create_sale() {
  curl -sf -X POST -H "authorization: Bearer $SECKILL_ADMIN_TOKEN" -H 'content-type: application/json' \
    -d "$1" "$URL/api/sales" | python3 -c 'import json,sys;print(json.load(sys.stdin)["id"])'
}

in_an_hour() { python3 -c 'import datetime;print((datetime.datetime.now(datetime.timezone.utc)+datetime.timedelta(hours=1)).isoformat())'; }

# join_tickets SALE N FILE: N new buyers join SALE; their `user ticket` lines into FILE.
join_tickets() {
  python3 - "$URL" "$1" "$2" "$3" <<'PY'
import http.client, json, sys, urllib.parse
url, sale, n, path = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
u = urllib.parse.urlparse(url)
conn = http.client.HTTPConnection(u.hostname, u.port)
with open(path, "w") as out:
    for i in range(n):
        user = f"poller-{i}"
        conn.request("POST", f"/api/sales/{sale}/queue", headers={"X-User-Id": user})
        r = conn.getresponse()
        body = json.loads(r.read())
        assert r.status == 200 and body["state"] in ("waiting", "admitted"), body
        out.write(f"{user} {body['ticket']}\n")
PY
}

# waiting SALE: tickets waiting in SALE's room, from the admin stats.
waiting() {
  curl -sf -H "authorization: Bearer $SECKILL_ADMIN_TOKEN" "$URL/api/admin/stats" |
    python3 -c "import json,sys;print(next((q['waiting'] for q in json.load(sys.stdin)['queues'] if q['sale']==$1), 0))"
}

rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
TICKS=$(getconf CLK_TCK)
cpu_s() { awk -v t="$TICKS" '{print ($14 + $15) / t}' "/proc/$1/stat"; }
redis_cpu_s() { { redis-cli -h 127.0.0.1 info cpu 2>/dev/null || true; } | tr -d '\r' | awk -F: '/^used_cpu_(sys|user):/ {s += $2} END {print s + 0}'; }

# timed_wrk MODE [wrk args]: runs wrk, prints its req/s; says on stderr the engine's (and, for
# distributed, redis-server's) CPU per request, where the time of the path goes.
timed_wrk() {
  local mode=$1
  shift
  local e0 r0 out
  e0=$(cpu_s "$ENGINE_PID"); r0=$(redis_cpu_s)
  out=$("${WRK[@]}" "$@")
  python3 - "$mode" "$e0" "$(cpu_s "$ENGINE_PID")" "$r0" "$(redis_cpu_s)" "$out" <<'PY' >&2
import re, sys
mode, e0, e1, r0, r1, out = sys.argv[1], *map(float, sys.argv[2:6]), sys.argv[6]
n = int(re.search(r"(\d+) requests in", out).group(1))
line = f"   CPU per request: engine {(e1 - e0) * 1e6 / n:.1f} µs"
if mode != "embedded":
    line += f", redis-server {(r1 - r0) * 1e6 / n:.1f} µs"
print(line)
PY
  echo "$out" | rps
}
redis_used() { redis-cli -h 127.0.0.1 info memory | awk -F: '/^used_memory:/ {print $2}' | tr -d '\r'; }

# measure MODE [serve flags]: sets RESULT to "soldout join poll memory_delta_bytes joiners". Not
# run in $(...): the engines it starts must stay in this shell's PIDS, for the exit trap.
measure() {
  local mode=$1
  shift
  local room='"waiting_room":{"admit_per_sec":1,"mode":"%s","ticket_ttl_secs":3600}'
  start_engine "$mode-speed" "$@"
  local plain upcoming started
  plain=$(create_sale '{"name":"sold out","stock":0}')
  upcoming=$(create_sale "{\"name\":\"joined\",\"stock\":1000,\"starts_at\":\"$(in_an_hour)\",$(printf "$room" random_at_start)}")
  started=$(create_sale "{\"name\":\"polled\",\"stock\":1000,$(printf "$room" fifo)}")
  echo "== $mode: sold-out path, POST /api/sales/$plain/purchase (stock 0)"
  # Each measured run follows a second of the same load (steady state, as in bench/ratio.sh).
  wrk -t"$THREADS" -c100 -d1s -s bench/buyers.lua "$URL/api/sales/$plain/purchase" -- "warm-so-$mode" >/dev/null
  SOLDOUT=$(timed_wrk "$mode" -s bench/buyers.lua "$URL/api/sales/$plain/purchase" -- "so-$mode")
  echo "   $SOLDOUT req/s"
  echo "== $mode: join, POST /api/sales/$upcoming/queue (random_at_start, an hour before the start)"
  wrk -t"$THREADS" -c100 -d1s -s bench/queue_join.lua "$URL/api/sales/$upcoming/queue" -- "warm-join-$mode" >/dev/null
  JOIN=$(timed_wrk "$mode" -s bench/queue_join.lua "$URL/api/sales/$upcoming/queue" -- "join-$mode")
  echo "   $JOIN req/s"
  echo "== $mode: poll, GET /api/sales/$started/queue/{ticket} over $POLL_TICKETS waiting tickets"
  join_tickets "$started" "$POLL_TICKETS" "$WORK/tickets-$mode"
  # Steady state, as in a sale where each ticket is polled for minutes: one second of polls
  # first, so each ticket's first poll (which a distributed instance sends to Redis) is behind.
  wrk -t"$THREADS" -c100 -d1s -s bench/queue_poll.lua "$URL" -- "$started" "$WORK/tickets-$mode" >/dev/null
  POLL=$(timed_wrk "$mode" -s bench/queue_poll.lua "$URL" -- "$started" "$WORK/tickets-$mode")
  echo "   $POLL req/s"
  stop_all

  echo "== $mode: memory of $JOINERS joiners (fresh engine)"
  start_engine "$mode-memory" "$@"
  upcoming=$(create_sale "{\"name\":\"a million\",\"stock\":1000,\"starts_at\":\"$(in_an_hour)\",$(printf "$room" random_at_start)}")
  sleep 1
  local before after
  if [ "$mode" = embedded ]; then before=$(rss_kib "$ENGINE_PID"); else before=$(redis_used); fi
  # Each wrk thread stops at its share, but wrk itself waits out -d: stop it once all joined.
  wrk -t"$THREADS" -c100 -d3600s -s bench/queue_join.lua "$URL/api/sales/$upcoming/queue" -- "mem-$mode" "$JOINERS" "$THREADS" \
    >"$WORK/mem-$mode.txt" &
  local wrk_pid=$! joined=0
  PIDS+=("$wrk_pid")
  while [ "$joined" -lt "$JOINERS" ]; do
    sleep 1
    kill -0 "$wrk_pid" 2>/dev/null || break
    joined=$(waiting "$upcoming")
  done
  kill "$wrk_pid" 2>/dev/null || true
  wait "$wrk_pid" 2>/dev/null || true
  sleep 1
  joined=$(waiting "$upcoming")
  if [ "$mode" = embedded ]; then after=$(rss_kib "$ENGINE_PID"); else after=$(redis_used); fi
  stop_all
  python3 - "$mode" "$before" "$after" "$joined" <<'PY'
import sys
mode, before, after, joined = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
unit = 1024 if mode == "embedded" else 1
delta = (after - before) * unit
what = "engine RSS" if mode == "embedded" else "Redis used_memory"
print(f"   {joined:,} tickets waiting; {what} {before * unit / 2**20:.1f} -> {after * unit / 2**20:.1f} MiB: {delta / joined:.0f} bytes per joiner")
PY
  local unit=1
  [ "$mode" = embedded ] && unit=1024
  RESULT="$SOLDOUT $JOIN $POLL $(( (after - before) * unit )) $joined"
}

measure embedded
EMB=$RESULT
DIST=""
if [ -z "${EMBEDDED_ONLY:-}" ]; then
  TANSU=$(command -v tansu || echo "$HOME/.cargo/bin/tansu")
  PORT=$(free_port)
  "$TANSU" broker --storage-engine memory://tansu/ --listener-url "tcp://127.0.0.1:$PORT" \
    --advertised-listener-url "tcp://127.0.0.1:$PORT" >"$WORK/tansu.log" 2>&1 &
  TANSU_PID=$!
  sleep 1
  measure distributed --backend distributed --kafka-brokers "127.0.0.1:$PORT" \
    --kafka-topic "$PREFIX" --redis-prefix "$PREFIX" --database-url "mysql://root@127.0.0.1:3306/wroom_d_$RUN"
  DIST=$RESULT
fi

python3 - "$EMB" "$DIST" <<'PY'
import sys
rows = []
for mode, figures in (("embedded", sys.argv[1]), ("distributed", sys.argv[2])):
    if not figures:
        continue
    soldout, join, poll, mem, joined = figures.split()
    soldout, join, poll, mem, joined = float(soldout), float(join), float(poll), int(mem), int(joined)
    rows.append((f"sold-out path, {mode} (baseline)", f"{soldout:,.0f} req/s", "1.00x", "", None))
    rows.append((f"join, {mode}", f"{join:,.0f} req/s", f"{join / soldout:.2f}x sold-out", ">= 0.8x", join / soldout >= 0.8))
    rows.append((f"poll, {mode}", f"{poll:,.0f} req/s", f"{poll / soldout:.2f}x sold-out", ">= 0.8x", poll / soldout >= 0.8))
    what = "engine RSS" if mode == "embedded" else "Redis used_memory"
    rows.append((f"{joined:,} joiners, {mode}: {what} delta", f"{mem / 2**20:.1f} MiB", f"{mem / joined:.0f} B/joiner", "", None))
print()
print("| measurement | figure | ratio | target | met |")
print("|---|---:|---:|---|---|")
for name, figure, ratio, target, met in rows:
    print(f"| {name} | {figure} | {ratio} | {target} | {'' if met is None else ('yes' if met else 'NO')} |")
sys.exit(0 if all(m is not False for *_, m in rows) else 1)
PY
