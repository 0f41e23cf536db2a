"""Known-buggy implementations for Module 01 (BatchNorm from scratch), as edits of the solution cells.

Each one is a mistake seen in practice (course forums, the anchors' own errata, or our pilots).
"""
from . import Bug

ASSIGNMENT = "01_batchnorm_numpy"
F, B, A = "batchnorm_forward", "batchnorm_backward", "batchnorm_backward_alt"

BUGS = [
    # ---- forward
    Bug("normalize_unbiased", F, (("var = (xc ** 2).mean(axis=0)", "var = x.var(axis=0, ddof=1)"),),
        "normalizes with the unbiased variance (ddof=1)"),
    Bug("eps_outside_sqrt", F, (("std = np.sqrt(var + eps)", "std = np.sqrt(var) + eps"),),
        "eps added outside the square root", breaks=False),
    Bug("no_eps", F, (("std = np.sqrt(var + eps)", "std = np.sqrt(var)"),), "eps forgotten in training mode", breaks=False),
    Bug("divide_by_variance", F, (("xhat = xc / std", "xhat = xc / std ** 2"),), "divides by the variance"),
    Bug("gamma_beta_swapped", F, (("out = gamma * xhat + beta\n        running_mean",
                                   "out = beta * xhat + gamma\n        running_mean"),), "gamma and beta swapped"),
    Bug("momentum_weights_old", F, (
        ("running_mean *= 1 - momentum\n        running_mean += momentum * mu",
         "running_mean *= momentum\n        running_mean += (1 - momentum) * mu"),
        ("running_var *= 1 - momentum\n        running_var += momentum * var * m / (m - 1)",
         "running_var *= momentum\n        running_var += (1 - momentum) * var * m / (m - 1)")),
        "CS231n's momentum convention (weight on the old value)"),
    Bug("running_var_biased", F, (("running_var += momentum * var * m / (m - 1)", "running_var += momentum * var"),),
        "running_var updated with the biased variance"),
    Bug("running_not_in_place", F, (
        ("running_mean *= 1 - momentum\n        running_mean += momentum * mu",
         "running_mean = (1 - momentum) * running_mean + momentum * mu"),
        ("running_var *= 1 - momentum\n        running_var += momentum * var * m / (m - 1)",
         "running_var = (1 - momentum) * running_var + momentum * var * m / (m - 1)")),
        "running statistics rebound instead of updated in place"),
    Bug("running_var_stores_std", F, (("running_var += momentum * var * m / (m - 1)",
                                       "running_var += momentum * np.sqrt(var * m / (m - 1))"),),
        "running_var accumulates the standard deviation"),
    Bug("eval_uses_batch_stats", F, (("xhat = (x - running_mean) / np.sqrt(running_var + eps)",
                                      "xhat = (x - x.mean(axis=0)) / np.sqrt(x.var(axis=0) + eps)"),),
        "eval mode normalizes with the batch statistics"),
    Bug("eval_no_eps", F, (("np.sqrt(running_var + eps)", "np.sqrt(running_var)"),), "eval mode forgets eps", breaks=False),
    Bug("eval_updates_running", F, (("    else:\n", "    else:\n        running_mean *= 1 - momentum\n"
                                                  "        running_mean += momentum * x.mean(axis=0)\n"),),
        "eval mode also updates running_mean"),
    Bug("stats_over_features", F, (("mu = x.mean(axis=0)", "mu = x.mean(axis=1, keepdims=True)"),
                                   ("var = (xc ** 2).mean(axis=0)", "var = (xc ** 2).mean(axis=1, keepdims=True)"),
                                   ("running_mean += momentum * mu", "running_mean += momentum * mu.mean()"),
                                   ("running_var += momentum * var * m / (m - 1)",
                                    "running_var += momentum * var.mean()")),
        "statistics over the features of each sample (LayerNorm) instead of over the batch"),
    Bug("forward_calls_bnlib", F, (("    if training:\n        m = x.shape[0]",
                                    "    import bnlib\n    return bnlib.batch_norm_forward(x, weight=gamma, bias=beta, "
                                    "running_mean=running_mean, running_var=running_var, "
                                    "training=training, momentum=momentum, eps=eps)\n"
                                    "    if training:\n        m = x.shape[0]"),),
        "delegates to bnlib (no credit)"),
    # ---- staged backward
    Bug("dgamma_wrong_axis", B, (("dgamma = (dout * xhat).sum(axis=0)", "dgamma = (dout * xhat).sum(axis=1)"),),
        "dgamma summed over the features", breaks=False),
    Bug("dbeta_mean", B, (("dbeta = dout.sum(axis=0)", "dbeta = dout.mean(axis=0)"),), "dbeta averaged, not summed", breaks=False),
    Bug("dx_missing_mean_term", B, (("dx = dxc + dmu / m", "dx = dxc"),), "dx misses the path through the mean"),
    Bug("dx_missing_var_term", B, (("dxc += 2 * xc * dsq", "pass"),), "dx misses the path through the variance"),
    Bug("dstd_sign", B, (("dstd = -(dxhat * xc).sum(axis=0) / std ** 2", "dstd = (dxhat * xc).sum(axis=0) / std ** 2"),),
        "sign error in the derivative of 1/std"),
    Bug("dx_ignores_gamma", B, (("dxhat = dout * gamma", "dxhat = dout"),), "dxhat = dout (gamma forgotten)"),
    Bug("dvar_not_averaged", B, (("dsq = np.ones_like(xc) * dvar / m", "dsq = np.ones_like(xc) * dvar"),),
        "forgets the 1/m of the variance's mean"),
    Bug("dmu_not_averaged", B, (("dx = dxc + dmu / m", "dx = dxc + dmu"),), "forgets the 1/m of the mean"),
    Bug("dvar_half_missing", B, (("dvar = dstd * 0.5 / std", "dvar = dstd / std"),),
        "derivative of sqrt without the factor 1/2"),
    # ---- closed-form backward
    Bug("alt_missing_mean_term", A, (("(m * dout - dbeta - xhat * dgamma)", "(m * dout - xhat * dgamma)"),),
        "closed form without the mean term"),
    Bug("alt_missing_var_term", A, (("(m * dout - dbeta - xhat * dgamma)", "(m * dout - dbeta)"),),
        "closed form without the variance term"),
    Bug("alt_not_divided_by_m", A, (("gamma / (m * std)", "gamma / std"),), "closed form without 1/m"),
    Bug("alt_ignores_gamma", A, (("gamma / (m * std)", "1 / (m * std)"),), "closed form without gamma"),
    Bug("alt_divides_by_variance", A, (("gamma / (m * std)", "gamma / (m * std ** 2)"),),
        "closed form divides by the variance"),
    Bug("alt_dgamma_without_xhat", A, (("dgamma = (dout * xhat).sum(axis=0)", "dgamma = dout.sum(axis=0)"),),
        "dgamma without the xhat factor"),
    Bug("alt_eval_gradient", A, (("dx = gamma / (m * std) * (m * dout - dbeta - xhat * dgamma)",
                                  "dx = gamma / std * dout"),),
        "uses the eval-mode gradient in training"),
    Bug("alt_calls_torch", A, (("    xc, std, xhat, gamma = cache\n",
                                "    import torch\n    xc, std, xhat, gamma = cache\n"
                                "    _ = torch.zeros(1)\n"),),
        "reaches for torch (no credit in a NumPy module)"),
]

# Independently written correct implementations: each must keep full marks.
CORRECT_VARIANTS = {
    # float32 throughout, shifted two-pass variance, dict cache, closed forms written differently.
    "float32_shifted_two_pass": {
        F: '''
def batchnorm_forward(x, gamma, beta, running_mean, running_var, training, momentum=0.1, eps=1e-5):
    x = np.asarray(x)
    if not training:
        inv = 1.0 / np.sqrt(running_var + eps)
        return (x - running_mean) * (inv * gamma) + beta, None
    n = x.shape[0]
    k = x[0]                                 # shift by the first sample: stable one-pass statistics
    d = x - k
    s1 = d.sum(axis=0)
    s2 = (d * d).sum(axis=0)
    mean = k + s1 / n
    var = (s2 - s1 * s1 / n) / n
    var = np.maximum(var, 0)
    inv = 1.0 / np.sqrt(var + eps)
    xhat = (x - mean) * inv
    running_mean[:] = running_mean + momentum * (mean - running_mean)
    running_var[:] = running_var + momentum * (var * n / (n - 1) - running_var)
    return xhat * gamma + beta, {"xhat": xhat, "inv": inv, "gamma": gamma}
''',
        B: '''
def batchnorm_backward(dout, cache):
    xhat, inv, gamma = cache["xhat"], cache["inv"], cache["gamma"]
    n = dout.shape[0]
    dbeta = np.sum(dout, axis=0)
    dgamma = np.sum(dout * xhat, axis=0)
    g = dout * gamma
    dx = inv * (g - g.mean(axis=0) - xhat * (g * xhat).mean(axis=0))
    return dx, dgamma, dbeta
''',
        A: '''
def batchnorm_backward_alt(dout, cache):
    xhat, inv, gamma = cache["xhat"], cache["inv"], cache["gamma"]
    dbeta = dout.sum(0)
    dgamma = np.einsum("ij,ij->j", dout, xhat)
    dx = (gamma * inv) * (dout - dbeta / len(dout) - xhat * dgamma / len(dout))
    return dx, dgamma, dbeta
''',
    },
    # float64 computation whatever the input, cache of raw inputs, staged backward recomputing everything.
    "float64_recompute_cache": {
        F: '''
def batchnorm_forward(x, gamma, beta, running_mean, running_var, training, momentum=0.1, eps=1e-5):
    x64 = x.astype(np.float64)
    if training:
        mean = x64.mean(axis=0)
        var = x64.var(axis=0)
        m = x.shape[0]
        np.multiply(running_mean, 1 - momentum, out=running_mean)
        np.add(running_mean, momentum * mean, out=running_mean)
        np.multiply(running_var, 1 - momentum, out=running_var)
        np.add(running_var, momentum * var * (m / (m - 1.0)), out=running_var)
    else:
        mean, var = running_mean, running_var
    out = gamma * (x64 - mean) / np.sqrt(var + eps) + beta
    return out.astype(x.dtype), {"x": x64, "gamma": np.asarray(gamma, np.float64), "eps": eps}
''',
        B: '''
def batchnorm_backward(dout, cache):
    x, gamma, eps = cache["x"], cache["gamma"], cache["eps"]
    m = x.shape[0]
    mean = x.sum(axis=0) / m
    diff = x - mean
    var = (diff ** 2).sum(axis=0) / m
    s = np.sqrt(var + eps)
    xhat = diff / s
    dbeta = dout.sum(axis=0)
    dgamma = (dout * xhat).sum(axis=0)
    dxhat = dout * gamma
    dvar = (dxhat * diff).sum(axis=0) * -0.5 * (var + eps) ** -1.5
    dmean = -(dxhat / s).sum(axis=0) + dvar * (-2.0 * diff).sum(axis=0) / m
    dx = dxhat / s + dvar * 2.0 * diff / m + dmean / m
    return dx, dgamma, dbeta
''',
        A: '''
def batchnorm_backward_alt(dout, cache):
    x, gamma, eps = cache["x"], cache["gamma"], cache["eps"]
    m = x.shape[0]
    s = np.sqrt(x.var(axis=0) + eps)
    xhat = (x - x.mean(axis=0)) / s
    dbeta = dout.sum(axis=0)
    dgamma = (dout * xhat).sum(axis=0)
    dx = (gamma / (m * s)) * (m * dout - dbeta - xhat * dgamma)
    return dx, dgamma, dbeta
''',
    },
}
