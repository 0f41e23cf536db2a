"""Known-buggy implementations for Module 05 (case study: NLP), as edits of the solution cells."""
from . import Bug

ASSIGNMENT = "05_case_study_nlp"
MF, MB, LC = "masked_batchnorm_forward", "masked_batchnorm_backward", "LayerNormLSTMCell"

BUGS = [
    # ---- masked batch norm, forward
    Bug("padding_in_statistics", MF, (
        ("m = mask.sum()\n        mu = np.where(w, x, 0).sum(axis=(0, 1)) / m\n        xc = np.where(w, x - mu, 0)",
         "m = mask.size\n        mu = x.sum(axis=(0, 1)) / m\n        xc = x - mu"),),
        "statistics over every position, padding counted as tokens"),
    Bug("count_all_positions", MF, (("        m = mask.sum()\n", "        m = mask.size\n"),),
        "sums over the real tokens divided by N*T instead of m = mask.sum()"),
    Bug("padded_output_not_zero", MF, (("out = np.where(w, gamma * xhat + beta, 0)", "out = gamma * xhat + beta"),),
        "padded positions of out left at beta instead of 0", breaks=False),
    Bug("running_var_biased", MF, (("running_var += momentum * var * m / (m - 1)", "running_var += momentum * var"),),
        "running_var updated with the biased variance"),
    Bug("running_var_count_all", MF, (("running_var += momentum * var * m / (m - 1)",
                                       "running_var += momentum * var * mask.size / (mask.size - 1)"),),
        "unbiased correction with N*T instead of the real tokens"),
    Bug("momentum_weights_old", MF, (("running_mean *= 1 - momentum\n        running_mean += momentum * mu",
                                      "running_mean *= momentum\n        running_mean += (1 - momentum) * mu"),
                                     ("running_var *= 1 - momentum\n        running_var += momentum * var * m / (m - 1)",
                                      "running_var *= momentum\n        running_var += (1 - momentum) * var * m / (m - 1)")),
        "momentum weights the old running value (CS231n's convention)"),
    Bug("eval_uses_batch_statistics", MF, (("        mu, var = running_mean, running_var\n",
                                            "        m = mask.sum()\n        mu = np.where(w, x, 0).sum(axis=(0, 1)) / m\n"
                                            "        var = (np.where(w, x - mu, 0) ** 2).sum(axis=(0, 1)) / m\n"),),
        "eval mode normalizes with the batch statistics"),
    Bug("eps_outside_sqrt", MF, (("std = np.sqrt(var + eps)", "std = np.sqrt(var) + eps"),),
        "eps added outside the square root", breaks=False),
    Bug("gamma_beta_swapped", MF, (("gamma * xhat + beta", "beta * xhat + gamma"),), "gamma and beta swapped"),
    # ---- masked batch norm, backward
    Bug("dout_at_padding_counted", MB, (("g = np.where(w, dout, 0)", "g = dout"),),
        "dout at padded positions enters every sum (dx, dgamma, dbeta)"),
    Bug("dbeta_over_padding", MB, (("dbeta = g.sum(axis=(0, 1))", "dbeta = dout.sum(axis=(0, 1))"),),
        "dbeta sums dout over padded positions too", breaks=False),
    Bug("dx_not_zero_at_padding", MB, (("    dx = np.where(w, dx, 0)\n", ""),),
        "dx left nonzero at padded positions", breaks=False),
    Bug("backward_count_all_positions", MB, (("    m = mask.sum()\n", "    m = mask.size\n"),),
        "the backward's averages over N*T instead of the real tokens"),
    Bug("dx_missing_mean_term", MB, (("(m * dxhat - dxhat.sum(axis=(0, 1)) - xhat", "(m * dxhat - xhat"),),
        "dx misses the path through the mean"),
    Bug("dx_missing_var_term", MB, ((" - xhat * (dxhat * xhat).sum(axis=(0, 1))) / (m * std)", ") / (m * std)"),),
        "dx misses the path through the variance"),
    Bug("dx_ignores_gamma", MB, (("dxhat = g * gamma", "dxhat = g"),), "dxhat = dout (gamma forgotten)"),
    # ---- LayerNormLSTMCell
    Bug("one_layer_norm_for_both", LC, (("gates = (layer_norm(x @ self.weight_ih.T, self.gamma_ih, self.beta_ih)\n"
                                         "                 + layer_norm(h @ self.weight_hh.T, self.gamma_hh, self.beta_hh) + self.bias)",
                                         "gates = (layer_norm(x @ self.weight_ih.T + h @ self.weight_hh.T, self.gamma_ih, self.beta_ih)\n"
                                         "                 + 0 * (self.gamma_hh + self.beta_hh).sum() + self.bias)"),),
        "one layer norm over W_x x + W_h h instead of two"),
    Bug("ln_over_batch_axis", LC, (("mu = z.mean(dim=-1, keepdim=True)", "mu = z.mean(dim=0, keepdim=True)"),
                                   ("var = ((z - mu) ** 2).mean(dim=-1, keepdim=True)",
                                    "var = ((z - mu) ** 2).mean(dim=0, keepdim=True)")),
        "layer norm's statistics over the batch axis"),
    Bug("no_ln_on_cell_state", LC, (("torch.tanh(layer_norm(c, self.gamma_c, self.beta_c))",
                                     "torch.tanh(c + 0 * (self.gamma_c + self.beta_c).sum())"),),
        "the layer norm on the cell state is missing"),
    Bug("ln_cell_state_passed_on", LC, (("h = torch.sigmoid(o) * torch.tanh(layer_norm(c, self.gamma_c, self.beta_c))",
                                         "c = layer_norm(c, self.gamma_c, self.beta_c)\n        h = torch.sigmoid(o) * torch.tanh(c)"),),
        "the normalized cell state is passed on as c"),
    Bug("input_forget_swapped", LC, (("i, f, g, o = gates.chunk(4, dim=-1)", "f, i, g, o = gates.chunk(4, dim=-1)"),),
        "input and forget gates swapped"),
    Bug("ln_unbiased_variance", LC, (("var = ((z - mu) ** 2).mean(dim=-1, keepdim=True)",
                                      "var = z.var(dim=-1, keepdim=True)"),), "layer norm with the unbiased variance"),
    Bug("bias_inside_layer_norm", LC, (("layer_norm(x @ self.weight_ih.T, self.gamma_ih, self.beta_ih)",
                                        "layer_norm(x @ self.weight_ih.T + self.bias, self.gamma_ih, self.beta_ih)"),
                                       ("self.gamma_hh, self.beta_hh) + self.bias)", "self.gamma_hh, self.beta_hh))")),
        "the bias added inside the layer norm (which removes it)"),
    Bug("ln_eps_outside_sqrt", LC, (("torch.sqrt(var + eps)", "(torch.sqrt(var) + eps)"),),
        "layer norm's eps outside the square root", breaks=False),
    Bug("gamma_c_starts_at_zero", LC, (("self.gamma_c = nn.Parameter(torch.ones(H))",
                                        "self.gamma_c = nn.Parameter(torch.zeros(H))"),),
        "gamma_c initialized to 0 (a fresh cell outputs h = 0)", breaks=False),
]

CORRECT_VARIANTS = {
    # masked statistics through boolean indexing and float64, a cache of raw inputs with the backward
    # recomputing everything; the cell with F-free layer norms written per gate block order via torch.split
    "gather_and_recompute": {
        MF: '''
def masked_batchnorm_forward(x, mask, gamma, beta, running_mean, running_var, training, momentum=0.1, eps=1e-5):
    real = x[mask].astype(np.float64)                    # (m, D)
    if training:
        m = real.shape[0]
        mean = real.mean(axis=0)
        var = real.var(axis=0)
        running_mean[:] = (1 - momentum) * running_mean + momentum * mean
        running_var[:] = (1 - momentum) * running_var + momentum * var * (m / (m - 1))
    else:
        mean, var = running_mean.astype(np.float64), running_var.astype(np.float64)
    out = np.zeros(x.shape, dtype=x.dtype)
    out[mask] = (real - mean) / np.sqrt(var + eps) * gamma + beta
    return out, {"x": real, "mask": mask.copy(), "gamma": gamma, "eps": eps, "shape": x.shape}
''',
        MB: '''
def masked_batchnorm_backward(dout, cache):
    x, mask, gamma, eps = cache["x"], cache["mask"], cache["gamma"], cache["eps"]
    m = x.shape[0]
    mean = x.mean(axis=0)
    inv = 1.0 / np.sqrt(x.var(axis=0) + eps)
    xhat = (x - mean) * inv
    dy = dout[mask].astype(np.float64)
    dxhat = dy * gamma
    dvar = (dxhat * (x - mean)).sum(axis=0) * -0.5 * inv ** 3
    dmean = -(dxhat * inv).sum(axis=0) + dvar * (-2.0 * (x - mean)).mean(axis=0)
    dx_real = dxhat * inv + dvar * 2.0 * (x - mean) / m + dmean / m
    dx = np.zeros(cache["shape"])
    dx[mask] = dx_real
    return dx, (dy * xhat).sum(axis=0), dy.sum(axis=0)
''',
        LC: '''
def layer_norm(z, gamma, beta, eps=1e-5):
    centered = z - z.mean(-1, keepdim=True)
    return centered * torch.rsqrt(centered.pow(2).mean(-1, keepdim=True) + eps) * gamma + beta


class LayerNormLSTMCell(nn.Module):
    def __init__(self, input_size, hidden_size):
        super().__init__()
        self.hidden_size = hidden_size
        bound = 1.0 / hidden_size ** 0.5
        self.weight_ih = nn.Parameter(torch.rand(4 * hidden_size, input_size) * 2 * bound - bound)
        self.weight_hh = nn.Parameter(torch.rand(4 * hidden_size, hidden_size) * 2 * bound - bound)
        self.bias = nn.Parameter(torch.zeros(4 * hidden_size))
        self.gamma_ih, self.gamma_hh = (nn.Parameter(torch.ones(4 * hidden_size)) for _ in range(2))
        self.beta_ih, self.beta_hh = (nn.Parameter(torch.zeros(4 * hidden_size)) for _ in range(2))
        self.gamma_c, self.beta_c = nn.Parameter(torch.ones(hidden_size)), nn.Parameter(torch.zeros(hidden_size))

    def forward(self, x, state):
        h_prev, c_prev = state
        z = layer_norm(torch.nn.functional.linear(x, self.weight_ih), self.gamma_ih, self.beta_ih) \\
            + layer_norm(torch.nn.functional.linear(h_prev, self.weight_hh), self.gamma_hh, self.beta_hh) + self.bias
        i, f, g, o = torch.split(z, self.hidden_size, dim=1)
        c = f.sigmoid() * c_prev + i.sigmoid() * g.tanh()
        return o.sigmoid() * layer_norm(c, self.gamma_c, self.beta_c).tanh(), c
''',
    },
}
