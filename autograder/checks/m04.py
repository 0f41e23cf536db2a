"""Checks for Module 04, "Case study: vision".

Contracts (stated in the notebook):

* ``fold_batchnorm(weight, bias, gamma, beta, running_mean, running_var, eps=1e-5) -> (weight_folded,
  bias_folded)``, NumPy: folds an eval-mode BN into the convolution (weight (C_out, C_in, kH, kW)) or linear
  layer (weight (C_out, C_in)) before it; ``bias`` may be None; the inputs are never modified.
* ``ResidualBlock(channels, zero_init_residual=True)``, a ``torch.nn.Module``: conv3x3-BN-ReLU-conv3x3-BN
  (``nn.Conv2d`` without bias, ``nn.BatchNorm2d``), plus the identity, then ReLU (He et al. 2016); with
  ``zero_init_residual`` the last BN's gamma starts at 0 (Goyal et al. 2017).
* ``adapt_bn_statistics(model, batches, prior_strength)``: every BN layer's running statistics become
  ``N/(N+n) * source + n/(N+n) * target`` (Schneider et al. 2020), the target statistics being those the
  layer computes in training mode on the batches (mean and unbiased variance, averaged over the batches
  with equal weight), n the number of target samples, N = prior_strength (0: target only; inf: source
  only); weights, modes and momenta unchanged, no gradient.

The block and the adaptation are exercised by ``kernel_agent.procedures.m04`` where the learner's code
lives; the same procedures run here with the references below give the expected observations (float64).
Folding is compared with a float64 reference and, in hidden tests, through torch's conv2d and batch_norm.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..kernel_agent.procedures import m04 as proc
from . import (CheckFailure, Report, as_array, call_learner, compare, guard, likely_cause, norm_rel_error,
               one_torch_thread, run_procedure, unpack)

TOL64, TOL32 = 1e-10, 1e-5
WORKS = 1e-3   # "the layer works": essential sub-tests (autograder/checks/__init__.py Report, course/grading.md)
ROOTS = ("bnlib", "autograder", "cases")
# torch's ready-made folding (also hidden from the grading kernel: autograder.course)
TORCH_FOLDING = ("fuse_conv_bn_weights", "fuse_conv_bn_eval", "fuse_linear_bn_weights", "fuse_linear_bn_eval")


# ----------------------------------------------------------------------------- references
def reference_fold(weight, bias, gamma, beta, running_mean, running_var, eps=1e-5):
    """BN(W x + b) in eval mode as W' x + b', in float64."""
    w = np.asarray(weight, np.float64)
    s = np.asarray(gamma, np.float64) / np.sqrt(np.asarray(running_var, np.float64) + eps)
    b = np.zeros_like(s) if bias is None else np.asarray(bias, np.float64)
    return w * s.reshape((-1,) + (1,) * (w.ndim - 1)), s * (b - running_mean) + beta


class ReferenceBlock(nn.Module):
    """He et al. (2016)'s basic block with Goyal et al. (2017)'s zero-initialized last gamma."""

    def __init__(self, channels, zero_init_residual=True):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        if zero_init_residual:
            nn.init.zeros_(self.bn2.weight)

    def forward(self, x):
        return torch.relu(x + self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x))))))


def reference_adapt(model, batches, prior_strength, *, mode="bn", swap=False, momentum=None, count="samples"):
    """The reference adaptation; the keyword options make known mistakes (for the hints): ``mode`` "eval"
    (statistics of eval-mode inputs), "frozen" (the BN layers left in eval mode, so the reset statistics
    never update) or "model" (the whole model in training mode), ``swap`` (weights of source and target
    swapped), ``momentum`` 0.1 (an EMA instead of the average), ``count`` "values" (n counts every value,
    N*H*W, not the samples)."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    modes = [(m, m.training) for m in model.modules()]
    saved = [(bn.running_mean.clone(), bn.running_var.clone(), bn.momentum, bn.num_batches_tracked.clone())
             for bn in bns]
    n, per_layer = 0, {}
    hooks = []
    if mode == "eval":
        def hook(mod, inputs):
            x = inputs[0].detach()
            dims = [0] + list(range(2, x.dim()))
            per_layer.setdefault(mod, []).append((x.mean(dims), x.var(dims, unbiased=True)))
        hooks = [bn.register_forward_pre_hook(hook) for bn in bns]
    try:
        with torch.no_grad():
            if mode == "model":
                model.train()
            for bn in bns:
                if mode != "eval":
                    bn.reset_running_stats()
                    bn.momentum = momentum
                if mode in ("bn", "model"):
                    bn.train()
            for x in batches:
                model(x)
                n += len(x) if count == "samples" else x.numel() // x.shape[1]
    finally:
        for h in hooks:
            h.remove()
        for m, t in modes:
            m.training = t
    w = 1.0 if math.isinf(prior_strength) else prior_strength / (prior_strength + n)
    if swap:
        w = 1.0 - w
    with torch.no_grad():
        for bn, (mean, var, mom, tracked) in zip(bns, saved):
            if mode == "eval":
                stats = per_layer.get(bn, [(mean, var)])
                bn.running_mean.copy_(sum(s[0] for s in stats) / len(stats))
                bn.running_var.copy_(sum(s[1] for s in stats) / len(stats))
            bn.running_mean.copy_(w * mean + (1 - w) * bn.running_mean)
            bn.running_var.copy_(w * var + (1 - w) * bn.running_var)
            bn.momentum = mom
            bn.num_batches_tracked.copy_(tracked)
    return model


# ----------------------------------------------------------------------------- fold_batchnorm
def _fold_case(rng, wshape, bias=True, dtype=np.float64):
    c = wshape[0]
    w = rng.normal(0, 0.5, wshape)
    b = rng.normal(0, 1, c) if bias else None
    gamma, beta = rng.normal(1, 0.5, c), rng.normal(0, 1, c)
    mean, var = rng.normal(2, 3, c), rng.uniform(0.05, 4, c)   # means far from 0 so a lost term shows
    cast = [None if a is None else a.astype(dtype) for a in (w, b, gamma, beta, mean, var)]
    return cast


def _fold_hints(w, b, g, beta, mean, var, eps, which):
    w, g, beta, mean, var = (np.asarray(a, np.float64) for a in (w, g, beta, mean, var))
    b = np.zeros_like(g) if b is None else np.asarray(b, np.float64)
    view = (-1,) + (1,) * (w.ndim - 1)
    s = g / np.sqrt(var + eps)
    if which == "weight":
        return [(w * (g / (np.sqrt(var) + eps)).reshape(view), "eps belongs inside the square root: "
                                                                "gamma / sqrt(running_var + eps)."),
                (w * (g / (var + eps)).reshape(view), "divide by the standard deviation sqrt(running_var + eps), "
                                                      "not by the variance."),
                (w * g.reshape(view), "the weight must be scaled by gamma / sqrt(running_var + eps), not by gamma alone."),
                (w, "the weight is unchanged: it must be scaled per output channel by gamma / sqrt(running_var + eps).")]
    return [(s * b + beta, "the running mean is missing: bias_folded = s * (bias - running_mean) + beta."),
            (beta - s * mean, "the layer's bias is missing: bias_folded = s * (bias - running_mean) + beta."),
            (b - mean * s + beta, "the layer's bias must be scaled too: s * (bias - running_mean) + beta."),
            (s * (b - mean), "beta is missing: bias_folded = s * (bias - running_mean) + beta."),
            (beta - mean, "the running mean must be scaled by s = gamma / sqrt(running_var + eps)."),
            (g / (np.sqrt(var) + eps) * (b - mean) + beta, "eps belongs inside the square root.")]


@one_torch_thread
def check_fold_batchnorm(fold_batchnorm, points: float = 2.0, hidden: bool = False, seed: int = 0) -> float:
    """Grade the learner's ``fold_batchnorm``; prints one line per sub-test, returns the points."""
    report = Report("fold_batchnorm" + (" (hidden tests)" if hidden else ""), points)
    if (z := guard(report, fold_batchnorm, roots=ROOTS, attrs=TORCH_FOLDING, how="in NumPy")) is not None:
        return z
    rng = np.random.default_rng(seed)
    modified = []

    def fold(args, eps):
        """The learner's result for copies of ``args`` (``args`` themselves stay as made)."""
        given = [None if a is None else a.copy() for a in args]
        res = unpack(call_learner(fold_batchnorm, *given, eps), 2, "fold_batchnorm", "(weight_folded, bias_folded)")
        for name, a, a0 in zip(("weight", "bias", "gamma", "beta", "running_mean", "running_var"), given, args):
            if a is not None and not np.array_equal(a, a0):
                modified.append(name)
        return res

    def case(wshape, bias=True, dtype=np.float64, tol=TOL64, eps=1e-5):
        args = _fold_case(rng, wshape, bias, dtype)
        wf, bf = fold(args, eps)
        ref_w, ref_b = reference_fold(*[None if a is None else a.astype(np.float64) for a in args], eps)
        hints = lambda which: _fold_hints(*args, eps, which)  # noqa: E731
        compare("weight_folded", wf, ref_w, tol, likely_cause(wf, hints("weight"), 1e-6))
        if bf is None:
            raise CheckFailure("bias_folded is None: the folded layer needs a bias even when the original had none "
                               "(beta - gamma * running_mean / sqrt(running_var + eps))")
        compare("bias_folded", bf, ref_b, tol, likely_cause(bf, hints("bias"), 1e-6))
        return f"relative error {max(norm_rel_error(as_array('w', wf), ref_w), norm_rel_error(as_array('b', bf), ref_b)):.1e}"

    def unchanged():
        if modified:
            raise CheckFailure(f"fold_batchnorm modified its input {modified[0]} in place: work on copies "
                               "(e.g. weight * scale, not weight *= scale), the caller's layer must stay as it was")

    if not hidden:
        works = "folding works: convolution (4, 3, 3, 3) without bias, linear (5, 6) with bias"
        report.run(works, 1, lambda: (case((4, 3, 3, 3), bias=False, tol=WORKS), case((5, 6), tol=WORKS))[0],
                   essential=True)
        report.run("exact to 1e-10 (float64)", 0.5, lambda: case((4, 3, 3, 3)))
        report.run("the inputs are left unchanged", 0.5, unchanged, requires=works)
        return report.finish()

    works = "folding works: linear (6, 10) with bias, convolution (5, 2, 3, 3) without bias"
    report.run(works, 1, lambda: (case((6, 10), tol=WORKS), case((5, 2, 3, 3), bias=False, tol=WORKS))[0],
               essential=True)
    report.run("exact to 1e-10: convolution and linear, with and without bias", 1,
               lambda: [case(shape, bias=b) for shape in ((3, 4), (5, 2, 3, 3)) for b in (True, False)][0])
    report.run("float32 inputs against a float64 reference, eps = 1e-3", 0.5,
               lambda: case((8, 4, 1, 1), dtype=np.float32, tol=TOL32, eps=1e-3))

    def parity():
        args = _fold_case(rng, (6, 3, 3, 3), bias=False)
        wf, bf = fold(args, 1e-5)
        wf, bf = as_array("weight_folded", wf), as_array("bias_folded", bf) if bf is not None else None
        if bf is None or wf.shape != (6, 3, 3, 3) or bf.shape != (6,):
            raise CheckFailure("fold_batchnorm must return a weight of the conv's shape and a bias of shape (C_out,)")
        x = torch.tensor(rng.normal(0, 1, (2, 3, 7, 7)))
        w, _, g, beta, mean, var = (torch.tensor(a) if a is not None else None for a in args)
        expected = F.batch_norm(F.conv2d(x, w, None, padding=1), mean, var, g, beta, False, 0.0, 1e-5)
        got = F.conv2d(x, torch.tensor(wf), torch.tensor(bf), padding=1)
        err = float((got - expected).abs().max())
        if not err <= 1e-10 * max(1.0, float(expected.abs().max())):
            raise CheckFailure(f"the folded convolution differs from conv + BN(eval) by up to {err:.2e} "
                               "(tolerance 1e-10 in float64)")
        return f"max |difference| {err:.1e}"
    report.run("parity: conv2d with the folded weights equals conv2d + batch_norm in eval mode (torch, float64)",
               1, parity)
    report.run("the inputs are left unchanged in every case", 0.5, unchanged, requires=works)
    return report.finish()


# ----------------------------------------------------------------------------- ResidualBlock
STRUCTURE = ["Conv2d", "BatchNorm2d", "Conv2d", "BatchNorm2d"]


def _block_tensors(gen, c):
    """Random parameters and statistics in call order: conv1.weight, bn1 (weight, bias, mean, var), conv2..."""
    out = []
    for kind in STRUCTURE:
        if kind == "Conv2d":
            out.append(torch.randn(c, c, 3, 3, generator=gen, dtype=torch.float64) * (2.0 / (9 * c)) ** 0.5)
        else:
            out += [torch.randn(c, generator=gen, dtype=torch.float64) * 0.3 + 1,
                    torch.randn(c, generator=gen, dtype=torch.float64) * 0.5,
                    torch.randn(c, generator=gen, dtype=torch.float64),
                    torch.rand(c, generator=gen, dtype=torch.float64) + 0.5]
    return out


def _np(t):
    return as_array("value", t).astype(np.float64)


def _block_hints(x, tensors, mode):
    """Outputs of known mistakes on the same parameters (training or eval mode)."""
    w1, g1, b1, m1, v1, w2, g2, b2, m2, v2 = tensors
    train = mode == "train"

    def bn(z, g, b, m, v):
        return F.batch_norm(z, m.clone(), v.clone(), g, b, train, 0.1, 1e-5)
    with torch.no_grad():
        h = torch.relu(bn(F.conv2d(x, w1, padding=1), g1, b1, m1, v1))
        r = bn(F.conv2d(h, w2, padding=1), g2, b2, m2, v2)
        return [(torch.relu(r) + x, "the last ReLU comes after the addition: ReLU(x + F(x)), not ReLU(F(x)) + x."),
                (x + r, "the block ends with a ReLU after the addition: ReLU(x + F(x))."),
                (torch.relu(r), "the shortcut is missing: add the input x before the last ReLU."),
                (torch.relu(x + bn(F.conv2d(bn(F.conv2d(x, w1, padding=1), g1, b1, m1, v1), w2, padding=1),
                                   g2, b2, m2, v2)),
                 "the ReLU between the two convolutions is missing: conv-BN-ReLU-conv-BN.")]


@one_torch_thread
def check_residual_block(ResidualBlock, points: float = 2.0, hidden: bool = False, seed: int = 0) -> float:
    """Grade the learner's ``ResidualBlock`` against the reference block with the same parameters."""
    report = Report("ResidualBlock" + (" (hidden tests)" if hidden else ""), points)
    if (z := guard(report, ResidualBlock, roots=ROOTS, how="with torch modules")) is not None:
        return z
    gen = torch.Generator().manual_seed(seed)

    def steps(c, n=4, hw=5, dtype="float64", tol=1e-9):
        x = torch.randn(n, c, hw, hw, generator=gen, dtype=torch.float64) * 2 + 0.5
        dy = torch.randn(x.shape, generator=gen, dtype=torch.float64)
        tensors = _block_tensors(gen, c)
        got = run_procedure(proc.block_steps, ResidualBlock, channels=c, tensors=tensors, x=x, dy=dy, dtype_name=dtype)
        ref = proc.block_steps(ReferenceBlock, c, tensors, x, dy, "float64")
        if not got.get("is_module"):
            raise CheckFailure("ResidualBlock(channels) must be a torch.nn.Module")
        if got.get("layers") != STRUCTURE:
            raise CheckFailure(f"the forward pass calls {got.get('layers')}; expected nn.Conv2d, nn.BatchNorm2d, "
                               "nn.Conv2d, nn.BatchNorm2d (each once, as modules of the block)")
        if "load_error" in got:
            raise CheckFailure(f"the layers do not have the expected shapes: {got['load_error']}")
        for mode in ("train", "eval"):
            mine = got.get(mode) or {}
            compare(f"the {mode}-mode output", mine.get("y"), ref[mode]["y"].detach().numpy(), tol,
                    likely_cause(mine.get("y"), [(a.numpy(), h) for a, h in _block_hints(x, tensors, mode)], 1e-8))
            compare(f"the {mode}-mode input gradient", mine.get("dx"), ref[mode]["dx"].numpy(), tol * 10)
        return got, ref

    def gradients(c):
        got, ref = steps(c)
        names = ["conv1.weight", "bn1.weight", "bn1.bias", "conv2.weight", "bn2.weight", "bn2.bias"]
        for name, g, r in zip(names, got["train"]["grads"], ref["train"]["grads"]):
            if g is None:
                raise CheckFailure(f"{name} (in call order) got no gradient: is it used in the forward pass?")
            compare(f"the gradient of {name} (in call order)", g, r.numpy(), 1e-8)
        for i, (a, b) in enumerate(zip(got["running"], ref["running"])):
            compare(f"{'running_mean' if i % 2 == 0 else 'running_var'} of BN {i // 2 + 1} after a training step", a,
                    b.numpy(), 1e-9)

    def layout(c, zero_init=True, n=4, part="init"):
        """part: "structure" (layers, no conv bias, shapes, parameter count), "init" (the gammas as
        initialized) or "output" (the gammas, and ReLU(x) at initialization)."""
        x = torch.relu(torch.randn(n, c, 6, 6, generator=gen, dtype=torch.float64)) - 0.3
        got = run_procedure(proc.block_layout, ResidualBlock, channels=c, kwargs={"zero_init_residual": zero_init}, x=x)
        if not got.get("is_module"):
            raise CheckFailure("ResidualBlock(channels) must be a torch.nn.Module")
        if got.get("layers") != STRUCTURE:
            raise CheckFailure(f"the forward pass calls {got.get('layers')}; expected conv, BN, conv, BN")
        expected = 18 * c * c + 4 * c
        if part == "structure":
            if any(got["conv_bias"]):
                raise CheckFailure("the convolutions must have no bias (bias=False): the BN after each one "
                                   "subtracts the mean, which cancels any bias, and its beta plays that role")
            if got["conv_kernels"] != [[c, c, 3, 3]] * 2:
                raise CheckFailure(f"the convolutions' weights have shapes {got['conv_kernels']}, expected two of "
                                   f"{[c, c, 3, 3]} (3x3, {c} channels in and out)")
            if got["parameters"] != expected:
                raise CheckFailure(f"{got['parameters']} parameters, expected 18 C^2 + 4 C = {expected}")
            return f"{expected} parameters"
        g1, g2 = (_np(g) if g is not None else None for g in got["gammas"])
        if g1 is None or g2 is None:
            raise CheckFailure("both BN layers need a learnable gamma (affine=True)")
        if not np.all(g1 == 1):
            raise CheckFailure("the first BN's gamma must start at 1 (torch's default); only the last one is zeroed"
                               if zero_init else "every gamma must start at 1 when zero_init_residual=False")
        if zero_init and not np.all(g2 == 0):
            raise CheckFailure("with zero_init_residual=True the LAST BN's gamma (the one before the addition) "
                               "must start at 0; beta (bias) already starts at 0")
        if not zero_init and not np.all(g2 == 1):
            raise CheckFailure("with zero_init_residual=False every gamma must start at 1")
        if part == "output":
            compare("the output at initialization (expected ReLU(x): the residual branch starts at 0)",
                    got["output"], torch.relu(x).numpy(), 1e-12)
        return None

    if not hidden:
        works = "the block works: training- and eval-mode outputs and input gradients as the reference's (C = 3)"
        report.run(works, 1, lambda: steps(3) and None, essential=True)
        report.run("structure: conv3x3 (no bias), BN, conv3x3 (no bias), BN; 18 C^2 + 4 C parameters", 0.5,
                   lambda: layout(3, part="structure"), requires=works)
        report.run("zero_init_residual: the last gamma starts at 0, so the block is ReLU(x) at initialization", 0.5,
                   lambda: layout(4, part="output"), requires=works)
        return report.finish()

    works = "the block works: C = 8, batch 6 of 4x4 images, outputs and input gradients in both modes"
    report.run(works, 1, lambda: steps(8, n=6, hw=4) and None, essential=True)
    report.run("gradients of every parameter and running statistics after a training step (C = 5)", 1,
               lambda: gradients(5))
    report.run("float32 block against the float64 reference", 0.5, lambda: steps(4, dtype="float32", tol=1e-5) and None)
    report.run("structure: no bias in the convolutions, 18 C^2 + 4 C parameters (C = 7)", 0.5,
               lambda: layout(7, part="structure"), requires=works)
    report.run("zero_init_residual=False: every gamma starts at 1", 0.5, lambda: layout(6, zero_init=False),
               requires=works)
    report.run("ReLU(x) at initialization for a batch of 16 (C = 5)", 0.5,
               lambda: layout(5, n=16, part="output"), requires=works)
    return report.finish()


# ----------------------------------------------------------------------------- adapt_bn_statistics
def _adapt_inputs(gen, arch, modes_kind="eval", momenta=None, n_batches=2, batch=8):
    model = proc.build_model(arch)
    with torch.no_grad():
        for bn in (m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)):
            bn.running_mean.copy_(torch.randn(bn.num_features, generator=gen, dtype=torch.float64))
            bn.running_var.copy_(torch.rand(bn.num_features, generator=gen, dtype=torch.float64) * 2 + 0.3)
            bn.weight.copy_(torch.randn(bn.num_features, generator=gen, dtype=torch.float64) * 0.3 + 1)
            bn.bias.copy_(torch.randn(bn.num_features, generator=gen, dtype=torch.float64) * 0.3)
            bn.num_batches_tracked.fill_(100)
    if modes_kind == "eval":
        model.eval()
    else:   # training, with the BN layers frozen in eval mode
        model.train()
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()
    n_bn = sum(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    batches = [torch.randn(batch, 2, 4, 4, generator=gen, dtype=torch.float64) * 1.5 + 0.7 for _ in range(n_batches)]
    return dict(arch=arch, state={k: v.clone() for k, v in model.state_dict().items()},
                modes=[m.training for m in model.modules()], momenta=momenta or [0.1] * n_bn, batches=batches)


def _stats_vector(state, keys):
    return np.concatenate([_np(state[k]).ravel() for k in keys])


ADAPT_HINTS = [
    (dict(swap=True), "the weights are swapped: the SOURCE statistics get N/(N+n), the target ones n/(N+n)."),
    (dict(mode="eval"), "the target statistics must be those BN computes in training mode: with the model in "
                        "eval mode, earlier BN layers still normalize with the source statistics."),
    (dict(mode="frozen"), "the BN layers stayed in eval mode, where they do not update their running statistics: "
                          "put them in training mode while the batches run."),
    (dict(mode="model"), "only the BN layers go to training mode: model.train() also switches dropout on."),
    (dict(momentum=0.1), "with momentum 0.1 the running statistics are an exponential moving average that "
                         "still holds the reset values; set momentum=None for the average over the batches."),
    (dict(count="values"), "n counts the target samples (images), not every value (N*H*W)."),
]


@one_torch_thread
def check_adapt_bn_statistics(adapt_bn_statistics, points: float = 2.0, hidden: bool = False, seed: int = 0) -> float:
    """Grade the learner's ``adapt_bn_statistics`` against the reference adaptation."""
    report = Report("adapt_bn_statistics" + (" (hidden tests)" if hidden else ""), points)
    if (z := guard(report, adapt_bn_statistics, roots=ROOTS, how="with torch")) is not None:
        return z
    gen = torch.Generator().manual_seed(seed)
    seen = {}

    def case(arch, prior, modes_kind="eval", momenta=None, n_batches=2, batch=8, key="main", tol=1e-9):
        inputs = _adapt_inputs(gen, arch, modes_kind, momenta, n_batches, batch)
        got = run_procedure(proc.adapt, adapt_bn_statistics, prior_strength=prior, **inputs)
        ref = proc.adapt(reference_adapt, prior_strength=prior, **inputs)
        seen[key] = (got, ref, inputs)
        state = got.get("state")
        if type(state) is not dict:
            raise CheckFailure("the model's state_dict could not be read after the call")
        keys = [k for k in ref["state"] if k.endswith(("running_mean", "running_var"))]
        missing = [k for k in keys if k not in state]
        if missing:
            raise CheckFailure(f"the model has no {missing[0]} after the call (replace statistics in place)")
        actual = _stats_vector(state, keys)
        expected = _stats_vector(ref["state"], keys)
        hints = []
        if norm_rel_error(actual, expected) > 1e-9:
            for options, message in ADAPT_HINTS:
                wrong = proc.adapt(lambda m, b, p, o=options: reference_adapt(m, b, p, **o), prior_strength=prior, **inputs)
                hints.append((_stats_vector(wrong["state"], keys), message))
            if np.allclose(actual, _stats_vector(inputs["state"], keys)) and prior != math.inf:
                hints.insert(0, (actual, "the running statistics did not change: replace them in place (copy_) "
                                         "in every BN layer"))
        for k in keys:
            compare(k, state[k], _np(ref["state"][k]), tol,
                    likely_cause(actual, hints, 1e-8) if hints else None)
        return None

    def seen_case(key):
        if key not in seen:
            raise CheckFailure("adapt_bn_statistics could not be run on this case (see above)")
        return seen[key]

    def untouched(key):
        got, ref, inputs = seen_case(key)
        state = got["state"]
        changed = [k for k, v in inputs["state"].items() if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))
                   and (k not in state or not np.array_equal(_np(state[k]), _np(v)))]
        if changed:
            raise CheckFailure(f"{changed[0]} changed: adaptation must leave the weights alone")
        if any(got.get("grads", [True])):
            raise CheckFailure("a parameter has a gradient: run the forward passes under torch.no_grad()")
        if got.get("requires_grad") != ref["requires_grad"]:
            raise CheckFailure("requires_grad of the parameters changed")
        if any(got.get("buffers_in_graph", [True])):
            raise CheckFailure("a BN buffer is part of an autograd graph: compute the statistics under torch.no_grad()")

    def restored(key):
        got, ref, inputs = seen_case(key)
        if got.get("modes") != inputs["modes"]:
            raise CheckFailure("the modules' train/eval modes were not restored exactly (each module as it was; "
                               "model.train(was_training) is not enough when modes differ between modules)")
        if got.get("momenta") != inputs["momenta"]:
            raise CheckFailure(f"the BN momenta are {got.get('momenta')} after the call, expected {inputs['momenta']}")

    if not hidden:
        works = "adaptation works: running statistics of a small CNN after 2 target batches, prior strength 24"
        report.run(works, 1, lambda: case("cnn", 24.0, tol=WORKS), essential=True)
        report.run("exact to 1e-9 (float64)", 0.25, lambda: case("cnn", 24.0, key="exact"))
        report.run("weights unchanged, no gradient", 0.5, lambda: untouched("main"), requires=works)
        report.run("train/eval modes and momenta restored", 0.5, lambda: restored("main"), requires=works)
        return report.finish()

    works = "adaptation works: BatchNorm2d and BatchNorm1d in nested containers, prior strength 40"
    report.run(works, 1, lambda: case("nested", 40.0, n_batches=2, batch=6, tol=WORKS), essential=True)
    report.run("exact to 1e-9 (float64), 3 batches", 0.5, lambda: case("nested", 40.0, n_batches=3, batch=5, key="exact"))
    report.run("prior strength 0: the target statistics alone", 0.5, lambda: case("cnn", 0.0, n_batches=3, batch=5, key="zero"))
    report.run("prior strength inf: the source statistics are kept", 0.5,
               lambda: case("cnn", math.inf, key="inf"), requires=works)
    report.run("dropout stays off while the statistics are collected", 0.5,
               lambda: case("dropout", 0.0, batch=10, key="dropout"))

    def mixed():
        case("nested", 10.0, modes_kind="frozen", momenta=[0.3, None, 0.1, 0.05], key="mixed")
        restored("mixed")
    report.run("a training-mode model with frozen BN: modes and momenta (0.3, None, ...) restored exactly", 0.75,
               mixed, requires=works)
    report.run("weights unchanged, no gradient, no buffer in an autograd graph", 0.5,
               lambda: untouched("main"), requires=works)
    return report.finish()
