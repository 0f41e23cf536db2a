"""Batch normalization: forward and hand-written backward, one implementation for NumPy and PyTorch.

Source: S. Ioffe and C. Szegedy, "Batch Normalization: Accelerating Deep Network Training by Reducing
Internal Covariate Shift", ICML 2015 (arXiv:1502.03167), Algorithm 1 (the transform) and Algorithm 2
(inference with population statistics). Conventions follow PyTorch's ``torch.nn.functional.batch_norm``:

* statistics are taken per channel C over every other axis: m = N for (N, C), m = N*H*W for (N, C, H, W);
* the output is normalized with the *biased* batch variance (divide by m);
* ``running_var`` is updated with the *unbiased* variance (times m / (m - 1));
* ``momentum`` weights the NEW statistic: ``running = (1 - momentum) * running + momentum * batch``;
* ``eps`` is added inside the square root.

Precision: float16 and bfloat16 inputs are normalized in float32; statistics use shifted sums (the
two-pass variance for torch), accumulated in float64 (NumPy) or in float32 (torch, whose CPU reductions
are cascade-summed and CUDA reductions tree-shaped; float64 inputs stay float64), so inputs whose mean
lies far from zero keep their precision.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ._backend import ops_for
from ._checks import check_channel_vector, check_features, check_finite, check_scalar

__all__ = ["BatchNormSaved", "batch_norm_forward", "batch_norm_backward"]


@dataclass(frozen=True)
class BatchNormSaved:
    """What the forward pass keeps for the backward pass: the input itself and two vectors per channel.

    Keeping x (which the caller holds anyway) rather than the normalized xhat saves writing a tensor in
    the forward pass; the backward pass recomputes x - mean on the fly.

    Attributes:
        x: the input in the computation layout: (N, C, L) with L the product of the spatial sizes (1 for
            (N, C)), or (N, H, W, C) for a channels_last torch tensor; x's dtype.
        mean: per-channel mean used to normalize, shape (C,), accumulation dtype (float64 for NumPy,
            float32 for torch unless x is float64): the batch mean in training, ``running_mean`` in eval.
        invstd: 1 / sqrt(var + eps) per channel, shape (C,), accumulation dtype, with var the biased
            batch variance in training mode and ``running_var`` in eval mode.
        weight: gamma, shape (C,), or None when the layer has no scale.
        has_bias: whether a beta was given (then dbias is returned).
        training: whether the batch statistics were used (they depend on x, which changes dx).
        channels_last: whether x is in the (N, H, W, C) layout.
        shape, dtype: the input's shape and dtype, for the shapes and dtypes of the gradients.
    """

    x: Any
    mean: Any
    invstd: Any
    weight: Any
    has_bias: bool
    training: bool
    channels_last: bool
    shape: tuple
    dtype: Any

    def normalized(self):
        """xhat = (x - mean) * invstd with the input's shape, in the accumulation dtype (for checks)."""
        ops = ops_for(self.x)  # a slow, plain broadcast: this is for tests and teaching, not the hot path
        pc = (lambda a: a) if self.channels_last else (lambda a: a[None, :, None])  # x is (N, H, W, C) or (N, C, L)
        xhat = (ops.astype(self.x, self.invstd.dtype) - pc(self.mean)) * pc(self.invstd)
        return _restore(xhat, self.shape, self.channels_last)


def _layout(ops, x, channels_last: bool):
    """A view of x with channels where per-channel reductions are cheap, the axes to reduce, and how a
    per-channel (C,) vector broadcasts against a block of that view."""
    if channels_last:
        return x.permute(0, 2, 3, 1), (0, 1, 2), (lambda a: a)          # (N, H, W, C): C is the fast axis
    xv = x.reshape(x.shape[0], x.shape[1], -1)
    return xv, (0, 2), ops.per_channel(tuple(xv.shape)) or (lambda a: a[None, :, None])


def _restore(y, shape, channels_last: bool):
    return y.permute(0, 3, 1, 2) if channels_last else y.reshape(shape)


def _batch_stats(ops, xv, axes, pc, m, cdt, acc):
    """Per-channel mean and biased variance in one pass over x (per block: the block stays in cache).

    Shifted sums: with K the mean of the first block, mean = K + sum(x - K) / m and
    var = sum((x - K)^2) / m - (sum(x - K) / m)^2. K lies within a few standard deviations of the mean,
    so nothing cancels (for a single block, as with torch, K is the mean: the two-pass formula).
    """
    first = ops.first(xv)
    count = 1
    for ax in axes:
        count *= first.shape[ax]
    shift = ops.astype(ops.sum(first, axes, acc) / count, cdt)
    check_finite(ops, "x", shift)
    shift_c = pc(shift)

    def sums(xb):
        d = xb - ops.fit(shift_c, xb)
        return ops.sum(d, axes, acc), ops.dot(d, d, axes, acc)
    s1, s2 = ops.reduce(sums, (xv,))
    check_finite(ops, "x", s2)
    mu = s1 / m
    return ops.astype(shift, acc) + mu, s2 / m - mu * mu


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
    return _forward(ops, x, weight, bias, running_mean, running_var, training, momentum, eps, m)


def _forward(ops, x, weight, bias, running_mean, running_var, training, momentum, eps, m, adjust=None):
    """batch_norm_forward's computation on validated arguments.

    ``adjust(mean, var) -> (weight, bias)``, if given, replaces the affine parameters once the batch
    statistics are known and before the running statistics are updated (batch renorm's r and d).
    """
    cdt, acc = ops.compute_dtype(x), ops.acc_dtype(x)
    channels_last = ops.channels_last(x)
    xv, axes, pc = _layout(ops, x, channels_last)
    with ops.no_grad():
        if training:
            mean, var = _batch_stats(ops, xv, axes, pc, m, cdt, acc)
            if adjust is not None:
                weight, bias = adjust(mean, var)
            if running_mean is not None:
                running_mean *= 1.0 - momentum
                running_mean += ops.astype(momentum * mean, running_mean.dtype)
                running_var *= 1.0 - momentum
                running_var += ops.astype(momentum * var * (m / (m - 1)), running_var.dtype)
        else:
            check_finite(ops, "x", ops.sum(xv, axes, acc))
            mean, var = ops.astype(running_mean, acc), ops.astype(running_var, acc)
        invstd = 1.0 / ops.sqrt(var + eps)
        scale = invstd if weight is None else invstd * ops.astype(weight, acc)
        mean_c, scale_c = pc(ops.astype(mean, cdt)), pc(ops.astype(scale, cdt))
        bias_c = None if bias is None else pc(ops.astype(bias, cdt))

        def normalize(xb, out):  # y = (x - mean) * (weight * invstd) + bias, one block at a time
            yb = ops.sub(xb, ops.fit(mean_c, xb), out)
            yb *= ops.fit(scale_c, xb)
            if bias_c is not None:
                yb += ops.fit(bias_c, xb)
            return yb
        y = _restore(ops.map(normalize, (xv,), x.dtype, cdt), x.shape, channels_last)
    saved = BatchNormSaved(x=xv, mean=mean, invstd=invstd, weight=weight, has_bias=bias is not None,
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
    m = 1
    for size in saved.shape:
        m *= size
    m //= saved.shape[1]
    acc = saved.invstd.dtype
    cdt = ops.compute_dtype(saved.x)
    dyv, axes, pc = _layout(ops, dy, saved.channels_last)
    mean_c = pc(ops.astype(saved.mean, cdt))
    with ops.no_grad():
        def sums(dyb, xb):  # sum(dy) and sum(dy * (x - mean)) per channel, without materializing xhat
            return ops.sum(dyb, axes, acc), ops.dot(ops.astype(dyb, cdt), xb - ops.fit(mean_c, xb), axes, acc)
        sum_dy, sum_dy_xc = ops.reduce(sums, (dyv, saved.x))
        dbias, dweight = sum_dy, sum_dy_xc * saved.invstd
        scale = saved.invstd if saved.weight is None else saved.invstd * ops.astype(saved.weight, acc)
        scale_c = pc(ops.astype(scale, cdt))
        if saved.training:
            # dx = scale * (dy - sum(dy)/m - (x - mean) * invstd^2 * sum(dy * (x - mean))/m)
            k1 = pc(ops.astype(sum_dy / m, cdt))
            k2 = pc(ops.astype(saved.invstd * saved.invstd * sum_dy_xc / m, cdt))

            def grad(dyb, xb, out):
                t = xb - ops.fit(mean_c, xb)
                t *= ops.fit(k2, xb)
                t += ops.fit(k1, xb)
                dxb = ops.sub(dyb, t, out)
                dxb *= ops.fit(scale_c, xb)
                return dxb
            dx = ops.map(grad, (dyv, saved.x), saved.dtype, cdt)
        else:
            dx = ops.map(lambda dyb, out: ops.mul(dyb, ops.fit(scale_c, dyb), out), (dyv,), saved.dtype, cdt)
        dx = _restore(dx, saved.shape, saved.channels_last)
        dweight = None if saved.weight is None else ops.astype(dweight, saved.dtype)
        dbias = ops.astype(dbias, saved.dtype) if saved.has_bias else None
    return dx, dweight, dbias
