"""Checks for Module 03, "The normalization family and its pitfalls".

Contracts (stated in the notebook), NumPy only:

* ``layernorm_forward(x, gamma, beta, eps=1e-5) -> (out, cache)``, x (N, D), statistics per row;
  ``layernorm_backward(dout, cache) -> (dx, dgamma, dbeta)``.
* ``groupnorm_forward(x, gamma, beta, G, eps=1e-5) -> (out, cache)``, x (N, C, H, W), gamma/beta (C,);
  ``groupnorm_backward(dout, cache) -> (dx, dgamma, dbeta)``.
* ``batch_renorm_forward(x, gamma, beta, running_mean, running_var, training, r_max, d_max, momentum=0.1,
  eps=1e-5) -> (out, cache)``, x (N, D), running statistics updated in place after r and d are computed.

References: bnlib in float64 and, in hidden tests, torch.nn.functional.layer_norm / group_norm.
"""
from __future__ import annotations

import numpy as np

import bnlib

from . import CheckFailure, Report, as_array, call_learner, compare, guard, likely_cause, norm_rel_error, unpack

TOL64, TOL32 = 1e-7, 1e-4


def _x(rng, shape, scale=1.0):
    x = rng.normal(0, 1, shape) * rng.uniform(0.5, 3, shape[-1]) + rng.normal(8, 4, shape[-1])
    return x * scale


def _pair(res, name):
    return unpack(res, 2, name, "(out, cache)")


def _triple(res, name):
    return unpack(res, 3, name, "(dx, dgamma, dbeta)")


# ----------------------------------------------------------------------------- layer norm
def _ln_hints(x, g, b, eps):
    def norm(axis, ddof=0, inside=True):
        mu, var = x.mean(axis, keepdims=True), x.var(axis, ddof=ddof, keepdims=True)
        return (x - mu) / (np.sqrt(var + eps) if inside else np.sqrt(var) + eps) * g + b
    return [(norm(0), "statistics over the batch (axis=0) is batch norm; layer norm takes them over the "
                      "features of each sample (axis=1)."),
            (norm(1, ddof=1), "normalize with the biased variance (divide by D)."),
            (norm(1, inside=False), "eps belongs inside the square root."),
            (b * ((x - x.mean(1, keepdims=True)) / np.sqrt(x.var(1, keepdims=True) + eps)) + g,
             "gamma and beta are swapped.")]


def check_layernorm_forward(layernorm_forward, points=2.0, hidden=False, seed=0) -> float:
    report = Report("layernorm_forward" + (" (hidden tests)" if hidden else ""), points)
    if (z := guard(report, layernorm_forward)) is not None:
        return z
    rng = np.random.default_rng(seed)

    def case(n, d, dtype=np.float64, tol=TOL64, const_row=False):
        x, g, b = _x(rng, (n, d)), rng.normal(1, 0.5, d), rng.normal(0, 1, d)
        if const_row:
            x[0] = 3.0
        x, g, b = (a.astype(dtype) for a in (x, g, b))
        x0 = x.copy()
        out, _ = _pair(call_learner(layernorm_forward, x, g, b, 1e-5), "layernorm_forward")
        ref = bnlib.layer_norm_forward(x.astype(np.float64), d, g.astype(np.float64), b.astype(np.float64))[0]
        compare("the output", out, ref, tol, likely_cause(out, _ln_hints(x.astype(np.float64), g, b, 1e-5)))
        if not np.array_equal(x, x0):
            raise CheckFailure("layernorm_forward modified x in place")
        return f"relative error {norm_rel_error(out, ref):.1e}"

    if not hidden:
        report.run("output for x of shape (6, 5), features far from 0", 2, lambda: case(6, 5))
        return report.finish()
    report.run("one sample (N = 1): layer norm needs no batch", 1, lambda: case(1, 7))
    report.run("x of shape (32, 100)", 1, lambda: case(32, 100))
    report.run("float32 input against a float64 reference", 1, lambda: case(16, 12, np.float32, TOL32))
    report.run("a constant row gives beta (eps keeps it finite)", 1, lambda: case(4, 6, const_row=True))

    def against_torch():
        import torch
        import torch.nn.functional as F
        x, g, b = _x(rng, (5, 9)), rng.normal(size=9), rng.normal(size=9)
        out, _ = _pair(call_learner(layernorm_forward, x, g, b, 1e-3), "layernorm_forward")
        compare("the output with eps=1e-3 against torch.nn.functional.layer_norm", out,
                F.layer_norm(torch.tensor(x), (9,), torch.tensor(g), torch.tensor(b), 1e-3).numpy(), TOL64)
    report.run("matches torch.nn.functional.layer_norm (eps=1e-3)", 1, against_torch)
    return report.finish()


def _backward_case(rng, fwd, bwd, name, make, ref_fwd, ref_bwd, dtype, tol, fwd_args=()):
    x, g, b = make()
    x, g, b = (a.astype(dtype) for a in (x, g, b))
    out, cache = _pair(call_learner(fwd, x, g, b, *fwd_args), getattr(fwd, "__name__", "forward"))
    dout = rng.normal(size=x.shape).astype(dtype)
    dx, dg, db = _triple(call_learner(bwd, dout, cache), name)
    y_ref, saved = ref_fwd(x.astype(np.float64), g.astype(np.float64), b.astype(np.float64))
    dx_r, dg_r, db_r = ref_bwd(dout.astype(np.float64), saved)
    try:
        forward_ok = np.shape(out) == y_ref.shape and norm_rel_error(as_array("out", out), y_ref) < 10 * tol
    except CheckFailure:
        forward_ok = False
    note = "" if forward_ok else " (note: your forward pass is not correct yet; fix it first)"
    compare("dbeta" + note, db, db_r, tol, likely_cause(db, [(dout.astype(np.float64).sum(1) if dout.ndim == 2 else dout.sum((1, 2, 3)),
                                                       "dbeta sums dout over everything but the channel/feature axis.")]))
    compare("dgamma" + note, dg, dg_r, tol)
    return x, dout, dx, dx_r, note


def check_layernorm_backward(layernorm_forward, layernorm_backward, points=2.0, hidden=False, seed=0) -> float:
    report = Report("layernorm_backward" + (" (hidden tests)" if hidden else ""), points)
    if (z := guard(report, layernorm_backward)) is not None:
        return z
    rng = np.random.default_rng(seed)

    def case(n, d, dtype=np.float64, tol=TOL64):
        make = lambda: (_x(rng, (n, d)), rng.normal(1, 0.5, d), rng.normal(0, 1, d))  # noqa: E731
        ref_fwd = lambda x, g, b: bnlib.layer_norm_forward(x, d, g, b)  # noqa: E731
        x, dout, dx, dx_r, note = _backward_case(rng, layernorm_forward, layernorm_backward, "layernorm_backward",
                                                 make, ref_fwd, bnlib.layer_norm_backward, dtype, tol, (1e-5,))
        dx64 = as_array("dx", dx).astype(np.float64)
        hint = None
        if dx64.shape == x.shape and np.abs(dx64.sum(1)).max() > 1e-6 * np.abs(dx64).sum(1).max():
            hint = "dx must sum to 0 over the features of each sample: the mean term is missing or wrong."
        compare("dx" + note, dx, dx_r, tol * 10, hint)
        return f"relative error of dx {norm_rel_error(dx, dx_r):.1e}"

    if not hidden:
        report.run("dx, dgamma, dbeta for x of shape (6, 5)", 2, lambda: case(6, 5))
        return report.finish()
    report.run("one sample (N = 1)", 1, lambda: case(1, 8))
    report.run("x of shape (32, 64)", 1, lambda: case(32, 64))
    report.run("float32 input against a float64 reference", 1, lambda: case(16, 12, np.float32, TOL32))
    return report.finish()


# ----------------------------------------------------------------------------- group norm
def _gn_hints(x, g, b, G, eps):
    n, c = x.shape[:2]
    gb = g.reshape(1, c, 1, 1), b.reshape(1, c, 1, 1)

    def grouped(xg):
        mu, var = xg.mean(2, keepdims=True), xg.var(2, keepdims=True)
        return (xg - mu) / np.sqrt(var + eps)
    interleaved = grouped(x.reshape(n, c // G, G, -1).transpose(0, 2, 1, 3).reshape(n, G, -1))
    interleaved = interleaved.reshape(n, G, c // G, -1).transpose(0, 2, 1, 3).reshape(x.shape)
    return [(grouped(x.reshape(n, c, -1)).reshape(x.shape) * gb[0] + gb[1],
             "statistics per channel (instance norm); group norm pools the C/G channels of each group."),
            (grouped(x.reshape(n, 1, -1)).reshape(x.shape) * gb[0] + gb[1],
             "statistics over all channels (layer norm); use G groups of C/G consecutive channels."),
            (interleaved * gb[0] + gb[1], "groups must be consecutive channels: x.reshape(N, G, C // G, H, W), "
                                          "not channels taken every G."),
            ]


def check_groupnorm_forward(groupnorm_forward, points=2.0, hidden=False, seed=0) -> float:
    report = Report("groupnorm_forward" + (" (hidden tests)" if hidden else ""), points)
    if (z := guard(report, groupnorm_forward)) is not None:
        return z
    rng = np.random.default_rng(seed)

    def case(shape, G, dtype=np.float64, tol=TOL64):
        c = shape[1]
        x = (rng.normal(0, 1, shape) * rng.uniform(0.5, 3, (1, c, 1, 1)) + rng.normal(8, 4, (1, c, 1, 1)))
        g, b = rng.normal(1, 0.5, c), rng.normal(0, 1, c)
        x, g, b = (a.astype(dtype) for a in (x, g, b))
        out, _ = _pair(call_learner(groupnorm_forward, x, g, b, G, 1e-5), "groupnorm_forward")
        ref = bnlib.group_norm_forward(x.astype(np.float64), G, g.astype(np.float64), b.astype(np.float64))[0]
        compare("the output", out, ref, tol, likely_cause(out, _gn_hints(x.astype(np.float64), g, b, G, 1e-5)))
        return f"relative error {norm_rel_error(out, ref):.1e}"

    if not hidden:
        report.run("x of shape (2, 6, 4, 4), G = 3", 2, lambda: case((2, 6, 4, 4), 3))
        return report.finish()
    report.run("G = 1 (all channels together)", 0.5, lambda: case((3, 4, 3, 3), 1))
    report.run("G = C (instance norm)", 0.5, lambda: case((3, 4, 3, 3), 4))
    report.run("x of shape (4, 16, 5, 7), G = 4; N = 1 works too", 1, lambda: (case((4, 16, 5, 7), 4), case((1, 8, 2, 2), 2))[0])
    report.run("float32 input against a float64 reference", 1, lambda: case((2, 8, 6, 6), 2, np.float32, TOL32))

    def against_torch():
        import torch
        import torch.nn.functional as F
        x, g, b = rng.normal(size=(3, 6, 2, 5)), rng.normal(size=6), rng.normal(size=6)
        out, _ = _pair(call_learner(groupnorm_forward, x, g, b, 2, 1e-5), "groupnorm_forward")
        compare("the output against torch.nn.functional.group_norm", out,
                F.group_norm(torch.tensor(x), 2, torch.tensor(g), torch.tensor(b)).numpy(), TOL64)
    report.run("matches torch.nn.functional.group_norm", 1, against_torch)
    return report.finish()


def check_groupnorm_backward(groupnorm_forward, groupnorm_backward, points=2.0, hidden=False, seed=0) -> float:
    report = Report("groupnorm_backward" + (" (hidden tests)" if hidden else ""), points)
    if (z := guard(report, groupnorm_backward)) is not None:
        return z
    rng = np.random.default_rng(seed)

    def case(shape, G, dtype=np.float64, tol=TOL64):
        c = shape[1]
        make = lambda: (rng.normal(0, 1, shape) * 2 + rng.normal(8, 4, (1, c, 1, 1)),  # noqa: E731
                        rng.normal(1, 0.5, c), rng.normal(0, 1, c))
        ref_fwd = lambda x, g, b: bnlib.group_norm_forward(x, G, g, b)  # noqa: E731
        x, dout, dx, dx_r, note = _backward_case(rng, groupnorm_forward, groupnorm_backward, "groupnorm_backward",
                                                 make, ref_fwd, bnlib.group_norm_backward, dtype, tol, (G, 1e-5))
        hint = None
        dx64 = as_array("dx", dx).astype(np.float64)
        if dx64.shape == x.shape:
            group_sums = dx64.reshape(shape[0], G, -1).sum(2)
            if np.abs(group_sums).max() > 1e-6 * np.abs(dx64).sum():
                hint = "dx must sum to 0 over each (sample, group): the mean term is missing or wrong."
        compare("dx" + note, dx, dx_r, tol * 10, hint)
        return f"relative error of dx {norm_rel_error(dx, dx_r):.1e}"

    if not hidden:
        report.run("dx, dgamma, dbeta for x of shape (2, 6, 4, 4), G = 3", 2, lambda: case((2, 6, 4, 4), 3))
        return report.finish()
    report.run("G = 1 and G = C", 1, lambda: (case((3, 4, 3, 3), 1), case((3, 4, 3, 3), 4))[0])
    report.run("x of shape (4, 16, 5, 7), G = 8", 1, lambda: case((4, 16, 5, 7), 8))
    report.run("float32 input against a float64 reference", 1, lambda: case((2, 8, 6, 6), 2, np.float32, TOL32))
    return report.finish()


# ----------------------------------------------------------------------------- batch renorm
def check_batch_renorm_forward(batch_renorm_forward, points=2.0, hidden=False, seed=0) -> float:
    report = Report("batch_renorm_forward" + (" (hidden tests)" if hidden else ""), points)
    if (z := guard(report, batch_renorm_forward)) is not None:
        return z
    rng = np.random.default_rng(seed)

    def case(n=16, d=5, r_max=1.5, d_max=0.5, steps=1, training=True, dtype=np.float64, tol=TOL64):
        g, b = rng.normal(1, 0.5, d), rng.normal(0, 1, d)
        rm, rv = rng.normal(8, 4, d), rng.uniform(0.2, 9, d)   # far from the batch: r and d get clipped
        rm_l, rv_l, rm_r, rv_r = rm.copy(), rv.copy(), rm.copy(), rv.copy()
        for _ in range(steps):
            x = _x(rng, (n, d))
            out, _ = _pair(call_learner(batch_renorm_forward, x.astype(dtype), g.astype(dtype), b.astype(dtype),
                                        rm_l, rv_l, training, r_max, d_max, 0.1, 1e-5), "batch_renorm_forward")
            ref, _ = bnlib.batch_renorm_forward(x.astype(dtype).astype(np.float64), g, b, rm_r, rv_r, training,
                                                r_max, d_max, 0.1, 1e-5)
        mu, var = x.mean(0), x.var(0)
        sb, s = np.sqrt(var + 1e-5), np.sqrt(rv + 1e-5)   # r and d use the statistics from before the step
        hints = [(g * ((x - mu) / sb) + b, "r and d are not applied: that is plain batch norm (they correct the batch "
                                           "statistics toward the running ones)."),
                 (g * ((x - mu) / sb * (sb / s) + (mu - rm) / s) + b,
                  "r and d must be clipped to [1/r_max, r_max] and [-d_max, d_max].")] if steps == 1 else []
        compare("the output", out, ref, tol, likely_cause(out, hints))
        if training:
            m = x.shape[0]
            compare("running_mean", rm_l, rm_r, tol)
            compare("running_var", rv_l, rv_r, tol, likely_cause(rv_l, [
                ((1 - 0.1) * rv + 0.1 * var, "running_var is updated with the unbiased variance m/(m-1).")]) if steps == 1 else None)
        elif not (np.array_equal(rm_l, rm) and np.array_equal(rv_l, rv)):
            raise CheckFailure("eval mode changed the running statistics")
        return None

    if not hidden:
        report.run("training output with r and d clipped, and the running statistics", 2, case)
        return report.finish()
    report.run("r_max = 1, d_max = 0 is batch norm", 1, lambda: case(r_max=1.0, d_max=0.0))
    report.run("loose limits (r and d not clipped)", 1, lambda: case(r_max=1e6, d_max=1e6))
    report.run("5 training steps: running statistics feed the next step's r and d", 1, lambda: case(steps=5))
    report.run("eval mode uses the running statistics, leaves them unchanged", 0.5, lambda: case(training=False))
    report.run("float32 input against a float64 reference", 0.5, lambda: case(dtype=np.float32, tol=TOL32))
    return report.finish()
