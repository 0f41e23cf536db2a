"""bnlib's one contract: keyword-only per-channel arrays, one saved-state type, Grads from every backward,
a declared backend Protocol, documented functions (shapes, dtypes, errors, source)."""
import importlib
import inspect

import numpy as np
import pytest
import torch

import bnlib
import bnlib.nn as bnn
from bnlib import batch_norm, batch_renorm, group_norm, instance_norm, layer_norm

weight_norm = importlib.import_module("bnlib.weight_norm")
from bnlib._backend import NUMPY, Backend, backend_for

PER_CHANNEL = {"weight", "bias", "running_mean", "running_var", "g"}
x4 = np.random.default_rng(0).normal(2, 3, (4, 6, 3))
ONES, ZEROS = np.ones(6), np.zeros(6)
# (forward, args, kwargs, backward): every functional pair, called the contract's way
PAIRS = [
    (batch_norm.batch_norm_forward, (), dict(weight=ONES, bias=ZEROS, running_mean=ZEROS.copy(), running_var=ONES.copy(),
                                             training=True), batch_norm.batch_norm_backward),
    (instance_norm.instance_norm_forward, (), dict(weight=ONES, bias=ZEROS), instance_norm.instance_norm_backward),
    (layer_norm.layer_norm_forward, (3,), dict(weight=np.ones(3), bias=np.zeros(3)), layer_norm.layer_norm_backward),
    (group_norm.group_norm_forward, (2,), dict(weight=ONES, bias=ZEROS), group_norm.group_norm_backward),
    (batch_renorm.batch_renorm_forward, (), dict(weight=ONES, bias=ZEROS, running_mean=ZEROS.copy(),
                                                 running_var=ONES.copy(), training=True),
     batch_renorm.batch_renorm_backward),
    (batch_renorm.ghost_batch_norm_forward, (), dict(weight=ONES, bias=ZEROS, training=True, virtual_batch_size=2),
     batch_renorm.ghost_batch_norm_backward),
]
FUNCTIONAL_NN = [bnn.batch_norm, bnn.instance_norm, bnn.layer_norm, bnn.group_norm, bnn.sync_batch_norm]


PUBLIC = [getattr(bnlib, n) for n in bnlib.__all__ if n.endswith("_forward")]


@pytest.mark.parametrize("fn", [p[0] for p in PAIRS] + [weight_norm.weight_norm_forward] + FUNCTIONAL_NN + PUBLIC,
                         ids=lambda f: f.__module__ + "." + f.__name__)
def test_per_channel_arrays_are_keyword_only(fn):
    params = inspect.signature(fn).parameters
    arrays = PER_CHANNEL & set(params)
    assert arrays, fn.__name__
    for name in arrays:
        assert params[name].kind is inspect.Parameter.KEYWORD_ONLY, f"{fn.__name__}({name}) can be passed by position"


@pytest.mark.parametrize("pair", PAIRS, ids=lambda p: p[0].__name__)
def test_every_pair_returns_saved_and_grads(pair):
    forward, args, kwargs, backward = pair
    y, saved = forward(x4, *args, **kwargs)
    assert type(saved) is bnlib.Saved and y.shape == x4.shape
    assert saved.normalized().shape == x4.shape
    grads = backward(np.ones_like(x4), saved)
    assert type(grads) is bnlib.Grads and grads.dx.shape == x4.shape
    assert grads.dweight.shape == kwargs["weight"].shape and grads.dbias.shape == kwargs["bias"].shape
    other = next(p for p in PAIRS if p[3] is not backward)
    with pytest.raises(TypeError, match="saved must be the Saved returned by"):
        other[3](np.ones_like(x4), saved)


def test_weight_norm_pair_follows_the_contract():
    v = np.random.default_rng(1).normal(size=(4, 3))
    w, saved = weight_norm.weight_norm_forward(v, g=np.ones(4))
    assert type(saved) is bnlib.Saved
    assert type(weight_norm.weight_norm_backward(np.ones_like(v), saved)) is bnlib.Grads


def test_backends_implement_the_declared_protocol():
    assert isinstance(NUMPY, Backend)
    assert isinstance(backend_for(torch.zeros(1)), Backend)
    for name, member in inspect.getmembers(Backend):
        if not name.startswith("_") and callable(member):
            for be in (NUMPY, backend_for(torch.zeros(1))):
                assert callable(getattr(be, name)), (be.name, name)


def test_layer_norm_lives_in_its_own_file():
    assert layer_norm.layer_norm_forward.__module__ == "bnlib.layer_norm"
    assert not hasattr(group_norm, "layer_norm_forward")


MODULES = [batch_norm, instance_norm, layer_norm, group_norm, batch_renorm, weight_norm]


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.__name__)
def test_functions_are_documented_with_shapes_errors_and_source(module):
    doc = module.__doc__
    assert "arXiv" in doc or "ICML" in doc, f"{module.__name__} names no source"
    assert any(k in doc for k in ("Algorithm", "Eq.", "Section")), f"{module.__name__} names no equation"
    for name in module.__all__:
        fn = getattr(module, name)
        if not callable(fn) or not name.endswith(("_forward", "_backward")):
            continue
        text = fn.__doc__ or ""
        assert "Raises:" in text and "Returns:" in text, f"{name} lacks Returns/Raises"
        if name.endswith("_forward"):
            assert "Args:" in text and "shape" in text and ("dtype" in text or "floating" in text), name
