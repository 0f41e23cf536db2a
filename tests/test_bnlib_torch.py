"""bnlib's PyTorch backend and bnlib.nn modules: gradcheck, parity with torch.nn, dtypes, devices."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import bnlib
import bnlib.nn as bnn

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="CUDA tests need a GPU; none is visible to torch on this machine"))]


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("shape", [(6, 3), (5, 3, 4), (4, 3, 3, 3)])
def test_gradcheck_float64(shape, training):
    g = torch.Generator().manual_seed(0)
    x = (torch.randn(shape, generator=g, dtype=torch.float64) * 3 + 7).requires_grad_()
    w = torch.randn(shape[1], generator=g, dtype=torch.float64).requires_grad_()
    b = torch.randn(shape[1], generator=g, dtype=torch.float64).requires_grad_()
    rm, rv = torch.zeros(shape[1], dtype=torch.float64), torch.rand(shape[1], generator=g, dtype=torch.float64) + 0.5
    fn = lambda x, w, b: bnn.batch_norm(x, rm.clone(), rv.clone(), w, b, training)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x, w, b))


def _pair(bn_cls, t_cls, c, **kw):
    ours, theirs = bn_cls(c, **kw).double(), t_cls(c, **kw).double()
    with torch.no_grad():
        ours.weight.normal_(1, 0.3) if ours.weight is not None else None
        ours.bias.normal_(0, 1) if ours.bias is not None else None
    theirs.load_state_dict(ours.state_dict())
    return ours, theirs


@pytest.mark.parametrize("kw", [{}, {"momentum": None}, {"affine": False}, {"track_running_stats": False},
                                {"momentum": 0.3, "eps": 1e-3}])
@pytest.mark.parametrize("bn_cls,t_cls,shape,channels_last", [
    (bnn.BatchNorm1d, torch.nn.BatchNorm1d, (16, 5), False),
    (bnn.BatchNorm1d, torch.nn.BatchNorm1d, (8, 5, 7), False),
    (bnn.BatchNorm2d, torch.nn.BatchNorm2d, (4, 5, 6, 6), False),
    (bnn.BatchNorm2d, torch.nn.BatchNorm2d, (4, 5, 6, 6), True),
])
def test_modules_match_torch_over_steps_after_state_dict(bn_cls, t_cls, shape, channels_last, kw):
    torch.manual_seed(1)
    ours, theirs = _pair(bn_cls, t_cls, shape[1], **kw)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    for mode in ["train"] * 4 + ["eval"] * 2:
        ours.train(mode == "train"), theirs.train(mode == "train")
        x = torch.randn(shape, dtype=torch.float64) * 2 + 3
        if channels_last:
            x = x.to(memory_format=torch.channels_last)
        xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
        ya, yb = ours(xa), theirs(xb)
        dy = torch.randn_like(ya)
        ya.backward(dy), yb.backward(dy)
        torch.testing.assert_close(ya, yb, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(xa.grad, xb.grad, rtol=1e-10, atol=1e-12)
        if ours.weight is not None:
            torch.testing.assert_close(ours.weight.grad, theirs.weight.grad, rtol=1e-10, atol=1e-12)
            torch.testing.assert_close(ours.bias.grad, theirs.bias.grad, rtol=1e-10, atol=1e-12)
        if channels_last:
            assert ya.is_contiguous(memory_format=torch.channels_last)
    for key, value in theirs.state_dict().items():
        torch.testing.assert_close(ours.state_dict()[key], value, rtol=1e-12, atol=1e-12)
    # and back: torch's state loaded into ours reproduces torch's eval output
    again = bn_cls(shape[1], **kw).double()
    again.load_state_dict(theirs.state_dict())
    x = torch.randn(shape, dtype=torch.float64)
    torch.testing.assert_close(again.eval()(x), theirs.eval()(x), rtol=1e-12, atol=1e-12)


def test_numpy_and_torch_backends_agree_on_shared_vectors():
    rng = np.random.default_rng(2)
    x = rng.normal(4, 3, (8, 6, 5, 5))
    w, b, dy = rng.normal(size=6), rng.normal(size=6), rng.normal(size=x.shape)
    rm_n, rv_n = np.zeros(6), np.ones(6)
    rm_t, rv_t = torch.zeros(6, dtype=torch.float64), torch.ones(6, dtype=torch.float64)
    y_n, s_n = bnlib.batch_norm_forward(x, w, b, rm_n, rv_n, True)
    y_t, s_t = bnlib.batch_norm_forward(torch.tensor(x), torch.tensor(w), torch.tensor(b), rm_t, rv_t, True)
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
    x64 = torch.randn(64, 8, 8, 8, dtype=torch.float64) * 2 + 30
    x = x64.to(device=device, dtype=dtype)
    layer = bnn.BatchNorm2d(8).to(device)
    y = layer(x.clone().requires_grad_())
    assert y.dtype == dtype and torch.isfinite(y).all()
    ref = F.batch_norm(x.double().cpu(), None, None, training=True)
    assert (y.double().cpu() - ref).abs().max().item() <= tol  # half an output ulp at |y| ~ 4
    y.float().sum().backward()
    assert layer.weight.grad is not None and torch.isfinite(layer.weight.grad).all()


@pytest.mark.parametrize("device", DEVICES)
def test_float32_far_from_zero_exact_on_device(device):
    torch.manual_seed(4)
    x = (torch.randn(64, 16, 32, 32) + 50).to(device)
    y, _ = bnlib.batch_norm_forward(x, None, None, None, None, training=True)
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
        bnlib.batch_norm_forward(torch.ones(4, 3, dtype=torch.int64), None, None, None, None, True)
    with pytest.raises(TypeError, match="torch.Tensor like x"):
        bnlib.batch_norm_forward(x, np.ones(3), None, None, None, True)
    with pytest.raises(ValueError, match="NaN or Inf"):
        bnlib.batch_norm_forward(torch.tensor([[float("nan")], [1.0]]), None, None, None, None, True)
    with pytest.raises(ValueError, match="expected 4D input"):
        bnn.BatchNorm2d(3)(x)
