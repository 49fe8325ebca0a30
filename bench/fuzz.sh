#!/usr/bin/env bash
# Runs each cargo-fuzz target of fuzz/ (libFuzzer, coverage-guided) for a fixed time and prints
# what it found: executions, corpus size, crashes. Not part of the test suite (CI's budget).
#
#   FUZZ_SECONDS=60 bash bench/fuzz.sh [target...]      # default: every target, 60 s each
#   FUZZ_TOOLCHAIN=stable bash bench/fuzz.sh            # stable even when a nightly is installed
#
# cargo-fuzz wants a nightly toolchain for its sanitizers (`-Zsanitizer`); an installed nightly
# is used with AddressSanitizer (nightly is never fetched: these machines cannot). With stable
# only, the targets run without a sanitizer (`-s none`; RUSTC_BOOTSTRAP lets stable take
# cargo-fuzz's few `-Z` flags): still coverage-guided, still with overflow checks and debug
# assertions, no AddressSanitizer, which safe Rust needs least. The same bodies run on stable as
# property tests: `cargo test --manifest-path fuzz/Cargo.toml`.
#
# A crash is saved in fuzz/artifacts/<target>/; replay it with
# `cargo fuzz run -s none <target> fuzz/artifacts/<target>/<file>` (RUSTC_BOOTSTRAP=1 on stable).
set -euo pipefail
cd "$(dirname "$0")/.."
FUZZ_SECONDS="${FUZZ_SECONDS:-60}"

command -v cargo-fuzz >/dev/null || [ -x "$HOME/.cargo/bin/cargo-fuzz" ] || {
  echo "installing cargo-fuzz (one-time build)"
  cargo install cargo-fuzz --locked
}

if [ "${FUZZ_TOOLCHAIN:-}" != stable ] && rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
  TOOLCHAIN=(+nightly)
  SANITIZER=address
else
  TOOLCHAIN=()
  SANITIZER=none
  export RUSTC_BOOTSTRAP=1
fi

targets=("$@")
if [ "${#targets[@]}" = 0 ]; then
  mapfile -t targets < <(cargo "${TOOLCHAIN[@]}" fuzz list)
fi

# A few well-formed inputs to start each corpus from: the fuzzer mutates them into the shapes
# the parsers care about faster than it finds them from nothing.
start_corpus() {
  local dir="fuzz/corpus/$1"
  mkdir -p "$dir"
  [ -z "$(ls -A "$dir")" ] || return 0
  case "$1" in
    user_id) printf 'buyer-1' >"$dir/a"; printf 'anon-1' >"$dir/b"; printf 'a@b.c:d_e' >"$dir/c" ;;
    jwt)
      printf '\001{"alg":"HS256","typ":"JWT"}\n{"sub":"buyer","exp":4102444800}' >"$dir/a"
      printf '\001{"alg":"HS256","crit":["x"]}\n{"sub":"anon-1","exp":4102444800,"nbf":1}' >"$dir/b"
      printf '\000Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln' >"$dir/c" ;;
    purchase_token) printf '\x00\x00\x00\x00\x00\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00\x001764000000000.AAAA' >"$dir/a" ;;
    webhook_signature) printf '\x00\x00\x00\x00\x00\x00\x00\x00t=0,v1=00ff\n{"order_id":"x"}' >"$dir/a" ;;
    sale_spec)
      printf '{"name":"drop","stock":10,"per_user_limit":2}' >"$dir/a"
      printf '{"name":" x ","stock":1,"starts_at":"2026-11-25T15:00:00Z","ends_at":"2026-11-25T16:00:00+01:00","payment_window_secs":60}' >"$dir/b" ;;
    config_file)
      printf 'listen = "127.0.0.1:0"\ndemo_stock = 5\nauth = "jwt"\njwt_secret = "k"\n' >"$dir/a"
      printf 'no_consumer = true\nrate_limit_ip = 50\nmax_connections = 0\npayment_window_secs = 86400\n' >"$dir/b" ;;
  esac
}

summary=()
failed=0
for target in "${targets[@]}"; do
  start_corpus "$target"
  log="$(mktemp)"
  echo "== $target: ${FUZZ_SECONDS} s (sanitizer: $SANITIZER)"
  status=0
  cargo "${TOOLCHAIN[@]}" fuzz run -s "$SANITIZER" "$target" -- \
    -max_total_time="$FUZZ_SECONDS" -print_final_stats=1 -rss_limit_mb=2048 >"$log" 2>&1 || status=$?
  runs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n1)"
  corpus="$(find "fuzz/corpus/$target" -type f | wc -l)"
  crashes="$(find "fuzz/artifacts/$target" -type f 2>/dev/null | wc -l)"
  if [ "$status" != 0 ]; then
    failed=1
    grep -E "panicked|ERROR|SUMMARY|Test unit written" "$log" | head -n 20 || tail -n 30 "$log"
  fi
  summary+=("$(printf '%-18s %12s runs  %6s inputs in corpus  %3s crash files  exit %s' \
    "$target" "${runs:-?}" "$corpus" "$crashes" "$status")")
  rm -f "$log"
done

echo
echo "== fuzz summary (${FUZZ_SECONDS} s per target)"
printf '%s\n' "${summary[@]}"
exit "$failed"
