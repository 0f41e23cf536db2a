"""Batch normalization: forward and hand-written backward, one implementation for NumPy and PyTorch.

Source: S. Ioffe and C. Szegedy, "Batch Normalization: Accelerating Deep Network Training by Reducing
Internal Covariate Shift", ICML 2015 (arXiv:1502.03167): Algorithm 1 (the transform, Section 3),
Algorithm 2 (inference with population statistics, Section 3.1) and the gradients of Section 3.
Conventions follow PyTorch's ``torch.nn.functional.batch_norm``:

* statistics are taken per channel C over every other axis: m = N for (N, C), m = N*H*W for (N, C, H, W);
* the output is normalized with the *biased* batch variance (divide by m);
* ``running_var`` is updated with the *unbiased* variance (times m / (m - 1));
* ``momentum`` weights the NEW statistic: ``running = (1 - momentum) * running + momentum * batch``;
* ``eps`` is added inside the square root.

The maths below is written once over x viewed as (samples, C, positions) (N, C, L) with L the product of
the spatial sizes, or (N * L, C, 1) for a channels_last tensor) with per-channel (C, 1) columns;
:meth:`bnlib._backend.Backend.per_channel` hides the cache blocking and threads (NumPy) or the fusion
(torch.compile). Statistics use the corrected two-pass algorithm within each block, and blocks are merged
with the pairwise update of Chan, Golub and LeVeque (1979), so a mean far from zero keeps its precision.
float16 and bfloat16 inputs are computed in float32.
"""
from __future__ import annotations

from ._backend import Affine, backend_for
from ._checks import (check_channel_vector, check_dy, check_eps, check_features, check_finite,
                      check_nonfinite, check_one_value, check_saved, check_scalar, check_training)
from .saved import Grads, Saved

__all__ = ["batch_norm_forward", "batch_norm_backward"]


# ----------------------------------------------------------------------------- the maths
def moments(be, xb):
    """Count, mean and centred sum of squares of each channel of a block (the corrected two-pass
    algorithm, see :meth:`bnlib._backend.Backend.channel_moments`)."""
    return be.channel_moments(xb)


def merge_moments(p, q):
    """The moments of two blocks together (Chan, Golub & LeVeque 1979, the pairwise update)."""
    na, mean_a, m2_a = p
    nb, mean_b, m2_b = q
    n = na + nb
    delta = mean_b - mean_a
    return n, mean_a + delta * (nb / n), m2_a + m2_b + delta * delta * (na * nb / n)


def train_forward(be, x, weight, bias, eps):
    """Algorithm 1: normalize x (N, C, L) with its batch statistics; weight, bias: (C, 1) or None.
    Returns (y, mean, var, invstd), the statistics as (C, 1) columns."""

    def coefficients(stats, weight, bias):
        n, mean, m2 = stats
        var = m2 / n                                        # biased batch variance sigma_B^2
        invstd = 1 / be.sqrt(var + eps)
        scale = invstd if weight is None else invstd * weight
        # y = gamma * (x - mu_B) / sqrt(sigma_B^2 + eps) + beta
        return (mean, var, invstd), Affine((mean,), (scale,), bias)

    y, (mean, var, invstd) = be.per_channel((x,), (weight, bias), coefficients,
                                            sums=lambda xb, w, b: moments(be, xb), combine=merge_moments)
    return y, mean, var, invstd


def train_statistics(be, x, eps):
    """(mean, var, invstd) of Algorithm 1 without the output (differentiable in torch: double backward)."""
    def coefficients(stats):
        n, mean, m2 = stats
        var = m2 / n
        return (mean, var, 1 / be.sqrt(var + eps)), None
    _, stats = be.per_channel((x,), (), coefficients, sums=lambda xb: moments(be, xb), combine=merge_moments)
    return stats


def eval_forward(be, x, mean, var, weight, bias, eps):
    """Algorithm 2: normalize with the population (running) statistics. Returns (y, invstd)."""

    def coefficients(_, mean, var, weight, bias):
        invstd = 1 / be.sqrt(var + eps)
        scale = invstd if weight is None else invstd * weight
        return (invstd,), Affine((mean,), (scale,), bias)      # y = gamma * (x - mu) / sqrt(var + eps) + beta

    y, (invstd,) = be.per_channel((x,), (mean, var, weight, bias), coefficients)
    return y, invstd


def backward(be, dy, x, mean, invstd, weight, training, need_weight=True, need_bias=True):
    """The gradients of Section 3 with the sums collected, over (N, C, L) views. Returns
    (dx, dweight, dbias) with dweight = sum(dy * xhat) and dbias = sum(dy) as (C, 1) columns.

        dx = gamma / sigma * (dy - mean(dy) - xhat * mean(dy * xhat))     (training: mu_B, sigma_B depend on x)
        dx = gamma / sigma * dy                                           (eval: constant statistics)
    """
    m = x.shape[0] * x.shape[2]

    def sums(dyb, xb, mean, invstd, weight):                # sum(dy) and sum(dy * (x - mu)) per channel
        return be.channel_sum(dyb), be.channel_dot(dyb, xb, mean)

    def coefficients(s, mean, invstd, weight):
        scale = invstd if weight is None else invstd * weight         # gamma / sigma
        if s is None:
            return (None, None), Affine((None, None), (scale, None))
        dbias, dweight = s[0], s[1] * invstd                         # sum(dy), sum(dy * xhat)
        if not training:
            return (dweight, dbias), Affine((None, None), (scale, None))
        mean_dy, k = dbias / m, dweight * invstd / m                # mean(dy), mean(dy * xhat) / sigma
        # dx = gamma / sigma * (dy - mean(dy) - (x - mu) * mean(dy * xhat) / sigma)
        return (dweight, dbias), Affine((None, mean), (scale, -scale * k), -scale * mean_dy)

    need_sums = training or need_weight or need_bias
    dx, (dweight, dbias) = be.per_channel((dy, x), (mean, invstd, weight), coefficients,
                                          sums=sums if need_sums else None, out_dtype=dy.dtype)
    return dx, dweight, dbias


# ----------------------------------------------------------------------------- the public pair
def _col(v):
    return None if v is None else v.reshape(-1, 1)


def param_dtype(x, *params):
    """Gradients of parameters come back in the parameters' dtype (torch's mixed-precision rule)."""
    return next((p.dtype for p in params if p is not None), x.dtype)


def batch_norm_forward(x, *, weight=None, bias=None, running_mean=None, running_var=None, training,
                       momentum=0.1, eps=1e-5, nonfinite="raise"):
    """Batch normalization forward pass (Ioffe & Szegedy 2015, Algorithms 1 and 2).

    y = (x - mean) / sqrt(var + eps) * weight + bias, per channel.

    Args:
        x: input, shape (N, C) or (N, C, *spatial); a ``numpy.ndarray`` (float16/32/64) or a
            ``torch.Tensor`` on any device (float16/bfloat16/float32/float64). N = 0 gives an empty output
            and leaves the running statistics alone.
        weight: gamma, shape (C,), keyword-only, or None for no scale. May be float32 for a half input.
        bias: beta, shape (C,), keyword-only, or None for no shift.
        running_mean, running_var: shape (C,), keyword-only, or None. Updated IN PLACE in training mode
            (running_var with the unbiased variance); required in eval mode.
        training: keyword-only and required: True normalizes with the batch statistics and updates the
            running ones; False normalizes with ``running_mean`` / ``running_var``.
        momentum: weight of the new batch statistic in the running averages, in [0, 1]. Default 0.1.
        eps: added to the variance inside the square root; > 0 in training, >= 0 in eval. Default 1e-5.
        nonfinite: "raise" (default) raises ValueError when x holds NaN or Inf; "propagate" lets them
            through to the affected channels as torch does (the ``bnlib.nn`` modules use it).

    Returns:
        (y, saved): y with the shape, dtype and (torch) memory format of x, and the :class:`bnlib.Saved`
        for :func:`batch_norm_backward`. No autograd graph is recorded (see ``bnlib.nn`` for modules).

    Raises:
        TypeError: an argument is not an array of x's kind, has a non-floating dtype, or training is not
            a bool (or is missing).
        ShapeError (a ValueError and a RuntimeError): x has fewer than 2 dimensions; a per-channel argument
            is not of shape (C,).
        ValueError: a per-channel argument is not on x's device; only one value per channel in training
            mode; running statistics missing in eval mode or given alone; momentum or eps out of range;
            NaN or Inf in x with nonfinite="raise".

    Shape:
        x, y: (N, C) or (N, C, *spatial); weight, bias, running_mean, running_var: (C,).
    """
    be = backend_for(x)
    c, m = check_features(be, x)
    weight = check_channel_vector(be, "weight", weight, x)
    bias = check_channel_vector(be, "bias", bias, x)
    running_mean = check_channel_vector(be, "running_mean", running_mean, x)
    running_var = check_channel_vector(be, "running_var", running_var, x)
    training = check_training(training)
    momentum = check_scalar("momentum", momentum, 0.0, 1.0)
    eps = check_eps(eps, training)
    nonfinite = check_nonfinite(nonfinite)
    if (running_mean is None) != (running_var is None):
        raise ValueError("running_mean and running_var must be given together (or both None)")
    if training:
        check_one_value(x, m)
    elif running_mean is None:
        raise ValueError("running_mean and running_var are required in eval mode (training=False)")
    return forward(be, x, weight, bias, running_mean, running_var, training, momentum, eps, nonfinite)


def update_running(be, running_mean, running_var, mean, var, m, momentum):
    """running = (1 - momentum) * running + momentum * batch, in place, with the unbiased variance."""
    if running_mean is None:
        return
    running_mean *= 1.0 - momentum
    running_mean += be.astype(momentum * mean.reshape(-1), running_mean.dtype)
    running_var *= 1.0 - momentum
    running_var += be.astype(momentum * var.reshape(-1) * (m / (m - 1)), running_var.dtype)


def forward(be, x, weight, bias, running_mean, running_var, training, momentum, eps, nonfinite, kind="batch_norm"):
    """batch_norm_forward on validated arguments."""
    cl = be.channels_last(x)
    x3 = be.channels_view(x, cl)
    m = x3.shape[0] * x3.shape[2]
    pdt = param_dtype(x, weight, bias)
    with be.computing():
        if x3.shape[0] * x3.shape[1] * x3.shape[2] == 0:       # empty batch: empty output, statistics kept
            y = be.copy(x)
            return y, Saved(kind, x3, None, None, weight, bias is not None, training, tuple(x.shape), x.dtype, pdt,
                            {"channels_last": cl})
        if training:
            y3, mean, var, invstd = be.run(train_forward, x3, _col(weight), _col(bias), eps)
            if nonfinite == "raise":
                check_finite(be, "x", var)
            update_running(be, running_mean, running_var, mean, var, m, momentum)
        else:
            if nonfinite == "raise":
                check_finite(be, "x", be.channel_sum(x3))
            acc = be.acc_dtype(x)
            mean = be.astype(_col(running_mean), acc)
            y3, invstd = be.run(eval_forward, x3, mean, be.astype(_col(running_var), acc), _col(weight), _col(bias), eps)
    y = be.from_channels(y3, x.shape, cl)
    return y, Saved(kind, x3, mean, invstd, weight, bias is not None, training, tuple(x.shape), x.dtype, pdt,
                    {"channels_last": cl})


def batch_norm_backward(dy, saved):
    """Batch normalization backward pass, the closed form of Ioffe & Szegedy (2015), Section 3.

    With xhat = (x - mean) * invstd and m values per channel (sums over N and the spatial axes):

        dbias   = sum(dy)
        dweight = sum(dy * xhat)
        dx      = weight * invstd / m * (m * dy - dbias - xhat * dweight)      (training mode)
        dx      = weight * invstd * dy                                        (eval mode)

    Module 01 derives it from the chain rule through Algorithm 1.

    Args:
        dy: upstream gradient, the forward input's shape, a floating array of the same kind.
        saved: the :class:`bnlib.Saved` returned by :func:`batch_norm_forward`.

    Returns:
        :class:`bnlib.Grads` ``(dx, dweight, dbias)``: dx with the shape and dtype of x; dweight and dbias
        of shape (C,) in the parameters' dtype, each None when the forward pass had no weight (resp. bias).
        An empty input gives an empty dx and zero parameter gradients.

    Raises:
        TypeError: dy is not a floating array of x's kind, or saved is not from batch_norm_forward.
        ShapeError (a ValueError and a RuntimeError): dy's shape differs from the forward input's.
    """
    saved = check_saved(saved, ("batch_norm",), "batch_norm_backward")
    be = backend_for(dy)
    check_dy(be, dy, saved)
    with be.computing():
        return backward_saved(be, dy, saved)


def backward_saved(be, dy, saved):
    c = saved.shape[1]
    if saved.mean is None:                                   # empty input
        zeros = lambda given: be.zeros((c,), saved.param_dtype, dy) if given else None  # noqa: E731
        return Grads(be.copy(dy), zeros(saved.weight is not None),
                     zeros(saved.bias_given))
    dy3 = be.channels_view(dy, saved.extra.get("channels_last"))
    dx3, dweight, dbias = be.run(backward, dy3, saved.x, saved.mean, saved.invstd, _col(saved.weight),
                                 saved.training, saved.weight is not None, saved.bias_given)
    dweight = None if saved.weight is None else be.astype(dweight.reshape(-1), saved.param_dtype)
    dbias = be.astype(dbias.reshape(-1), saved.param_dtype) if saved.bias_given else None
    return Grads(be.from_channels(dx3, saved.shape, saved.extra.get("channels_last")), dweight, dbias)

