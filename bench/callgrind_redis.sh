# Sourced by bench/reserve_script.sh and bench/queue_script.sh: a private redis-server under
# valgrind's callgrind on a free port, and the instructions a load of script calls costs it.
# Sets WORK (a temporary directory, removed on exit, with the script in WORK/script.lua).
source scripts/deps.sh
ensure_redis
command -v valgrind >/dev/null || { echo "installing valgrind"; apt_install valgrind; }
WORK=$(mktemp -d)
VG_PID=""
cleanup() {
  if [ -n "$VG_PID" ]; then kill "$VG_PID" 2>/dev/null || true; wait "$VG_PID" 2>/dev/null || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT

# script_from FILE CONST...: WORK/script.lua is those Lua constants of a Rust source file, in order.
script_from() {
  python3 - "$WORK/script.lua" "$@" <<'PY'
import re, sys
out, path, names = sys.argv[1], sys.argv[2], sys.argv[3:]
src = open(path).read()
const = lambda name: re.search(r'const %s: &str = r#"(.*?)"#;' % name, src, re.S).group(1)
open(out, "w").write("".join(const(name) for name in names))
PY
}

# start_redis: the private redis-server, up; `cli` talks to it; SHA is WORK/script.lua's.
start_redis() {
  PORT=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
  valgrind --tool=callgrind --callgrind-out-file="$WORK/cg.out" \
    redis-server --bind 127.0.0.1 --port "$PORT" --save "" --appendonly no >"$WORK/redis.log" 2>&1 &
  VG_PID=$!
  for _ in $(seq 200); do cli ping 2>/dev/null | grep -q PONG && break; sleep 0.2; done
  SHA=$(cli script load "$(cat "$WORK/script.lua")")
}
cli() { redis-cli -p "$PORT" "$@"; }

# counted CALLS ARGS...: runs CALLS calls of `EVALSHA SHA ARGS...` (redis-benchmark, 4
# connections; `__rand_int__` in ARGS is a new number each call) with the counters zeroed first.
counted() {
  local calls=$1
  shift
  callgrind_control -z "$VG_PID" >/dev/null 2>&1
  redis-benchmark -p "$PORT" -r 100000000000 -n "$calls" -c 4 EVALSHA "$SHA" "$@" >/dev/null
  callgrind_control -d "$VG_PID" >/dev/null 2>&1
}

# stop_redis: shuts the server down; prints the instructions of the counted calls. With
# PROFILE=1 it also writes, to standard error, where they went: redis-server's functions by
# inclusive instructions (Debian's binary names its exported functions; Lua's own internals show
# as addresses).
stop_redis() {
  cli shutdown nosave >/dev/null 2>&1 || true
  wait "$VG_PID" 2>/dev/null || true
  VG_PID=""
  local counted
  counted=$(ls "$WORK"/cg.out.* | tail -1)
  if [ -n "${PROFILE:-}" ]; then
    callgrind_annotate --inclusive=yes --threshold=100 "$counted" 2>/dev/null |
      grep -E '^ *[0-9,]+ \( *[0-9.]+%\)  \?\?\?:[a-zA-Z_]' | grep -v -E 'main|aeMain|below main' | head -30 >&2
  fi
  grep -h '^totals:' "$counted" | awk '{print $2}'
}
