"""Weight normalization (T. Salimans, D. P. Kingma, "Weight Normalization: A Simple Reparameterization to
Accelerate Training of Deep Neural Networks", NeurIPS 2016, arXiv:1602.07868, Eq. 2 and 3).

w = g * v / ||v||, with the norm taken per output unit (over every axis but ``dim``, like
``torch.nn.utils.parametrizations.weight_norm`` with dim=0). Gradients (Eq. 3):

    dg = sum(dw * v) / ||v||,      dv = g / ||v|| * dw - g * dg / ||v||^2 * v
"""
from __future__ import annotations

from ._backend import backend_for
from ._checks import ShapeError, check_array, check_dy, check_saved
from .saved import Grads, Saved

__all__ = ["weight_norm_forward", "weight_norm_backward"]


def _norms(be, v, dim):
    axes = tuple(i for i in range(v.ndim) if i != dim)
    return be.sqrt(be.sum(v * v, axes, v.dtype)), axes


def weight_norm_forward(v, *, g, dim: int = 0):
    """w = g * v / ||v|| per slice along ``dim`` (Salimans & Kingma 2016, Eq. 2).

    Args:
        v: the direction, any shape, floating (NumPy or torch).
        g: keyword-only scale per output unit, shape (v.shape[dim],).
        dim: the output-unit axis (0 for a Linear/Conv weight).

    Returns:
        (w, saved): w with v's shape; the :class:`bnlib.Saved` for :func:`weight_norm_backward`.

    Raises:
        TypeError: non-floating arrays. ShapeError (a ValueError and a RuntimeError): g's shape is not
            (v.shape[dim],). ValueError: a slice of v has norm 0 (its direction is undefined).
    """
    be = backend_for(v)
    check_array(be, "v", v)
    check_array(be, "g", g)
    if not -v.ndim <= dim < v.ndim:
        raise ValueError(f"dim must index one of v's {v.ndim} axes, got {dim}")
    dim %= v.ndim
    if tuple(g.shape) != (v.shape[dim],):
        raise ShapeError(f"g must have shape ({v.shape[dim]},) for v of shape {tuple(v.shape)}, got {tuple(g.shape)}")
    with be.computing():
        norm, _ = _norms(be, v, dim)
        if bool((norm == 0).any()):
            raise ValueError("v has a slice of norm 0: its direction is undefined")
        shape = tuple(norm.shape)
        w = v * (g.reshape(shape) / norm)
    return w, Saved("weight_norm", v, None, None, g, False, True, tuple(v.shape), v.dtype, g.dtype,
                    {"norm": norm, "dim": dim})


def weight_norm_backward(dw, saved):
    """Gradients of :func:`weight_norm_forward` (Salimans & Kingma 2016, Eq. 3).

    Returns:
        :class:`bnlib.Grads` ``(dx, dweight, dbias)`` = (dv, dg, None): dv with v's shape, dg with g's.

    Raises:
        TypeError: saved is not from weight_norm_forward. ShapeError: dw's shape differs from v's.
    """
    saved = check_saved(saved, ("weight_norm",), "weight_norm_backward")
    be = backend_for(dw)
    check_dy(be, dw, saved)
    v, g, norm = saved.x, saved.weight, saved.extra["norm"]
    axes = tuple(i for i in range(v.ndim) if i != saved.extra["dim"])
    with be.computing():
        gb = g.reshape(norm.shape)
        dg = be.sum(dw * v, axes, v.dtype) / norm
        dv = (gb / norm) * dw - (gb * dg / (norm * norm)) * v
    return Grads(dv, dg.reshape(g.shape), None)
