#!/usr/bin/env python3
"""Data parallelism on MPI: what it does on this machine, and what it would do on a cluster.

Runs the release `bench` (each configuration in its own processes) and writes
docs/distributed-figures.md:

1. side by side on this machine, one after the other: one process with 2 threads against
   `mpirun -np 2` ranks of one thread each, for the search iteration at K = 1 and 4 (batch 64),
   the paper's search iteration (K = 4, batch 256) and the evaluation network's training step
   (train-cifar's defaults, batch 96); with the all-reduce calls, bytes and milliseconds per step
   that each rank measured, and the same with --sync-bn at K = 4;
2. the compute time of one rank (one thread) on the shard it would get at 8, 32 and 128 ranks,
   measured with `bench --threads 1 --batch <shard>`;
3. from 1 and 2, a model of the step on N ranks: the shard's compute plus a ring all-reduce of
   the measured bytes, 2(N-1)/N * bytes / bandwidth + 2(N-1) * latency per call, on 10 and
   100 Gb/s networks (the bandwidths and latencies are assumptions, printed with the figures);
   the step time, the speed-up and parallel efficiency against one rank on the whole batch, and
   the wall time of the paper's search and of the 600-epoch evaluation on 32 and 128 cores.

Usage: make build && python3 benchmarks/distributed_figures.py   (needs openmpi-bin; ~15 min)
"""

import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(ROOT, ".build", "release", "bench")
DOC = os.path.join(ROOT, "docs", "distributed-figures.md")
NETNS = os.path.join(ROOT, "scripts", "mpirun-netns.sh")

# Assumed networks: effective all-reduce bandwidth per link (bytes/s) and per-message latency
# (s). 10 Gb/s Ethernet with Open MPI's TCP transport; 100 Gb/s InfiniBand or RoCE through UCX.
NETWORKS = {"10 Gb/s": (1.1e9, 30e-6), "100 Gb/s": (11e9, 3e-6)}
RANKS = [8, 32, 128]
IMBALANCE = ("On this shared 2-core VM the milliseconds are mostly one rank waiting for the other (they "
             "vary twentyfold between runs); the calls and bytes are exact, and the projections below use "
             "them, not the milliseconds.")

# The workloads: (name, bench flags without --batch, global batch, smallest shard per rank).
# The evaluation network's auxiliary head ends in a batch norm of 1x1 features: 2 images per rank.
SEARCH_K1 = ("search, K = 1, batch 64", ["--K", "1"], 64, 1)
SEARCH_K4 = ("search, K = 4, batch 64", ["--K", "4"], 64, 1)
PAPER = ("search, K = 4, batch 256 (paper)", ["--K", "4"], 256, 1)
TRAIN = ("evaluation network, batch 96 (train-cifar)", ["--train"], 96, 2)
WORKLOADS = [SEARCH_K1, SEARCH_K4, PAPER, TRAIN]


def bench(flags, ranks=1, threads=2, iters=3, hosts=False):
    """Runs bench (under mpirun when ranks > 1, one rank on each of `ranks` network namespaces
    with `hosts`) and returns its JSON results."""
    with tempfile.TemporaryDirectory() as folder:
        out = os.path.join(folder, "bench.json")
        command = [BENCH] + flags + ["--threads", str(threads), "--iters", str(iters), "--json", out]
        if hosts:
            command = ["bash", NETNS, str(ranks), "1"] + command
        elif ranks > 1:
            command = ["mpirun", "-np", str(ranks), "--oversubscribe"] + command
        env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
        print("$", " ".join(command), file=sys.stderr, flush=True)
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL, env=env)
        with open(out) as f:
            return json.load(f)


def ring_allreduce_seconds(ranks, nbytes, calls, network):
    bandwidth, latency = NETWORKS[network]
    return 2 * (ranks - 1) / ranks * nbytes / bandwidth + calls * 2 * (ranks - 1) * latency


def fmt_time(seconds):
    hours = seconds / 3600
    return f"{hours:.1f} h" if hours < 48 else f"{hours / 24:.1f} days"


def main():
    if not os.access(BENCH, os.X_OK):
        sys.exit("error: build first: make build (or swift build -c release)")
    started = time.time()
    commit = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    dirty = subprocess.run(["git", "-C", ROOT, "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True).stdout.strip()

    # 1. Side by side: 1 process x 2 threads, then 2 ranks x 1 thread.
    side = []
    for name, flags, batch, _ in WORKLOADS:
        one = bench(flags + ["--batch", str(batch)], ranks=1, threads=2)[0]
        two = bench(flags + ["--batch", str(batch)], ranks=2, threads=1)[0]
        side.append((name, one, two))
    sync = bench(SEARCH_K4[1] + ["--batch", "64", "--sync-bn"], ranks=2, threads=1)[0]
    # The same over TCP between two network namespaces (root only): the kernel's TCP stack and a
    # bridge instead of shared memory; not a network's bandwidth, but its per-message costs.
    tcp = []
    if os.geteuid() == 0 and subprocess.run(["ip", "netns", "list"], capture_output=True).returncode == 0:
        for name, flags, batch, _ in [SEARCH_K1, SEARCH_K4, TRAIN]:
            tcp.append((name, bench(flags + ["--batch", str(batch)], ranks=2, threads=1, hosts=True)[0]))
        tcp.append((SEARCH_K4[0] + ", --sync-bn",
                    bench(SEARCH_K4[1] + ["--batch", "64", "--sync-bn"], ranks=2, threads=1, hosts=True)[0]))

    # 2. One rank's compute on its shard, one thread; the whole batch on one thread as the base.
    compute = {}  # (workload name, shard, threads) -> bench result
    for name, flags, batch, smallest in WORKLOADS:
        shards = sorted({batch, batch // 2} | {batch // n for n in RANKS if batch // n >= smallest}, reverse=True)
        for shard in shards:
            compute[(name, shard, 1)] = bench(flags + ["--batch", str(shard)], threads=1,
                                              iters=2 if shard >= 64 else 3)[0]
    # The 128-core evaluation runs 48 ranks of 2 threads (96 images, 2 per rank).
    compute[(TRAIN[0], 2, 2)] = bench(TRAIN[1] + ["--batch", "2"], threads=2)[0]

    traffic = {name: two for name, _, two in side}

    def step(name, batch, ranks, threads, network):
        """Projected (step seconds, weight-step seconds, eval images/s per rank) on `ranks` ranks."""
        shard = batch // ranks
        r = compute[(name, shard, threads)]
        t = traffic[name]
        comm = ring_allreduce_seconds(ranks, t["collectiveBytes"], t["collectiveCalls"], network) if ranks > 1 else 0
        weight_only = (r["forwardMilliseconds"] + r["backwardMilliseconds"]) / 1000
        # No-grad evaluation is bounded by the training-mode forward with its graph.
        eval_rate = shard / (r["forwardMilliseconds"] / 1000)
        return r["secondsPerIteration"] + comm, weight_only + comm, eval_rate

    lines = [
        "# Data parallelism: measured figures and projections",
        "",
        f"Written by `python3 benchmarks/distributed_figures.py` on {time.strftime('%Y-%m-%d')} at commit "
        f"{commit}{' (with local changes)' if dirty else ''}: {os.cpu_count()} cores "
        f"({next((l.split(':', 1)[1].strip() for l in open('/proc/cpuinfo') if l.startswith('model name')), '?')}), "
        f"{platform.system()} {platform.release()}, Open MPI "
        f"{subprocess.run(['mpirun', '--version'], capture_output=True, text=True).stdout.split()[3]}; "
        f"{(time.time() - started) / 60:.0f} minutes of measurements. The machine is a shared VM: "
        "figures vary by ±15% from run to run. How to launch, and what the figures mean: "
        "[distributed.md](distributed.md).",
        "",
        "## One process × 2 threads against 2 ranks × 1 thread",
        "",
        "`bench … --threads 2` against `mpirun -np 2 bench … --threads 1`, 3 timed steps after 1 warm-up, "
        "one after the other. The all-reduce figures are per step and per rank: its calls (gradient "
        "buckets, loss and accuracy sums), the bytes each rank sent into them, and the wall time "
        "spent in them, waiting for the slower rank included. " + IMBALANCE,
        "",
        "| step | 1 × 2 images/s | 2 × 1 images/s | ratio | all-reduce calls | bytes | ms per step | "
        "peak RSS 1 × 2 | peak RSS per rank |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, one, two in side:
        lines.append(
            f"| {name} | {one['imagesPerSecond']:.1f} | {two['imagesPerSecond']:.1f} "
            f"| {two['imagesPerSecond'] / one['imagesPerSecond']:.2f} | {two['collectiveCalls']:.0f} "
            f"| {two['collectiveBytes'] / 2**20:.1f} MiB | {two['collectiveMilliseconds']:.1f} "
            f"| {one['peakRSSBytes'] / 2**30:.2f} GiB | {two['peakRSSBytes'] / 2**30:.2f} GiB |")
    k4 = traffic[SEARCH_K4[0]]
    lines += [
        "",
        f"With `--sync-bn` (K = 4, batch 64, 2 ranks): {sync['imagesPerSecond']:.1f} images/s against "
        f"{k4['imagesPerSecond']:.1f} without; {sync['collectiveCalls']:.0f} all-reduce calls per step "
        f"({sync['collectiveBytes'] / 2**20:.1f} MiB, {sync['collectiveMilliseconds']:.1f} ms): one per batch "
        "norm in the forward pass and one in the backward pass of each step.",
    ]
    if tcp:
        lines += [
            "",
            "Over TCP between two network namespaces (`scripts/mpirun-netns.sh 2 1 bench … --threads 1`: each "
            "rank a host with its own address, Open MPI's TCP transport through a bridge, no shared memory):",
            "",
            "| step | 2 × 1 images/s over TCP | all-reduce calls | bytes | ms per step | ms per call |",
            "|---|---|---|---|---|---|",
        ]
        for name, r in tcp:
            lines.append(f"| {name} | {r['imagesPerSecond']:.1f} | {r['collectiveCalls']:.0f} "
                         f"| {r['collectiveBytes'] / 2**20:.1f} MiB | {r['collectiveMilliseconds']:.1f} "
                         f"| {r['collectiveMilliseconds'] / r['collectiveCalls']:.3f} |")
    lines += [
        "",
        "## One rank's compute on its shard",
        "",
        "`bench … --threads 1 --batch <shard>` (the training step with `--train`): seconds per step on "
        "one thread, the whole batch first (the base of the efficiencies below).",
        "",
        "| step | shard | threads | seconds per step | forward + backward of the weight step |",
        "|---|---|---|---|---|",
    ]
    for (name, shard, threads), r in compute.items():
        lines.append(f"| {name} | {shard} | {threads} | {r['secondsPerIteration']:.3f} "
                     f"| {(r['forwardMilliseconds'] + r['backwardMilliseconds']) / 1000:.3f} s |")

    lines += [
        "",
        "## Projected step on N ranks",
        "",
        "Step = the shard's compute measured above + a ring all-reduce of the measured bytes: "
        "2(N−1)/N × bytes / bandwidth + 2(N−1) × latency per call. Assumed networks: "
        + "; ".join(f"{n}: {b / 1e9:.1f} GB/s effective, {l * 1e6:.0f} µs per message" for n, (b, l) in NETWORKS.items())
        + ". Speed-up and efficiency are against one rank of one thread on the whole batch. The model "
        "leaves out what a real cluster adds: ranks sharing a node's memory bandwidth run slower than "
        "one thread alone on this machine, and stragglers make every rank wait for the slowest.",
        "",
        "| step | ranks | shard | compute s | network | all-reduce ms | step s | speed-up | efficiency |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, _, batch, smallest in WORKLOADS:
        base = compute[(name, batch, 1)]["secondsPerIteration"]
        for ranks in RANKS:
            if batch // ranks < smallest:
                lines.append(f"| {name} | {ranks} | — | — | — | — | — | — | {batch} images do not split over "
                             f"{ranks} ranks ({smallest} per rank at least) |")
                continue
            shard = batch // ranks
            for network in NETWORKS:
                total, _, _ = step(name, batch, ranks, 1, network)
                compute_s = compute[(name, shard, 1)]["secondsPerIteration"]
                lines.append(f"| {name} | {ranks} | {shard} | {compute_s:.3f} | {network} "
                             f"| {(total - compute_s) * 1000:.1f} | {total:.3f} | {base / total:.1f}× "
                             f"| {base / total / ranks:.0%} |")
    # The model at N = 2 against the measurement (on one machine, shared memory: no network term).
    lines += ["", "The model's check at N = 2 (this machine, where the transport is shared memory): "]
    checks = []
    for name, _, batch, _ in WORKLOADS:
        shard_compute = compute.get((name, batch // 2, 1))
        if shard_compute is None:
            continue
        predicted = batch / (shard_compute["secondsPerIteration"] + traffic[name]["collectiveMilliseconds"] / 1000)
        checks.append(f"{name}: predicted {predicted:.1f} images/s from the shard's compute and the measured "
                      f"all-reduce time, measured {traffic[name]['imagesPerSecond']:.1f}")
    lines[-1] += "; ".join(checks) + "." if checks else "no shard of half the batch was measured."

    # Wall time of the paper's runs.
    lines += [
        "",
        "## Projected wall time of the paper's runs",
        "",
        "The search: 50 epochs over 25,000 search-train images at batch 256 (98 steps), weight steps "
        "only for the first 15, architecture and weight steps for the other 35, and an evaluation of "
        "the 25,000 search-validation images after each epoch. The evaluation: 600 epochs of 50,000 "
        "training images at batch 96 (521 steps) and the 10,000 test images after each. The "
        "evaluation passes are sharded like the steps; their speed is bounded by the training-mode "
        "forward measured above (evaluation without a graph is faster). One rank per core, except "
        "for the evaluation network on 128 cores: 96 images split over 48 ranks at most (the "
        "auxiliary head's batch norm wants 2 images per rank), so 48 ranks of 2 threads.",
        "",
        "| run | cores | ranks × threads | network | projected wall time |",
        "|---|---|---|---|---|",
    ]
    # One core: step() with one rank is the measured whole-batch step, no all-reduce.
    layouts = {1: (1, 1), 32: (32, 1), 128: (128, 1)}
    train_layouts = {1: (1, 1), 32: (32, 1), 128: (48, 2)}
    for cores in [1, 32, 128]:
        for network in NETWORKS if cores > 1 else ["—"]:
            ranks, threads = layouts[cores]
            full, weight, rate = step(PAPER[0], 256, ranks, threads, network if cores > 1 else "10 Gb/s")
            steps = math.ceil(25_000 / 256)
            seconds = 15 * steps * weight + 35 * steps * full + 50 * 25_000 / (rate * ranks)
            lines.append(f"| search (K = 4, first order) | {cores} | {ranks} × {threads} | {network} | {fmt_time(seconds)} |")
    for cores in [1, 32, 128]:
        for network in NETWORKS if cores > 1 else ["—"]:
            ranks, threads = train_layouts[cores]
            full, _, rate = step(TRAIN[0], 96, ranks, threads, network if cores > 1 else "10 Gb/s")
            seconds = 600 * (math.ceil(50_000 / 96) * full + 10_000 / (rate * ranks))
            lines.append(f"| evaluation (600 epochs) | {cores} | {ranks} × {threads} | {network} | {fmt_time(seconds)} |")
    lines.append("")
    with open(DOC + ".tmp", "w") as f:
        f.write("\n".join(lines))
    os.replace(DOC + ".tmp", DOC)
    print(f"wrote {DOC}")


if __name__ == "__main__":
    main()
