"""Instance normalization, with or without running statistics, on the batch norm core.

Source: D. Ulyanov, A. Vedaldi, V. Lempitsky, "Instance Normalization: The Missing Ingredient for Fast
Stylization", arXiv:1607.08022, Eq. 2 (statistics per sample and channel over the spatial positions).
Conventions follow ``torch.nn.functional.instance_norm``: each (sample, channel) plane is normalized
with its own biased variance, which is batch norm of x viewed as (1, N*C, L) with the weight and bias
repeated N times. With running statistics, the running mean and the running (unbiased) variance are
updated with the per-instance statistics averaged over the batch, and ``use_input_stats=False`` (a
module in eval mode with ``track_running_stats=True``) normalizes with them like batch norm in eval mode.
"""
from __future__ import annotations

from ._backend import backend_for
from ._checks import (check_channel_vector, check_dy, check_eps, check_features, check_finite, check_nonfinite,
                      check_saved, check_scalar, check_training)
from . import batch_norm as bn
from .saved import Grads, Saved

__all__ = ["instance_norm_forward", "instance_norm_backward"]


def instance_norm_forward(x, *, weight=None, bias=None, running_mean=None, running_var=None,
                          use_input_stats=True, momentum=0.1, eps=1e-5, nonfinite="raise"):
    """Instance normalization forward (Ulyanov et al. 2016, Eq. 2).

    y = (x - mean_nc) / sqrt(var_nc + eps) * weight_c + bias_c with the statistics of each (n, c) plane
    (``use_input_stats=True``), or of the running statistics (``use_input_stats=False``).

    Args:
        x: (N, C, *spatial) with at least one spatial axis; NumPy or torch, floating. N = 0 gives an
            empty output.
        weight, bias: shape (C,), keyword-only, or None.
        running_mean, running_var: shape (C,), keyword-only, or None; updated in place when
            ``use_input_stats`` (with the batch average of the per-instance statistics); required
            otherwise.
        use_input_stats: keyword-only; True (default) normalizes each plane with its own statistics.
        momentum: in [0, 1], default 0.1. eps: > 0 with input statistics, >= 0 otherwise.
        nonfinite: "raise" (default) or "propagate", as :func:`bnlib.batch_norm_forward`.

    Returns:
        (y, saved): y with x's shape and dtype (a contiguous tensor, as torch's); saved for
        :func:`instance_norm_backward`.

    Raises:
        TypeError: non-array or non-floating arguments.
        ShapeError (a ValueError and a RuntimeError): x has fewer than 3 dimensions; a per-channel
            argument is not (C,).
        ValueError: one spatial element per plane with input statistics (torch's message); running
            statistics missing without input statistics or given alone; momentum or eps out of range;
            NaN or Inf with nonfinite="raise".
    """
    be = backend_for(x)
    c, _ = check_features(be, x)
    if x.ndim < 3:
        from ._checks import ShapeError
        raise ShapeError(f"x must have shape (N, C, *spatial) with a spatial axis, got shape {tuple(x.shape)}")
    weight = check_channel_vector(be, "weight", weight, x)
    bias = check_channel_vector(be, "bias", bias, x)
    running_mean = check_channel_vector(be, "running_mean", running_mean, x)
    running_var = check_channel_vector(be, "running_var", running_var, x)
    use_input_stats = check_training(use_input_stats, "use_input_stats")
    momentum = check_scalar("momentum", momentum, 0.0, 1.0)
    eps = check_eps(eps, use_input_stats)
    nonfinite = check_nonfinite(nonfinite)
    if (running_mean is None) != (running_var is None):
        raise ValueError("running_mean and running_var must be given together (or both None)")
    if use_input_stats:
        l = 1
        for s in x.shape[2:]:
            l *= s
        if l == 1:
            raise ValueError(f"Expected more than 1 spatial element when training, got input size {tuple(x.shape)}")
    elif running_mean is None:
        raise ValueError("running_mean and running_var are required when use_input_stats=False")
    return forward(be, x, weight, bias, running_mean, running_var, use_input_stats, momentum, eps, nonfinite)


def _instances(be, a):
    """x (N, C, *spatial) as (1, N*C, L): each (sample, channel) plane is one channel of batch norm."""
    a3 = be.ncl_view(a)
    n, c, l = a3.shape
    return a3.reshape(1, n * c, l) if be.name == "numpy" else a3.contiguous().view(1, n * c, l)


def _repeat(be, v, n):
    return None if v is None else be.concat([v] * n) if n else v[:0]


def forward(be, x, weight, bias, running_mean, running_var, use_input_stats, momentum, eps, nonfinite):
    if not use_input_stats:      # batch norm in eval mode over the (N, C, L) view (contiguous output, as torch)
        x = x.contiguous() if be.name == "torch" else x
        y, saved = bn.forward(be, x, weight, bias, running_mean, running_var, False, momentum, eps, nonfinite,
                              kind="instance_norm")
        return y, _with(saved, instances=False)
    n, c = x.shape[0], x.shape[1]
    pdt = bn.param_dtype(x, weight, bias)
    xi = _instances(be, x)
    with be.computing():
        if xi.shape[1] * xi.shape[2] == 0:
            if running_mean is not None and n == 0:   # torch averages the update over zero instances: NaN
                running_mean[...] = float("nan")
                running_var[...] = float("nan")
            y = be.copy(x)
            if be.name == "torch":
                y = y.contiguous()
            return y, Saved("instance_norm", xi, None, None, weight, bias is not None, True, tuple(x.shape), x.dtype,
                            pdt, {"instances": True})
        w, b = _repeat(be, weight, n), _repeat(be, bias, n)
        y3, mean, var, invstd = be.run(bn.train_forward, xi, bn._col(w), bn._col(b), eps)
        if nonfinite == "raise":
            check_finite(be, "x", var)
        l = xi.shape[2]
        bn.update_running(be, running_mean, running_var, mean.reshape(n, c).mean(0), var.reshape(n, c).mean(0),
                          l, momentum)
    return y3.reshape(x.shape), Saved("instance_norm", xi, mean, invstd, weight, bias is not None, True,
                                      tuple(x.shape), x.dtype, pdt, {"instances": True})


def _with(saved, **extra):
    return Saved(saved.kind, saved.x, saved.mean, saved.invstd, saved.weight, saved.bias_given, saved.training,
                 saved.shape, saved.dtype, saved.param_dtype, {**saved.extra, **extra})


def instance_norm_backward(dy, saved):
    """Backward of :func:`instance_norm_forward`: batch norm's closed form per (sample, channel) plane, the
    parameter gradients summed over the batch.

    Returns:
        :class:`bnlib.Grads` ``(dx, dweight, dbias)`` (dweight/dbias (C,) in the parameters' dtype, or None).

    Raises:
        TypeError: saved is not from instance_norm_forward, or dy is not a floating array.
        ShapeError (a ValueError and a RuntimeError): dy's shape differs from the forward input's.
    """
    saved = check_saved(saved, ("instance_norm",), "instance_norm_backward")
    be = backend_for(dy)
    check_dy(be, dy, saved)
    with be.computing():
        return backward_saved(be, dy, saved)


def backward_saved(be, dy, saved):
    if not saved.extra["instances"]:
        return bn.backward_saved(be, dy, saved)
    n, c = saved.shape[0], saved.shape[1]
    if saved.mean is None:
        zeros = lambda given: be.zeros((c,), saved.param_dtype, dy) if given else None  # noqa: E731
        return Grads(be.copy(dy), zeros(saved.weight is not None), zeros(saved.bias_given))
    dyi = _instances(be, dy)
    dx, dw, db = be.run(bn.backward, dyi, saved.x, saved.mean, saved.invstd, bn._col(_repeat(be, saved.weight, n)),
                        True, saved.weight is not None, saved.bias_given)
    dweight = None if saved.weight is None else be.astype(dw.reshape(n, c).sum(0), saved.param_dtype)
    dbias = be.astype(db.reshape(n, c).sum(0), saved.param_dtype) if saved.bias_given else None
    return Grads(dx.reshape(saved.shape), dweight, dbias)
