"""Input checks shared by every bnlib function: one place, clear messages.

Each check raises ``TypeError`` for a wrong kind or dtype and ``ValueError`` for a wrong shape or value,
and names the argument, what was expected and what was given.
"""
from __future__ import annotations

import numpy as np

FLOAT_DTYPES = (np.float16, np.float32, np.float64)


def check_array(name: str, a, *, allow_none: bool = False):
    """Return ``a`` unchanged if it is a floating NumPy array (or None when allowed)."""
    if a is None:
        if allow_none:
            return None
        raise TypeError(f"{name} must be a numpy.ndarray, got None")
    if not isinstance(a, np.ndarray):
        raise TypeError(
            f"{name} must be a numpy.ndarray, got {type(a).__module__}.{type(a).__name__}"
        )
    if a.dtype.type not in FLOAT_DTYPES:
        raise TypeError(
            f"{name} has dtype {a.dtype}; batch norm needs a floating dtype "
            "(float32 or float64; float16 is computed in float32)"
        )
    return a


def check_features(x) -> tuple[int, int]:
    """Check x is (N, C) or (N, C, *spatial); return (C, m) with m the values per channel."""
    check_array("x", x)
    if x.ndim < 2:
        raise ValueError(
            f"x must have shape (N, C) or (N, C, *spatial), got ndim {x.ndim} (shape {x.shape})"
        )
    c = x.shape[1]
    m = x.size // c if c else 0
    if c == 0 or m == 0:
        raise ValueError(f"x must not be empty, got shape {x.shape}")
    return c, m


def check_channel_vector(name: str, a, c: int, *, allow_none: bool = True):
    """Check a per-channel parameter or statistic has shape (C,)."""
    a = check_array(name, a, allow_none=allow_none)
    if a is not None and a.shape != (c,):
        raise ValueError(f"{name} must have shape (C,) = ({c},) to match x, got {a.shape}")
    return a


def check_scalar(name: str, value, low: float, high: float, *, low_open: bool = False) -> float:
    """Check a real hyperparameter lies in [low, high] (or (low, high] with low_open)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    value = float(value)
    ok = (low < value if low_open else low <= value) and value <= high
    if not ok:
        bracket = "(" if low_open else "["
        raise ValueError(f"{name} must lie in {bracket}{low}, {high}], got {value}")
    return value


def check_finite(name: str, stats) -> None:
    """Raise if a statistic computed from ``name`` is not finite (cheap proxy for scanning the input)."""
    if not np.all(np.isfinite(stats)):
        raise ValueError(
            f"{name} contains NaN or Inf (or values so large that their per-channel sum overflows)"
        )
