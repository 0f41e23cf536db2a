"""Module 02 procedures: a ``torch.autograd.Function`` for batch norm and a ``BatchNorm2d`` module.

``Fn`` is anything with ``Fn.apply(x, weight, bias, running_mean, running_var, training, momentum, eps)``;
``Cls`` anything built as ``Cls(num_features, **kwargs)`` that behaves like ``torch.nn.BatchNorm2d``.
Inputs are float64 tensors unless a test says otherwise.
"""
from __future__ import annotations

import torch

from . import stage


def _leaf(t):
    return t.detach().clone().requires_grad_()


def function_step(Fn, x, weight, bias, running_mean, running_var, training, momentum, eps, dy=None):
    """One call of ``Fn.apply`` (and ``backward(dy)``): output, running statistics after, gradients."""
    xl, wl, bl = _leaf(x), _leaf(weight), _leaf(bias)
    rm, rv = running_mean.clone(), running_var.clone()
    with stage("BatchNormFunction.apply"):
        y = Fn.apply(xl, wl, bl, rm, rv, training, momentum, eps)
    out = {"y": y, "running_mean": rm, "running_var": rv}
    if dy is not None and isinstance(y, torch.Tensor):
        with stage("BatchNormFunction.backward"):
            y.backward(dy)
        out.update(dx=xl.grad, dweight=wl.grad, dbias=bl.grad)
    return out


def function_outputs(Fn, points, running_mean, running_var, training, momentum, eps):
    """``Fn.apply`` at several points ``(x, weight, bias)``, each with fresh copies of the running stats."""
    outs = []
    with torch.no_grad(), stage("BatchNormFunction.apply"):
        for x, w, b in points:
            y = Fn.apply(x.clone(), w.clone(), b.clone(), running_mean.clone(), running_var.clone(), training,
                         momentum, eps)
            outs.append(y)
    return outs


def function_vjps(Fn, x, weight, bias, running_mean, running_var, training, momentum, eps, cotangents):
    """The hand-written backward's vector-Jacobian products ``(dx, dweight, dbias)``, one per cotangent."""
    grads = []
    for dy in cotangents:
        xl, wl, bl = _leaf(x), _leaf(weight), _leaf(bias)
        with stage("BatchNormFunction.apply"):
            y = Fn.apply(xl, wl, bl, running_mean.clone(), running_var.clone(), training, momentum, eps)
        with stage("BatchNormFunction.backward"):
            dx, dw, db = torch.autograd.grad(y, (xl, wl, bl), dy, allow_unused=True)
        grads.append((dx, dw, db))
    return grads


def module_layout(Cls, num_features):
    """A fresh module: is it an ``nn.Module``, its state_dict (keys in order, values), parameters, buffers."""
    with stage("BatchNorm2d(...)"):
        m = Cls(num_features)
    if not isinstance(m, torch.nn.Module):
        return {"is_module": False}
    sd = m.state_dict()
    return {"is_module": True, "keys": list(sd), "state": dict(sd),
            "parameters": sorted(n for n, _ in m.named_parameters()),
            "buffers": sorted(n for n, _ in m.named_buffers())}


def module_steps(Cls, num_features, kwargs, state, modes, inputs, cotangents):
    """Build ``Cls(num_features, **kwargs)`` in float64, load ``state``, then for each mode ("train" or
    "eval") run forward and backward: outputs, input gradients, final state_dict and parameter grads."""
    with stage("BatchNorm2d(...)"):
        m = Cls(num_features, **kwargs)
    if not isinstance(m, torch.nn.Module):
        return {"is_module": False}
    m = m.double()
    with stage("load_state_dict"):
        m.load_state_dict(state)
    outputs, dxs, formats = [], [], []
    for mode, x, dy in zip(modes, inputs, cotangents):
        m.train(mode == "train")
        xl = x.detach().clone().requires_grad_()
        with stage("BatchNorm2d.forward"):
            y = m(xl)
        if isinstance(y, torch.Tensor):
            with stage("backward"):
                y.backward(dy)
            formats.append(bool(y.is_contiguous(memory_format=torch.channels_last)))
        outputs.append(y)
        dxs.append(xl.grad)
    params = dict(m.named_parameters())
    return {"is_module": True, "outputs": outputs, "dx": dxs, "channels_last": formats, "state": dict(m.state_dict()),
            "weight_grad": params["weight"].grad if "weight" in params else None}


def module_grad_fn(Cls, num_features, x):
    """The name of the autograd node that produced a training-mode output."""
    with stage("BatchNorm2d(...)"):
        m = Cls(num_features)
    m = m.double().train()
    with stage("BatchNorm2d.forward"):
        y = m(x.detach().clone().requires_grad_())
    fn = getattr(y, "grad_fn", None)
    return type(fn).__name__ if fn is not None else "None"


def tiny_net(Cls, state, x, target, steps, lr):
    """A small conv net with ``Cls(4)`` after its first convolution, loaded with ``state`` and trained
    ``steps`` SGD steps (momentum 0.9): the losses, then the eval-mode output."""
    with stage("BatchNorm2d(...)"):
        bn = Cls(4)
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), bn, torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(2),
                              torch.nn.Flatten(), torch.nn.Linear(16, 3)).double()
    with stage("load_state_dict"):
        net.load_state_dict(state)
    opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=0.9)
    losses = []
    for _ in range(steps):
        opt.zero_grad()
        with stage("training step"):
            loss = torch.nn.functional.cross_entropy(net(x), target)
            loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    net.eval()
    with torch.no_grad(), stage("eval forward"):
        out = net(x)
    return {"losses": losses, "eval_output": out}


def wired_steps(Fn, num_features, kwargs, state, modes, inputs, cotangents):
    """What ``torch.nn.BatchNorm2d``'s wiring gives around the learner's own ``Fn``: parameters and
    buffers from ``state``, ``num_batches_tracked`` counted in training mode, buffers updated by ``Fn`` in
    place, eval mode passing the running statistics. Same observations as :func:`module_steps`."""
    eps, momentum = kwargs.get("eps", 1e-5), kwargs.get("momentum", 0.1)
    w = state["weight"].detach().clone().double().requires_grad_()
    b = state["bias"].detach().clone().double().requires_grad_()
    rm, rv = state["running_mean"].clone().double(), state["running_var"].clone().double()
    nbt = state["num_batches_tracked"].clone()
    outputs, dxs, formats = [], [], []
    for mode, x, dy in zip(modes, inputs, cotangents):
        training = mode == "train"
        if training:
            nbt += 1
        xl = x.detach().clone().requires_grad_()
        with stage("BatchNormFunction.apply"):
            y = Fn.apply(xl, w, b, rm, rv, training, momentum, eps)
        if isinstance(y, torch.Tensor):
            with stage("BatchNormFunction.backward"):
                y.backward(dy)
            formats.append(bool(y.is_contiguous(memory_format=torch.channels_last)))
        outputs.append(y)
        dxs.append(xl.grad)
    return {"is_module": True, "outputs": outputs, "dx": dxs, "channels_last": formats,
            "state": {"weight": w.detach(), "bias": b.detach(), "running_mean": rm, "running_var": rv,
                      "num_batches_tracked": nbt}, "weight_grad": w.grad}
