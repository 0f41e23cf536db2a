"""Layer normalization (J. L. Ba, J. R. Kiros, G. E. Hinton, "Layer Normalization", arXiv:1607.06450,
Section 3, Eq. 4): statistics over the trailing ``normalized_shape`` dimensions of each sample, with an
elementwise weight and bias of that shape, following ``torch.nn.functional.layer_norm``.

It behaves the same in training and at inference and does not depend on the batch size. x is viewed as
(R, K) rows, R the product of the leading dimensions and K of ``normalized_shape``; the formulas are in
:mod:`bnlib._rownorm`.
"""
from __future__ import annotations

import math

from . import _rownorm
from ._backend import backend_for
from ._checks import (ShapeError, check_array, check_dy, check_finite, check_nonfinite, check_saved, check_scalar,
                      check_vector)
from .batch_norm import param_dtype
from .saved import Grads, Saved

__all__ = ["layer_norm_forward", "layer_norm_backward"]


def _shape(normalized_shape) -> tuple:
    if isinstance(normalized_shape, int) and not isinstance(normalized_shape, bool):
        return (normalized_shape,)
    try:
        shape = tuple(int(s) for s in normalized_shape)
    except TypeError:
        raise TypeError(f"normalized_shape must be an int or a sequence of ints, got {normalized_shape!r}") from None
    return shape


def layer_norm_forward(x, normalized_shape, *, weight=None, bias=None, eps=1e-5, nonfinite="raise"):
    """Layer normalization forward (Ba et al. 2016, Eq. 4), as ``torch.nn.functional.layer_norm``.

    Args:
        x: array of shape (*, *normalized_shape), NumPy or torch (any device), floating. Zero rows give an
            empty output.
        normalized_shape: int or sequence of ints: the trailing dimensions to normalize over.
        weight, bias: keyword-only arrays of shape ``normalized_shape`` (elementwise affine), or None.
        eps: added to the variance inside the square root, >= 0. Default 1e-5.
        nonfinite: "raise" (default) or "propagate" NaN/Inf, as :func:`bnlib.batch_norm_forward`.

    Returns:
        (y, saved): y with x's shape and dtype; the :class:`bnlib.Saved` for :func:`layer_norm_backward`.

    Raises:
        TypeError: non-floating dtype, a non-array argument, or a normalized_shape that is not ints.
        ShapeError (a ValueError and a RuntimeError): x's trailing dimensions differ from
            normalized_shape; weight/bias of another shape.
        ValueError: eps < 0; NaN or Inf in x with nonfinite="raise".
    """
    be = backend_for(x)
    check_array(be, "x", x)
    shape = _shape(normalized_shape)
    d = len(shape)
    if d == 0 or x.ndim < d or tuple(x.shape[x.ndim - d:]) != shape:
        raise ShapeError(f"x's trailing dimensions must be normalized_shape {shape}, got shape {tuple(x.shape)}")
    weight = check_vector(be, "weight", weight, x, shape)
    bias = check_vector(be, "bias", bias, x, shape)
    eps = check_scalar("eps", eps, 0.0, float("inf"))
    nonfinite = check_nonfinite(nonfinite)
    return forward(be, x, shape, weight, bias, eps, nonfinite)


def _rows(x, k):
    return x.reshape(-1, k)


def forward(be, x, shape, weight, bias, eps, nonfinite):
    k = math.prod(shape)
    x2 = _rows(x, k)
    pdt = param_dtype(x, weight, bias)
    w = None if weight is None else weight.reshape(1, k)
    b = None if bias is None else bias.reshape(1, k)
    with be.computing():
        if x2.shape[0] * k == 0:
            return be.copy(x), Saved("layer_norm", x2, None, None, weight, bias is not None, True, tuple(x.shape),
                                     x.dtype, pdt, {"normalized_shape": shape})
        y2, mean, invstd = be.run(_forward2, x2, w, b, eps)
        if nonfinite == "raise":
            check_finite(be, "x", invstd)
    return y2.reshape(x.shape), Saved("layer_norm", x2, mean, invstd, weight, bias is not None, True,
                                      tuple(x.shape), x.dtype, pdt, {"normalized_shape": shape})


def _forward2(be, x2, w, b, eps):
    return _rownorm.forward(be, x2, (1,), w, b, eps)


def _backward2(be, dy2, x2, mean, invstd, w, need_weight, need_bias):
    return _rownorm.backward(be, dy2, x2, mean, invstd, w, (1,), (0,), need_weight, need_bias)


def layer_norm_backward(dy, saved):
    """Backward of :func:`layer_norm_forward` (the formulas of :mod:`bnlib._rownorm`).

    Returns:
        :class:`bnlib.Grads` ``(dx, dweight, dbias)``: dx like x; dweight/dbias of shape
        ``normalized_shape`` in the parameters' dtype, or None when absent.

    Raises:
        TypeError: saved is not from layer_norm_forward, or dy is not a floating array.
        ShapeError (a ValueError and a RuntimeError): dy's shape differs from the forward input's.
    """
    saved = check_saved(saved, ("layer_norm",), "layer_norm_backward")
    be = backend_for(dy)
    check_dy(be, dy, saved)
    with be.computing():
        return backward_saved(be, dy, saved)


def backward_saved(be, dy, saved):
    shape = saved.extra["normalized_shape"]
    k = math.prod(shape)
    if saved.mean is None:
        zeros = lambda given: be.zeros(shape, saved.param_dtype, dy) if given else None  # noqa: E731
        return Grads(be.copy(dy), zeros(saved.weight is not None), zeros(saved.bias_given))
    w = None if saved.weight is None else saved.weight.reshape(1, k)
    dx, dw, db = be.run(_backward2, _rows(dy, k), saved.x, saved.mean, saved.invstd, w,
                        saved.weight is not None, saved.bias_given)
    dweight = None if dw is None else be.astype(dw.reshape(shape), saved.param_dtype)
    dbias = None if db is None else be.astype(db.reshape(shape), saved.param_dtype)
    return Grads(dx.reshape(saved.shape), dweight, dbias)
