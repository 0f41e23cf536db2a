"""Every input check of bnlib and its message, in one place, for NumPy and torch alike.

The functional API raises ``TypeError`` for a wrong kind or dtype and ``ValueError`` for a wrong value;
a wrong shape raises :class:`ShapeError`, which is both a ``ValueError`` and a ``RuntimeError`` (the type
torch raises for shape mismatches), so code written for either catches it. Each message names the
argument, what was expected and what was given.

The ``torch_*`` helpers hold the messages of the ``bnlib.nn`` modules, which raise exactly the exception
types torch 2.13 raises for the same mistake.
"""
from __future__ import annotations

import math

NONFINITE = ("raise", "propagate")


class ShapeError(ValueError, RuntimeError):
    """An argument's shape does not fit x's (a ValueError and a RuntimeError)."""


def check_array(be, name: str, a, *, allow_none: bool = False):
    """Return ``a`` unchanged if it is a floating array of the backend ``be`` (or None when allowed)."""
    if a is None:
        if allow_none:
            return None
        raise TypeError(f"{name} must be a {be.array_type_name}, got None")
    if not be.is_array(a):
        raise TypeError(f"{name} must be a {be.array_type_name} like x, got {type(a).__module__}.{type(a).__name__}")
    if not be.is_float(a):
        raise TypeError(f"{name} has dtype {a.dtype}; normalization needs a floating dtype "
                        "(float32 or float64; float16 and bfloat16 are computed in float32)")
    return a


def check_features(be, x) -> tuple[int, int]:
    """Check x is (N, C) or (N, C, *spatial); return (C, m) with m the values per channel (0 if empty)."""
    check_array(be, "x", x)
    if x.ndim < 2:
        raise ShapeError(f"x must have shape (N, C) or (N, C, *spatial), got ndim {x.ndim} (shape {tuple(x.shape)})")
    c = x.shape[1]
    return c, math.prod(x.shape) // c if c else 0


def check_vector(be, name: str, a, x, shape, *, allow_none: bool = True):
    """Check a parameter or statistic has ``shape`` (e.g. (C,)) and lives where x does."""
    a = check_array(be, name, a, allow_none=allow_none)
    if a is None:
        return None
    if tuple(a.shape) != tuple(shape):
        what = "(C,) = " if len(shape) == 1 and x.ndim >= 2 and shape[0] == x.shape[1] else ""
        raise ShapeError(f"{name} must have shape {what}{tuple(shape)} to match x of shape {tuple(x.shape)}, "
                         f"got {tuple(a.shape)}")
    if not be.same_place(a, x):
        raise ValueError(f"{name} is on {be.place(a)} but x is on {be.place(x)}")
    return a


def check_channel_vector(be, name: str, a, x, *, allow_none: bool = True):
    """Check a per-channel parameter or statistic has shape (C,) and lives where x does."""
    return check_vector(be, name, a, x, (x.shape[1],), allow_none=allow_none)


def check_scalar(name: str, value, low: float, high: float, *, low_open: bool = False) -> float:
    """Check a real hyperparameter lies in [low, high] (or (low, high] with low_open)."""
    if isinstance(value, (bool, str)) or not (isinstance(value, (int, float)) or hasattr(value, "__float__")):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    value = float(value)
    ok = (low < value if low_open else low <= value) and value <= high
    if not ok:
        bracket = "(" if low_open else "["
        raise ValueError(f"{name} must lie in {bracket}{low}, {high}], got {value}")
    return value


def check_eps(eps, training: bool) -> float:
    """eps > 0 in training (the batch variance can be 0); eps >= 0 with running statistics, as torch."""
    return check_scalar("eps", eps, 0.0, float("inf"), low_open=training)


def check_nonfinite(policy: str) -> str:
    if policy not in NONFINITE:
        raise ValueError(f"nonfinite must be 'raise' or 'propagate', got {policy!r}")
    return policy


def check_training(training, name: str = "training") -> bool:
    if not (isinstance(training, bool) or type(training).__name__ == "bool_"):   # bool or numpy.bool_
        raise TypeError(f"{name} must be True or False (keyword-only), got {training!r}")
    return bool(training)


def check_one_value(x, m: int, what: str = "channel") -> None:
    """Training-mode statistics need more than one value (torch's message)."""
    if m == 1:
        raise ValueError(f"Expected more than 1 value per {what} when training, got input size {tuple(x.shape)}")


def check_finite(be, name: str, stats) -> None:
    """Raise if a statistic computed from ``name`` is not finite (a cheap proxy for scanning the input)."""
    if stats is not None and not be.all_finite(stats):
        raise ValueError(f"{name} contains NaN or Inf (or values so large that their per-channel sums overflow); "
                         "pass nonfinite='propagate' to let them through as torch does")


def check_saved(saved, kinds: tuple[str, ...], fn: str):
    from .saved import Saved
    if not isinstance(saved, Saved) or saved.kind not in kinds:
        got = saved.kind if isinstance(saved, Saved) else type(saved).__name__
        raise TypeError(f"saved must be the Saved returned by {fn.replace('backward', 'forward')}, got {got}")
    return saved


def check_dy(be, dy, saved) -> None:
    check_array(be, "dy", dy)
    if tuple(dy.shape) != saved.shape:
        raise ShapeError(f"dy must have the forward input's shape {saved.shape}, got {tuple(dy.shape)}")


# ----------------------------------------------------------------------------- torch's module messages
def torch_channels(name: str, c: int, got: int) -> RuntimeError:
    return RuntimeError(f"{name} should contain {c} elements not {got}")


def torch_dim(expected: str, got: int) -> ValueError:
    return ValueError(f"expected {expected} input (got {got}D input)")


def torch_mixed_dtype(x_dtype, p_dtype) -> RuntimeError:
    return RuntimeError(f"mixed dtype (CPU): input of dtype {x_dtype} with parameters of dtype {p_dtype}; "
                        "parameters must have the input's dtype, or float32 for a float16/bfloat16 input")


def torch_eps(eps) -> ValueError:
    return ValueError(f"batch_norm eps must be positive during training, but got {eps}")


def torch_layer_norm_shape(normalized_shape, shape) -> RuntimeError:
    return RuntimeError(f"Given normalized_shape={list(normalized_shape)}, expected input with shape "
                        f"[*, {', '.join(map(str, normalized_shape))}], but got input of size{list(shape)}")


def torch_group_norm_channels(c_weight: int, shape) -> RuntimeError:
    return RuntimeError("Expected weight to be a vector of size equal to the number of channels in input, but got "
                        f"weight of shape [{c_weight}] and input of shape {list(shape)}")


def torch_group_norm_groups(c: int, g: int) -> RuntimeError:
    return RuntimeError(f"Expected number of channels in input to be divisible by num_groups, but got input of "
                        f"shape with {c} channels and num_groups={g}")
