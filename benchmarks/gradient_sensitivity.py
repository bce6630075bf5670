#!/usr/bin/env python3
"""How far float32 α/β gradients of a search checkpoint are from float64, and how much of that
is PyTorch's own float32 instability (for the performance issue's precision item).

For one fixed batch (the first 16 Fashion-MNIST test images, prepared as the project does) and
the weights and architecture of a `search-cifar` checkpoint, the reference network of
scripts/pcdarts_torch.py computes the architecture gradients in float32 and in float64, on the
batch and on two copies of it scaled in float32 by 1 + 1e-7 and 1 + 3e-7 (a few ulps, far below
the data's meaning), each float32 result against the float64 one of the same input. The float64
gradients are smooth in the input; the float32 ones jump whenever a ReLU mask or a max-pool's
choice sits within rounding of its boundary, so the float32-to-float64 distance of any float32
engine on one batch is a draw from that spread, not a fixed property of the engine.

    /usr/bin/python3 benchmarks/gradient_sensitivity.py runs/search/checkpoint.safetensors

Measured at commit ca2bfd6 on two 1-epoch checkpoints (search-cifar --dataset fashion-mnist
--epochs 1 --warmup-epochs 0, with --subset 4000 --layers 8 --init-channels 16 --K 2
--batch-size 64, and with --subset 2000 --layers 5 --init-channels 8 --K 1 --batch-size 32):

    K = 2: PyTorch float32 vs float64, α_reduce  7.4e-7, 1.2e-6, 2.7e-5 on the three inputs
           (β_normal 3.6e-7, 4.3e-7, 4.1e-5); the engine on the unscaled input: α_reduce 1.3e-5,
           β_normal 2.6e-6
    K = 1: PyTorch α_normal 1.5e-4, 3.6e-7, 3.8e-7; the engine on the unscaled input: 1.5e-4

So one batch's distance does not rank two float32 engines; comparing them needs many batches
(or the median over nearby inputs).
"""

import json
import os
import sys

import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "scripts"))
import pcdarts_torch  # noqa: E402
import safetensors_io  # noqa: E402
from load_into_official import fashion_test  # noqa: E402

ARCH = ["alphas_normal", "alphas_reduce", "betas_normal", "betas_reduce"]


def gradients(tensors, network, dtype, x, y):
    net = pcdarts_torch.Network(network["initChannels"], network["classes"], network["layers"],
                                k=network["partialChannels"])
    net.load_state_dict({k: torch.as_tensor(tensors[k]) for k in net.state_dict()})
    net.to(dtype).train()
    arch = [torch.as_tensor(tensors[a]).to(dtype).requires_grad_(True) for a in ARCH]
    net.alphas_normal, net.alphas_reduce, net.betas_normal, net.betas_reduce = arch
    net._arch_parameters = arch
    return torch.autograd.grad(F.cross_entropy(net(x.to(dtype)), y), arch)


def main():
    tensors, metadata = safetensors_io.load(sys.argv[1])
    network = json.loads(metadata["settings"])["network"]
    torch.set_num_threads(1)
    x, y = fashion_test(16)
    # Three inputs a few float32 ulps apart; each float32 result against float64 on the same input.
    for eps in [0.0, 1e-7, 3e-7]:
        nearby = (x.float() * (1 + eps)).float()
        reference = gradients(tensors, network, torch.float64, nearby.double(), y)
        single = gradients(tensors, network, torch.float32, nearby, y)
        print("input·(1+%g) in float32: float32 vs float64  " % eps + "  ".join(
            "%s %.2e" % (name, float((g.double() - r).abs().max() / r.abs().max()))
            for name, g, r in zip(ARCH, single, reference)))


if __name__ == "__main__":
    main()
