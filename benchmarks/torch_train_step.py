"""PyTorch CPU reference for the evaluation-network training-step benchmark.

One step of the DARTS / PC-DARTS evaluation network (scripts/darts_eval_torch.py,
the official NetworkCIFAR), exactly as the official train.py trains it:

    model.train(); model.drop_path_prob = p   (drop-path masks drawn per step)
    logits, logits_aux = model(x)
    loss = CE(logits, y) + auxiliary_weight * CE(logits_aux, y)   (head off when weight 0)
    optimizer.zero_grad(); loss.backward()
    clip_grad_norm_(model.parameters(), 5)
    SGD(lr 0.025, momentum 0.9, weight_decay 3e-4).step()

p defaults to 0.3 * 0.5 (the official drop_path_prob * epoch / epochs half-way through
training).  The measurement runs in a fresh child process (this script re-invoked with
--child) so that the allocator state and the peak RSS are its own; it reports the median
seconds per measured step (after --warmup steps), images/s = batch / seconds and the
child's peak RSS (getrusage(RUSAGE_SELF).ru_maxrss, KiB on Linux, converted to bytes).

Usage (Debian python3-torch, i.e. /usr/bin/python3):
  /usr/bin/python3 benchmarks/torch_train_step.py [--genotype PC_DARTS_cifar] \\
      [--init-channels 36] [--layers 20] [--batch 96] [--auxiliary-weight 0.4] \\
      [--drop-path-prob 0.15] [--iters 3] [--warmup 1] [--threads 2] [--json out.json]

JSON: [{"batch", "layers", "initChannels", "secondsPerIteration", "imagesPerSecond",
        "peakRSSBytes", "torchVersion", "threads", ...}]
"""

import argparse
import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "scripts"))

LEARNING_RATE, MOMENTUM, WEIGHT_DECAY, GRAD_CLIP = 0.025, 0.9, 3e-4, 5.0
NUM_CLASSES, IMAGE_SIZE = 10, 32


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description="DARTS/PC-DARTS evaluation network training step, PyTorch CPU reference")
    parser.add_argument("--genotype", default="PC_DARTS_cifar")
    parser.add_argument("--init-channels", type=int, default=36)
    parser.add_argument("--layers", type=int, default=20)
    parser.add_argument("--batch", type=int, default=96)
    parser.add_argument("--auxiliary-weight", type=float, default=0.4,
                        help="weight of the auxiliary loss; 0 builds the network without the head")
    parser.add_argument("--drop-path-prob", type=float, default=0.3 * 0.5)
    parser.add_argument("--iters", type=int, default=3, help="measured steps")
    parser.add_argument("--warmup", type=int, default=1, help="unmeasured steps first")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=2)
    parser.add_argument("--json", default=None, help="write the results array here")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def run_child(args):
    import torch
    import torch.nn as nn
    from darts_eval_torch import GENOTYPES, NetworkCIFAR, count_parameters
    from torch_reference import timed

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    auxiliary = args.auxiliary_weight > 0
    model = NetworkCIFAR(args.init_channels, NUM_CLASSES, args.layers, auxiliary,
                         GENOTYPES[args.genotype])
    model.train()
    model.drop_path_prob = args.drop_path_prob
    criterion = nn.CrossEntropyLoss()
    optimizer = torch.optim.SGD(model.parameters(), LEARNING_RATE, momentum=MOMENTUM,
                                weight_decay=WEIGHT_DECAY)
    x = torch.randn(args.batch, 3, IMAGE_SIZE, IMAGE_SIZE)
    y = torch.randint(0, NUM_CLASSES, (args.batch,), dtype=torch.int64)

    def step():
        optimizer.zero_grad()
        logits, logits_aux = model(x)
        loss = criterion(logits, y)
        if auxiliary:
            loss = loss + args.auxiliary_weight * criterion(logits_aux, y)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), GRAD_CLIP)
        optimizer.step()
        return float(loss.detach())

    seconds, times, losses, peak = timed(step, args.warmup, args.iters)
    return {
        "batch": args.batch,
        "layers": args.layers,
        "initChannels": args.init_channels,
        "secondsPerIteration": seconds,
        "imagesPerSecond": args.batch / seconds,
        "peakRSSBytes": peak,
        "torchVersion": torch.__version__,
        "threads": args.threads,
        "genotype": args.genotype,
        "auxiliaryWeight": args.auxiliary_weight,
        "dropPathProb": args.drop_path_prob,
        "iterations": args.iters,
        "warmup": args.warmup,
        "iterationSeconds": times,
        "losses": losses,
        "parameterCount": count_parameters(model, include_auxiliary=False),
        "parameterCountTotal": count_parameters(model),
    }


def main():
    args = parse_args()
    if args.child:
        print(json.dumps(run_child(args)))
        return
    command = [sys.executable, os.path.abspath(__file__), "--child",
               "--genotype", args.genotype, "--init-channels", str(args.init_channels),
               "--layers", str(args.layers), "--batch", str(args.batch),
               "--auxiliary-weight", repr(args.auxiliary_weight),
               "--drop-path-prob", repr(args.drop_path_prob), "--iters", str(args.iters),
               "--warmup", str(args.warmup), "--threads", str(args.threads),
               "--seed", str(args.seed)]
    done = subprocess.run(command, stdout=subprocess.PIPE, check=True, text=True)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    print("%s C=%d layers=%d batch=%d aux=%g drop_path=%g, torch %s, %d threads: "
          "%.3f s/step, %.1f images/s, peak RSS %.1f MiB, params %.6f MB"
          % (args.genotype, args.init_channels, args.layers, args.batch, args.auxiliary_weight,
             args.drop_path_prob, result["torchVersion"], args.threads,
             result["secondsPerIteration"], result["imagesPerSecond"],
             result["peakRSSBytes"] / 2 ** 20, result["parameterCount"] / 1e6),
          file=sys.stderr, flush=True)
    results = [result]
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(results, handle, indent=2)
            handle.write("\n")
    else:
        print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
