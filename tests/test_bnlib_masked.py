"""bnlib.masked_batch_norm_forward / masked_batch_norm_backward (NumPy and torch): parity with plain batch
norm when nothing is padded, exactness against float64 formulas, gradients, padding ignored, errors."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import bnlib
from bnlib import (batch_norm_backward, batch_norm_forward, masked_batch_norm_backward, masked_batch_norm_forward,
                   numerical_gradient, rel_error)


def ragged(rng, n=5, t=7, d=4, lengths=None, dtype=np.float64, loc=12.0, pad=np.nan):
    """x (n, t, d) with per-feature means far from 0; mask of right-padded rows; padding filled with ``pad``."""
    lengths = rng.integers(1, t + 1, n) if lengths is None else np.asarray(lengths)
    mask = np.arange(t)[None, :] < lengths[:, None]
    x = rng.normal(loc, 5.0, (n, t, d)) * rng.uniform(0.5, 2, d)
    x[~mask] = pad
    w, b = rng.normal(1, 0.5, d), rng.normal(0, 1, d)
    return x.astype(dtype), mask, w.astype(dtype), b.astype(dtype)


def reference64(x, mask, w, b, eps=1e-5):
    """Independent float64 formula: per-feature statistics of the real tokens; 0 at padding."""
    real = x[mask].astype(np.float64)
    mu, var = real.mean(0), ((real - real.mean(0)) ** 2).mean(0)
    y = np.zeros(x.shape)
    y[mask] = (real - mu) / np.sqrt(var + eps) * w + b
    return y, mu, var, len(real)


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_all_real_mask_is_plain_batch_norm_over_tokens(backend):
    """Nothing padded: exactly batch_norm_forward/backward over the (N*T, D) tokens, running statistics too."""
    rng = np.random.default_rng(0)
    x, mask, w, b = ragged(rng, lengths=[7] * 5)
    dy = rng.normal(size=x.shape)
    conv = (lambda a: a) if backend == "numpy" else torch.tensor
    rm1, rv1, rm2, rv2 = (conv(a) for a in (np.zeros(4), np.ones(4), np.zeros(4), np.ones(4)))
    for _ in range(3):
        y, s = masked_batch_norm_forward(conv(x), conv(mask), weight=conv(w), bias=conv(b), running_mean=rm1,
                                         running_var=rv1, training=True, momentum=0.2)
        y2, s2 = batch_norm_forward(conv(x.reshape(-1, 4)), weight=conv(w), bias=conv(b), running_mean=rm2,
                                    running_var=rv2, training=True, momentum=0.2)
    assert type(s) is bnlib.Saved and type(y) is type(conv(x))
    assert np.array_equal(np.asarray(y).reshape(-1, 4), np.asarray(y2))
    assert np.array_equal(np.asarray(rm1), np.asarray(rm2)) and np.array_equal(np.asarray(rv1), np.asarray(rv2))
    g, g2 = masked_batch_norm_backward(conv(dy), s), batch_norm_backward(conv(dy.reshape(-1, 4)), s2)
    for a, e in zip(g, g2):
        assert np.array_equal(np.asarray(a).reshape(np.shape(e)), np.asarray(e))
    ye, _ = masked_batch_norm_forward(conv(x), conv(mask), weight=conv(w), bias=conv(b), running_mean=rm1,
                                      running_var=rv1, training=False)
    ye2, _ = batch_norm_forward(conv(x.reshape(-1, 4)), weight=conv(w), bias=conv(b), running_mean=rm2,
                                running_var=rv2, training=False)
    assert np.array_equal(np.asarray(ye).reshape(-1, 4), np.asarray(ye2))


@pytest.mark.parametrize("dtype,tol", [(np.float64, 1e-12), (np.float32, 1e-5)])
@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_ragged_batches_match_the_float64_formula(backend, dtype, tol):
    """Statistics over real tokens only, padding (NaN here) ignored and 0 in the output; running_var unbiased
    over m real tokens; float32 at mean 12 and 5 sigma within 1e-5 of float64."""
    rng = np.random.default_rng(1)
    x, mask, w, b = ragged(rng, n=6, t=9, d=5, lengths=[9, 4, 1, 6, 2, 3], dtype=dtype)
    conv = (lambda a: a) if backend == "numpy" else torch.tensor
    rm, rv = conv(np.zeros(5, dtype)), conv(np.ones(5, dtype))
    y, saved = masked_batch_norm_forward(conv(x), conv(mask), weight=conv(w), bias=conv(b), running_mean=rm,
                                         running_var=rv, training=True)
    ref, mu, var, m = reference64(x, mask, w, b)
    y = np.asarray(y)
    assert y.dtype == dtype and np.all(y[~mask] == 0)
    assert np.abs(y.astype(np.float64) - ref).max() <= tol * np.abs(ref).max()
    assert rel_error(np.asarray(rm), 0.1 * mu) < 10 * tol
    assert rel_error(np.asarray(rv), 0.9 + 0.1 * var * m / (m - 1)) < 10 * tol
    xhat = np.asarray(saved.normalized())
    assert xhat.shape == x.shape and np.all(xhat[~mask] == 0)


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_matches_torch_autograd_on_the_gathered_tokens(backend):
    """Forward, running statistics and all three gradients against torch's batch_norm on x[mask], in
    training and eval mode; dx is exactly 0 at padded positions whatever dy holds there."""
    rng = np.random.default_rng(2)
    x, mask, w, b = ragged(rng, n=4, t=6, d=3, lengths=[6, 2, 5, 3], pad=1e6)
    dy = rng.normal(size=x.shape)
    dy[~mask] = 1e9
    conv = (lambda a: a) if backend == "numpy" else torch.tensor
    rm, rv = rng.normal(size=3), rng.uniform(0.5, 2, 3)
    rm_t, rv_t = torch.tensor(rm), torch.tensor(rv)
    rm_l, rv_l = conv(rm.copy()), conv(rv.copy())
    for training in (True, False):
        y, saved = masked_batch_norm_forward(conv(x), conv(mask), weight=conv(w), bias=conv(b), running_mean=rm_l,
                                             running_var=rv_l, training=training, momentum=0.3)
        dx, dw, db = (np.asarray(a) for a in masked_batch_norm_backward(conv(dy), saved))
        xt, wt, bt = (torch.tensor(a, requires_grad=True) for a in (x[mask], w, b))
        yt = F.batch_norm(xt, rm_t, rv_t, wt, bt, training, 0.3, 1e-5)
        yt.backward(torch.tensor(dy[mask]))
        assert rel_error(np.asarray(y)[mask], yt.detach().numpy()) < 1e-12
        assert rel_error(np.asarray(rm_l), rm_t.numpy()) < 1e-12 and rel_error(np.asarray(rv_l), rv_t.numpy()) < 1e-12
        assert np.all(dx[~mask] == 0)
        assert rel_error(dx[mask], xt.grad.numpy()) < 1e-9
        assert rel_error(dw, wt.grad.numpy()) < 1e-10 and rel_error(db, bt.grad.numpy()) < 1e-10


def test_gradients_match_centered_differences_and_invariants_hold():
    rng = np.random.default_rng(3)
    x, mask, w, b = ragged(rng, n=4, t=5, d=3, lengths=[5, 1, 3, 2], pad=0.0)
    dy = rng.normal(size=x.shape)
    _, saved = masked_batch_norm_forward(x, mask, weight=w, bias=b, training=True)
    dx, dw, db = masked_batch_norm_backward(dy, saved)

    def f(x_=x, w_=w, b_=b):
        return masked_batch_norm_forward(x_, mask, weight=w_, bias=b_, training=True)[0]
    assert rel_error(dx, numerical_gradient(lambda a: f(x_=a), x, dy)) < 1e-7
    assert rel_error(dw, numerical_gradient(lambda a: f(w_=a), w, dy)) < 1e-7
    assert rel_error(db, numerical_gradient(lambda a: f(b_=a), b, dy)) < 1e-7
    # over the real tokens: sum(dx) = 0 per feature (the mean term); dweight, dbias sum real tokens only
    assert np.abs(dx[mask].sum(0)).max() < 1e-12 * np.abs(dx).sum()
    assert rel_error(db, dy[mask].sum(0)) < 1e-14
    assert rel_error(dw, (dy * saved.normalized())[mask].sum(0)) < 1e-12


def test_no_real_token_gives_zeros_and_keeps_running_statistics():
    x = np.ones((2, 3, 4))
    mask = np.zeros((2, 3), bool)
    rm, rv = np.full(4, 0.5), np.full(4, 2.0)
    y, saved = masked_batch_norm_forward(x, mask, weight=np.ones(4), bias=np.zeros(4), running_mean=rm,
                                         running_var=rv, training=True)
    assert np.all(y == 0) and np.all(rm == 0.5) and np.all(rv == 2.0)
    dx, dw, db = masked_batch_norm_backward(np.ones_like(x), saved)
    assert np.all(dx == 0) and np.all(dw == 0) and np.all(db == 0) and dw.shape == (4,)


def test_features_last_with_any_leading_shape_and_no_affine():
    rng = np.random.default_rng(4)
    x = rng.normal(3, 2, (10, 4))
    mask = rng.random(10) < 0.6
    mask[:2] = True
    y, saved = masked_batch_norm_forward(x, mask, training=True)
    ref, _ = batch_norm_forward(x[mask], training=True)
    assert np.array_equal(y[mask], ref) and np.all(y[~mask] == 0)
    g = masked_batch_norm_backward(np.ones_like(x), saved)
    assert g.dweight is None and g.dbias is None


def test_inputs_not_modified():
    rng = np.random.default_rng(5)
    x, mask, w, b = ragged(rng, pad=7.0)
    copies = [a.copy() for a in (x, mask, w, b)]
    _, saved = masked_batch_norm_forward(x, mask, weight=w, bias=b, training=True)
    dy = rng.normal(size=x.shape)
    dy0 = dy.copy()
    masked_batch_norm_backward(dy, saved)
    assert all(np.array_equal(a, c) for a, c in zip((x, mask, w, b), copies)) and np.array_equal(dy, dy0)


@pytest.mark.parametrize("kwargs,exc,match", [
    (dict(mask=np.ones((2, 3), dtype=np.int64)), TypeError, "boolean"),
    (dict(mask=[[True] * 3] * 2), TypeError, "mask must be a boolean numpy.ndarray"),
    (dict(mask=np.ones((3, 2), bool)), ValueError, r"mask must have shape \(2, 3\)"),
    (dict(mask=torch.ones(2, 3, dtype=torch.bool)), TypeError, "mask must be a boolean numpy.ndarray"),
    (dict(mask=np.eye(2, 3, dtype=bool)[:1].repeat(2, 0) & np.array([[True], [False]])), ValueError,
     "more than 1 real token"),
    (dict(weight=np.ones(3)), ValueError, r"weight must have shape"),
    (dict(training=False), ValueError, "required in eval mode"),
    (dict(training=1), TypeError, "training must be True or False"),
    (dict(momentum=2.0), ValueError, "momentum"),
])
def test_bad_input_gets_a_clear_error(kwargs, exc, match):
    args = dict(mask=np.ones((2, 3), bool), weight=np.ones(4), bias=np.zeros(4), training=True)
    args.update(kwargs)
    mask = args.pop("mask")
    with pytest.raises(exc, match=match):
        masked_batch_norm_forward(np.ones((2, 3, 4)), mask, **args)


def test_nonfinite_real_tokens_raise_and_shape_errors_are_runtime_errors_too():
    x = np.ones((2, 3, 4))
    x[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN or Inf"):
        masked_batch_norm_forward(x, np.ones((2, 3), bool), training=True)
    with pytest.raises(RuntimeError):
        masked_batch_norm_forward(np.ones((2, 3, 4)), np.ones((2, 4), bool), training=True)


def test_backward_rejects_wrong_dy_and_foreign_state():
    x = np.random.default_rng(6).normal(size=(2, 3, 4))
    _, saved = masked_batch_norm_forward(x, np.ones((2, 3), bool), training=True)
    with pytest.raises(ValueError, match="dy must have the forward input's shape"):
        masked_batch_norm_backward(np.ones((2, 3, 5)), saved)
    _, other = batch_norm_forward(x[:, 0], training=True)
    with pytest.raises(TypeError, match="saved must be the Saved returned by masked_batch_norm_forward"):
        masked_batch_norm_backward(np.ones((2, 3, 4)), other)
    with pytest.raises(TypeError, match="saved must be the Saved returned by batch_norm_forward"):
        batch_norm_backward(np.ones((2, 3, 4)), saved)


def test_exported_with_keyword_only_per_feature_arrays():
    import inspect
    params = inspect.signature(bnlib.masked_batch_norm_forward).parameters
    for name in ("weight", "bias", "running_mean", "running_var", "training"):
        assert params[name].kind is inspect.Parameter.KEYWORD_ONLY
    assert bnlib.masked_batch_norm_forward.__module__ == "bnlib.masked"
