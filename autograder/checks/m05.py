"""Checks for Module 05, "Case study: NLP".

Contracts (stated in the notebook):

* ``masked_batchnorm_forward(x, mask, gamma, beta, running_mean, running_var, training, momentum=0.1,
  eps=1e-5) -> (out, cache)``, NumPy: x (N, T, D), mask (N, T) bool (True = a real token); statistics per
  feature over the m = mask.sum() real tokens only, PyTorch's conventions otherwise (biased variance to
  normalize, running_var updated in place with the unbiased one, momentum on the new value, eps inside the
  square root); padded positions of ``out`` are 0 and padded positions of x may hold anything.
* ``masked_batchnorm_backward(dout, cache) -> (dx, dgamma, dbeta)`` on the learner's own training-mode
  cache: dx is 0 at padded positions; dgamma and dbeta sum over real tokens only (dout may hold anything at
  padded positions).
* ``LayerNormLSTMCell(input_size, hidden_size)``, a ``torch.nn.Module`` with parameters weight_ih (4H, in),
  weight_hh (4H, H), bias (4H,), gamma_ih, beta_ih, gamma_hh, beta_hh (4H,), gamma_c, beta_c (H,), gates
  stacked (i, f, g, o), ``forward(x, (h, c)) -> (h, c)``: the LN-LSTM of Ba et al. (2016, supplementary
  material, Eqs. 20-22) with separate layer norms (over the last axis, eps 1e-5) on W_x x and W_h h and one
  on c before the output tanh.

References: :func:`bnlib.masked_batch_norm_forward` / ``_backward`` in float64 (and bnlib's plain batch norm
for an all-real mask); the cell against :class:`ReferenceCell` through ``kernel_agent.procedures.m05``.
"""
from __future__ import annotations


import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

import bnlib

from ..kernel_agent.procedures import m05 as proc
from . import (CheckFailure, Proxy, Report, as_array, call_learner, compare, compare_or_own, forbidden_uses,
               guard, likely_cause, norm_rel_error, one_torch_thread, run_procedure, unpack)
from .m01 import own_normalization_gradients

TOL64, TOL32 = 1e-7, 1e-4
WORKS = 1e-3   # "the layer works": essential sub-tests (autograder/checks/__init__.py Report, course/grading.md)
ROOTS = ("bnlib", "autograder", "cases")
# torch's ready-made normalization (absent from the grading kernel: autograder.course, torch_normalization=False)
TORCH_NORM = ("batch_norm", "layer_norm", "group_norm", "instance_norm", "rms_norm", "native_layer_norm",
              "BatchNorm1d", "BatchNorm2d", "LayerNorm", "GroupNorm", "RMSNorm")


def _guard(report, obj, roots, how):
    """:func:`guard`, with torch's normalization entry points (:data:`TORCH_NORM`) named only when they are
    torch's: a learner's own helper called ``layer_norm`` (or a method of that name) is the learner's code."""
    if (z := guard(report, obj, roots=roots, how=how)) is not None or isinstance(obj, Proxy):
        return z
    own = set(vars(obj)) if isinstance(obj, type) else set()
    members = [m for m in vars(obj).values() if callable(m)] if isinstance(obj, type) else [obj]
    for m in members:
        own |= {k for k, v in getattr(m, "__globals__", {}).items()
                if getattr(v, "__module__", None) == getattr(obj, "__module__", "__main__")}
    bad = [u for u in forbidden_uses(obj, roots=(), attrs=TORCH_NORM)
           if u.lstrip(".").split(" ")[0] not in own]
    if bad:
        return report.zero(f"{getattr(obj, '__name__', 'this')} must be written {how} by you; it uses {', '.join(bad)}. "
                           "torch's normalization layers are not available when your notebook is graded, so this "
                           "earns no credit.")
    return None


# ----------------------------------------------------------------------------- masked batch norm: data
def _ragged(rng, n, t, d, dtype=np.float64, lengths=None, scale=1.0):
    """x (n, t, d) with per-feature means far from 0, right-padded rows (one of full length, one shorter
    unless ``lengths`` says otherwise), padding filled with large garbage; gamma, beta, running stats."""
    if lengths is None:
        lengths = rng.integers(1, t + 1, n)
        lengths[0] = t
        if n > 1:
            lengths[1] = min(lengths[1], max(1, t // 2))
    lengths = np.asarray(lengths)
    mask = np.arange(t)[None, :] < lengths[:, None]
    x = (rng.normal(12.0, 5.0, (n, t, d)) * rng.uniform(0.5, 2.0, d) + rng.normal(0, 3, d)) * scale
    x[~mask] = rng.normal(0, 300, (int((~mask).sum()), d))          # padding: anything at all
    gamma, beta = rng.normal(1.0, 0.5, d), rng.normal(0.0, 1.0, d)
    rm, rv = rng.normal(0.0, 1.0, d), rng.uniform(0.5, 2.0, d)
    return tuple(a.astype(dtype) for a in (x, gamma, beta, rm, rv)), mask


def _reference(x, mask, gamma, beta, rm, rv, training, momentum=0.1, eps=1e-5):
    rm, rv = rm.astype(np.float64).copy(), rv.astype(np.float64).copy()
    y, saved = bnlib.masked_batch_norm_forward(x.astype(np.float64), mask, weight=gamma.astype(np.float64),
                                               bias=beta.astype(np.float64), running_mean=rm, running_var=rv,
                                               training=training, momentum=momentum, eps=eps)
    return y, rm, rv, saved


def _at_real(what, value, shape, mask) -> np.ndarray:
    """The learner's array at the real positions (its shape checked first)."""
    a = as_array(what, value)
    if a.shape != tuple(shape):
        raise CheckFailure(f"{what} has shape {a.shape}, expected {tuple(shape)}")
    return a[mask]


def _forward_hints(x, mask, g, b, eps):
    """What known mistakes give at the real positions."""
    x = x.astype(np.float64)
    real = x[mask]
    m, nt = len(real), mask.size
    mu, var = real.mean(0), real.var(0)
    mu_all, var_all = x.reshape(-1, x.shape[-1]).mean(0), x.reshape(-1, x.shape[-1]).var(0)
    mu_nt = real.sum(0) / nt
    var_nt = ((real - mu_nt) ** 2).sum(0) / nt
    with np.errstate(all="ignore"):
        return [
            ((real - mu_all) / np.sqrt(var_all + eps) * g + b,
             "the statistics include the padded positions: take mean and variance over the real tokens only "
             "(where mask is True)."),
            ((real - mu_nt) / np.sqrt(var_nt + eps) * g + b,
             "the sums run over the real tokens but are divided by N*T: m is the number of real tokens, mask.sum()."),
            ((real - mu) / np.sqrt(var * m / (m - 1) + eps) * g + b,
             "normalize with the biased variance (divide by m); the unbiased one is only for running_var."),
            ((real - mu) / (np.sqrt(var) + eps) * g + b, "eps belongs inside the square root: sqrt(var + eps)."),
            (b * (real - mu) / np.sqrt(var + eps) + g, "gamma and beta are swapped: out = gamma * xhat + beta."),
            ((real - mu) / np.sqrt(var + eps), "gamma and beta are not applied."),
        ]


def _running_hints(name, old, real, nt, momentum):
    m = len(real)
    mean, var = real.mean(0), real.var(0)
    batch = mean if name == "running_mean" else var * m / (m - 1)
    hints = [(old, f"{name} was not updated in place ({name} *= ...; {name} += ... or {name}[:] = ...)."),
             (momentum * old + (1 - momentum) * batch, "momentum weights the NEW statistic: "
              f"{name} = (1 - momentum) * {name} + momentum * batch_value.")]
    if name == "running_var":
        hints = [((1 - momentum) * old + momentum * var, "running_var is updated with the unbiased variance of the "
                  "real tokens (times m / (m - 1), m = mask.sum())."),
                 ((1 - momentum) * old + momentum * var * nt / (nt - 1), "the unbiased correction uses m = "
                  "mask.sum() real tokens, not N*T.")] + hints
    return hints


# ----------------------------------------------------------------------------- masked_batchnorm_forward
def check_masked_batchnorm_forward(masked_batchnorm_forward, points: float = 2.0, hidden: bool = False,
                                   seed: int = 0) -> float:
    """Grade ``masked_batchnorm_forward``; prints one line per sub-test and returns the points earned."""
    report = Report("masked_batchnorm_forward" + (" (hidden tests)" if hidden else ""), points)
    if (z := _guard(report, masked_batchnorm_forward, ROOTS + ("torch",), "in NumPy")) is not None:
        return z
    f = masked_batchnorm_forward
    rng = np.random.default_rng(seed)
    shared = {}

    def run(x, mask, g, b, rm, rv, training, momentum=0.1, eps=1e-5):
        rm_l, rv_l = rm.copy(), rv.copy()
        out, _ = unpack(call_learner(f, x, mask.copy(), g, b, rm_l, rv_l, training, momentum, eps), 2,
                        "masked_batchnorm_forward", "(out, cache)")
        return out, rm_l, rv_l

    def training_output(n, t, d, dtype=np.float64, tol=TOL64, lengths=None, scale=1.0):
        (x, g, b, rm, rv), mask = _ragged(rng, n, t, d, dtype, lengths, scale)
        out, _, _ = run(x, mask, g, b, rm, rv, True)
        ref = _reference(x, mask, g, b, rm, rv, True)[0]
        got = _at_real("the output", out, x.shape, mask)
        err = compare("the training-mode output at the real tokens", got, ref[mask], tol,
                      likely_cause(got, _forward_hints(x, mask, g, b, 1e-5)))
        shared["padded"] = as_array("out", out)[~mask]
        return f"relative error {err:.1e}"

    def running_stats(steps=1, momentum=0.1, tol=TOL64, n=5, t=6, d=3):
        (x, g, b, rm, rv), mask = _ragged(rng, n, t, d)
        rm_l, rv_l, rm_r, rv_r = rm.copy(), rv.copy(), rm.copy(), rv.copy()
        for _ in range(steps):
            (x, *_), mask = _ragged(rng, n, t, d)
            old = (rm_l.copy(), rv_l.copy())
            unpack(call_learner(f, x, mask.copy(), g, b, rm_l, rv_l, True, momentum, 1e-5), 2,
                   "masked_batchnorm_forward", "(out, cache)")
            _, rm_r, rv_r, _ = _reference(x, mask, g, b, rm_r, rv_r, True, momentum)
        for name, actual, expected, before in (("running_mean", rm_l, rm_r, old[0]), ("running_var", rv_l, rv_r, old[1])):
            hints = _running_hints(name, before, x[mask], mask.size, momentum) if steps == 1 else []
            compare(f"{name} after {steps} training step(s)", actual, expected, tol, likely_cause(actual, hints))

    def eval_mode(tol=TOL64, unchanged=True):
        (x, g, b, rm, rv), mask = _ragged(rng, 4, 5, 3)
        rm0, rv0 = rm.copy(), rv.copy()
        out, rm_l, rv_l = run(x, mask, g, b, rm, rv, False)
        ref = _reference(x, mask, g, b, rm, rv, False)[0]
        real = x[mask]
        got = _at_real("the eval-mode output", out, x.shape, mask)
        compare("the eval-mode output at the real tokens", got, ref[mask], tol, likely_cause(got, [
            ((real - real.mean(0)) / np.sqrt(real.var(0) + 1e-5) * g + b,
             "eval mode must normalize with running_mean and running_var, not the batch statistics.")]))
        if unchanged and not (np.array_equal(rm_l, rm0) and np.array_equal(rv_l, rv0)):
            raise CheckFailure("eval mode changed running_mean/running_var; only training mode updates them")
        shared["eval_padded"] = as_array("out", out)[~mask]

    def padded_zero(key="padded", mode="training"):
        pad = shared.get(key)
        if pad is None:
            raise CheckFailure("the output could not be read")
        if not np.all(pad == 0):
            raise CheckFailure(f"the {mode}-mode output is not 0 at padded positions (max |out| there: "
                               f"{np.max(np.abs(pad)):.3g}); padding is not a token: set out to 0 where mask is False")

    if not hidden:
        works = ("training mode works: ragged batch (4, 6, 3), output at the real tokens",
                 "running_mean and running_var are updated from the real tokens",
                 "eval mode works: it uses the running statistics")
        report.run(works[0], 1, lambda: training_output(4, 6, 3, tol=WORKS), essential=True)
        report.run(works[1], 1, lambda: running_stats(tol=WORKS), essential=True)
        report.run(works[2], 0.5, lambda: eval_mode(tol=WORKS, unchanged=False), essential=True)
        report.run("training-mode output exact to 1e-7", 0.5, lambda: training_output(4, 6, 3))
        report.run("padded positions of out are 0", 0.5, padded_zero, requires=works[0])
        report.run("running statistics exact: unbiased over the m real tokens, momentum on the new value", 0.5,
                   running_stats)
        return report.finish()

    works = ("training mode works: ragged batch (8, 10, 5)",
             "running statistics work over 5 steps, momentum 0.3",
             "eval mode works: it uses the running statistics")
    report.run(works[0], 1, lambda: training_output(8, 10, 5, tol=WORKS), essential=True)
    report.run(works[1], 1, lambda: running_stats(5, 0.3, tol=WORKS, n=8, t=10, d=5), essential=True)
    report.run(works[2], 0.5, lambda: eval_mode(tol=WORKS, unchanged=False), essential=True)
    report.run("training-mode output (8, 10, 5) exact to 1e-7", 0.5, lambda: training_output(8, 10, 5))
    report.run("padded positions of out are 0", 0.5, padded_zero, requires=works[0])
    report.run("running statistics over 5 steps exact", 0.5, lambda: running_stats(5, 0.3, n=8, t=10, d=5))
    report.run("rows with a single real token", 0.5, lambda: training_output(5, 6, 3, lengths=[6, 1, 1, 3, 1]))

    def all_real():
        (x, g, b, rm, rv), mask = _ragged(rng, 4, 5, 3, lengths=[5] * 4)
        out, rm_l, rv_l = run(x, mask, g, b, rm, rv, True)
        rm_r, rv_r = rm.copy(), rv.copy()
        ref, _ = bnlib.batch_norm_forward(x.reshape(-1, 3), weight=g, bias=b, running_mean=rm_r, running_var=rv_r,
                                          training=True)
        compare("the output with an all-True mask against plain batch norm over the (N*T, D) tokens",
                as_array("out", out).reshape(-1, 3) if np.size(as_array("out", out)) == x.size else out,
                ref, TOL64)
        compare("running_var with an all-True mask", rv_l, rv_r, TOL64)
    report.run("an all-True mask is batch norm over the N*T tokens", 0.5, all_real)
    report.run("float32 input (16, 12, 6) against a float64 reference", 0.5,
               lambda: training_output(16, 12, 6, np.float32, TOL32))
    report.run("small-variance features: eps inside the square root", 0.5,
               lambda: training_output(6, 5, 4, scale=1e-3))
    report.run("eval mode exact, running statistics unchanged", 0.5, eval_mode, requires=works[2])
    report.run("eval mode: padded positions of out are 0", 0.5, lambda: padded_zero("eval_padded", "eval"),
               requires=works[2])

    def input_untouched():
        (x, g, b, rm, rv), mask = _ragged(rng, 4, 5, 3)
        copies = [a.copy() for a in (x, mask, g, b)]
        run(x, mask, g, b, rm, rv, True)
        if not all(np.array_equal(a, c) for a, c in zip((x, mask, g, b), copies)):
            raise CheckFailure("the forward pass modified x, mask, gamma or beta in place")
    report.run("x, gamma and beta are not modified", 0.5, input_untouched, requires=works[0])
    return report.finish()


# ----------------------------------------------------------------------------- masked_batchnorm_backward
def check_masked_batchnorm_backward(masked_batchnorm_forward, masked_batchnorm_backward, points: float = 2.0,
                                    hidden: bool = False, seed: int = 0) -> float:
    """Grade ``masked_batchnorm_backward`` on caches from the learner's own forward pass (training mode)."""
    name = "masked_batchnorm_backward"
    report = Report(name + (" (hidden tests)" if hidden else ""), points)
    if (z := _guard(report, masked_batchnorm_backward, ROOTS + ("torch",), "in NumPy")) is not None:
        return z
    rng = np.random.default_rng(seed)
    credited = []
    shared = {}

    def grads(n, t, d, dtype=np.float64, lengths=None, eps=1e-5):
        (x, g, b, rm, rv), mask = _ragged(rng, n, t, d, dtype, lengths)
        res = call_learner(masked_batchnorm_forward, x, mask.copy(), g, b, rm.copy(), rv.copy(), True, 0.1, eps)
        out, cache = unpack(res, 2, "masked_batchnorm_forward", "(out, cache)")
        y_ref, _, _, saved = _reference(x, mask, g, b, rm, rv, True, 0.1, eps)
        try:
            got = _at_real("out", out, x.shape, mask)
            forward_ok = norm_rel_error(got, y_ref[mask]) < (TOL32 if dtype == np.float32 else TOL64)
        except CheckFailure:
            got, forward_ok = None, False
        dout = rng.normal(size=x.shape).astype(dtype)
        dout[~mask] = rng.normal(0, 50, (int((~mask).sum()), d))          # the contract: ignore it
        dout0 = dout.copy()
        dx, dg, db = unpack(call_learner(masked_batchnorm_backward, dout, cache), 3, name, "(dx, dgamma, dbeta)")
        if not np.array_equal(dout, dout0):
            raise CheckFailure("the backward pass modified dout in place")
        ref = bnlib.masked_batch_norm_backward(dout.astype(np.float64), saved)
        note = "" if forward_ok else " (note: your masked_batchnorm_forward is not correct yet; fix it first)"
        own = None
        if not forward_ok and got is not None:
            own = own_normalization_gradients(x[mask], got, g, b, dout[mask])
        return x, mask, g, dout, (dx, dg, db), ref, saved, note, own

    def check_all(n, t, d, dtype=np.float64, tol=TOL64, parts=("dx", "dgamma", "dbeta"), lengths=None):
        x, mask, g, dout, (dx, dg, db), (dx_r, dg_r, db_r), saved, note, own = grads(n, t, d, dtype, lengths)
        own_part = (lambda i: None if own is None else own[i])
        dout64 = dout.astype(np.float64)
        real_dout = dout64[mask]
        xhat = np.asarray(saved.normalized())[mask]
        if "dbeta" in parts:
            compare_or_own(credited, "dbeta" + note, db, db_r, own_part(2), tol, likely_cause(db, [
                (dout64.sum((0, 1)), "dbeta sums dout over every position: padded positions did not reach the output, "
                                     "sum over the real tokens only (dout may hold anything at padding)."),
                (real_dout.mean(0), "dbeta is the SUM of dout over the real tokens, not the mean.")]))
        if "dgamma" in parts:
            compare_or_own(credited, "dgamma" + note, dg, dg_r, own_part(1), tol, likely_cause(dg, [
                (real_dout.sum(0), "dgamma = sum(dout * xhat) over the real tokens; the xhat factor is missing.")]))
        if "dx" in parts:
            got = _at_real("dx", dx, x.shape, mask)
            shared["dx_padded"] = as_array("dx", dx)[~mask]
            m = len(real_dout)
            gd = real_dout * g.astype(np.float64)
            inv = np.asarray(saved.invstd).reshape(-1)
            all_dout = dout64.reshape(-1, x.shape[-1]) * g.astype(np.float64)
            hints = [
                (inv / m * (m * gd - all_dout.sum(0) - xhat * (gd * xhat).sum(0)),
                 "dout at padded positions enters the sums of dx: padded positions did not reach the output, so "
                 "set dout to 0 there (or sum over real tokens only)."),
                (inv / mask.size * (mask.size * gd - gd.sum(0) - xhat * (gd * xhat).sum(0)),
                 "the mean and variance are averages over m = mask.sum() real tokens, not N*T."),
                (inv * gd, "dx is missing the terms through the batch mean and variance (that is the eval-mode "
                           "gradient)."),
                (inv / m * (m * gd - xhat * (gd * xhat).sum(0)), "dx is missing the mean term (dx must sum to 0 over "
                                                                  "the real tokens of each feature)."),
                (inv / m * (m * gd - gd.sum(0)), "dx is missing the gradient through the variance."),
                (inv / m * (m * real_dout - real_dout.sum(0) - xhat * (real_dout * xhat).sum(0)),
                 "dx is missing the factor gamma (dxhat = dout * gamma)."),
            ]
            compare_or_own(credited, "dx at the real tokens" + note, got, dx_r[mask], own_part(0), tol * 10,
                           likely_cause(got, hints))
        if credited:
            return ("right for the normalization your forward pass computes; the forward pass itself is wrong "
                    "(see its tests)")
        return None

    def dx_zero_at_padding():
        pad = shared.get("dx_padded")
        if pad is None:
            raise CheckFailure("dx could not be read")
        if not np.all(pad == 0):
            raise CheckFailure(f"dx is not 0 at padded positions (max |dx| there: {np.max(np.abs(pad)):.3g}): they "
                               "did not reach the output, so no gradient flows to them")

    if not hidden:
        works = "backward works: dx at the real tokens, ragged batch (4, 6, 3), gamma != 1"
        report.run(works, 1.5, lambda: check_all(4, 6, 3, tol=WORKS, parts=("dx",)), essential=True)
        report.run("dx exact to 1e-6", 0.5, lambda: check_all(4, 6, 3, parts=("dx",)))
        report.run("dx is 0 at padded positions", 0.5, dx_zero_at_padding, requires=works)
        report.run("dgamma and dbeta over the real tokens", 0.5, lambda: check_all(4, 6, 3, parts=("dgamma", "dbeta")))
        return report.finish()

    works = "backward works: dx at the real tokens, ragged batch (8, 10, 5)"
    report.run(works, 1, lambda: check_all(8, 10, 5, tol=WORKS, parts=("dx",)), essential=True)
    report.run("dx is 0 at padded positions", 0.5, dx_zero_at_padding, requires=works)
    for label, args in (("ragged batch (8, 10, 5)", dict(n=8, t=10, d=5)),
                        ("rows with a single real token", dict(n=5, t=6, d=3, lengths=[6, 1, 1, 3, 1])),
                        ("an all-True mask (plain batch norm over N*T tokens)", dict(n=4, t=5, d=3, lengths=[5] * 4)),
                        ("float32 input (16, 12, 6) against a float64 reference",
                         dict(n=16, t=12, d=6, dtype=np.float32, tol=10 * TOL32))):
        report.run(f"dx, {label}", 0.6, lambda args=args: check_all(**args, parts=("dx",)))
        report.run(f"dgamma and dbeta, {label}", 0.4, lambda args=args: check_all(**args, parts=("dgamma", "dbeta")))

    def invariants():
        x, mask, g, dout, (dx, _, _), _, saved, note, _own = grads(6, 7, 4, eps=1e-12)
        real = _at_real("dx", dx, x.shape, mask)
        xhat = np.asarray(saved.normalized())[mask]
        scale = np.abs(g.astype(np.float64) * dout[mask] / x[mask].std(0)).sum(0) + 1e-300
        s0 = float(np.max(np.abs(real.sum(0)) / scale))
        s1 = float(np.max(np.abs((real * xhat).sum(0)) / scale))
        if not (s0 <= 1e-9 and s1 <= 1e-9):
            raise CheckFailure(f"over the real tokens, sum(dx) is {s0:.1e} and sum(dx * xhat) {s1:.1e} of the "
                               "gradient's size; both must be 0 per feature (the mean and variance terms)" + note)
        return f"{max(s0, s1):.1e}"
    report.run("invariants over the real tokens: sum(dx) = 0 and sum(dx * xhat) = 0 per feature (eps -> 0)", 0.5,
               invariants, requires=works)

    def gradient_check():
        (x, g, b, rm, rv), mask = _ragged(rng, 3, 4, 2)
        dout = rng.normal(size=x.shape)
        out, cache = unpack(call_learner(masked_batchnorm_forward, x, mask.copy(), g, b, rm.copy(), rv.copy(), True,
                                         0.1, 1e-5), 2, "masked_batchnorm_forward", "(out, cache)")
        dx = as_array("dx", unpack(call_learner(masked_batchnorm_backward, dout, cache), 3, name, "(dx, dgamma, dbeta)")[0])
        h = 1e-5
        for idx in zip(*np.nonzero(mask)):
            for k in range(x.shape[-1]):
                outs = []
                for sign in (1, -1):
                    xs = x.copy()
                    xs[idx + (k,)] += sign * h
                    o, _ = unpack(call_learner(masked_batchnorm_forward, xs, mask.copy(), g, b, rm.copy(), rv.copy(),
                                               True, 0.1, 1e-5), 2, "masked_batchnorm_forward", "(out, cache)")
                    outs.append(as_array("out", o))
                numeric = float(((outs[0] - outs[1]) * dout).sum() / (2 * h))
                if not abs(numeric - dx[idx + (k,)]) <= 1e-5 + 1e-4 * abs(numeric):
                    raise CheckFailure(f"gradient check fails at x[{idx[0]}, {idx[1]}, {k}]: your dx gives "
                                       f"{dx[idx + (k,)]:.6g}, finite differences of your forward {numeric:.6g}")
    report.run("gradient check: dx against finite differences of your forward, every real token", 0.5,
               gradient_check, requires=works)
    return report.finish()


# ----------------------------------------------------------------------------- LayerNormLSTMCell
PARAMS = ("weight_ih", "weight_hh", "bias", "gamma_ih", "beta_ih", "gamma_hh", "beta_hh", "gamma_c", "beta_c")


def _ln(z, gamma, beta, eps=1e-5):
    return F.layer_norm(z, z.shape[-1:], gamma, beta, eps)


class ReferenceCell(nn.Module):
    """The LN-LSTM of Ba et al. (2016), supplementary material, Eqs. 20-22, gates stacked (i, f, g, o)."""

    def __init__(self, input_size, hidden_size):
        super().__init__()
        h4, k = 4 * hidden_size, hidden_size ** -0.5
        self.weight_ih = nn.Parameter(torch.empty(h4, input_size).uniform_(-k, k))
        self.weight_hh = nn.Parameter(torch.empty(h4, hidden_size).uniform_(-k, k))
        self.bias = nn.Parameter(torch.zeros(h4))
        self.gamma_ih, self.beta_ih = nn.Parameter(torch.ones(h4)), nn.Parameter(torch.zeros(h4))
        self.gamma_hh, self.beta_hh = nn.Parameter(torch.ones(h4)), nn.Parameter(torch.zeros(h4))
        self.gamma_c, self.beta_c = nn.Parameter(torch.ones(hidden_size)), nn.Parameter(torch.zeros(hidden_size))

    def forward(self, x, state):
        h, c = state
        gates = (_ln(x @ self.weight_ih.T, self.gamma_ih, self.beta_ih)
                 + _ln(h @ self.weight_hh.T, self.gamma_hh, self.beta_hh) + self.bias)
        i, f, g, o = gates.chunk(4, dim=-1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        return torch.sigmoid(o) * torch.tanh(_ln(c, self.gamma_c, self.beta_c)), c


def _variant_steps(p, xs, h, c, variant):
    """h at every step for a known mistake (the hints), float64, no gradient."""
    def ln(z, g, b, dim=-1, unbiased=False):
        mu = z.mean(dim, keepdim=True)
        var = z.var(dim, keepdim=True, unbiased=unbiased)
        return (z - mu) / torch.sqrt(var + 1e-5) * g + b
    hs = []
    with torch.no_grad():
        for x in xs:
            a, r = x @ p["weight_ih"].T, h @ p["weight_hh"].T
            kw = {"dim": 0} if variant == "batch_axis" else {"unbiased": variant == "unbiased"}
            if variant == "one_ln":
                gates = ln(a + r, p["gamma_ih"], p["beta_ih"]) + p["bias"]
            elif variant == "bias_inside":
                gates = ln(a + p["bias"], p["gamma_ih"], p["beta_ih"]) + ln(r, p["gamma_hh"], p["beta_hh"])
            else:
                gates = ln(a, p["gamma_ih"], p["beta_ih"], **kw) + ln(r, p["gamma_hh"], p["beta_hh"], **kw) + p["bias"]
            i, f, g, o = gates.chunk(4, dim=-1)
            if variant == "swap_if":
                i, f = f, i
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            if variant == "no_ln_c":
                h = torch.sigmoid(o) * torch.tanh(c)
            elif variant == "ln_c_state":
                c = ln(c, p["gamma_c"], p["beta_c"])
                h = torch.sigmoid(o) * torch.tanh(c)
            else:
                h = torch.sigmoid(o) * torch.tanh(ln(c, p["gamma_c"], p["beta_c"], **kw))
            hs.append(h)
    return torch.stack(hs)


CELL_HINTS = (
    ("one_ln", "one layer norm over W_x x + W_h h: Ba et al. normalize W_x x and W_h h SEPARATELY, "
               "LN(W_x x; gamma_ih, beta_ih) + LN(W_h h; gamma_hh, beta_hh) + bias."),
    ("batch_axis", "the layer norms take statistics over the batch (dim 0); layer norm normalizes each sample "
                   "over its own features (the last axis)."),
    ("no_ln_c", "the layer norm on the cell state is missing: h = sigmoid(o) * tanh(LN(c; gamma_c, beta_c))."),
    ("ln_c_state", "LN(c) belongs only in the output, h = sigmoid(o) * tanh(LN(c)); the state passed on is c itself."),
    ("swap_if", "the input and forget gates are swapped: the chunks of the gates are (i, f, g, o), as in "
                "torch.nn.LSTMCell."),
    ("unbiased", "layer norm uses the biased variance (divide by the number of features)."),
    ("bias_inside", "the bias must be added after the layer norms (inside, LN removes it)."),
)


def _cell_params(gen, input_size, hidden_size):
    """Random parameters by name (gammas around 1, everything else nonzero so each one matters)."""
    h4 = 4 * hidden_size
    shapes = {"weight_ih": (h4, input_size), "weight_hh": (h4, hidden_size), "bias": (h4,), "gamma_ih": (h4,),
              "beta_ih": (h4,), "gamma_hh": (h4,), "beta_hh": (h4,), "gamma_c": (hidden_size,),
              "beta_c": (hidden_size,)}
    out = {}
    for name, shape in shapes.items():
        t = torch.randn(shape, generator=gen, dtype=torch.float64)
        out[name] = t * 0.3 + 1 if name.startswith("gamma") else t * (0.8 if name.startswith("weight") else 0.4)
    return out


def _describe_result(got) -> None:
    if not got.get("is_module"):
        raise CheckFailure("LayerNormLSTMCell(input_size, hidden_size) must be a torch.nn.Module")
    if "h" in got:
        return
    if got.get("names") is not None and sorted(got["names"]) != sorted(PARAMS):
        raise CheckFailure(f"the cell's parameters are {got['names']}; expected exactly {sorted(PARAMS)} "
                           "(nn.Parameter attributes of the cell, named as the notebook says)")
    if "load_error" in got:
        raise CheckFailure(f"the parameters do not have the expected shapes: {got['load_error']}")
    if "returned" in got:
        raise CheckFailure(f"forward must return a tuple (h, c) of tensors, got {got['returned']}")
    if "shapes" in got:
        raise CheckFailure(f"forward returned h and c of shapes {got['shapes']}; both must be (N, hidden_size)")
    raise CheckFailure("the cell could not be run")


@one_torch_thread
def check_layernorm_lstm_cell(LayerNormLSTMCell, points: float = 2.0, hidden: bool = False, seed: int = 0) -> float:
    """Grade the learner's ``LayerNormLSTMCell`` against :class:`ReferenceCell` with the same parameters."""
    report = Report("LayerNormLSTMCell" + (" (hidden tests)" if hidden else ""), points)
    if (z := _guard(report, LayerNormLSTMCell, ROOTS, "with torch tensor operations (your own layer norm)")) \
            is not None:
        return z
    gen = torch.Generator().manual_seed(seed)

    def steps(input_size=3, hidden_size=4, n=5, t=3, dtype="float64", tol=1e-9, parts=("h", "c")):
        p = _cell_params(gen, input_size, hidden_size)
        xs = torch.randn(t, n, input_size, generator=gen, dtype=torch.float64) * 2
        h0 = torch.randn(n, hidden_size, generator=gen, dtype=torch.float64) * 0.5
        c0 = torch.randn(n, hidden_size, generator=gen, dtype=torch.float64)
        dh = torch.randn(t, n, hidden_size, generator=gen, dtype=torch.float64)
        dc = torch.randn(n, hidden_size, generator=gen, dtype=torch.float64)
        args = dict(input_size=input_size, hidden_size=hidden_size, params=p, xs=xs, h0=h0, c0=c0, dh=dh, dc=dc)
        got = run_procedure(proc.cell_run, LayerNormLSTMCell, dtype_name=dtype, **args)
        ref = proc.cell_run(ReferenceCell, **args)
        _describe_result(got)
        if "h" in parts:
            hint = likely_cause(got["h"], [(_variant_steps(p, xs, h0, c0, v).numpy(), msg) for v, msg in CELL_HINTS],
                                1e-8)
            compare(f"h over {t} steps", got["h"], ref["h"].numpy(), tol, hint)
        if "c" in parts:
            compare(f"c over {t} steps", got["c"], ref["c"].numpy(), tol)
        if "grads" in parts:
            for name in PARAMS:
                if got["grads"].get(name) is None:
                    raise CheckFailure(f"{name} gets no gradient: is it used in the forward pass?")
                compare(f"the gradient of {name}", got["grads"][name], ref["grads"][name].numpy(), tol * 10)
            for key, what in (("dx", "the inputs"), ("dh0", "the initial h"), ("dc0", "the initial c")):
                compare(f"the gradient of {what}", got.get(key), ref[key].numpy(), tol * 10)
        return f"relative error of h {norm_rel_error(as_array('h', got['h']), ref['h'].numpy()):.1e}"

    def layout():
        got = run_procedure(proc.cell_layout, LayerNormLSTMCell, input_size=3, hidden_size=5)
        if not got.get("is_module"):
            raise CheckFailure("LayerNormLSTMCell(input_size, hidden_size) must be a torch.nn.Module")
        params = got["parameters"]
        if sorted(params) != sorted(PARAMS):
            raise CheckFailure(f"parameters are {sorted(params)}, expected {sorted(PARAMS)}")
        shapes = {"weight_ih": [20, 3], "weight_hh": [20, 5], "bias": [20]} | {
            n: [20] for n in ("gamma_ih", "beta_ih", "gamma_hh", "beta_hh")} | {"gamma_c": [5], "beta_c": [5]}
        for n, shape in shapes.items():
            v = params[n]
            if type(v) is not torch.Tensor or list(v.shape) != shape:
                raise CheckFailure(f"{n} has shape {list(getattr(v, 'shape', []))}, expected {shape}")
            if n.startswith("gamma") and not torch.all(v == 1):
                raise CheckFailure(f"{n} must start at 1 (the normalized values pass unchanged at first)")
            if (n.startswith("beta") or n == "bias") and not torch.all(v == 0):
                raise CheckFailure(f"{n} must start at 0")
        for n in ("weight_ih", "weight_hh"):
            v = params[n]
            if not (float(v.abs().max()) <= 5 ** -0.5 + 1e-6 and float(v.std()) > 0):
                raise CheckFailure(f"{n} must start uniform in +-1/sqrt(hidden_size) (as torch.nn.LSTMCell), got "
                                   f"values up to {float(v.abs().max()):.3g}")

    if not hidden:
        works = "the cell works: h and c over 3 steps, batch of 5, input 3, hidden 4"
        report.run(works, 1, lambda: steps(tol=WORKS), essential=True)
        report.run("h and c exact to 1e-9 (float64)", 0.5, steps)
        report.run("gradients of every parameter, the inputs and the initial state", 0.5,
                   lambda: steps(parts=("grads",)), requires=works)
        return report.finish()

    works = "the cell works: 6 steps, batch of 4, input 5, hidden 7"
    report.run(works, 1, lambda: steps(5, 7, 4, 6, tol=WORKS), essential=True)
    report.run("6 steps exact to 1e-9", 0.5, lambda: steps(5, 7, 4, 6))
    report.run("gradients through 6 steps: every parameter, the inputs, the initial state", 1,
               lambda: steps(5, 7, 4, 6, parts=("grads",)), requires=works)
    report.run("a batch of one (layer norm needs no batch)", 0.5, lambda: steps(4, 3, 1, 4))
    report.run("a float32 cell against a float64 reference", 0.5,
               lambda: steps(6, 8, 3, 4, dtype="float32", tol=1e-4))
    report.run("parameters: names, shapes and initial values (gammas 1, betas and bias 0)", 0.5, layout,
               requires=works)
    return report.finish()
