"""Generate the golden fixtures the Swift tests read (Tests/Fixtures/*.safetensors).

Regenerate
----------
    apt-get install python3-torch        # Debian torch 1.13; no pip packages needed
    /usr/bin/python3 scripts/make_fixtures.py [--out Tests/Fixtures]

Everything is deterministic (fixed torch.manual_seed per case).  Inputs AND
outputs are stored, so the Swift side needs no RNG parity with torch.

Conventions
-----------
* Format: safetensors written by scripts/safetensors_io.py.  All float tensors
  are F32, integer tensors (labels, num_batches_tracked) are I64.  Scalars
  (losses, norms) are stored with shape [1].
* Inputs are drawn in float32; every forward/backward is then evaluated in
  float64 and the results are rounded to float32 once, so the fixture holds the
  (nearly) exact answer for the stored float32 inputs.
* Top-level metadata `generator` = "scripts/make_fixtures.py, torch <version>".
* ops.safetensors: each case `<case>` is a group of tensors `<case>.<tensor>`
  and metadata `<case>` is a JSON string of its parameters (always with a
  "kind" field).  Gradient cases store a random upstream gradient `grad_out`,
  the forward output `out` and `grad_<input>` = d(sum(out * grad_out))/d input.
  Cases: conv.*, bn.*, pool.*, linear, softmax.*, cross_entropy, channel_shuffle,
  mixed_op.* (one PC-DARTS edge: `.state.<state_dict name>` before, `.after.<buffer>`
  after the forward), sgd, adam, cosine.*, clip.
* tiny_network_K{1,4}.safetensors: the PC-DARTS search Network (C=8, layers=5,
  10 classes, steps 4, multiplier 4, stem multiplier 3) in training mode:
    - every state_dict() entry under its exact official name, BEFORE the forward
    - `alphas_normal`, `alphas_reduce` [14, 8], `betas_normal`, `betas_reduce` [14]
      (0.5 * randn instead of the official 1e-3 so the softmax weights differ)
    - `input` [2, 3, 16, 16], `target` I64 [2]
    - `logits` [2, 10], `loss` [1] (mean cross entropy)
    - `grad.<name>` for the four arch params and several weights
    - `after.<buffer name>` running statistics after the single forward
  metadata: `network` (JSON of the constructor arguments etc.), `genotype`
  (str of the official Genotype namedtuple), `param_count`, `grad_names`,
  `after_names`.
* tiny_network_imagenet_K2.safetensors: the same with model_search_imagenet.py's
  three-convolution stem (`stem0.*`, `stem1.*`; the first cell reduces stem0's map)
  at K=2 on an input [2, 3, 128, 128]; metadata `network` has `stem: imagenet`.
* tiny_network_unrolled_K4.safetensors: the second-order (unrolled) DARTS
  architecture gradient of the same network shape (K=4, seed 44), computed like
  quark0/darts cnn/architect.py (see make_unrolled and its `description`
  metadata).  Holds the weights under their state_dict names (NOT the batch-norm
  running statistics: training mode, they change no output, and with them the
  file would not fit in 700 KB), the arch params, `train_input`/`train_target`,
  `valid_input`/`valid_target`, ONE flat `momentum_buffer` (the official
  `_concat` of every weight's buffer in `named_parameters()` order, listed in
  metadata `param_names`; per-name buffers would add ~100 KB of header),
  `grad_unrolled.<arch>`, `grad_first_order.<arch>` and `valid_loss_unrolled`.
* trained_network_K{1,2}.safetensors: the search Network at K=1 (C=8) and K=2
  (C=16), 5 layers, TRAINED for 30 first-order search steps in float32 on
  Fashion-MNIST test images (see make_trained).  Holds the weights under their
  named_parameters() names (no running statistics: training mode), the arch
  params, `input` [16, 3, 32, 32] and `target` I64 [16], and `grad<i>.<arch>`:
  the float64 α/β gradients of the batch scaled by 1 + nearby_scales[i] in
  float32.  Metadata: `network`, `training` (the hyper-parameters and
  nearby_scales), `param_names`, `param_count`, and `torch_float32_errors`:
  PyTorch's own float32 error on each input (largest |float32 − float64| over
  the four arch tensors, relative to each tensor's largest gradient).
* eval_network_pcdarts_{cifar,image}.safetensors: the evaluation network
  (scripts/darts_eval_torch.py = the official NetworkCIFAR; genotypes
  PC_DARTS_cifar / PC_DARTS_image) at C=8, layers=5, 10 classes, auxiliary
  head, training mode, batch 4 of 32x32 (the head pools an 8x8 map).  Every
  batch norm has random affine parameters and running statistics.  Holds:
    - every state_dict() entry under its official name, BEFORE any forward
    - `input` [4, 3, 32, 32], `target` I64 [4]
    - `nodrop.*`: drop_path_prob 0: `logits`, `logits_aux` [4, 10], `loss` [1]
      (= CE(logits) + 0.4 * CE(logits_aux), means), `grad.<param>` for every
      parameter (auxiliary head included), `after.<buffer>` every running
      mean/var after the forward
    - `drop.*`: drop_path_prob 0.3 with the masks `drop.mask.cells.<i>._ops.<j>`
      [4] (0/1, one per non-Identity op; y = x / 0.7 * mask): `logits`,
      `logits_aux`, `loss`, `grad.<param>` for every parameter
  Each case starts from a fresh deep copy of the stored state.  metadata:
  `network` (JSON), `genotype` (str of the Genotype), `param_count` (without
  the auxiliary head), `param_count_total`, `mb_c36_l20`
  (count_parameters_in_MB at C=36, layers=20, as the official train.py logs).
"""

import argparse
import copy
import json
import math
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import safetensors_io  # noqa: E402
from pcdarts_torch import MixedOp, Network, channel_shuffle, count_parameters  # noqa: E402
import darts_eval_torch  # noqa: E402

GENERATOR = "scripts/make_fixtures.py, torch %s" % torch.__version__
DT = torch.float64


def f32(t):
    return t.detach().to(torch.float32).contiguous()


def scalar(t):
    return f32(t).reshape(1)


class Fixture:
    def __init__(self):
        self.tensors = {}
        self.metadata = {"generator": GENERATOR}

    def case(self, name, params, **tensors):
        assert name not in self.metadata, name
        self.metadata[name] = json.dumps(params, sort_keys=True)
        for key, value in tensors.items():
            full = "%s.%s" % (name, key)
            assert full not in self.tensors, full
            self.tensors[full] = value

    def save(self, path):
        safetensors_io.save(path, self.tensors, self.metadata)
        size = os.path.getsize(path)
        print("wrote %s (%d tensors, %d bytes)" % (path, len(self.tensors), size))
        return size


def randn(*shape):
    return torch.randn(*shape, dtype=torch.float32)


def grad_case(fx, name, params, fn, inputs):
    """inputs: ordered {name: float32 tensor}; fn(**double_inputs) -> output."""
    leaves = {k: v.to(DT).requires_grad_(True) for k, v in inputs.items()}
    out = fn(**leaves)
    grad_out = randn(*out.shape)
    out.backward(grad_out.to(DT))
    tensors = dict(inputs)
    tensors["out"] = f32(out)
    tensors["grad_out"] = grad_out
    for k, v in leaves.items():
        tensors["grad_" + k] = f32(v.grad)
    fx.case(name, params, **tensors)
    return out


# --------------------------------------------------------------------------
# ops.safetensors
# --------------------------------------------------------------------------

CONV_CASES = [
    # name, N, Cin, Cout, H, W, k, stride, padding, dilation, groups, bias
    ("conv3x3_bias", 2, 3, 4, 6, 5, 3, 1, 1, 1, 1, True),
    ("conv3x3_s2", 2, 3, 4, 7, 7, 3, 2, 1, 1, 1, False),
    ("conv3x3_d2", 2, 3, 4, 8, 7, 3, 1, 2, 2, 1, False),
    ("conv3x3_g2", 2, 4, 6, 6, 6, 3, 1, 1, 1, 2, True),
    ("dw3_s1_d1", 2, 4, 4, 7, 7, 3, 1, 1, 1, 4, False),
    ("dw3_s2_d1", 2, 4, 4, 8, 8, 3, 2, 1, 1, 4, False),
    ("dw5_s1_d1", 2, 4, 4, 7, 7, 5, 1, 2, 1, 4, False),
    ("dw5_s2_d1", 2, 4, 4, 8, 8, 5, 2, 2, 1, 4, False),
    ("dw3_s1_d2", 2, 4, 4, 7, 7, 3, 1, 2, 2, 4, False),
    ("dw3_s2_d2", 2, 4, 4, 8, 8, 3, 2, 2, 2, 4, False),
    ("dw5_s1_d2", 2, 4, 4, 9, 9, 5, 1, 4, 2, 4, False),
    ("dw5_s2_d2", 2, 4, 4, 8, 8, 5, 2, 4, 2, 4, False),
    ("dw3_s2_d1_odd", 2, 3, 3, 7, 7, 3, 2, 1, 1, 3, False),
    ("conv1x1", 2, 6, 4, 5, 5, 1, 1, 0, 1, 1, False),
    ("conv1x1_s2", 2, 6, 4, 8, 8, 1, 2, 0, 1, 1, False),
    ("conv1x1_s2_odd", 2, 6, 4, 7, 7, 1, 2, 0, 1, 1, False),
]


def add_conv_cases(fx):
    for i, (name, n, cin, cout, h, w, k, s, p, d, g, bias) in enumerate(CONV_CASES):
        torch.manual_seed(100 + i)
        inputs = {"x": randn(n, cin, h, w), "weight": randn(cout, cin // g, k, k) * 0.5}
        if bias:
            inputs["bias"] = randn(cout)

        def fn(x, weight, bias=None):
            return F.conv2d(x, weight, bias, stride=s, padding=p, dilation=d, groups=g)

        params = {"kind": "conv2d", "stride": s, "padding": p, "dilation": d, "groups": g,
                  "has_bias": bias, "kernel_size": k}
        out = grad_case(fx, "conv." + name, params, fn, inputs)
        expected = (h + 2 * p - d * (k - 1) - 1) // s + 1
        assert tuple(out.shape) == (n, cout, expected, (w + 2 * p - d * (k - 1) - 1) // s + 1)


def add_batchnorm_cases(fx):
    eps, momentum = 1e-5, 0.1
    # training mode, affine
    torch.manual_seed(200)
    x = randn(3, 4, 5, 5) * 2.0 + 0.7
    weight, bias = randn(4), randn(4)
    rm, rv = torch.zeros(4, dtype=DT), torch.ones(4, dtype=DT)

    def train_affine(x, weight, bias):
        return F.batch_norm(x, rm, rv, weight, bias, training=True, momentum=momentum, eps=eps)

    grad_case(fx, "bn.train_affine",
              {"kind": "batch_norm", "training": True, "affine": True, "eps": eps,
               "momentum": momentum, "running_init": "mean 0, var 1",
               "running_var": "unbiased batch variance"},
              train_affine, {"x": x, "weight": weight, "bias": bias})
    fx.tensors["bn.train_affine.running_mean"] = f32(rm)
    fx.tensors["bn.train_affine.running_var"] = f32(rv)
    # cross-check the running-stat update rule
    xd = x.to(DT)
    mean = xd.mean(dim=(0, 2, 3))
    var_unbiased = xd.var(dim=(0, 2, 3), unbiased=True)
    assert torch.allclose(rm, momentum * mean)
    assert torch.allclose(rv, (1 - momentum) + momentum * var_unbiased)

    # training mode, non-affine (as every BN inside the cells)
    torch.manual_seed(201)
    x = randn(2, 3, 4, 6) * 1.5 - 0.3
    rm2, rv2 = torch.zeros(3, dtype=DT), torch.ones(3, dtype=DT)

    def train_plain(x):
        return F.batch_norm(x, rm2, rv2, None, None, training=True, momentum=momentum, eps=eps)

    grad_case(fx, "bn.train_noaffine",
              {"kind": "batch_norm", "training": True, "affine": False, "eps": eps,
               "momentum": momentum, "running_init": "mean 0, var 1"},
              train_plain, {"x": x})
    fx.tensors["bn.train_noaffine.running_mean"] = f32(rm2)
    fx.tensors["bn.train_noaffine.running_var"] = f32(rv2)

    # eval mode, affine, given running statistics
    torch.manual_seed(202)
    x = randn(2, 4, 3, 3)
    weight, bias = randn(4), randn(4)
    rm_in = randn(4) * 0.5
    rv_in = torch.rand(4) + 0.5

    def eval_affine(x, weight, bias):
        return F.batch_norm(x, rm_in.to(DT), rv_in.to(DT), weight, bias, training=False,
                            momentum=momentum, eps=eps)

    grad_case(fx, "bn.eval_affine",
              {"kind": "batch_norm", "training": False, "affine": True, "eps": eps},
              eval_affine, {"x": x, "weight": weight, "bias": bias})
    fx.tensors["bn.eval_affine.running_mean_in"] = rm_in
    fx.tensors["bn.eval_affine.running_var_in"] = rv_in


def add_pool_cases(fx):
    cases = [
        ("max3_s1_p1", "max_pool2d", 3, 1, 1, (2, 3, 7, 7)),
        ("max3_s2_p1", "max_pool2d", 3, 2, 1, (2, 3, 7, 7)),
        ("max3_s2_p1_even", "max_pool2d", 3, 2, 1, (2, 3, 8, 8)),
        ("avg3_s1_p1", "avg_pool2d", 3, 1, 1, (2, 3, 7, 7)),
        ("avg3_s2_p1", "avg_pool2d", 3, 2, 1, (2, 3, 7, 7)),
        ("avg3_s2_p1_even", "avg_pool2d", 3, 2, 1, (2, 3, 8, 8)),
        ("max2_s2", "max_pool2d", 2, 2, 0, (2, 3, 8, 8)),
        ("max2_s2_odd", "max_pool2d", 2, 2, 0, (2, 3, 7, 7)),
    ]
    for i, (name, kind, k, s, p, shape) in enumerate(cases):
        torch.manual_seed(300 + i)
        x = randn(*shape)
        if kind == "max_pool2d":
            def fn(x, k=k, s=s, p=p):
                return F.max_pool2d(x, k, stride=s, padding=p)
            params = {"kind": kind, "kernel_size": k, "stride": s, "padding": p}
        else:
            def fn(x, k=k, s=s, p=p):
                return F.avg_pool2d(x, k, stride=s, padding=p, count_include_pad=False)
            params = {"kind": kind, "kernel_size": k, "stride": s, "padding": p,
                      "count_include_pad": False}
        grad_case(fx, "pool." + name, params, fn, {"x": x})
    torch.manual_seed(310)
    grad_case(fx, "pool.global_avg", {"kind": "adaptive_avg_pool2d", "output_size": 1},
              lambda x: F.adaptive_avg_pool2d(x, 1), {"x": randn(2, 5, 7, 7)})


def add_misc_cases(fx):
    torch.manual_seed(400)
    grad_case(fx, "linear", {"kind": "linear", "has_bias": True},
              lambda x, weight, bias: F.linear(x, weight, bias),
              {"x": randn(3, 5), "weight": randn(4, 5), "bias": randn(4)})
    torch.manual_seed(401)
    grad_case(fx, "softmax.vector", {"kind": "softmax", "dim": -1},
              lambda x: F.softmax(x, dim=-1), {"x": randn(8) * 2})
    torch.manual_seed(402)
    grad_case(fx, "softmax.rows", {"kind": "softmax", "dim": -1},
              lambda x: F.softmax(x, dim=-1), {"x": randn(14, 8) * 2})
    torch.manual_seed(403)
    logits = randn(4, 10) * 2
    target = torch.tensor([3, 0, 9, 3], dtype=torch.int64)
    grad_case(fx, "cross_entropy", {"kind": "cross_entropy", "reduction": "mean"},
              lambda logits: F.cross_entropy(logits, target).reshape(1), {"logits": logits})
    fx.tensors["cross_entropy.target"] = target
    torch.manual_seed(404)
    grad_case(fx, "channel_shuffle", {"kind": "channel_shuffle", "groups": 4},
              lambda x: channel_shuffle(x, 4), {"x": randn(2, 8, 3, 3)})


def add_mixed_op_cases(fx):
    """One PC-DARTS mixed edge in training mode: its state_dict under
    `<case>.state.<name>`, input x, the 8 op weights `weights`, out, grads."""
    for i, (k, stride) in enumerate(((4, 1), (4, 2), (1, 2))):
        torch.manual_seed(600 + i)
        op = MixedOp(8, stride, k).train()
        state = {n: v.detach().clone() for n, v in op.state_dict().items()}
        op.double()
        x = randn(2, 8, 8, 8)
        w = torch.softmax(randn(8), dim=0)
        name = "mixed_op.K%d_s%d" % (k, stride)
        grad_case(fx, name, {"kind": "mixed_op", "C": 8, "K": k, "stride": stride,
                             "training": True, "state_prefix": name + ".state."},
                  lambda x, weights: op(x, weights), {"x": x, "weights": w})
        for n, v in state.items():
            fx.tensors["%s.state.%s" % (name, n)] = v
        for n in ("_ops.1.1.running_mean", "_ops.2.1.running_var"):
            fx.tensors["%s.after.%s" % (name, n)] = f32(dict(op.named_buffers())[n])


def add_optimizer_cases(fx):
    torch.manual_seed(500)
    p0 = randn(3, 4)
    grads = [randn(3, 4) for _ in range(3)]

    def run(make_opt):
        p = p0.to(DT).clone().requires_grad_(True)
        opt = make_opt([p])
        states = []
        for g in grads:
            p.grad = g.to(DT).clone()
            opt.step()
            states.append(f32(p))
        return states

    sgd_params = {"lr": 0.1, "momentum": 0.9, "weight_decay": 3e-4, "dampening": 0,
                  "nesterov": False}
    p1, p2, p3 = run(lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9, weight_decay=3e-4))
    # hand check: buf = g + wd p (step 1), buf = m buf + g + wd p; p -= lr buf
    p, buf = p0.to(DT), None
    for g in grads:
        d = g.to(DT) + 3e-4 * p
        buf = d if buf is None else 0.9 * buf + d
        p = p - 0.1 * buf
    assert torch.allclose(p.float(), p3, atol=1e-6)
    fx.case("sgd", dict(sgd_params, kind="sgd"), p0=p0, g1=grads[0], g2=grads[1], g3=grads[2],
            p1=p1, p2=p2, p3=p3)

    adam_params = {"lr": 6e-4, "betas": [0.5, 0.999], "eps": 1e-8, "weight_decay": 1e-3,
                   "amsgrad": False, "weight_decay_mode": "L2 added to the gradient"}
    p1, p2, p3 = run(lambda ps: torch.optim.Adam(ps, lr=6e-4, betas=(0.5, 0.999),
                                                 weight_decay=1e-3))
    p, m, v = p0.to(DT), 0.0, 0.0
    for t, g in enumerate(grads, start=1):
        d = g.to(DT) + 1e-3 * p
        m = 0.5 * m + 0.5 * d
        v = 0.999 * v + 0.001 * d * d
        mhat, vhat = m / (1 - 0.5 ** t), v / (1 - 0.999 ** t)
        p = p - 6e-4 * mhat / (vhat.sqrt() + 1e-8)
    assert torch.allclose(p.float(), p3, atol=1e-6)
    fx.case("adam", dict(adam_params, kind="adam"), p0=p0, g1=grads[0], g2=grads[1],
            g3=grads[2], p1=p1, p2=p2, p3=p3)

    # cosine annealing as train_search.py uses it: lr(e) for epoch e = 0..49
    for name, eta_min in (("cosine.eta0", 0.0), ("cosine.eta0_001", 0.001)):
        closed = [eta_min + (0.1 - eta_min) * (1 + math.cos(math.pi * e / 50)) / 2
                  for e in range(50)]
        q = torch.zeros(1, requires_grad=True)
        opt = torch.optim.SGD([q], lr=0.1)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=50.0, eta_min=eta_min)
        from_torch = []
        for _ in range(50):
            from_torch.append(opt.param_groups[0]["lr"])
            opt.step()
            sched.step()
        diff = max(abs(a - b) for a, b in zip(closed, from_torch))
        print("%s: max |closed form - torch scheduler| = %.3g, lr[0]=%.6f lr[25]=%.6f lr[49]=%.8f"
              % (name, diff, closed[0], closed[25], closed[49]))
        assert diff < 1e-12
        fx.case(name, {"kind": "cosine_annealing", "base_lr": 0.1, "T_max": 50,
                       "eta_min": eta_min, "epochs": 50,
                       "rule": "lrs[e] = eta_min + (base_lr - eta_min) * (1 + cos(pi e / T_max)) / 2"},
                lrs=torch.tensor(closed, dtype=torch.float32))

    torch.manual_seed(501)
    g1, g2 = randn(3, 4) * 2, randn(5) * 2
    a = g1.to(DT).clone().requires_grad_(True)
    b = g2.to(DT).clone().requires_grad_(True)
    a.grad, b.grad = g1.to(DT).clone(), g2.to(DT).clone()
    total = torch.nn.utils.clip_grad_norm_([a, b], max_norm=5.0)
    print("clip: total norm %.6f (> 5), scale %.6f" % (float(total), 5.0 / (float(total) + 1e-6)))
    assert float(total) > 5.0
    fx.case("clip", {"kind": "clip_grad_norm", "max_norm": 5.0, "norm_type": 2,
                     "rule": "g *= min(1, max_norm / (total_norm + 1e-6))"},
            g1=g1, g2=g2, g1_clipped=f32(a.grad), g2_clipped=f32(b.grad), total_norm=scalar(total))


def make_ops(out_dir):
    fx = Fixture()
    add_conv_cases(fx)
    add_batchnorm_cases(fx)
    add_pool_cases(fx)
    add_misc_cases(fx)
    add_mixed_op_cases(fx)
    add_optimizer_cases(fx)
    return fx.save(os.path.join(out_dir, "ops.safetensors"))


# --------------------------------------------------------------------------
# tiny_network_K*.safetensors
# --------------------------------------------------------------------------

NET = {"C": 8, "num_classes": 10, "layers": 5, "steps": 4, "multiplier": 4,
       "stem_multiplier": 3, "arch_init_scale": 0.5}


def make_network(out_dir, k, seed, imagenet_stem=False):
    torch.manual_seed(seed)
    net = Network(NET["C"], NET["num_classes"], NET["layers"], steps=NET["steps"],
                  multiplier=NET["multiplier"], stem_multiplier=NET["stem_multiplier"],
                  k=k, arch_init_scale=NET["arch_init_scale"], imagenet_stem=imagenet_stem)
    # The ImageNet stem divides the side by 8 and the cells by 4: at 128 the last cells hold 4 × 4
    # maps (at 64, 2 × 2 maps make the batch norms so ill-conditioned that PyTorch float32 itself
    # differs from float64 by 1e-4).
    side = 128 if imagenet_stem else 16
    net.train()
    tensors = {name: value.detach().clone() for name, value in net.state_dict().items()}
    arch_names = ["alphas_normal", "alphas_reduce", "betas_normal", "betas_reduce"]
    for name, value in zip(arch_names, net.arch_parameters()):
        tensors[name] = value.detach().clone()
    x = randn(2, 3, side, side)
    target = torch.randint(0, NET["num_classes"], (2,), dtype=torch.int64)
    tensors["input"], tensors["target"] = x, target
    genotype = str(net.genotype())  # from the float32 arch params, as the official code
    param_count = count_parameters(net)

    # evaluate in float64 on exactly the stored float32 values
    net.double()
    doubled = [p.detach().to(DT).requires_grad_(True) for p in net.arch_parameters()]
    net.alphas_normal, net.alphas_reduce, net.betas_normal, net.betas_reduce = doubled
    net._arch_parameters = doubled
    logits = net(x.to(DT))
    loss = F.cross_entropy(logits, target)
    loss.backward()
    tensors["logits"] = f32(logits)
    tensors["loss"] = scalar(loss)

    named = dict(net.named_parameters())
    stem_grads = (["stem0.0.weight", "stem0.1.weight", "stem0.3.weight", "stem1.1.weight", "stem1.2.bias"]
                  if imagenet_stem else ["stem.0.weight", "stem.1.weight"])
    grad_names = stem_grads + ["classifier.weight", "classifier.bias",
                  "cells.0.preprocess0.op.1.weight", "cells.2.preprocess0.conv_1.weight",
                  "cells.0._ops.3._ops.4.op.1.weight", "cells.0._ops.3._ops.4.op.6.weight",
                  "cells.1._ops.0._ops.3.conv_2.weight", "cells.4._ops.13._ops.7.op.2.weight"]
    if imagenet_stem:
        grad_names = [n.replace("cells.0.preprocess0.op.1.weight", "cells.0.preprocess0.conv_1.weight")
                      for n in grad_names]
    for name, value in zip(arch_names, doubled):
        tensors["grad." + name] = f32(value.grad)
    for name in grad_names:
        tensors["grad." + name] = f32(named[name].grad)
    buffers = dict(net.named_buffers())
    stem_after = (["stem0.1.running_mean", "stem0.4.running_var", "stem1.2.running_mean"]
                  if imagenet_stem else ["stem.1.running_mean", "stem.1.running_var"])
    after_names = stem_after + [
                   "cells.0.preprocess0.op.2.running_var",
                   "cells.0._ops.0._ops.1.1.running_mean",
                   "cells.1._ops.0._ops.2.1.running_var"]
    if imagenet_stem:  # the first cell's preprocess0 is a FactorizedReduce of stem0's map
        rename = {"cells.0.preprocess0.op.1.weight": "cells.0.preprocess0.conv_1.weight",
                  "cells.0.preprocess0.op.2.running_var": "cells.0.preprocess0.bn.running_var"}
        grad_names = [rename.get(n, n) for n in grad_names]
        after_names = [rename.get(n, n) for n in after_names]
    for name in after_names:
        tensors["after." + name] = f32(buffers[name])

    meta = {
        "generator": GENERATOR,
        "network": json.dumps(dict(NET, K=k, seed=seed, batch=2, input_hw=side, mode="train",
                                   stem="imagenet" if imagenet_stem else "cifar",
                                   loss="cross_entropy mean", compute_dtype="float64"),
                              sort_keys=True),
        "genotype": genotype,
        "param_count": str(param_count),
        "grad_names": json.dumps(["grad." + n for n in arch_names + grad_names]),
        "after_names": json.dumps(["after." + n for n in after_names]),
    }
    path = os.path.join(out_dir, "tiny_network_%sK%d.safetensors" % ("imagenet_" if imagenet_stem else "", k))
    safetensors_io.save(path, tensors, meta)
    print("wrote %s (%d tensors, %d bytes) K=%d params=%d loss=%.6f" %
          (path, len(tensors), os.path.getsize(path), k, param_count, float(loss)))
    print("  genotype:", genotype)
    print("  grad.alphas_normal norm %.6g, grad.betas_normal %s" %
          (float(doubled[0].grad.norm()), [round(v, 6) for v in doubled[2].grad.tolist()[:4]]))
    return os.path.getsize(path)


# --------------------------------------------------------------------------
# tiny_network_unrolled_K4.safetensors
# --------------------------------------------------------------------------

UNROLLED = {"xi": 0.1, "momentum": 0.9, "weight_decay": 3e-4, "r": 0.01}
ARCH_NAMES = ["alphas_normal", "alphas_reduce", "betas_normal", "betas_reduce"]


def set_arch(net, values):
    """Fresh float64 leaves holding `values`, installed as the net's arch params."""
    leaves = [v.detach().to(DT).clone().requires_grad_(True) for v in values]
    net.alphas_normal, net.alphas_reduce, net.betas_normal, net.betas_reduce = leaves
    net._arch_parameters = leaves
    return leaves


def make_unrolled(out_dir, seed):
    """Second-order arch gradient, step for step as quark0/darts cnn/architect.py
    (_compute_unrolled_model, _construct_model_from_theta, _backward_step_unrolled,
    _hessian_vector_product), evaluated in float64 on the stored float32 values."""
    k, xi, mu, wd = 4, UNROLLED["xi"], UNROLLED["momentum"], UNROLLED["weight_decay"]
    torch.manual_seed(seed)
    net = Network(NET["C"], NET["num_classes"], NET["layers"], steps=NET["steps"],
                  multiplier=NET["multiplier"], stem_multiplier=NET["stem_multiplier"],
                  k=k, arch_init_scale=NET["arch_init_scale"])
    net.train()

    def batch():
        return randn(2, 3, 16, 16), torch.randint(0, NET["num_classes"], (2,), dtype=torch.int64)

    (x_pre, y_pre), (x_train, y_train), (x_valid, y_valid) = batch(), batch(), batch()

    # One real float32 SGD step on a third batch, so every weight has a momentum buffer; the
    # state stored is the weights AFTER it (and its buffers).
    w_opt = torch.optim.SGD(net.parameters(), lr=xi, momentum=mu, weight_decay=wd)
    F.cross_entropy(net(x_pre), y_pre).backward()
    w_opt.step()
    names = [n for n, _ in net.named_parameters()]
    params32 = [p.detach().clone() for p in net.parameters()]
    bufs32 = [w_opt.state[p]["momentum_buffer"].detach().clone() for p in net.parameters()]
    arch32 = [a.detach().clone() for a in net.arch_parameters()]

    tensors = {n: p for n, p in zip(names, params32)}
    for n, a in zip(ARCH_NAMES, arch32):
        tensors[n] = a
    tensors["momentum_buffer"] = torch.cat([b.reshape(-1) for b in bufs32])
    tensors["train_input"], tensors["train_target"] = x_train, y_train
    tensors["valid_input"], tensors["valid_target"] = x_valid, y_valid

    net.double()
    with torch.no_grad():  # exactly the stored float32 values
        for p, v in zip(net.parameters(), params32):
            p.copy_(v.to(DT))
    weights = list(net.parameters())
    arch = set_arch(net, arch32)
    xt, xv = x_train.to(DT), x_valid.to(DT)

    # first order at w (on a copy, so the main model's buffers follow the official sequence)
    first = copy.deepcopy(net)
    first_arch = set_arch(first, arch32)
    grad_first = torch.autograd.grad(F.cross_entropy(first(xv), y_valid), first_arch)

    # _compute_unrolled_model: w' = w - xi (mu buf + grad_w L_train(w) + wd w)
    grads = torch.autograd.grad(F.cross_entropy(net(xt), y_train), weights)
    unrolled = copy.deepcopy(net)  # = model.new() + load_state_dict(model's state, w'):
    u_arch = set_arch(unrolled, arch32)  # buffers as the model's after the L_train forward
    with torch.no_grad():
        for pu, p, g, b in zip(unrolled.parameters(), weights, grads, bufs32):
            pu.copy_(p - xi * (mu * b.to(DT) + g + wd * p))
    u_weights = list(unrolled.parameters())
    # _backward_step_unrolled: grads of L_val(w') w.r.t. alpha and w' (no weight decay)
    loss_v = F.cross_entropy(unrolled(xv), y_valid)
    both = torch.autograd.grad(loss_v, u_arch + u_weights)
    dalpha, vector = both[:len(u_arch)], both[len(u_arch):]
    # _hessian_vector_product at the ORIGINAL w
    vnorm = torch.cat([v.reshape(-1) for v in vector]).norm()
    r = UNROLLED["r"] / vnorm
    with torch.no_grad():
        for p, v in zip(weights, vector):
            p.add_(r * v)
    grads_p = torch.autograd.grad(F.cross_entropy(net(xt), y_train), arch)
    with torch.no_grad():
        for p, v in zip(weights, vector):
            p.sub_(2 * r * v)
    grads_n = torch.autograd.grad(F.cross_entropy(net(xt), y_train), arch)
    with torch.no_grad():
        for p, v in zip(weights, vector):
            p.add_(r * v)
    implicit = [(gp - gn) / (2 * r) for gp, gn in zip(grads_p, grads_n)]
    grad_unrolled = [d - xi * h for d, h in zip(dalpha, implicit)]

    # diagnostic only: the exact Hessian-vector product by double backward
    g_w = torch.autograd.grad(F.cross_entropy(net(xt), y_train), weights, create_graph=True)
    exact = torch.autograd.grad(sum((g * v).sum() for g, v in zip(g_w, vector)), arch)
    fd_vs_exact = max(float((a - b).abs().max()) for a, b in zip(implicit, exact)) / \
        max(float(b.abs().max()) for b in exact)

    for n, g, f in zip(ARCH_NAMES, grad_unrolled, grad_first):
        tensors["grad_unrolled." + n] = f32(g)
        tensors["grad_first_order." + n] = f32(f)
    tensors["valid_loss_unrolled"] = scalar(loss_v)

    def flat(ts):
        return torch.cat([t.reshape(-1) for t in ts])
    so, fo = flat(grad_unrolled), flat(grad_first)
    so_vs_fo = float((so - fo).abs().max() / so.abs().max())
    meta = {
        "generator": GENERATOR,
        "network": json.dumps(dict(NET, K=k, seed=seed, batch=2, input_hw=side, mode="train",
                                   stem="imagenet" if imagenet_stem else "cifar",
                                   loss="cross_entropy mean", compute_dtype="float64"),
                              sort_keys=True),
        "unrolled": json.dumps(dict(UNROLLED, r_over_norm=float(r), vector_norm=float(vnorm),
                                    dampening=0, nesterov=False), sort_keys=True),
        "param_names": json.dumps(names),
        "param_count": str(sum(p.numel() for p in params32)),
        "description": (
            "Second-order DARTS arch gradient (quark0/darts cnn/architect.py, unrolled=True). "
            "State: the weights (state_dict names; batch-norm running statistics omitted, "
            "training mode) and alphas/betas (0.5*randn) after one float32 "
            "torch.optim.SGD(lr=xi, momentum 0.9, weight_decay 3e-4) step on a third random "
            "batch (not stored); `momentum_buffer` = that optimizer's momentum_buffer of every "
            "weight, concatenated flat in named_parameters() order (metadata param_names). "
            "Then in float64 on the stored float32 values: "
            "w' = w - xi*(0.9*buf + grad_w L_train(w) + 3e-4*w); "
            "dalpha = grad_alpha L_val(w', alpha), v = grad_w' L_val(w', alpha) (no weight decay) "
            "on a copy of the model whose BN buffers are the model's after the L_train forward; "
            "r = 0.01/||v|| (all weights); w+- = w +- r*v at the ORIGINAL w; "
            "grad_unrolled = dalpha - xi*(grad_alpha L_train(w+) - grad_alpha L_train(w-))/(2r); "
            "grad_first_order = grad_alpha L_val(w, alpha); valid_loss_unrolled = L_val(w'). "
            "Losses: mean cross entropy; every forward in training mode; rounded to F32 once."),
    }
    path = os.path.join(out_dir, "tiny_network_unrolled_K4.safetensors")
    safetensors_io.save(path, tensors, meta)
    print("wrote %s (%d tensors, %d bytes) K=%d L_val(w')=%.6f ||v||=%.6g r=%.6g"
          % (path, len(tensors), os.path.getsize(path), k, float(loss_v), float(vnorm), float(r)))
    print("  max|second - first order| / max|second order| = %.3g; "
          "finite-difference vs exact Hessian-vector product: %.3g (relative max norm)"
          % (so_vs_fo, fd_vs_exact))
    return os.path.getsize(path)


# --------------------------------------------------------------------------
# eval_network_pcdarts_{cifar,image}.safetensors
# --------------------------------------------------------------------------

EVAL_NET = {"C": 8, "num_classes": 10, "layers": 5, "auxiliary": True, "auxiliary_weight": 0.4,
            "drop_path_prob": 0.3, "batch": 4, "input_hw": 32}


def eval_network_case(saved, x, target, drop_path_prob, masks=None, label_smoothing=0.0):
    """One training-mode forward/backward in float64 on a fresh deep copy of `saved`."""
    net = copy.deepcopy(saved)
    net.double().train()
    net.drop_path_prob = drop_path_prob
    logits, logits_aux = net(x.to(DT), masks=masks)
    loss = F.cross_entropy(logits, target, label_smoothing=label_smoothing) + \
        EVAL_NET["auxiliary_weight"] * F.cross_entropy(logits_aux, target, label_smoothing=label_smoothing)
    loss.backward()
    return net, logits, logits_aux, loss


def make_eval_network(out_dir, genotype_name, file_tag, seed, imagenet=False):
    """The DARTS/PC-DARTS evaluation network (scripts/darts_eval_torch.py, the official
    NetworkCIFAR, or NetworkImageNet with `imagenet`: 224 x 224 input, label smoothing 0.1) in
    training mode, with the auxiliary head, without and with drop path."""
    ev = darts_eval_torch
    genotype = ev.GENOTYPES[genotype_name]
    torch.manual_seed(seed)
    network_class = ev.NetworkImageNet if imagenet else ev.NetworkCIFAR
    net = network_class(EVAL_NET["C"], EVAL_NET["num_classes"], EVAL_NET["layers"],
                        EVAL_NET["auxiliary"], genotype)
    side = 224 if imagenet else EVAL_NET["input_hw"]  # the ImageNet head needs a 7x7 map
    smoothing = 0.1 if imagenet else 0.0
    with torch.no_grad():  # non-trivial affine parameters and running statistics
        for module in net.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                n = module.num_features
                module.weight.copy_(1 + 0.1 * randn(n))
                module.bias.copy_(0.1 * randn(n))
                module.running_mean.copy_(0.1 * randn(n))
                module.running_var.copy_(1 + 0.1 * torch.rand(n))
    net.train()
    state = {name: value.detach().clone() for name, value in net.state_dict().items()}
    batch = 2 if imagenet else EVAL_NET["batch"]  # 2 x 224 x 224 keeps the file near the others
    x = randn(batch, 3, side, side)
    target = torch.randint(0, EVAL_NET["num_classes"], (batch,), dtype=torch.int64)
    keep = 1.0 - EVAL_NET["drop_path_prob"]
    masks = {name: torch.empty(batch).bernoulli_(keep) for name in ev.drop_path_ops(net)}
    stacked = torch.stack(list(masks.values()))
    assert (stacked == 0).any() and (stacked == 1).any(), "degenerate drop-path masks"
    assert len({tuple(m.tolist()) for m in masks.values()}) > 1, "all masks equal"

    tensors = dict(state)
    tensors["input"], tensors["target"] = x, target
    summary = []
    for prefix, prob, case_masks in (("nodrop", 0.0, None),
                                     ("drop", EVAL_NET["drop_path_prob"], masks)):
        model, logits, logits_aux, loss = eval_network_case(net, x, target, prob, case_masks, smoothing)
        tensors[prefix + ".logits"] = f32(logits)
        tensors[prefix + ".logits_aux"] = f32(logits_aux)
        tensors[prefix + ".loss"] = scalar(loss)
        for name, p in model.named_parameters():
            # The head's gradients once (nodrop): its 0.4 M weights would triple the file, and
            # drop-path changes only its input, whose gradient the cells' gradients check.
            if prefix == "drop" and name.startswith("auxiliary_head."):
                continue
            if imagenet and name == "auxiliary_head.features.5.weight":
                continue  # 0.4 M values; the head's other gradients pass through it
            tensors["%s.grad.%s" % (prefix, name)] = f32(p.grad)
        if prefix == "nodrop":
            for name, b in model.named_buffers():
                if name.endswith("running_mean") or name.endswith("running_var"):
                    tensors["nodrop.after." + name] = f32(b)
        else:
            for name, m in masks.items():
                tensors["drop.mask." + name] = m
        # The same case in float32, as PyTorch trains: its distance from float64 is the scale
        # of the engine's tolerance (EvaluationNetworkTests).
        single = copy.deepcopy(net).float().train()
        single.drop_path_prob = prob
        logits32, aux32 = single(x, masks=case_masks)
        (F.cross_entropy(logits32, target, label_smoothing=smoothing)
         + EVAL_NET["auxiliary_weight"] * F.cross_entropy(aux32, target, label_smoothing=smoothing)).backward()
        worst = max(float((p32.grad.double() - p64.grad).abs().max() / p64.grad.abs().max())
                    for p32, p64 in zip(single.parameters(), model.parameters()))
        summary.append("%s loss %.6f (PyTorch float32: gradients within %.2e of float64)"
                       % (prefix, float(loss), worst))

    big = (ev.NetworkImageNet(48, 1000, 14, True, genotype) if imagenet
           else ev.NetworkCIFAR(36, EVAL_NET["num_classes"], 20, True, genotype))
    meta = {
        "generator": GENERATOR,
        "network": json.dumps(dict(EVAL_NET, mode="train", compute_dtype="float64",
                                   genotype_name=genotype_name, seed=seed, input_hw=side,
                                   stem="imagenet" if imagenet else "cifar", label_smoothing=smoothing,
                                   loss="cross_entropy(logits) + auxiliary_weight * "
                                        "cross_entropy(logits_aux), mean, label_smoothing"),
                              sort_keys=True),
        "genotype": str(genotype),
        "param_count": str(ev.count_parameters(net, include_auxiliary=False)),
        "param_count_total": str(ev.count_parameters(net)),
        # count_parameters_in_MB of the paper's network: C=36, 20 layers (CIFAR); C=48, 14
        # layers, 1000 classes (ImageNet)
        "mb_c36_l20": "%.6f" % ev.count_parameters_in_MB(big),
    }
    path = os.path.join(out_dir, "eval_network_%s.safetensors" % file_tag)
    safetensors_io.save(path, tensors, meta)
    print("wrote %s (%d tensors, %d bytes) %s params=%s (total %s) C36/L20 %s MB; %s; "
          "%d drop-path masks, %d zeros"
          % (path, len(tensors), os.path.getsize(path), genotype_name, meta["param_count"],
             meta["param_count_total"], meta["mb_c36_l20"], ", ".join(summary), len(masks),
             int((stacked == 0).sum())))
    return os.path.getsize(path)


# --------------------------------------------------------------------------
# trained_network_K{1,2}.safetensors
# --------------------------------------------------------------------------

TRAINED = {"num_classes": 10, "batch": 16, "train_steps": 30, "train_batch": 32,
           "lr": 0.05, "momentum": 0.9, "weight_decay": 3e-4, "grad_clip": 5.0,
           "arch_lr": 6e-3, "arch_betas": (0.5, 0.999), "arch_weight_decay": 1e-3,
           "nearby_scales": [0.0, 1e-7, 3e-7]}


def arch_gradients(net, arch, dtype, x, y):
    """d(mean CE)/d(α, β) of `net` (training mode) with its arch params set to `arch`, in dtype."""
    net = copy.deepcopy(net).to(dtype)
    leaves = [a.detach().to(dtype).clone().requires_grad_(True) for a in arch]
    net.alphas_normal, net.alphas_reduce, net.betas_normal, net.betas_reduce = leaves
    net._arch_parameters = leaves
    return torch.autograd.grad(F.cross_entropy(net(x.to(dtype)), y), leaves)


def make_trained(out_dir, k, c, layers, seed):
    """α/β gradients of a TRAINED search network (not a fresh one): its feature maps have the
    means and spreads of a real run, where float32 sums lose most. The network is trained here
    in float32 for a few first-order search steps on Fashion-MNIST test images (weights: SGD as
    train_search.py; α, β: Adam at 10x the paper's rate, so they move), then the gradients on a
    fixed batch of 16 are evaluated in float64 on the stored float32 values, and in float32 by
    PyTorch itself: its error is the bar the engine has to meet. float32 gradients of a ReLU and
    max-pool network jump where a mask or a max sits within rounding of its boundary, so both are
    also measured on the batch scaled by 1 + 1e-7 and 1 + 3e-7 (benchmarks/gradient_sensitivity.py)."""
    from load_into_official import fashion_test
    # Two threads, as the committed files were made: the thread count changes float32 sums, and
    # with them the trained weights (the other fixtures do not train).
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    torch.manual_seed(seed)
    t = TRAINED
    net = Network(c, t["num_classes"], layers, k=k)
    net.train()
    images, labels = fashion_test(t["batch"] + 2 * t["train_steps"] * t["train_batch"])
    w_opt = torch.optim.SGD(net.parameters(), lr=t["lr"], momentum=t["momentum"],
                            weight_decay=t["weight_decay"])
    a_opt = torch.optim.Adam(net.arch_parameters(), lr=t["arch_lr"], betas=t["arch_betas"],
                             weight_decay=t["arch_weight_decay"])
    for step in range(t["train_steps"]):
        lo = t["batch"] + 2 * step * t["train_batch"]
        for opt, (a, b) in [(a_opt, (lo, lo + t["train_batch"])),
                            (w_opt, (lo + t["train_batch"], lo + 2 * t["train_batch"]))]:
            net.zero_grad()
            for p in net.arch_parameters():
                p.grad = None
            F.cross_entropy(net(images[a:b]), labels[a:b]).backward()
            if opt is w_opt:
                torch.nn.utils.clip_grad_norm_(net.parameters(), t["grad_clip"])
            opt.step()
    # Fashion-MNIST's black background makes whole windows identical: max-pool windows and ReLUs
    # tie exactly, and exact arithmetic (float64 here) gives the max-pool gradient to the first
    # of equal values. A float32 engine keeps those ties only if its convolutions round alike at
    # every position (see Sources/_CKernels/matmul.c).
    x, y = images[:t["batch"]].contiguous(), labels[:t["batch"]].contiguous()
    arch = [a.detach().clone() for a in net.arch_parameters()]

    tensors = {name: p.detach().clone() for name, p in net.named_parameters()}
    for name, value in zip(ARCH_NAMES, arch):
        tensors[name] = value
    tensors["input"], tensors["target"] = x, y
    errors = []
    for i, scale in enumerate(t["nearby_scales"]):
        nearby = (x * (1 + scale)).float()  # float32 multiply, as the Swift test repeats it
        reference = arch_gradients(net, arch, DT, nearby, y)
        single = arch_gradients(net, arch, torch.float32, nearby, y)
        for name, r in zip(ARCH_NAMES, reference):
            tensors["grad%d.%s" % (i, name)] = f32(r)
        errors.append(max(float((s.double() - r).abs().max() / r.abs().max())
                          for s, r in zip(single, reference)))
    meta = {
        "generator": GENERATOR,
        "network": json.dumps(dict(C=c, layers=layers, K=k, seed=seed, num_classes=t["num_classes"],
                                   mode="train", input_hw=32), sort_keys=True),
        "training": json.dumps(t, sort_keys=True),
        "param_names": json.dumps([name for name, _ in net.named_parameters()]),
        "param_count": str(count_parameters(net)),
        "torch_float32_errors": json.dumps(errors),
    }
    torch.set_num_threads(threads)
    path = os.path.join(out_dir, "trained_network_K%d.safetensors" % k)
    safetensors_io.save(path, tensors, meta)
    print("wrote %s (%d tensors, %d bytes) K=%d C=%d layers=%d; PyTorch float32 vs float64 "
          "(largest α/β error relative to the largest gradient, per input): %s"
          % (path, len(tensors), os.path.getsize(path), k, c, layers,
             ", ".join("%.2e" % e for e in errors)))
    return os.path.getsize(path)


def main():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=os.path.join(root, "Tests", "Fixtures"))
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    torch.set_num_threads(1)
    make_ops(args.out)
    make_network(args.out, 1, seed=11)
    make_network(args.out, 4, seed=14)
    make_network(args.out, 2, seed=12, imagenet_stem=True)
    make_unrolled(args.out, seed=44)
    make_eval_network(args.out, "PC_DARTS_cifar", "pcdarts_cifar", seed=71)
    make_eval_network(args.out, "PC_DARTS_image", "pcdarts_image", seed=72)
    make_eval_network(args.out, "PC_DARTS_image", "imagenet_pcdarts_image", seed=73, imagenet=True)
    make_trained(args.out, 1, 8, 5, seed=81)
    make_trained(args.out, 2, 16, 5, seed=82)


if __name__ == "__main__":
    main()
