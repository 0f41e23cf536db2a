"""The one saved-state type of every ``*_forward`` / ``*_backward`` pair, and the gradients' type.

Every forward pass returns ``(y, saved)`` with ``saved`` a :class:`Saved`; every backward pass takes
``(dy, saved)`` and returns :class:`Grads`, a named tuple ``(dx, dweight, dbias)`` that unpacks like the
plain tuple of CS231n's ``layer_backward(dout, cache)`` convention.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple

__all__ = ["Saved", "Grads"]


class Grads(NamedTuple):
    """Gradients of a backward pass: ``dx`` with the input's shape and dtype; ``dweight`` / ``dbias``
    with the parameters' shapes and dtypes (None when the forward pass had no such parameter)."""

    dx: Any
    dweight: Any
    dbias: Any


@dataclass(frozen=True)
class Saved:
    """What a forward pass keeps for its backward pass.

    The input itself is kept rather than the normalized xhat (the caller holds x anyway, so nothing new is
    stored); the backward pass recomputes x - mean on the fly.

    Attributes:
        kind: the pair that made it: "batch_norm", "instance_norm", "layer_norm", "group_norm",
            "batch_renorm", "ghost_batch_norm" or "weight_norm"; a backward pass accepts only its own.
        x: the input in the computation view, against which ``mean`` and ``invstd`` broadcast: (N, C, L)
            for batch and instance norm (L = product of the spatial sizes; a view, so a channels_last
            tensor stays channels_last), (R, K) rows for layer norm, (N, G, C/G, L) for group norm.
        mean: the mean that was subtracted, broadcastable against ``x``, accumulation dtype (float64 for
            NumPy, float32 for torch unless x is float64): batch statistics in training, the running mean
            in eval mode. None for an empty input.
        invstd: 1 / sqrt(var + eps), like ``mean``.
        weight: the scale gamma as given (or None); bias_given: whether a shift beta was given.
        training: whether batch statistics were used (then dx has the terms through mean and var).
        shape, dtype: the input's shape and dtype (for dx); param_dtype: the dtype of the parameters'
            gradients (the parameters' own dtype, e.g. float32 for a bfloat16 input with float32 weights).
        extra: what a particular pair needs besides (r and d for batch renorm, the chunks of ghost batch
            norm, the number of groups, the normalized shape, the norm of weight norm).
    """

    kind: str
    x: Any
    mean: Any
    invstd: Any
    weight: Any
    bias_given: bool
    training: bool
    shape: tuple
    dtype: Any
    param_dtype: Any = None
    extra: dict = field(default_factory=dict)

    def normalized(self):
        """xhat = (x - mean) * invstd with the input's shape, in the accumulation dtype (for checks and
        teaching; a plain broadcast, not the fast path)."""
        if self.kind == "ghost_batch_norm":
            chunks = [c.normalized() for c in self.extra["chunks"]]
            from ._backend import backend_for
            return backend_for(chunks[0]).concat(chunks)
        if self.kind == "weight_norm":
            return self.x / self.extra["norm"]
        from ._backend import backend_for
        be = backend_for(self.x)
        if self.mean is None:      # empty input
            return be.astype(self.x, be.acc_dtype(self.x)).reshape(self.shape)
        xhat = (be.astype(self.x, self.invstd.dtype) - self.mean) * self.invstd
        return be.from_channels(xhat, self.shape, self.extra.get("channels_last", False))
