"""bnlib's normalization family: layer norm, group/instance norm, batch renorm, ghost BN, weight norm,
PreciseBN, and the bnlib.nn drop-ins for torch.nn.LayerNorm / GroupNorm."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import bnlib
import bnlib.nn as bnn

BACKENDS = ["numpy", "torch"]


def to(backend, *arrays):
    return [a if backend == "numpy" else torch.tensor(a) for a in arrays]


def np_(a):
    return a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else a


def torch_ref(fn, x, w, b, dy):
    xt, wt, bt = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
    y = fn(xt, wt, bt)
    y.backward(torch.tensor(dy))
    return y.detach().numpy(), xt.grad.numpy(), wt.grad.numpy(), bt.grad.numpy()


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("shape,normalized", [((8, 10), (10,)), ((4, 5, 6), (5, 6)), ((2, 3, 4, 5), (5,))])
def test_layer_norm_matches_torch(backend, shape, normalized):
    rng = np.random.default_rng(0)
    x, dy = rng.normal(3, 2, shape), rng.normal(size=shape)
    w, b = rng.normal(size=normalized), rng.normal(size=normalized)
    ref = torch_ref(lambda x_, w_, b_: F.layer_norm(x_, normalized, w_, b_), x, w, b, dy)
    xb, wb, bb, dyb = to(backend, x, w, b, dy)
    y, saved = bnlib.layer_norm_forward(xb, normalized, weight=wb, bias=bb)
    got = (y, *bnlib.layer_norm_backward(dyb, saved))
    for g, r in zip(got, ref):
        np.testing.assert_allclose(np_(g), r, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("groups", [1, 2, 3, 6])
def test_group_norm_matches_torch(backend, groups):
    rng = np.random.default_rng(1)
    shape = (4, 6, 3, 5)
    x, dy, w, b = rng.normal(-7, 3, shape), rng.normal(size=shape), rng.normal(size=6), rng.normal(size=6)
    ref = torch_ref(lambda x_, w_, b_: F.group_norm(x_, groups, w_, b_), x, w, b, dy)
    xb, wb, bb, dyb = to(backend, x, w, b, dy)
    y, saved = bnlib.group_norm_forward(xb, groups, weight=wb, bias=bb)
    for g, r in zip((y, *bnlib.group_norm_backward(dyb, saved)), ref):
        np.testing.assert_allclose(np_(g), r, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("use_input_stats", [True, False])
def test_instance_norm_matches_torch_with_running_statistics(backend, use_input_stats):
    rng = np.random.default_rng(2)
    x, dy = rng.normal(2, 3, (3, 4, 5, 5)), rng.normal(size=(3, 4, 5, 5))
    w, b, rm, rv = rng.normal(size=4), rng.normal(size=4), rng.normal(size=4), rng.uniform(0.5, 2, 4)
    rm_t, rv_t = torch.tensor(rm), torch.tensor(rv)
    ref = torch_ref(lambda x_, w_, b_: F.instance_norm(x_, rm_t, rv_t, w_, b_, use_input_stats, 0.2), x, w, b, dy)
    xb, wb, bb, dyb, rmb, rvb = to(backend, x, w, b, dy, rm, rv)
    y, saved = bnlib.instance_norm_forward(xb, weight=wb, bias=bb, running_mean=rmb, running_var=rvb,
                                           use_input_stats=use_input_stats, momentum=0.2)
    for g, r in zip((y, *bnlib.instance_norm_backward(dyb, saved)), ref):
        np.testing.assert_allclose(np_(g), r, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(np_(rmb), rm_t.numpy(), rtol=1e-12)
    np.testing.assert_allclose(np_(rvb), rv_t.numpy(), rtol=1e-12)


def test_instance_norm_is_group_norm_with_one_channel_per_group():
    rng = np.random.default_rng(2)
    x, w, b = rng.normal(size=(3, 4, 5, 5)), rng.normal(size=4), rng.normal(size=4)
    y, _ = bnlib.instance_norm_forward(x, weight=w, bias=b)
    ref, _ = bnlib.group_norm_forward(x, 4, weight=w, bias=b)
    np.testing.assert_allclose(y, ref, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("kind", ["layer", "group"])
def test_float32_far_from_zero(kind):
    rng = np.random.default_rng(3)
    x = (50 + rng.normal(size=(64, 8, 16, 16))).astype(np.float32)
    if kind == "layer":
        y, _ = bnlib.layer_norm_forward(x, (8, 16, 16))
        ref = F.layer_norm(torch.tensor(x, dtype=torch.float64), (8, 16, 16)).numpy()
    else:
        y, _ = bnlib.group_norm_forward(x, 4)
        ref = F.group_norm(torch.tensor(x, dtype=torch.float64), 4).numpy()
    assert np.abs(y - ref).max() <= 1e-5


def test_family_bad_input():
    with pytest.raises(bnlib.ShapeError, match="trailing dimensions"):
        bnlib.layer_norm_forward(np.ones((4, 5)), (4,))
    with pytest.raises(bnlib.ShapeError, match="divisible by num_groups"):
        bnlib.group_norm_forward(np.ones((2, 6, 3)), 4)
    with pytest.raises(TypeError, match="dtype int64"):
        bnlib.group_norm_forward(np.ones((2, 6, 3), dtype=np.int64), 3)
    with pytest.raises(bnlib.ShapeError, match="weight must have shape"):
        bnlib.layer_norm_forward(np.ones((4, 5)), 5, weight=np.ones(4))
    with pytest.raises(ValueError, match="NaN or Inf"):
        bnlib.layer_norm_forward(np.array([[np.nan, 1.0]]), 2)
    with pytest.raises(ValueError, match="NaN or Inf"):
        bnlib.group_norm_forward(np.array([[np.nan, 1.0], [1.0, 2.0]]), 1)
    with pytest.raises(ValueError, match="Expected more than 1 value"):   # torch's condition: N * C/G * L == 1
        bnlib.group_norm_forward(np.ones((1, 2)), 2)
    with pytest.raises(ValueError, match="more than 1 spatial element"):
        bnlib.instance_norm_forward(np.ones((2, 3, 1)))
    with pytest.raises(ValueError, match="r_max"):
        bnlib.batch_renorm_forward(np.ones((4, 2)), weight=np.ones(2), bias=np.zeros(2), running_mean=np.zeros(2),
                                   running_var=np.ones(2), training=True, r_max=0.5)


@pytest.mark.parametrize("backend", BACKENDS)
def test_family_empty_batch_and_propagated_nan(backend):
    x = np.ones((0, 6, 3))
    for fwd, bwd, args in [(bnlib.layer_norm_forward, bnlib.layer_norm_backward, (3,)),
                           (bnlib.group_norm_forward, bnlib.group_norm_backward, (2,))]:
        xb, = to(backend, x)
        shape = (3,) if fwd is bnlib.layer_norm_forward else (6,)
        wb, bb = to(backend, np.ones(shape), np.zeros(shape))
        y, saved = fwd(xb, *args, weight=wb, bias=bb)
        dx, dw, db = bwd(xb, saved)
        assert tuple(y.shape) == x.shape and tuple(dx.shape) == x.shape
        assert np.array_equal(np_(dw), np.zeros(shape)) and np.array_equal(np_(db), np.zeros(shape))
    xn = np.array([[np.nan, 1.0, 2.0], [1.0, 2.0, 4.0]])
    xb, = to(backend, xn)
    y, _ = bnlib.layer_norm_forward(xb, 3, nonfinite="propagate")
    assert np.isnan(np_(y)[0]).all() and np.isfinite(np_(y)[1]).all()


@pytest.mark.parametrize("backend", BACKENDS)
def test_batch_renorm_with_unit_limits_is_batch_norm(backend):
    rng = np.random.default_rng(4)
    x, w, b = rng.normal(2, 3, (16, 5)), rng.normal(size=5), rng.normal(size=5)
    xb, wb, bb, rm1, rv1, rm2, rv2 = to(backend, x, w, b, np.zeros(5), np.ones(5), np.zeros(5), np.ones(5))
    y1, _ = bnlib.batch_renorm_forward(xb, weight=wb, bias=bb, running_mean=rm1, running_var=rv1, training=True,
                                       r_max=1.0, d_max=0.0)
    y2, _ = bnlib.batch_norm_forward(xb, weight=wb, bias=bb, running_mean=rm2, running_var=rv2, training=True)
    np.testing.assert_allclose(np_(y1), np_(y2), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(np_(rv1), np_(rv2), rtol=1e-12)


def test_batch_renorm_matches_the_paper_with_r_and_d_constant():
    """Ioffe (2017) Algorithm 1 in float64 torch autograd, with r and d detached (stop_gradient)."""
    rng = np.random.default_rng(5)
    x, w, b, dy = rng.normal(4, 2, (12, 3, 2, 2)), rng.normal(size=3), rng.normal(size=3), rng.normal(size=(12, 3, 2, 2))
    rm, rv = np.array([3.0, 4.5, 6.0]), np.array([1.0, 9.0, 0.3])
    r_max, d_max, eps = 1.5, 0.5, 1e-5

    def paper(xt, wt, bt):
        dims, sh = (0, 2, 3), (1, -1, 1, 1)
        mu_b, sig_b = xt.mean(dims), torch.sqrt(xt.var(dims, unbiased=False) + eps)
        sig = torch.sqrt(torch.tensor(rv) + eps)
        r = (sig_b / sig).clamp(1 / r_max, r_max).detach()
        d = ((mu_b - torch.tensor(rm)) / sig).clamp(-d_max, d_max).detach()
        xhat = (xt - mu_b.view(sh)) / sig_b.view(sh) * r.view(sh) + d.view(sh)
        return wt.view(sh) * xhat + bt.view(sh)
    ref = torch_ref(paper, x, w, b, dy)
    y, saved = bnlib.batch_renorm_forward(x, weight=w, bias=b, running_mean=rm.copy(), running_var=rv.copy(),
                                          training=True, r_max=r_max, d_max=d_max, eps=eps)
    r, d = saved.extra["r"], saved.extra["d"]
    assert (r > 1 / r_max).any() or (r < r_max).any()
    assert np.isclose(np.abs(d).max(), d_max)  # the clip is active in this case
    for g, rr in zip((y, *bnlib.batch_renorm_backward(dy, saved)), ref):
        np.testing.assert_allclose(g, rr, rtol=1e-10, atol=1e-12)


def test_batch_renorm_limits_schedule():
    assert bnlib.batch_renorm_limits(0) == (1.0, 0.0)
    assert bnlib.batch_renorm_limits(5000) == (1.0, 0.0)
    assert bnlib.batch_renorm_limits(25000) == pytest.approx((1 + 2 * 20000 / 35000, 5.0))
    assert bnlib.batch_renorm_limits(10**6) == (3.0, 5.0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_ghost_batch_norm_is_batch_norm_per_chunk(backend):
    rng = np.random.default_rng(6)
    x, dy, w, b = rng.normal(size=(20, 4)), rng.normal(size=(20, 4)), rng.normal(size=4), rng.normal(size=4)
    xb, dyb, wb, bb, rm, rv = to(backend, x, dy, w, b, np.zeros(4), np.ones(4))
    y, saved = bnlib.ghost_batch_norm_forward(xb, weight=wb, bias=bb, running_mean=rm, running_var=rv, training=True,
                                              virtual_batch_size=8)
    dx, dw, db = bnlib.ghost_batch_norm_backward(dyb, saved)
    dw_ref = np.zeros(4)
    for sl in (slice(0, 8), slice(8, 16), slice(16, 20)):
        ref = torch_ref(lambda x_, w_, b_: F.batch_norm(x_, None, None, w_, b_, True), x[sl], w, b, dy[sl])
        np.testing.assert_allclose(np_(y)[sl], ref[0], rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(np_(dx)[sl], ref[1], rtol=1e-10, atol=1e-12)
        dw_ref += ref[2]
    np.testing.assert_allclose(np_(dw), dw_ref, rtol=1e-10)


@pytest.mark.parametrize("backend", BACKENDS)
def test_weight_norm_and_its_gradient(backend):
    rng = np.random.default_rng(7)
    v, g, dw = rng.normal(size=(5, 3, 2)), rng.normal(size=5), rng.normal(size=(5, 3, 2))
    vt, gt = torch.tensor(v, requires_grad=True), torch.tensor(g, requires_grad=True)
    wt = gt.view(-1, 1, 1) * vt / vt.flatten(1).norm(dim=1).view(-1, 1, 1)
    wt.backward(torch.tensor(dw))
    vb, gb, dwb = to(backend, v, g, dw)
    w, saved = bnlib.weight_norm_forward(vb, g=gb)
    np.testing.assert_allclose(np_(w), wt.detach().numpy(), rtol=1e-12)
    dv, dg, none = bnlib.weight_norm_backward(dwb, saved)
    assert none is None
    np.testing.assert_allclose(np_(dv), vt.grad.numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(np_(dg), gt.grad.numpy(), rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError, match="norm 0"):
        bnlib.weight_norm_forward(np.zeros((2, 3)), g=np.ones(2))


@pytest.mark.parametrize("mod,ref_mod,shape", [
    (lambda: bnn.LayerNorm((5, 6)), lambda: torch.nn.LayerNorm((5, 6)), (4, 3, 5, 6)),
    (lambda: bnn.LayerNorm(6, elementwise_affine=False), lambda: torch.nn.LayerNorm(6, elementwise_affine=False), (4, 6)),
    (lambda: bnn.GroupNorm(3, 6), lambda: torch.nn.GroupNorm(3, 6), (4, 6, 5, 5)),
    (lambda: bnn.GroupNorm(2, 4, affine=False), lambda: torch.nn.GroupNorm(2, 4, affine=False), (3, 4, 7)),
])
def test_nn_drop_ins_match_torch_modules(mod, ref_mod, shape):
    torch.manual_seed(8)
    ours, theirs = mod().double(), ref_mod().double()
    with torch.no_grad():
        for p in ours.parameters():
            p.normal_()
    theirs.load_state_dict(ours.state_dict())
    assert list(ours.state_dict()) == list(theirs.state_dict())
    x = torch.randn(shape, dtype=torch.float64) * 3 + 2
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    ya, yb = ours(xa), theirs(xb)
    dy = torch.randn_like(ya)
    ya.backward(dy), yb.backward(dy)
    torch.testing.assert_close(ya, yb)
    torch.testing.assert_close(xa.grad, xb.grad)
    for pa, pb in zip(ours.parameters(), theirs.parameters()):
        torch.testing.assert_close(pa.grad, pb.grad)
    assert torch.autograd.gradcheck(lambda t: ours(t), (torch.randn(shape, dtype=torch.float64, requires_grad=True),))


def test_precise_bn_recomputes_population_statistics():
    torch.manual_seed(9)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Dropout(0.5), bnn.BatchNorm1d(3), torch.nn.ReLU())
    batches = [torch.randn(16, 4) * 2 + 1 for _ in range(5)]
    model.train()
    for xb in batches:  # EMA statistics
        model(xb)
    ema = model[2].running_mean.clone()
    assert bnn.precise_bn(model, batches) == 5
    with torch.no_grad():
        feats = [model[0](xb) for xb in batches]  # dropout is off inside precise_bn
    mean = torch.stack([f.mean(0) for f in feats]).mean(0)
    var = torch.stack([f.var(0, unbiased=True) for f in feats]).mean(0)
    torch.testing.assert_close(model[2].running_mean, mean)
    torch.testing.assert_close(model[2].running_var, var)
    assert not torch.allclose(ema, mean)
    assert model.training and model[2].momentum == 0.1  # modes and momentum restored
    with pytest.raises(ValueError, match="no BatchNorm"):
        bnn.precise_bn(torch.nn.Linear(2, 2), batches)

