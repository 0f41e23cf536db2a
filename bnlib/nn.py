"""PyTorch modules backed by bnlib's hand-written backward: drop-in for ``torch.nn.BatchNorm1d/2d``.

The modules subclass torch's ``_BatchNorm`` base class, so the constructor arguments (``num_features``,
``eps``, ``momentum`` including ``None`` for a cumulative average, ``affine``, ``track_running_stats``,
``device``, ``dtype``), the parameters and buffers, the ``state_dict`` keys (``weight``, ``bias``,
``running_mean``, ``running_var``, ``num_batches_tracked``) and train/eval behaviour are PyTorch's own;
only the computation is replaced by :class:`BatchNormFunction`.

Why a hand-written backward: autograd through the composed formula keeps every intermediate (x - mean,
its square, the variance, xhat, ...) alive until the backward pass; :class:`BatchNormFunction` keeps only
the input (which autograd holds for the preceding layer anyway) and two vectors per channel, and its
backward makes one reduction pass and one elementwise pass.
"""
from __future__ import annotations

import torch
from torch.nn.modules.batchnorm import _BatchNorm

from .batch_norm import BatchNormSaved, batch_norm_backward, batch_norm_forward

__all__ = ["BatchNormFunction", "batch_norm", "BatchNorm1d", "BatchNorm2d", "LayerNorm", "GroupNorm", "precise_bn"]


class BatchNormFunction(torch.autograd.Function):
    """``torch.autograd.Function`` for batch norm: bnlib's forward, and its closed-form backward.

    ``apply(x, weight, bias, running_mean, running_var, training, momentum, eps)``; weight/bias may be
    None; running statistics are updated in place in training mode.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, running_mean, running_var, training, momentum, eps):
        y, saved = batch_norm_forward(x, weight, bias, running_mean, running_var, training, momentum, eps)
        # Tensors go through save_for_backward (so autograd can check they were not modified in place).
        ctx.save_for_backward(saved.x, saved.mean, saved.invstd, weight)
        ctx.meta = (saved.has_bias, saved.training, saved.channels_last, saved.shape, saved.dtype)
        return y

    @staticmethod
    def backward(ctx, dy):
        x, mean, invstd, weight = ctx.saved_tensors
        has_bias, training, channels_last, shape, dtype = ctx.meta
        saved = BatchNormSaved(x, mean, invstd, weight, has_bias, training, channels_last, shape, dtype)
        dx, dweight, dbias = batch_norm_backward(dy, saved)
        return dx, dweight, dbias, None, None, None, None, None


def batch_norm(x, running_mean, running_var, weight=None, bias=None, training=False, momentum=0.1, eps=1e-5):
    """Functional form with ``torch.nn.functional.batch_norm``'s signature, differentiable through
    :class:`BatchNormFunction`. See :func:`bnlib.batch_norm_forward` for shapes, dtypes and errors."""
    return BatchNormFunction.apply(x, weight, bias, running_mean, running_var, training, momentum, eps)


class _BnlibBatchNorm(_BatchNorm):
    def forward(self, input: torch.Tensor) -> torch.Tensor:
        self._check_input_dim(input)
        # The same bookkeeping as torch.nn.modules.batchnorm._BatchNorm.forward.
        factor = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
            factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        use_batch_stats = self.training or (self.running_mean is None and self.running_var is None)
        track = not self.training or self.track_running_stats
        return batch_norm(input, self.running_mean if track else None, self.running_var if track else None,
                          self.weight, self.bias, use_batch_stats, factor, self.eps)


class BatchNorm1d(_BnlibBatchNorm):
    """Drop-in for ``torch.nn.BatchNorm1d``: input (N, C) or (N, C, L), statistics over N (and L).

    Shape: input (N, C) or (N, C, L); output the same. Raises ValueError for other ranks.
    """

    def _check_input_dim(self, input):
        if input.dim() not in (2, 3):
            raise ValueError(f"expected 2D or 3D input (got {input.dim()}D input)")


class BatchNorm2d(_BnlibBatchNorm):
    """Drop-in for ``torch.nn.BatchNorm2d``: input (N, C, H, W), statistics over N, H, W.

    channels_last input gives channels_last output without a copy of the input.
    Shape: input (N, C, H, W); output the same. Raises ValueError for other ranks.
    """

    def _check_input_dim(self, input):
        if input.dim() != 4:
            raise ValueError(f"expected 4D input (got {input.dim()}D input)")


# ----------------------------------------------------------------------------- LayerNorm, GroupNorm
from .group_norm import (NormSaved, group_norm_backward, group_norm_forward,  # noqa: E402
                         layer_norm_backward, layer_norm_forward)


class _NormFunction(torch.autograd.Function):
    """Shared autograd glue for layer norm and group norm (forward returns y, backward the closed form)."""

    @staticmethod
    def forward(ctx, x, weight, bias, kind, arg, eps):
        fwd = layer_norm_forward if kind == "layer" else group_norm_forward
        y, saved = fwd(x, arg, weight, bias, eps)
        ctx.save_for_backward(saved.xhat, saved.invstd, weight)
        ctx.meta = (saved.has_bias, kind, saved.groups, saved.normalized_shape, saved.shape, saved.dtype)
        return y

    @staticmethod
    def backward(ctx, dy):
        xhat, invstd, weight = ctx.saved_tensors
        has_bias, kind, groups, normalized_shape, shape, dtype = ctx.meta
        saved = NormSaved(xhat, invstd, weight, has_bias, kind, groups, normalized_shape, shape, dtype)
        bwd = layer_norm_backward if kind == "layer" else group_norm_backward
        dx, dweight, dbias = bwd(dy, saved)
        return dx, dweight, dbias, None, None, None


class LayerNorm(torch.nn.LayerNorm):
    """Drop-in for ``torch.nn.LayerNorm`` (same constructor and state_dict), computed by bnlib's layer
    norm with its hand-written backward. Shape: (*, *normalized_shape) -> same."""

    def forward(self, input):
        return _NormFunction.apply(input, self.weight, self.bias, "layer", tuple(self.normalized_shape), self.eps)


class GroupNorm(torch.nn.GroupNorm):
    """Drop-in for ``torch.nn.GroupNorm`` (same constructor and state_dict), computed by bnlib's group
    norm with its hand-written backward. Shape: (N, C, *) -> same."""

    def forward(self, input):
        return _NormFunction.apply(input, self.weight, self.bias, "group", self.num_groups, self.eps)


# ----------------------------------------------------------------------------- PreciseBN
@torch.no_grad()
def precise_bn(model: torch.nn.Module, batches, num_batches: int | None = None) -> int:
    """Recompute the running statistics of every BatchNorm layer with the weights frozen (PreciseBN, Y. Wu
    and J. Johnson, "Rethinking 'Batch' in BatchNorm", 2021, arXiv:2105.07576, Section 3).

    The exponential moving average mixes statistics from many past weight versions; PreciseBN instead
    averages, with equal weight, the batch statistics that the final weights produce on ``batches``.
    Each BN layer (torch's or bnlib's, any ``_BatchNorm``) is reset and run in training mode with
    ``momentum=None`` (PyTorch's cumulative average); every other module runs in eval mode (dropout off,
    as at inference). Modes and momenta are restored afterwards.

    Args:
        model: a ``torch.nn.Module``. batches: an iterable of inputs (tensors, or tuples whose first
            element is the input). num_batches: stop after this many (default: all).

    Returns:
        The number of batches used.

    Raises:
        ValueError: the model has no BatchNorm layer, or no batch was given.
    """
    bns = [m for m in model.modules() if isinstance(m, _BatchNorm) and m.track_running_stats]
    if not bns:
        raise ValueError("the model has no BatchNorm layer with running statistics")
    modes = {m: m.training for m in model.modules()}
    momenta = [bn.momentum for bn in bns]
    model.eval()
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None
        bn.train()
    used = 0
    try:
        for batch in batches:
            if num_batches is not None and used >= num_batches:
                break
            model(batch[0] if isinstance(batch, (tuple, list)) else batch)
            used += 1
    finally:
        for bn, momentum in zip(bns, momenta):
            bn.momentum = momentum
        for m, mode in modes.items():
            m.train(mode)
    if used == 0:
        raise ValueError("no batch was given")
    return used
