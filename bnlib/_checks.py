"""Input checks shared by every bnlib function: one place, clear messages, for NumPy and torch alike.

Each check raises ``TypeError`` for a wrong kind or dtype and ``ValueError`` for a wrong shape, device or
value, and names the argument, what was expected and what was given.
"""
from __future__ import annotations

import math


def check_array(ops, name: str, a, *, allow_none: bool = False):
    """Return ``a`` unchanged if it is a floating array of the backend ``ops`` (or None when allowed)."""
    if a is None:
        if allow_none:
            return None
        raise TypeError(f"{name} must be a {ops.array_type_name}, got None")
    if not ops.is_array(a):
        raise TypeError(f"{name} must be a {ops.array_type_name} like x, got {type(a).__module__}.{type(a).__name__}")
    if not ops.is_float(a):
        raise TypeError(f"{name} has dtype {a.dtype}; batch norm needs a floating dtype "
                        "(float32 or float64; float16 and bfloat16 are computed in float32)")
    return a


def check_features(ops, x) -> tuple[int, int]:
    """Check x is (N, C) or (N, C, *spatial); return (C, m) with m the values per channel."""
    check_array(ops, "x", x)
    if x.ndim < 2:
        raise ValueError(f"x must have shape (N, C) or (N, C, *spatial), got ndim {x.ndim} (shape {tuple(x.shape)})")
    c = x.shape[1]
    size = math.prod(x.shape)
    if size == 0:
        raise ValueError(f"x must not be empty, got shape {tuple(x.shape)}")
    return c, size // c


def check_channel_vector(ops, name: str, a, x, *, allow_none: bool = True):
    """Check a per-channel parameter or statistic has shape (C,) and lives where x does."""
    a = check_array(ops, name, a, allow_none=allow_none)
    if a is None:
        return None
    c = x.shape[1]
    if tuple(a.shape) != (c,):
        raise ValueError(f"{name} must have shape (C,) = ({c},) to match x, got {tuple(a.shape)}")
    if not ops.same_place(a, x):
        raise ValueError(f"{name} is on {ops.place(a)} but x is on {ops.place(x)}")
    return a


def check_scalar(name: str, value, low: float, high: float, *, low_open: bool = False) -> float:
    """Check a real hyperparameter lies in [low, high] (or (low, high] with low_open)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) and not hasattr(value, "__float__"):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    if isinstance(value, str):
        raise TypeError(f"{name} must be a real number, got str")
    value = float(value)
    ok = (low < value if low_open else low <= value) and value <= high
    if not ok:
        bracket = "(" if low_open else "["
        raise ValueError(f"{name} must lie in {bracket}{low}, {high}], got {value}")
    return value


def check_finite(ops, name: str, stats) -> None:
    """Raise if a statistic computed from ``name`` is not finite (cheap proxy for scanning the input)."""
    if not ops.all_finite(stats):
        raise ValueError(f"{name} contains NaN or Inf (or values so large that their per-channel sum overflows)")
