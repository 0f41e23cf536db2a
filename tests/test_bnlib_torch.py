"""bnlib's PyTorch backend and bnlib.nn: gradcheck and gradgradcheck of every autograd.Function, forward-mode
AD, parity with torch.nn over training steps, dtypes, devices, the torch.compile route."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.autograd import gradcheck, gradgradcheck

import bnlib
import bnlib.nn as bnn

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="CUDA tests need a GPU; none is visible to torch on this machine"))]
D = torch.float64


def _vec(c, g, requires_grad=True):
    return torch.randn(c, generator=g, dtype=D).requires_grad_(requires_grad)


def _functions():
    """(name, fn, inputs) for every differentiable bnlib.nn function (one per autograd.Function and mode)."""
    g = torch.Generator().manual_seed(0)
    x = (torch.randn(5, 3, 4, generator=g, dtype=D) * 3 + 7).requires_grad_()
    x4 = (torch.randn(3, 6, 2, 2, generator=g, dtype=D) * 2 - 4).requires_grad_()
    w3, b3, w4, b4, w6, b6 = _vec(3, g), _vec(3, g), _vec(4, g), _vec(4, g), _vec(6, g), _vec(6, g)
    rm, rv = torch.zeros(3, dtype=D), torch.rand(3, generator=g, dtype=D) + 0.5
    cases = []
    for training in (True, False):
        cases.append((f"BatchNormFunction training={training}",
                      lambda x, w, b, t=training: bnn.batch_norm(x, weight=w, bias=b, running_mean=rm.clone(),
                                                                 running_var=rv.clone(), training=t), (x, w3, b3)))
        cases.append((f"InstanceNormFunction use_input_stats={training}",
                      lambda x, w, b, t=training: bnn.instance_norm(x, weight=w, bias=b, running_mean=rm.clone(),
                                                                    running_var=rv.clone(), use_input_stats=t),
                      (x, w3, b3)))
    cases.append(("LayerNormFunction", lambda x, w, b: bnn.layer_norm(x, 4, weight=w, bias=b), (x, w4, b4)))
    cases.append(("LayerNormFunction 2 dims", lambda x, w, b: bnn.layer_norm(x, (3, 4), weight=w.reshape(3, 4),
                                                                             bias=b.reshape(3, 4)),
                  (x, _vec(12, g), _vec(12, g))))
    cases.append(("GroupNormFunction", lambda x, w, b: bnn.group_norm(x, 3, weight=w, bias=b), (x4, w6, b6)))
    cases.append(("BatchNormFunction channels_last", lambda x, w, b: bnn.batch_norm(
        x.contiguous(memory_format=torch.channels_last), weight=w, bias=b, training=True), (x4, w6, b6)))
    return cases


@pytest.mark.parametrize("case", _functions(), ids=lambda c: c[0])
def test_gradcheck_and_gradgradcheck_float64(case):
    """First and second derivatives of every autograd.Function against finite differences."""
    _, fn, inputs = case
    assert gradcheck(fn, inputs)
    assert gradgradcheck(fn, inputs)


def test_gradient_penalty_is_not_silently_zero():
    """The issue's failure: a penalty on the input gradient must have the gradient torch gives it."""
    torch.manual_seed(1)
    x = torch.randn(8, 4, dtype=D, requires_grad=True)
    grads = {}
    for name, layer in (("ours", bnn.BatchNorm1d(4).double()), ("torch", torch.nn.BatchNorm1d(4).double())):
        with torch.no_grad():
            layer.weight.copy_(torch.linspace(0.5, 2, 4, dtype=D))
        y = layer(x)
        (gx,) = torch.autograd.grad((y ** 3).sum(), x, create_graph=True)
        penalty = (gx ** 2).sum()
        grads[name] = torch.autograd.grad(penalty, (x, layer.weight))
    for a, b in zip(grads["ours"], grads["torch"]):
        assert a.abs().max() > 0
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("case", _functions(), ids=lambda c: c[0])
def test_forward_mode_ad_matches_reverse_mode(case):
    """torch.func.jvp and torch.autograd.forward_ad give J v, checked against reverse-mode autograd."""
    _, fn, inputs = case
    primals = tuple(a.detach() for a in inputs)
    g = torch.Generator().manual_seed(2)
    tangents = tuple(torch.randn(a.shape, generator=g, dtype=D) for a in primals)
    y, jv = torch.func.jvp(fn, primals, tangents)
    # reverse mode: <u, J v> = <J^T u, v>
    u = torch.randn(y.shape, generator=g, dtype=D)
    leaves = tuple(a.clone().requires_grad_() for a in primals)
    vjp = torch.autograd.grad(fn(*leaves), leaves, u)
    lhs = (u * jv).sum()
    rhs = sum((a * b).sum() for a, b in zip(vjp, tangents))
    torch.testing.assert_close(lhs, rhs, rtol=1e-10, atol=1e-10)
    import torch.autograd.forward_ad as fwAD
    with fwAD.dual_level():
        duals = tuple(fwAD.make_dual(p, t) for p, t in zip(primals, tangents))
        jv2 = fwAD.unpack_dual(fn(*duals)).tangent
    torch.testing.assert_close(jv2, jv, rtol=1e-12, atol=1e-12)


def _pair(bn_cls, t_cls, c, **kw):
    ours, theirs = bn_cls(c, **kw).double(), t_cls(c, **kw).double()
    with torch.no_grad():
        ours.weight.normal_(1, 0.3) if ours.weight is not None else None
        ours.bias.normal_(0, 1) if ours.bias is not None else None
    theirs.load_state_dict(ours.state_dict())
    return ours, theirs


@pytest.mark.parametrize("kw", [{}, {"momentum": None}, {"affine": False}, {"track_running_stats": False},
                                {"momentum": 0.3, "eps": 1e-3}, {"bias": False}])
@pytest.mark.parametrize("bn_cls,t_cls,shape,channels_last", [
    (bnn.BatchNorm1d, torch.nn.BatchNorm1d, (16, 5), False),
    (bnn.BatchNorm1d, torch.nn.BatchNorm1d, (8, 5, 7), False),
    (bnn.BatchNorm2d, torch.nn.BatchNorm2d, (4, 5, 6, 6), False),
    (bnn.BatchNorm2d, torch.nn.BatchNorm2d, (4, 5, 6, 6), True),
    (bnn.BatchNorm3d, torch.nn.BatchNorm3d, (3, 5, 3, 4, 4), True),
])
def test_modules_match_torch_over_steps_after_state_dict(bn_cls, t_cls, shape, channels_last, kw):
    torch.manual_seed(1)
    ours, theirs = _pair(bn_cls, t_cls, shape[1], **kw)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    fmt = torch.channels_last if len(shape) == 4 else torch.channels_last_3d
    for mode in ["train"] * 4 + ["eval"] * 2:
        ours.train(mode == "train"), theirs.train(mode == "train")
        x = torch.randn(shape, dtype=D) * 2 + 3
        if channels_last:
            x = x.to(memory_format=fmt)
        xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
        ya, yb = ours(xa), theirs(xb)
        dy = torch.randn_like(ya)
        ya.backward(dy), yb.backward(dy)
        torch.testing.assert_close(ya, yb, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(xa.grad, xb.grad, rtol=1e-10, atol=1e-12)
        for pa, pb in zip(ours.parameters(), theirs.parameters()):
            torch.testing.assert_close(pa.grad, pb.grad, rtol=1e-10, atol=1e-12)
        if channels_last:
            assert ya.is_contiguous(memory_format=fmt)
    for key, value in theirs.state_dict().items():
        torch.testing.assert_close(ours.state_dict()[key], value, rtol=1e-12, atol=1e-12)
    # and back: torch's state loaded into ours reproduces torch's eval output
    again = bn_cls(shape[1], **kw).double()
    again.load_state_dict(theirs.state_dict())
    x = torch.randn(shape, dtype=D)
    torch.testing.assert_close(again.eval()(x), theirs.eval()(x), rtol=1e-12, atol=1e-12)


def test_numpy_and_torch_backends_agree_on_shared_vectors():
    rng = np.random.default_rng(2)
    x = rng.normal(4, 3, (8, 6, 5, 5))
    w, b, dy = rng.normal(size=6), rng.normal(size=6), rng.normal(size=x.shape)
    rm_n, rv_n = np.zeros(6), np.ones(6)
    rm_t, rv_t = torch.zeros(6, dtype=D), torch.ones(6, dtype=D)
    y_n, s_n = bnlib.batch_norm_forward(x, weight=w, bias=b, running_mean=rm_n, running_var=rv_n, training=True)
    y_t, s_t = bnlib.batch_norm_forward(torch.tensor(x), weight=torch.tensor(w), bias=torch.tensor(b),
                                        running_mean=rm_t, running_var=rv_t, training=True)
    grads_n = bnlib.batch_norm_backward(dy, s_n)
    grads_t = bnlib.batch_norm_backward(torch.tensor(dy), s_t)
    np.testing.assert_allclose(y_t.numpy(), y_n, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(rv_t.numpy(), rv_n, rtol=1e-13)
    for gn, gt in zip(grads_n, grads_t):
        np.testing.assert_allclose(gt.numpy(), gn, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype,tol", [(torch.float16, 2e-3), (torch.bfloat16, 1.6e-2), (torch.float32, 1e-5)])
def test_low_precision_inputs_finite_and_accurate(device, dtype, tol):
    """Statistics accumulate in float32 or better: far-from-zero means do not break half precision."""
    torch.manual_seed(3)
    x64 = torch.randn(64, 8, 8, 8, dtype=D) * 2 + 30
    x = x64.to(device=device, dtype=dtype)
    layer = bnn.BatchNorm2d(8).to(device)
    y = layer(x.clone().requires_grad_())
    assert y.dtype == dtype and torch.isfinite(y).all()
    ref = F.batch_norm(x.double().cpu(), None, None, training=True)
    assert (y.double().cpu() - ref).abs().max().item() <= tol  # half an output ulp at |y| ~ 4
    y.float().sum().backward()
    assert layer.weight.grad.dtype == torch.float32 and torch.isfinite(layer.weight.grad).all()


@pytest.mark.parametrize("device", DEVICES)
def test_float32_far_from_zero_exact_on_device(device):
    torch.manual_seed(4)
    x = (torch.randn(64, 16, 32, 32) + 50).to(device)
    y, _ = bnlib.batch_norm_forward(x, training=True)
    ref = F.batch_norm(x.double().cpu(), None, None, training=True)
    assert (y.double().cpu() - ref).abs().max().item() <= 1e-5


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA tests need a GPU; none is visible to torch")
def test_cuda_module_matches_torch_kernel():
    torch.manual_seed(5)
    ours, theirs = _pair(bnn.BatchNorm2d, torch.nn.BatchNorm2d, 16)
    ours, theirs = ours.float().cuda(), theirs.float().cuda()
    for _ in range(3):
        x = torch.randn(32, 16, 14, 14, device="cuda")
        xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
        ya, yb = ours(xa), theirs(xb)
        ya.sum().backward(), yb.sum().backward()
        torch.testing.assert_close(ya, yb, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(xa.grad, xb.grad, rtol=1e-3, atol=1e-4)
    torch.testing.assert_close(ours.running_var, theirs.running_var, rtol=1e-5, atol=1e-6)


def test_torch_bad_input_errors():
    x = torch.randn(4, 3)
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        bnn.BatchNorm1d(3)(torch.randn(1, 3))
    with pytest.raises(TypeError, match="dtype torch.int64"):
        bnlib.batch_norm_forward(torch.ones(4, 3, dtype=torch.int64), training=True)
    with pytest.raises(TypeError, match="torch.Tensor like x"):
        bnlib.batch_norm_forward(x, weight=np.ones(3), training=True)
    with pytest.raises(ValueError, match="NaN or Inf"):
        bnlib.batch_norm_forward(torch.tensor([[float("nan")], [1.0]]), training=True)
    with pytest.raises(ValueError, match="expected 4D input"):
        bnn.BatchNorm2d(3)(x)
    with pytest.raises(TypeError):
        bnn.batch_norm(x, torch.zeros(3), torch.ones(3), training=True)   # per-channel arrays are keyword-only


def test_compile_route_gives_the_eager_results():
    """The torch.compile route fuses the same formulas: same values and gradients as the eager route."""
    torch.manual_seed(6)
    x = torch.randn(4, 3, 5, 5) * 2 + 1
    dy = torch.randn_like(x)
    results = {}
    for route in ("eager", "compile"):
        bnlib.set_torch_route(route)
        try:
            layer = bnn.BatchNorm2d(3)
            xg = x.clone().requires_grad_()
            y = layer(xg)
            y.backward(dy)
            results[route] = (y.detach(), xg.grad, layer.weight.grad, layer.running_var.clone())
        finally:
            bnlib.set_torch_route("eager")
    for a, b in zip(*results.values()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError):
        bnlib.set_torch_route("fast")
