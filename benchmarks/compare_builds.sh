#!/usr/bin/env bash
# Two builds of `bench` side by side in one run: each round runs each K with the old build, then
# at once with the new (each in a fresh process, as bench always does), so that a drift of the
# machine's speed reaches both sides of a pair alike; a table gives each K's median images/s of
# both, the median of the rounds' ratios, both peak tensor-byte figures and the bytes each
# iteration moves (the ops' own counts, the same on every run). On a shared machine only such
# paired ratios mean anything.
#
#   bash benchmarks/compare_builds.sh OLD_BENCH NEW_BENCH [--rounds 2] [bench options...]
#
# For example, the build of an older commit against this one:
#   git worktree add /tmp/old <commit> && (cd /tmp/old && swift build -c release --product bench)
#   bash benchmarks/compare_builds.sh /tmp/old/.build/release/bench .build/release/bench --K 1,2,4,8
#
# Writes benchmarks/results/{old,new}-<round>-K<k>.json.
set -euo pipefail
[ $# -ge 2 ] || { echo "usage: $0 OLD_BENCH NEW_BENCH [--rounds N] [bench options...]" >&2; exit 2; }
OLD=$1 NEW=$2
shift 2
ROUNDS=2
if [ "${1:-}" = "--rounds" ]; then ROUNDS=$2; shift 2; fi
for b in "$OLD" "$NEW"; do
  [ -x "$b" ] || { echo "error: $b is not an executable bench build" >&2; exit 2; }
done
cd "$(dirname "$0")/.."
# The Ks to measure: bench's default unless --K is given.
KS=1,2,4,8 OPTIONS=()
while [ $# -gt 0 ]; do
  if [ "$1" = "--K" ]; then KS=$2; shift 2; else OPTIONS+=("$1"); shift; fi
done
mkdir -p benchmarks/results
for round in $(seq 1 "$ROUNDS"); do
  for k in ${KS//,/ }; do
    for side in old new; do
      bin=$OLD; [ $side = new ] && bin=$NEW
      echo "== round $round, K = $k, $side: $bin ${OPTIONS[*]}"
      "$bin" --K "$k" "${OPTIONS[@]}" --json "benchmarks/results/$side-$round-K$k.json" | grep -E '^  K='
    done
  done
done
ROUNDS=$ROUNDS KS=$KS /usr/bin/python3 - <<'PY'
import json, os, statistics
rounds = int(os.environ["ROUNDS"])
ks = [int(k) for k in os.environ["KS"].split(",")]
def load(side):
    return {k: [json.load(open(f"benchmarks/results/{side}-{r}-K{k}.json"))[0] for r in range(1, rounds + 1)] for k in ks}
old, new = load("old"), load("new")
print()
# Bytes moved per iteration (operationsPerIteration, counted by the ops since 2068e1d) do not
# depend on the machine's load: a stable figure beside the noisy images/s; "n/a" for older builds.
def moved(runs):
    counts = {round(r["operationsPerIteration"]["bytes"]) for r in runs if "operationsPerIteration" in r}
    return f"{min(counts) / 1e9:.2f} GB" if counts else "n/a"
# new/old: the median of the rounds' ratios (each a pair run one after the other).
print("| K | old images/s | new images/s | new/old (rounds) | old peak tensors | new peak tensors | old bytes moved | new bytes moved |")
print("|---|---|---|---|---|---|---|---|")
for k in old:
    o = statistics.median(r["imagesPerSecond"] for r in old[k])
    n = statistics.median(r["imagesPerSecond"] for r in new[k])
    pairs = [b["imagesPerSecond"] / a["imagesPerSecond"] for a, b in zip(old[k], new[k])]
    ratio = f"{statistics.median(pairs):.2f}× ({', '.join(f'{x:.2f}' for x in pairs)})"
    ot = {r["peakTensorBytes"] for r in old[k]}
    nt = {r["peakTensorBytes"] for r in new[k]}
    fmt = lambda s: ", ".join(f"{b:,}" for b in sorted(s))
    print(f"| {k} | {o:.1f} | {n:.1f} | {ratio} | {fmt(ot)} | {fmt(nt)} | {moved(old[k])} | {moved(new[k])} |")
PY
