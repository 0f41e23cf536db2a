"""Batch normalization: forward and hand-written backward, one implementation for NumPy and PyTorch.

Source: S. Ioffe and C. Szegedy, "Batch Normalization: Accelerating Deep Network Training by Reducing
Internal Covariate Shift", ICML 2015 (arXiv:1502.03167), Algorithm 1 (the transform) and Algorithm 2
(inference with population statistics). Conventions follow PyTorch's ``torch.nn.functional.batch_norm``:

* statistics are taken per channel C over every other axis: m = N for (N, C), m = N*H*W for (N, C, H, W);
* the output is normalized with the *biased* batch variance (divide by m);
* ``running_var`` is updated with the *unbiased* variance (times m / (m - 1));
* ``momentum`` weights the NEW statistic: ``running = (1 - momentum) * running + momentum * batch``;
* ``eps`` is added inside the square root.

Precision: float16 and bfloat16 inputs are normalized in float32; statistics use the two-pass (shifted)
variance, accumulated in float64 (NumPy, torch on the CPU) or float32 (torch on CUDA, whose reductions
are tree-shaped), so inputs whose mean lies far from zero keep their precision.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

from ._backend import ops_for
from ._checks import check_channel_vector, check_features, check_finite, check_scalar

__all__ = ["BatchNormSaved", "batch_norm_forward", "batch_norm_backward"]


@dataclass(frozen=True)
class BatchNormSaved:
    """What the forward pass keeps for the backward pass.

    Attributes:
        xhat: normalized input in the computation layout: (N, C, L) with L the product of the spatial
            sizes (1 for (N, C)), or (N, H, W, C) for a channels_last torch tensor; float32 or float64.
        invstd: 1 / sqrt(var + eps) per channel, shape (C,), in the accumulation dtype. ``var`` is the
            biased batch variance in training mode and ``running_var`` in eval mode.
        weight: gamma, shape (C,), or None when the layer has no scale.
        has_bias: whether a beta was given (then dbias is returned).
        training: whether the batch statistics were used (they depend on x, which changes dx).
        channels_last: whether xhat is in the (N, H, W, C) layout.
        shape, dtype: the input's shape and dtype, for the shapes and dtypes of the gradients.
    """

    xhat: Any
    invstd: Any
    weight: Any
    has_bias: bool
    training: bool
    channels_last: bool
    shape: tuple
    dtype: Any


def _layout(ops, x, channels_last: bool):
    """A view of x with channels where per-channel reductions are cheap, and the axes to reduce."""
    if channels_last:
        return x.permute(0, 2, 3, 1), (0, 1, 2), (lambda a: a)          # (N, H, W, C): C is the fast axis
    return x.reshape(x.shape[0], x.shape[1], -1), (0, 2), (lambda a: a[None, :, None])


def _restore(y, shape, channels_last: bool):
    return y.permute(0, 3, 1, 2) if channels_last else y.reshape(shape)


def _no_grad(ops):
    return ops.torch.no_grad() if ops.name == "torch" else contextlib.nullcontext()


def batch_norm_forward(x, weight, bias, running_mean, running_var, training, momentum=0.1, eps=1e-5):
    """Batch normalization forward pass (Ioffe & Szegedy 2015, Algorithm 1 and 2).

    y = (x - mean) / sqrt(var + eps) * weight + bias, per channel.

    Args:
        x: input, shape (N, C) or (N, C, *spatial); a ``numpy.ndarray`` (float16/32/64) or a
            ``torch.Tensor`` on any device (float16/bfloat16/float32/float64). Every other array argument
            must be of the same kind and on the same device.
        weight: gamma, shape (C,), or None for no scale.
        bias: beta, shape (C,), or None for no shift.
        running_mean: shape (C,), or None. Updated IN PLACE in training mode.
        running_var: shape (C,), or None. Updated IN PLACE in training mode with the unbiased variance.
        training: True normalizes with the batch statistics and updates the running ones; False
            normalizes with ``running_mean`` / ``running_var`` (then required).
        momentum: weight of the new batch statistic in the running averages, in [0, 1]. Default 0.1.
        eps: added to the variance inside the square root, > 0. Default 1e-5.

    Returns:
        (y, saved): y with the shape, dtype and (torch) memory format of x, and a :class:`BatchNormSaved`
        for :func:`batch_norm_backward`. No autograd graph is recorded (see ``bnlib.nn`` for modules).

    Raises:
        TypeError: an argument is not an array of x's kind, or has a non-floating (e.g. integer) dtype.
        ValueError: x has fewer than 2 dimensions or is empty; a per-channel argument is not of shape
            (C,) or not on x's device; only one value per channel in training mode; running statistics
            missing in eval mode; momentum or eps out of range; x contains NaN or Inf.

    Shape:
        x, y: (N, C) or (N, C, *spatial); weight, bias, running_mean, running_var: (C,).
    """
    ops = ops_for(x)
    c, m = check_features(ops, x)
    weight = check_channel_vector(ops, "weight", weight, x)
    bias = check_channel_vector(ops, "bias", bias, x)
    running_mean = check_channel_vector(ops, "running_mean", running_mean, x)
    running_var = check_channel_vector(ops, "running_var", running_var, x)
    momentum = check_scalar("momentum", momentum, 0.0, 1.0)
    eps = check_scalar("eps", eps, 0.0, float("inf"), low_open=True)
    if (running_mean is None) != (running_var is None):
        raise ValueError("running_mean and running_var must be given together (or both None)")
    if training and m == 1:
        raise ValueError(f"Expected more than 1 value per channel when training, got input of shape {tuple(x.shape)}")
    if not training and running_mean is None:
        raise ValueError("running_mean and running_var are required in eval mode (training=False)")

    cdt, acc = ops.compute_dtype(x), ops.acc_dtype(x)
    channels_last = ops.channels_last(x)
    xv, axes, per_channel = _layout(ops, x, channels_last)
    with _no_grad(ops):
        if training:
            mean = ops.sum(xv, axes, acc) / m
            check_finite(ops, "x", mean)
            centered = ops.copy_as(xv, cdt)
            centered -= per_channel(ops.astype(mean, cdt))
            var = ops.dot(centered, centered, axes, acc) / m   # two-pass: no E[x^2] - E[x]^2 cancellation
            check_finite(ops, "x", var)
            if running_mean is not None:
                running_mean *= 1.0 - momentum
                running_mean += ops.astype(momentum * mean, running_mean.dtype)
                running_var *= 1.0 - momentum
                running_var += ops.astype(momentum * var * (m / (m - 1)), running_var.dtype)
        else:
            check_finite(ops, "x", ops.sum(xv, axes, acc))
            var = ops.astype(running_var, acc)
            centered = ops.copy_as(xv, cdt)
            centered -= per_channel(ops.astype(running_mean, cdt))
        invstd = 1.0 / ops.sqrt(var + eps)
        xhat = centered
        xhat *= per_channel(ops.astype(invstd, cdt))
        y = xhat * per_channel(ops.astype(weight, cdt)) if weight is not None else ops.copy_as(xhat, cdt)
        if bias is not None:
            y += per_channel(ops.astype(bias, cdt))
        y = ops.astype(_restore(y, x.shape, channels_last), x.dtype)
    saved = BatchNormSaved(xhat=xhat, invstd=invstd, weight=weight, has_bias=bias is not None,
                           training=bool(training), channels_last=channels_last, shape=tuple(x.shape),
                           dtype=x.dtype)
    return y, saved


def batch_norm_backward(dy, saved: BatchNormSaved):
    """Batch normalization backward pass, simplified closed form.

    With xhat = (x - mean) * invstd and m values per channel (sums run over N and the spatial axes):

        dbias   = sum(dy)
        dweight = sum(dy * xhat)
        dx      = weight * invstd / m * (m * dy - dbias - xhat * dweight)      (training mode)
        dx      = weight * invstd * dy                                        (eval mode)

    The training-mode formula is the chain rule through Algorithm 1 of Ioffe & Szegedy (2015),
    Section 3, with the sums collected; Module 01 derives it.

    Args:
        dy: upstream gradient, same shape as the forward input, floating array of the same kind.
        saved: the :class:`BatchNormSaved` returned by :func:`batch_norm_forward`.

    Returns:
        (dx, dweight, dbias): dx with the shape and dtype of x; dweight and dbias of shape (C,) in the
        dtype of x, each None when the forward pass had no weight (resp. no bias).

    Raises:
        TypeError: dy is not a floating array of x's kind, or saved is not a BatchNormSaved.
        ValueError: dy's shape differs from the forward input's.
    """
    if not isinstance(saved, BatchNormSaved):
        raise TypeError(f"saved must be the BatchNormSaved from batch_norm_forward, got {type(saved).__name__}")
    ops = ops_for(dy)
    check_features(ops, dy)
    if tuple(dy.shape) != saved.shape:
        raise ValueError(f"dy must have the forward input's shape {saved.shape}, got {tuple(dy.shape)}")
    xhat = saved.xhat
    m = 1
    for s in saved.shape:
        m *= s
    m //= saved.shape[1]
    cdt, acc = xhat.dtype, saved.invstd.dtype
    dyv, axes, per_channel = _layout(ops, dy, saved.channels_last)
    with _no_grad(ops):
        dbias = ops.sum(dyv, axes, acc)
        dweight = ops.dot(ops.astype(dyv, cdt), xhat, axes, acc)
        scale = saved.invstd if saved.weight is None else saved.invstd * ops.astype(saved.weight, acc)
        if saved.training:
            dx = xhat * per_channel(ops.astype(-dweight / m, cdt))
            dx += dyv
            dx -= per_channel(ops.astype(dbias / m, cdt))
            dx *= per_channel(ops.astype(scale, cdt))
        else:
            dx = ops.astype(dyv, cdt) * per_channel(ops.astype(scale, cdt))
        dx = ops.astype(_restore(dx, saved.shape, saved.channels_last), saved.dtype)
        dweight = None if saved.weight is None else ops.astype(dweight, saved.dtype)
        dbias = ops.astype(dbias, saved.dtype) if saved.has_bias else None
    return dx, dweight, dbias
