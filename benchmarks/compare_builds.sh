#!/usr/bin/env bash
# Two builds of `bench` side by side in one run: the rounds alternate old and new (each K in a
# fresh process, as bench always does), and a table gives each K's median images/s of both, the
# ratio, both peak tensor-byte figures and the bytes each iteration moves (the ops' own counts,
# the same on every run). On a shared machine only such paired ratios mean anything.
#
#   bash benchmarks/compare_builds.sh OLD_BENCH NEW_BENCH [--rounds 2] [bench options...]
#
# For example, the build of an older commit against this one:
#   git worktree add /tmp/old <commit> && (cd /tmp/old && swift build -c release --product bench)
#   bash benchmarks/compare_builds.sh /tmp/old/.build/release/bench .build/release/bench --K 1,2,4,8
#
# Writes benchmarks/results/{old,new}-<round>.json.
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
mkdir -p benchmarks/results
for round in $(seq 1 "$ROUNDS"); do
  for side in old new; do
    bin=$OLD; [ $side = new ] && bin=$NEW
    echo "== round $round, $side: $bin $*"
    "$bin" "$@" --json "benchmarks/results/$side-$round.json" | grep -E '^  K='
  done
done
ROUNDS=$ROUNDS /usr/bin/python3 - <<'PY'
import json, os, statistics
rounds = int(os.environ["ROUNDS"])
def load(side):
    runs = [json.load(open(f"benchmarks/results/{side}-{r}.json")) for r in range(1, rounds + 1)]
    return {k: [next(x for x in run if x["K"] == k) for run in runs] for k in [x["K"] for x in runs[0]]}
old, new = load("old"), load("new")
print()
# Bytes moved per iteration (operationsPerIteration, counted by the ops since 2068e1d) do not
# depend on the machine's load: a stable figure beside the noisy images/s; "n/a" for older builds.
def moved(runs):
    counts = {round(r["operationsPerIteration"]["bytes"]) for r in runs if "operationsPerIteration" in r}
    return f"{min(counts) / 1e9:.2f} GB" if counts else "n/a"
print("| K | old images/s | new images/s | new/old | old peak tensors | new peak tensors | old bytes moved | new bytes moved |")
print("|---|---|---|---|---|---|---|---|")
for k in old:
    o = statistics.median(r["imagesPerSecond"] for r in old[k])
    n = statistics.median(r["imagesPerSecond"] for r in new[k])
    ot = {r["peakTensorBytes"] for r in old[k]}
    nt = {r["peakTensorBytes"] for r in new[k]}
    fmt = lambda s: ", ".join(f"{b:,}" for b in sorted(s))
    print(f"| {k} | {o:.1f} | {n:.1f} | {n / o:.2f}× | {fmt(ot)} | {fmt(nt)} | {moved(old[k])} | {moved(new[k])} |")
PY
