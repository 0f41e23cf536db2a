"""Batch-norm tools for deployed models: folding into the preceding layer, adapting statistics to a new
domain, freezing BN for fine-tuning, and measuring how running statistics drift.

The reference functions here (:func:`fold_batchnorm`, :func:`adapt_bn_statistics`) are what the case-study
notebooks fall back to when a learner's version of the same function is not correct yet (:mod:`cases.verify`).
"""
from __future__ import annotations

import copy
import math
from typing import Callable, Iterable

import numpy as np
import torch
import torch.nn as nn

from .models import bn_layers

BatchNorm = nn.modules.batchnorm._BatchNorm


def fold_batchnorm(weight, bias, gamma, beta, running_mean, running_var, eps=1e-5):
    """Fold an eval-mode BN into the linear map before it (NumPy).

    BN(z) = gamma * (z - running_mean) / sqrt(running_var + eps) + beta is affine per output channel, so
    BN(W x + b) = W' x + b' with ``s = gamma / sqrt(running_var + eps)``, ``W' = s[:, None, ...] * W`` and
    ``b' = s * (b - running_mean) + beta`` (b = 0 when ``bias`` is None). ``weight``: (C_out, C_in, kH, kW)
    for a convolution or (C_out, C_in) for a linear layer; the other arrays (C_out,). Returns new arrays
    ``(weight_folded, bias_folded)`` in the weight's dtype; the inputs are not modified. Valid only for
    eval mode: in training mode BN uses the statistics of each batch, which no fixed W', b' can reproduce.
    """
    weight = np.asarray(weight)
    dtype = weight.dtype if np.issubdtype(weight.dtype, np.floating) else np.float64
    scale = np.asarray(gamma, np.float64) / np.sqrt(np.asarray(running_var, np.float64) + eps)
    b = np.zeros_like(scale) if bias is None else np.asarray(bias, np.float64)
    w = weight.astype(np.float64) * scale.reshape((-1,) + (1,) * (weight.ndim - 1))
    new_bias = scale * (b - np.asarray(running_mean, np.float64)) + np.asarray(beta, np.float64)
    return w.astype(dtype), new_bias.astype(dtype)


FoldFn = Callable[..., tuple]


def fold_model(model: nn.Module, fold: FoldFn = fold_batchnorm) -> nn.Module:
    """A copy of ``model`` in eval mode where every BatchNorm directly after a Conv2d or Linear layer (in an
    ``nn.Sequential``) is folded into that layer (with ``fold``, NumPy arrays in and out) and replaced by
    ``nn.Identity``. Other BN layers stay. The original model is not changed."""
    folded = copy.deepcopy(model).eval()

    def visit(module: nn.Module):
        if isinstance(module, nn.Sequential):
            names = list(module._modules)
            for first, second in zip(names, names[1:]):
                layer, bn = module._modules[first], module._modules[second]
                if isinstance(layer, (nn.Conv2d, nn.Linear)) and isinstance(bn, BatchNorm) and bn.affine \
                        and bn.track_running_stats:
                    module._modules[first] = _folded_layer(layer, bn, fold)
                    module._modules[second] = nn.Identity()
        for child in module.children():
            visit(child)
    visit(folded)
    return folded


def _folded_layer(layer: nn.Module, bn: BatchNorm, fold: FoldFn) -> nn.Module:
    def arr(t):
        return None if t is None else t.detach().cpu().numpy().copy()
    w, b = fold(arr(layer.weight), arr(layer.bias), arr(bn.weight), arr(bn.bias), arr(bn.running_mean),
                arr(bn.running_var), bn.eps)
    new = copy.deepcopy(layer)
    if new.bias is None:
        new.bias = nn.Parameter(torch.zeros(layer.weight.shape[0], dtype=layer.weight.dtype))
    with torch.no_grad():
        new.weight.copy_(torch.as_tensor(np.asarray(w)))
        new.bias.copy_(torch.as_tensor(np.asarray(b)))
    return new


@torch.no_grad()
def adapt_bn_statistics(model: nn.Module, batches: Iterable[torch.Tensor], prior_strength: float) -> nn.Module:
    """Covariate-shift adaptation of BN statistics (Schneider et al., NeurIPS 2020, "Improving robustness
    against common corruptions by covariate shift adaptation", arXiv:2006.16971), in place; returns model.

    For every BN layer, the target statistics are those the layer computes in training mode on the unlabeled
    target ``batches`` (batch mean and unbiased batch variance, averaged with equal weight over the batches:
    what torch does with ``momentum=None``), with every other layer left in its mode (dropout stays off in
    an eval-mode model). With ``n`` the number of target samples (images, summed over the batches) and
    ``N = prior_strength``, each running statistic becomes ``N/(N+n) * source + n/(N+n) * target``:
    N = 0 keeps only the target statistics, N = inf only the source ones. Weights, momentum, train/eval
    modes and num_batches_tracked are as before; no gradient is computed.
    """
    if not prior_strength >= 0:
        raise ValueError(f"prior_strength must be >= 0, got {prior_strength}")
    bns = bn_layers(model)
    modes = [(m, m.training) for m in model.modules()]
    saved = [(bn.running_mean.clone(), bn.running_var.clone(), bn.momentum,
              None if bn.num_batches_tracked is None else bn.num_batches_tracked.clone()) for bn in bns]
    n = 0
    try:
        for bn in bns:
            bn.reset_running_stats()
            bn.momentum = None
            bn.train()
        for x in batches:
            model(x)
            n += len(x)
    finally:
        for m, mode in modes:
            m.training = mode
    source_weight = 1.0 if math.isinf(prior_strength) else prior_strength / (prior_strength + n)
    for bn, (mean, var, momentum, tracked) in zip(bns, saved):
        bn.running_mean.copy_(source_weight * mean + (1 - source_weight) * bn.running_mean)
        bn.running_var.copy_(source_weight * var + (1 - source_weight) * bn.running_var)
        bn.momentum = momentum
        if tracked is not None:
            bn.num_batches_tracked.copy_(tracked)
    return model


def freeze_bn(model: nn.Module) -> None:
    """Training mode for everything but the BN layers, which stay in eval mode: they normalize with their
    running statistics and do not update them (their gamma and beta still learn). Use as ``fit``'s
    ``train_mode``; re-apply after any ``model.train()``."""
    model.train()
    for bn in bn_layers(model):
        bn.eval()


def statistics(model: nn.Module) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Copies of every BN layer's (running_mean, running_var)."""
    return [(bn.running_mean.detach().clone(), bn.running_var.detach().clone()) for bn in bn_layers(model)]


def statistics_drift(before, after) -> float:
    """Mean over BN layers of the relative change of the running statistics,
    ``(||mean' - mean|| + ||var' - var||) / (||mean|| + ||var||)``, between two :func:`statistics` snapshots."""
    out = []
    for (m0, v0), (m1, v1) in zip(before, after):
        out.append(float(((m1 - m0).norm() + (v1 - v0).norm()) / (m0.norm() + v0.norm())))
    return float(np.mean(out)) if out else 0.0
