"""PyTorch reference of the PC-DARTS search network (Xu et al., ICLR 2020).

Re-implemented from the behaviour of the official code (yuhuixu1993/PC-DARTS
model_search.py on top of quark0/darts cnn/operations.py and genotypes.py),
with one deliberate generalisation: the partial-channel factor K is a
constructor argument instead of the hard-coded 4.  K=1 is plain DARTS (no
channel slicing, no bypass, no shuffle; channel_shuffle with one group would be
the identity anyway).

Module and attribute names follow the official code so that `state_dict()`
keys are identical, e.g. `stem.0.weight`, `cells.0.preprocess0.op.1.weight`,
`cells.2.preprocess0.conv_1.weight`, `cells.0._ops.3._ops.4.op.1.weight`,
`cells.0._ops.0._ops.1.1.running_mean`, `classifier.weight`.

The architecture parameters (alphas_normal/alphas_reduce [14, 8],
betas_normal/betas_reduce [14]) are plain leaf tensors with requires_grad,
exactly like the official `Variable`s: they are NOT registered, so they appear
in neither `parameters()` nor `state_dict()`.

Edge normalisation (model_search.py, Network.forward and Network.genotype):
the betas are soft-maxed per intermediate node over that node's in-edges,
i.e. over the segments betas[0:2], betas[2:5], betas[5:9], betas[9:14]
(for steps=4), and the concatenated result `weights2[e]` scales the output of
mixed edge e inside Cell.forward:  s_i = sum_j weights2[e(i,j)] * MixedOp_e(s_j).
The same normalised betas multiply the rows of softmax(alpha) in genotype().
"""

from collections import namedtuple

import torch
import torch.nn as nn
import torch.nn.functional as F

Genotype = namedtuple("Genotype", "normal normal_concat reduce reduce_concat")

PRIMITIVES = [
    "none",
    "max_pool_3x3",
    "avg_pool_3x3",
    "skip_connect",
    "sep_conv_3x3",
    "sep_conv_5x5",
    "dil_conv_3x3",
    "dil_conv_5x5",
]


# --------------------------------------------------------------------------
# Operations (DARTS cnn/operations.py semantics)
# --------------------------------------------------------------------------

class ReLUConvBN(nn.Module):
    """ReLU -> Conv(bias=False) -> BN, wrapped in `op` (names op.1, op.2)."""

    def __init__(self, C_in, C_out, kernel_size, stride, padding, affine=True):
        super().__init__()
        self.op = nn.Sequential(
            nn.ReLU(inplace=False),
            nn.Conv2d(C_in, C_out, kernel_size, stride=stride, padding=padding, bias=False),
            nn.BatchNorm2d(C_out, affine=affine),
        )

    def forward(self, x):
        return self.op(x)


class DilConv(nn.Module):
    """ReLU -> depthwise dilated conv -> pointwise conv -> BN."""

    def __init__(self, C_in, C_out, kernel_size, stride, padding, dilation, affine=True):
        super().__init__()
        self.op = nn.Sequential(
            nn.ReLU(inplace=False),
            nn.Conv2d(C_in, C_in, kernel_size, stride=stride, padding=padding,
                      dilation=dilation, groups=C_in, bias=False),
            nn.Conv2d(C_in, C_out, 1, padding=0, bias=False),
            nn.BatchNorm2d(C_out, affine=affine),
        )

    def forward(self, x):
        return self.op(x)


class SepConv(nn.Module):
    """Two stacked (ReLU, depthwise, pointwise, BN) blocks; only the first strides."""

    def __init__(self, C_in, C_out, kernel_size, stride, padding, affine=True):
        super().__init__()
        self.op = nn.Sequential(
            nn.ReLU(inplace=False),
            nn.Conv2d(C_in, C_in, kernel_size, stride=stride, padding=padding,
                      groups=C_in, bias=False),
            nn.Conv2d(C_in, C_in, 1, padding=0, bias=False),
            nn.BatchNorm2d(C_in, affine=affine),
            nn.ReLU(inplace=False),
            nn.Conv2d(C_in, C_in, kernel_size, stride=1, padding=padding,
                      groups=C_in, bias=False),
            nn.Conv2d(C_in, C_out, 1, padding=0, bias=False),
            nn.BatchNorm2d(C_out, affine=affine),
        )

    def forward(self, x):
        return self.op(x)


class Identity(nn.Module):
    def forward(self, x):
        return x


class Zero(nn.Module):
    """The `none` op: zeros, spatially subsampled when strided."""

    def __init__(self, stride):
        super().__init__()
        self.stride = stride

    def forward(self, x):
        if self.stride == 1:
            return x.mul(0.0)
        return x[:, :, ::self.stride, ::self.stride].mul(0.0)


class FactorizedReduce(nn.Module):
    """ReLU, two 1x1 stride-2 convs (second on the input shifted by one pixel), concat, BN."""

    def __init__(self, C_in, C_out, affine=True):
        super().__init__()
        assert C_out % 2 == 0, "FactorizedReduce needs an even C_out"
        self.relu = nn.ReLU(inplace=False)
        self.conv_1 = nn.Conv2d(C_in, C_out // 2, 1, stride=2, padding=0, bias=False)
        self.conv_2 = nn.Conv2d(C_in, C_out // 2, 1, stride=2, padding=0, bias=False)
        self.bn = nn.BatchNorm2d(C_out, affine=affine)

    def forward(self, x):
        x = self.relu(x)
        y = torch.cat([self.conv_1(x), self.conv_2(x[:, :, 1:, 1:])], dim=1)
        return self.bn(y)


def make_op(primitive, C, stride, affine):
    if primitive == "none":
        return Zero(stride)
    if primitive == "max_pool_3x3":
        return nn.MaxPool2d(3, stride=stride, padding=1)
    if primitive == "avg_pool_3x3":
        return nn.AvgPool2d(3, stride=stride, padding=1, count_include_pad=False)
    if primitive == "skip_connect":
        return Identity() if stride == 1 else FactorizedReduce(C, C, affine=affine)
    if primitive == "sep_conv_3x3":
        return SepConv(C, C, 3, stride, 1, affine=affine)
    if primitive == "sep_conv_5x5":
        return SepConv(C, C, 5, stride, 2, affine=affine)
    if primitive == "dil_conv_3x3":
        return DilConv(C, C, 3, stride, 2, 2, affine=affine)
    if primitive == "dil_conv_5x5":
        return DilConv(C, C, 5, stride, 4, 2, affine=affine)
    raise KeyError(primitive)


# --------------------------------------------------------------------------
# PC-DARTS search space
# --------------------------------------------------------------------------

def channel_shuffle(x, groups):
    """(N, g*c, H, W) -> view (N, g, c, H, W) -> swap g,c -> flatten.

    Output channel c*g + j is input channel j*c_per_group + c.
    """
    n, channels, h, w = x.shape
    per_group = channels // groups
    y = x.view(n, groups, per_group, h, w).transpose(1, 2).contiguous()
    return y.view(n, channels, h, w)


class MixedOp(nn.Module):
    """Partial-channel mixed op: the first C//k channels go through the
    weighted sum of all primitives, the rest bypass (MaxPool2d(2,2) when the
    edge reduces), then concat and channel_shuffle(k)."""

    def __init__(self, C, stride, k=4):
        super().__init__()
        assert C % k == 0, "C=%d not divisible by K=%d" % (C, k)
        self.k = k
        self.mp = nn.MaxPool2d(2, 2)
        self._ops = nn.ModuleList()
        c_part = C // k
        for primitive in PRIMITIVES:
            op = make_op(primitive, c_part, stride, False)
            if "pool" in primitive:
                op = nn.Sequential(op, nn.BatchNorm2d(c_part, affine=False))
            self._ops.append(op)

    def forward(self, x, weights):
        if self.k == 1:
            return sum(w * op(x) for w, op in zip(weights, self._ops))
        c_part = x.shape[1] // self.k
        active = x[:, :c_part, :, :]
        bypass = x[:, c_part:, :, :]
        mixed = sum(w * op(active) for w, op in zip(weights, self._ops))
        if mixed.shape[2] != x.shape[2]:  # reduction edge
            bypass = self.mp(bypass)
        return channel_shuffle(torch.cat([mixed, bypass], dim=1), self.k)


class Cell(nn.Module):
    def __init__(self, steps, multiplier, C_prev_prev, C_prev, C, reduction,
                 reduction_prev, k=4):
        super().__init__()
        self.reduction = reduction
        if reduction_prev:
            self.preprocess0 = FactorizedReduce(C_prev_prev, C, affine=False)
        else:
            self.preprocess0 = ReLUConvBN(C_prev_prev, C, 1, 1, 0, affine=False)
        self.preprocess1 = ReLUConvBN(C_prev, C, 1, 1, 0, affine=False)
        self._steps = steps
        self._multiplier = multiplier
        self._ops = nn.ModuleList()
        self._bns = nn.ModuleList()  # unused, kept as in the official code
        for i in range(steps):
            for j in range(2 + i):
                stride = 2 if reduction and j < 2 else 1
                self._ops.append(MixedOp(C, stride, k))

    def forward(self, s0, s1, weights, weights2):
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        offset = 0
        for _ in range(self._steps):
            s = sum(weights2[offset + j] * self._ops[offset + j](h, weights[offset + j])
                    for j, h in enumerate(states))
            offset += len(states)
            states.append(s)
        return torch.cat(states[-self._multiplier:], dim=1)


def edge_normalize(betas, steps):
    """Softmax of betas over each node's in-edges: [0:2], [2:5], [5:9], ..."""
    parts = []
    start, n = 0, 2
    for _ in range(steps):
        parts.append(F.softmax(betas[start:start + n], dim=-1))
        start += n
        n += 1
    return torch.cat(parts, dim=0)


class Network(nn.Module):
    def __init__(self, C, num_classes, layers, criterion=None, steps=4, multiplier=4,
                 stem_multiplier=3, k=4, arch_init_scale=1e-3, imagenet_stem=False):
        super().__init__()
        self._C = C
        self._num_classes = num_classes
        self._layers = layers
        self._criterion = criterion if criterion is not None else nn.CrossEntropyLoss()
        self._steps = steps
        self._multiplier = multiplier
        self._stem_multiplier = stem_multiplier
        self._k = k
        self._arch_init_scale = arch_init_scale
        self._imagenet_stem = imagenet_stem

        C_curr = stem_multiplier * C
        if imagenet_stem:
            # model_search_imagenet.py: 224 -> 112 -> 56 (stem0) -> 28 (stem1); the first cell
            # reads stem0's map through a FactorizedReduce (reduction_prev = True).
            self.stem0 = nn.Sequential(
                nn.Conv2d(3, C_curr // 2, 3, stride=2, padding=1, bias=False),
                nn.BatchNorm2d(C_curr // 2),
                nn.ReLU(),
                nn.Conv2d(C_curr // 2, C_curr, 3, stride=2, padding=1, bias=False),
                nn.BatchNorm2d(C_curr),
            )
            self.stem1 = nn.Sequential(
                nn.ReLU(),
                nn.Conv2d(C_curr, C_curr, 3, stride=2, padding=1, bias=False),
                nn.BatchNorm2d(C_curr),
            )
        else:
            self.stem = nn.Sequential(
                nn.Conv2d(3, C_curr, 3, padding=1, bias=False),
                nn.BatchNorm2d(C_curr),
            )
        C_prev_prev, C_prev, C_curr = C_curr, C_curr, C
        self.cells = nn.ModuleList()
        reduction_prev = imagenet_stem
        for i in range(layers):
            reduction = i in (layers // 3, 2 * layers // 3)
            if reduction:
                C_curr *= 2
            cell = Cell(steps, multiplier, C_prev_prev, C_prev, C_curr, reduction,
                        reduction_prev, k)
            reduction_prev = reduction
            self.cells.append(cell)
            C_prev_prev, C_prev = C_prev, multiplier * C_curr
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(C_prev, num_classes)
        self._initialize_alphas()

    def _initialize_alphas(self):
        edges = sum(2 + i for i in range(self._steps))
        num_ops = len(PRIMITIVES)
        s = self._arch_init_scale
        # Same draw order as the official code: alphas_normal, alphas_reduce, betas_normal, betas_reduce.
        self.alphas_normal = (s * torch.randn(edges, num_ops)).requires_grad_(True)
        self.alphas_reduce = (s * torch.randn(edges, num_ops)).requires_grad_(True)
        self.betas_normal = (s * torch.randn(edges)).requires_grad_(True)
        self.betas_reduce = (s * torch.randn(edges)).requires_grad_(True)
        self._arch_parameters = [self.alphas_normal, self.alphas_reduce,
                                 self.betas_normal, self.betas_reduce]

    def arch_parameters(self):
        return self._arch_parameters

    def new(self):
        clone = Network(self._C, self._num_classes, self._layers, self._criterion,
                        self._steps, self._multiplier, self._stem_multiplier, self._k,
                        self._arch_init_scale, self._imagenet_stem)
        for x, y in zip(clone.arch_parameters(), self.arch_parameters()):
            x.data.copy_(y.data)
        return clone

    def forward(self, input):
        w_normal = F.softmax(self.alphas_normal, dim=-1)
        w_reduce = F.softmax(self.alphas_reduce, dim=-1)
        b_normal = edge_normalize(self.betas_normal, self._steps)
        b_reduce = edge_normalize(self.betas_reduce, self._steps)
        if self._imagenet_stem:
            s0 = self.stem0(input)
            s1 = self.stem1(s0)
        else:
            s0 = s1 = self.stem(input)
        for cell in self.cells:
            if cell.reduction:
                s0, s1 = s1, cell(s0, s1, w_reduce, b_reduce)
            else:
                s0, s1 = s1, cell(s0, s1, w_normal, b_normal)
        out = self.global_pooling(s1)
        return self.classifier(out.view(out.size(0), -1))

    def _loss(self, input, target):
        return self._criterion(self(input), target)

    def genotype(self):
        none_index = PRIMITIVES.index("none")

        def parse(weights, weights2):
            gene = []
            start, n = 0, 2
            for i in range(self._steps):
                W = weights[start:start + n] * weights2[start:start + n, None]

                def best_value(row):
                    return max(row[k] for k in range(len(row)) if k != none_index)

                # stable sort on the negated strength: ties keep the lower edge index
                edges = sorted(range(i + 2), key=lambda e: -best_value(W[e]))[:2]
                for e in edges:
                    k_best = None
                    for k in range(len(W[e])):
                        if k != none_index and (k_best is None or W[e][k] > W[e][k_best]):
                            k_best = k
                    gene.append((PRIMITIVES[k_best], e))
                start += n
                n += 1
            return gene

        with torch.no_grad():
            gn = parse(F.softmax(self.alphas_normal, dim=-1).numpy(),
                       edge_normalize(self.betas_normal, self._steps).numpy())
            gr = parse(F.softmax(self.alphas_reduce, dim=-1).numpy(),
                       edge_normalize(self.betas_reduce, self._steps).numpy())
        concat = range(2 + self._steps - self._multiplier, self._steps + 2)
        return Genotype(normal=gn, normal_concat=concat, reduce=gr, reduce_concat=concat)


def count_parameters(model):
    """Sum of numel over model.parameters() (arch params are not registered)."""
    return sum(p.numel() for p in model.parameters())


if __name__ == "__main__":
    for k in (1, 2, 4, 8):
        net = Network(16, 10, 8, k=k)
        print("C=16 layers=8 classes=10 K=%d params=%d" % (k, count_parameters(net)))
