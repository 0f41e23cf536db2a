"""Numerical gradient checking: centered differences and the relative error used across the course.

The technique is the one of CS231n's assignments (centered differences with h = 1e-5 in float64), with
one of their bugs designed out: the function receives the perturbed array as its argument and must use
it, so a check cannot silently differentiate a lambda that ignores its input.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

__all__ = ["rel_error", "numerical_gradient"]


def rel_error(a, b) -> float:
    """Largest relative error max|a - b| / max(1e-8, |a| + |b|), elementwise; a Python float.

    Args:
        a, b: arrays of the same shape (anything ``np.asarray`` accepts).

    Raises:
        ValueError: the shapes differ.
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {a.shape} vs {b.shape}")
    if a.size == 0:
        return 0.0
    return float(np.max(np.abs(a - b) / np.maximum(1e-8, np.abs(a) + np.abs(b))))


def numerical_gradient(f: Callable[[np.ndarray], np.ndarray], x: np.ndarray, dout: np.ndarray,
                       h: float = 1e-5) -> np.ndarray:
    """Gradient of ``sum(f(x) * dout)`` with respect to x by centered differences.

    Each element of x is perturbed in place by +h and -h, f is called ON THE PERTURBED ARRAY, and x is
    restored afterwards. Use float64: in float32 the truncation and rounding errors swamp the check.

    Args:
        f: maps an array shaped like x to an array shaped like dout.
        x: float64 array, perturbed in place and restored.
        dout: upstream gradient, shape of f(x).
        h: step, default 1e-5.

    Returns:
        Array with the shape of x (float64).

    Raises:
        TypeError: x is not a float64 numpy.ndarray.
    """
    if not isinstance(x, np.ndarray) or x.dtype != np.float64:
        raise TypeError("numerical_gradient needs x as a float64 numpy.ndarray")
    grad = np.zeros_like(x)
    it = np.nditer(x, flags=["multi_index"], op_flags=[["readwrite"]])
    while not it.finished:
        ix = it.multi_index
        old = x[ix]
        x[ix] = old + h
        pos = np.sum(np.asarray(f(x), dtype=np.float64) * dout)
        x[ix] = old - h
        neg = np.sum(np.asarray(f(x), dtype=np.float64) * dout)
        x[ix] = old
        grad[ix] = (pos - neg) / (2 * h)
        it.iternext()
    return grad
