"""Known-buggy implementations for Module 04 (case study: vision), as edits of the solution cells."""
from . import Bug

ASSIGNMENT = "04_case_study_vision"
FOLD, BLOCK, ADAPT = "fold_batchnorm", "ResidualBlock", "adapt_bn_statistics"
_SCALE = "weight_folded = weight * scale.reshape((-1,) + (1,) * (weight.ndim - 1))"

BUGS = [
    # ---- fold_batchnorm
    Bug("fold_eps_outside_sqrt", FOLD, (("scale = gamma / np.sqrt(running_var + eps)",
                                         "scale = gamma / (np.sqrt(running_var) + eps)"),), "eps outside the square root", breaks=False),
    Bug("fold_divides_by_variance", FOLD, (("scale = gamma / np.sqrt(running_var + eps)",
                                            "scale = gamma / (running_var + eps)"),),
        "divides by the variance instead of the standard deviation"),
    Bug("fold_mean_forgotten", FOLD, (("bias_folded = (bias - running_mean) * scale + beta",
                                       "bias_folded = bias * scale + beta"),), "running mean left out of the bias"),
    Bug("fold_bias_not_scaled", FOLD, (("bias_folded = (bias - running_mean) * scale + beta",
                                        "bias_folded = bias - running_mean * scale + beta"),),
        "the layer's own bias not scaled"),
    Bug("fold_none_bias_gives_beta", FOLD, (("    if bias is None:\n        bias = np.zeros_like(running_mean)\n",
                                             "    if bias is None:\n        return weight * scale.reshape((-1,) + (1,) * "
                                             "(weight.ndim - 1)), beta\n"),),
        "without a layer bias the folded bias is beta (the mean term forgotten)"),
    Bug("fold_modifies_weight_in_place", FOLD, ((_SCALE, "weight *= scale.reshape((-1,) + (1,) * (weight.ndim - 1))\n"
                                                         "    weight_folded = weight"),),
        "scales the caller's weight in place", breaks=False),
    Bug("fold_scales_input_channels", FOLD, ((_SCALE, "weight_folded = weight * scale.reshape((1, -1) + (1,) * "
                                                      "(weight.ndim - 2))"),),
        "scale applied along the input channels"),
    # ---- ResidualBlock
    Bug("block_conv_bias", BLOCK, (("self.conv1 = nn.Conv2d(channels, channels, kernel_size=3, padding=1, bias=False)",
                                    "self.conv1 = nn.Conv2d(channels, channels, kernel_size=3, padding=1)"),
                                   ("kernel_size=3, stride=1, padding=1, bias=False)", "kernel_size=3, stride=1, padding=1)")),
        "convolutions keep their bias (BN follows)", breaks=False),
    Bug("block_zero_init_first_bn", BLOCK, (("nn.init.zeros_(self.bn2.weight)", "nn.init.zeros_(self.bn1.weight)"),),
        "gamma zero-initialized in the first BN instead of the last", breaks=False),
    Bug("block_zero_init_beta", BLOCK, (("nn.init.zeros_(self.bn2.weight)", "nn.init.zeros_(self.bn2.bias)"),),
        "beta zeroed instead of gamma (no zero init)", breaks=False),
    Bug("block_no_zero_init", BLOCK, (("        if zero_init_residual:\n            nn.init.zeros_(self.bn2.weight)\n", ""),),
        "zero_init_residual ignored", breaks=False),
    Bug("block_relu_before_add", BLOCK, (("return torch.relu(out + x)", "return torch.relu(out) + x"),),
        "ReLU before the addition"),
    Bug("block_no_final_relu", BLOCK, (("return torch.relu(out + x)", "return out + x"),), "no ReLU after the addition"),
    Bug("block_no_inner_relu", BLOCK, (("out = torch.relu(self.bn1(self.conv1(x)))", "out = self.bn1(self.conv1(x))"),),
        "no ReLU between the two convolutions"),
    # ---- adapt_bn_statistics
    Bug("adapt_weights_swapped", ADAPT, (("else prior_strength / (prior_strength + n)", "else n / (prior_strength + n)"),),
        "source and target weights swapped"),
    Bug("adapt_statistics_in_eval_mode", ADAPT, (("            bn.train()\n", ""),),
        "target statistics collected with the BN layers in eval mode"),
    Bug("adapt_whole_model_in_train_mode", ADAPT, (("            bn.train()\n", "            model.train()\n"),),
        "model.train(): dropout switched on while collecting", breaks=False),
    Bug("adapt_modes_not_restored", ADAPT, (("    for m, mode in modes:\n        m.training = mode\n", ""),),
        "train/eval modes not restored", breaks=False),
    Bug("adapt_ema_not_average", ADAPT, (("            bn.momentum = None              # running statistics = average over the batches\n", ""),),
        "momentum 0.1 kept: an EMA from the reset values instead of the average"),
    Bug("adapt_momentum_not_restored", ADAPT, (("            bn.momentum = momentum\n", ""),), "momentum left at None", breaks=False),
    Bug("adapt_counts_pixels", ADAPT, (("n += x.shape[0]", "n += x.numel() // x.shape[1]"),),
        "n counts every value (N*H*W), not the samples"),
    Bug("adapt_infinite_prior_nan", ADAPT, (("w = 1.0 if np.isinf(prior_strength) else prior_strength / (prior_strength + n)",
                                             "w = prior_strength / (prior_strength + n)"),),
        "prior strength inf gives inf/inf = NaN", breaks=False),
]

CORRECT_VARIANTS = {
    # folding in float64 with einsum; the block as nn.Sequential branches with nn.ReLU modules; adaptation by
    # forward pre-hooks that measure each BN input's batch statistics while the BN layers are in training mode
    "sequential_and_hooks": {
        FOLD: '''
def fold_batchnorm(weight, bias, gamma, beta, running_mean, running_var, eps=1e-5):
    inv_std = 1.0 / np.sqrt(np.asarray(running_var, dtype=np.float64) + eps)
    s = np.asarray(gamma, dtype=np.float64) * inv_std
    w = np.einsum("o,o...->o...", s, np.asarray(weight, dtype=np.float64))
    b = np.asarray(beta, dtype=np.float64) - s * running_mean
    if bias is not None:
        b = b + s * bias
    return w.astype(weight.dtype), b.astype(weight.dtype)
''',
        BLOCK: '''
class ResidualBlock(nn.Module):
    def __init__(self, channels, zero_init_residual=True):
        super().__init__()
        self.branch = nn.Sequential(
            nn.Conv2d(channels, channels, 3, 1, 1, bias=False), nn.BatchNorm2d(channels), nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, 3, 1, 1, bias=False), nn.BatchNorm2d(channels))
        self.act = nn.ReLU()
        if zero_init_residual:
            with torch.no_grad():
                self.branch[-1].weight.fill_(0.0)

    def forward(self, x):
        return self.act(self.branch(x) + x)
''',
        ADAPT: '''
def adapt_bn_statistics(model, batches, prior_strength):
    layers = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    was = {m: m.training for m in model.modules()}
    sums = {m: [0.0, 0.0, 0] for m in layers}

    def record(module, inputs):
        x = inputs[0]
        dims = [d for d in range(x.dim()) if d != 1]
        acc = sums[module]
        acc[0] = acc[0] + x.mean(dim=dims)
        acc[1] = acc[1] + x.var(dim=dims, unbiased=True)
        acc[2] += 1
    handles = [m.register_forward_pre_hook(record) for m in layers]
    for m in layers:
        m.train()
    count = 0
    try:
        with torch.no_grad():
            for x in batches:
                saved = [(m.running_mean.clone(), m.running_var.clone(), m.num_batches_tracked.clone()) for m in layers]
                model(x)
                for m, (a, b, c) in zip(layers, saved):   # leave the buffers as they were until the end
                    m.running_mean.copy_(a); m.running_var.copy_(b); m.num_batches_tracked.copy_(c)
                count += len(x)
            keep = 1.0 if prior_strength == float("inf") else prior_strength / (prior_strength + count)
            for m in layers:
                mean_t, var_t, k = sums[m]
                m.running_mean.mul_(keep).add_((1 - keep) * mean_t / k)
                m.running_var.mul_(keep).add_((1 - keep) * var_t / k)
    finally:
        for h in handles:
            h.remove()
        for m, t in was.items():
            m.training = t
''',
    },
}
