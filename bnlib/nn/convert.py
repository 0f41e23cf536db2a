"""Swap every torch normalization layer of a model for bnlib's (and back), state included.

The analogue of ``torch.nn.SyncBatchNorm.convert_sync_batchnorm`` for the whole family: each layer of an
exact torch type (BatchNorm1d/2d/3d, SyncBatchNorm, InstanceNorm1d/2d/3d, LayerNorm, GroupNorm) is
replaced by the bnlib class of the same name built with the same constructor arguments, and it takes over
the very same parameter and buffer tensors (so an optimizer keeps working), the training flag and any
``qconfig``. Subclasses of torch's layers are left alone (they may change the computation).
"""
from __future__ import annotations

import torch

from . import modules as M
from .sync import SyncBatchNorm

__all__ = ["convert_model", "revert_model"]

_PAIRS = [(torch.nn.BatchNorm1d, M.BatchNorm1d), (torch.nn.BatchNorm2d, M.BatchNorm2d),
          (torch.nn.BatchNorm3d, M.BatchNorm3d), (torch.nn.SyncBatchNorm, SyncBatchNorm),
          (torch.nn.InstanceNorm1d, M.InstanceNorm1d), (torch.nn.InstanceNorm2d, M.InstanceNorm2d),
          (torch.nn.InstanceNorm3d, M.InstanceNorm3d), (torch.nn.LayerNorm, M.LayerNorm),
          (torch.nn.GroupNorm, M.GroupNorm)]
TO_BNLIB = dict(_PAIRS)
TO_TORCH = {b: t for t, b in _PAIRS}
_BN = (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d, torch.nn.BatchNorm3d, M.BatchNorm1d, M.BatchNorm2d, M.BatchNorm3d)


def _rebuild(module, cls, **extra):
    """A new ``cls`` layer with module's constructor arguments, sharing its parameters and buffers."""
    if isinstance(module, torch.nn.LayerNorm):
        new = cls(module.normalized_shape, module.eps, module.elementwise_affine, bias=module.bias is not None,
                  device="meta")
    elif isinstance(module, torch.nn.GroupNorm):
        new = cls(module.num_groups, module.num_channels, module.eps, module.affine, device="meta")
    else:
        new = cls(module.num_features, module.eps, module.momentum, module.affine, module.track_running_stats,
                  bias=module.bias is not None, device="meta", **extra)
    for name, _ in list(new.named_parameters(recurse=False)):
        setattr(new, name, getattr(module, name))
    for name in list(new._buffers):
        new._buffers[name] = module._buffers.get(name)
    new.training = module.training
    if hasattr(module, "qconfig"):
        new.qconfig = module.qconfig
    if isinstance(module, torch.nn.SyncBatchNorm) and "process_group" not in extra:
        new.process_group = module.process_group
    return new


def _convert(module, table, sync, process_group):
    kind = type(module)
    if sync and kind in _BN:
        out = _rebuild(module, table.get(torch.nn.SyncBatchNorm, SyncBatchNorm) if table is TO_BNLIB
                       else torch.nn.SyncBatchNorm, process_group=process_group)
    elif kind in table:
        out = _rebuild(module, table[kind])
    else:
        out = module
    for name, child in module.named_children():
        out.add_module(name, _convert(child, table, sync, process_group))
    return out


def convert_model(model: torch.nn.Module, *, sync: bool = False, process_group=None) -> torch.nn.Module:
    """Replace torch's normalization layers in ``model`` by bnlib's, sharing their parameters and buffers.

    Args:
        model: any ``torch.nn.Module`` (converted in place; a normalization layer itself is returned as a
            new layer, as ``convert_sync_batchnorm`` does).
        sync: also turn BatchNorm1d/2d/3d into :class:`bnlib.nn.SyncBatchNorm` (with ``process_group``).

    Returns:
        The converted model. :func:`revert_model` undoes it.
    """
    return _convert(model, TO_BNLIB, sync, process_group)


def revert_model(model: torch.nn.Module) -> torch.nn.Module:
    """Replace bnlib's normalization layers in ``model`` by torch's, sharing their parameters and buffers
    (the inverse of :func:`convert_model`)."""
    return _convert(model, TO_TORCH, False, None)
