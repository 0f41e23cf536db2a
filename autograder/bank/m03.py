"""Known-buggy implementations for Module 03 (the normalization family), as edits of the solution cells."""
from . import Bug

ASSIGNMENT = "03_normalization_family"
LF, LB, GF, GB, RF = ("layernorm_forward", "layernorm_backward", "groupnorm_forward", "groupnorm_backward",
                      "batch_renorm_forward")

BUGS = [
    # ---- layer norm
    Bug("ln_over_batch_axis", LF, (("mu = x.mean(axis=1, keepdims=True)", "mu = x.mean(axis=0, keepdims=True)"),
                                   ("var = (xc ** 2).mean(axis=1, keepdims=True)", "var = (xc ** 2).mean(axis=0, keepdims=True)")),
        "statistics over the batch (that is batch norm)"),
    Bug("ln_unbiased", LF, (("var = (xc ** 2).mean(axis=1, keepdims=True)", "var = x.var(axis=1, ddof=1, keepdims=True)"),),
        "unbiased variance"),
    Bug("ln_eps_outside", LF, (("std = np.sqrt(var + eps)", "std = np.sqrt(var) + eps"),), "eps outside the square root", breaks=False),
    Bug("ln_no_eps", LF, (("std = np.sqrt(var + eps)", "std = np.sqrt(var)"),), "eps forgotten (constant rows divide by 0)", breaks=False),
    Bug("ln_bwd_missing_mean_term", LB, (("(D * dxhat - dxhat.sum(axis=1, keepdims=True)\n          - xhat",
                                          "(D * dxhat\n          - xhat"),), "dx misses the mean term"),
    Bug("ln_bwd_missing_var_term", LB, (("\n          - xhat * (dxhat * xhat).sum(axis=1, keepdims=True)) / (D * std)",
                                         ") / (D * std)"),), "dx misses the variance term"),
    Bug("ln_bwd_dgamma_over_features", LB, (("dgamma = (dout * xhat).sum(axis=0)", "dgamma = (dout * xhat).sum(axis=1)"),),
        "dgamma summed over the features", breaks=False),
    Bug("ln_bwd_sums_over_batch", LB, (("dxhat.sum(axis=1, keepdims=True)", "dxhat.sum(axis=0, keepdims=True)"),
                                       ("(dxhat * xhat).sum(axis=1, keepdims=True)", "(dxhat * xhat).sum(axis=0, keepdims=True)")),
        "the batch-norm backward (sums over the batch) applied to layer norm"),
    Bug("ln_bwd_gamma_factored_out", LB, (("dxhat = dout * gamma", "dxhat = dout"),
                                          (") / (D * std)", ") * gamma / (D * std)")),
        "Module 01's closed form with the axes swapped and gamma factored out (gamma varies along the summed axis)"),
    # ---- group norm
    Bug("gn_instance_norm", GF, (("xg = x.reshape(N, G, -1)", "xg = x.reshape(N, C, -1)"),),
        "statistics per channel (instance norm)"),
    Bug("gn_interleaved_groups", GF, (("xg = x.reshape(N, G, -1)",
                                       "xg = x.reshape(N, C // G, G, H * W).transpose(0, 2, 1, 3).reshape(N, G, -1)"),
                                      ("xhat = (xc / std).reshape(N, C, H, W)",
                                       "xhat = (xc / std).reshape(N, G, C // G, H * W).transpose(0, 2, 1, 3).reshape(N, C, H, W)")),
        "groups formed from every G-th channel instead of consecutive channels"),
    Bug("gn_gamma_per_group", GF, (("out = gamma.reshape(1, C, 1, 1) * xhat", "out = gamma[:G].repeat(C // G).reshape(1, C, 1, 1) * xhat"),),
        "one gamma per group instead of per channel"),
    Bug("gn_eps_outside", GF, (("std = np.sqrt(var + eps)", "std = np.sqrt(var) + eps"),), "eps outside the square root", breaks=False),
    Bug("gn_bwd_missing_mean_term", GB, (("(K * dxhat - dxhat.sum(axis=2, keepdims=True)\n          - xg",
                                          "(K * dxhat\n          - xg"),), "dx misses the mean term"),
    Bug("gn_bwd_dgamma_no_spatial_sum", GB, (("dgamma = (dout * xhat).sum(axis=(0, 2, 3))", "dgamma = (dout * xhat).sum(axis=0)"),),
        "dgamma not summed over H and W", breaks=False),
    Bug("gn_bwd_gamma_forgotten", GB, (("dxhat = (dout * gamma.reshape(1, C, 1, 1)).reshape(N, G, -1)",
                                        "dxhat = dout.reshape(N, G, -1)"),), "dxhat = dout (gamma forgotten)"),
    Bug("gn_bwd_wrong_count", GB, (("K = xg.shape[2]", "K = H * W"),), "m counts one channel's positions, not the group's"),
    # ---- batch renorm
    Bug("brn_no_clipping", RF, (("r = np.clip(sigma_b / sigma, 1 / r_max, r_max)", "r = sigma_b / sigma"),
                                ("d = np.clip((mu_b - running_mean) / sigma, -d_max, d_max)", "d = (mu_b - running_mean) / sigma")),
        "r and d not clipped"),
    Bug("brn_r_inverted", RF, (("r = np.clip(sigma_b / sigma, 1 / r_max, r_max)", "r = np.clip(sigma / sigma_b, 1 / r_max, r_max)"),),
        "r = sigma / sigma_B (inverted)"),
    Bug("brn_update_before_r_d", RF, (
        ("    sigma = np.sqrt(running_var + eps)\n",
         "    running_mean *= 1 - momentum\n    running_mean += momentum * mu_b\n    running_var *= 1 - momentum\n"
         "    running_var += momentum * var_b * m / (m - 1)\n    sigma = np.sqrt(running_var + eps)\n"),
        ("    running_mean *= 1 - momentum\n    running_mean += momentum * mu_b\n    running_var *= 1 - momentum\n"
         "    running_var += momentum * var_b * m / (m - 1)\n    cache", "    cache")),
        "running statistics updated before r and d are computed"),
    Bug("brn_d_not_scaled", RF, (("d = np.clip((mu_b - running_mean) / sigma, -d_max, d_max)",
                                  "d = np.clip(mu_b - running_mean, -d_max, d_max)"),), "d not divided by sigma"),
    Bug("brn_plain_bn", RF, (("xhat = (x - mu_b) / sigma_b * r + d", "xhat = (x - mu_b) / sigma_b"),),
        "r and d computed but not applied (plain BN)"),
]

CORRECT_VARIANTS = {
    # float64 throughout, caches of raw inputs, backward recomputing the statistics; renorm written from
    # sigma ratios in another order
    "recompute_caches": {
        LF: '''
def layernorm_forward(x, gamma, beta, eps=1e-5):
    x64 = np.asarray(x, dtype=np.float64)
    mean = x64.sum(1, keepdims=True) / x64.shape[1]
    inv = 1.0 / np.sqrt(((x64 - mean) ** 2).sum(1, keepdims=True) / x64.shape[1] + eps)
    return ((x64 - mean) * inv * gamma + beta).astype(x.dtype), {"x": x64, "g": gamma, "eps": eps}
''',
        LB: '''
def layernorm_backward(dout, cache):
    x, g, eps = cache["x"], cache["g"], cache["eps"]
    n, d = x.shape
    mean = x.mean(1, keepdims=True)
    inv = 1.0 / np.sqrt(x.var(1, keepdims=True) + eps)
    xhat = (x - mean) * inv
    dxhat = dout * g
    dvar = (dxhat * (x - mean)).sum(1, keepdims=True) * -0.5 * inv ** 3
    dmean = -(dxhat * inv).sum(1, keepdims=True) + dvar * (-2.0 * (x - mean)).mean(1, keepdims=True)
    dx = dxhat * inv + dvar * 2.0 * (x - mean) / d + dmean / d
    return dx, (dout * xhat).sum(0), dout.sum(0)
''',
        GF: '''
def groupnorm_forward(x, gamma, beta, G, eps=1e-5):
    n, c = x.shape[:2]
    groups = np.split(x.astype(np.float64), G, axis=1)
    normed = []
    for part in groups:
        mu = part.mean(axis=(1, 2, 3), keepdims=True)
        sd = np.sqrt(part.var(axis=(1, 2, 3), keepdims=True) + eps)
        normed.append((part - mu) / sd)
    xhat = np.concatenate(normed, axis=1)
    return (xhat * gamma[None, :, None, None] + beta[None, :, None, None]).astype(x.dtype), (x.astype(np.float64), gamma, G, eps)
''',
        GB: '''
def groupnorm_backward(dout, cache):
    x, gamma, G, eps = cache
    n, c = x.shape[:2]
    dxs, xhats = [], []
    for part, dpart, gpart in zip(np.split(x, G, axis=1), np.split(dout, G, axis=1), np.split(gamma, G)):
        k = part[0].size
        mu = part.mean(axis=(1, 2, 3), keepdims=True)
        inv = 1.0 / np.sqrt(part.var(axis=(1, 2, 3), keepdims=True) + eps)
        xh = (part - mu) * inv
        g = dpart * gpart[None, :, None, None]
        dxs.append(inv * (g - g.mean(axis=(1, 2, 3), keepdims=True) - xh * (g * xh).mean(axis=(1, 2, 3), keepdims=True)))
        xhats.append(xh)
    xhat = np.concatenate(xhats, axis=1)
    return np.concatenate(dxs, axis=1), (dout * xhat).sum(axis=(0, 2, 3)), dout.sum(axis=(0, 2, 3))
''',
        RF: '''
def batch_renorm_forward(x, gamma, beta, running_mean, running_var, training, r_max, d_max, momentum=0.1, eps=1e-5):
    x64 = x.astype(np.float64)
    s_run = np.sqrt(running_var + eps)
    if training:
        m = len(x64)
        mu = x64.mean(0)
        v = ((x64 - mu) ** 2).mean(0)
        s_b = np.sqrt(v + eps)
        r = np.minimum(np.maximum(s_b / s_run, 1.0 / r_max), r_max)
        d = np.minimum(np.maximum((mu - running_mean) / s_run, -d_max), d_max)
        y = gamma * ((x64 - mu) * (r / s_b) + d) + beta
        running_mean[:] = running_mean + momentum * (mu - running_mean)
        running_var[:] = running_var + momentum * (v * m / (m - 1) - running_var)
        return y.astype(x.dtype), (r, d)
    return (gamma * (x64 - running_mean) / s_run + beta).astype(x.dtype), None
''',
    },
}
