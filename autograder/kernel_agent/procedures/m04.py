"""Module 04 procedures: a residual block (``ResidualBlock``) and BN statistics adaptation
(``adapt_bn_statistics``).

``Cls`` is anything built as ``Cls(channels, zero_init_residual=...)``; ``fn`` anything called as
``fn(model, batches, prior_strength)``. The procedures find a block's convolutions and BN layers by the
order in which its forward pass calls them (on a copy, so the statistics stay untouched), load the grader's
parameters into them in that order, and report outputs, gradients and state. Inputs are float64 tensors
unless a test says otherwise.
"""
from __future__ import annotations

import copy

import torch
import torch.nn as nn

from . import stage

_BN = nn.modules.batchnorm._BatchNorm
_CONV_BN = (nn.Conv2d, _BN)


def _executed(module: nn.Module, x: torch.Tensor) -> list:
    """The Conv2d and BN layers of ``module`` in the order its forward pass on ``x`` first calls them."""
    work = copy.deepcopy(module)
    order = []

    def seen(mod, inputs):
        if all(mod is not m for m in order):
            order.append(mod)
    hooks = [m.register_forward_pre_hook(seen) for m in work.modules() if isinstance(m, _CONV_BN)]
    try:
        with torch.no_grad(), stage("ResidualBlock.forward"):
            work(x.clone())
    finally:
        for h in hooks:
            h.remove()
    index = {id(m): i for i, m in enumerate(work.modules())}
    originals = list(module.modules())
    return [originals[index[id(m)]] for m in order]


def _kinds(layers) -> list:
    return [type(m).__name__ for m in layers]


def _build_block(Cls, channels, kwargs, dtype):
    with stage("ResidualBlock(...)"):
        block = Cls(channels, **kwargs)
    if not isinstance(block, nn.Module):
        return None
    return block.to(dtype)


def block_layout(Cls, channels, kwargs, x):
    """A fresh block: parameter count, the layers its forward calls (in order), their conv biases and
    kernel sizes, the BN weights (gamma) as initialized, and its training-mode output for ``x``."""
    block = _build_block(Cls, channels, kwargs, x.dtype)
    if block is None:
        return {"is_module": False}
    layers = _executed(block, x)
    block.train()
    with torch.no_grad(), stage("ResidualBlock.forward"):
        y = block(x.clone())
    return {"is_module": True, "parameters": sum(p.numel() for p in block.parameters()),
            "layers": _kinds(layers),
            "conv_bias": [m.bias is not None for m in layers if isinstance(m, nn.Conv2d)],
            "conv_kernels": [list(m.weight.shape) for m in layers if isinstance(m, nn.Conv2d)],
            "gammas": [None if m.weight is None else m.weight.detach().clone() for m in layers if isinstance(m, _BN)],
            "output": y}


def block_steps(Cls, channels, tensors, x, dy, dtype_name="float64"):
    """Build ``Cls(channels, zero_init_residual=False)``, load ``tensors`` into the layers its forward
    calls (conv: weight; BN: weight, bias, running_mean, running_var; in call order), then one
    training-mode forward and backward with ``dy`` and one eval-mode forward and backward: outputs, input
    gradients, parameter gradients (call order), running statistics after the training step. A convolution's
    bias, if the block has one, is set to 0 (the layout is graded on its own)."""
    dtype = getattr(torch, dtype_name)
    block = _build_block(Cls, channels, {"zero_init_residual": False}, dtype)
    if block is None:
        return {"is_module": False}
    x, dy = x.to(dtype), dy.to(dtype)
    layers = _executed(block, x)
    kinds = _kinds(layers)
    if kinds != ["Conv2d", "BatchNorm2d", "Conv2d", "BatchNorm2d"]:
        return {"is_module": True, "layers": kinds}
    it = iter(tensors)
    try:
        with torch.no_grad():
            for m in layers:
                for name in (("weight",) if isinstance(m, nn.Conv2d) else ("weight", "bias", "running_mean", "running_var")):
                    getattr(m, name).copy_(next(it).to(dtype))
                if isinstance(m, nn.Conv2d) and m.bias is not None:   # graded by the structure test
                    m.bias.zero_()
    except (RuntimeError, AttributeError, TypeError) as exc:
        return {"is_module": True, "layers": kinds, "load_error": str(exc)[:300]}
    params = [p for m in layers for p in ((m.weight,) if isinstance(m, nn.Conv2d) else (m.weight, m.bias))]
    out = {"is_module": True, "layers": kinds}
    for mode in ("train", "eval"):
        block.train(mode == "train")
        for p in block.parameters():
            p.grad = None
        xl = x.detach().clone().requires_grad_()
        with stage("ResidualBlock.forward"):
            y = block(xl)
        if isinstance(y, torch.Tensor):
            with stage("backward"):
                y.backward(dy)
        out[mode] = {"y": y, "dx": xl.grad, "grads": [p.grad for p in params]}
        if mode == "train":
            out["running"] = [t.detach().clone() for m in layers if isinstance(m, _BN)
                              for t in (m.running_mean, m.running_var)]
    return out


def build_model(arch: str) -> nn.Module:
    """The small float64 models whose BN layers adaptation is tested on (weights from seed 0)."""
    torch.manual_seed(0)
    if arch == "cnn":
        model = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                              nn.Conv2d(4, 6, 3, padding=1, stride=2), nn.BatchNorm2d(6), nn.ReLU(),
                              nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 5))
    elif arch == "nested":   # BN1d and BN2d inside nested containers, one after a ReLU, a BN at the end
        stem = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4), nn.ReLU())
        body = nn.Sequential(nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(), nn.BatchNorm2d(4)),
                             nn.Conv2d(4, 3, 1))
        head = nn.Sequential(nn.Flatten(), nn.Linear(3 * 16, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 4),
                             nn.BatchNorm1d(4))
        model = nn.Sequential(stem, body, head)
    elif arch == "dropout":
        model = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.Dropout(0.5), nn.BatchNorm2d(4), nn.ReLU(),
                              nn.Flatten(), nn.Linear(4 * 16, 3))
    else:
        raise ValueError(f"unknown architecture {arch!r}")
    return model.double()


def adapt(fn, arch, state, modes, momenta, batches, prior_strength):
    """Build ``build_model(arch)``, load ``state``, set every module's mode (``modes``, in ``modules()``
    order) and the BN momenta, call ``fn(model, batches, prior_strength)``; report the state_dict after,
    the modes and momenta after, which parameters got a gradient, and which buffers are part of a graph."""
    model = build_model(arch)
    model.load_state_dict(state)
    for m, mode in zip(model.modules(), modes):
        m.training = mode
    bns = [m for m in model.modules() if isinstance(m, _BN)]
    for bn, momentum in zip(bns, momenta):
        bn.momentum = momentum
    with stage("adapt_bn_statistics"):
        fn(model, [b.clone() for b in batches], prior_strength)
    return {"state": {k: v.detach().clone() for k, v in model.state_dict().items()},
            "modes": [bool(m.training) for m in model.modules()],
            "momenta": [bn.momentum if bn.momentum is None else float(bn.momentum) for bn in bns],
            "grads": [p.grad is not None for p in model.parameters()],
            "requires_grad": [bool(p.requires_grad) for p in model.parameters()],
            "buffers_in_graph": [bool(b.requires_grad or b.grad_fn is not None) for b in model.buffers()]}
