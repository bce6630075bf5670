#!/usr/bin/env python3
"""Loads a train-cifar `weights.safetensors` into the OFFICIAL evaluation network and tests it.

The claim checked: the weights train-cifar writes carry the official state_dict's names and
shapes, so the official model.py (yuhuixu1993/PC-DARTS, after quark0/darts) takes them with
`load_state_dict(strict=True)` and computes the same test accuracy as `train-cifar --evaluate`.
The official code is not part of this project: fetch the repository and pass its folder.

    /usr/bin/python3 scripts/load_into_official.py --official PATH/TO/PC-DARTS \\
        --weights runs/train/weights.safetensors --test-subset 2000
    train-cifar --evaluate runs/train/weights.safetensors --dataset fashion-mnist --test-subset 2000

The network's shape and genotype are read from the file's metadata (the training settings and
the genotype train-cifar stores there). Test data: Debian's Fashion-MNIST, prepared as the
project does (28×28 padded by 2 zero pixels to 32×32, repeated on 3 channels, normalised with
mean 0.2860 and std 0.3530).
"""

import argparse
import gzip
import json
import os
import sys
import types

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import safetensors_io  # noqa: E402

FASHION = "/usr/share/datasets/fashion-mnist"
MEAN, STD = 0.2860, 0.3530


def fashion_test(count):
    with gzip.open(os.path.join(FASHION, "t10k-images-idx3-ubyte.gz")) as f:
        images = torch.frombuffer(bytearray(f.read()[16:]), dtype=torch.uint8).reshape(-1, 28, 28)
    with gzip.open(os.path.join(FASHION, "t10k-labels-idx1-ubyte.gz")) as f:
        labels = torch.frombuffer(bytearray(f.read()[8:]), dtype=torch.uint8).long()
    images, labels = images[:count], labels[:count]
    x = torch.nn.functional.pad(images.float() / 255, (2, 2, 2, 2))  # zero pixels, then normalise
    x = ((x - MEAN) / STD).unsqueeze(1).repeat(1, 3, 1, 1)
    return x, labels


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--official", required=True, help="a checkout of yuhuixu1993/PC-DARTS")
    parser.add_argument("--weights", required=True)
    parser.add_argument("--test-subset", type=int, default=10000)
    args = parser.parse_args()
    # The official utils.py imports torchvision for its data transforms, which evaluation does
    # not use; a stand-in lets model.py import it where torchvision is not installed.
    if "torchvision" not in sys.modules:
        stub = types.ModuleType("torchvision")
        stub.transforms = types.ModuleType("torchvision.transforms")
        sys.modules["torchvision"], sys.modules["torchvision.transforms"] = stub, stub.transforms
    sys.path.insert(0, os.path.abspath(args.official))
    import genotypes  # noqa: E402  (the official module)
    from model import NetworkCIFAR  # noqa: E402

    tensors, metadata = safetensors_io.load(args.weights)
    settings = json.loads(metadata["settings"])
    genotype = eval(metadata["genotype"], {"Genotype": genotypes.Genotype, "range": range})
    net = NetworkCIFAR(settings["network"]["initChannels"], settings["network"]["classes"],
                       settings["network"]["layers"], settings["network"]["auxiliary"], genotype)
    state = {name: torch.as_tensor(value) for name, value in tensors.items()}
    net.load_state_dict(state, strict=True)  # every name and shape, nothing missing or extra
    net.drop_path_prob = 0.0
    net.eval()
    x, y = fashion_test(args.test_subset)
    correct = 0
    with torch.no_grad():
        for start in range(0, len(x), 100):
            logits, _ = net(x[start:start + 100])
            correct += int((logits.argmax(1) == y[start:start + 100]).sum())
    print("official model.py: load_state_dict(strict=True) took all %d tensors; test_acc %.4f (%d images)"
          % (len(state), correct / len(x), len(x)))


if __name__ == "__main__":
    main()
