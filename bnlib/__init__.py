"""bnlib: batch normalization and its family with hand-written forward and backward passes.

Public API (one implementation for NumPy arrays and torch tensors, CPU or CUDA):

* :func:`batch_norm_forward` / :func:`batch_norm_backward`: BatchNorm over (N, C) or (N, C, *spatial).
* :mod:`bnlib.nn` (imports torch): ``BatchNorm1d``, ``BatchNorm2d`` drop-in for torch's, backed by
  ``BatchNormFunction`` (a ``torch.autograd.Function`` with the hand-written backward).
* :mod:`bnlib.gradcheck`: :func:`rel_error` and :func:`numerical_gradient` for gradient checks.
"""
from . import gradcheck
from .batch_norm import BatchNormSaved, batch_norm_backward, batch_norm_forward
from .gradcheck import numerical_gradient, rel_error

__all__ = [
    "BatchNormSaved",
    "batch_norm_forward",
    "batch_norm_backward",
    "gradcheck",
    "numerical_gradient",
    "rel_error",
]
__version__ = "0.1.0"
