#!/usr/bin/env bash
# The Swift engine and the PyTorch CPU reference on the same search iteration, one after the
# other on this machine, and a table of the ratios. Needs Debian's python3-torch
# (apt-get install python3-torch) and a release build (make build).
#
#   bash benchmarks/compare_with_torch.sh [--K 1,2,4,8] [--batch 64] [--iters 3] [--unrolled]
#
# Writes benchmarks/results/{swift,torch}.json and prints a Markdown table.
set -euo pipefail
cd "$(dirname "$0")/.."
K=1,2,4,8 BATCH=64 ITERS=3 WARMUP=1 EXTRA=()
while [ $# -gt 0 ]; do
  case "$1" in
    --K) K=$2; shift 2 ;;
    --batch) BATCH=$2; shift 2 ;;
    --iters) ITERS=$2; shift 2 ;;
    --warmup) WARMUP=$2; shift 2 ;;
    --unrolled) EXTRA+=(--unrolled); shift ;;
    *) echo "error: unknown option $1 (expected --K, --batch, --iters, --warmup, --unrolled)" >&2; exit 2 ;;
  esac
done
if ! /usr/bin/python3 -c "import torch" 2>/dev/null; then
  echo "error: PyTorch is missing; install Debian's python3-torch (apt-get install python3-torch)" >&2
  exit 1
fi
mkdir -p benchmarks/results
SWIFT=${SWIFT:-$(command -v swift || echo /opt/swift/usr/bin/swift)}
"$SWIFT" build -c release --product bench >/dev/null
echo "== Swift engine"
.build/release/bench --K "$K" --batch "$BATCH" --iters "$ITERS" --warmup "$WARMUP" "${EXTRA[@]}" \
  --json benchmarks/results/swift.json
echo "== PyTorch $(/usr/bin/python3 -c 'import torch; print(torch.__version__)'), 2 threads"
/usr/bin/python3 benchmarks/torch_reference.py --K "$K" --batch "$BATCH" --iters "$ITERS" \
  --warmup "$WARMUP" --threads 2 "${EXTRA[@]}" --json benchmarks/results/torch.json
/usr/bin/python3 - <<'PY'
import json
swift = {r["K"]: r for r in json.load(open("benchmarks/results/swift.json"))}
torch = {r["K"]: r for r in json.load(open("benchmarks/results/torch.json"))}
gib = lambda b: b / 2**30
print()
print("| K | Swift images/s | PyTorch images/s | speed ratio | Swift peak RSS | PyTorch peak RSS | RSS ratio | Swift peak tensors / K=1 |")
print("|---|---|---|---|---|---|---|---|")
base = swift.get(1) or next(iter(swift.values()))
for k in sorted(swift):
    s, t = swift[k], torch.get(k)
    if t is None:
        continue
    print(f"| {k} | {s['imagesPerSecond']:.1f} | {t['imagesPerSecond']:.1f} | {s['imagesPerSecond'] / t['imagesPerSecond']:.2f}× "
          f"| {gib(s['peakRSSBytes']):.2f} GiB | {gib(t['peakRSSBytes']):.2f} GiB | {s['peakRSSBytes'] / t['peakRSSBytes']:.2f} "
          f"| {s['peakTensorBytes'] / base['peakTensorBytes']:.2f} |")
PY
