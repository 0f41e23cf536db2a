"""Batch Renormalization (S. Ioffe, "Batch Renormalization: Towards Reducing Minibatch Dependence in
Batch-Normalized Models", NeurIPS 2017, arXiv:1702.03275, Algorithm 1), and ghost batch norm.

Batch renorm corrects the batch statistics toward the running ones during training:

    r = clip(sigma_B / sigma, 1/r_max, r_max),  d = clip((mu_B - mu) / sigma, -d_max, d_max)
    xhat = (x - mu_B) / sigma_B * r + d,  y = gamma * xhat + beta

with sigma_B = sqrt(var_B + eps), sigma = sqrt(running_var + eps), and r, d treated as constants in
backpropagation ("stop_gradient" in the paper). With r = 1, d = 0 it is batch norm; because r and d are
constants, the gradients are batch norm's with weight gamma * r, and dgamma = r * sum(dy * xhat_B) +
d * sum(dy).

Running statistics follow PyTorch's BN convention (exponential average of the mean and of the unbiased
variance, weight ``momentum`` on the new value) rather than the paper's moving standard deviation; sigma is
derived from running_var.

Ghost batch norm (E. Hoffer, I. Hubara, D. Soudry, "Train longer, generalize better", NeurIPS 2017,
arXiv:1705.08741, Algorithm 1) normalizes each "virtual batch" of a large batch with its own statistics.
"""
from __future__ import annotations

from . import batch_norm as bn
from ._backend import Affine, backend_for
from ._checks import (check_channel_vector, check_dy, check_eps, check_features, check_finite, check_nonfinite,
                      check_one_value, check_saved, check_scalar, check_training)
from .saved import Grads, Saved

__all__ = ["batch_renorm_forward", "batch_renorm_backward", "batch_renorm_limits",
           "ghost_batch_norm_forward", "ghost_batch_norm_backward"]


def batch_renorm_limits(step: int, warmup: int = 5000, r_max: float = 3.0, d_max: float = 5.0,
                        r_steps: int = 40000, d_steps: int = 25000) -> tuple[float, float]:
    """(r_max, d_max) at a training step, as in Ioffe (2017), Section 4: r_max = 1 and d_max = 0 (plain
    batch norm) for the first ``warmup`` steps, then relaxed linearly to ``r_max`` at step ``r_steps``
    and ``d_max`` at ``d_steps``.

    Raises:
        ValueError: step < 0, or a ramp that ends before the warmup does.
    """
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    if r_steps <= warmup or d_steps <= warmup:
        raise ValueError("r_steps and d_steps must be larger than warmup")

    def ramp(start, end, until):
        t = min(1.0, max(0.0, (step - warmup) / (until - warmup)))
        return start + t * (end - start)
    return ramp(1.0, r_max, r_steps), ramp(0.0, d_max, d_steps)


def renorm_forward(be, x, weight, bias, running_mean, running_var, r_max, d_max, eps):
    """Algorithm 1 of Ioffe (2017) over x (N, C, L); returns (y, mean, var, invstd, r, d) as (C, 1)."""

    def coefficients(stats, weight, bias, running_mean, running_var):
        n, mean, m2 = stats
        var = m2 / n
        sigma_b = be.sqrt(var + eps)
        sigma = be.sqrt(running_var + eps)
        r = be.clip(sigma_b / sigma, 1.0 / r_max, r_max)
        d = be.clip((mean - running_mean) / sigma, -d_max, d_max)
        gamma_r = r if weight is None else weight * r
        shift = d if weight is None else weight * d
        if bias is not None:
            shift = shift + bias
        # y = gamma * ((x - mu_B) / sigma_B * r + d) + beta
        return (mean, var, 1 / sigma_b, r, d), Affine((mean,), (gamma_r / sigma_b,), shift)

    y, (mean, var, invstd, r, d) = be.per_channel(
        (x,), (weight, bias, running_mean, running_var), coefficients,
        sums=lambda xb, *params: bn.moments(be, xb), combine=bn.merge_moments)
    return y, mean, var, invstd, r, d


def batch_renorm_forward(x, *, weight=None, bias=None, running_mean, running_var, training, r_max=3.0, d_max=5.0,
                         momentum=0.1, eps=1e-5, nonfinite="raise"):
    """Batch renormalization forward pass (Ioffe 2017, Algorithm 1).

    Args:
        x: (N, C) or (N, C, *spatial), NumPy or torch, floating.
        weight, bias: keyword-only gamma and beta, shape (C,), or None (1 and 0).
        running_mean, running_var: keyword-only and required, shape (C,); updated in place in training
            mode (from the batch statistics, after r and d are computed from the old values).
        training: keyword-only and required: True for the renormalized batch statistics, False for plain
            eval-mode batch norm.
        r_max: >= 1, the clip on r; d_max: >= 0, the clip on d (see :func:`batch_renorm_limits`).
        momentum, eps, nonfinite: as in :func:`bnlib.batch_norm_forward`.

    Returns:
        (y, saved): saved for :func:`batch_renorm_backward`, with r and d in ``saved.extra`` as (C,)
        arrays (ones and zeros in eval mode).

    Raises:
        TypeError / ShapeError / ValueError: as :func:`bnlib.batch_norm_forward`; also r_max < 1,
            d_max < 0, or a missing running statistic.
    """
    be = backend_for(x)
    c, m = check_features(be, x)
    weight = check_channel_vector(be, "weight", weight, x)
    bias = check_channel_vector(be, "bias", bias, x)
    running_mean = check_channel_vector(be, "running_mean", running_mean, x, allow_none=False)
    running_var = check_channel_vector(be, "running_var", running_var, x, allow_none=False)
    training = check_training(training)
    r_max = check_scalar("r_max", r_max, 1.0, float("inf"))
    d_max = check_scalar("d_max", d_max, 0.0, float("inf"))
    momentum = check_scalar("momentum", momentum, 0.0, 1.0)
    eps = check_eps(eps, training)
    nonfinite = check_nonfinite(nonfinite)
    if not training or m == 0:
        y, saved = bn.forward(be, x, weight, bias, running_mean, running_var, training, momentum, eps, nonfinite,
                              kind="batch_renorm")
        return y, _renorm_saved(saved, None, None)
    check_one_value(x, m)
    cl = be.channels_last(x)
    x3 = be.channels_view(x, cl)
    col = bn._col
    acc = be.acc_dtype(x)
    with be.computing():
        y3, mean, var, invstd, r, d = be.run(renorm_forward, x3, col(weight), col(bias),
                                             be.astype(col(running_mean), acc), be.astype(col(running_var), acc),
                                             r_max, d_max, eps)
        if nonfinite == "raise":
            check_finite(be, "x", var)
        bn.update_running(be, running_mean, running_var, mean, var, m, momentum)
    saved = Saved("batch_renorm", x3, mean, invstd, weight, bias is not None, True, tuple(x.shape), x.dtype,
                  bn.param_dtype(x, weight, bias), {"channels_last": cl})
    return be.from_channels(y3, x.shape, cl), _renorm_saved(saved, r.reshape(-1), d.reshape(-1))


def _renorm_saved(saved, r, d):
    return Saved("batch_renorm", saved.x, saved.mean, saved.invstd, saved.weight, saved.bias_given, saved.training,
                 saved.shape, saved.dtype, saved.param_dtype, {**saved.extra, "r": r, "d": d})


def batch_renorm_backward(dy, saved):
    """Backward of :func:`batch_renorm_forward`, with r and d constant (Ioffe 2017, Section 3):
    batch norm's gradients with weight gamma * r; dgamma = r * sum(dy * xhat_B) + d * sum(dy).

    Returns:
        :class:`bnlib.Grads` ``(dx, dweight, dbias)`` as :func:`bnlib.batch_norm_backward`.

    Raises:
        TypeError: saved is not from batch_renorm_forward, or dy is not a floating array.
        ShapeError (a ValueError and a RuntimeError): dy's shape differs from the forward input's.
    """
    saved = check_saved(saved, ("batch_renorm",), "batch_renorm_backward")
    be = backend_for(dy)
    check_dy(be, dy, saved)
    r, d = saved.extra["r"], saved.extra["d"]
    with be.computing():
        if r is None:
            return bn.backward_saved(be, dy, saved)
        weight_r = r if saved.weight is None else be.astype(saved.weight, r.dtype) * r
        dx3, dw_b, db = be.run(bn.backward, be.channels_view(dy, saved.extra["channels_last"]), saved.x, saved.mean, saved.invstd,
                               bn._col(weight_r), True, True, True)
        dweight = None
        if saved.weight is not None:   # through gamma * r and gamma * d
            dweight = be.astype(dw_b.reshape(-1) * r + db.reshape(-1) * d, saved.param_dtype)
        dbias = be.astype(db.reshape(-1), saved.param_dtype) if saved.bias_given else None
    return Grads(be.from_channels(dx3, saved.shape, saved.extra["channels_last"]), dweight, dbias)


def ghost_batch_norm_forward(x, *, virtual_batch_size, weight=None, bias=None, running_mean=None, running_var=None,
                             training, momentum=0.1, eps=1e-5, nonfinite="raise"):
    """Ghost batch norm (Hoffer et al. 2017, Algorithm 1): training-mode BN applied to each chunk of
    ``virtual_batch_size`` samples (the last chunk may be smaller), the running statistics updated once
    per chunk; eval mode is plain BN.

    Args:
        x: (N, C) or (N, C, *spatial), floating, NumPy or torch.
        virtual_batch_size: keyword-only int >= 2 (chunk size in training mode).
        weight, bias, running_mean, running_var, training, momentum, eps, nonfinite: keyword-only, as
            :func:`bnlib.batch_norm_forward`.

    Returns:
        (y, saved): y with x's shape and dtype; saved holds the per-chunk states in ``saved.extra["chunks"]``
        for :func:`ghost_batch_norm_backward`.

    Raises:
        ValueError: virtual_batch_size < 2 in training mode, or a chunk with one value per channel;
            otherwise as :func:`bnlib.batch_norm_forward`.
    """
    be = backend_for(x)
    kw = dict(weight=weight, bias=bias, running_mean=running_mean, running_var=running_var, momentum=momentum,
              eps=eps, nonfinite=nonfinite)
    if not check_training(training):
        y, s = bn.batch_norm_forward(x, training=False, **kw)
        chunks = [s]
    else:
        if not isinstance(virtual_batch_size, int) or isinstance(virtual_batch_size, bool) or virtual_batch_size < 2:
            raise ValueError(f"virtual_batch_size must be an int >= 2, got {virtual_batch_size!r}")
        check_features(be, x)
        outs, chunks = [], []
        for start in range(0, max(1, x.shape[0]), virtual_batch_size):
            y, s = bn.batch_norm_forward(x[start:start + virtual_batch_size], training=True, **kw)
            outs.append(y)
            chunks.append(s)
        y = be.concat(outs)
    first = chunks[0]
    return y, Saved("ghost_batch_norm", None, None, None, weight, bias is not None, bool(training), tuple(x.shape),
                    x.dtype, first.param_dtype, {"chunks": chunks})


def ghost_batch_norm_backward(dy, saved):
    """Backward of :func:`ghost_batch_norm_forward`: per-chunk BN backward, parameter gradients summed.

    Returns:
        :class:`bnlib.Grads` ``(dx, dweight, dbias)``.

    Raises:
        TypeError: saved is not from ghost_batch_norm_forward. ShapeError: dy's shape differs.
    """
    saved = check_saved(saved, ("ghost_batch_norm",), "ghost_batch_norm_backward")
    be = backend_for(dy)
    check_dy(be, dy, saved)
    dxs, dw, db, start = [], None, None, 0
    for s in saved.extra["chunks"]:
        dx, w, b = bn.batch_norm_backward(dy[start:start + s.shape[0]], s)
        start += s.shape[0]
        dxs.append(dx)
        dw = w if dw is None else dw + w
        db = b if db is None else db + b
    return Grads(be.concat(dxs), dw, db)
