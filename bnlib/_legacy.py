"""The positional call forms of bnlib 0.1, kept as thin wrappers while the course moves to the keyword-only
contract (removed once every caller uses it). Each forwards to the new function; see its docstring."""
from __future__ import annotations

import functools

from . import batch_norm as _bn
from . import batch_renorm as _br
from . import group_norm as _gn
from . import instance_norm as _in
from . import layer_norm as _ln
from . import weight_norm as _wn
from .saved import Saved

BatchNormSaved = Saved
NormSaved = Saved


def _positional(new, names):
    @functools.wraps(new)
    def wrapper(x, *args, **kwargs):
        if len(args) > len(names):
            raise TypeError(f"{new.__name__} takes at most {len(names) + 1} positional arguments")
        for name, value in zip(names, args):
            if name in kwargs:
                raise TypeError(f"{new.__name__} got multiple values for argument {name!r}")
            kwargs[name] = value
        return new(x, **kwargs)
    return wrapper


_BN = ("weight", "bias", "running_mean", "running_var", "training", "momentum", "eps")
batch_norm_forward = _positional(_bn.batch_norm_forward, _BN)
batch_renorm_forward = _positional(_br.batch_renorm_forward, _BN[:5] + ("r_max", "d_max", "momentum", "eps"))
ghost_batch_norm_forward = _positional(_br.ghost_batch_norm_forward, _BN[:5] + ("virtual_batch_size", "momentum", "eps"))


@functools.wraps(_ln.layer_norm_forward)
def layer_norm_forward(x, normalized_shape, *args, **kwargs):
    return _positional(lambda x_, **kw: _ln.layer_norm_forward(x_, normalized_shape, **kw),
                       ("weight", "bias", "eps"))(x, *args, **kwargs)


@functools.wraps(_gn.group_norm_forward)
def group_norm_forward(x, num_groups, *args, **kwargs):
    return _positional(lambda x_, **kw: _gn.group_norm_forward(x_, num_groups, **kw),
                       ("weight", "bias", "eps"))(x, *args, **kwargs)


instance_norm_forward = _positional(_in.instance_norm_forward, ("weight", "bias", "eps"))


def weight_norm(v, g, dim=0):
    """w = g * v / ||v|| (the 0.1 form of :func:`bnlib.weight_norm_forward`, which see)."""
    return _wn.weight_norm_forward(v, g=g, dim=dim)[0]


def weight_norm_backward(dw, *args, **kwargs):
    """(dv, dg): the 0.1 form ``weight_norm_backward(dw, v, g, dim)`` or the new ``(dw, saved)``."""
    if len(args) == 1 and not kwargs:
        return _wn.weight_norm_backward(dw, args[0])
    v, g = args[0], args[1]
    dim = args[2] if len(args) > 2 else kwargs.get("dim", 0)
    return tuple(_wn.weight_norm_backward(dw, _wn.weight_norm_forward(v, g=g, dim=dim)[1])[:2])
