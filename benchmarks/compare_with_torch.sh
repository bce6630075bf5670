#!/usr/bin/env bash
# The Swift engine and the PyTorch CPU reference on the same search iteration, one after the
# other on this machine, and a table of the ratios. Needs Debian's python3-torch
# (apt-get install python3-torch) and a release build (make build).
#
#   bash benchmarks/compare_with_torch.sh [--K 1,2,4,8] [--batch 64] [--iters 3] [--unrolled]
#   bash benchmarks/compare_with_torch.sh --train [--batch 96] [--iters 3]
#
# With --train: one training step of the evaluation network instead (PC_DARTS_cifar, C = 36,
# 20 cells, auxiliary head, drop-path 0.15; bench --train beside benchmarks/torch_train_step.py).
# Writes benchmarks/results/{swift,torch}[-train].json and prints a Markdown table.
set -euo pipefail
cd "$(dirname "$0")/.."
K=1,2,4,8 BATCH= ITERS=3 WARMUP=1 EXTRA=() TRAIN=
while [ $# -gt 0 ]; do
  case "$1" in
    --K) K=$2; shift 2 ;;
    --batch) BATCH=$2; shift 2 ;;
    --iters) ITERS=$2; shift 2 ;;
    --warmup) WARMUP=$2; shift 2 ;;
    --unrolled) EXTRA+=(--unrolled); shift ;;
    --train) TRAIN=1; shift ;;
    *) echo "error: unknown option $1 (expected --K, --batch, --iters, --warmup, --unrolled, --train)" >&2; exit 2 ;;
  esac
done
if ! /usr/bin/python3 -c "import torch" 2>/dev/null; then
  echo "error: PyTorch is missing; install Debian's python3-torch (apt-get install python3-torch)" >&2
  exit 1
fi
mkdir -p benchmarks/results
SWIFT=${SWIFT:-$(command -v swift || echo /opt/swift/usr/bin/swift)}
"$SWIFT" build -c release --product bench >/dev/null
if [ -n "$TRAIN" ]; then
  BATCH=${BATCH:-96}
  echo "== Swift engine"
  .build/release/bench --train --batch "$BATCH" --iters "$ITERS" --warmup "$WARMUP" \
    --json benchmarks/results/swift-train.json
  echo "== PyTorch $(/usr/bin/python3 -c 'import torch; print(torch.__version__)'), 2 threads"
  /usr/bin/python3 benchmarks/torch_train_step.py --batch "$BATCH" --iters "$ITERS" --warmup "$WARMUP" \
    --threads 2 --json benchmarks/results/torch-train.json
  /usr/bin/python3 - <<'PY'
import json
s = json.load(open("benchmarks/results/swift-train.json"))[0]
t = json.load(open("benchmarks/results/torch-train.json"))[0]
gib = lambda b: b / 2**30
print()
print("| step | Swift images/s | PyTorch images/s | speed ratio | Swift peak RSS | PyTorch peak RSS | RSS ratio |")
print("|---|---|---|---|---|---|---|")
print(f"| {t['genotype']} C={s['initChannels']} {s['layers']} cells, batch {s['batch']} | {s['imagesPerSecond']:.1f} "
      f"| {t['imagesPerSecond']:.1f} | {s['imagesPerSecond'] / t['imagesPerSecond']:.2f}× | {gib(s['peakRSSBytes']):.2f} GiB "
      f"| {gib(t['peakRSSBytes']):.2f} GiB | {s['peakRSSBytes'] / t['peakRSSBytes']:.2f} |")
PY
  exit 0
fi
BATCH=${BATCH:-64}
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
