"""bnlib: batch normalization and its family with hand-written forward and backward passes.

Public API (NumPy backend):

* :func:`batch_norm_forward` / :func:`batch_norm_backward`: BatchNorm over (N, C) or (N, C, *spatial).
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
