#!/usr/bin/env bash
# bench/ratio.sh several times, and each of its rows as the median of the runs with their range.
# On a machine whose speed moves from run to run (a shared VM: bare axum 95k-118k req/s between
# runs of one build), one run's "met" says more about the moment than about the build.
#
#   RUNS=3 DURATION=5 DRAIN_ORDERS=300000 bash bench/ratio_runs.sh
#
# Every other variable goes to ratio.sh as it is (BIN, EMBEDDED_ONLY, ...). Each run's own
# output is kept in a temporary directory, removed at the end; the per-run tables are printed.
# A row's median is checked against its target: the ratio where the row has one, else the first
# number of its figure.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS="${RUNS:-3}"
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

for run in $(seq "$RUNS"); do
  echo "== run $run of $RUNS"
  # A run that misses a target exits 1; its table is what this script is for.
  bash bench/ratio.sh >"$WORK/run-$run.txt" 2>&1 || true
  grep '^|' "$WORK/run-$run.txt" || { echo "run $run printed no table:"; tail -20 "$WORK/run-$run.txt"; exit 1; }
done

python3 - "$WORK" "$RUNS" <<'PY'
import re, statistics, sys

work, runs = sys.argv[1], int(sys.argv[2])
number = re.compile(r"-?[0-9][0-9,]*\.?[0-9]*")
first = lambda text: float(number.search(text).group().replace(",", "")) if number.search(text) else None

rows = {}  # name -> [(figure text, figure number, ratio number, target)]
for run in range(1, runs + 1):
    for line in open(f"{work}/run-{run}.txt"):
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 5 or cells[0] in ("measurement", "---") or cells[0].startswith("-"):
            continue
        name, figure, ratio, target, _ = cells
        rows.setdefault(name, []).append((figure, first(figure), first(ratio) if ratio else None, target))

def fmt(v):
    return f"{v:,.0f}" if abs(v) >= 1000 else f"{v:.1f}" if abs(v) >= 10 else f"{v:.3g}"

def met(value, target):
    m = re.match(r"(>=|<=|<|>)\s*([0-9.]+)", target)
    if not m or value is None:
        return None
    op, bound = m.group(1), float(m.group(2))
    return {">=": value >= bound, "<=": value <= bound, "<": value < bound, ">": value > bound}[op]

print()
print(f"| measurement | median figure | median ratio (range over {runs} runs) | target | met by the median | runs meeting it |")
print("|---|---:|---:|---|---|---:|")
for name, seen in rows.items():
    figures = [f for _, f, _, _ in seen if f is not None]
    ratios = [r for _, _, r, _ in seen if r is not None]
    target = seen[0][3]
    last = seen[0][0].split()[-1] if seen[0][0] else ""
    unit = "" if first(last) is not None else last
    figure = f"{fmt(statistics.median(figures))} {unit}".strip() if figures else ""
    ratio = f"{statistics.median(ratios):.2f}x ({min(ratios):.2f}-{max(ratios):.2f})" if ratios else ""
    value = statistics.median(ratios) if ratios else (statistics.median(figures) if figures else None)
    verdict = met(value, target)
    each = [met(r if r is not None else f, target) for _, f, r, _ in seen]
    count = f"{sum(1 for m in each if m)} of {len(each)}" if target else ""
    print(f"| {name} | {figure} | {ratio} | {target} | {'' if verdict is None else ('yes' if verdict else 'NO')} | {count} |")
PY
