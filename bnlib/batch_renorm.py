"""Batch Renormalization (S. Ioffe, "Batch Renormalization: Towards Reducing Minibatch Dependence in
Batch-Normalized Models", NeurIPS 2017, arXiv:1702.03275, Algorithm 1), and ghost batch norm.

Batch renorm corrects the batch statistics toward the running ones during training:

    r = clip(sigma_B / sigma, 1/r_max, r_max),  d = clip((mu_B - mu) / sigma, -d_max, d_max)
    xhat = (x - mu_B) / sigma_B * r + d,  y = gamma * xhat + beta

with sigma_B = sqrt(var_B + eps), sigma = sqrt(running_var + eps), and r, d treated as constants in
backpropagation ("stop_gradient" in the paper). With r = 1, d = 0 it is batch norm. Because r and d are
constants, the layer IS batch norm with weight gamma * r and bias gamma * d + beta, which is how it is
implemented here (one code path for the maths).

Running statistics follow PyTorch's BN convention (exponential average of the mean and of the unbiased
variance, weight ``momentum`` on the new value) rather than the paper's moving standard deviation; sigma is
derived from running_var.

Ghost batch norm (E. Hoffer, I. Hubara, D. Soudry, "Train longer, generalize better", NeurIPS 2017,
arXiv:1705.08741, Algorithm 1) normalizes each "virtual batch" of a large batch with its own statistics.
"""
from __future__ import annotations

from ._backend import ops_for
from ._checks import check_channel_vector, check_features, check_scalar
from .batch_norm import _forward, batch_norm_backward, batch_norm_forward

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


def batch_renorm_forward(x, weight, bias, running_mean, running_var, training, r_max=3.0, d_max=5.0,
                         momentum=0.1, eps=1e-5):
    """Batch renormalization forward pass (Ioffe 2017, Algorithm 1).

    Args:
        x: (N, C) or (N, C, *spatial), NumPy or torch, floating.
        weight, bias: gamma and beta, shape (C,); required (the correction acts through them).
        running_mean, running_var: shape (C,), required; updated in place in training mode.
        training: True for the renormalized batch statistics, False for plain eval-mode BN.
        r_max: >= 1, the clip on r; d_max: >= 0, the clip on d (see :func:`batch_renorm_limits`).
        momentum, eps: as in :func:`bnlib.batch_norm_forward`.

    Returns:
        (y, saved): saved is (bn_saved, r, d) for :func:`batch_renorm_backward`; r and d are (C,) arrays
        (ones and zeros in eval mode).

    Raises:
        TypeError / ValueError: as :func:`bnlib.batch_norm_forward`; also r_max < 1, d_max < 0, or a
        missing weight, bias or running statistic.
    """
    ops = ops_for(x)
    c, m = check_features(ops, x)
    for name, a in (("weight", weight), ("bias", bias), ("running_mean", running_mean), ("running_var", running_var)):
        check_channel_vector(ops, name, a, x, allow_none=False)
    r_max = check_scalar("r_max", r_max, 1.0, float("inf"))
    d_max = check_scalar("d_max", d_max, 0.0, float("inf"))
    eps = check_scalar("eps", eps, 0.0, float("inf"), low_open=True)
    if not training:
        y, saved = batch_norm_forward(x, weight, bias, running_mean, running_var, False, momentum, eps)
        return y, (saved, None, None)
    if m == 1:
        raise ValueError(f"Expected more than 1 value per channel when training, got input of shape {tuple(x.shape)}")
    momentum = check_scalar("momentum", momentum, 0.0, 1.0)
    acc = ops.acc_dtype(x)
    corrections = {}

    def adjust(mean_b, var_b):  # from the batch statistics and the running ones before their update
        sigma_b = ops.sqrt(var_b + eps)
        sigma = ops.sqrt(ops.astype(running_var, acc) + eps)
        r = ops.clip(sigma_b / sigma, 1.0 / r_max, r_max)
        d = ops.clip((mean_b - ops.astype(running_mean, acc)) / sigma, -d_max, d_max)
        corrections.update(r=r, d=d)
        w_acc = ops.astype(weight, acc)
        return w_acc * r, w_acc * d + ops.astype(bias, acc)
    # Batch norm with weight gamma*r and bias gamma*d + beta; it also updates the running statistics.
    y, saved = _forward(ops, x, weight, bias, running_mean, running_var, True, momentum, eps, m, adjust)
    return y, (saved, corrections["r"], corrections["d"])


def batch_renorm_backward(dy, saved):
    """Backward of :func:`batch_renorm_forward`, with r and d constant: (dx, dweight, dbias).

    dweight = r * sum(dy * xhat_B) + d * sum(dy), where xhat_B uses the batch statistics.
    """
    bn_saved, r, d = saved
    dx, dw_eff, db = batch_norm_backward(dy, bn_saved)
    if r is None:
        return dx, dw_eff, db
    ops = ops_for(dy)
    with ops.no_grad():
        # dL/dgamma through w_eff = gamma * r and b_eff = gamma * d + beta
        dweight = ops.astype(ops.astype(dw_eff, r.dtype) * r + ops.astype(db, d.dtype) * d, dw_eff.dtype)
    return dx, dweight, db


def ghost_batch_norm_forward(x, weight, bias, running_mean, running_var, training, virtual_batch_size,
                             momentum=0.1, eps=1e-5):
    """Ghost batch norm (Hoffer et al. 2017): training-mode BN applied to each chunk of
    ``virtual_batch_size`` samples (the last chunk may be smaller), the running statistics updated once
    per chunk; eval mode is plain BN.

    Returns:
        (y, saved): saved is a list of per-chunk BatchNormSaved for :func:`ghost_batch_norm_backward`.

    Raises:
        ValueError: virtual_batch_size < 2 in training mode, or a chunk with one value per channel;
            otherwise as :func:`bnlib.batch_norm_forward`.
    """
    if not training:
        y, s = batch_norm_forward(x, weight, bias, running_mean, running_var, False, momentum, eps)
        return y, [s]
    if not isinstance(virtual_batch_size, int) or virtual_batch_size < 2:
        raise ValueError(f"virtual_batch_size must be an int >= 2, got {virtual_batch_size!r}")
    ops = ops_for(x)
    outs, saves = [], []
    for start in range(0, x.shape[0], virtual_batch_size):
        y, s = batch_norm_forward(x[start:start + virtual_batch_size], weight, bias, running_mean, running_var,
                                  True, momentum, eps)
        outs.append(y)
        saves.append(s)
    return ops.concat(outs), saves


def ghost_batch_norm_backward(dy, saved):
    """Backward of :func:`ghost_batch_norm_forward`: per-chunk BN backward, parameter gradients summed."""
    ops = ops_for(dy)
    dxs, dw, db, start = [], None, None, 0
    for s in saved:
        dx, w, b = batch_norm_backward(dy[start:start + s.shape[0]], s)
        start += s.shape[0]
        dxs.append(dx)
        dw = w if dw is None else (None if w is None else dw + w)
        db = b if db is None else (None if b is None else db + b)
    return ops.concat(dxs), dw, db
