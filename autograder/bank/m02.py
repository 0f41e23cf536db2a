"""Known-buggy implementations for Module 02 (BatchNorm in PyTorch), as edits of the solution cells."""
from . import Bug

ASSIGNMENT = "02_batchnorm_pytorch"
FN, MOD = "BatchNormFunction", "BatchNorm2d"

BUGS = [
    # ---- forward of the Function
    Bug("unbiased_normalization", FN, (("var = xf.var(dim=dims, unbiased=False)", "var = xf.var(dim=dims)"),),
        "torch's var() is unbiased by default: normalizes with the unbiased variance"),
    Bug("stats_over_batch_only", FN, (("dims, shape = (0, 2, 3), (1, -1, 1, 1)\n        xf",
                                       "dims, shape = (0,), (1, -1, 1, 1)\n        xf"),),
        "statistics over N only, not N, H, W"),
    Bug("running_var_biased", FN, ((" * m / (m - 1))", ")"),), "running_var updated with the biased variance"),
    Bug("momentum_weights_old", FN, (
        ("running_mean.mul_(1 - momentum).add_(momentum * mean", "running_mean.mul_(momentum).add_((1 - momentum) * mean"),
        ("running_var.mul_(1 - momentum).add_(momentum * var", "running_var.mul_(momentum).add_((1 - momentum) * var")),
        "momentum weights the old value"),
    Bug("running_not_in_place", FN, (
        ("running_mean.mul_(1 - momentum).add_(momentum * mean.to(running_mean.dtype))",
         "running_mean = (1 - momentum) * running_mean + momentum * mean.to(running_mean.dtype)"),
        ("running_var.mul_(1 - momentum).add_(momentum * var.to(running_var.dtype) * m / (m - 1))",
         "running_var = (1 - momentum) * running_var + momentum * var.to(running_var.dtype) * m / (m - 1)")),
        "running statistics rebound instead of updated in place"),
    Bug("eps_outside_sqrt", FN, (("invstd = torch.rsqrt(var + eps)", "invstd = 1 / (torch.sqrt(var) + eps)"),),
        "eps outside the square root", breaks=False),
    Bug("eval_uses_batch_stats", FN, (("mean, var = running_mean.to(xf.dtype), running_var.to(xf.dtype)",
                                       "mean, var = xf.mean(dim=dims), xf.var(dim=dims, unbiased=False)"),),
        "eval mode normalizes with batch statistics"),
    Bug("dweight_mean", FN, (("dweight = (dyf * xhat).sum(dim=dims)", "dweight = (dyf * xhat).mean(dim=dims)"),),
        "dweight averaged over (N, H, W) instead of summed"),
    Bug("calls_torch_batch_norm", FN, (("        ctx.training = training\n",
                                        "        ctx.training = training\n        return F.batch_norm(x, running_mean,"
                                        " running_var, weight, bias, training, momentum, eps)\n"),),
        "delegates to torch.nn.functional.batch_norm (no credit)"),
    # ---- backward of the Function
    Bug("dx_missing_mean_term", FN, (("(m * dyf - dbias.reshape(shape) - xhat", "(m * dyf - xhat"),),
        "dx misses the path through the mean"),
    Bug("eval_backward_uses_training_formula", FN, (("        if ctx.training:\n            m = dyf",
                                                     "        if True:\n            m = dyf"),),
        "eval-mode gradient through the (constant) statistics"),
    Bug("dweight_wrong_dims", FN, (("dweight = (dyf * xhat).sum(dim=dims)", "dweight = (dyf * xhat).sum(dim=(0, 2))"),),
        "dweight reduced over the wrong dimensions"),
    Bug("wrong_number_of_grads", FN, ((", None, None, None, None, None", ", None, None, None, None"),),
        "backward returns too few gradients"),
    Bug("dx_ignores_weight", FN, (("scale = (weight.to(xhat.dtype) * invstd)", "scale = (invstd)"),),
        "dx without the factor weight"),
    # ---- the module
    Bug("buffers_as_plain_attributes", MOD, (
        ('self.register_buffer("running_mean", torch.zeros(num_features))', "self.running_mean = torch.zeros(num_features)"),
        ('self.register_buffer("running_var", torch.ones(num_features))', "self.running_var = torch.ones(num_features)")),
        "running statistics are not buffers (missing from state_dict, not moved by .to())"),
    Bug("no_num_batches_tracked", MOD, (('        self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long))\n', ""),
                                        ("        if self.training:\n            self.num_batches_tracked += 1\n", "")),
        "num_batches_tracked missing: torch's state_dict does not load"),
    Bug("ignores_training_flag", MOD, (("self.training, self.momentum, self.eps)", "True, self.momentum, self.eps)"),),
        "always uses batch statistics (eval mode ignored)"),
    Bug("weight_init_random", MOD, (("nn.Parameter(torch.ones(num_features))", "nn.Parameter(torch.rand(num_features))"),),
        "gamma initialized randomly instead of to 1", breaks=False),
    Bug("counts_eval_batches", MOD, (("        if self.training:\n            self.num_batches_tracked += 1\n",
                                      "        self.num_batches_tracked += 1\n"),),
        "num_batches_tracked also counts eval-mode passes"),
    Bug("subclasses_torch_batchnorm", MOD, (("class BatchNorm2d(nn.Module):", "class BatchNorm2d(nn.BatchNorm2d):"),
                                            ("        super().__init__()\n", "        super().__init__(num_features)\n")),
        "inherits torch.nn.BatchNorm2d (no credit)"),
]

CORRECT_VARIANTS = {
    # saves x rather than xhat and recomputes the statistics in backward; float64 internally; module keeps
    # its own copy of the hyperparameters and registers buffers in one loop
    "recompute_in_backward": {
        FN: '''
class BatchNormFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, running_mean, running_var, training, momentum, eps):
        x64 = x.double()
        c = x.shape[1]
        flat = x64.transpose(0, 1).reshape(c, -1)            # (C, N*H*W)
        if training:
            mu = flat.mean(1)
            var = ((flat - mu[:, None]) ** 2).mean(1)
            n = flat.shape[1]
            running_mean.copy_(running_mean + momentum * (mu.to(running_mean.dtype) - running_mean))
            running_var.copy_(running_var + momentum * ((var * n / (n - 1)).to(running_var.dtype) - running_var))
        else:
            mu, var = running_mean.double(), running_var.double()
        ctx.save_for_backward(x, weight, mu, var)
        ctx.eps, ctx.training = eps, training
        xhat = (x64 - mu.view(1, c, 1, 1)) / torch.sqrt(var.view(1, c, 1, 1) + eps)
        return (xhat * weight.double().view(1, c, 1, 1) + bias.double().view(1, c, 1, 1)).to(x.dtype)

    @staticmethod
    def backward(ctx, grad_out):
        x, weight, mu, var = ctx.saved_tensors
        c = x.shape[1]
        g = grad_out.double()
        inv = 1.0 / torch.sqrt(var + ctx.eps)
        xhat = (x.double() - mu.view(1, c, 1, 1)) * inv.view(1, c, 1, 1)
        gb = g.sum((0, 2, 3))
        gw = (g * xhat).sum((0, 2, 3))
        gx = g * (weight.double() * inv).view(1, c, 1, 1)
        if ctx.training:
            n = x.numel() // c
            gx = gx - ((weight.double() * inv) * gb / n).view(1, c, 1, 1) \\
                - xhat * ((weight.double() * inv) * gw / n).view(1, c, 1, 1)
        return gx.to(x.dtype), gw.to(weight.dtype), gb.to(weight.dtype), None, None, None, None, None
''',
        MOD: '''
class BatchNorm2d(nn.Module):
    def __init__(self, num_features, eps=1e-5, momentum=0.1):
        super().__init__()
        self.eps = eps
        self.momentum = momentum
        self.weight = nn.Parameter(torch.full((num_features,), 1.0))
        self.bias = nn.Parameter(torch.full((num_features,), 0.0))
        for name, value in (("running_mean", torch.zeros(num_features)), ("running_var", torch.ones(num_features)),
                            ("num_batches_tracked", torch.zeros((), dtype=torch.long))):
            self.register_buffer(name, value)

    def forward(self, x):
        if self.training:
            self.num_batches_tracked.add_(1)
        return BatchNormFunction.apply(x, self.weight, self.bias, self.running_mean, self.running_var,
                                       self.training, self.momentum, self.eps)
''',
    },
}
