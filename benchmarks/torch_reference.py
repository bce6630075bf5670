"""PyTorch CPU reference for the PC-DARTS search-iteration benchmark.

Measures the same iteration as the Swift benchmark, with the network of
scripts/pcdarts_torch.py (a re-implementation of the official PC-DARTS
model_search.py with the partial-channel factor K as a parameter):

  one iteration =
    1. architecture step on a "valid" batch:
         first order (default): grad of L_val(w, alpha) w.r.t. the arch params only;
         --unrolled: the second-order DARTS step (quark0/darts architect.py):
            w'  = w - xi * (momentum * buf + grad_w L_train(w) + wd * w)
            g   = grad_alpha L_val(w', alpha)
                  - xi * (grad_alpha L_train(w+) - grad_alpha L_train(w-)) / (2 r)
            w+- = w +- r * grad_w' L_val(w'),  r = 0.01 / ||grad_w' L_val(w')||
         with xi = the weight learning rate; then
         Adam(lr 6e-4, betas (0.5, 0.999), weight_decay 1e-3) on the arch params;
    2. weight step on a "train" batch: SGD(lr 0.1, momentum 0.9, weight_decay 3e-4)
       after clip_grad_norm_(weights, 5).

Each K runs in a fresh child process (this script re-invoked with --child) so
that allocator state and peak RSS do not carry over between K.  Per K it
reports the median seconds per measured iteration (after --warmup
iterations), images/s = batch / seconds, and the child's peak RSS
(getrusage(RUSAGE_SELF).ru_maxrss, KiB on Linux, converted to bytes).

Usage (Debian python3-torch, i.e. /usr/bin/python3):
  /usr/bin/python3 benchmarks/torch_reference.py --K 1,2,4,8 --batch 64 --layers 8 \
      --init-channels 16 --iters 3 --warmup 1 [--unrolled] --threads 2 --json out.json

JSON: [{"K", "batch", "layers", "initChannels", "secondsPerIteration",
        "imagesPerSecond", "peakRSSBytes", ...}, ...]
"""

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "scripts"))

WEIGHT_LR, MOMENTUM, WEIGHT_DECAY, GRAD_CLIP = 0.1, 0.9, 3e-4, 5.0
ARCH_LR, ARCH_BETAS, ARCH_WEIGHT_DECAY = 6e-4, (0.5, 0.999), 1e-3
NUM_CLASSES, IMAGE_SIZE = 10, 32


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description="PC-DARTS search iteration, PyTorch CPU reference")
    parser.add_argument("--K", default="1,2,4,8", help="comma-separated partial-channel factors")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--init-channels", type=int, default=16)
    parser.add_argument("--iters", type=int, default=3, help="measured iterations")
    parser.add_argument("--warmup", type=int, default=1, help="unmeasured iterations first")
    parser.add_argument("--unrolled", action="store_true", help="second-order architecture step")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=2)
    parser.add_argument("--json", default=None, help="write the results array here")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


# --------------------------------------------------------------------------
# child: one K
# --------------------------------------------------------------------------

def timed(step, warmup, iters):
    """Runs `step` warmup + iters times; returns the median seconds of the timed runs, their
    times, every run's return value, and this process's peak RSS in bytes so far."""
    times, results = [], []
    for i in range(warmup + iters):
        start = time.perf_counter()
        results.append(step())
        elapsed = time.perf_counter() - start
        if i >= warmup:
            times.append(elapsed)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB -> bytes (Linux)
    return statistics.median(times), times, results, peak


def first_order_arch_grads(model, x_valid, y_valid):
    """grad_alpha L_val(w, alpha); the weights' gradients are not computed."""
    import torch
    loss = model._loss(x_valid, y_valid)
    return torch.autograd.grad(loss, model.arch_parameters())


def unrolled_arch_grads(model, unrolled_model, w_opt, x_train, y_train, x_valid, y_valid):
    """Second-order DARTS gradient of the arch params (see the module docstring).

    `unrolled_model` is a persistent second network of the same shape; it plays
    the role of the official `_construct_model_from_theta` copy (w', the
    model's buffers after the L_train forward, and the current alphas/betas).
    """
    import torch
    weights = list(model.parameters())
    arch = model.arch_parameters()
    xi = w_opt.param_groups[0]["lr"]
    loss = model._loss(x_train, y_train)
    grads = torch.autograd.grad(loss, weights)
    with torch.no_grad():
        for pu, p, g in zip(unrolled_model.parameters(), weights, grads):
            buf = w_opt.state.get(p, {}).get("momentum_buffer")
            step = g + WEIGHT_DECAY * p
            if buf is not None:
                step = step + MOMENTUM * buf
            pu.copy_(p - xi * step)
        for bu, b in zip(unrolled_model.buffers(), model.buffers()):
            bu.copy_(b)
        for au, a in zip(unrolled_model.arch_parameters(), arch):
            au.copy_(a)
    u_weights = list(unrolled_model.parameters())
    u_arch = unrolled_model.arch_parameters()
    loss_v = unrolled_model._loss(x_valid, y_valid)
    both = torch.autograd.grad(loss_v, list(u_arch) + u_weights)
    dalpha, vector = both[:len(u_arch)], both[len(u_arch):]
    # finite-difference Hessian-vector product at the ORIGINAL w
    r = float(1e-2 / torch.cat([v.reshape(-1) for v in vector]).norm())
    with torch.no_grad():
        for p, v in zip(weights, vector):
            p.add_(v, alpha=r)
    grads_p = torch.autograd.grad(model._loss(x_train, y_train), arch)
    with torch.no_grad():
        for p, v in zip(weights, vector):
            p.sub_(v, alpha=2 * r)
    grads_n = torch.autograd.grad(model._loss(x_train, y_train), arch)
    with torch.no_grad():
        for p, v in zip(weights, vector):
            p.add_(v, alpha=r)
    return [d - xi * (gp - gn) / (2 * r) for d, gp, gn in zip(dalpha, grads_p, grads_n)]


def run_child(args):
    import torch
    import torch.nn as nn
    from pcdarts_torch import Network, count_parameters

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    k = int(args.K)
    criterion = nn.CrossEntropyLoss()
    model = Network(args.init_channels, NUM_CLASSES, args.layers, criterion, k=k)
    model.train()
    weights = list(model.parameters())
    arch = model.arch_parameters()
    w_opt = torch.optim.SGD(weights, WEIGHT_LR, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY)
    a_opt = torch.optim.Adam(arch, lr=ARCH_LR, betas=ARCH_BETAS, weight_decay=ARCH_WEIGHT_DECAY)
    unrolled_model = model.new() if args.unrolled else None
    if unrolled_model is not None:
        unrolled_model.train()

    def batch():
        x = torch.randn(args.batch, 3, IMAGE_SIZE, IMAGE_SIZE)
        y = torch.randint(0, NUM_CLASSES, (args.batch,), dtype=torch.int64)
        return x, y

    x_train, y_train = batch()
    x_valid, y_valid = batch()

    def iteration():
        a_opt.zero_grad()
        if args.unrolled:
            arch_grads = unrolled_arch_grads(model, unrolled_model, w_opt, x_train, y_train,
                                             x_valid, y_valid)
        else:
            arch_grads = first_order_arch_grads(model, x_valid, y_valid)
        for a, g in zip(arch, arch_grads):
            a.grad = g.detach()
        a_opt.step()

        w_opt.zero_grad()
        loss = model._loss(x_train, y_train)
        loss.backward()
        nn.utils.clip_grad_norm_(weights, GRAD_CLIP)
        w_opt.step()
        return float(loss)

    seconds, times, losses, peak = timed(iteration, args.warmup, args.iters)
    return {
        "K": k,
        "batch": args.batch,
        "layers": args.layers,
        "initChannels": args.init_channels,
        "secondsPerIteration": seconds,
        "imagesPerSecond": args.batch / seconds,
        "peakRSSBytes": peak,
        "unrolled": bool(args.unrolled),
        "threads": args.threads,
        "iterations": args.iters,
        "warmup": args.warmup,
        "iterationSeconds": times,
        "losses": losses,
        "parameterCount": count_parameters(model),
        "torch": torch.__version__,
    }


# --------------------------------------------------------------------------
# parent: one fresh child per K
# --------------------------------------------------------------------------

def main():
    args = parse_args()
    if args.child:
        print(json.dumps(run_child(args)))
        return
    results = []
    for k in [int(v) for v in args.K.split(",") if v.strip()]:
        command = [sys.executable, os.path.abspath(__file__), "--child", "--K", str(k),
                   "--batch", str(args.batch), "--layers", str(args.layers),
                   "--init-channels", str(args.init_channels), "--iters", str(args.iters),
                   "--warmup", str(args.warmup), "--threads", str(args.threads),
                   "--seed", str(args.seed)]
        if args.unrolled:
            command.append("--unrolled")
        done = subprocess.run(command, stdout=subprocess.PIPE, check=True, text=True)
        result = json.loads(done.stdout.strip().splitlines()[-1])
        results.append(result)
        print("K=%d batch=%d layers=%d C=%d %s: %.3f s/iter, %.1f images/s, peak RSS %.1f MiB, params %d"
              % (k, args.batch, args.layers, args.init_channels,
                 "second-order" if args.unrolled else "first-order",
                 result["secondsPerIteration"], result["imagesPerSecond"],
                 result["peakRSSBytes"] / 2 ** 20, result["parameterCount"]),
              file=sys.stderr, flush=True)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(results, handle, indent=2)
            handle.write("\n")
    else:
        print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
