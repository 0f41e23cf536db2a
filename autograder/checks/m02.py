"""Checks for Module 02, "BatchNorm in PyTorch and on the GPU".

Contract (stated in the notebook):

* ``BatchNormFunction.apply(x, weight, bias, running_mean, running_var, training, momentum, eps) -> y``,
  a ``torch.autograd.Function`` for x of shape (N, C, H, W) with statistics over N, H, W, updating the
  running statistics in place in training mode, with a hand-written ``backward``.
* ``BatchNorm2d(num_features, eps=1e-5, momentum=0.1)``: an ``nn.Module`` using it, with parameters
  ``weight``, ``bias`` and buffers ``running_mean``, ``running_var``, ``num_batches_tracked`` like
  ``torch.nn.BatchNorm2d``.

The learner's classes are exercised by the procedures in ``kernel_agent.procedures.m02`` (in the grading
kernel when graded); the same procedures run here with ``torch.nn.functional.batch_norm`` and
``torch.nn.BatchNorm2d`` give the expected observations, in float64.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..kernel_agent.procedures import m02 as proc
from . import CheckFailure, Report, as_array, compare, describe, guard, likely_cause, norm_rel_error, run_procedure

TOL64 = 1e-7
TOL32 = 1e-4
WORKS = 1e-3   # "the layer works": essential sub-tests (see autograder/checks/__init__.py Report)
# torch entry points that compute batch norm for you (named in the advice shown in the learner's notebook)
TORCH_BN = ("batch_norm", "native_batch_norm", "cudnn_batch_norm", "_batch_norm_impl_index",
            "batch_norm_stats", "batch_norm_elemt", "batch_norm_gather_stats", "BatchNorm1d", "BatchNorm2d",
            "BatchNorm3d", "SyncBatchNorm", "LazyBatchNorm2d", "instance_norm", "group_norm", "layer_norm")
ROOTS = ("bnlib", "autograder")
FUNCTION_BASE = "torch.autograd.function.Function"


class TorchBatchNorm:
    """The reference: ``torch.nn.functional.batch_norm`` behind the Function's calling convention."""

    @staticmethod
    def apply(x, weight, bias, running_mean, running_var, training, momentum, eps):
        return F.batch_norm(x, running_mean, running_var, weight, bias, training, momentum, eps)


def _np(t):
    return as_array("value", t).astype(np.float64)


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
        return ((x - mu_.reshape(shape) if mu_.dim() == 1 else x - mu_) / (d.reshape(shape) if d.dim() == 1 else d)
                * w.double().reshape(shape) + b.double().reshape(shape)).numpy()
    return [
        (out(mu, var * m / (m - 1)), "normalize with the biased variance (unbiased=False); torch's x.var() "
                                     "is unbiased by default, which is right only for running_var."),
        (out(mu, var, torch.sqrt(var) + eps), "eps belongs inside the square root: sqrt(var + eps)."),
        (out(x.mean(0, keepdim=True), x.var(0, unbiased=False, keepdim=True)),
         "statistics must be taken over N, H and W (dims (0, 2, 3)), not over N alone."),
        (F.batch_norm(x, None, None, None, None, True).numpy(), "weight and bias are not applied."),
    ]


def _gradient_check(fn, gen, training, shape=(3, 2, 2, 2), pairs=3, h=1e-6):
    """Randomized finite-difference check of the learner's backward against the learner's own forward:
    for random input directions u and cotangents v, v . (f(p + h u) - f(p - h u)) / 2h must equal
    <backward(v), u> (the check torch.autograd.gradcheck makes, along random directions)."""
    x, w, b, rm, rv = _case(gen, shape)
    us = [[torch.randn(t.shape, generator=gen, dtype=torch.float64) for t in (x, w, b)] for _ in range(pairs)]
    vs = [torch.randn(shape, generator=gen, dtype=torch.float64) for _ in range(pairs)]
    points = []
    for u in us:
        points.append(tuple(t + h * d for t, d in zip((x, w, b), u)))
        points.append(tuple(t - h * d for t, d in zip((x, w, b), u)))
    ys = run_procedure(proc.function_outputs, fn, points=points, running_mean=rm, running_var=rv,
                       training=training, momentum=0.1, eps=1e-5)
    grads = run_procedure(proc.function_vjps, fn, x=x, weight=w, bias=b, running_mean=rm, running_var=rv,
                          training=training, momentum=0.1, eps=1e-5, cotangents=vs)
    if type(ys) is not list or len(ys) != 2 * pairs or type(grads) is not list or len(grads) != pairs:
        raise CheckFailure("the forward or backward pass did not return one result per call")
    mode = "training" if training else "eval"
    for i, (u, v) in enumerate(zip(us, vs)):
        yp, ym = _np(ys[2 * i]), _np(ys[2 * i + 1])
        if yp.shape != tuple(shape):
            raise CheckFailure(f"the output has shape {yp.shape}, expected {tuple(shape)}")
        numeric = float(((yp - ym) * v.numpy()).sum() / (2 * h))
        g = grads[i]
        if type(g) is not tuple or len(g) != 3 or any(t is None for t in g):
            raise CheckFailure(f"backward must return gradients for x, weight and bias ({mode} mode)")
        analytic = float(sum((_np(gt) * d.numpy()).sum() for gt, d in zip(g, u)))
        if not abs(numeric - analytic) <= 1e-5 + 1e-3 * abs(numeric):
            raise CheckFailure(f"gradient check fails in {mode} mode: along a random direction your backward gives "
                               f"{analytic:.6g}, finite differences of your forward give {numeric:.6g}")


# ----------------------------------------------------------------------------- BatchNormFunction
def check_batchnorm_function(BatchNormFunction, points: float = 4.0, hidden: bool = False, seed: int = 0) -> float:
    """Grade the learner's ``torch.autograd.Function``; prints one line per sub-test, returns the points."""
    report = Report("BatchNormFunction" + (" (hidden tests)" if hidden else ""), points)
    if (z := guard(report, BatchNormFunction, roots=ROOTS, attrs=TORCH_BN, how="with torch tensor operations")) is not None:
        return z
    if FUNCTION_BASE not in describe(BatchNormFunction).get("mro", []):
        return report.zero("BatchNormFunction must be a subclass of torch.autograd.Function")
    fn = BatchNormFunction
    gen = torch.Generator().manual_seed(seed)

    def train_step(shape, dtype=torch.float64, tol=TOL64, momentum=0.1, eps=1e-5, channels_last=False):
        x, w, b, rm, rv = _case(gen, shape, dtype)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        dy = torch.randn(shape, generator=gen, dtype=torch.float64).to(dtype)
        got = run_procedure(proc.function_step, fn, x=x, weight=w, bias=b, running_mean=rm, running_var=rv,
                            training=True, momentum=momentum, eps=eps, dy=dy)
        ref = proc.function_step(TorchBatchNorm, x.double(), w.double(), b.double(), rm.double(), rv.double(),
                                 True, momentum, eps, dy.double())
        compare("the training-mode output", got["y"], ref["y"].detach().numpy(), tol,
                likely_cause(got["y"], _output_hints(x, w, b, eps)))
        m = x.numel() // x.shape[1]
        compare("running_mean after one step", got["running_mean"], ref["running_mean"].numpy(), tol,
                likely_cause(got["running_mean"], [
                    (rm.double().numpy(), "running_mean was not updated in place (use running_mean.mul_(...).add_(...) "
                                          "or copy_; rebinding the name does not change the buffer)."),
                    ((momentum * rm.double() + (1 - momentum) * x.double().mean((0, 2, 3))).numpy(),
                     "momentum weights the NEW statistic: running = (1 - momentum) * running + momentum * batch.")]))
        compare("running_var after one step", got["running_var"], ref["running_var"].numpy(), tol,
                likely_cause(got["running_var"], [
                    (((1 - momentum) * rv.double() + momentum * x.double().var((0, 2, 3), unbiased=False)).numpy(),
                     f"running_var must be updated with the unbiased variance (times m/(m-1) = {m}/{m - 1})."),
                    (rv.double().numpy(), "running_var was not updated in place.")]))
        for name, key in (("dx", "dx"), ("dweight", "dweight"), ("dbias", "dbias")):
            if got.get(key) is None:
                raise CheckFailure(f"{name} is None: backward must return a gradient for {name[1:]}")
            hint = None
            if name == "dx":
                g = _np(got["dx"])
                if g.shape == tuple(shape):
                    s = np.abs(g.sum((0, 2, 3))).max() / (np.abs(ref["dx"].numpy()).sum((0, 2, 3)).max() + 1e-30)
                    if s > 1e-6:
                        hint = "dx.sum over (N, H, W) must be 0 per channel: the mean term is missing or wrong."
            compare(name, got[key], ref[key].numpy(), tol * 10, hint)
        return f"relative error of dx {norm_rel_error(_np(got['dx']), ref['dx'].numpy()):.1e}"

    def eval_mode(tol=TOL64):
        x, w, b, rm, rv = _case(gen, (4, 3, 3, 3))
        dy = torch.randn(x.shape, generator=gen, dtype=torch.float64)
        got = run_procedure(proc.function_step, fn, x=x, weight=w, bias=b, running_mean=rm, running_var=rv,
                            training=False, momentum=0.1, eps=1e-5, dy=dy)
        ref = proc.function_step(TorchBatchNorm, x, w, b, rm, rv, False, 0.1, 1e-5, dy)
        compare("the eval-mode output", got["y"], ref["y"].detach().numpy(), tol, likely_cause(got["y"], [
            (F.batch_norm(x, None, None, w, b, True).numpy(), "eval mode must use running_mean/running_var.")]))
        if not (np.array_equal(_np(got["running_mean"]), rm.numpy()) and np.array_equal(_np(got["running_var"]), rv.numpy())):
            raise CheckFailure("eval mode changed the running statistics")
        compare("dx in eval mode", got.get("dx"), ref["dx"].numpy(), tol * 10,
                "In eval mode mean and variance are constants: dx = dy * weight / sqrt(running_var + eps).")

    train_works, eval_works = ("training mode works: output, running statistics, gradients, x (4, 3, 5, 5)",
                               "eval mode works: running statistics, unchanged buffers, dx")
    if not hidden:
        report.run(train_works, 1.5, lambda: train_step((4, 3, 5, 5), tol=WORKS), essential=True)
        report.run(eval_works, 0.5, lambda: eval_mode(tol=WORKS), essential=True)
        report.run("training mode exact to 1e-7", 0.5, lambda: train_step((4, 3, 5, 5)))
        report.run("eval mode exact", 0.5, eval_mode)
        report.run("gradient check (finite differences of your forward), training mode", 0.5,
                   lambda: _gradient_check(fn, gen, True), requires=train_works)
        return report.finish()
    train_works = "training mode works: x (8, 16, 7, 7)"
    report.run(train_works, 1, lambda: train_step((8, 16, 7, 7), tol=WORKS), essential=True)
    report.run(eval_works, 0.5, lambda: eval_mode(tol=WORKS), essential=True)
    report.run("other shape (8, 16, 7, 7) exact", 0.5, lambda: train_step((8, 16, 7, 7)))
    report.run("N = 2, H = 1", 0.5, lambda: train_step((2, 5, 1, 3)))
    report.run("momentum 0.3, eps 1e-3", 0.5, lambda: train_step((4, 3, 4, 4), momentum=0.3, eps=1e-3))
    report.run("channels_last input", 0.5, lambda: train_step((4, 6, 5, 5), channels_last=True))
    report.run("float32 input against a float64 reference", 0.5,
               lambda: train_step((8, 4, 6, 6), torch.float32, TOL32))
    report.run("eval mode exact", 0.5, eval_mode)
    report.run("gradient check (finite differences of your forward), eval mode", 0.5,
               lambda: _gradient_check(fn, gen, False), requires=eval_works)
    return report.finish()


# ----------------------------------------------------------------------------- BatchNorm2d
def _normalizes(outputs, inputs, modes, state) -> bool:
    """True when each training output is ``weight * (x - mean) / s + bias`` per channel with one s > 0 per
    channel: a batch norm, perhaps with wrong statistics (not zeros, not the input)."""
    w = state["weight"].double().view(1, -1, 1, 1)
    b = state["bias"].double().view(1, -1, 1, 1)
    for y, x, mode in zip(outputs, inputs, modes):
        if mode != "train" or type(y) is not torch.Tensor or y.shape != x.shape or torch.any(w == 0):
            continue
        z = ((y.double() - b) / w).transpose(0, 1).reshape(x.shape[1], -1)
        xc = x.double().transpose(0, 1).reshape(x.shape[1], -1)
        xc = xc - xc.mean(1, keepdim=True)
        s = (xc * z).sum(1, keepdim=True) / (z * z).sum(1, keepdim=True).clamp_min(1e-300)
        if torch.any(s <= 0) or (xc - s * z).abs().max() > 1e-6 * xc.abs().max():
            return False
    return True


def check_batchnorm2d(BatchNorm2d, BatchNormFunction=None, points: float = 3.0, hidden: bool = False,
                      seed: int = 0) -> float:
    """Grade the learner's ``BatchNorm2d`` module against ``torch.nn.BatchNorm2d``.

    Given the learner's ``BatchNormFunction`` too, a module that is wired right around a wrong Function
    (the Function's own tests take those points) is credited: the module is compared with what torch's
    wiring gives around the learner's Function, when that Function is at least a per-channel normalization.
    """
    report = Report("BatchNorm2d" + (" (hidden tests)" if hidden else ""), points)
    if (z := guard(report, BatchNorm2d, roots=ROOTS, attrs=TORCH_BN, how="with your BatchNormFunction")) is not None:
        return z
    gen = torch.Generator().manual_seed(seed)
    shared = {}

    def state_dict_layout():
        got = run_procedure(proc.module_layout, BatchNorm2d, num_features=4)
        ref = proc.module_layout(torch.nn.BatchNorm2d, 4)
        if not got.get("is_module"):
            raise CheckFailure("BatchNorm2d(...) must be a torch.nn.Module")
        if got.get("keys") != ref["keys"]:
            raise CheckFailure(f"state_dict keys are {got.get('keys')}, expected {ref['keys']} (register running_mean, "
                               "running_var and num_batches_tracked with register_buffer, in that order, after "
                               "the parameters weight and bias)")
        for k, v in ref["state"].items():
            mine = got["state"].get(k)
            if type(mine) is not torch.Tensor or tuple(mine.shape) != tuple(v.shape) \
                    or not torch.equal(mine.double(), v.double()):
                raise CheckFailure(f"{k} starts as {mine.tolist() if type(mine) is torch.Tensor else mine}, "
                                   f"expected {v.tolist()}")
        if got.get("parameters") != ["bias", "weight"]:
            raise CheckFailure(f"parameters are {got.get('parameters')}, expected ['bias', 'weight'] "
                               "(buffers are not parameters)")

    def steps(n_train=3, n_eval=1, channels_last=False, c=3, tol=TOL64, **kw):
        ref_module = torch.nn.BatchNorm2d(c, **kw).double()
        with torch.no_grad():
            ref_module.weight.normal_(1, 0.3, generator=gen)
            ref_module.bias.normal_(0, 1, generator=gen)
        state = {k: v.clone() for k, v in ref_module.state_dict().items()}
        modes = ["train"] * n_train + ["eval"] * n_eval
        xs, dys = [], []
        for _ in modes:
            x = _case(gen, (4, c, 5, 5))[0]
            xs.append(x.contiguous(memory_format=torch.channels_last) if channels_last else x)
            dys.append(torch.randn(x.shape, generator=gen, dtype=torch.float64))
        args = dict(num_features=c, kwargs=kw, state=state, modes=modes, inputs=xs, cotangents=dys)
        got = run_procedure(proc.module_steps, BatchNorm2d, **args)
        ref = proc.module_steps(torch.nn.BatchNorm2d, **args)
        if not got.get("is_module"):
            raise CheckFailure("BatchNorm2d(...) must be a torch.nn.Module")
        try:
            same(got, ref, modes, n_train, n_eval, channels_last, tol)
        except CheckFailure:
            if BatchNormFunction is None:
                raise
            wired = run_procedure(proc.wired_steps, BatchNormFunction, **args)
            if type(wired) is not dict or not _normalizes(wired.get("outputs", []), xs, modes, state):
                raise
            try:
                same(got, wired, modes, n_train, n_eval, channels_last, tol)
            except CheckFailure:
                raise
            shared["state"], shared["ref_state"] = got["state"], ref["state"]
            return "wired right around your BatchNormFunction, which is wrong (see its tests)"
        shared["state"], shared["ref_state"] = got["state"], ref["state"]

    def same(got, ref, modes, n_train, n_eval, channels_last, tol):
        for i, mode in enumerate(modes):
            compare(f"the {mode}-mode output at step {i + 1}", got["outputs"][i], ref["outputs"][i].detach().numpy(),
                    tol, "eval mode must use the running statistics" if mode == "eval" else None)
            compare("dx", got["dx"][i], ref["dx"][i].numpy(), tol * 10)
        for k, v in ref["state"].items():
            mine = got["state"].get(k)
            if mine is None:
                raise CheckFailure(f"state_dict has no {k}")
            hint = "num_batches_tracked counts training-mode forward passes" if k == "num_batches_tracked" else None
            compare(f"{k} after {n_train} training and {n_eval} eval step(s)", mine, v.double().numpy(), tol, hint)
        compare("weight.grad", got.get("weight_grad"), ref["weight_grad"].numpy(), tol * 10)
        if channels_last and got["channels_last"] != ref["channels_last"]:
            raise CheckFailure("the output of a channels_last input should stay channels_last")

    def uses_function():
        name = run_procedure(proc.module_grad_fn, BatchNorm2d, num_features=3, x=_case(gen, (2, 3, 2, 2))[0])
        if type(name) is not str or "BatchNormFunction" not in name:
            raise CheckFailure(f"the output's grad_fn is {name}; the module must call BatchNormFunction.apply")

    def round_trip():
        steps(2, 0)
        back = torch.nn.BatchNorm2d(3).double()
        try:
            back.load_state_dict({k: v for k, v in shared["state"].items() if type(v) is torch.Tensor})
        except (RuntimeError, KeyError, AttributeError) as exc:
            raise CheckFailure(f"torch.nn.BatchNorm2d cannot load your state_dict: {str(exc).splitlines()[0]}") from None
        expected = torch.nn.BatchNorm2d(3).double()
        expected.load_state_dict(shared["ref_state"])
        x = _case(gen, (3, 3, 4, 4))[0]
        compare("torch's eval output after loading your state_dict", back.eval()(x).detach(),
                expected.eval()(x).detach().numpy(), TOL64)

    def tiny_net():
        net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
                                  torch.nn.AdaptiveAvgPool2d(2), torch.nn.Flatten(), torch.nn.Linear(16, 3)).double()
        with torch.no_grad():
            for p in net.parameters():
                p.copy_(torch.randn(p.shape, generator=gen, dtype=torch.float64) * 0.5)
        state = {k: v.clone() for k, v in net.state_dict().items()}
        x = torch.randn(16, 1, 6, 6, generator=gen, dtype=torch.float64)
        target = torch.randint(0, 3, (16,), generator=gen)
        args = dict(state=state, x=x, target=target, steps=5, lr=0.1)
        got = run_procedure(proc.tiny_net, BatchNorm2d, **args)
        ref = proc.tiny_net(torch.nn.BatchNorm2d, **args)
        losses = got.get("losses")
        if type(losses) is not list or len(losses) != 5 or not all(type(v) is float for v in losses):
            raise CheckFailure("the training losses could not be read")
        for step, (a, b) in enumerate(zip(losses, ref["losses"])):
            if not abs(a - b) <= 1e-9 * max(1.0, abs(b)):
                raise CheckFailure(f"training losses diverge at step {step + 1}: {a:.10f} vs torch's {b:.10f}")
        compare("eval output of the trained net", got["eval_output"], ref["eval_output"].numpy(), 1e-7)

    works = "the module works: 3 training steps and 1 eval step after loading torch's state_dict"
    if not hidden:
        report.run(works, 1, lambda: steps(3, 1, tol=WORKS), essential=True)
        report.run("the same, exact to 1e-7", 0.5, lambda: steps(3, 1))
        report.run("parameters, buffers and state_dict keys as torch.nn.BatchNorm2d", 0.5, state_dict_layout,
                   requires=works)
        report.run("eps and momentum arguments", 0.5, lambda: steps(2, 1, c=4, eps=1e-3, momentum=0.3))
        return report.finish()
    works = "the module works: eps=1e-3, momentum=0.3, 6 steps"
    report.run(works, 1, lambda: steps(4, 2, c=5, eps=1e-3, momentum=0.3, tol=WORKS), essential=True)
    report.run("the same, exact to 1e-7", 0.5, lambda: steps(4, 2, c=5, eps=1e-3, momentum=0.3))
    report.run("the module calls BatchNormFunction", 0.5, uses_function, requires=works)
    report.run("channels_last input", 0.5, lambda: steps(2, 1, channels_last=True, c=6))
    report.run("torch.nn.BatchNorm2d loads your state_dict", 0.5, round_trip, requires=works)
    report.run("a tiny conv net trains 5 SGD steps with the same losses as with torch.nn.BatchNorm2d", 1, tiny_net)
    return report.finish()
