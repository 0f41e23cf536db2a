"""Use a learner's function in an experiment only once it has been checked.

An experiment that runs on a learner's graded function first compares it with the course's reference on a
small case (:func:`checked`). If it disagrees, or raises, one visible line says so and the experiment runs
on the reference instead, so a buggy function never draws a figure that contradicts the text beside it.
This is a quick sanity check for experiments, not the grading (the notebook's test cells do that).
"""
from __future__ import annotations

import copy
import math
from typing import Callable

import numpy as np
import torch
import torch.nn as nn

import bnlib

from . import bn as _bn
from . import models as _models


class Disagreement(Exception):
    """A probe found the learner's code different from the reference; the message says where."""


def _as_float64(value) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().double().numpy()
    return np.asarray(value, dtype=np.float64)


def _compare(what: str, got, expected, tol: float) -> None:
    a, e = _as_float64(got), _as_float64(expected)
    if a.shape != e.shape:
        raise Disagreement(f"{what} has shape {a.shape}, expected {e.shape}")
    if not np.all(np.isfinite(a)):
        raise Disagreement(f"{what} is not finite")
    err = float(np.max(np.abs(a - e), initial=0.0) / max(1e-12, float(np.max(np.abs(e), initial=0.0))))
    if not err <= tol:
        raise Disagreement(f"{what} differs from the reference (relative error {err:.1e})")


def checked(candidate, reference, probe: Callable[[object], None], name: str | None = None, quiet: bool = False):
    """``candidate`` if ``probe(candidate)`` passes, else ``reference``, saying which in one printed line.

    ``probe(fn)`` raises :class:`Disagreement` (or any exception raised by ``fn``) when ``fn`` is wrong.
    """
    name = name or getattr(candidate, "__name__", "your function")
    ref_name = f"{reference.__module__}.{getattr(reference, '__qualname__', reference)}"
    if candidate is None:
        print(f"{name} is not defined: this experiment runs on the reference ({ref_name}) instead.")
        return reference
    try:
        probe(candidate)
    except NotImplementedError:
        reason = "it is not implemented yet"
    except Disagreement as exc:
        reason = str(exc)
    except Exception as exc:  # noqa: BLE001 - any failure of learner code means: use the reference
        reason = f"it raised {type(exc).__name__}: {exc}"
    else:
        if not quiet:
            print(f"Using your {name} (it agrees with the reference on a small case).")
        return candidate
    print(f"Your {name} is not correct yet ({reason}): this experiment runs on the reference ({ref_name}) instead.")
    return reference


# ----------------------------------------------------------------------------- fold_batchnorm
def probe_fold(fold, seed: int = 0) -> None:
    """A convolution and a linear layer (with and without bias): the folded layer must compute BN(eval) of
    the original (checked with bnlib's eval-mode batch_norm_forward), and the inputs must be unchanged."""
    rng = np.random.default_rng(seed)
    for wshape, with_bias in (((4, 3, 3, 3), True), ((5, 6), False)):
        c = wshape[0]
        w = rng.normal(size=wshape)
        b = rng.normal(size=c) if with_bias else None
        gamma, beta = rng.normal(1, 0.5, c), rng.normal(size=c)
        mean, var = rng.normal(size=c), rng.uniform(0.5, 2, c)
        args = [w, b, gamma, beta, mean, var]
        copies = [None if a is None else a.copy() for a in args]
        result = fold(*args, 1e-5)
        if type(result) is not tuple or len(result) != 2:
            raise Disagreement("it must return a tuple (weight_folded, bias_folded)")
        wf, bf = result
        if any(a is not None and not np.array_equal(a, a0) for a, a0 in zip(args, copies)):
            raise Disagreement("it modified its inputs")
        x = rng.normal(size=(7, int(np.prod(wshape[1:]))))
        z = x @ w.reshape(c, -1).T + (0 if b is None else b)
        y, _ = bnlib.batch_norm_forward(z, weight=gamma, bias=beta, running_mean=mean, running_var=var,
                                        training=False, eps=1e-5)
        wf = _as_float64(wf)
        if wf.shape != w.shape:
            raise Disagreement(f"the folded weight has shape {wf.shape}, expected {w.shape}")
        _compare("the folded layer's output", x @ wf.reshape(c, -1).T + _as_float64(bf), y, 1e-8)


def checked_fold(fold):
    """The learner's ``fold_batchnorm`` if it passes :func:`probe_fold`, else :func:`cases.bn.fold_batchnorm`."""
    return checked(fold, _bn.fold_batchnorm, probe_fold, "fold_batchnorm")


# ----------------------------------------------------------------------------- ResidualBlock
def executed_layers(module: nn.Module, x: torch.Tensor) -> list[nn.Module]:
    """The Conv2d and BatchNorm layers of ``module`` in the order a forward pass on ``x`` first calls them.
    The pass runs on a copy, without gradient, so the module's statistics are untouched."""
    work = copy.deepcopy(module)
    order: list[nn.Module] = []

    def seen(mod, inputs):
        if all(mod is not m for m in order):
            order.append(mod)
    hooks = [m.register_forward_pre_hook(seen) for m in work.modules()
             if isinstance(m, (nn.Conv2d, nn.modules.batchnorm._BatchNorm))]
    try:
        with torch.no_grad():
            work(x)
    finally:
        for h in hooks:
            h.remove()
    index = {id(m): i for i, m in enumerate(work.modules())}
    originals = list(module.modules())
    return [originals[index[id(m)]] for m in order]


def load_in_order(module: nn.Module, layers: list[nn.Module], tensors: list[torch.Tensor]) -> None:
    """Copy ``tensors`` (conv weight; BN weight, bias, running_mean, running_var; ... in the order of
    ``layers``) into the layers."""
    it = iter(tensors)
    with torch.no_grad():
        for layer in layers:
            names = ("weight",) if isinstance(layer, nn.Conv2d) else ("weight", "bias", "running_mean", "running_var")
            for n in names:
                getattr(layer, n).copy_(next(it))


def probe_block(Block, channels: int = 3, seed: int = 0) -> None:
    """The learner's ResidualBlock against :class:`cases.models.ResidualBlock`: the number of parameters,
    the zero-initialized last gamma, and (with the same random parameters) the outputs in training and eval
    mode and the input gradient."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(4, channels, 5, 5, generator=gen, dtype=torch.float64)
    ref = _models.ResidualBlock(channels).double()
    mine = Block(channels)
    if not isinstance(mine, nn.Module):
        raise Disagreement("ResidualBlock(channels) is not a torch.nn.Module")
    mine = mine.double()
    n_ref, n_mine = _models.count_parameters(ref), _models.count_parameters(mine)
    if n_mine != n_ref:
        raise Disagreement(f"it has {n_mine} parameters, expected {n_ref} (two 3x3 convolutions without bias, two BN)")
    layers, ref_layers = executed_layers(mine, x), executed_layers(ref, x)
    kinds = [type(m).__name__ for m in layers]
    if kinds != ["Conv2d", "BatchNorm2d", "Conv2d", "BatchNorm2d"]:
        raise Disagreement(f"its forward calls {kinds}, expected conv, BN, conv, BN")
    if not torch.all(layers[3].weight == 0) or not torch.all(layers[1].weight == 1):
        raise Disagreement("with zero_init_residual the last BN's gamma must start at 0 (and the first at 1)")
    tensors = []
    for layer in ref_layers:
        shapes = [layer.weight.shape] if isinstance(layer, nn.Conv2d) else [layer.weight.shape] * 4
        for i, s in enumerate(shapes):
            t = torch.randn(s, generator=gen, dtype=torch.float64)
            tensors.append(t.abs() + 0.5 if i == 3 else t)
    load_in_order(mine, layers, tensors)
    load_in_order(ref, ref_layers, tensors)
    for mode in (True, False):
        outs = []
        for block in (mine, ref):
            block.train(mode)
            xi = x.clone().requires_grad_()
            y = block(xi)
            y.backward(torch.ones_like(y))
            outs.append((y.detach(), xi.grad))
        label = "training" if mode else "eval"
        _compare(f"the {label}-mode output", outs[0][0], outs[1][0], 1e-8)
        _compare(f"the {label}-mode input gradient", outs[0][1], outs[1][1], 1e-8)


def checked_block(Block):
    """The learner's ``ResidualBlock`` if it passes :func:`probe_block`, else :class:`cases.models.ResidualBlock`."""
    return checked(Block, _models.ResidualBlock, probe_block, "ResidualBlock")


# ----------------------------------------------------------------------------- adapt_bn_statistics
def _probe_model(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Dropout(0.5),
                          nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                          nn.Flatten(), nn.Linear(4, 6), nn.BatchNorm1d(6)).double()
    with torch.no_grad():
        for bn in _models.bn_layers(model):
            bn.running_mean.normal_()
            bn.running_var.uniform_(0.5, 2)
            bn.weight.normal_(1, 0.3)
    return model.eval()


def probe_adapt(adapt, seed: int = 0) -> None:
    """The learner's ``adapt_bn_statistics`` against :func:`cases.bn.adapt_bn_statistics` on a small eval-mode
    model with BatchNorm2d, BatchNorm1d and a dropout layer, for prior strengths 0, 16 and infinity: running
    statistics, unchanged weights and modes."""
    gen = torch.Generator().manual_seed(seed)
    batches = [torch.randn(8, 2, 5, 5, generator=gen, dtype=torch.float64) * 2 + 1 for _ in range(2)]
    for strength in (0.0, 16.0, math.inf):
        mine, ref = _probe_model(seed), _probe_model(seed)
        weights = [p.detach().clone() for p in mine.parameters()]
        modes = [m.training for m in mine.modules()]
        adapt(mine, [b.clone() for b in batches], strength)
        _bn.adapt_bn_statistics(ref, [b.clone() for b in batches], strength)
        if [m.training for m in mine.modules()] != modes:
            raise Disagreement("the model's train/eval modes were not restored")
        if any(not torch.equal(p, w) for p, w in zip(mine.parameters(), weights)):
            raise Disagreement("the weights changed")
        for i, (a, b) in enumerate(zip(_models.bn_layers(mine), _models.bn_layers(ref))):
            _compare(f"running_mean of BN layer {i} (prior strength {strength:g})", a.running_mean, b.running_mean, 1e-8)
            _compare(f"running_var of BN layer {i} (prior strength {strength:g})", a.running_var, b.running_var, 1e-8)


def checked_adapt(adapt):
    """The learner's ``adapt_bn_statistics`` if it passes :func:`probe_adapt`, else the reference."""
    return checked(adapt, _bn.adapt_bn_statistics, probe_adapt, "adapt_bn_statistics")
