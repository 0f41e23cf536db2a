"""Drop-ins for torch's normalization layers, computed by bnlib's hand-written passes.

Each class subclasses its torch counterpart (``bnlib.nn.BatchNorm2d`` is a ``torch.nn.BatchNorm2d``), so
the constructor arguments (``num_features``, ``eps``, ``momentum`` including ``None`` for a cumulative
average, ``affine``, ``bias``, ``track_running_stats``, ``device``, ``dtype``, ...), the parameters and
buffers, ``state_dict`` keys and versions, ``extra_repr``, input-dimension checks and train/eval
behaviour are torch's own; only the computation is replaced by :mod:`bnlib.nn.functional`, which follows
torch 2.13 in the cases users rely on: exception types, mixed precision (a float16/bfloat16 input with
float32 parameters gives a half output and float32 parameter gradients), empty batches, NaN/Inf
propagation, channels_last outputs, double backward and forward-mode AD.

Why a hand-written backward: autograd through the composed formula keeps every intermediate (x - mean,
its square, the variance, xhat, ...) alive until the backward pass; bnlib's Functions keep only the input
(which autograd holds for the preceding layer anyway) and two vectors per channel.
"""
from __future__ import annotations

import torch

from . import functional as F

__all__ = ["BatchNorm1d", "BatchNorm2d", "BatchNorm3d", "InstanceNorm1d", "InstanceNorm2d", "InstanceNorm3d",
           "LayerNorm", "GroupNorm"]


class _BnlibBatchNorm:
    """torch.nn.modules.batchnorm._BatchNorm.forward with F.batch_norm replaced by bnlib's."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        self._check_input_dim(input)
        factor = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
            factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        use_batch_stats = self.training or (self.running_mean is None and self.running_var is None)
        track = not self.training or self.track_running_stats
        return F.batch_norm(input, weight=self.weight, bias=self.bias,
                            running_mean=self.running_mean if track else None,
                            running_var=self.running_var if track else None,
                            training=use_batch_stats, momentum=factor, eps=self.eps)


class BatchNorm1d(_BnlibBatchNorm, torch.nn.BatchNorm1d):
    """Drop-in for ``torch.nn.BatchNorm1d`` (Ioffe & Szegedy 2015): input (N, C) or (N, C, L), statistics
    over N (and L). Raises ValueError for other ranks, as torch."""


class BatchNorm2d(_BnlibBatchNorm, torch.nn.BatchNorm2d):
    """Drop-in for ``torch.nn.BatchNorm2d``: input (N, C, H, W), statistics over N, H, W; a channels_last
    input gives a channels_last output without copying the input. Raises ValueError for other ranks."""


class BatchNorm3d(_BnlibBatchNorm, torch.nn.BatchNorm3d):
    """Drop-in for ``torch.nn.BatchNorm3d``: input (N, C, D, H, W), statistics over N, D, H, W; a
    channels_last_3d input keeps its layout. Raises ValueError for other ranks."""


class _BnlibInstanceNorm:
    """torch's _InstanceNorm with F.instance_norm replaced by bnlib's (its forward, checks and unbatched
    handling are inherited)."""

    def _apply_instance_norm(self, input):
        return F.instance_norm(input, weight=self.weight, bias=self.bias, running_mean=self.running_mean,
                               running_var=self.running_var,
                               use_input_stats=self.training or not self.track_running_stats,
                               momentum=self.momentum if self.momentum is not None else 0.0, eps=self.eps)


class InstanceNorm1d(_BnlibInstanceNorm, torch.nn.InstanceNorm1d):
    """Drop-in for ``torch.nn.InstanceNorm1d`` (Ulyanov et al. 2016): input (N, C, L) or unbatched
    (C, L); per-(sample, channel) statistics; optional running statistics (``track_running_stats``)."""


class InstanceNorm2d(_BnlibInstanceNorm, torch.nn.InstanceNorm2d):
    """Drop-in for ``torch.nn.InstanceNorm2d``: input (N, C, H, W) or unbatched (C, H, W)."""


class InstanceNorm3d(_BnlibInstanceNorm, torch.nn.InstanceNorm3d):
    """Drop-in for ``torch.nn.InstanceNorm3d``: input (N, C, D, H, W) or unbatched (C, D, H, W)."""


class LayerNorm(torch.nn.LayerNorm):
    """Drop-in for ``torch.nn.LayerNorm`` (Ba et al. 2016; same constructor, including ``bias``, and
    state_dict). Shape: (*, *normalized_shape) -> same. Raises RuntimeError for a mismatched shape."""

    def forward(self, input):
        return F.layer_norm(input, tuple(self.normalized_shape), weight=self.weight, bias=self.bias, eps=self.eps)


class GroupNorm(torch.nn.GroupNorm):
    """Drop-in for ``torch.nn.GroupNorm`` (Wu & He 2018; same constructor and state_dict). Shape:
    (N, C, *) -> same, keeping a channels_last layout. Raises RuntimeError for a channel mismatch and
    ValueError for a single value in all, as torch."""

    def forward(self, input):
        return F.group_norm(input, self.num_groups, weight=self.weight, bias=self.bias, eps=self.eps)
