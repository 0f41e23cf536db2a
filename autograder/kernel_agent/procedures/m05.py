"""Module 05 procedures: a layer-normalized LSTM cell (``LayerNormLSTMCell``).

``Cls`` is anything built as ``Cls(input_size, hidden_size)`` whose parameters are named as the notebook
states (weight_ih, weight_hh, bias, gamma_ih, beta_ih, gamma_hh, beta_hh, gamma_c, beta_c) and called as
``cell(x, (h, c)) -> (h, c)``. The procedures load the grader's parameters by name, run the cell over a
sequence and report states and gradients. Inputs are float64 tensors unless a test says otherwise.
"""
from __future__ import annotations

import torch

from . import stage


def _build(Cls, input_size, hidden_size):
    with stage("LayerNormLSTMCell(...)"):
        cell = Cls(input_size, hidden_size)
    return cell if isinstance(cell, torch.nn.Module) else None


def cell_layout(Cls, input_size, hidden_size):
    """A fresh cell: is it an ``nn.Module``, its parameters (name -> initial value), in registration order."""
    cell = _build(Cls, input_size, hidden_size)
    if cell is None:
        return {"is_module": False}
    return {"is_module": True, "parameters": {n: p.detach().clone() for n, p in cell.named_parameters()}}


def cell_run(Cls, input_size, hidden_size, params, xs, h0, c0, dh, dc, dtype_name="float64"):
    """Build the cell in ``dtype_name``, load ``params`` by name, run it over ``xs`` (T, N, input_size) from
    (h0, c0), then backpropagate sum_t <h_t, dh[t]> + <c_T, dc>: every step's h and c, the gradients of the
    parameters (by name), of the inputs and of the initial state. Missing or extra parameter names, or
    shapes that do not load, are reported instead."""
    dtype = getattr(torch, dtype_name)
    cell = _build(Cls, input_size, hidden_size)
    if cell is None:
        return {"is_module": False}
    cell = cell.to(dtype)
    named = dict(cell.named_parameters())
    if sorted(named) != sorted(params):
        return {"is_module": True, "names": sorted(named)}
    try:
        with torch.no_grad():
            for name, value in params.items():
                named[name].copy_(value.to(dtype))
    except (RuntimeError, TypeError) as exc:
        return {"is_module": True, "names": sorted(named), "load_error": str(exc)[:300]}
    xs = xs.to(dtype).detach().clone().requires_grad_()
    h = h0.to(dtype).detach().clone().requires_grad_()
    c = c0.to(dtype).detach().clone().requires_grad_()
    h_init, c_init = h, c
    hs, cs = [], []
    for t in range(xs.shape[0]):
        with stage(f"LayerNormLSTMCell.forward (step {t + 1})"):
            out = cell(xs[t], (h, c))
        if not (isinstance(out, tuple) and len(out) == 2 and all(isinstance(v, torch.Tensor) for v in out)):
            return {"is_module": True, "names": sorted(named), "returned": type(out).__name__}
        h, c = out
        hs.append(h)
        cs.append(c)
    if any(v.shape != h0.shape for v in hs + cs):
        return {"is_module": True, "names": sorted(named), "shapes": [list(hs[0].shape), list(cs[0].shape)]}
    loss = sum((ht * dht.to(dtype)).sum() for ht, dht in zip(hs, dh)) + (cs[-1] * dc.to(dtype)).sum()
    with stage("backward"):
        loss.backward()
    return {"is_module": True, "names": sorted(named), "h": torch.stack(hs).detach(), "c": torch.stack(cs).detach(),
            "grads": {n: p.grad for n, p in named.items()}, "dx": xs.grad, "dh0": h_init.grad, "dc0": c_init.grad}
