"""The maths shared by the normalizations that work within each sample (layer norm, group norm).

x is viewed so that the statistics reduce over ``axes`` (layer norm: (R, K) rows, axes (1,); group norm:
(N, G, C/G, L), axes (2, 3)), and the weight and bias broadcast against that view. Statistics are
two-pass (mean, then the mean of squared deviations), accumulated in float64 (NumPy) or float32 (torch),
with float16/bfloat16 computed in float32. In the formulas, g = dy * weight is the gradient that reaches
xhat and means run over ``axes``:

    xhat = (x - mean) / sqrt(var + eps),                   y = xhat * weight + bias
    dx = (g - mean(g) - xhat * mean(g * xhat)) / sqrt(var + eps)
    dweight = sum(dy * xhat),   dbias = sum(dy)            (over every axis the weight is broadcast along)

The same formulas are written in differentiable torch operations, so autograd differentiates the
backward pass again (double backward) when a graph is requested.
"""
from __future__ import annotations


def _count(x, axes) -> int:
    k = 1
    for a in axes:
        k *= x.shape[a]
    return k


def statistics(be, x, axes, eps):
    """(mean, invstd) over ``axes``, kept as broadcastable dimensions, in the accumulation dtype."""
    cdt, acc = be.compute_dtype(x), be.acc_dtype(x)
    xc = be.astype(x, cdt)
    k = _count(x, axes)
    mean = be.sum(xc, axes, acc) / k
    d = xc - be.astype(mean, cdt)
    var = be.sum(d * d, axes, acc) / k
    return mean, 1 / be.sqrt(var + eps)


def forward(be, x, axes, weight, bias, eps):
    """(y, mean, invstd): y = (x - mean) * invstd * weight + bias in x's dtype."""
    cdt = be.compute_dtype(x)
    mean, invstd = statistics(be, x, axes, eps)
    y = (be.astype(x, cdt) - be.astype(mean, cdt)) * be.astype(invstd, cdt)
    if weight is not None:
        y = y * be.astype(weight, cdt)
    if bias is not None:
        y = y + be.astype(bias, cdt)
    return be.astype(y, x.dtype), mean, invstd


def backward(be, dy, x, mean, invstd, weight, axes, param_axes, need_weight, need_bias):
    """(dx, dweight, dbias) of :func:`forward`; dweight/dbias summed over ``param_axes`` (kept dims)."""
    cdt, acc = be.compute_dtype(x), be.acc_dtype(x)
    k = _count(x, axes)
    dyc = be.astype(dy, cdt)
    inv = be.astype(invstd, cdt)
    xhat = (be.astype(x, cdt) - be.astype(mean, cdt)) * inv
    g = dyc if weight is None else dyc * be.astype(weight, cdt)
    mean_g = be.astype(be.sum(g, axes, acc) / k, cdt)
    mean_gx = be.astype(be.sum(g * xhat, axes, acc) / k, cdt)
    dx = (g - mean_g - xhat * mean_gx) * inv
    dweight = be.sum(dyc * xhat, param_axes, acc) if need_weight else None
    dbias = be.sum(dyc, param_axes, acc) if need_bias else None
    return be.astype(dx, dy.dtype), dweight, dbias
