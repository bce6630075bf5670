#!/usr/bin/env bash
# The Swift engine and the PyTorch CPU reference on the same search iteration, one after the
# other on this machine, and a table of the ratios. Needs a release build (make build) and a
# Python with PyTorch: Debian's python3-torch (/usr/bin/python3, the default) and/or others, e.g.
# the newest PyTorch from PyPI in a venv (python3 -m venv V && V/bin/pip install torch numpy).
#
#   bash benchmarks/compare_with_torch.sh [--K 1,2,4,8] [--batch 64] [--iters 3] [--unrolled]
#        [--python /usr/bin/python3 --python V/bin/python] [--recompute-depthwise auto|on|off]
#   bash benchmarks/compare_with_torch.sh --train [--batch 96] [--iters 3] [--python ...]
#
# With --train: one training step of the evaluation network instead (PC_DARTS_cifar, C = 36,
# 20 cells, auxiliary head, drop-path 0.15; bench --train beside benchmarks/torch_train_step.py).
# Each --python runs the PyTorch side once, right after the Swift side, on 2 threads; the table
# has one row per K and PyTorch. Writes benchmarks/results/swift[-train].json and
# torch[-train]-<n>.json (n = the --python's place) and prints a Markdown table.
set -euo pipefail
cd "$(dirname "$0")/.."
K=1,2,4,8 BATCH= ITERS=3 WARMUP=1 EXTRA=() SWIFT_EXTRA=() TRAIN= PYTHONS=()
while [ $# -gt 0 ]; do
  case "$1" in
    --K) K=$2; shift 2 ;;
    --batch) BATCH=$2; shift 2 ;;
    --iters) ITERS=$2; shift 2 ;;
    --warmup) WARMUP=$2; shift 2 ;;
    --unrolled) EXTRA+=(--unrolled); shift ;;
    --train) TRAIN=1; shift ;;
    --python) PYTHONS+=("$2"); shift 2 ;;
    --recompute-depthwise) SWIFT_EXTRA+=(--recompute-depthwise "$2"); shift 2 ;;
    *) echo "error: unknown option $1 (expected --K, --batch, --iters, --warmup, --unrolled, --train, --python, --recompute-depthwise)" >&2; exit 2 ;;
  esac
done
[ ${#PYTHONS[@]} -gt 0 ] || PYTHONS=(/usr/bin/python3)
for py in "${PYTHONS[@]}"; do
  if ! "$py" -c "import torch" 2>/dev/null; then
    echo "error: $py cannot import torch; install Debian's python3-torch (apt-get install python3-torch) or pass --python with a Python that has PyTorch" >&2
    exit 1
  fi
done
mkdir -p benchmarks/results
SWIFT=${SWIFT:-$(command -v swift || echo /opt/swift/usr/bin/swift)}
"$SWIFT" build -c release --product bench >/dev/null
SUFFIX=
if [ -n "$TRAIN" ]; then
  SUFFIX=-train
  BATCH=${BATCH:-96}
  echo "== Swift engine"
  .build/release/bench --train --batch "$BATCH" --iters "$ITERS" --warmup "$WARMUP" "${SWIFT_EXTRA[@]}" \
    --json benchmarks/results/swift-train.json
else
  BATCH=${BATCH:-64}
  echo "== Swift engine"
  .build/release/bench --K "$K" --batch "$BATCH" --iters "$ITERS" --warmup "$WARMUP" "${EXTRA[@]}" \
    "${SWIFT_EXTRA[@]}" --json benchmarks/results/swift.json
fi
n=0
for py in "${PYTHONS[@]}"; do
  n=$((n + 1))
  echo "== PyTorch $("$py" -c 'import torch; print(torch.__version__)') ($py), 2 threads"
  if [ -n "$TRAIN" ]; then
    "$py" benchmarks/torch_train_step.py --batch "$BATCH" --iters "$ITERS" --warmup "$WARMUP" \
      --threads 2 --json "benchmarks/results/torch-train-$n.json"
  else
    "$py" benchmarks/torch_reference.py --K "$K" --batch "$BATCH" --iters "$ITERS" \
      --warmup "$WARMUP" --threads 2 "${EXTRA[@]}" --json "benchmarks/results/torch-$n.json"
  fi
  "$py" -c 'import torch; print(torch.__version__)' > "benchmarks/results/torch$SUFFIX-$n.version"
done
TRAIN=$TRAIN COUNT=$n SUFFIX=$SUFFIX /usr/bin/python3 - <<'PY'
import json, os
suffix, count, train = os.environ["SUFFIX"], int(os.environ["COUNT"]), bool(os.environ["TRAIN"])
swift = json.load(open(f"benchmarks/results/swift{suffix}.json"))
torches = [(open(f"benchmarks/results/torch{suffix}-{n}.version").read().strip(),
            json.load(open(f"benchmarks/results/torch{suffix}-{n}.json"))) for n in range(1, count + 1)]
gib = lambda b: b / 2**30
def cells(s, t):
    return (f"{s['imagesPerSecond']:.1f} | {t['imagesPerSecond']:.1f} | {s['imagesPerSecond'] / t['imagesPerSecond']:.2f}× "
            f"| {gib(s['peakRSSBytes']):.2f} GiB | {gib(t['peakRSSBytes']):.2f} GiB | {s['peakRSSBytes'] / t['peakRSSBytes']:.2f}")
print()
if train:
    s = swift[0]
    print("| step | PyTorch | Swift images/s | PyTorch images/s | speed ratio | Swift peak RSS | PyTorch peak RSS | RSS ratio |")
    print("|---|---|---|---|---|---|---|---|")
    for version, t in torches:
        print(f"| {t[0]['genotype']} C={s['initChannels']} {s['layers']} cells, batch {s['batch']} | {version} | {cells(s, t[0])} |")
else:
    print("| K | PyTorch | Swift images/s | PyTorch images/s | speed ratio | Swift peak RSS | PyTorch peak RSS | RSS ratio |")
    print("|---|---|---|---|---|---|---|---|")
    for s in sorted(swift, key=lambda r: r["K"]):
        for version, t in torches:
            match = next((r for r in t if r["K"] == s["K"]), None)
            if match is not None:
                print(f"| {s['K']} | {version} | {cells(s, match)} |")
PY
