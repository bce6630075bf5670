"""PyTorch reference of the DARTS / PC-DARTS evaluation network (NetworkCIFAR).

Re-implemented from the behaviour of the official code (quark0/darts
cnn/model.py and cnn/utils.py, used unchanged by yuhuixu1993/PC-DARTS
train.py; genotypes from PC-DARTS genotypes.py).  The operations come from
scripts/pcdarts_torch.py (`make_op` with affine=True): in the evaluation
network the pools carry no batch norm, skip_connect is Identity at stride 1
and FactorizedReduce(C, C, affine=True) at stride 2.

Module names follow the official code, so `state_dict()` keys are identical:
`stem.0.weight`, `cells.1.preprocess0.conv_1.weight`,
`cells.3._ops.1.op.1.weight`, `auxiliary_head.features.2.weight`,
`classifier.weight`, ...

Drop path: the official `drop_path` draws mask ~ Bernoulli(keep_prob) of shape
(N, 1, 1, 1) and rewrites the op output in place (`x.div_(keep); x.mul_(mask)`).
Here the result is computed out of place (y = x / keep * mask, the same values)
and the mask can be injected: `NetworkCIFAR.forward(input, masks=...)` takes a
dict "cells.<i>._ops.<j>" -> (N,) tensor of 0/1 that replaces the draw for
that op.  Ops that are an Identity never get drop path (as officially).

Usage: /usr/bin/python3 scripts/darts_eval_torch.py   prints the parameter
counts of the official genotypes at C=36, layers=20 (PC_DARTS_cifar 3.634678 MB,
DARTS_V2 3.349342 MB, as the official train.py logs them).
"""

import os
import sys
from collections import namedtuple

import torch
import torch.nn as nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from pcdarts_torch import FactorizedReduce, Identity, ReLUConvBN, make_op  # noqa: E402

Genotype = namedtuple("Genotype", "normal normal_concat reduce reduce_concat")

# The genotypes of the official genotypes.py (PC-DARTS repository).
DARTS_V1 = Genotype(
    normal=[("sep_conv_3x3", 1), ("sep_conv_3x3", 0), ("skip_connect", 0), ("sep_conv_3x3", 1),
            ("skip_connect", 0), ("sep_conv_3x3", 1), ("sep_conv_3x3", 0), ("skip_connect", 2)],
    normal_concat=[2, 3, 4, 5],
    reduce=[("max_pool_3x3", 0), ("max_pool_3x3", 1), ("skip_connect", 2), ("max_pool_3x3", 0),
            ("max_pool_3x3", 0), ("skip_connect", 2), ("skip_connect", 2), ("avg_pool_3x3", 0)],
    reduce_concat=[2, 3, 4, 5])
DARTS_V2 = Genotype(
    normal=[("sep_conv_3x3", 0), ("sep_conv_3x3", 1), ("sep_conv_3x3", 0), ("sep_conv_3x3", 1),
            ("sep_conv_3x3", 1), ("skip_connect", 0), ("skip_connect", 0), ("dil_conv_3x3", 2)],
    normal_concat=[2, 3, 4, 5],
    reduce=[("max_pool_3x3", 0), ("max_pool_3x3", 1), ("skip_connect", 2), ("max_pool_3x3", 1),
            ("max_pool_3x3", 0), ("skip_connect", 2), ("skip_connect", 2), ("max_pool_3x3", 1)],
    reduce_concat=[2, 3, 4, 5])
DARTS = DARTS_V2
PC_DARTS_cifar = Genotype(
    normal=[("sep_conv_3x3", 1), ("skip_connect", 0), ("sep_conv_3x3", 0), ("dil_conv_3x3", 1),
            ("sep_conv_5x5", 0), ("sep_conv_3x3", 1), ("avg_pool_3x3", 0), ("dil_conv_3x3", 1)],
    normal_concat=range(2, 6),
    reduce=[("sep_conv_5x5", 1), ("max_pool_3x3", 0), ("sep_conv_5x5", 1), ("sep_conv_5x5", 2),
            ("sep_conv_3x3", 0), ("sep_conv_3x3", 3), ("sep_conv_3x3", 1), ("sep_conv_3x3", 2)],
    reduce_concat=range(2, 6))
PC_DARTS_image = Genotype(
    normal=[("skip_connect", 1), ("sep_conv_3x3", 0), ("sep_conv_3x3", 0), ("skip_connect", 1),
            ("sep_conv_3x3", 1), ("sep_conv_3x3", 3), ("sep_conv_3x3", 1), ("dil_conv_5x5", 4)],
    normal_concat=range(2, 6),
    reduce=[("sep_conv_3x3", 0), ("skip_connect", 1), ("dil_conv_5x5", 2), ("max_pool_3x3", 1),
            ("sep_conv_3x3", 2), ("sep_conv_3x3", 1), ("sep_conv_5x5", 0), ("sep_conv_3x3", 3)],
    reduce_concat=range(2, 6))
PCDARTS = PC_DARTS_cifar

GENOTYPES = {
    "DARTS_V1": DARTS_V1,
    "DARTS_V2": DARTS_V2,
    "DARTS": DARTS,
    "PC_DARTS_cifar": PC_DARTS_cifar,
    "PC_DARTS_image": PC_DARTS_image,
    "PCDARTS": PCDARTS,
}


def drop_path(x, drop_prob, mask=None):
    """x / keep_prob * mask, mask (N,) of 0/1; drawn ~ Bernoulli(keep_prob) when None.

    Same values as the official in-place `x.div_(keep_prob); x.mul_(mask)`.
    """
    if drop_prob <= 0.0:
        return x
    keep_prob = 1.0 - drop_prob
    if mask is None:
        mask = torch.empty(x.size(0), dtype=x.dtype, device=x.device).bernoulli_(keep_prob)
    mask = mask.to(dtype=x.dtype, device=x.device).reshape(x.size(0), 1, 1, 1)
    return x / keep_prob * mask


class Cell(nn.Module):
    def __init__(self, genotype, C_prev_prev, C_prev, C, reduction, reduction_prev):
        super().__init__()
        if reduction_prev:
            self.preprocess0 = FactorizedReduce(C_prev_prev, C, affine=True)
        else:
            self.preprocess0 = ReLUConvBN(C_prev_prev, C, 1, 1, 0, affine=True)
        self.preprocess1 = ReLUConvBN(C_prev, C, 1, 1, 0, affine=True)
        if reduction:
            op_names, indices = zip(*genotype.reduce)
            concat = genotype.reduce_concat
        else:
            op_names, indices = zip(*genotype.normal)
            concat = genotype.normal_concat
        assert len(op_names) == len(indices)
        self.reduction = reduction
        self._steps = len(op_names) // 2
        self._concat = concat
        self.multiplier = len(concat)
        self._ops = nn.ModuleList()
        for name, index in zip(op_names, indices):
            stride = 2 if reduction and index < 2 else 1
            self._ops.append(make_op(name, C, stride, True))
        self._indices = indices

    def forward(self, s0, s1, drop_prob, masks=None, prefix=""):
        """masks: optional {"<prefix>_ops.<j>": (N,) 0/1} replacing the Bernoulli draws."""
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        apply_drop = self.training and drop_prob > 0.0
        for i in range(self._steps):
            hs = []
            for j in (2 * i, 2 * i + 1):
                op = self._ops[j]
                h = op(states[self._indices[j]])
                if apply_drop and not isinstance(op, Identity):
                    mask = None if masks is None else masks.get("%s_ops.%d" % (prefix, j))
                    h = drop_path(h, drop_prob, mask)
                hs.append(h)
            states.append(hs[0] + hs[1])
        return torch.cat([states[i] for i in self._concat], dim=1)


class AuxiliaryHeadCIFAR(nn.Module):
    """Auxiliary classifier on the 8x8 map after cell 2*layers//3 (CIFAR 32x32 input).

    The official head's ReLUs are inplace=True; its first one therefore rewrites
    the cell output s1 in place with relu(s1).  That changes nothing downstream,
    because every consumer of s1 (the next cells' preprocess0/preprocess1:
    ReLUConvBN or FactorizedReduce) starts with a ReLU, and relu(relu(x)) =
    relu(x) with the same gradient mask -- except when the auxiliary cell is
    the last cell, where the global pooling would see relu(s1).  The ReLUs here
    are not in place, i.e. this head never alters s1.
    """

    def __init__(self, C, num_classes):
        super().__init__()
        self.features = nn.Sequential(
            nn.ReLU(inplace=False),
            nn.AvgPool2d(5, stride=3, padding=0, count_include_pad=False),  # 8x8 -> 2x2
            nn.Conv2d(C, 128, 1, bias=False),
            nn.BatchNorm2d(128),
            nn.ReLU(inplace=False),
            nn.Conv2d(128, 768, 2, bias=False),  # 2x2 -> 1x1
            nn.BatchNorm2d(768),
            nn.ReLU(inplace=False),
        )
        self.classifier = nn.Linear(768, num_classes)

    def forward(self, x):
        x = self.features(x)
        return self.classifier(x.view(x.size(0), -1))


class NetworkCIFAR(nn.Module):
    def __init__(self, C, num_classes, layers, auxiliary, genotype):
        super().__init__()
        self._layers = layers
        self._auxiliary = auxiliary
        self.drop_path_prob = 0.0
        stem_multiplier = 3
        C_curr = stem_multiplier * C
        self.stem = nn.Sequential(
            nn.Conv2d(3, C_curr, 3, padding=1, bias=False),
            nn.BatchNorm2d(C_curr),
        )
        C_prev_prev, C_prev, C_curr = C_curr, C_curr, C
        self.cells = nn.ModuleList()
        reduction_prev = False
        C_to_auxiliary = None
        for i in range(layers):
            reduction = i in (layers // 3, 2 * layers // 3)
            if reduction:
                C_curr *= 2
            cell = Cell(genotype, C_prev_prev, C_prev, C_curr, reduction, reduction_prev)
            reduction_prev = reduction
            self.cells.append(cell)
            C_prev_prev, C_prev = C_prev, cell.multiplier * C_curr
            if i == 2 * layers // 3:
                C_to_auxiliary = C_prev
        if auxiliary:
            self.auxiliary_head = AuxiliaryHeadCIFAR(C_to_auxiliary, num_classes)
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(C_prev, num_classes)

    def forward(self, input, masks=None):
        """Returns (logits, logits_aux); logits_aux is None unless auxiliary and training.

        masks: optional {"cells.<i>._ops.<j>": (N,) 0/1} used instead of drawing
        the drop-path masks (ops without an entry draw theirs).
        """
        logits_aux = None
        s0 = s1 = self.stem(input)
        for i, cell in enumerate(self.cells):
            s0, s1 = s1, cell(s0, s1, self.drop_path_prob, masks, "cells.%d." % i)
            if i == 2 * self._layers // 3 and self._auxiliary and self.training:
                logits_aux = self.auxiliary_head(s1)
        out = self.global_pooling(s1)
        logits = self.classifier(out.view(out.size(0), -1))
        return logits, logits_aux


class AuxiliaryHeadImageNet(nn.Module):
    """Auxiliary classifier of NetworkImageNet on the 7x7 map after cell 2*layers//3 (224 input):
    pool stride 2, and no batch norm after the 768-channel convolution (the official code
    comments it out, "for consistency with the experiments in the paper").  Not in-place ReLUs,
    as AuxiliaryHeadCIFAR here."""

    def __init__(self, C, num_classes):
        super().__init__()
        self.features = nn.Sequential(
            nn.ReLU(inplace=False),
            nn.AvgPool2d(5, stride=2, padding=0, count_include_pad=False),  # 7x7 -> 2x2
            nn.Conv2d(C, 128, 1, bias=False),
            nn.BatchNorm2d(128),
            nn.ReLU(inplace=False),
            nn.Conv2d(128, 768, 2, bias=False),  # 2x2 -> 1x1
            nn.ReLU(inplace=False),
        )
        self.classifier = nn.Linear(768, num_classes)

    def forward(self, x):
        x = self.features(x)
        return self.classifier(x.view(x.size(0), -1))


class NetworkImageNet(nn.Module):
    """The official NetworkImageNet (model.py): stem0 (3 -> C/2 -> C, stride 2 twice), stem1
    (C -> C, stride 2), the first cell reducing stem0's map, global pooling (AvgPool2d(7) at 224)."""

    def __init__(self, C, num_classes, layers, auxiliary, genotype):
        super().__init__()
        self._layers = layers
        self._auxiliary = auxiliary
        self.drop_path_prob = 0.0
        self.stem0 = nn.Sequential(
            nn.Conv2d(3, C // 2, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(C // 2),
            nn.ReLU(),
            nn.Conv2d(C // 2, C, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(C),
        )
        self.stem1 = nn.Sequential(
            nn.ReLU(),
            nn.Conv2d(C, C, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(C),
        )
        C_prev_prev, C_prev, C_curr = C, C, C
        self.cells = nn.ModuleList()
        reduction_prev = True
        C_to_auxiliary = None
        for i in range(layers):
            reduction = i in (layers // 3, 2 * layers // 3)
            if reduction:
                C_curr *= 2
            cell = Cell(genotype, C_prev_prev, C_prev, C_curr, reduction, reduction_prev)
            reduction_prev = reduction
            self.cells.append(cell)
            C_prev_prev, C_prev = C_prev, cell.multiplier * C_curr
            if i == 2 * layers // 3:
                C_to_auxiliary = C_prev
        if auxiliary:
            self.auxiliary_head = AuxiliaryHeadImageNet(C_to_auxiliary, num_classes)
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(C_prev, num_classes)

    def forward(self, input, masks=None):
        logits_aux = None
        s0 = self.stem0(input)
        s1 = self.stem1(s0)
        for i, cell in enumerate(self.cells):
            s0, s1 = s1, cell(s0, s1, self.drop_path_prob, masks, "cells.%d." % i)
            if i == 2 * self._layers // 3 and self._auxiliary and self.training:
                logits_aux = self.auxiliary_head(s1)
        out = self.global_pooling(s1)
        logits = self.classifier(out.view(out.size(0), -1))
        return logits, logits_aux


def drop_path_ops(model):
    """Names "cells.<i>._ops.<j>" of the ops that get drop path (all but Identity)."""
    return ["cells.%d._ops.%d" % (i, j)
            for i, cell in enumerate(model.cells)
            for j, op in enumerate(cell._ops) if not isinstance(op, Identity)]


def count_parameters(model, include_auxiliary=True):
    return sum(p.numel() for name, p in model.named_parameters()
               if include_auxiliary or "auxiliary" not in name)


def count_parameters_in_MB(model):
    """As the official utils.count_parameters_in_MB: auxiliary head excluded, / 1e6."""
    return count_parameters(model, include_auxiliary=False) / 1e6


EXPECTED_MB = {"PC_DARTS_cifar": 3.634678, "DARTS_V2": 3.349342}


if __name__ == "__main__":
    ok = True
    for name in ("PC_DARTS_cifar", "PC_DARTS_image", "DARTS_V1", "DARTS_V2"):
        net = NetworkCIFAR(36, 10, 20, True, GENOTYPES[name])
        mb = count_parameters_in_MB(net)
        expected = EXPECTED_MB.get(name)
        status = ""
        if expected is not None:
            good = abs(mb - expected) < 5e-7
            ok = ok and good
            status = "  (expected %.6f: %s)" % (expected, "ok" if good else "MISMATCH")
        print("%-15s C=36 layers=20 auxiliary: param size = %.6f MB, total with head %d%s"
              % (name, mb, count_parameters(net), status))
    sys.exit(0 if ok else 1)
