"""Layer normalization and group normalization (instance normalization as its G = C case).

Both normalize *within each sample*, so they behave the same in training and at inference and do not
depend on the batch size:

* LayerNorm (J. L. Ba, J. R. Kiros, G. E. Hinton, "Layer Normalization", arXiv:1607.06450, Eq. 4):
  statistics over the trailing ``normalized_shape`` dimensions; elementwise weight and bias of that shape
  (PyTorch's ``torch.nn.functional.layer_norm``).
* GroupNorm (Y. Wu, K. He, "Group Normalization", ECCV 2018, arXiv:1803.08494, Eq. 1-3 and Fig. 2):
  channels split into G groups, statistics per (sample, group) over the group's channels and all spatial
  positions; per-channel weight and bias (``torch.nn.functional.group_norm``).
* InstanceNorm (D. Ulyanov, A. Vedaldi, V. Lempitsky, arXiv:1607.08022): GroupNorm with G = C.

Both reduce to one core: view x as an (R, K) matrix and normalize each row with its biased variance
(two-pass). Backward per row, with K values per row and dxhat = dy * weight:

    dx = invstd / K * (K * dxhat - sum(dxhat) - xhat * sum(dxhat * xhat))
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from ._backend import ops_for
from ._checks import check_array, check_features, check_finite, check_scalar

__all__ = ["NormSaved", "layer_norm_forward", "layer_norm_backward", "group_norm_forward",
           "group_norm_backward", "instance_norm_forward"]


@dataclass(frozen=True)
class NormSaved:
    """What layer_norm_forward / group_norm_forward keep for the backward pass.

    Attributes:
        xhat: normalized input as an (R, K) matrix, compute dtype (float32 or float64).
        invstd: (R,) per-row 1 / sqrt(var + eps), compute dtype.
        weight: the weight (LayerNorm: ``normalized_shape``; GroupNorm: (C,)), or None.
        has_bias: whether a bias was given.
        kind: "layer" or "group"; groups: G for group norm; normalized_shape: LayerNorm's trailing dims.
        shape, dtype: the input's shape and dtype.
    """

    xhat: Any
    invstd: Any
    weight: Any
    has_bias: bool
    kind: str
    groups: int
    normalized_shape: tuple
    shape: tuple
    dtype: Any


def _row_stats(ops, rows, eps, cdt):
    k = rows.shape[1]
    xhat = ops.copy_as(rows, cdt)
    mean = ops.row_sum(xhat) / k
    check_finite(ops, "x", mean)
    xhat -= mean[:, None]
    var = ops.row_dot(xhat, xhat) / k  # two-pass: no E[x^2] - E[x]^2 cancellation
    invstd = 1.0 / ops.sqrt(var + eps)
    xhat *= invstd[:, None]
    return xhat, invstd


def _row_backward(ops, dxhat, xhat, invstd):
    k = xhat.shape[1]
    s1 = ops.row_sum(dxhat)[:, None]
    s2 = ops.row_dot(dxhat, xhat)[:, None]
    dx = dxhat * k
    dx -= s1
    dx -= xhat * s2
    dx *= (invstd / k)[:, None]
    return dx


def _check_affine(ops, name, a, shape, x):
    a = check_array(ops, name, a, allow_none=True)
    if a is not None and tuple(a.shape) != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}, got {tuple(a.shape)}")
    return a


def layer_norm_forward(x, normalized_shape, weight=None, bias=None, eps=1e-5):
    """Layer normalization forward (Ba et al. 2016), following ``torch.nn.functional.layer_norm``.

    Args:
        x: array of shape (*, *normalized_shape), NumPy or torch (any device), floating dtype.
        normalized_shape: int or tuple: the trailing dimensions to normalize over.
        weight, bias: arrays of shape ``normalized_shape`` (elementwise affine), or None.
        eps: added to the variance inside the square root, > 0.

    Returns:
        (y, saved): y with x's shape and dtype; a :class:`NormSaved` for :func:`layer_norm_backward`.

    Raises:
        TypeError: non-floating dtype or a non-array argument.
        ValueError: x's trailing dimensions differ from normalized_shape; weight/bias of another shape;
            eps <= 0; NaN or Inf in x.
    """
    ops = ops_for(x)
    check_array(ops, "x", x)
    normalized_shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
    d = len(normalized_shape)
    if d == 0 or tuple(x.shape[x.ndim - d:]) != normalized_shape or x.ndim < d:
        raise ValueError(f"x's trailing dimensions must be normalized_shape {normalized_shape}, got shape {tuple(x.shape)}")
    weight = _check_affine(ops, "weight", weight, normalized_shape, x)
    bias = _check_affine(ops, "bias", bias, normalized_shape, x)
    eps = check_scalar("eps", eps, 0.0, float("inf"), low_open=True)
    k = math.prod(normalized_shape)
    if k == 0 or math.prod(x.shape) == 0:
        raise ValueError(f"x must not be empty, got shape {tuple(x.shape)}")
    cdt = ops.compute_dtype(x)
    with ops.no_grad():
        xhat, invstd = _row_stats(ops, x.reshape(-1, k), eps, cdt)
        y = ops.copy_as(xhat, cdt) if weight is None else xhat * ops.astype(weight, cdt).reshape(1, k)
        if bias is not None:
            y += ops.astype(bias, cdt).reshape(1, k)
        y = ops.astype(y.reshape(x.shape), x.dtype)
    return y, NormSaved(xhat, invstd, weight, bias is not None, "layer", 0, normalized_shape, tuple(x.shape), x.dtype)


def group_norm_forward(x, num_groups, weight=None, bias=None, eps=1e-5):
    """Group normalization forward (Wu & He 2018), following ``torch.nn.functional.group_norm``.

    Args:
        x: array of shape (N, C, *spatial) with C divisible by ``num_groups``; NumPy or torch.
        num_groups: G, the number of channel groups (G = C is instance norm, G = 1 normalizes over
            all of C and space, like LayerNorm over (C, *spatial) with per-channel affine).
        weight, bias: per-channel arrays of shape (C,), or None.
        eps: added to the variance inside the square root, > 0.

    Returns:
        (y, saved): y with x's shape and dtype; a :class:`NormSaved` for :func:`group_norm_backward`.

    Raises:
        TypeError: non-floating dtype or a non-array argument; num_groups not an int.
        ValueError: ndim < 2; C not divisible by num_groups; weight/bias not (C,); eps <= 0; NaN/Inf.
    """
    ops = ops_for(x)
    c, _ = check_features(ops, x)
    if not isinstance(num_groups, int) or isinstance(num_groups, bool):
        raise TypeError(f"num_groups must be an int, got {type(num_groups).__name__}")
    if num_groups < 1 or c % num_groups:
        raise ValueError(f"num_channels {c} must be divisible by num_groups {num_groups}")
    weight = _check_affine(ops, "weight", weight, (c,), x)
    bias = _check_affine(ops, "bias", bias, (c,), x)
    eps = check_scalar("eps", eps, 0.0, float("inf"), low_open=True)
    n = x.shape[0]
    cdt = ops.compute_dtype(x)
    with ops.no_grad():
        xhat, invstd = _row_stats(ops, x.reshape(n * num_groups, -1), eps, cdt)
        y = xhat.reshape(n, c, -1)
        y = ops.copy_as(y, cdt)
        if weight is not None:
            y *= ops.astype(weight, cdt)[None, :, None]
        if bias is not None:
            y += ops.astype(bias, cdt)[None, :, None]
        y = ops.astype(y.reshape(x.shape), x.dtype)
    return y, NormSaved(xhat, invstd, weight, bias is not None, "group", num_groups, (), tuple(x.shape), x.dtype)


def instance_norm_forward(x, weight=None, bias=None, eps=1e-5):
    """Instance normalization without running statistics (Ulyanov et al. 2016): group norm with G = C.
    Shapes, returns and errors as :func:`group_norm_forward`; backward with :func:`group_norm_backward`."""
    ops = ops_for(x)
    c, _ = check_features(ops, x)
    return group_norm_forward(x, c, weight, bias, eps)


def _backward(dy, saved: NormSaved, kind: str):
    if not isinstance(saved, NormSaved) or saved.kind != kind:
        raise TypeError(f"saved must be the NormSaved from {kind}_norm_forward")
    ops = ops_for(dy)
    check_array(ops, "dy", dy)
    if tuple(dy.shape) != saved.shape:
        raise ValueError(f"dy must have the forward input's shape {saved.shape}, got {tuple(dy.shape)}")
    xhat, invstd, cdt = saved.xhat, saved.invstd, saved.xhat.dtype
    with ops.no_grad():
        dyc = ops.astype(dy, cdt)
        if kind == "layer":
            k = xhat.shape[1]
            dy2 = dyc.reshape(-1, k)
            shape = saved.normalized_shape
            dweight = None if saved.weight is None else ops.astype(ops.col_sum(dy2 * xhat).reshape(shape), saved.dtype)
            dbias = ops.astype(ops.col_sum(dy2).reshape(shape), saved.dtype) if saved.has_bias else None
            dxhat = dy2 if saved.weight is None else dy2 * ops.astype(saved.weight, cdt).reshape(1, k)
        else:
            n, c = saved.shape[0], saved.shape[1]
            dy_rows = dyc.reshape(n * c, -1)                  # one row per (sample, channel)

            def per_channel(rows):                            # (N*C,) row values -> summed over N -> (C,)
                return ops.astype(ops.col_sum(rows.reshape(n, c)), saved.dtype)
            dweight = None if saved.weight is None else per_channel(ops.row_dot(dy_rows, xhat.reshape(n * c, -1)))
            dbias = per_channel(ops.row_sum(dy_rows)) if saved.has_bias else None
            dxhat = dyc.reshape(n, c, -1)
            if saved.weight is not None:
                dxhat = dxhat * ops.astype(saved.weight, cdt)[None, :, None]
            dxhat = dxhat.reshape(xhat.shape)
        dx = _row_backward(ops, dxhat, xhat, invstd)
        dx = ops.astype(dx.reshape(saved.shape), saved.dtype)
    return dx, dweight, dbias


def layer_norm_backward(dy, saved: NormSaved):
    """Backward of :func:`layer_norm_forward`: (dx, dweight, dbias), dweight/dbias None when absent.

    Raises:
        TypeError: saved is not from layer_norm_forward, or dy is not a floating array.
        ValueError: dy's shape differs from the forward input's.
    """
    return _backward(dy, saved, "layer")


def group_norm_backward(dy, saved: NormSaved):
    """Backward of :func:`group_norm_forward` (and instance norm): (dx, dweight, dbias).

    Raises:
        TypeError: saved is not from group_norm_forward, or dy is not a floating array.
        ValueError: dy's shape differs from the forward input's.
    """
    return _backward(dy, saved, "group")
