"""Module 07 procedures: the capstone's broken training setups, run on the grader's data and seeds.

Each ``fix_<name>`` the learner writes is called here with data the grader generated (fresh seeds, plain
tensors) and under the training budget the notebook states; what it returns (a trained model, or
predictions) is then measured HERE, by this module's own code: the test inputs are fed through the model
in eval mode by :func:`_eval_outputs`, optimizer steps are counted by a global optimizer hook, running
statistics and modes are read before and after. The grader computes accuracies and errors from the
returned outputs with the test labels, which never enter the kernel.

The data and models defined here are the notebook's too: ``cases.capstone`` imports them for the
experiments (the grading kernel cannot import ``cases``).
"""
from __future__ import annotations

import copy
import math

import numpy as np
import torch
import torch.nn as nn
from torch.optim.optimizer import register_optimizer_step_pre_hook

from . import stage

D, K, HIDDEN = 16, 4, 64
_BN = nn.modules.batchnorm._BatchNorm


# ----------------------------------------------------------------------------- data (cases.capstone imports it)
def _task(task_seed: int, d: int = D):
    """A task: badly scaled features (offsets -40..40, scales 0.5..30) and a random teacher network."""
    rng = np.random.default_rng([task_seed, 7])
    offset = rng.uniform(-40.0, 40.0, d)
    scale = np.exp(rng.uniform(math.log(0.5), math.log(30.0), d))
    w1 = rng.standard_normal((d, K))
    w2 = rng.standard_normal((d, d))
    mu = rng.standard_normal((K, d)) * 0.6
    return offset, scale, w1, w2, mu


def _teacher(z, w1, w2):
    """Class scores: a linear teacher plus a mild nonlinearity."""
    return z @ w1 + 0.5 * np.tanh(z @ w2 / math.sqrt(z.shape[-1])) @ w1


def classification(task_seed: int, sample_seed: int, n: int):
    """(X float32 (n, 16), y int64 (n,)): 4 classes from the teacher on standardized inputs; X badly scaled."""
    offset, scale, w1, w2, _ = _task(task_seed)
    z = np.random.default_rng([task_seed, sample_seed, 1]).standard_normal((n, D))
    y = _teacher(z, w1, w2).argmax(1)
    return torch.tensor(offset + scale * z, dtype=torch.float32), torch.tensor(y, dtype=torch.int64)


def relabeled(task_seed: int, sample_seed: int, n: int):
    """(X, y) for fine-tuning: the inputs of task ``task_seed``, NEW labels (the teacher of task
    ``task_seed + 100``), sorted by label: the samples arrive grouped (e.g. one user or one site at a time)."""
    offset, scale, _, _, _ = _task(task_seed)
    _, _, w1, w2, _ = _task(task_seed + 100)
    z = np.random.default_rng([task_seed, sample_seed, 4]).standard_normal((n, D))
    y = _teacher(z, w1, w2).argmax(1)
    order = np.argsort(y, kind="stable")
    return (torch.tensor((offset + scale * z)[order], dtype=torch.float32),
            torch.tensor(y[order], dtype=torch.int64))


def sequences(task_seed: int, sample_seed: int, n: int, t: int):
    """(X float32 (n, t, 16), y int64 (n,)): a class-dependent mean per feature under per-step noise; X badly
    scaled per feature (the last axis)."""
    offset, scale, _, _, mu = _task(task_seed)
    rng = np.random.default_rng([task_seed, sample_seed, 3])
    y = rng.integers(0, K, n)
    z = rng.standard_normal((n, t, D)) + 0.4 * mu[y][:, None, :]
    return torch.tensor(offset + scale * z, dtype=torch.float32), torch.tensor(y, dtype=torch.int64)


# ----------------------------------------------------------------------------- models (cases.capstone imports them)
def mlp(d_in=D, d_out=K, hidden=(HIDDEN, HIDDEN), momentum=0.1, eps=1e-5, last_bn=False):
    """BN on the (badly scaled) inputs, then Linear-BN-ReLU blocks and a linear head."""
    layers, a = [nn.BatchNorm1d(d_in, momentum=momentum, eps=eps)], d_in
    for h in hidden:
        layers += [nn.Linear(a, h), nn.BatchNorm1d(h, momentum=momentum, eps=eps), nn.ReLU()]
        a = h
    layers.append(nn.Linear(a, d_out))
    if last_bn:
        layers.append(nn.BatchNorm1d(d_out, momentum=momentum, eps=eps))
    return nn.Sequential(*layers)


def train_sgd(model, X, y, *, epochs, batch, lr, seed, loss="ce", weight_decay=0.0, momentum=0.9):
    """Plain mini-batch SGD with momentum, shuffled each epoch by a generator seeded with ``seed``."""
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    lossf = nn.CrossEntropyLoss() if loss == "ce" else nn.MSELoss()
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(X), generator=g)
        for i in range(0, len(X) - batch + 1, batch):
            idx = order[i:i + batch]
            out = model(X[idx])
            opt.zero_grad()
            lossf(out.squeeze(-1) if loss == "mse" else out, y[idx]).backward()
            opt.step()
    return model


def pretrained(task_seed: int, n: int = 1024, seed: int = 0):
    """The classifier the eval-mode and fine-tuning setups start from (trained here, 4 epochs of batch 64)."""
    torch.manual_seed(seed)
    X, y = classification(task_seed, 0, n)
    return train_sgd(mlp(), X, y, epochs=4, batch=64, lr=0.05, seed=seed)


# ----------------------------------------------------------------------------- measuring
class StepCounter:
    """Counts optimizer steps taken anywhere while it is installed (a global optimizer hook)."""

    def __init__(self):
        self.steps = 0
        self.handle = register_optimizer_step_pre_hook(self._hook)

    def _hook(self, opt, args, kwargs):
        self.steps += 1

    def remove(self):
        self.handle.remove()


def _norm_state(model):
    """[running_mean, running_var, num_batches_tracked] of every BN layer (None where it keeps none)."""
    return [[None if m.running_mean is None else m.running_mean.detach().clone(),
             None if m.running_var is None else m.running_var.detach().clone(),
             -1 if m.num_batches_tracked is None else int(m.num_batches_tracked)]
            for m in model.modules() if isinstance(m, _BN)]


def _norm_kinds(model):
    return [type(m).__name__ for m in model.modules()
            if isinstance(m, (_BN, nn.LayerNorm, nn.GroupNorm, nn.modules.instancenorm._InstanceNorm))]


def _eval_outputs(model, X, batch=256):
    """The model's outputs for X in eval mode, without gradient, in chunks (its modes restored)."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        with torch.no_grad(), stage("the returned model's forward pass (eval mode)"):
            return torch.cat([model(X[i:i + batch]).reshape(len(X[i:i + batch]), -1).float()
                              for i in range(0, len(X), batch)])
    finally:
        for m, mode in modes:
            m.training = mode


def statistics_gap(model, X):
    """For each BN layer: how far its running statistics are from the exact statistics of its input over X
    (eval mode, the layers before it normalizing with their running statistics, as at inference):
    max over channels of max(|running_mean - mean| / std, |log(running_var / var)|)."""
    seen = []
    hooks = [m.register_forward_pre_hook(lambda mod, inp: seen.append((mod, inp[0].detach())))
             for m in model.modules() if isinstance(m, _BN)]
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        with torch.no_grad():
            model(X)
    finally:
        for h in hooks:
            h.remove()
        for m, mode in modes:
            m.training = mode
    gaps = []
    for mod, x in seen:
        if mod.running_mean is None:
            gaps.append(float("inf"))
            continue
        x = x.transpose(0, 1).reshape(x.shape[1], -1) if x.dim() > 2 else x.t()
        mean, var = x.mean(1), x.var(1)
        gaps.append(max(float(((mod.running_mean - mean).abs() / var.sqrt()).max()),
                        float((mod.running_var / var).log().abs().max())))
    return gaps


def _trained(fn, args, seed, X_tests, gap_X=None):
    """Call ``fn(*args, seed)``; report whether it returned a module, its outputs on each of X_tests in eval
    mode, the optimizer steps it took, its normalization layers and their statistics."""
    torch.manual_seed(seed)
    counter = StepCounter()
    try:
        with stage(getattr(fn, "__name__", "your function")):
            model = fn(*args, seed)
    finally:
        counter.remove()
    if not isinstance(model, nn.Module):
        return {"is_module": False, "type": f"{type(model).__module__}.{type(model).__qualname__}",
                "steps": counter.steps}
    out = {"is_module": True, "steps": counter.steps, "norms": _norm_kinds(model), "state": _norm_state(model),
           "outputs": [_eval_outputs(model, X) for X in X_tests]}
    if gap_X is not None:
        out["gaps"] = statistics_gap(model, gap_X)
    return out


# ----------------------------------------------------------------------------- one procedure per setup
def eval_mode(fn, task_seed, chunks):
    """Pretrain the classifier of task ``task_seed`` (here), leave it in training mode (as a training loop
    leaves it), and call ``fn(model, X)`` on each chunk of test inputs in turn (the grader chose and ordered
    them): the predictions, the statistics and modes before and after, whether autograd recorded."""
    model = pretrained(task_seed).train()
    before, modes = _norm_state(model), [bool(m.training) for m in model.modules()]
    grads = []
    hooks = [m.register_forward_pre_hook(lambda mod, inp: grads.append(bool(torch.is_grad_enabled())))
             for m in model.modules() if isinstance(m, _BN)]
    preds = []
    try:
        for X in chunks:
            with stage("fix_eval_mode"):
                out = fn(model, X.clone())
            preds.append(out.detach().clone() if isinstance(out, torch.Tensor) else None)
    finally:
        for h in hooks:
            h.remove()
    return {"predictions": preds, "before": before, "after": _norm_state(model), "modes_before": modes,
            "modes_after": [bool(m.training) for m in model.modules()], "grad": any(grads)}


def train_setup(fn, X, y, seed, X_tests, gap=False):
    """``fn(X, y, seed) -> model`` trains from scratch; its outputs on X_tests (and, with ``gap``, how far
    its running statistics are from its layers' input statistics over X)."""
    return _trained(fn, (X.clone(), y.clone()), seed, X_tests, X if gap else None)


def finetune(fn, task_seed, X, y, seed, X_test):
    """Pretrain the classifier of task ``task_seed`` here, then ``fn(model, X, y, seed) -> model`` fine-tunes
    it on the few labeled samples (X, y); the outputs on X_test in eval mode, and the BN layers' running
    statistics before and after."""
    model = pretrained(task_seed)
    before = _norm_state(model)
    out = _trained(fn, (model, X.clone(), y.clone()), seed, [X_test])
    out["before"] = before
    return out


def parameters_only(model):
    """A checkpoint of the parameters alone (the mistake: ``named_parameters()`` holds no buffers)."""
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def stale(fn, task_seed, X, seed, X_test):
    """Pretrain the classifier of task ``task_seed`` here, save its parameters only, build a fresh model and
    call ``fn(model, checkpoint, X, seed) -> model`` with the training inputs X; the outputs on X_test."""
    checkpoint = parameters_only(pretrained(task_seed))
    torch.manual_seed(seed + 1)
    fresh = mlp()
    return _trained(fn, (fresh, checkpoint, X.clone()), seed, [X_test])


def quiz_answers(quiz):
    """The learner's quiz answers as plain data: a dict of numbers, booleans, strings and pairs (anything
    else is reported by its type name)."""
    if not isinstance(quiz, dict):
        return f"{type(quiz).__module__}.{type(quiz).__qualname__}"
    out = {}
    for k, v in quiz.items():
        if type(k) is not str:
            continue
        if type(v) in (bool, int, float, str):
            out[k] = v
        elif type(v) in (tuple, list) and all(type(x) in (bool, int, float) for x in v):
            out[k] = list(v)
        else:
            out[k] = f"<{type(v).__name__}>"
    return out
