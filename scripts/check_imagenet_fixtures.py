#!/usr/bin/env python3
"""Recomputes the ImageNet golden fixtures with the OFFICIAL networks of the PC-DARTS repository.

The fixtures the Swift tests read come from scripts/make_fixtures.py, whose networks are this
project's PyTorch rewrite (scripts/pcdarts_torch.py, scripts/darts_eval_torch.py). This script
checks that rewrite against the official code itself: it loads
Tests/Fixtures/tiny_network_imagenet_K2.safetensors into model_search_imagenet.py's `Network` and
eval_network_imagenet_pcdarts_image.safetensors into model.py's `NetworkImageNet` (strict
load_state_dict), recomputes the stored logits, losses (train_imagenet.py's own
`CrossEntropyLabelSmooth` for the latter), gradients and running statistics in float64, and
prints the largest relative difference of each (float32 rounding, ~1e-7, when they agree). It
also prints count_parameters_in_MB of NetworkImageNet(48, 1000, 14, PC_DARTS_image).

    /usr/bin/python3 scripts/check_imagenet_fixtures.py --official PATH/TO/PC-DARTS

One known difference: model_search_imagenet.py's Cell evaluates every MixedOp twice per forward
(once inside `.to(op(h, w).device)`, once for the value), so the batch norms inside the edges
update their running statistics twice (r ← 0.81·r + 0.19·m instead of 0.9·r + 0.1·m); outputs
and gradients are unaffected. The engine updates them once, as model_search.py does; the script
checks those statistics against the twice-updated value derived from the fixture.
"""

import argparse
import ast
import json
import os
import sys
import types

import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import safetensors_io  # noqa: E402

FIXTURES = os.path.join(HERE, "..", "Tests", "Fixtures")
ARCH = ["alphas_normal", "alphas_reduce", "betas_normal", "betas_reduce"]


def relative(actual, expected):
    """Largest |actual − expected| over the largest |expected|."""
    scale = expected.double().abs().max().clamp_min(1e-30)
    return float((actual.double() - expected.double()).abs().max() / scale)


def load(name):
    tensors, metadata = safetensors_io.load(os.path.join(FIXTURES, name))
    return {k: torch.from_numpy(v) for k, v in tensors.items()}, metadata


def official_label_smoothing(official):
    """train_imagenet.py's CrossEntropyLabelSmooth, taken from the file (the script itself needs
    a GPU and the ImageNet folders to import)."""
    tree = ast.parse(open(os.path.join(official, "train_imagenet.py")).read())
    namespace = {"nn": torch.nn, "torch": torch}
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == "CrossEntropyLabelSmooth":
            exec(compile(ast.Module([node], []), "train_imagenet.py", "exec"), namespace)
    return namespace["CrossEntropyLabelSmooth"]


def check_search_network(msi):
    t, meta = load("tiny_network_imagenet_K2.safetensors")
    config = json.loads(meta["network"])
    assert config["stem"] == "imagenet" and config["K"] == 2, config
    net = msi.Network(config["C"], config["num_classes"], config["layers"], torch.nn.CrossEntropyLoss())
    net.load_state_dict({k: v for k, v in t.items() if k in net.state_dict()}, strict=True)
    net.double().train()
    arch = [t[name].double().requires_grad_(True) for name in ARCH]
    net.alphas_normal, net.alphas_reduce, net.betas_normal, net.betas_reduce = arch
    net._arch_parameters = arch
    print("model_search_imagenet.Network: state_dict loaded strictly; genotype %s; %d weights (fixture %s)"
          % ("equal" if str(net.genotype()) == meta["genotype"] else "DIFFERS",
             sum(p.numel() for p in net.parameters()), meta["param_count"]))
    logits = net(t["input"].double())
    loss = F.cross_entropy(logits, t["target"])
    loss.backward()
    parameters = dict(net.named_parameters())
    parameters.update(zip(ARCH, arch))
    grads = [k for k in t if k.startswith("grad.")]
    buffers = dict(net.named_buffers())
    edge_stats, other_stats = [], []
    for key in (k for k in t if k.startswith("after.")):
        name = key[len("after."):]
        if "._ops." in name:  # twice updated: 0.9·(0.9·b + 0.1·m) + 0.1·m = 1.9·A − 0.9·b
            edge_stats.append(relative(buffers[name], 1.9 * t[key].double() - 0.9 * t[name].double()))
        else:
            other_stats.append(relative(buffers[name], t[key]))
    print("  logits %.1e, loss %.1e, %d gradients (α, β, weights) %.1e, running statistics %.1e, "
          "those inside the edges (updated twice) %.1e"
          % (relative(logits, t["logits"]), relative(loss.reshape(1), t["loss"]), len(grads),
             max(relative(parameters[k[5:]].grad, t[k]) for k in grads), max(other_stats), max(edge_stats)))


def check_evaluation_network(model, genotypes, label_smooth):
    t, meta = load("eval_network_imagenet_pcdarts_image.safetensors")
    config = json.loads(meta["network"])
    assert config["stem"] == "imagenet" and config["genotype_name"] == "PC_DARTS_image", config
    net = model.NetworkImageNet(config["C"], config["num_classes"], config["layers"], True,
                                genotypes.PC_DARTS_image)
    net.load_state_dict({k: v for k, v in t.items() if k in net.state_dict()}, strict=True)
    net.double().train()
    net.drop_path_prob = 0.0  # the fixture's `nodrop` case; the official drop-path draws its own masks
    logits, logits_aux = net(t["input"].double())
    criterion = label_smooth(config["num_classes"], config["label_smoothing"])
    loss = criterion(logits, t["target"]) + config["auxiliary_weight"] * criterion(logits_aux, t["target"])
    loss.backward()
    parameters = dict(net.named_parameters())
    grads = [k for k in t if k.startswith("nodrop.grad.")]
    buffers = dict(net.named_buffers())
    after = [k for k in t if k.startswith("nodrop.after.")]
    print("model.NetworkImageNet: state_dict loaded strictly; %d weights without the head (fixture %s)"
          % (sum(p.numel() for n, p in net.named_parameters() if "auxiliary" not in n), meta["param_count"]))
    print("  logits %.1e, auxiliary logits %.1e, loss (CrossEntropyLabelSmooth %.1f) %.1e, %d gradients %.1e, "
          "%d running statistics %.1e"
          % (relative(logits, t["nodrop.logits"]), relative(logits_aux, t["nodrop.logits_aux"]),
             config["label_smoothing"], relative(loss.reshape(1), t["nodrop.loss"]), len(grads),
             max(relative(parameters[k[len("nodrop.grad."):]].grad, t[k]) for k in grads), len(after),
             max(relative(buffers[k[len("nodrop.after."):]], t[k]) for k in after)))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--official", required=True, help="a checkout of yuhuixu1993/PC-DARTS")
    args = parser.parse_args()
    torch.set_num_threads(2)
    # The official utils.py imports torchvision for its data transforms, unused here.
    if "torchvision" not in sys.modules:
        try:
            import torchvision  # noqa: F401
        except ImportError:
            stub = types.ModuleType("torchvision")
            stub.transforms = types.ModuleType("torchvision.transforms")
            sys.modules["torchvision"], sys.modules["torchvision.transforms"] = stub, stub.transforms
    # model_search_imagenet.py puts α and β on the GPU with .cuda(); on a CPU they stay put.
    if not torch.cuda.is_available():
        torch.Tensor.cuda = lambda self, *a, **k: self
    sys.path.insert(0, os.path.abspath(args.official))
    import genotypes  # noqa: E402  (the official modules)
    import model  # noqa: E402
    import model_search_imagenet  # noqa: E402
    import utils  # noqa: E402

    check_search_network(model_search_imagenet)
    check_evaluation_network(model, genotypes, official_label_smoothing(args.official))
    paper = model.NetworkImageNet(48, 1000, 14, True, genotypes.PC_DARTS_image)
    print("count_parameters_in_MB(NetworkImageNet(48, 1000, 14, PC_DARTS_image)) = %f"
          % utils.count_parameters_in_MB(paper))


if __name__ == "__main__":
    main()
