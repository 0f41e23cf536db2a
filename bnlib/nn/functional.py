"""Differentiable functional forms over bnlib's hand-written passes, and their ``torch.autograd.Function``s.

Each Function's ``forward`` is bnlib's forward pass; its ``backward`` is bnlib's closed-form backward, written
in differentiable torch operations: with ``create_graph=True`` the statistics are recomputed from x with
autograd recording, so double backward (gradient penalties, Hessian-vector products) is exact and checked
by ``torch.autograd.gradgradcheck``. ``jvp`` implements forward-mode AD (``torch.func.jvp``,
``torch.autograd.forward_ad``). The Functions use ``setup_context``, as torch.func requires.

The functional forms take torch's checks and error types (the ``bnlib.nn`` modules call them); per-channel
arrays are keyword-only. NaN and Inf propagate as in torch.
"""
from __future__ import annotations

import torch

from .. import _rownorm
from .. import _checks as ck
from .. import batch_norm as bn
from .. import group_norm as gn
from .. import instance_norm as inn
from .. import layer_norm as ln
from .._backend import backend_for

__all__ = ["BatchNormFunction", "InstanceNormFunction", "LayerNormFunction", "GroupNormFunction",
           "batch_norm", "instance_norm", "layer_norm", "group_norm"]

_HALF = (torch.float16, torch.bfloat16)


# ----------------------------------------------------------------------------- torch's checks
def check_dtypes(x, *params, op="batch_norm"):
    """torch's CPU rule: parameters have x's dtype, or float32 for a float16/bfloat16 x."""
    if not x.is_floating_point():
        if op == "batch_norm":
            raise NotImplementedError(f'"batch_norm" not implemented for \'{str(x.dtype).replace("torch.", "").capitalize()}\'')
        raise RuntimeError("mixed dtype (CPU): all inputs must share same datatype.")
    for p in params:
        if p is not None and p.dtype != x.dtype and not (x.dtype in _HALF and p.dtype == torch.float32):
            raise ck.torch_mixed_dtype(x.dtype, p.dtype)


def check_channels(x, **vectors):
    c = x.shape[1]
    for name, v in vectors.items():
        if v is not None and v.numel() != c:
            raise ck.torch_channels(name, c, v.numel())


def _verify_batch_size(x):
    size = list(x.shape)
    prod = size[0]
    for s in size[2:]:
        prod *= s
    if prod == 1:
        raise ValueError(f"Expected more than 1 value per channel when training, got input size {x.size()}")


# ----------------------------------------------------------------------------- helpers
def _be():
    return backend_for(torch.empty(0))


def _col(v):
    return None if v is None else v.reshape(-1, 1)


def _own(y):
    """y without its view relationship to bnlib's (N, C, L) working tensor (no copy): autograd forbids
    in-place operations (ReLU(inplace=True)) on views returned by a custom Function."""
    return y.detach() if y._base is not None else y


def _means(t, dims):
    return t.mean(dim=dims, keepdim=True)


# ----------------------------------------------------------------------------- batch norm
class BatchNormFunction(torch.autograd.Function):
    """``apply(x, weight, bias, running_mean, running_var, training, momentum, eps) -> (y, mean, invstd)``.

    weight/bias may be None; the running statistics are updated in place in training mode. mean and invstd
    (the statistics used, (C, 1), not differentiable) are returned for the backward pass.
    """

    @staticmethod
    def forward(x, weight, bias, running_mean, running_var, training, momentum, eps):
        y, saved = bn.forward(_be(), x, weight, bias, running_mean, running_var, training, momentum, eps,
                              "propagate")
        if saved.mean is None:
            empty = x.new_empty((0, 1), dtype=torch.float64 if x.dtype == torch.float64 else torch.float32)
            return y, empty, empty
        return _own(y), saved.mean, saved.invstd

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, weight, bias, _, _, training, _, eps = inputs
        _, mean, invstd = output
        ctx.mark_non_differentiable(mean, invstd)
        ctx.save_for_backward(x, weight, mean, invstd)
        ctx.save_for_forward(x, weight, mean, invstd)
        ctx.training, ctx.eps, ctx.bias_given = training, eps, bias is not None
        ctx.param_dtype = bn.param_dtype(x, weight, bias)

    @staticmethod
    def backward(ctx, dy, _dmean, _dinvstd):
        x, weight, mean, invstd = ctx.saved_tensors
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        be = _be()
        c = x.shape[1]
        if x.numel() == 0:
            zeros = x.new_zeros(c, dtype=ctx.param_dtype)
            return dy.clone(), zeros if need_w else None, zeros.clone() if need_b else None, None, None, None, None, None
        cl = be.channels_last(x)
        x3, dy3 = be.channels_view(x, cl), be.channels_view(dy, cl)
        if torch.is_grad_enabled() and ctx.training:   # double backward: the statistics as functions of x
            mean, _, invstd = bn.train_statistics(be, x3, ctx.eps)
        dx, dw, db = be.run(bn.backward, dy3, x3, mean, invstd, _col(weight), ctx.training,
                            weight is not None and need_w, ctx.bias_given and need_b)
        return (be.from_channels(dx, x.shape, cl) if need_x else None,
                dw.reshape(-1).to(ctx.param_dtype) if weight is not None and need_w else None,
                db.reshape(-1).to(ctx.param_dtype) if ctx.bias_given and need_b else None,
                None, None, None, None, None)

    @staticmethod
    def jvp(ctx, tx, tw, tb, *_):
        x, weight, mean, invstd = ctx.saved_tensors
        be = _be()
        cdt = be.compute_dtype(x)
        cl = be.channels_last(x)
        x3 = be.channels_view(x, cl).to(cdt)
        xhat = (x3 - mean.to(cdt)) * invstd.to(cdt)
        ty = torch.zeros_like(xhat)
        if tx is not None and x.numel():
            t3 = be.channels_view(tx, cl).to(cdt)
            if ctx.training:         # d xhat = invstd * (dx - mean(dx) - xhat * mean(dx * xhat))
                t3 = t3 - _means(t3, (0, 2)) - xhat * _means(t3 * xhat, (0, 2))
            ty = t3 * invstd.to(cdt)
            if weight is not None:
                ty = ty * _col(weight).to(cdt)
        if tw is not None:
            ty = ty + xhat * _col(tw).to(cdt)
        if tb is not None:
            ty = ty + _col(tb).to(cdt)
        return be.from_channels(ty, x.shape, cl).to(x.dtype), None, None


def batch_norm(x, *, weight=None, bias=None, running_mean=None, running_var=None, training, momentum=0.1,
               eps=1e-5):
    """Differentiable batch norm with torch's checks and error types; see :func:`bnlib.batch_norm_forward`
    for the maths, shapes and dtypes. Like ``torch.nn.functional.batch_norm`` but with keyword-only
    per-channel arrays and a required ``training``.

    Raises:
        ValueError: one value per channel in training mode; eps <= 0 with batch statistics (< 0 otherwise).
        RuntimeError: a per-channel array whose size is not C; parameters of another dtype than x (or than
            float32 for a half x). NotImplementedError: a non-floating x (torch's types and messages).
    """
    if x.dim() < 2:
        raise ValueError(f"expected at least 2D input (got {x.dim()}D input)")
    check_dtypes(x, weight, bias, running_mean, running_var)
    check_channels(x, running_mean=running_mean, running_var=running_var, weight=weight, bias=bias)
    if training:
        _verify_batch_size(x)
        if eps <= 0:
            raise ck.torch_eps(eps)
    elif running_mean is None or running_var is None:
        raise ValueError("running_mean and running_var are required in eval mode (training=False)")
    elif eps < 0:
        raise ValueError(f"batch_norm eps must be non-negative, but got {eps}")
    return BatchNormFunction.apply(x, weight, bias, running_mean, running_var, bool(training), float(momentum),
                                   float(eps))[0]


# ----------------------------------------------------------------------------- instance norm
class InstanceNormFunction(torch.autograd.Function):
    """``apply(x, weight, bias, running_mean, running_var, use_input_stats, momentum, eps) -> y``: batch
    norm over each (sample, channel) plane (torch's definition), or over running statistics."""

    @staticmethod
    def forward(x, weight, bias, running_mean, running_var, use_input_stats, momentum, eps):
        y, saved = inn.forward(_be(), x, weight, bias, running_mean, running_var, use_input_stats, momentum, eps,
                               "propagate")
        if saved.mean is None:
            empty = x.new_empty((0, 1), dtype=torch.float64 if x.dtype == torch.float64 else torch.float32)
            return y, empty, empty
        return _own(y), saved.mean, saved.invstd

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, weight, bias, _, _, use_input_stats, _, eps = inputs
        _, mean, invstd = output
        ctx.mark_non_differentiable(mean, invstd)
        ctx.save_for_backward(x, weight, mean, invstd)
        ctx.save_for_forward(x, weight, mean, invstd)
        ctx.training, ctx.eps, ctx.bias_given = use_input_stats, eps, bias is not None
        ctx.param_dtype = bn.param_dtype(x, weight, bias)

    @staticmethod
    def backward(ctx, dy, _dmean, _dinvstd):
        x, weight, mean, invstd = ctx.saved_tensors
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        be = _be()
        n, c = x.shape[0], x.shape[1]
        if x.numel() == 0:
            zeros = x.new_zeros(c, dtype=ctx.param_dtype)
            return dy.clone(), zeros if need_w else None, zeros.clone() if need_b else None, None, None, None, None, None
        cl = False                                   # the instance view is contiguous
        if ctx.training:
            x3, dy3, w = inn._instances(be, x), inn._instances(be, dy), inn._repeat(be, weight, n)
            if torch.is_grad_enabled():
                mean, _, invstd = bn.train_statistics(be, x3, ctx.eps)
        else:
            cl = be.channels_last(x)
            x3, dy3, w = be.channels_view(x, cl), be.channels_view(dy, cl), weight
        dx, dw, db = be.run(bn.backward, dy3, x3, mean, invstd, _col(w), ctx.training,
                            weight is not None and need_w, ctx.bias_given and need_b)
        per_c = (lambda v: v.reshape(n, c).sum(0)) if ctx.training else (lambda v: v.reshape(-1))  # noqa: E731
        return (be.from_channels(dx, x.shape, cl) if need_x else None,
                per_c(dw).to(ctx.param_dtype) if weight is not None and need_w else None,
                per_c(db).to(ctx.param_dtype) if ctx.bias_given and need_b else None,
                None, None, None, None, None)

    @staticmethod
    def jvp(ctx, tx, tw, tb, *_):
        x, weight, mean, invstd = ctx.saved_tensors
        be = _be()
        cdt = be.compute_dtype(x)
        n = x.shape[0]
        cl = be.channels_last(x) and not ctx.training
        view = (lambda a: inn._instances(be, a)) if ctx.training else (lambda a: be.channels_view(a, cl))
        x3 = view(x).to(cdt)
        xhat = (x3 - mean.to(cdt)) * invstd.to(cdt)
        w = None if weight is None else _col(inn._repeat(be, weight, n) if ctx.training else weight).to(cdt)
        rep = (lambda v: _col(inn._repeat(be, v, n))) if ctx.training else _col
        ty = torch.zeros_like(xhat)
        if tx is not None and x.numel():
            t3 = view(tx).to(cdt)
            if ctx.training:
                t3 = t3 - _means(t3, (0, 2)) - xhat * _means(t3 * xhat, (0, 2))
            ty = t3 * invstd.to(cdt)
            if w is not None:
                ty = ty * w
        if tw is not None:
            ty = ty + xhat * rep(tw).to(cdt)
        if tb is not None:
            ty = ty + rep(tb).to(cdt)
        return be.from_channels(ty, x.shape, cl).to(x.dtype), None, None


def instance_norm(x, *, weight=None, bias=None, running_mean=None, running_var=None, use_input_stats=True,
                  momentum=0.1, eps=1e-5):
    """Differentiable instance norm with torch's checks (``torch.nn.functional.instance_norm``'s behaviour,
    keyword-only per-channel arrays); maths in :func:`bnlib.instance_norm_forward`.

    Raises:
        ValueError: one spatial element per plane with input statistics.
        RuntimeError: a per-channel array whose size is not C; mixed dtypes (torch's rule).
    """
    check_dtypes(x, weight, bias, running_mean, running_var)
    check_channels(x, running_mean=running_mean, running_var=running_var, weight=weight, bias=bias)
    if use_input_stats:
        l = 1
        for s in x.shape[2:]:
            l *= s
        if l == 1:
            raise ValueError(f"Expected more than 1 spatial element when training, got input size {list(x.shape)}")
    return InstanceNormFunction.apply(x, weight, bias, running_mean, running_var, bool(use_input_stats),
                                      float(momentum), float(eps))[0]


# ----------------------------------------------------------------------------- layer norm, group norm
def _row_backward(ctx, dy, view, axes, param_axes, weight_view):
    x, weight, mean, invstd = ctx.saved_tensors
    need_x, _, need_w, need_b = ctx.needs_input_grad[:4]       # (x, shape or groups, weight, bias, eps)
    be = _be()
    if x.numel() == 0:
        zeros = (torch.zeros_like(weight, dtype=ctx.param_dtype) if weight is not None else
                 x.new_zeros(ctx.param_shape, dtype=ctx.param_dtype))
        return dy.clone(), zeros if need_w else None, zeros.clone() if need_b else None
    xv, dyv = view(x), view(dy)
    if torch.is_grad_enabled():    # double backward: mean and invstd as functions of x
        mean, invstd = _rownorm.statistics(be, xv, axes, ctx.eps)
    w = None if weight is None else weight_view(weight)
    dx, dw, db = be.run(_rownorm.backward, dyv, xv, mean, invstd, w, axes, param_axes,
                        weight is not None and need_w, ctx.bias_given and need_b)
    return (dx.reshape(x.shape) if need_x else None,
            dw.reshape(ctx.param_shape).to(ctx.param_dtype) if weight is not None and need_w else None,
            db.reshape(ctx.param_shape).to(ctx.param_dtype) if ctx.bias_given and need_b else None)


def _row_jvp(ctx, tx, tw, tb, view, axes, weight_view):
    x, weight, mean, invstd = ctx.saved_tensors
    cdt = _be().compute_dtype(x)
    xv = view(x).to(cdt)
    xhat = (xv - mean.to(cdt)) * invstd.to(cdt)
    ty = torch.zeros_like(xhat)
    if tx is not None and x.numel():
        t = view(tx).to(cdt)
        ty = (t - _means(t, axes) - xhat * _means(t * xhat, axes)) * invstd.to(cdt)
        if weight is not None:
            ty = ty * weight_view(weight).to(cdt)
    if tw is not None:
        ty = ty + xhat * weight_view(tw).to(cdt)
    if tb is not None:
        ty = ty + weight_view(tb).to(cdt)
    return ty.reshape(x.shape).to(x.dtype), None, None


def _setup_rows(ctx, x, weight, bias, eps, output, param_shape):
    _, mean, invstd = output
    ctx.mark_non_differentiable(mean, invstd)
    ctx.save_for_backward(x, weight, mean, invstd)
    ctx.save_for_forward(x, weight, mean, invstd)
    ctx.eps, ctx.bias_given = eps, bias is not None
    ctx.param_dtype, ctx.param_shape = bn.param_dtype(x, weight, bias), param_shape


def _empty_stats(x):
    return x.new_empty((0, 1), dtype=torch.float64 if x.dtype == torch.float64 else torch.float32)


class LayerNormFunction(torch.autograd.Function):
    """``apply(x, normalized_shape, weight, bias, eps) -> (y, mean, invstd)`` (Ba et al. 2016)."""

    @staticmethod
    def forward(x, normalized_shape, weight, bias, eps):
        y, saved = ln.forward(_be(), x, normalized_shape, weight, bias, eps, "propagate")
        return (y, _empty_stats(x), _empty_stats(x)) if saved.mean is None else (_own(y), saved.mean, saved.invstd)

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, shape, weight, bias, eps = inputs
        _setup_rows(ctx, x, weight, bias, eps, output, tuple(shape))
        ctx.k = 1
        for s in shape:
            ctx.k *= s

    @staticmethod
    def backward(ctx, dy, _dmean, _dinvstd):
        k = ctx.k
        dx, dw, db = _row_backward(ctx, dy, lambda a: a.reshape(-1, k), (1,), (0,), lambda w: w.reshape(1, k))
        return dx, None, dw, db, None

    @staticmethod
    def jvp(ctx, tx, _tshape, tw, tb, _teps):
        k = ctx.k
        return _row_jvp(ctx, tx, tw, tb, lambda a: a.reshape(-1, k), (1,), lambda w: w.reshape(1, k))


def layer_norm(x, normalized_shape, *, weight=None, bias=None, eps=1e-5):
    """Differentiable layer norm with torch's checks (``torch.nn.functional.layer_norm``'s behaviour,
    keyword-only weight and bias); maths in :func:`bnlib.layer_norm_forward`.

    Raises:
        RuntimeError: x's trailing shape or weight/bias's shape differs from normalized_shape; mixed
            dtypes (torch's rule and messages).
    """
    shape = ln._shape(normalized_shape)
    d = len(shape)
    check_dtypes(x, weight, bias, op="layer_norm")
    if d == 0 or x.dim() < d or tuple(x.shape[x.dim() - d:]) != shape:
        raise ck.torch_layer_norm_shape(shape, x.shape)
    for name, p in (("weight", weight), ("bias", bias)):
        if p is not None and tuple(p.shape) != shape:
            raise RuntimeError(f"Expected {name} to be of same shape as normalized_shape, but got {name} of shape "
                               f"{list(p.shape)} and normalized_shape = {list(shape)}")
    return LayerNormFunction.apply(x, shape, weight, bias, float(eps))[0]


class GroupNormFunction(torch.autograd.Function):
    """``apply(x, num_groups, weight, bias, eps) -> (y, mean, invstd)`` (Wu & He 2018)."""

    @staticmethod
    def forward(x, num_groups, weight, bias, eps):
        y, saved = gn.forward(_be(), x, num_groups, weight, bias, eps, "propagate")
        return (y, _empty_stats(x), _empty_stats(x)) if saved.mean is None else (_own(y), saved.mean, saved.invstd)

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, g, weight, bias, eps = inputs
        _setup_rows(ctx, x, weight, bias, eps, output, (x.shape[1],))
        ctx.g = g

    @staticmethod
    def backward(ctx, dy, _dmean, _dinvstd):
        g, be = ctx.g, _be()
        dx, dw, db = _row_backward(ctx, dy, lambda a: gn._groups(be, a, g), gn.AXES, gn.PARAM_AXES,
                                   lambda w: gn._per_channel(w, g))
        return dx, None, dw, db, None

    @staticmethod
    def jvp(ctx, tx, _tg, tw, tb, _teps):
        g, be = ctx.g, _be()
        return _row_jvp(ctx, tx, tw, tb, lambda a: gn._groups(be, a, g), gn.AXES, lambda w: gn._per_channel(w, g))


def group_norm(x, num_groups, *, weight=None, bias=None, eps=1e-5):
    """Differentiable group norm with torch's checks (``torch.nn.functional.group_norm``'s behaviour,
    keyword-only weight and bias); maths in :func:`bnlib.group_norm_forward`.

    Raises:
        RuntimeError: fewer than 2 dimensions; C not divisible by num_groups; weight/bias not (C,); mixed
            dtypes. ValueError: a single value in all (N * C/G * spatial == 1), as torch.
    """
    if x.dim() < 2:
        raise RuntimeError(f"Expected at least 2 dimensions for input tensor but received {x.dim()}")
    check_dtypes(x, weight, bias, op="group_norm")
    c = x.shape[1]
    l = 1
    for s in x.shape[2:]:
        l *= s
    if x.shape[0] * (c // num_groups) * l == 1:
        raise ValueError(f"Expected more than 1 value per channel when training, got input size "
                         f"{[x.shape[0] * c // num_groups, num_groups, *x.shape[2:]]}")
    for p in (weight, bias):
        if p is not None and p.numel() != c:
            raise ck.torch_group_norm_channels(p.numel(), x.shape)
    if c % num_groups:
        raise ck.torch_group_norm_groups(c, num_groups)
    return GroupNormFunction.apply(x, num_groups, weight, bias, float(eps))[0]
