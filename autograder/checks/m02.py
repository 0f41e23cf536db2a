"""Checks for Module 02, "BatchNorm in PyTorch and on the GPU".

Contract (stated in the notebook):

* ``BatchNormFunction.apply(x, weight, bias, running_mean, running_var, training, momentum, eps) -> y``,
  a ``torch.autograd.Function`` for x of shape (N, C, H, W) with statistics over N, H, W, updating the
  running statistics in place in training mode, with a hand-written ``backward``.
* ``BatchNorm2d(num_features, eps=1e-5, momentum=0.1)``: an ``nn.Module`` using it, with parameters
  ``weight``, ``bias`` and buffers ``running_mean``, ``running_var``, ``num_batches_tracked`` like
  ``torch.nn.BatchNorm2d``.

References: ``torch.nn.functional.batch_norm`` and ``torch.nn.BatchNorm2d`` in float64.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from . import CheckFailure, Report, call_learner, compare, guard, likely_cause, norm_rel_error

TOL64 = 1e-7
TOL32 = 1e-4
# torch entry points that compute batch norm for you
TORCH_BN = ("batch_norm", "native_batch_norm", "cudnn_batch_norm", "_batch_norm_impl_index",
            "batch_norm_stats", "batch_norm_elemt", "batch_norm_gather_stats", "BatchNorm1d", "BatchNorm2d",
            "BatchNorm3d", "SyncBatchNorm", "LazyBatchNorm2d", "instance_norm", "group_norm", "layer_norm")
ROOTS = ("bnlib", "autograder")


def _np(t):
    return t.detach().cpu().double().numpy()


def _case(gen, shape, dtype=torch.float64):
    c = shape[1]
    x = torch.randn(shape, generator=gen, dtype=torch.float64) * (torch.rand(c, generator=gen, dtype=torch.float64) * 3 + 1).view(1, -1, 1, 1) \
        + (torch.randn(c, generator=gen, dtype=torch.float64) * 5 + 10).view(1, -1, 1, 1)
    w = torch.randn(c, generator=gen, dtype=torch.float64) * 0.5 + 1
    b = torch.randn(c, generator=gen, dtype=torch.float64)
    rm = torch.randn(c, generator=gen, dtype=torch.float64)
    rv = torch.rand(c, generator=gen, dtype=torch.float64) + 0.5
    return [t.to(dtype) for t in (x, w, b, rm, rv)]


def _output_hints(x, w, b, eps):
    x = x.double()
    shape = (1, -1, 1, 1)
    dims = (0, 2, 3)
    m = x.numel() // x.shape[1]
    mu, var = x.mean(dims), x.var(dims, unbiased=False)
    def out(mu_, var_, denom=None):
        d = torch.sqrt(var_ + eps) if denom is None else denom
        return _np((x - mu_.reshape(shape) if mu_.dim() == 1 else x - mu_) / (d.reshape(shape) if d.dim() == 1 else d)
                   * w.double().reshape(shape) + b.double().reshape(shape))
    return [
        (out(mu, var * m / (m - 1)), "normalize with the biased variance (unbiased=False); torch's x.var() "
                                     "is unbiased by default, which is right only for running_var."),
        (out(mu, var, torch.sqrt(var) + eps), "eps belongs inside the square root: sqrt(var + eps)."),
        (out(x.mean(0, keepdim=True), x.var(0, unbiased=False, keepdim=True)),
         "statistics must be taken over N, H and W (dims (0, 2, 3)), not over N alone."),
        (_np(F.batch_norm(x, None, None, None, None, True)), "weight and bias are not applied."),
    ]


def _apply(fn_cls, *args):
    return call_learner(fn_cls.apply, *args)


# ----------------------------------------------------------------------------- BatchNormFunction
def check_batchnorm_function(BatchNormFunction, points: float = 4.0, hidden: bool = False, seed: int = 0) -> float:
    """Grade the learner's ``torch.autograd.Function``; prints one line per sub-test, returns the points."""
    report = Report("BatchNormFunction" + (" (hidden tests)" if hidden else ""), points)
    if (z := guard(report, BatchNormFunction, roots=ROOTS, attrs=TORCH_BN, how="with torch tensor operations")) is not None:
        return z
    if not (isinstance(BatchNormFunction, type) and issubclass(BatchNormFunction, torch.autograd.Function)):
        return report.zero("BatchNormFunction must be a subclass of torch.autograd.Function")
    fn = BatchNormFunction
    gen = torch.Generator().manual_seed(seed)

    def train_step(shape, dtype=torch.float64, tol=TOL64, momentum=0.1, eps=1e-5, channels_last=False, check_grads=True):
        x, w, b, rm, rv = _case(gen, shape, dtype)
        if channels_last:
            x = x.to(memory_format=torch.channels_last)
        xl, wl, bl = (t.clone().requires_grad_() for t in (x, w, b))
        xr, wr, br = (t.detach().double().clone().requires_grad_() for t in (x, w, b))
        rml, rvl, rmr, rvr = rm.clone(), rv.clone(), rm.double().clone(), rv.double().clone()
        y = _apply(fn, xl, wl, bl, rml, rvl, True, momentum, eps)
        yr = F.batch_norm(xr, rmr, rvr, wr, br, True, momentum, eps)
        compare("the training-mode output", y, _np(yr), tol, likely_cause(_np(y), _output_hints(x, w, b, eps)))
        m = x.numel() // x.shape[1]
        compare("running_mean after one step", rml, _np(rmr), tol, likely_cause(_np(rml), [
            (_np(rm), "running_mean was not updated in place (use running_mean.mul_(...).add_(...) or "
                      "copy_; rebinding the name does not change the buffer)."),
            (_np(momentum * rm.double() + (1 - momentum) * x.double().mean((0, 2, 3))),
             "momentum weights the NEW statistic: running = (1 - momentum) * running + momentum * batch.")]))
        compare("running_var after one step", rvl, _np(rvr), tol, likely_cause(_np(rvl), [
            (_np((1 - momentum) * rv.double() + momentum * x.double().var((0, 2, 3), unbiased=False)),
             f"running_var must be updated with the unbiased variance (times m/(m-1) = {m}/{m - 1})."),
            (_np(rv), "running_var was not updated in place.")]))
        if not check_grads:
            return None
        dy = torch.randn(shape, generator=gen, dtype=torch.float64).to(dtype)
        call_learner(y.backward, dy)
        yr.backward(dy.double())
        for name, got, ref in (("dx", xl.grad, xr.grad), ("dweight", wl.grad, wr.grad), ("dbias", bl.grad, br.grad)):
            if got is None:
                raise CheckFailure(f"{name} is None: backward must return a gradient for {name[1:]}")
            hint = None
            if name == "dx":
                s = np.abs(_np(got).sum((0, 2, 3))).max() / (np.abs(_np(ref)).sum((0, 2, 3)).max() + 1e-30)
                if s > 1e-6:
                    hint = "dx.sum over (N, H, W) must be 0 per channel: the mean term is missing or wrong."
            compare(name, got, _np(ref), tol * 10, hint)
        return f"relative error of dx {norm_rel_error(_np(xl.grad), _np(xr.grad)):.1e}"

    def gradcheck(training):
        x, w, b, rm, rv = _case(gen, (3, 2, 2, 2))
        inputs = tuple(t.clone().requires_grad_() for t in (x, w, b))
        f = lambda x_, w_, b_: fn.apply(x_, w_, b_, rm.clone(), rv.clone(), training, 0.1, 1e-5)  # noqa: E731
        ok = call_learner(torch.autograd.gradcheck, f, inputs, raise_exception=False)
        if not ok:
            raise CheckFailure(f"torch.autograd.gradcheck fails in {'training' if training else 'eval'} mode: "
                               "the hand-written backward disagrees with finite differences")

    def eval_mode():
        x, w, b, rm, rv = _case(gen, (4, 3, 3, 3))
        xl, wl, bl = (t.clone().requires_grad_() for t in (x, w, b))
        xr, wr, br = (t.clone().requires_grad_() for t in (x, w, b))
        rml, rvl = rm.clone(), rv.clone()
        y = _apply(fn, xl, wl, bl, rml, rvl, False, 0.1, 1e-5)
        yr = F.batch_norm(xr, rm, rv, wr, br, False, 0.1, 1e-5)
        compare("the eval-mode output", y, _np(yr), TOL64, likely_cause(_np(y), [
            (_np(F.batch_norm(x, None, None, w, b, True)), "eval mode must use running_mean/running_var.")]))
        if not (torch.equal(rml, rm) and torch.equal(rvl, rv)):
            raise CheckFailure("eval mode changed the running statistics")
        dy = torch.randn(x.shape, generator=gen, dtype=torch.float64)
        call_learner(y.backward, dy)
        yr.backward(dy)
        compare("dx in eval mode", xl.grad, _np(xr.grad), TOL64 * 10,
                "In eval mode mean and variance are constants: dx = dy * weight / sqrt(running_var + eps).")

    if not hidden:
        report.run("training forward, running statistics and gradients vs torch, x (4, 3, 5, 5)", 3,
                   lambda: train_step((4, 3, 5, 5)))
        report.run("torch.autograd.gradcheck, training mode", 1, lambda: gradcheck(True))
        return report.finish()
    report.run("other shape (8, 16, 7, 7)", 1, lambda: train_step((8, 16, 7, 7)))
    report.run("N = 2, H = 1", 1, lambda: train_step((2, 5, 1, 3)))
    report.run("momentum 0.3, eps 1e-3", 1, lambda: train_step((4, 3, 4, 4), momentum=0.3, eps=1e-3))
    report.run("channels_last input", 1, lambda: train_step((4, 6, 5, 5), channels_last=True))
    report.run("float32 input against a float64 reference", 1,
               lambda: train_step((8, 4, 6, 6), torch.float32, TOL32))
    report.run("eval mode: running statistics, unchanged buffers, gradients", 1, eval_mode)
    report.run("torch.autograd.gradcheck, eval mode", 1, lambda: gradcheck(False))
    return report.finish()


# ----------------------------------------------------------------------------- BatchNorm2d
def _make(cls, *args, **kwargs):
    return call_learner(cls, *args, **kwargs)


def check_batchnorm2d(BatchNorm2d, points: float = 3.0, hidden: bool = False, seed: int = 0) -> float:
    """Grade the learner's ``BatchNorm2d`` module against ``torch.nn.BatchNorm2d``."""
    report = Report("BatchNorm2d" + (" (hidden tests)" if hidden else ""), points)
    if (z := guard(report, BatchNorm2d, roots=ROOTS, attrs=TORCH_BN, how="with your BatchNormFunction")) is not None:
        return z
    gen = torch.Generator().manual_seed(seed)

    def pair(c=3, **kw):
        ours = _make(BatchNorm2d, c, **kw)
        if not isinstance(ours, torch.nn.Module):
            raise CheckFailure(f"BatchNorm2d(...) must be a torch.nn.Module, got {type(ours).__name__}")
        ref = torch.nn.BatchNorm2d(c, **kw)
        return ours.double(), ref.double()

    def state_dict_layout():
        ours, ref = pair(4)
        sd, rsd = ours.state_dict(), ref.state_dict()
        if list(sd) != list(rsd):
            raise CheckFailure(f"state_dict keys are {list(sd)}, expected {list(rsd)} (register running_mean, "
                               "running_var and num_batches_tracked with register_buffer, in that order, after "
                               "the parameters weight and bias)")
        for k in rsd:
            if tuple(sd[k].shape) != tuple(rsd[k].shape) or not torch.equal(sd[k].double(), rsd[k].double()):
                raise CheckFailure(f"{k} starts as {sd[k].tolist()}, expected {rsd[k].tolist()}")
        params = sorted(n for n, _ in ours.named_parameters())
        if params != ["bias", "weight"]:
            raise CheckFailure(f"parameters are {params}, expected ['bias', 'weight'] (buffers are not parameters)")

    def steps(n_train=3, n_eval=1, channels_last=False, c=3, **kw):
        ours, ref = pair(c, **kw)
        with torch.no_grad():
            ref.weight.normal_(1, 0.3, generator=gen)
            ref.bias.normal_(0, 1, generator=gen)
        call_learner(ours.load_state_dict, ref.state_dict())
        for i, mode in enumerate(["train"] * n_train + ["eval"] * n_eval):
            ours.train(mode == "train"), ref.train(mode == "train")
            x = _case(gen, (4, c, 5, 5))[0]
            if channels_last:
                x = x.to(memory_format=torch.channels_last)
            xl, xr = x.clone().requires_grad_(), x.clone().requires_grad_()
            y = call_learner(ours, xl)
            yr = ref(xr)
            compare(f"the {mode}-mode output at step {i + 1}", y, _np(yr), TOL64,
                    "eval mode must use the running statistics" if mode == "eval" else None)
            dy = torch.randn(x.shape, generator=gen, dtype=torch.float64)
            call_learner(y.backward, dy)
            yr.backward(dy)
            compare("dx", xl.grad, _np(xr.grad), TOL64 * 10)
        for k, v in ref.state_dict().items():
            got = ours.state_dict().get(k)
            if got is None:
                raise CheckFailure(f"state_dict has no {k}")
            hint = None
            if k == "num_batches_tracked":
                hint = "num_batches_tracked counts training-mode forward passes"
            compare(f"{k} after {n_train} training and {n_eval} eval step(s)", got, _np(v), TOL64, hint)
        compare("weight.grad", ours.weight.grad, _np(ref.weight.grad), TOL64 * 10)
        return ours, ref

    def uses_function():
        ours, _ = pair(3)
        y = call_learner(ours.train(), _case(gen, (2, 3, 2, 2))[0].requires_grad_())
        name = type(y.grad_fn).__name__ if y.grad_fn is not None else "None"
        if "BatchNormFunction" not in name:
            raise CheckFailure(f"the output's grad_fn is {name}; the module must call BatchNormFunction.apply")

    def round_trip():
        ours, ref = steps(2, 0)
        back = torch.nn.BatchNorm2d(3).double()
        back.load_state_dict(ours.state_dict())  # torch must accept our state_dict as is
        x = _case(gen, (3, 3, 4, 4))[0]
        compare("torch's eval output after loading your state_dict", back.eval()(x), _np(ref.eval()(x)), TOL64)

    def tiny_net():
        def net(bn):
            torch.manual_seed(seed)
            return torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), bn, torch.nn.ReLU(),
                                       torch.nn.AdaptiveAvgPool2d(2), torch.nn.Flatten(), torch.nn.Linear(16, 3)).double()
        a, b = net(_make(BatchNorm2d, 4)), net(torch.nn.BatchNorm2d(4))
        b.load_state_dict(a.state_dict())
        opt_a, opt_b = (torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9) for m in (a, b))
        x = torch.randn(16, 1, 6, 6, generator=gen, dtype=torch.float64)
        target = torch.randint(0, 3, (16,), generator=gen)
        for step in range(5):
            losses = []
            for model, opt in ((a, opt_a), (b, opt_b)):
                opt.zero_grad()
                loss = F.cross_entropy(call_learner(model, x) if model is a else model(x), target)
                call_learner(loss.backward) if model is a else loss.backward()
                opt.step()
                losses.append(loss.item())
            if abs(losses[0] - losses[1]) > 1e-9 * max(1.0, abs(losses[1])):
                raise CheckFailure(f"training losses diverge at step {step + 1}: {losses[0]:.10f} vs torch's "
                                   f"{losses[1]:.10f}")
        a.eval(), b.eval()
        compare("eval output of the trained net", a(x), _np(b(x)), 1e-7)

    if not hidden:
        report.run("parameters, buffers and state_dict keys as torch.nn.BatchNorm2d", 1, state_dict_layout)
        report.run("3 training steps and 1 eval step after loading torch's state_dict", 2, lambda: steps(3, 1))
        return report.finish()
    report.run("the module calls BatchNormFunction", 1, uses_function)
    report.run("torch.nn.BatchNorm2d loads your state_dict", 1, round_trip)
    report.run("channels_last input", 1, lambda: steps(2, 1, channels_last=True, c=6))
    report.run("eps=1e-3, momentum=0.3, 6 steps", 1, lambda: steps(4, 2, c=5, eps=1e-3, momentum=0.3))
    report.run("a tiny conv net trains 5 SGD steps with the same losses as with torch.nn.BatchNorm2d", 2, tiny_net)
    return report.finish()
