"""Masked batch normalization over padded sequences: statistics over the real tokens only.

A batch of sequences of different lengths is padded to a common length T: x has shape (N, T, D) (or, more
generally, (*, D): features last) and a boolean ``mask`` of shape (N, T) says which positions hold real
tokens (True) and which are padding (False). Batch normalization over such a batch takes, per feature d,
the mean and variance of the m = mask.sum() real tokens only, as if the padded positions did not exist:

    m = sum(mask),   mean_d = sum over real tokens of x[..., d] / m,   var_d = biased variance over them
    y = weight * (x - mean) / sqrt(var + eps) + bias    at real positions,    y = 0 at padded positions

Every other convention is PyTorch's (Ioffe & Szegedy 2015 Algorithms 1 and 2, as
:func:`bnlib.batch_norm_forward`): ``running_var`` is updated with the unbiased variance (m / (m - 1),
m = real tokens), ``momentum`` weights the new statistic, ``eps`` inside the square root. With a mask that
is all True this is batch norm over the (N * T, D) matrix of tokens. Padded positions of x never enter
the result (they may hold anything, NaN included), and the gradient reaching them is 0.

Implementation: the real tokens are gathered into an (m, D) matrix (``x[mask]``), normalized by
:func:`bnlib.batch_norm_forward` (so the statistics have its exactness: corrected two-pass, float64
accumulation in NumPy) and scattered back into a zero output; the backward pass gathers ``dy[mask]`` the
same way. Both backends (NumPy arrays, torch tensors on any device) are served by the same code.

Course use: Module 05 ("Case study: NLP") grades the learners' own masked forward and backward against
this reference.
"""
from __future__ import annotations

from ._backend import backend_for
from ._checks import (ShapeError, check_array, check_dy, check_eps, check_nonfinite, check_saved, check_scalar,
                      check_training, check_vector)
from .batch_norm import batch_norm_backward, batch_norm_forward, param_dtype
from .saved import Grads, Saved

__all__ = ["masked_batch_norm_forward", "masked_batch_norm_backward"]

KIND = "masked_batch_norm"


def _is_bool(be, mask) -> bool:
    if be.name == "numpy":
        return mask.dtype == bool
    return mask.dtype == be.torch.bool


def check_mask(be, mask, x):
    """mask: a boolean array of x's kind with shape x.shape[:-1], where x lives."""
    if not be.is_array(mask):
        raise TypeError(f"mask must be a boolean {be.array_type_name} like x (True = a real token), "
                        f"got {type(mask).__module__}.{type(mask).__name__}")
    if not _is_bool(be, mask):
        raise TypeError(f"mask has dtype {mask.dtype}; it must be boolean (True = a real token, False = padding)")
    if tuple(mask.shape) != tuple(x.shape[:-1]):
        raise ShapeError(f"mask must have shape {tuple(x.shape[:-1])} (x's shape without the feature axis) to "
                         f"match x of shape {tuple(x.shape)}, got {tuple(mask.shape)}")
    if not be.same_place(mask, x):
        raise ValueError(f"mask is on {be.place(mask)} but x is on {be.place(x)}")
    return mask


def _count(be, mask) -> int:
    return int(mask.sum())


def masked_batch_norm_forward(x, mask, *, weight=None, bias=None, running_mean=None, running_var=None, training,
                              momentum=0.1, eps=1e-5, nonfinite="raise"):
    """Batch normalization of padded sequences with statistics over the real tokens only.

    Args:
        x: input with the features last, shape (N, T, D) (any (*, D) with at least 2 dimensions); a
            ``numpy.ndarray`` (float16/32/64) or a ``torch.Tensor`` on any device.
        mask: boolean, shape x.shape[:-1] (e.g. (N, T)), of x's kind and device: True marks a real token,
            False padding. Padded positions of x are never read into the result (they may hold NaN).
        weight, bias: gamma and beta, shape (D,), keyword-only, or None.
        running_mean, running_var: shape (D,), keyword-only, or None; updated IN PLACE in training mode
            with the statistics of the real tokens (running_var with the unbiased variance, m / (m - 1));
            required in eval mode.
        training: keyword-only and required: batch statistics of the real tokens (True) or the running
            statistics (False).
        momentum: weight of the new statistic in the running averages, in [0, 1]. Default 0.1.
        eps: added to the variance inside the square root. Default 1e-5.
        nonfinite: "raise" (default) or "propagate", for NaN or Inf in the REAL tokens (as
            :func:`bnlib.batch_norm_forward`); padding is ignored either way.

    Returns:
        (y, saved): y of x's shape and dtype, 0 at every padded position; the :class:`bnlib.Saved` for
        :func:`masked_batch_norm_backward`. ``saved.normalized()`` is xhat = (x - mean) / sqrt(var + eps)
        at real positions and 0 at padded ones. A mask without any real token gives a zero output and
        leaves the running statistics alone.

    Raises:
        TypeError: x or mask is not an array of the same kind, x is not floating, mask is not boolean,
            training is not a bool.
        ShapeError (a ValueError and a RuntimeError): x has fewer than 2 dimensions; mask's shape is not
            x.shape[:-1]; a per-feature argument is not of shape (D,).
        ValueError: exactly one real token in training mode; running statistics missing in eval mode or
            given alone; momentum or eps out of range; NaN or Inf in a real token with nonfinite="raise".

    Shape:
        x, y: (N, T, D); mask: (N, T); weight, bias, running_mean, running_var: (D,).
    """
    be = backend_for(x)
    check_array(be, "x", x)
    if x.ndim < 2:
        raise ShapeError(f"x must have shape (N, T, D) (features last), got ndim {x.ndim} (shape {tuple(x.shape)})")
    mask = check_mask(be, mask, x)
    d = x.shape[-1]
    weight, bias, running_mean, running_var = (check_vector(be, name, a, x, (d,)) for name, a in (
        ("weight", weight), ("bias", bias), ("running_mean", running_mean), ("running_var", running_var)))
    training = check_training(training)
    momentum = check_scalar("momentum", momentum, 0.0, 1.0)
    eps = check_eps(eps, training)
    nonfinite = check_nonfinite(nonfinite)
    if (running_mean is None) != (running_var is None):
        raise ValueError("running_mean and running_var must be given together (or both None)")
    if not training and running_mean is None:
        raise ValueError("running_mean and running_var are required in eval mode (training=False)")
    m = _count(be, mask)
    if training and m == 1:
        raise ValueError(f"Expected more than 1 real token per feature when training, got a mask with 1 real token "
                         f"(input size {tuple(x.shape)})")
    with be.computing():
        y = be.zeros(tuple(x.shape), x.dtype, x)
        if m == 0:        # nothing to normalize: zero output, running statistics kept (as an empty batch)
            saved = Saved(KIND, None, None, None, weight, bias is not None, training, tuple(x.shape), x.dtype,
                          param_dtype(x, weight, bias), {"mask": mask, "inner": None})
            return y, saved
        y_real, inner = batch_norm_forward(x[mask], weight=weight, bias=bias, running_mean=running_mean,
                                           running_var=running_var, training=training, momentum=momentum, eps=eps,
                                           nonfinite=nonfinite)
        y[mask] = y_real
        # for saved.normalized(): x with padded positions replaced by the mean, so that xhat is 0 there
        rows = be.astype(x, inner.mean.dtype).reshape(-1, d)
        keep = mask.reshape(-1, 1)
        mean_row = inner.mean.reshape(1, d)
        if be.name == "numpy":
            import numpy as np
            filled = np.where(keep, rows, mean_row)
        else:
            filled = be.torch.where(keep, rows, mean_row)
        saved = Saved(KIND, filled.reshape(-1, d, 1), inner.mean, inner.invstd, weight, bias is not None, training,
                      tuple(x.shape), x.dtype, inner.param_dtype, {"mask": mask, "inner": inner})
    return y, saved


def masked_batch_norm_backward(dy, saved):
    """Backward pass of :func:`masked_batch_norm_forward`.

    At real positions, batch norm's closed form (Ioffe & Szegedy 2015, Section 3) over the m real tokens
    (:func:`bnlib.batch_norm_backward`); at padded positions dx = 0 (they did not enter the output).
    dweight = sum(dy * xhat) and dbias = sum(dy) run over the real tokens only: whatever dy holds at
    padded positions is ignored.

    Args:
        dy: upstream gradient of the forward input's shape, a floating array of the same kind.
        saved: the :class:`bnlib.Saved` returned by :func:`masked_batch_norm_forward`.

    Returns:
        :class:`bnlib.Grads` ``(dx, dweight, dbias)``: dx of x's shape and dtype (0 at padding); dweight,
        dbias of shape (D,) in the parameters' dtype, None without weight (resp. bias). A mask without real
        tokens gives dx = 0 and zero parameter gradients.

    Raises:
        TypeError: dy is not a floating array of x's kind, or saved is not from masked_batch_norm_forward.
        ShapeError (a ValueError and a RuntimeError): dy's shape differs from the forward input's.
    """
    saved = check_saved(saved, (KIND,), "masked_batch_norm_backward")
    be = backend_for(dy)
    check_dy(be, dy, saved)
    mask, inner = saved.extra["mask"], saved.extra["inner"]
    with be.computing():
        dx = be.zeros(saved.shape, dy.dtype, dy)
        if inner is None:
            d = saved.shape[-1]
            zeros = lambda given: be.zeros((d,), saved.param_dtype, dy) if given else None  # noqa: E731
            return Grads(dx, zeros(saved.weight is not None), zeros(saved.bias_given))
        g = batch_norm_backward(dy[mask], inner)
        dx[mask] = g.dx
    return Grads(dx, g.dweight, g.dbias)
