"""Checks for Module 01, "BatchNorm from scratch (NumPy)".

Test cells call :func:`check_batchnorm_forward`, :func:`check_batchnorm_backward` and
:func:`check_batchnorm_backward_alt` with the learner's functions. The contract is only the one the
notebook states: ``batchnorm_forward(x, gamma, beta, running_mean, running_var, training, momentum, eps)
-> (out, cache)`` for x of shape (N, D), and ``backward(dout, cache) -> (dx, dgamma, dbeta)`` on the
learner's own training-mode cache. References come from :mod:`bnlib` in float64 and, in the hidden
tests, from ``torch.nn.functional.batch_norm``.

When a result is wrong, the check recomputes the usual mistakes and names the one that matches.
"""
from __future__ import annotations

import numpy as np

import bnlib

from . import (CheckFailure, Report, as_array, call_learner, compare, compare_or_own, guard, likely_cause, norm_rel_error,
               unpack)

TOL64 = 1e-7   # float64 inputs: a correct implementation is at ~1e-14
TOL32 = 1e-4   # float32 inputs against a float64 reference of the same float32 data
WORKS = 1e-3   # "the layer works": essential sub-tests (a slip of eps or precision passes, a wrong formula not)


# ----------------------------------------------------------------------------- test data and references
def _case(rng, n, d, dtype=np.float64, scale=1.0):
    """x with per-feature means far from 0 (5*randn + 12 style) so a missing mean term cannot hide."""
    x = (rng.normal(12.0, 5.0, (n, d)) * rng.uniform(0.5, 2.0, d) + rng.normal(0, 3, d)) * scale
    gamma = rng.normal(1.0, 0.5, d)
    beta = rng.normal(0.0, 1.0, d)
    running_mean = rng.normal(0.0, 1.0, d)
    running_var = rng.uniform(0.5, 2.0, d)
    return tuple(a.astype(dtype) for a in (x, gamma, beta, running_mean, running_var))


def _reference(x, gamma, beta, rm, rv, training, momentum=0.1, eps=1e-5):
    rm = rm.astype(np.float64).copy()
    rv = rv.astype(np.float64).copy()
    y, saved = bnlib.batch_norm_forward(x.astype(np.float64), weight=gamma.astype(np.float64),
                                        bias=beta.astype(np.float64), running_mean=rm, running_var=rv,
                                        training=bool(training), momentum=momentum, eps=eps)
    return y, rm, rv, saved


def _forward_hints(x, g, b, eps):
    x = x.astype(np.float64)
    m = x.shape[0]
    mu, var = x.mean(0), x.var(0)
    with np.errstate(all="ignore"):
        xhat = (x - mu) / np.sqrt(var + eps)
        return [
            ((x - mu) / np.sqrt(var * m / (m - 1) + eps) * g + b,
             "the output must be normalized with the biased batch variance (divide by m); "
             "yours uses the unbiased one (ddof=1). The unbiased variance is only for running_var."),
            ((x - mu) / (np.sqrt(var) + eps) * g + b,
             "eps belongs inside the square root: (x - mean) / sqrt(var + eps)."),
            ((x - mu) / (var + eps) * g + b,
             "divide by the standard deviation sqrt(var + eps), not by the variance."),
            (b * xhat + g, "gamma and beta are swapped: out = gamma * xhat + beta."),
            (xhat, "gamma and beta are not applied: out = gamma * xhat + beta."),
            ((x - x.mean(1, keepdims=True)) / np.sqrt(x.var(1, keepdims=True) + eps) * g + b,
             "statistics are taken over the features of each sample (axis=1, that is LayerNorm); "
             "batch norm takes them over the batch (axis=0)."),
        ]


def _running_hints(name, old, batch_stat, momentum):
    return [
        (old, f"{name} was not updated. Update the caller's array in place ({name} *= ...; "
              f"{name} += ... or {name}[:] = ...): rebinding the name inside the function does not "
              "change the array that was passed in."),
        (momentum * old + (1 - momentum) * batch_stat,
         "momentum is the weight of the NEW batch statistic (PyTorch's convention): "
         f"{name} = (1 - momentum) * {name} + momentum * batch_value; yours weights the old value by "
         "momentum (CS231n's convention)."),
        (batch_stat, f"{name} was replaced by the batch statistic; it must be an exponential moving "
                     "average with weight momentum on the new value."),
    ]


def _guard(report, *fns):
    return guard(report, *fns, how="in NumPy")


def _unpack2(res, name):
    return unpack(res, 2, name, "(out, cache)")


def _unpack3(res, name):
    return unpack(res, 3, name, "(dx, dgamma, dbeta)")


# ----------------------------------------------------------------------------- forward
def check_batchnorm_forward(batchnorm_forward, points: float = 3.0, hidden: bool = False, seed: int = 0) -> float:
    """Grade ``batchnorm_forward``; prints one line per sub-test and returns the points earned."""
    report = Report("batchnorm_forward" + (" (hidden tests)" if hidden else ""), points)
    if (z := _guard(report, batchnorm_forward)) is not None:
        return z
    f = batchnorm_forward
    rng = np.random.default_rng(seed)

    def run(x, g, b, rm, rv, training, momentum=0.1, eps=1e-5):
        rm_l, rv_l = rm.copy(), rv.copy()
        out, _ = _unpack2(call_learner(f, x, g, b, rm_l, rv_l, training, momentum, eps), f.__name__)
        return out, rm_l, rv_l

    def training_output(n, d, dtype=np.float64, tol=TOL64, scale=1.0, eps=1e-5):
        x, g, b, rm, rv = _case(rng, n, d, dtype, scale)
        out, _, _ = run(x, g, b, rm, rv, True, 0.1, eps)
        ref = _reference(x, g, b, rm, rv, True, 0.1, eps)[0]
        err = compare("the training-mode output", out, ref, tol, likely_cause(out, _forward_hints(x, g, b, eps)))
        return f"relative error {err:.1e}"

    def running_stats(steps=1, momentum=0.1, tol=TOL64):
        running_stat(0, "running_mean", steps, momentum, tol)
        running_stat(1, "running_var", steps, momentum, tol)

    def running_stat(idx, name, steps=1, momentum=0.1, tol=TOL64):
        x, g, b, rm, rv = _case(rng, 8, 5)
        rm_l, rv_l, rm_r, rv_r = rm.copy(), rv.copy(), rm.copy(), rv.copy()
        for _ in range(steps):
            x = _case(rng, 8, 5)[0]
            old = (rm_l if idx == 0 else rv_l).copy()
            _unpack2(call_learner(f, x, g, b, rm_l, rv_l, True, momentum, 1e-5), f.__name__)
            _, rm_r, rv_r, _ = _reference(x, g, b, rm_r, rv_r, True, momentum)
        actual, expected = (rm_l, rm_r) if idx == 0 else (rv_l, rv_r)
        hints = []
        if steps == 1:
            m = x.shape[0]
            batch = x.mean(0) if idx == 0 else x.var(0) * m / (m - 1)
            hints = _running_hints(name, old, batch, momentum)
            if idx == 1:
                hints.insert(0, (old * (1 - momentum) + momentum * x.var(0),
                                 "running_var must be updated with the unbiased batch variance "
                                 "(the biased one times m/(m-1)), as PyTorch does; yours uses the biased one."))
        compare(f"{name} after {steps} training step(s)", actual, expected, tol, likely_cause(actual, hints))

    def eval_mode(small_var=False, tol=TOL64, unchanged=True):
        x, g, b, rm, rv = _case(rng, 7, 4)
        if small_var:
            rv = rng.uniform(1e-5, 1e-4, 4)
        rm0, rv0 = rm.copy(), rv.copy()
        out, rm_l, rv_l = run(x, g, b, rm, rv, False)
        ref = _reference(x, g, b, rm, rv, False)[0]
        mu, var = x.mean(0), x.var(0)
        hints = [((x - mu) / np.sqrt(var + 1e-5) * g + b,
                  "eval mode must normalize with running_mean and running_var, not the batch statistics."),
                 ((x - rm) / np.sqrt(rv) * g + b, "eps is missing inside the square root in eval mode.")]
        compare("the eval-mode output", out, ref, tol, likely_cause(out, hints))
        if unchanged and not (np.array_equal(rm_l, rm0) and np.array_equal(rv_l, rv0)):
            raise CheckFailure("eval mode changed running_mean/running_var; only training mode updates them")

    works = ("training mode works: output, x of shape (6, 4), mean far from 0",
             "running_mean and running_var are updated after a training step",
             "eval mode works: it uses the running statistics")
    if not hidden:
        report.run(works[0], 1, lambda: training_output(6, 4, tol=WORKS), essential=True)
        report.run(works[1], 1, lambda: running_stats(tol=WORKS), essential=True)
        report.run(works[2], 0.5, lambda: eval_mode(tol=WORKS, unchanged=False), essential=True)
        report.run("training-mode output exact to 1e-7", 0.5, lambda: training_output(6, 4))
        report.run("running statistics exact: momentum on the new value, unbiased running_var", 0.5,
                   running_stats)
        report.run("eval mode exact and leaves the running statistics unchanged", 0.5, eval_mode, requires=works[2])
        return report.finish()

    works = ("training mode works: output, x of shape (50, 30)",
             "running statistics work over 5 steps, momentum 0.3",
             "eval mode works: it uses the running statistics")
    report.run(works[0], 1, lambda: training_output(50, 30, tol=WORKS), essential=True)
    report.run(works[1], 1, lambda: running_stats(5, 0.3, tol=WORKS), essential=True)
    report.run(works[2], 0.5, lambda: eval_mode(tol=WORKS, unchanged=False), essential=True)
    report.run("training-mode output (50, 30) exact to 1e-7", 0.5, lambda: training_output(50, 30))
    report.run("running statistics over 5 steps exact", 0.5, lambda: running_stats(5, 0.3))
    report.run("training-mode output, N = 2", 0.5, lambda: training_output(2, 3))
    report.run("float32 input (64, 10) against a float64 reference", 0.5,
               lambda: training_output(64, 10, np.float32, TOL32))
    report.run("small-variance features: eps inside the square root", 0.5,
               lambda: training_output(16, 5, scale=1e-3))

    def constant_feature():
        x, g, b, rm, rv = _case(rng, 10, 3)
        x[:, 1] = 4.0
        out, _, _ = run(x, g, b, rm, rv, True)
        ref = _reference(x, g, b, rm, rv, True)[0]
        compare("the output for a constant feature (variance 0)", out, ref, TOL64,
                "With zero variance, eps keeps the division finite and the output equals beta.")
    report.run("constant feature: output equals beta, no division by zero", 0.5, constant_feature)
    report.run("eval mode with small running_var (eps inside the square root)", 0.5,
               lambda: eval_mode(small_var=True))

    def input_untouched():
        x, g, b, rm, rv = _case(rng, 6, 3)
        x0, g0, b0 = x.copy(), g.copy(), b.copy()
        run(x, g, b, rm, rv, True)
        if not (np.array_equal(x, x0) and np.array_equal(g, g0) and np.array_equal(b, b0)):
            raise CheckFailure("the forward pass modified x, gamma or beta in place")
    report.run("x, gamma and beta are not modified", 0.5, input_untouched, requires=works[0])

    def against_torch():
        import torch
        import torch.nn.functional as F
        x, g, b, rm, rv = _case(rng, 12, 6)
        rm_l, rv_l = rm.copy(), rv.copy()
        rm_t, rv_t = torch.tensor(rm), torch.tensor(rv)
        for _ in range(3):
            x = _case(rng, 12, 6)[0]
            out, _ = _unpack2(call_learner(f, x, g, b, rm_l, rv_l, True, 0.1, 1e-5), f.__name__)
            ref = F.batch_norm(torch.tensor(x), rm_t, rv_t, torch.tensor(g), torch.tensor(b), True, 0.1, 1e-5)
        compare("the output against torch.nn.functional.batch_norm", out, ref.numpy(), TOL64)
        compare("running_mean against torch", rm_l, rm_t.numpy(), TOL64)
        compare("running_var against torch", rv_l, rv_t.numpy(), TOL64)
    report.run("matches torch.nn.functional.batch_norm over 3 steps (outputs and running statistics)", 0.5,
               against_torch)
    return report.finish()


# ----------------------------------------------------------------------------- backward (both versions)
def own_normalization_gradients(x, out, gamma, beta, dout, axis=0):
    """BN's gradient formulas evaluated on the learner's OWN normalization, read from its training output.

    When a forward pass normalizes each feature as ``gamma * (x - mean) / s + beta`` but with a wrong
    ``s`` (unbiased variance, eps outside the square root...), a backward pass that is right for that
    cache is right: it should not lose points for the forward's mistake. ``z = (out - beta) / gamma`` must
    be ``(x - mean(x)) / s`` with one ``s`` per feature (to 1e-6), else None (the forward is not a
    normalization, e.g. it returns zeros or its input). Returns (dx, dgamma, dbeta) in float64.
    """
    x, out, g, b, dy = (np.asarray(a, dtype=np.float64) for a in (x, out, gamma, beta, dout))
    if out.shape != x.shape or np.any(g == 0) or not np.all(np.isfinite(out)):
        return None
    z = (out - b) / g
    xc = x - x.mean(axis, keepdims=True)
    zz = (z * z).sum(axis, keepdims=True)
    if np.any(zz <= 0):
        return None
    s = (xc * z).sum(axis, keepdims=True) / zz
    if np.any(s <= 0) or np.max(np.abs(xc - s * z)) > 1e-6 * max(1e-300, np.max(np.abs(xc))):
        return None
    m = x.shape[axis]
    db, dg = dy.sum(axis), (dy * z).sum(axis)
    dx = g / (m * s) * (m * dy - dy.sum(axis, keepdims=True) - z * (dy * z).sum(axis, keepdims=True))
    return dx, dg, db


def _check_backward(name, forward, backward, points, hidden, seed):
    report = Report(name + (" (hidden tests)" if hidden else ""), points)
    if (z := _guard(report, backward)) is not None:
        return z
    rng = np.random.default_rng(seed)

    def grads(n, d, dtype=np.float64, eps=1e-5):
        x, g, b, rm, rv = _case(rng, n, d, dtype)
        res = call_learner(forward, x, g, b, rm.copy(), rv.copy(), True, 0.1, eps)
        out, cache = _unpack2(res, getattr(forward, "__name__", "forward"))
        y_ref, _, _, saved = _reference(x, g, b, rm, rv, True, 0.1, eps)
        try:
            forward_ok = norm_rel_error(as_array("out", out), y_ref) < (TOL32 if dtype == np.float32 else TOL64) \
                if np.shape(out) == y_ref.shape else False
        except CheckFailure:
            forward_ok = False
        dout = rng.normal(size=(n, d)).astype(dtype)
        dout0 = dout.copy()
        dx, dg, db = _unpack3(call_learner(backward, dout, cache), name)
        dx_r, dg_r, db_r = bnlib.batch_norm_backward(dout.astype(np.float64), saved)
        if not np.array_equal(dout, dout0):
            raise CheckFailure("the backward pass modified dout in place")
        note = "" if forward_ok else " (note: your batchnorm_forward is not correct yet; fix it first)"
        own = None if forward_ok else own_normalization_gradients(x, out, g, b, dout)
        return x, g, dout, (dx, dg, db), (dx_r, dg_r, db_r), saved.normalized().reshape(n, d), note, own

    credited = []   # parts found right for the learner's own (wrong) normalization

    def check_all(n, d, dtype=np.float64, tol=TOL64, parts=("dx", "dgamma", "dbeta")):
        x, g, dout, (dx, dg, db), (dx_r, dg_r, db_r), xhat, note, own = grads(n, d, dtype)
        x64, g64, dout64 = x.astype(np.float64), g.astype(np.float64), dout.astype(np.float64)
        m = n
        invstd = 1.0 / np.sqrt(x64.var(0) + 1e-5)
        sum_dy, sum_dyx = dout64.sum(0), (dout64 * xhat).sum(0)
        ix = {"dx": 0, "dgamma": 1, "dbeta": 2}
        own_part = (lambda k: None if own is None else own[ix[k]])
        if "dbeta" in parts:
            compare_or_own(credited, "dbeta" + note, db, db_r, own_part("dbeta"), tol, likely_cause(db, [
                (dout64.mean(0), "dbeta is the SUM of dout over the batch, not the mean."),
                (dout64.sum(1), "sum dout over the batch (axis=0), not over the features.")]))
        if "dgamma" in parts:
            compare_or_own(credited, "dgamma" + note, dg, dg_r, own_part("dgamma"), tol, likely_cause(dg, [
                (sum_dy, "dgamma = sum(dout * xhat) over the batch; yours is missing the xhat factor."),
                ((dout64 * xhat).sum(1), "sum over the batch (axis=0), not over the features."),
                ((dout64 * x64).sum(0), "dgamma multiplies dout by the NORMALIZED input xhat, not by x.")]))
        if "dx" in parts:
            hints = [
                (g64 * invstd * dout64, "dx is missing the terms that flow through the batch mean and "
                 "variance (that is the eval-mode gradient; in training, mean and variance depend on x)."),
                (invstd / m * (m * dout64 - sum_dy - xhat * sum_dyx),
                 "dx is missing the factor gamma (dxhat = dout * gamma)."),
                (g64 * invstd / m * (m * dout64 - xhat * sum_dyx),
                 "dx is missing the mean term: the gradient through the batch mean (dx.sum(axis=0) must be 0)."),
                (g64 * invstd / m * (m * dout64 - sum_dy),
                 "dx is missing the gradient through the variance (sum(dx * xhat, axis=0) must be 0)."),
                (g64 * invstd * (m * dout64 - sum_dy - xhat * sum_dyx),
                 "dx is m times too large: the mean and variance are averages over m = N values (divide by m)."),
            ]
            compare_or_own(credited, "dx" + note, dx, dx_r, own_part("dx"), tol, likely_cause(dx, hints))
        if credited:
            return ("right for the normalization your forward pass computes; the forward pass itself is "
                    "wrong (see its tests)")
        return f"relative error of dx {norm_rel_error(dx, dx_r):.1e}" if "dx" in parts else None

    if not hidden:
        works = "backward works: dx, x of shape (10, 4), gamma != 1"
        report.run(works, 1.5, lambda: check_all(10, 4, tol=WORKS, parts=("dx",)), essential=True)
        report.run("dx exact to 1e-7", 0.5, lambda: check_all(10, 4, parts=("dx",)))
        report.run("dgamma, x of shape (10, 4)", 0.5, lambda: check_all(10, 4, parts=("dgamma",)))
        report.run("dbeta, x of shape (10, 4)", 0.5, lambda: check_all(10, 4, parts=("dbeta",)))
        return report.finish()

    works = "backward works: dx, x of shape (32, 20)"
    report.run(works, 1, lambda: check_all(32, 20, tol=WORKS, parts=("dx",)), essential=True)
    # each case: dx (what flows to earlier layers) weighs more than dgamma and dbeta together
    for label, args in (("x of shape (32, 20)", (32, 20)), ("N = 2", (2, 3)), ("wide layer (16, 200)", (16, 200)),
                        ("float32 input (64, 10) against a float64 reference", (64, 10, np.float32, 10 * TOL32))):
        report.run(f"dx, {label}", 0.6, lambda args=args: check_all(*args, parts=("dx",)))
        report.run(f"dgamma and dbeta, {label}", 0.4, lambda args=args: check_all(*args, parts=("dgamma", "dbeta")))

    def invariants():
        # With eps -> 0, BN's output does not change when a feature of the batch is shifted or scaled, so
        # per feature sum(dx) = 0 and sum(dx * xhat) = 0. (With eps > 0 the second is only ~eps/var.)
        x, g, dout, (dx, _, _), _, xhat, note, _own = grads(24, 6, eps=1e-12)
        dx64 = as_array("dx", dx).astype(np.float64)
        if dx64.shape != x.shape:
            raise CheckFailure(f"dx has shape {dx64.shape}, expected {x.shape}")
        scale = np.abs(g.astype(np.float64) * dout / x.std(0)).sum(0) + 1e-300
        s0 = float(np.max(np.abs(dx64.sum(0)) / scale))
        s1 = float(np.max(np.abs((dx64 * xhat).sum(0)) / scale))
        if not (s0 <= 1e-9 and s1 <= 1e-9):
            what = []
            if not s0 <= 1e-9:
                what.append(f"dx.sum(axis=0) is {s0:.1e} of the gradient's size (the mean term is missing or wrong)")
            if not s1 <= 1e-9:
                what.append(f"sum(dx * xhat, axis=0) is {s1:.1e} of the gradient's size "
                            "(the variance term is missing or wrong)")
            raise CheckFailure("invariants broken: " + "; ".join(what) + "; both must be 0 for every feature" + note)
        return f"{max(s0, s1):.1e}"
    report.run("invariants sum(dx) = 0 and sum(dx * xhat) = 0 per feature (eps -> 0)", 0.5, invariants,
               requires=works)

    def against_torch():
        import torch
        import torch.nn.functional as F
        x, g, b, rm, rv = _case(rng, 9, 5)
        out, cache = _unpack2(call_learner(forward, x, g, b, rm.copy(), rv.copy(), True, 0.1, 1e-5), "forward")
        dout = rng.normal(size=x.shape)
        dx, dg, db = _unpack3(call_learner(backward, dout, cache), name)
        xt, gt, bt = (torch.tensor(a, requires_grad=True) for a in (x, g, b))
        F.batch_norm(xt, None, None, gt, bt, True, 0.1, 1e-5).backward(torch.tensor(dout))
        compare("dx against torch autograd", dx, xt.grad.numpy(), TOL64)
        compare("dgamma against torch autograd", dg, gt.grad.numpy(), TOL64)
        compare("dbeta against torch autograd", db, bt.grad.numpy(), TOL64)
    report.run("matches torch autograd through torch.nn.functional.batch_norm", 0.5, against_torch)
    return report.finish()


def check_batchnorm_backward(batchnorm_forward, batchnorm_backward, points: float = 3.0,
                             hidden: bool = False, seed: int = 0) -> float:
    """Grade the staged ``batchnorm_backward`` on caches from the learner's own forward pass."""
    return _check_backward("batchnorm_backward", batchnorm_forward, batchnorm_backward, points, hidden, seed)


def check_batchnorm_backward_alt(batchnorm_forward, batchnorm_backward_alt, points: float = 3.0,
                                 hidden: bool = False, seed: int = 0) -> float:
    """Grade the simplified ``batchnorm_backward_alt`` on caches from the learner's own forward pass."""
    return _check_backward("batchnorm_backward_alt", batchnorm_forward, batchnorm_backward_alt, points,
                           hidden, seed)
