#!/usr/bin/env python3
"""A short PC-DARTS search on real data (Debian's Fashion-MNIST) and the ETA of the paper's run.

Runs the release `search-cifar` twice and writes docs/search-fashion-mnist.md:

1. the short search of `make search` (or the flags given after --): per-epoch validation
   accuracy and seconds per epoch, read from its log.jsonl;
2. three epochs of the paper's default network (8 cells, 16 channels, K = 4, batch 256) on a
   subset: a first epoch that only warms up the allocator (its first steps fault in the memory
   of the peak), a warm-up epoch (weight steps only) and one with architecture steps, to measure
   the images/s of both kinds of epoch and of the evaluation; from these, the ETA of the
   default 50-epoch CIFAR-10 search (25,000 search-train and 25,000 search-validation images,
   15 warm-up epochs) on this machine.

Usage: make build && python3 benchmarks/search_fashion_mnist.py
"""

import json
import os
import platform
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BINARY = os.path.join(ROOT, ".build", "release", "search-cifar")
OUT = os.path.join(ROOT, "benchmarks", "results")
SHORT = ["--dataset", "fashion-mnist", "--subset", "4000", "--layers", "5", "--init-channels", "8",
         "--batch-size", "64", "--epochs", "6", "--warmup-epochs", "2"]
PAPER_SUBSET = 1024


def run(flags, out):
    if os.path.exists(out):
        subprocess.run(["rm", "-rf", out], check=True)
    start = time.time()
    subprocess.run([BINARY] + flags + ["--out", out], check=True, stdout=subprocess.DEVNULL)
    with open(os.path.join(out, "log.jsonl")) as f:
        return [json.loads(line) for line in f if line.strip()], time.time() - start


def main():
    if not os.access(BINARY, os.X_OK):
        sys.exit("error: build first: make build (or swift build -c release)")
    short_flags = sys.argv[sys.argv.index("--") + 1:] if "--" in sys.argv else SHORT
    short, short_wall = run(short_flags, os.path.join(OUT, "fashion-mnist-short"))

    paper_flags = ["--dataset", "fashion-mnist", "--subset", str(PAPER_SUBSET), "--epochs", "3",
                   "--warmup-epochs", "2"]
    paper, _ = run(paper_flags, os.path.join(OUT, "fashion-mnist-paper-network"))
    half = PAPER_SUBSET // 2
    _, warm, arch = paper
    def eval_rate(epoch):
        train_seconds = half / epoch["images_per_second"]
        return half / (epoch["seconds"] - train_seconds)
    rate_eval = (eval_rate(warm) + eval_rate(arch)) / 2
    images = 25_000
    eta = (15 * images / warm["images_per_second"] + 35 * images / arch["images_per_second"]
           + 50 * images / rate_eval)

    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    commit = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    dirty = subprocess.run(["git", "-C", ROOT, "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True).stdout.strip()
    at = f"commit {commit.stdout.strip()}{' with local changes' if dirty else ''}" if commit.returncode == 0 else "an unknown commit"
    lines = [
        "# A short search on Fashion-MNIST, and the ETA of the paper's run",
        "",
        f"Measured by `benchmarks/search_fashion_mnist.py` at {at} on {time.strftime('%Y-%m-%d')}: "
        f"{os.cpu_count()} cores ({cpu}), {platform.system()} {platform.release()}.",
        "",
        "## The short search (`make search`)",
        "",
        "`search-cifar " + " ".join(short_flags) + "`",
        "",
        "| epoch | arch updates | lr | train loss | train acc | valid loss | valid acc | seconds | images/s | peak tensors |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for e in short:
        lines.append(f"| {e['epoch']} | {'yes' if e['arch_updates'] else 'no'} | {e['lr']:.4f} | {e['train_loss']:.4f} "
                     f"| {e['train_acc']:.4f} | {e['valid_loss']:.4f} | {e['valid_acc']:.4f} | {e['seconds']:.1f} "
                     f"| {e['images_per_second']:.1f} | {e['peak_tensor_bytes'] / 2**20:.0f} MiB |")
    lines += [
        "",
        f"Wall time of the whole run (data loading included): {short_wall:.0f} s.",
        "",
        f"Final genotype: `{short[-1]['genotype']}`",
        "",
        "## ETA of the default search (paper settings, CIFAR-10)",
        "",
        f"Epochs 1 and 2 of a 3-epoch run of the default network (8 cells, 16 channels, K = 4, batch 256) "
        f"on {PAPER_SUBSET} Fashion-MNIST images (the same 32×32×3 input as CIFAR-10); epoch 0 only "
        "warms up the allocator:",
        "",
        "| epoch kind | images/s |",
        "|---|---|",
        f"| warm-up (weight steps only) | {warm['images_per_second']:.1f} |",
        f"| search (architecture + weight steps) | {arch['images_per_second']:.1f} |",
        f"| evaluation (no grad) | {rate_eval:.1f} |",
        "",
        f"50 epochs over 25,000 search-train images (15 warm-up, 35 with architecture steps) plus an "
        f"evaluation of the 25,000 search-validation images each epoch: **{eta / 3600:.1f} hours** "
        f"on this machine (first order).",
        "",
    ]
    os.makedirs(os.path.join(ROOT, "docs"), exist_ok=True)
    with open(os.path.join(ROOT, "docs", "search-fashion-mnist.md"), "w") as f:
        f.write("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
