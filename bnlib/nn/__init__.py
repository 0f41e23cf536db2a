"""bnlib.nn: drop-ins for torch's normalization layers, computed by bnlib's hand-written passes.

* Modules (subclasses of torch's, same constructors and state_dict): :class:`BatchNorm1d`,
  :class:`BatchNorm2d`, :class:`BatchNorm3d`, :class:`InstanceNorm1d`, :class:`InstanceNorm2d`,
  :class:`InstanceNorm3d`, :class:`LayerNorm`, :class:`GroupNorm`, :class:`SyncBatchNorm` (torch.distributed,
  gloo or NCCL).
* :func:`convert_model` / :func:`revert_model`: swap every torch normalization layer of a model, state
  included (``sync=True`` for SyncBatchNorm).
* Differentiable functional forms with keyword-only per-channel arrays: :func:`batch_norm`,
  :func:`instance_norm`, :func:`layer_norm`, :func:`group_norm`, :func:`sync_batch_norm`, and their
  ``torch.autograd.Function``s (double backward and ``jvp``; SyncBatchNorm refuses both clearly).
* :func:`precise_bn` (PreciseBN).
"""
from .convert import convert_model, revert_model
from .functional import (BatchNormFunction, GroupNormFunction, InstanceNormFunction, LayerNormFunction, batch_norm,
                         group_norm, instance_norm, layer_norm)
from .modules import (BatchNorm1d, BatchNorm2d, BatchNorm3d, GroupNorm, InstanceNorm1d, InstanceNorm2d, InstanceNorm3d,
                      LayerNorm)
from .precise_bn import precise_bn
from .sync import SyncBatchNorm, SyncBatchNormFunction, sync_batch_norm

__all__ = ["BatchNorm1d", "BatchNorm2d", "BatchNorm3d", "InstanceNorm1d", "InstanceNorm2d", "InstanceNorm3d",
           "LayerNorm", "GroupNorm", "SyncBatchNorm", "convert_model", "revert_model", "batch_norm",
           "instance_norm", "layer_norm", "group_norm", "sync_batch_norm", "BatchNormFunction",
           "InstanceNormFunction", "LayerNormFunction", "GroupNormFunction", "SyncBatchNormFunction", "precise_bn"]
