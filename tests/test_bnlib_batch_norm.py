"""bnlib.batch_norm_forward / batch_norm_backward (NumPy): parity, exactness, invariants, errors."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import bnlib
from bnlib import batch_norm_backward, batch_norm_forward, numerical_gradient, rel_error

SHAPES = [(8, 5), (4, 3, 7), (4, 3, 5, 6), (2, 2, 2, 3, 2)]


def make(shape, rng, dtype=np.float64, loc=12.0, scale=5.0):
    c = shape[1]
    x = (rng.normal(loc, scale, shape)).astype(dtype)
    w = rng.normal(1, 0.5, c).astype(dtype)
    b = rng.normal(0, 1, c).astype(dtype)
    return x, w, b


def reference64(x, w, b, eps=1e-5):
    """Independent float64 formula (no bnlib code): batch statistics over all axes but 1."""
    x = x.astype(np.float64)
    axes = tuple(i for i in range(x.ndim) if i != 1)
    shape = [1] * x.ndim
    shape[1] = -1
    mu = x.mean(axes, keepdims=True)
    var = ((x - mu) ** 2).mean(axes, keepdims=True)
    y = (x - mu) / np.sqrt(var + eps)
    if w is not None:
        y = y * w.astype(np.float64).reshape(shape)
    if b is not None:
        y = y + b.astype(np.float64).reshape(shape)
    return y


@pytest.mark.parametrize("shape", SHAPES)
def test_matches_torch_functional_over_steps_both_modes(shape):
    rng = np.random.default_rng(0)
    c = shape[1]
    rm, rv = rng.normal(size=c), rng.uniform(0.5, 2, c)
    rm_t, rv_t = torch.tensor(rm), torch.tensor(rv)
    for step in range(4):
        x, w, b = make(shape, rng)
        y, saved = batch_norm_forward(x, weight=w, bias=b, running_mean=rm, running_var=rv, training=True, momentum=0.2)
        xt, wt, bt = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
        yt = F.batch_norm(xt, rm_t, rv_t, wt, bt, training=True, momentum=0.2)
        dy = rng.normal(size=shape)
        yt.backward(torch.tensor(dy))
        dx, dw, db = batch_norm_backward(dy, saved)
        assert rel_error(y, yt.detach().numpy()) < 1e-12
        assert rel_error(rm, rm_t.numpy()) < 1e-12
        assert rel_error(rv, rv_t.numpy()) < 1e-12
        assert rel_error(dx, xt.grad.numpy()) < 1e-9
        assert rel_error(dw, wt.grad.numpy()) < 1e-12
        assert rel_error(db, bt.grad.numpy()) < 1e-12
    # eval mode with the accumulated statistics, gradients included
    x, w, b = make(shape, rng)
    y, saved = batch_norm_forward(x, weight=w, bias=b, running_mean=rm, running_var=rv, training=False)
    xt, wt, bt = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
    yt = F.batch_norm(xt, rm_t, rv_t, wt, bt, training=False)
    dy = rng.normal(size=shape)
    yt.backward(torch.tensor(dy))
    grads = batch_norm_backward(dy, saved)
    assert isinstance(grads, bnlib.Grads) and grads.dx is grads[0]
    assert rel_error(y, yt.detach().numpy()) < 1e-12
    assert rel_error(grads.dx, xt.grad.numpy()) < 1e-12
    assert rel_error(grads.dweight, wt.grad.numpy()) < 1e-12


@pytest.mark.parametrize("module_cls,shape", [(torch.nn.BatchNorm1d, (16, 6)), (torch.nn.BatchNorm1d, (8, 6, 5)),
                                              (torch.nn.BatchNorm2d, (4, 6, 5, 5))])
def test_matches_torch_modules_running_statistics(module_cls, shape):
    rng = np.random.default_rng(1)
    mod = module_cls(shape[1], momentum=0.1).double()
    with torch.no_grad():
        mod.weight.copy_(torch.tensor(rng.normal(1, 0.3, shape[1])))
        mod.bias.copy_(torch.tensor(rng.normal(0, 1, shape[1])))
    w, b = mod.weight.detach().numpy().copy(), mod.bias.detach().numpy().copy()
    rm, rv = np.zeros(shape[1]), np.ones(shape[1])
    for _ in range(5):
        x = rng.normal(3, 2, shape)
        y, _ = batch_norm_forward(x, weight=w, bias=b, running_mean=rm, running_var=rv, training=True)
        assert rel_error(y, mod.train()(torch.tensor(x)).detach().numpy()) < 1e-12
    np.testing.assert_allclose(rm, mod.running_mean.numpy(), rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(rv, mod.running_var.numpy(), rtol=1e-13)
    x = rng.normal(3, 2, shape)
    y, _ = batch_norm_forward(x, weight=w, bias=b, running_mean=rm, running_var=rv, training=False)
    assert rel_error(y, mod.eval()(torch.tensor(x)).detach().numpy()) < 1e-12


@pytest.mark.parametrize("shape", [(100_000, 4), (64, 16, 32, 32), (256, 512, 1, 1), (32, 512, 7, 7), (16, 20_000)])
def test_float32_far_from_zero_is_exact(shape):
    """Mean 50 standard deviations from 0: max abs error <= 1e-5 against float64, whichever way the NumPy
    backend cuts the array (slabs of whole channels, or blocks of samples)."""
    rng = np.random.default_rng(2)
    x = (50 + rng.normal(size=shape)).astype(np.float32)
    y, saved = batch_norm_forward(x, training=True)
    assert y.dtype == np.float32
    err = np.abs(y.astype(np.float64) - reference64(x, None, None)).max()
    assert err <= 1e-5, err
    dy = rng.normal(size=shape).astype(np.float32)
    dx = batch_norm_backward(dy, saved).dx
    xt = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    F.batch_norm(xt, None, None, training=True).backward(torch.tensor(dy, dtype=torch.float64))
    assert np.abs(dx - xt.grad.numpy()).max() <= 1e-4 * np.abs(xt.grad.numpy()).max()


def test_both_plans_of_the_numpy_backend_agree():
    """A shape cut into channel slabs and one cut into sample blocks give the float64 answer."""
    be = bnlib._backend.NUMPY
    rng = np.random.default_rng(9)
    for shape, kind in [((32, 64, 56), "slabs"), ((40_000, 8, 1), "rows")]:
        assert be.plan(*shape, 4)[0] == kind
        x, w, b = make(shape, rng)
        y, saved = batch_norm_forward(x, weight=w, bias=b, training=True)
        np.testing.assert_allclose(y, reference64(x, w, b), rtol=1e-10, atol=1e-10)


def test_gradients_match_centered_differences():
    rng = np.random.default_rng(3)
    x, w, b = make((6, 4, 3), rng)
    dy = rng.normal(size=x.shape)
    _, saved = batch_norm_forward(x, weight=w, bias=b, training=True)
    dx, dw, db = batch_norm_backward(dy, saved)

    def f(x_=None, w_=None, b_=None):
        return batch_norm_forward(x if x_ is None else x_, weight=w if w_ is None else w_,
                                  bias=b if b_ is None else b_, training=True)[0]
    assert rel_error(dx, numerical_gradient(lambda a: f(x_=a), x, dy)) < 1e-7
    assert rel_error(dw, numerical_gradient(lambda a: f(w_=a), w, dy)) < 1e-7
    assert rel_error(db, numerical_gradient(lambda a: f(b_=a), b, dy)) < 1e-7


@settings(max_examples=60, deadline=None)
@given(n=st.integers(2, 7), c=st.integers(1, 5), spatial=st.lists(st.integers(1, 4), max_size=2),
       dtype=st.sampled_from([np.float32, np.float64]), seed=st.integers(0, 2**31 - 1),
       loc=st.floats(-100, 100), scale=st.floats(0.1, 10))
def test_property_forward_and_invariants(n, c, spatial, dtype, seed, loc, scale):
    shape = (n, c, *spatial)
    rng = np.random.default_rng(seed)
    x, w, b = make(shape, rng, dtype, loc, scale)
    y, saved = batch_norm_forward(x, weight=w, bias=b, training=True, eps=1e-12)
    assert y.shape == x.shape and y.dtype == x.dtype
    tol = 1e-9 if dtype == np.float64 else 1e-3
    assert np.abs(y - reference64(x, w, b, eps=1e-12)).max() <= tol * (1 + np.abs(w).max() + np.abs(b).max())
    dy = rng.normal(size=shape).astype(dtype)
    dx, dw, db = batch_norm_backward(dy, saved)
    assert dx.shape == x.shape and dw.shape == (c,) and db.shape == (c,)
    axes = tuple(i for i in range(x.ndim) if i != 1)
    # Per channel: sum(dx) == 0 and sum(dx * xhat) == 0 (exact as eps -> 0), relative to the gradient size.
    xhat = saved.normalized().astype(np.float64)
    size = np.abs(dy.astype(np.float64) * w.reshape([1, c] + [1] * len(spatial)) / x.std(axes, keepdims=True)).sum(axes) + 1e-30
    assert np.all(np.abs(dx.astype(np.float64).sum(axes)) / size <= 10 * tol)
    # sum(dx * xhat) is exactly 0 only as eps -> 0: it is proportional to eps / (var + eps).
    eps_term = 1e-12 / x.astype(np.float64).var(axes)
    assert np.all(np.abs((dx.astype(np.float64) * xhat).sum(axes)) / size <= 10 * tol + 10 * eps_term)


def test_float16_input_finite_and_accurate_with_float32_weights():
    rng = np.random.default_rng(4)
    x = rng.normal(3, 2, (32, 8)).astype(np.float16)
    w, b = np.ones(8, np.float32), np.zeros(8, np.float32)
    y, saved = batch_norm_forward(x, weight=w, bias=b, training=True)
    assert y.dtype == np.float16 and np.isfinite(y).all()
    assert np.abs(y.astype(np.float64) - reference64(x, None, None)).max() < 5e-3
    dx, dw, db = batch_norm_backward(rng.normal(size=x.shape).astype(np.float16), saved)
    assert dx.dtype == np.float16 and dw.dtype == db.dtype == np.float32   # the parameters' dtype


def test_constant_channel_gives_beta_and_finite_gradient():
    x = np.ones((5, 2))
    x[:, 1] = np.arange(5)
    b = np.array([0.5, -1.0])
    y, saved = batch_norm_forward(x, weight=np.ones(2), bias=b, training=True)
    assert np.all(y[:, 0] == 0.5)
    dx, _, _ = batch_norm_backward(np.ones_like(x), saved)
    assert np.isfinite(dx).all()


def test_inputs_not_modified_and_running_stats_updated_in_place():
    rng = np.random.default_rng(5)
    x, w, b = make((6, 3), rng)
    x0 = x.copy()
    rm, rv = np.zeros(3), np.ones(3)
    rm_id, rv_id = id(rm), id(rv)
    batch_norm_forward(x, weight=w, bias=b, running_mean=rm, running_var=rv, training=True)
    assert np.array_equal(x, x0)
    assert id(rm) == rm_id and not np.array_equal(rm, np.zeros(3))
    m = x.shape[0]
    np.testing.assert_allclose(rv, 0.9 + 0.1 * x.var(0) * m / (m - 1))


def test_no_affine_returns_none_gradients():
    rng = np.random.default_rng(6)
    x = rng.normal(size=(4, 3))
    _, saved = batch_norm_forward(x, training=True)
    dx, dw, db = batch_norm_backward(rng.normal(size=x.shape), saved)
    assert dw is None and db is None and dx.shape == x.shape


def test_empty_batch_gives_empty_output_zero_grads_and_keeps_running_stats():
    x = np.ones((0, 3, 4))
    rm, rv = np.full(3, 0.5), np.full(3, 2.0)
    y, saved = batch_norm_forward(x, weight=np.ones(3), bias=np.zeros(3), running_mean=rm, running_var=rv,
                                  training=True)
    assert y.shape == x.shape and np.array_equal(rm, np.full(3, 0.5)) and np.array_equal(rv, np.full(3, 2.0))
    dx, dw, db = batch_norm_backward(np.ones((0, 3, 4)), saved)
    assert dx.shape == x.shape and np.array_equal(dw, np.zeros(3)) and np.array_equal(db, np.zeros(3))


def test_nonfinite_raises_by_default_and_propagates_on_request():
    x = np.array([[np.nan, 1.0], [2.0, 3.0], [4.0, 5.0]])
    with pytest.raises(ValueError, match="NaN or Inf"):
        batch_norm_forward(x, training=True)
    y, saved = batch_norm_forward(x, training=True, nonfinite="propagate")
    assert np.isnan(y[:, 0]).all() and np.isfinite(y[:, 1]).all()
    dx = batch_norm_backward(np.ones_like(x), saved).dx
    assert np.isnan(dx[:, 0]).all() and np.isfinite(dx[:, 1]).all()


def test_eps_zero_is_accepted_in_eval_mode_only():
    x = np.arange(6.0).reshape(3, 2)
    y, _ = batch_norm_forward(x, running_mean=np.zeros(2), running_var=np.ones(2), training=False, eps=0.0)
    np.testing.assert_array_equal(y, x)
    with pytest.raises(ValueError, match="eps must lie in"):
        batch_norm_forward(x, training=True, eps=0.0)


BAD = [
    (dict(x=np.ones((1, 3))), ValueError, "Expected more than 1 value per channel when training"),
    (dict(x=np.ones((1, 3, 1, 1))), ValueError, "more than 1 value per channel"),
    (dict(x=np.ones((4, 3), dtype=np.int64)), TypeError, "dtype int64"),
    (dict(x=[[1.0, 2.0], [3.0, 4.0]]), TypeError, "numpy.ndarray"),
    (dict(x=np.ones(4)), bnlib.ShapeError, "ndim 1"),
    (dict(x=np.array([[np.nan, 1.0], [2.0, 3.0]])), ValueError, "NaN or Inf"),
    (dict(x=np.array([[np.inf, 1.0], [2.0, 3.0]])), ValueError, "NaN or Inf"),
    (dict(weight=np.ones(2)), bnlib.ShapeError, r"weight must have shape \(C,\) = \(3,\)"),
    (dict(bias=np.ones((3, 1))), RuntimeError, "bias must have shape"),
    (dict(running_mean=np.zeros(3), running_var=None), ValueError, "together"),
    (dict(running_var=np.ones(4), running_mean=np.zeros(4)), ValueError, "running_mean must have shape"),
    (dict(training=False), ValueError, "required in eval mode"),
    (dict(training=1), TypeError, "training must be True or False"),
    (dict(momentum=1.5), ValueError, "momentum must lie in"),
    (dict(eps=-1.0), ValueError, "eps must lie in"),
    (dict(eps="1e-5"), TypeError, "eps must be a real number"),
    (dict(nonfinite="ignore"), ValueError, "nonfinite must be"),
    (dict(x=np.array([[np.nan, 1.0], [2.0, 3.0]]), training=False, running_mean=np.zeros(2),
          running_var=np.ones(2)), ValueError, "NaN or Inf"),
]


@pytest.mark.parametrize("kwargs,exc,match", BAD)
def test_bad_input_gets_a_clear_error(kwargs, exc, match):
    args = dict(x=np.ones((4, 3)) * np.arange(4)[:, None], weight=None, bias=None, running_mean=None,
                running_var=None, training=True, momentum=0.1, eps=1e-5)
    args.update(kwargs)
    x = args.pop("x")
    with pytest.raises(exc, match=match):
        bnlib.batch_norm.batch_norm_forward(x, **args)


def test_shape_errors_are_value_and_runtime_errors():
    with pytest.raises(ValueError):
        batch_norm_forward(np.ones((4, 3)), weight=np.ones(2), training=True)
    with pytest.raises(RuntimeError):
        batch_norm_forward(np.ones((4, 3)), weight=np.ones(2), training=True)


def test_per_channel_arrays_are_keyword_only():
    x, w, b = np.ones((4, 3)) * np.arange(4)[:, None], np.ones(3), np.zeros(3)
    with pytest.raises(TypeError):
        bnlib.batch_norm_forward(x, w, b, training=True)
    with pytest.raises(TypeError, match="training"):
        bnlib.batch_norm_forward(x, weight=w)


def test_backward_rejects_wrong_dy_and_foreign_state():
    x = np.arange(12.0).reshape(4, 3)
    _, saved = batch_norm_forward(x, training=True)
    with pytest.raises(ValueError, match="dy must have the forward input's shape"):
        batch_norm_backward(np.ones((3, 3)), saved)
    with pytest.raises(TypeError, match="Saved"):
        batch_norm_backward(np.ones((4, 3)), (1, 2))
    _, ln_saved = bnlib.layer_norm_forward(x, 3)
    with pytest.raises(TypeError, match="batch_norm_forward, got layer_norm"):
        batch_norm_backward(x, ln_saved)


def test_rel_error_and_numerical_gradient():
    assert rel_error([1.0, 2.0], [1.0, 2.0]) == 0.0
    assert rel_error([1.0], [3.0]) == pytest.approx(0.5)
    with pytest.raises(ValueError):
        rel_error([1.0], [1.0, 2.0])
    x = np.array([1.0, -2.0, 3.0])
    g = numerical_gradient(lambda a: a ** 3, x, np.ones(3))
    np.testing.assert_allclose(g, 3 * x ** 2, rtol=1e-8)
    assert np.array_equal(x, [1.0, -2.0, 3.0])  # restored
    with pytest.raises(TypeError):
        numerical_gradient(lambda a: a, x.astype(np.float32), np.ones(3))


def test_threads_setting():
    x = np.random.default_rng(7).normal(size=(8, 64, 9))
    ref, _ = batch_norm_forward(x, training=True)
    try:
        bnlib.set_num_threads(1)
        y, _ = batch_norm_forward(x, training=True)
    finally:
        bnlib.set_num_threads(2)
    np.testing.assert_array_equal(y, ref)
    with pytest.raises(ValueError):
        bnlib.set_num_threads(0)

