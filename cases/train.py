"""Training and evaluation loops for the case studies: plain mini-batch SGD, seeded, with optional progress.

Losses are in nats (natural-log cross-entropy); accuracies are fractions in [0, 1].
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .data import batches
from .runtime import progress

LossFn = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]


def cross_entropy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy (nats) of ``model(x)`` against labels ``y``: the default loss of :func:`fit`."""
    return F.cross_entropy(model(x), y)


@dataclass
class History:
    """What :func:`fit` saw: the training loss (nats) of every step, and whether it diverged (NaN/Inf)."""

    losses: list = field(default_factory=list)
    diverged: bool = False

    def smoothed(self, window: int = 10) -> np.ndarray:
        """Running mean of the step losses over ``window`` steps (length ``len(losses) - window + 1``)."""
        a = np.asarray(self.losses, dtype=np.float64)
        if len(a) < window:
            return a
        return np.convolve(a, np.ones(window) / window, mode="valid")


def fit(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, epochs: int = 5, lr: float = 0.1,
        batch_size: int = 64, seed: int = 0, momentum: float = 0.9, weight_decay: float = 0.0,
        loss_fn: LossFn = cross_entropy, train_mode: Callable[[nn.Module], None] | None = None,
        parameters=None, on_step: Callable[[nn.Module, float], None] | None = None,
        show_progress: bool = False, desc: str = "training") -> History:
    """Train ``model`` in place with SGD (momentum 0.9 by default) on shuffled mini-batches of (x, y).

    ``train_mode(model)`` is called before training instead of ``model.train()`` (e.g. to keep BN layers in
    eval mode: :func:`cases.bn.freeze_bn`). ``parameters``: what the optimizer updates (all by default).
    A step whose loss is not finite stops training and marks the history ``diverged``. ``on_step(model,
    loss)`` is called after every step. Shuffling uses its own generator seeded by ``seed``.
    """
    gen = torch.Generator().manual_seed(seed)
    params = list(model.parameters() if parameters is None else parameters)
    opt = torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    (train_mode or (lambda m: m.train()))(model)
    hist = History()
    epochs_iter = progress(range(epochs), desc=desc) if show_progress else range(epochs)
    for _ in epochs_iter:
        for idx in batches(x, batch_size, gen):
            loss = loss_fn(model, x[idx], y[idx])
            value = float(loss.detach())
            hist.losses.append(value)
            if not math.isfinite(value):
                hist.diverged = True
                return hist
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if on_step is not None:
                on_step(model, value)
    return hist


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 512) -> float:
    """Fraction of ``x`` classified as ``y`` by ``model`` in eval mode (BN uses its running statistics).
    The model's train/eval modes are restored afterwards. A model whose outputs are not finite scores 0
    on those samples."""
    modes = {m: m.training for m in model.modules()}
    model.eval()
    try:
        correct = 0
        for i in range(0, len(x), batch_size):
            out = model(x[i:i + batch_size])
            correct += int(((out.argmax(1) == y[i:i + batch_size]) & torch.isfinite(out).all(1)).sum())
        return correct / len(x)
    finally:
        for m, mode in modes.items():
            m.training = mode


@torch.no_grad()
def accuracy_with_batch_statistics(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int) -> float:
    """Prediction-time BN (Nado et al. 2020, "Evaluating Prediction-Time Batch Normalization for Robustness
    under Covariate Shift", arXiv:2006.10963): each test batch of ``batch_size`` samples is normalized with
    its own statistics (BN layers in training mode), every other layer in eval mode. The running statistics
    and the modes are left as they were. The last incomplete batch is evaluated too."""
    work = copy.deepcopy(model).eval()
    for m in work.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.train()
            m.momentum = 0.0          # batch statistics without touching the copy's running ones
    correct = 0
    for i in range(0, len(x), batch_size):
        out = work(x[i:i + batch_size])
        correct += int(((out.argmax(1) == y[i:i + batch_size]) & torch.isfinite(out).all(1)).sum())
    return correct / len(x)
