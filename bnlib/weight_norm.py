"""Weight normalization (T. Salimans, D. P. Kingma, "Weight Normalization: A Simple Reparameterization to
Accelerate Training of Deep Neural Networks", NeurIPS 2016, arXiv:1602.07868, Eq. 2 and 3).

w = g * v / ||v||, with the norm taken per output unit (over every axis but ``dim``, like
``torch.nn.utils.parametrizations.weight_norm`` with dim=0). Gradients (Eq. 3):

    dg = sum(dw * v) / ||v||,      dv = g / ||v|| * dw - g * dg / ||v||^2 * v
"""
from __future__ import annotations

from ._backend import ops_for
from ._checks import check_array

__all__ = ["weight_norm", "weight_norm_backward"]


def _norms(ops, v, dim):
    axes = tuple(i for i in range(v.ndim) if i != dim)
    shape = [1] * v.ndim
    shape[dim] = v.shape[dim]
    return ops.sqrt(ops.sum(v * v, axes, v.dtype)).reshape(shape), axes, shape


def weight_norm(v, g, dim: int = 0):
    """w = g * v / ||v|| per slice along ``dim``.

    Args:
        v: direction, any shape, floating (NumPy or torch). g: scale, shape (v.shape[dim],).
        dim: the output-unit axis (0 for a Linear/Conv weight).

    Returns:
        w, with v's shape.

    Raises:
        TypeError: non-floating arrays. ValueError: g's shape is not (v.shape[dim],), or a zero slice of v.
    """
    ops = ops_for(v)
    check_array(ops, "v", v)
    check_array(ops, "g", g)
    if tuple(g.shape) != (v.shape[dim],):
        raise ValueError(f"g must have shape ({v.shape[dim]},) for v of shape {tuple(v.shape)}, got {tuple(g.shape)}")
    norm, _, shape = _norms(ops, v, dim)
    if bool((norm == 0).any()):
        raise ValueError("v has a slice of norm 0: its direction is undefined")
    return v * (g.reshape(shape) / norm)


def weight_norm_backward(dw, v, g, dim: int = 0):
    """Gradients (dv, dg) of :func:`weight_norm` (Salimans & Kingma 2016, Eq. 3); shapes of v and g."""
    ops = ops_for(v)
    norm, axes, shape = _norms(ops, v, dim)
    dg = ops.sum(dw * v, axes, v.dtype).reshape(shape) / norm
    dv = (g.reshape(shape) / norm) * dw - (g.reshape(shape) * dg / (norm * norm)) * v
    return dv, dg.reshape(g.shape)
