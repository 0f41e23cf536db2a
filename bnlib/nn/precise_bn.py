"""PreciseBN: population statistics recomputed with the final weights."""
from __future__ import annotations

import torch
from torch.nn.modules.batchnorm import _BatchNorm

__all__ = ["precise_bn"]


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
