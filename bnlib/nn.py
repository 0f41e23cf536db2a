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

__all__ = ["BatchNormFunction", "batch_norm", "BatchNorm1d", "BatchNorm2d"]


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
