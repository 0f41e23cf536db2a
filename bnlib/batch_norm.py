"""Batch normalization, NumPy backend: forward and hand-written backward.

Source: S. Ioffe and C. Szegedy, "Batch Normalization: Accelerating Deep Network Training by Reducing
Internal Covariate Shift", ICML 2015 (arXiv:1502.03167), Algorithm 1 (the transform) and Algorithm 2
(inference with population statistics). Conventions follow PyTorch's ``torch.nn.functional.batch_norm``:

* statistics are taken per channel C over every other axis: m = N for (N, C), m = N*H*W for (N, C, H, W);
* the output is normalized with the *biased* batch variance (divide by m);
* ``running_var`` is updated with the *unbiased* variance (times m / (m - 1));
* ``momentum`` weights the NEW statistic: ``running = (1 - momentum) * running + momentum * batch``;
* ``eps`` is added inside the square root.

Float32 and float16 inputs accumulate their statistics in float64 and use the two-pass (shifted)
variance, so inputs whose mean lies far from zero do not lose precision to E[x^2] - E[x]^2 cancellation.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._checks import check_channel_vector, check_features, check_finite, check_scalar

__all__ = ["BatchNormSaved", "batch_norm_forward", "batch_norm_backward"]


@dataclass(frozen=True)
class BatchNormSaved:
    """What the forward pass keeps for the backward pass.

    Attributes:
        xhat: normalized input, shape (N, C, L) with L the product of the spatial sizes (1 for (N, C)),
            dtype of the computation (float32 or float64).
        invstd: 1 / sqrt(var + eps) per channel, shape (C,), float64. ``var`` is the biased batch
            variance in training mode and ``running_var`` in eval mode.
        weight: gamma, shape (C,), or None when the layer has no scale.
        has_bias: whether a beta was given (then dbias is returned).
        training: whether the batch statistics were used (they depend on x, which changes dx).
        shape, dtype: the input's shape and dtype, for the shapes and dtypes of the gradients.
    """

    xhat: np.ndarray
    invstd: np.ndarray
    weight: np.ndarray | None
    has_bias: bool
    training: bool
    shape: tuple
    dtype: np.dtype


def _compute_dtype(dtype) -> type:
    # float16 has too little range and precision for the normalization itself.
    return np.float64 if dtype == np.float64 else np.float32


def batch_norm_forward(x, weight, bias, running_mean, running_var, training, momentum=0.1, eps=1e-5):
    """Batch normalization forward pass (Ioffe & Szegedy 2015, Algorithm 1 and 2).

    y = (x - mean) / sqrt(var + eps) * weight + bias, per channel.

    Args:
        x: input, shape (N, C) or (N, C, *spatial), float16/float32/float64 ``numpy.ndarray``.
        weight: gamma, shape (C,), or None for no scale.
        bias: beta, shape (C,), or None for no shift.
        running_mean: shape (C,), or None. Updated IN PLACE in training mode.
        running_var: shape (C,), or None. Updated IN PLACE in training mode with the unbiased variance.
        training: True normalizes with the batch statistics and updates the running ones; False
            normalizes with ``running_mean`` / ``running_var`` (then required).
        momentum: weight of the new batch statistic in the running averages, in [0, 1]. Default 0.1.
        eps: added to the variance inside the square root, > 0. Default 1e-5.

    Returns:
        (y, saved): y with the shape and dtype of x, and a :class:`BatchNormSaved` for
        :func:`batch_norm_backward`.

    Raises:
        TypeError: an argument is not a numpy.ndarray, or has a non-floating (e.g. integer) dtype.
        ValueError: x has fewer than 2 dimensions or is empty; a per-channel argument is not of shape
            (C,); only one value per channel in training mode; running statistics missing in eval mode;
            momentum or eps out of range; x contains NaN or Inf.

    Shape:
        x, y: (N, C) or (N, C, *spatial); weight, bias, running_mean, running_var: (C,).
    """
    c, m = check_features(x)
    weight = check_channel_vector("weight", weight, c)
    bias = check_channel_vector("bias", bias, c)
    running_mean = check_channel_vector("running_mean", running_mean, c)
    running_var = check_channel_vector("running_var", running_var, c)
    momentum = check_scalar("momentum", momentum, 0.0, 1.0)
    eps = check_scalar("eps", eps, 0.0, np.inf, low_open=True)
    if (running_mean is None) != (running_var is None):
        raise ValueError("running_mean and running_var must be given together (or both None)")

    cdtype = _compute_dtype(x.dtype)
    x3 = x.reshape(x.shape[0], c, -1)  # (N, C, L): one code path for (N, C) and (N, C, *spatial)
    axes = (0, 2)

    if training:
        if m == 1:
            raise ValueError(
                f"Expected more than 1 value per channel when training, got input of shape {x.shape}"
            )
        mean = x3.mean(axis=axes, dtype=np.float64)
        check_finite("x", mean)
        centered = x3.astype(cdtype, copy=True)
        centered -= mean.astype(cdtype)[None, :, None]
        # Two-pass variance of the centered values: no E[x^2] - E[x]^2 cancellation.
        var = np.square(centered).mean(axis=axes, dtype=np.float64)
        check_finite("x", var)
        if running_mean is not None:
            running_mean *= 1.0 - momentum
            running_mean += (momentum * mean).astype(running_mean.dtype)
            running_var *= 1.0 - momentum
            running_var += (momentum * var * (m / (m - 1))).astype(running_var.dtype)
    else:
        if running_mean is None:
            raise ValueError("running_mean and running_var are required in eval mode (training=False)")
        check_finite("x", x3.sum(axis=axes, dtype=np.float64))
        var = running_var.astype(np.float64)
        centered = x3.astype(cdtype, copy=True)
        centered -= running_mean.astype(cdtype)[None, :, None]

    invstd = 1.0 / np.sqrt(var + eps)
    xhat = centered
    xhat *= invstd.astype(cdtype)[None, :, None]
    y = xhat.copy()  # xhat stays saved for the backward pass
    if weight is not None:
        y *= weight.astype(cdtype)[None, :, None]
    if bias is not None:
        y += bias.astype(cdtype)[None, :, None]
    saved = BatchNormSaved(xhat=xhat, invstd=invstd, weight=weight, has_bias=bias is not None,
                           training=bool(training),
                           shape=x.shape, dtype=x.dtype)
    return y.reshape(x.shape).astype(x.dtype, copy=False), saved


def batch_norm_backward(dy, saved: BatchNormSaved):
    """Batch normalization backward pass, simplified closed form.

    With xhat = (x - mean) * invstd and m values per channel (sums run over N and the spatial axes):

        dbias   = sum(dy)
        dweight = sum(dy * xhat)
        dx      = weight * invstd / m * (m * dy - dbias - xhat * dweight)      (training mode)
        dx      = weight * invstd * dy                                        (eval mode)

    The training-mode formula is the chain rule through Algorithm 1 of Ioffe & Szegedy (2015),
    Section 3, with the sums collected; see Module 01 for the derivation.

    Args:
        dy: upstream gradient, same shape as the forward input, floating ``numpy.ndarray``.
        saved: the :class:`BatchNormSaved` returned by :func:`batch_norm_forward`.

    Returns:
        (dx, dweight, dbias): dx with the shape and dtype of x; dweight and dbias of shape (C,) in the
        dtype of x, each None when the forward pass had no weight (resp. no bias).

    Raises:
        TypeError: dy is not a floating numpy.ndarray, or saved is not a BatchNormSaved.
        ValueError: dy's shape differs from the forward input's.
    """
    if not isinstance(saved, BatchNormSaved):
        raise TypeError(f"saved must be the BatchNormSaved from batch_norm_forward, got {type(saved).__name__}")
    check_features(dy)
    if dy.shape != saved.shape:
        raise ValueError(f"dy must have the forward input's shape {saved.shape}, got {dy.shape}")
    xhat = saved.xhat
    n, c, l = xhat.shape
    m = n * l
    dy3 = dy.reshape(n, c, l)
    axes = (0, 2)
    dbias = dy3.sum(axis=axes, dtype=np.float64)
    dweight = np.einsum("ncl,ncl->c", dy3, xhat, dtype=np.float64, casting="unsafe")
    scale = saved.invstd if saved.weight is None else saved.invstd * saved.weight
    cdtype = xhat.dtype
    if saved.training:
        dx = xhat * (-dweight / m).astype(cdtype)[None, :, None]
        dx += dy3
        dx -= (dbias / m).astype(cdtype)[None, :, None]
        dx *= scale.astype(cdtype)[None, :, None]
    else:
        dx = dy3 * scale.astype(cdtype)[None, :, None]
    dx = dx.reshape(saved.shape).astype(saved.dtype, copy=False)
    dweight = None if saved.weight is None else dweight.astype(saved.dtype)
    dbias = dbias.astype(saved.dtype) if saved.has_bias else None
    return dx, dweight, dbias
