"""Group normalization (Y. Wu, K. He, "Group Normalization", ECCV 2018, arXiv:1803.08494, Section 3.1,
Eq. 1-3 and Fig. 2), following ``torch.nn.functional.group_norm``: the C channels are split into G groups
of C/G consecutive channels; statistics per (sample, group) over the group's channels and all spatial
positions; per-channel weight and bias. G = C is instance normalization without running statistics,
G = 1 normalizes over all of C and space (LayerNorm over (C, *spatial) with a per-channel affine).

x is viewed as (N, G, C/G, L) (a view for contiguous and channels_last tensors alike, so the output keeps
x's memory format); the formulas are in :mod:`bnlib._rownorm`.
"""
from __future__ import annotations

from . import _rownorm
from ._backend import backend_for
from ._checks import (ShapeError, check_channel_vector, check_dy, check_features, check_finite, check_nonfinite,
                      check_saved, check_scalar)
from .batch_norm import param_dtype
from .saved import Grads, Saved

__all__ = ["group_norm_forward", "group_norm_backward"]

AXES, PARAM_AXES = (2, 3), (0, 3)


def group_norm_forward(x, num_groups, *, weight=None, bias=None, eps=1e-5, nonfinite="raise"):
    """Group normalization forward (Wu & He 2018, Eq. 1-3), as ``torch.nn.functional.group_norm``.

    Args:
        x: array of shape (N, C, *spatial) with C divisible by ``num_groups``; NumPy or torch, floating.
            N = 0 gives an empty output.
        num_groups: G, the number of groups of consecutive channels.
        weight, bias: keyword-only per-channel arrays of shape (C,), or None.
        eps: added to the variance inside the square root, >= 0. Default 1e-5.
        nonfinite: "raise" (default) or "propagate" NaN/Inf, as :func:`bnlib.batch_norm_forward`.

    Returns:
        (y, saved): y with x's shape, dtype and (torch) memory format; the :class:`bnlib.Saved` for
        :func:`group_norm_backward`.

    Raises:
        TypeError: non-floating dtype or a non-array argument; num_groups not an int.
        ShapeError (a ValueError and a RuntimeError): ndim < 2; C not divisible by num_groups;
            weight/bias not (C,).
        ValueError: num_groups < 1; a single value in all (N * C/G * spatial == 1, torch's condition);
            eps < 0; NaN or Inf with nonfinite="raise".
    """
    be = backend_for(x)
    c, m = check_features(be, x)
    if not isinstance(num_groups, int) or isinstance(num_groups, bool):
        raise TypeError(f"num_groups must be an int, got {type(num_groups).__name__}")
    if num_groups < 1:
        raise ValueError(f"num_groups must be >= 1, got {num_groups}")
    if c % num_groups:
        raise ShapeError(f"num_channels {c} must be divisible by num_groups {num_groups}")
    weight = check_channel_vector(be, "weight", weight, x)
    bias = check_channel_vector(be, "bias", bias, x)
    eps = check_scalar("eps", eps, 0.0, float("inf"))
    nonfinite = check_nonfinite(nonfinite)
    if x.shape[0] * (c // num_groups) * (m // max(1, x.shape[0])) == 1:   # torch's _verify_batch_size
        raise ValueError(f"Expected more than 1 value per channel when training, got input size "
                         f"{[x.shape[0] * c // num_groups, num_groups, *x.shape[2:]]}")
    return forward(be, x, num_groups, weight, bias, eps, nonfinite)


def _groups(be, a, g):
    a3 = be.ncl_view(a)
    n, c, l = a3.shape
    return a3.reshape(n, g, c // g, l)


def _per_channel(v, g):
    return None if v is None else v.reshape(1, g, -1, 1)


def forward(be, x, g, weight, bias, eps, nonfinite):
    xg = _groups(be, x, g)
    pdt = param_dtype(x, weight, bias)
    with be.computing():
        if xg.shape[0] * xg.shape[1] * xg.shape[2] * xg.shape[3] == 0:
            return be.copy(x), Saved("group_norm", xg, None, None, weight, bias is not None, True, tuple(x.shape),
                                     x.dtype, pdt, {"groups": g})
        yg, mean, invstd = be.run(_forward4, xg, _per_channel(weight, g), _per_channel(bias, g), eps)
        if nonfinite == "raise":
            check_finite(be, "x", invstd)
    return yg.reshape(x.shape), Saved("group_norm", xg, mean, invstd, weight, bias is not None, True, tuple(x.shape),
                                      x.dtype, pdt, {"groups": g})


def _forward4(be, xg, w, b, eps):
    return _rownorm.forward(be, xg, AXES, w, b, eps)


def _backward4(be, dyg, xg, mean, invstd, w, need_weight, need_bias):
    return _rownorm.backward(be, dyg, xg, mean, invstd, w, AXES, PARAM_AXES, need_weight, need_bias)


def group_norm_backward(dy, saved):
    """Backward of :func:`group_norm_forward` (the formulas of :mod:`bnlib._rownorm`).

    Returns:
        :class:`bnlib.Grads` ``(dx, dweight, dbias)``: dx like x; dweight/dbias (C,) in the parameters'
        dtype, or None when absent.

    Raises:
        TypeError: saved is not from group_norm_forward, or dy is not a floating array.
        ShapeError (a ValueError and a RuntimeError): dy's shape differs from the forward input's.
    """
    saved = check_saved(saved, ("group_norm",), "group_norm_backward")
    be = backend_for(dy)
    check_dy(be, dy, saved)
    with be.computing():
        return backward_saved(be, dy, saved)


def backward_saved(be, dy, saved):
    c, g = saved.shape[1], saved.extra["groups"]
    if saved.mean is None:
        zeros = lambda given: be.zeros((c,), saved.param_dtype, dy) if given else None  # noqa: E731
        return Grads(be.copy(dy), zeros(saved.weight is not None), zeros(saved.bias_given))
    dx, dw, db = be.run(_backward4, _groups(be, dy, g), saved.x, saved.mean, saved.invstd,
                        _per_channel(saved.weight, g), saved.weight is not None, saved.bias_given)
    dweight = None if dw is None else be.astype(dw.reshape(c), saved.param_dtype)
    dbias = None if db is None else be.astype(db.reshape(c), saved.param_dtype)
    return Grads(dx.reshape(saved.shape), dweight, dbias)
