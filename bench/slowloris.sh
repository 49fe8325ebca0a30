#!/usr/bin/env bash
# One slow client must not take the sale down: a buyer's GET /seckill/getCount measured by wrk
# alone (the baseline), then again while an attacker holds CONNS connections that trickle
# their request head, one byte every 5 s, and reopens every connection the engine drops.
#
#   bash bench/slowloris.sh                       # 20,000 connections, 10 s per wrk run
#   CONNS=5000 DURATION=5 bash bench/slowloris.sh
#   SOURCES=8 bash bench/slowloris.sh             # the attacker spreads over 8 addresses
#   SERVE_FLAGS="--max-connections-per-ip 100000" bash bench/slowloris.sh
#
# The attacker connects from 127.0.0.2 (and .3, … with SOURCES > 1), wrk from 127.0.0.1, so the
# per-address cap is the attacker's alone. Prints the throughput ratio and p99 with and without
# the attack, how many attacking connections the engine held and refused, how many it closed on
# the header timeout, and the engine's memory per held connection (RSS delta / held). Both
# processes share this machine's cores: part of the victim's loss is the attacker's CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/deps.sh
ensure_wrk

CONNS="${CONNS:-20000}"
SOURCES="${SOURCES:-1}"
DURATION="${DURATION:-10}"
RAMP="${RAMP:-20}"
SERVE_FLAGS="${SERVE_FLAGS:-}"
cargo build --release --locked --no-default-features --bin seckill >/dev/null 2>&1
BIN="${BIN:-target/release/seckill}"
WORK=$(mktemp -d)
ENGINE_PGID=""
ATTACK_PGID=""
cleanup() {
  # Each was started as the leader of its own process group: kill the whole group.
  for g in $ATTACK_PGID $ENGINE_PGID; do kill -- "-$g" 2>/dev/null || true; done
  for g in $ATTACK_PGID $ENGINE_PGID; do
    for _ in $(seq 50); do kill -0 -- "-$g" 2>/dev/null || break; sleep 0.1; done
    kill -KILL -- "-$g" 2>/dev/null || true
  done
  rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

# The attacker: CONNS coroutines, each opening a connection, sending a partial head and then a
# header byte every 5 s; a connection closed by the engine is reopened after 1 s.
cat >"$WORK/attack.py" <<'PY'
import asyncio, json, os, random, resource, sys

host, port, conns, sources, stats_path = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
# A descriptor per connection, and a few for the interpreter itself.
conns = min(conns, hard - 64)
stats = {"connections": conns, "connected": 0, "opened": 0, "dropped": 0, "connect_errors": 0}

async def one(i):
    source = f"127.0.0.{2 + i % sources}"
    await asyncio.sleep(random.random() * 5)  # a ramp, not one SYN burst
    while True:
        try:
            reader, writer = await asyncio.open_connection(host, port, local_addr=(source, 0))
        except OSError:
            stats["connect_errors"] += 1
            await asyncio.sleep(1)
            continue
        stats["opened"] += 1
        stats["connected"] += 1
        try:
            writer.write(b"GET /seckill/getCount HTTP/1.1\r\nHost: x\r\nX-a: ")
            while True:
                try:
                    if await asyncio.wait_for(reader.read(100), 5) == b"":
                        break
                except asyncio.TimeoutError:
                    writer.write(b"a")
                    await writer.drain()
        except OSError:
            pass
        finally:
            stats["connected"] -= 1
            stats["dropped"] += 1
            writer.close()
        await asyncio.sleep(1)

async def report():
    while True:
        try:
            with open(stats_path + ".tmp", "w") as f:
                json.dump(stats, f)
            os.replace(stats_path + ".tmp", stats_path)
        except OSError:
            pass  # out of descriptors for a moment: report next time
        await asyncio.sleep(1)

async def main():
    await asyncio.gather(report(), *(one(i) for i in range(conns)))

asyncio.run(main())
PY

# metric NAME: a sample of /metrics (0 when the engine does not answer within 10 s).
metric() {
  curl -s --max-time 10 "$URL/metrics" >"$WORK/metrics.txt" || true
  awk -v m="$1" '$1 == m {v = $2} END {print v == "" ? 0 : v}' "$WORK/metrics.txt"
}
rss_kb() { awk '/^VmRSS/ {print $2}' "/proc/$ENGINE_PID/status"; }
rps() { awk '/Requests\/sec/ {print $2}' "$1"; }
# wrk --latency's 99% line, in milliseconds.
p99_ms() {
  awk '$1 == "99%" {
    v = $2; u = v; sub(/[0-9.]+/, "", u); sub(/[a-z]+$/, "", v);
    f = (u == "us") ? 0.001 : (u == "ms") ? 1 : (u == "s") ? 1000 : (u == "m") ? 60000 : 1;
    printf "%.2f", v * f }' "$1"
}
victim() { wrk -t2 -c50 -d"${DURATION}s" --latency "$URL/seckill/getCount" >"$1" 2>&1; }

echo "== engine: $BIN serve $SERVE_FLAGS"
# shellcheck disable=SC2086 # SERVE_FLAGS is a list of flags
SECKILL_LOG=warn setsid "$BIN" serve --listen 127.0.0.1:0 --data-dir "$WORK/data" $SERVE_FLAGS \
  >"$WORK/engine.out" 2>"$WORK/engine.log" &
ENGINE_PID=$!
ENGINE_PGID=$ENGINE_PID
for _ in $(seq 300); do grep -q listening "$WORK/engine.out" 2>/dev/null && break; sleep 0.05; done
URL=$(awk '/listening on/ {print $4}' "$WORK/engine.out")
PORT=${URL##*:}

echo "== baseline: wrk -t2 -c50 GET /seckill/getCount, ${DURATION}s, no attack"
wrk -t2 -c10 -d2s "$URL/seckill/getCount" >/dev/null 2>&1 # warm-up
victim "$WORK/base.txt"
BASE_RPS=$(rps "$WORK/base.txt")
BASE_P99=$(p99_ms "$WORK/base.txt")
echo "   $BASE_RPS req/s, p99 $BASE_P99 ms"
RSS0=$(rss_kb)
OPEN0=$(metric seckill_connections_open)

echo "== attack: $CONNS trickling connections from $SOURCES address(es), ramp ${RAMP}s"
setsid python3 "$WORK/attack.py" 127.0.0.1 "$PORT" "$CONNS" "$SOURCES" "$WORK/stats.json" \
  >"$WORK/attack.log" 2>&1 &
ATTACK_PGID=$!
# The most attacking connections held at once during the ramp, and the engine's RSS then.
HELD=0
RSS1=$RSS0
for _ in $(seq "$RAMP"); do
  sleep 1
  held=$(( $(metric seckill_connections_open) - OPEN0 ))
  if [ "$held" -gt "$HELD" ]; then HELD=$held; RSS1=$(rss_kb); fi
done
echo "   most held by the engine at once: $HELD; attacker: $(cat "$WORK/stats.json" 2>/dev/null)"

echo "== victim under attack: wrk -t2 -c50 GET /seckill/getCount, ${DURATION}s"
victim "$WORK/attack.txt"
ATK_RPS=$(rps "$WORK/attack.txt")
ATK_P99=$(p99_ms "$WORK/attack.txt")
ERRORS=$(awk '/Socket errors|Non-2xx/ {print}' "$WORK/attack.txt")
HELD_END=$(( $(metric seckill_connections_open) - OPEN0 ))
PER_IP=$(metric 'seckill_connections_refused_total{reason="per_ip"}')
TOTAL=$(metric 'seckill_connections_refused_total{reason="total"}')
TIMEOUTS=$(metric seckill_header_timeouts_total)
STATS=$(cat "$WORK/stats.json" 2>/dev/null || echo '{}')
echo "   $ATK_RPS req/s, p99 $ATK_P99 ms ${ERRORS:+($ERRORS)}"

echo
echo "== results (this machine: $(nproc) cores; attacker, engine and wrk share them)"
printf '   throughput under attack / baseline: %s\n' "$(awk -v a="$ATK_RPS" -v b="$BASE_RPS" 'BEGIN {printf "%.2f", a / b}')"
printf '   p99: baseline %s ms, under attack %s ms\n' "$BASE_P99" "$ATK_P99"
printf '   attacking connections held: at most %s at once during the ramp, %s at the end\n' "$HELD" "$HELD_END"
printf '   refused at accept: per_ip %s, total %s; closed on the header timeout: %s\n' "$PER_IP" "$TOTAL" "$TIMEOUTS"
printf '   attacker: %s\n' "$STATS"
if [ "$HELD" -gt 0 ]; then
  printf '   engine memory per held connection: %s KiB (RSS %s -> %s KiB)\n' \
    "$(awk -v a="$RSS0" -v b="$RSS1" -v n="$HELD" 'BEGIN {printf "%.1f", (b - a) / n}')" "$RSS0" "$RSS1"
fi
