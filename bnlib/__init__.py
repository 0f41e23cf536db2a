"""bnlib: batch normalization and its family with hand-written forward and backward passes.

One contract for every functional pair (NumPy arrays and torch tensors, CPU or CUDA)::

    y, saved = <name>_forward(x, <non-array arguments>, *, weight=None, bias=None, running_mean=None,
                              running_var=None, <options>)
    dx, dweight, dbias = <name>_backward(dy, saved)          # a bnlib.Grads named tuple

Per-channel arrays are keyword-only, so two (C,) vectors can never be swapped silently; ``saved`` is
always a :class:`Saved`. The pairs:

* :func:`batch_norm_forward` / :func:`batch_norm_backward`: BatchNorm over (N, C) or (N, C, *spatial).
* :func:`instance_norm_forward` / :func:`instance_norm_backward` (with optional running statistics).
* :func:`layer_norm_forward` / :func:`layer_norm_backward`; :func:`group_norm_forward` / :func:`group_norm_backward`.
* :func:`batch_renorm_forward` / :func:`batch_renorm_backward` (with :func:`batch_renorm_limits`),
  :func:`ghost_batch_norm_forward` / :func:`ghost_batch_norm_backward`,
  :func:`masked_batch_norm_forward` / :func:`masked_batch_norm_backward` (padded sequences, an (N, T) mask),
  :func:`weight_norm_forward` / :func:`weight_norm_backward`.

:mod:`bnlib.nn` (imports torch) holds drop-ins for torch's normalization layers (BatchNorm1d/2d/3d,
InstanceNorm1d/2d/3d, LayerNorm, GroupNorm, SyncBatchNorm) built on these functions, ``convert_model`` /
``revert_model``, and ``precise_bn``. :mod:`bnlib.gradcheck` has :func:`rel_error` and
:func:`numerical_gradient`. :func:`set_num_threads` and :func:`set_torch_route` tune the backends.
"""
from . import gradcheck
from ._backend import Backend, set_num_threads, set_torch_route, torch_route
from ._checks import ShapeError
from .batch_norm import batch_norm_backward, batch_norm_forward
from .batch_renorm import (batch_renorm_backward, batch_renorm_forward, batch_renorm_limits, ghost_batch_norm_backward,
                           ghost_batch_norm_forward)
from .gradcheck import numerical_gradient, rel_error
from .group_norm import group_norm_backward, group_norm_forward
from .instance_norm import instance_norm_backward, instance_norm_forward
from .layer_norm import layer_norm_backward, layer_norm_forward
from .masked import masked_batch_norm_backward, masked_batch_norm_forward   # padded sequences (Module 05)
from .saved import Grads, Saved
from .weight_norm import weight_norm_backward, weight_norm_forward

__all__ = [
    "Saved",
    "Grads",
    "ShapeError",
    "Backend",
    "batch_norm_forward",
    "batch_norm_backward",
    "instance_norm_forward",
    "instance_norm_backward",
    "layer_norm_forward",
    "layer_norm_backward",
    "group_norm_forward",
    "group_norm_backward",
    "batch_renorm_forward",
    "batch_renorm_backward",
    "batch_renorm_limits",
    "ghost_batch_norm_forward",
    "ghost_batch_norm_backward",
    "masked_batch_norm_forward",
    "masked_batch_norm_backward",
    "weight_norm_forward",
    "weight_norm_backward",
    "gradcheck",
    "numerical_gradient",
    "rel_error",
    "set_num_threads",
    "set_torch_route",
    "torch_route",
]
__version__ = "1.0.0"
