"""bnlib: batch normalization and its family with hand-written forward and backward passes.

Public API (one implementation for NumPy arrays and torch tensors, CPU or CUDA):

* :func:`batch_norm_forward` / :func:`batch_norm_backward`: BatchNorm over (N, C) or (N, C, *spatial).
* :func:`layer_norm_forward`, :func:`group_norm_forward` (and ``instance_norm_forward``), their backwards.
* :func:`batch_renorm_forward` (with :func:`batch_renorm_limits`), ghost batch norm, weight norm.
* :mod:`bnlib.nn` (imports torch): ``BatchNorm1d``, ``BatchNorm2d``, ``LayerNorm``, ``GroupNorm``,
  drop-in for torch's, backed by ``torch.autograd.Function``s with the hand-written backward;
  ``precise_bn`` (PreciseBN).
* :mod:`bnlib.gradcheck`: :func:`rel_error` and :func:`numerical_gradient` for gradient checks.
"""
from . import gradcheck
from .batch_norm import BatchNormSaved, batch_norm_backward, batch_norm_forward
from .batch_renorm import (batch_renorm_backward, batch_renorm_forward, batch_renorm_limits,
                           ghost_batch_norm_backward, ghost_batch_norm_forward)
from .gradcheck import numerical_gradient, rel_error
from .group_norm import (NormSaved, group_norm_backward, group_norm_forward, instance_norm_forward,
                         layer_norm_backward, layer_norm_forward)
from .weight_norm import weight_norm, weight_norm_backward

__all__ = [
    "BatchNormSaved",
    "NormSaved",
    "batch_norm_forward",
    "batch_norm_backward",
    "batch_renorm_forward",
    "batch_renorm_backward",
    "batch_renorm_limits",
    "ghost_batch_norm_forward",
    "ghost_batch_norm_backward",
    "layer_norm_forward",
    "layer_norm_backward",
    "group_norm_forward",
    "group_norm_backward",
    "instance_norm_forward",
    "weight_norm",
    "weight_norm_backward",
    "gradcheck",
    "numerical_gradient",
    "rel_error",
]
__version__ = "0.1.0"
