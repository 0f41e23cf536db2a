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
WORKS = 1e-3   # "the layer works": essential sub-tests (see autograder/checks/__init__.py Report)


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
        ref = bnlib.layer_norm_forward(x.astype(np.float64), d, weight=g.astype(np.float64),
                                       bias=b.astype(np.float64))[0]
        compare("the output", out, ref, tol, likely_cause(out, _ln_hints(x.astype(np.float64), g, b, 1e-5)))
        if not np.array_equal(x, x0):
            raise CheckFailure("layernorm_forward modified x in place")
        return f"relative error {norm_rel_error(out, ref):.1e}"

    if not hidden:
        works = "layer norm works: output for x of shape (6, 5), features far from 0"
        report.run(works, 1, lambda: case(6, 5, tol=WORKS), essential=True)
        report.run("output exact to 1e-7", 0.5, lambda: case(6, 5))
        report.run("one sample (N = 1)", 0.5, lambda: case(1, 7))
        return report.finish()
    works = "layer norm works: x of shape (32, 100)"
    report.run(works, 1, lambda: case(32, 100, tol=WORKS), essential=True)
    report.run("x of shape (32, 100) exact to 1e-7", 0.5, lambda: case(32, 100))
    report.run("one sample (N = 1): layer norm needs no batch", 0.5, lambda: case(1, 7))
    report.run("float32 input against a float64 reference", 0.5, lambda: case(16, 12, np.float32, TOL32))
    report.run("a constant row gives beta (eps keeps it finite)", 0.5, lambda: case(4, 6, const_row=True))

    def against_torch():
        import torch
        import torch.nn.functional as F
        x, g, b = _x(rng, (5, 9)), rng.normal(size=9), rng.normal(size=9)
        out, _ = _pair(call_learner(layernorm_forward, x, g, b, 1e-3), "layernorm_forward")
        compare("the output with eps=1e-3 against torch.nn.functional.layer_norm", out,
                F.layer_norm(torch.tensor(x), (9,), torch.tensor(g), torch.tensor(b), 1e-3).numpy(), TOL64)
    report.run("matches torch.nn.functional.layer_norm (eps=1e-3)", 0.5, against_torch)
    return report.finish()


def _own_units(x, out, g, b, dout, units, params):
    """Gradients of a normalization computed on the learner's own statistics (see
    ``checks.m01.own_normalization_gradients``): ``units(a)`` views an array as (normalized units, values
    per unit), ``params(a)`` sums over everything but the channel axis; gamma and beta come broadcast."""
    x, out, g, b, dy = (np.asarray(a, dtype=np.float64) for a in (x, out, g, b, dout))
    if out.shape != x.shape or np.any(g == 0) or not np.all(np.isfinite(out)):
        return None
    z = (out - b) / g
    xu, zu = units(x), units(z)
    xc = xu - xu.mean(1, keepdims=True)
    zz = (zu * zu).sum(1, keepdims=True)
    if np.any(zz <= 0):
        return None
    s = (xc * zu).sum(1, keepdims=True) / zz
    if np.any(s <= 0) or np.max(np.abs(xc - s * zu)) > 1e-6 * max(1e-300, np.max(np.abs(xc))):
        return None
    k = xu.shape[1]
    dxh = units(dy * g)
    dx = ((k * dxh - dxh.sum(1, keepdims=True) - zu * (dxh * zu).sum(1, keepdims=True)) / (k * s)).reshape(x.shape)
    return dx, params(dy * z), params(dy)


def _backward_case(rng, fwd, bwd, name, make, ref_fwd, ref_bwd, dtype, tol, fwd_args, units, params, broadcast,
                   parts=("dx", "dgamma", "dbeta"), dx_hints=None):
    """One case of a backward check: the parts asked for, right against the reference, or (the forward
    pass being wrong) right for the normalization the forward pass computes. ``dx_hints(x, gamma, dout)``
    (float64) gives (dx of a known mistake, message) pairs, named before the generic hints."""
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
    own = None
    if not forward_ok:
        try:
            own = _own_units(x, as_array("out", out), broadcast(g), broadcast(b), dout, units, params)
        except CheckFailure:
            own = None
    credited = []
    dout64 = dout.astype(np.float64)
    hints = {"dbeta": likely_cause(db, [(dout64.sum(tuple(range(1, dout.ndim))),
                                         "dbeta sums dout over everything but the channel/feature axis.")]),
             "dgamma": None, "dx": None}
    dx64 = None
    try:
        dx64 = as_array("dx", dx).astype(np.float64)
    except CheckFailure:
        pass
    if dx_hints is not None:
        hints["dx"] = likely_cause(dx, dx_hints(x.astype(np.float64), g.astype(np.float64), dout64))
    if hints["dx"] is None and dx64 is not None and dx64.shape == x.shape and \
            np.abs(units(dx64).sum(1)).max() > 1e-6 * np.abs(units(dx64)).sum(1).max():
        hints["dx"] = "dx must sum to 0 over each normalized group of values: the mean term is missing or wrong."
    got = {"dx": dx, "dgamma": dg, "dbeta": db}
    ref = {"dx": dx_r, "dgamma": dg_r, "dbeta": db_r}
    for i, key in ((2, "dbeta"), (1, "dgamma"), (0, "dx")):
        if key not in parts:
            continue
        t = tol * 10 if key == "dx" else tol
        try:
            compare(key + note, got[key], ref[key], t, hints[key])
        except CheckFailure:
            if own is None:
                raise
            try:
                compare(key, got[key], own[i], t)
            except CheckFailure:
                pass
            else:
                credited.append(key)
                continue
            raise
    if credited:
        return "right for the normalization your forward pass computes; the forward pass itself is wrong"
    return f"relative error of dx {norm_rel_error(dx, dx_r):.1e}" if "dx" in parts else None


def _ln_backward_hints(x, g, dout, eps=1e-5):
    d = x.shape[1]
    std = np.sqrt(x.var(1, keepdims=True) + eps)
    xhat = (x - x.mean(1, keepdims=True)) / std
    factored = g * (d * dout - dout.sum(1, keepdims=True) - xhat * (dout * xhat).sum(1, keepdims=True)) / (d * std)
    return [(factored, "gamma was factored out of the sums (Module 01's closed form with the axes swapped). "
                       "In layer norm the sums run over the features, along which gamma varies: form "
                       "dxhat = dout * gamma first and sum dxhat, not dout, over each row.")]


def check_layernorm_backward(layernorm_forward, layernorm_backward, points=2.0, hidden=False, seed=0) -> float:
    report = Report("layernorm_backward" + (" (hidden tests)" if hidden else ""), points)
    if (z := guard(report, layernorm_backward)) is not None:
        return z
    rng = np.random.default_rng(seed)

    def case(n, d, dtype=np.float64, tol=TOL64, parts=("dx", "dgamma", "dbeta")):
        make = lambda: (_x(rng, (n, d)), rng.normal(1, 0.5, d), rng.normal(0, 1, d))  # noqa: E731
        ref_fwd = lambda x, g, b: bnlib.layer_norm_forward(x, d, weight=g, bias=b)  # noqa: E731
        return _backward_case(rng, layernorm_forward, layernorm_backward, "layernorm_backward", make, ref_fwd,
                              bnlib.layer_norm_backward, dtype, tol, (1e-5,), units=lambda a: a.reshape(n, d),
                              params=lambda a: a.sum(0), broadcast=lambda v: v.reshape(1, d), parts=parts,
                              dx_hints=_ln_backward_hints)

    if not hidden:
        works = "backward works: dx for x of shape (6, 5)"
        report.run(works, 1, lambda: case(6, 5, tol=WORKS, parts=("dx",)), essential=True)
        report.run("dx exact", 0.5, lambda: case(6, 5, parts=("dx",)))
        report.run("dgamma and dbeta", 0.5, lambda: case(6, 5, parts=("dgamma", "dbeta")))
        return report.finish()
    works = "backward works: dx for x of shape (32, 64)"
    report.run(works, 1, lambda: case(32, 64, tol=WORKS, parts=("dx",)), essential=True)
    for label, args in (("one sample (N = 1)", (1, 8)), ("x of shape (32, 64)", (32, 64)),
                        ("float32 input against a float64 reference", (16, 12, np.float32, TOL32))):
        report.run(f"dx, {label}", 0.6, lambda args=args: case(*args, parts=("dx",)))
        report.run(f"dgamma and dbeta, {label}", 0.4, lambda args=args: case(*args, parts=("dgamma", "dbeta")))
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
        ref = bnlib.group_norm_forward(x.astype(np.float64), G, weight=g.astype(np.float64),
                                       bias=b.astype(np.float64))[0]
        compare("the output", out, ref, tol, likely_cause(out, _gn_hints(x.astype(np.float64), g, b, G, 1e-5)))
        return f"relative error {norm_rel_error(out, ref):.1e}"

    if not hidden:
        works = "group norm works: x of shape (2, 6, 4, 4), G = 3"
        report.run(works, 1, lambda: case((2, 6, 4, 4), 3, tol=WORKS), essential=True)
        report.run("output exact to 1e-7", 0.5, lambda: case((2, 6, 4, 4), 3))
        report.run("G = 1 and G = C", 0.5, lambda: (case((3, 4, 3, 3), 1), case((3, 4, 3, 3), 4))[0])
        return report.finish()
    works = "group norm works: x of shape (4, 16, 5, 7), G = 4"
    report.run(works, 1, lambda: case((4, 16, 5, 7), 4, tol=WORKS), essential=True)
    report.run("x of shape (4, 16, 5, 7), G = 4, exact; N = 1 works too", 0.5,
               lambda: (case((4, 16, 5, 7), 4), case((1, 8, 2, 2), 2))[0])
    report.run("G = 1 (all channels together)", 0.5, lambda: case((3, 4, 3, 3), 1))
    report.run("G = C (instance norm)", 0.5, lambda: case((3, 4, 3, 3), 4))
    report.run("float32 input against a float64 reference", 0.5, lambda: case((2, 8, 6, 6), 2, np.float32, TOL32))

    def against_torch():
        import torch
        import torch.nn.functional as F
        x, g, b = rng.normal(size=(3, 6, 2, 5)), rng.normal(size=6), rng.normal(size=6)
        out, _ = _pair(call_learner(groupnorm_forward, x, g, b, 2, 1e-5), "groupnorm_forward")
        compare("the output against torch.nn.functional.group_norm", out,
                F.group_norm(torch.tensor(x), 2, torch.tensor(g), torch.tensor(b)).numpy(), TOL64)
    report.run("matches torch.nn.functional.group_norm", 0.5, against_torch)
    return report.finish()


def check_groupnorm_backward(groupnorm_forward, groupnorm_backward, points=2.0, hidden=False, seed=0) -> float:
    report = Report("groupnorm_backward" + (" (hidden tests)" if hidden else ""), points)
    if (z := guard(report, groupnorm_backward)) is not None:
        return z
    rng = np.random.default_rng(seed)

    def case(shape, G, dtype=np.float64, tol=TOL64, parts=("dx", "dgamma", "dbeta")):
        c = shape[1]
        make = lambda: (rng.normal(0, 1, shape) * 2 + rng.normal(8, 4, (1, c, 1, 1)),  # noqa: E731
                        rng.normal(1, 0.5, c), rng.normal(0, 1, c))
        ref_fwd = lambda x, g, b: bnlib.group_norm_forward(x, G, weight=g, bias=b)  # noqa: E731
        return _backward_case(rng, groupnorm_forward, groupnorm_backward, "groupnorm_backward", make, ref_fwd,
                              bnlib.group_norm_backward, dtype, tol, (G, 1e-5),
                              units=lambda a: a.reshape(shape[0] * G, -1), params=lambda a: a.sum((0, 2, 3)),
                              broadcast=lambda v: v.reshape(1, c, 1, 1), parts=parts)

    if not hidden:
        works = "backward works: dx for x of shape (2, 6, 4, 4), G = 3"
        report.run(works, 1, lambda: case((2, 6, 4, 4), 3, tol=WORKS, parts=("dx",)), essential=True)
        report.run("dx exact", 0.5, lambda: case((2, 6, 4, 4), 3, parts=("dx",)))
        report.run("dgamma and dbeta", 0.5, lambda: case((2, 6, 4, 4), 3, parts=("dgamma", "dbeta")))
        return report.finish()
    works = "backward works: dx for x of shape (4, 16, 5, 7), G = 8"
    report.run(works, 1, lambda: case((4, 16, 5, 7), 8, tol=WORKS, parts=("dx",)), essential=True)
    for label, args in (("G = 1", ((3, 4, 3, 3), 1)), ("G = C", ((3, 4, 3, 3), 4)),
                        ("x of shape (4, 16, 5, 7), G = 8", ((4, 16, 5, 7), 8)),
                        ("float32 input against a float64 reference", ((2, 8, 6, 6), 2, np.float32, TOL32))):
        report.run(f"dx, {label}", 0.6, lambda args=args: case(*args, parts=("dx",)))
        report.run(f"dgamma and dbeta, {label}", 0.4, lambda args=args: case(*args, parts=("dgamma", "dbeta")))
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
            ref, _ = bnlib.batch_renorm_forward(x.astype(dtype).astype(np.float64), weight=g, bias=b,
                                                running_mean=rm_r, running_var=rv_r, training=bool(training),
                                                r_max=r_max, d_max=d_max, momentum=0.1, eps=1e-5)
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
        works = "batch renorm works: training output with r and d clipped, and the running statistics"
        report.run(works, 1, lambda: (case(tol=WORKS), case(r_max=1e6, d_max=1e6, tol=WORKS))[0], essential=True)
        report.run("the same, exact to 1e-7", 0.5, case)
        report.run("eval mode uses the running statistics, leaves them unchanged", 0.5, lambda: case(training=False),
                   requires=works)
        return report.finish()
    works = "batch renorm works: training output and running statistics, 5 steps"
    report.run(works, 1, lambda: (case(steps=5, tol=WORKS), case(r_max=1e6, d_max=1e6, tol=WORKS))[0],
               essential=True)
    report.run("r_max = 1, d_max = 0 is batch norm", 0.5, lambda: case(r_max=1.0, d_max=0.0))
    report.run("loose limits (r and d not clipped)", 0.5, lambda: case(r_max=1e6, d_max=1e6))
    report.run("5 training steps exact: running statistics feed the next step's r and d", 0.5, lambda: case(steps=5))
    report.run("eval mode uses the running statistics, leaves them unchanged", 0.5, lambda: case(training=False),
               requires=works)
    report.run("float32 input against a float64 reference", 0.5, lambda: case(dtype=np.float32, tol=TOL32))
    return report.finish()
