"""Known-buggy implementations for Module 07 (Capstone: debugging normalization in real training code), as
edits of the solution cells: the original bugs left in place, and wrong fixes that hide the symptom without
removing the cause (a larger eps, a lower learning rate, more epochs, gradient clipping, eval mode during
training), each of which the behaviour checks must catch; plus wrong quiz answers."""
from . import Bug

ASSIGNMENT = "07_capstone"
EVAL, ONE, FT, KERAS, SEQ, STALE, DROP, QUIZ = ("fix_eval_mode", "fix_batch_of_one", "fix_finetune_bn",
                                                 "fix_keras_port", "fix_sequence_axis", "fix_stale_stats",
                                                 "fix_dropout_before_bn", "quiz")
_DROP_BEFORE = ("        nn.Linear(HIDDEN, HIDDEN), nn.BatchNorm1d(HIDDEN), nn.ReLU(),\n"
                "        nn.Dropout(0.5),                          # after the last BN layer\n",
                "        nn.Dropout(0.5),\n        nn.Linear(HIDDEN, HIDDEN), nn.BatchNorm1d(HIDDEN), nn.ReLU(),\n")
_DROP_RETURN = "    return train_sgd(model, X, y, epochs=8, batch=64, lr=0.05, seed=seed)\n"

BUGS = [
    # ---- 1. evaluation left in training mode
    Bug("eval_no_grad_only", EVAL, (("    model.eval()\n", ""),),
        "predicts under torch.no_grad() in training mode (the original bug: batch statistics of each chunk)"),
    Bug("eval_mode_not_restored", EVAL, (("        for m, mode in modes:\n            m.training = mode\n",
                                          "        pass\n"),),
        "eval mode for the prediction, but the model is left in eval mode for the training loop", breaks=False),
    Bug("eval_train_mode_with_momentum_zero", EVAL, (
        ("    model.eval()\n", "    for m in model.modules():\n        if isinstance(m, nn.BatchNorm1d):\n"
                             "            m.momentum = 0.0\n"),),
        "momentum 0 so the running statistics stop moving, still predicting with batch statistics"),
    # ---- 2. a batch of one
    Bug("one_eval_mode_during_training", ONE, (
        ("    model.train()\n    for i in range(0, len(X) - 15, 16):", "    model.eval()\n    for i in range(0, len(X) - 15, 16):"),),
        "model.eval() during training (what silences the batch-of-one error): BN never normalizes"),
    Bug("one_layernorm_instead", ONE, (
        ("    model = mlp()\n", "    model = mlp()\n    for i, m in enumerate(model):\n"
                              "        if isinstance(m, nn.BatchNorm1d):\n"
                              "            model[i] = nn.LayerNorm(m.num_features)\n"),),
        "every BN replaced by LayerNorm: no per-feature statistics for the badly scaled inputs"),
    Bug("one_still_batch_of_one_eps_raised", ONE, (
        ("    for i in range(0, len(X) - 15, 16):          # mini-batches of 16 consecutive samples of the stream\n"
         "        loss = nn.functional.cross_entropy(model(X[i:i + 16]), y[i:i + 16])\n",
         "    for m in model.modules():\n        if isinstance(m, nn.BatchNorm1d):\n            m.eps = 1.0\n"
         "    for i in range(len(X)):\n"
         "        loss = nn.functional.cross_entropy(model(X[i:i + 1]), y[i:i + 1])\n"),),
        "a larger eps with batches of one (the variance of one sample is still 0: it raises)"),
    # ---- 3. fine-tuning with tiny batches
    Bug("ft_bn_in_train_mode", FT, (("            m.eval()                                  # after model.train(), which would undo it\n",
                                     "            pass\n"),),
        "the original bug: BN layers updated by batches of 4 from one group"),
    Bug("ft_lower_learning_rate", FT, (
        ("            m.eval()                                  # after model.train(), which would undo it\n", "            pass\n"),
        ("lr=0.01", "lr=0.001")),
        "a lower learning rate instead of frozen BN (the statistics still move)"),
    Bug("ft_more_epochs", FT, (
        ("            m.eval()                                  # after model.train(), which would undo it\n", "            pass\n"),
        ("range(10)", "range(30)")),
        "more epochs instead of frozen BN (statistics move, over the step budget)"),
    Bug("ft_bn_parameters_frozen_not_statistics", FT, (
        ("            m.eval()                                  # after model.train(), which would undo it\n",
         "            m.weight.requires_grad_(False)\n            m.bias.requires_grad_(False)\n"),),
        "gamma and beta frozen (requires_grad False) but BN still in training mode: its statistics move"),
    Bug("ft_eval_before_train", FT, (
        ("    model.train()\n    for m in model.modules():\n        if isinstance(m, nn.BatchNorm1d):\n"
         "            m.eval()                                  # after model.train(), which would undo it\n",
         "    for m in model.modules():\n        if isinstance(m, nn.BatchNorm1d):\n"
         "            m.eval()                                  # after model.train(), which would undo it\n"
         "    model.train()\n"),),
        "BN set to eval mode BEFORE model.train(), which switches it back"),
    # ---- 4. the Keras port
    Bug("keras_momentum_kept", KERAS, (("mlp(momentum=0.01, eps=1e-3)", "mlp(momentum=0.99, eps=1e-3)"),),
        "the original bug: Keras' momentum 0.99 copied (PyTorch then keeps ~the last batch)"),
    Bug("keras_cs231n_momentum", KERAS, (("mlp(momentum=0.01, eps=1e-3)", "mlp(momentum=0.9, eps=1e-3)"),),
        "momentum 0.9 (the weight of the old value in CS231n's convention): still nearly the last batches"),
    Bug("keras_eps_raised", KERAS, (("mlp(momentum=0.01, eps=1e-3)", "mlp(momentum=0.99, eps=1e-1)"),),
        "a larger eps to damp the noisy statistics, momentum 0.99 kept"),
    Bug("keras_gradient_clipping", KERAS, (
        ("    return train_sgd(model, X, y, epochs=8, batch=16, lr=0.01, seed=seed)\n",
         "    model = mlp(momentum=0.99, eps=1e-3)\n"
         "    for p in model.parameters():\n"
         "        p.register_hook(lambda g: g.clamp(-0.1, 0.1))\n"
         "    return train_sgd(model, X, y, epochs=8, batch=16, lr=0.01, seed=seed)\n"),),
        "gradient clipping added, momentum 0.99 kept"),
    Bug("keras_lower_learning_rate", KERAS, (("mlp(momentum=0.01, eps=1e-3)", "mlp(momentum=0.99, eps=1e-3)"),
                                             ("lr=0.01", "lr=0.002")),
        "a lower learning rate, momentum 0.99 kept"),
    # ---- 5. BN over the wrong axis
    Bug("seq_time_as_channels", SEQ, (("            self.bn = nn.BatchNorm1d(d)\n", "            self.bn = nn.BatchNorm1d(10)\n"),
                                      ("            h = self.bn(x.transpose(1, 2)).transpose(1, 2)\n",
                                       "            h = self.bn(x)\n")),
        "the original bug: BatchNorm1d(T) on (N, T, D), one statistic per time step"),
    Bug("seq_more_epochs", SEQ, (("            self.bn = nn.BatchNorm1d(d)\n", "            self.bn = nn.BatchNorm1d(10)\n"),
                                 ("            h = self.bn(x.transpose(1, 2)).transpose(1, 2)\n",
                                  "            h = self.bn(x)\n"),
                                 ("epochs=4", "epochs=12")),
        "time-as-channels BN trained longer"),
    # ---- 6. stale statistics
    Bug("stale_not_recomputed", STALE, (("    model.train()\n    with torch.no_grad():\n        for i in range(0, len(X), 64):\n"
                                         "            model(X[i:i + 64])\n", ""),),
        "the statistics reset but never estimated again (initial mean 0, variance 1)"),
    Bug("stale_one_pass_default_momentum", STALE, (
        ("        m.momentum = None                              # a cumulative average over the passes\n", ""),
        ("        for i in range(0, len(X), 64):\n            model(X[i:i + 64])\n", "        model(X[:64])\n")),
        "one forward pass with the default momentum 0.1: 90% of the initial statistics remain"),
    Bug("stale_recomputed_in_eval_mode", STALE, (("    model.train()\n    with torch.no_grad():", "    model.eval()\n    with torch.no_grad():"),),
        "the recomputation runs in eval mode, where BN does not update its statistics"),
    # ---- 7. dropout before BN
    Bug("drop_kept_before_bn", DROP, (_DROP_BEFORE,),
        "the original bug: dropout before the second Linear-BN block (variance shift at inference)"),
    Bug("drop_eps_raised", DROP, (_DROP_BEFORE, (_DROP_RETURN, "    for m in model.modules():\n"
                                                                "        if isinstance(m, nn.BatchNorm1d):\n"
                                                                "            m.eps = 0.1\n" + _DROP_RETURN)),
        "a larger eps, dropout still before BN"),
    Bug("drop_statistics_recomputed_with_dropout_on", DROP, (
        _DROP_BEFORE,
        (_DROP_RETURN, "    train_sgd(model, X, y, epochs=8, batch=64, lr=0.05, seed=seed)\n"
                       "    for m in model.modules():\n        if isinstance(m, nn.BatchNorm1d):\n"
                       "            m.reset_running_stats()\n            m.momentum = None\n"
                       "    model.train()\n    with torch.no_grad():\n        model(X)\n    return model\n")),
        "statistics recomputed over the training set in training mode, where dropout is active: the same shift"),
    Bug("drop_lower_learning_rate", DROP, (_DROP_BEFORE, ("lr=0.05", "lr=0.01")),
        "a lower learning rate, dropout still before BN"),
    # ---- quiz
    Bug("quiz_keras_momentum_copied", QUIZ, (('"q01_keras_momentum": 0.01,', '"q01_keras_momentum": 0.99,'),),
        "Keras' 0.99 given as PyTorch's momentum", breaks=False),
    Bug("quiz_biased_running_var", QUIZ, (('"q02_running_var": 1.1,', '"q02_running_var": 1.06,'),),
        "running_var updated with the biased variance", breaks=False),
    Bug("quiz_covariate_shift_myth", QUIZ, (('"q09_covariate_shift": "b",', '"q09_covariate_shift": "a",'),),
        "the internal covariate shift explanation taken for Santurkar et al.'s finding", breaks=False),
    Bug("quiz_no_grad_is_eval", QUIZ, (('"q04_no_grad_eval": False,', '"q04_no_grad_eval": True,'),),
        "torch.no_grad() taken for eval mode", breaks=False),
]

CORRECT_VARIANTS = {
    # written independently: prediction through functional BN calls on a copy-free path (train(mode) restore),
    # a stream buffered into batches of 8, frozen BN through a forward pre-hook-free subclass approach (modes set
    # at every step), the Keras port with its own loop and Adam-free SGD, BN on the flattened (N*T, D) view,
    # statistics recomputed by exact means over all of X
    "independent": {
        EVAL: '''
def fix_eval_mode(model, X):
    was = model.training
    model.train(False)
    with torch.inference_mode():
        scores = model(X)
    model.train(was)
    return torch.argmax(scores, dim=-1).clone()
''',
        ONE: '''
def fix_batch_of_one(X, y, seed):
    torch.manual_seed(seed)
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.03, momentum=0.9)
    model.train()
    buf_x, buf_y = [], []
    for xi, yi in zip(X, y):
        buf_x.append(xi)
        buf_y.append(yi)
        if len(buf_x) == 8:
            opt.zero_grad()
            nn.functional.cross_entropy(model(torch.stack(buf_x)), torch.stack(buf_y)).backward()
            opt.step()
            buf_x, buf_y = [], []
    return model
''',
        FT: '''
def fix_finetune_bn(model, X, y, seed):
    bn_layers = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.01, momentum=0.9)
    order = torch.randperm(len(X) // 4, generator=torch.Generator().manual_seed(seed + 7))
    for epoch in range(10):
        for b in order.tolist():
            model.train()
            for m in bn_layers:
                m.train(False)
            opt.zero_grad()
            nn.functional.cross_entropy(model(X[4 * b:4 * b + 4]), y[4 * b:4 * b + 4]).backward()
            opt.step()
    return model
''',
        KERAS: '''
def fix_keras_port(X, y, seed):
    keras_momentum, keras_epsilon = 0.99, 1e-3
    model = mlp(momentum=1.0 - keras_momentum, eps=keras_epsilon)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    g = torch.Generator().manual_seed(seed)
    model.train()
    for epoch in range(8):
        perm = torch.randperm(len(X), generator=g)
        for k in range(len(X) // 16):
            idx = perm[16 * k:16 * (k + 1)]
            opt.zero_grad()
            nn.functional.cross_entropy(model(X[idx]), y[idx]).backward()
            opt.step()
    return model
''',
        SEQ: '''
def fix_sequence_axis(X, y, seed):
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.norm = nn.BatchNorm1d(X.shape[-1])
            self.hidden = nn.Linear(X.shape[-1], HIDDEN)
            self.out = nn.Linear(HIDDEN, K)

        def forward(self, x):
            n, t, d = x.shape
            h = self.norm(x.reshape(n * t, d)).reshape(n, t, d)
            return self.out(torch.relu(self.hidden(h)).mean(1))

    return train_sgd(Net(), X, y, epochs=4, batch=32, lr=0.05, seed=seed)
''',
        STALE: '''
def fix_stale_stats(model, checkpoint, X, seed):
    model.load_state_dict(checkpoint, strict=False)
    model.eval()
    h = X
    with torch.no_grad():
        for layer in model:
            if isinstance(layer, nn.BatchNorm1d):
                layer.running_mean.copy_(h.mean(0))
                layer.running_var.copy_(h.var(0, unbiased=True))
            h = layer(h)
    return model
''',
        DROP: '''
def fix_dropout_before_bn(X, y, seed):
    layers = list(mlp())                     # BN, Linear, BN, ReLU, Linear, BN, ReLU, Linear
    model = nn.Sequential(*layers[:-1], nn.Dropout(p=0.5), layers[-1])
    return train_sgd(model, X, y, epochs=8, batch=64, lr=0.05, seed=seed)
''',
        QUIZ: '''
quiz = dict(q01_keras_momentum=1 - 0.99, q02_running_var=0.9 + 0.1 * 1.6 * 5 / 4, q03_eval_uses="B",
            q04_no_grad_eval=False, q05_folded=[1, 3], q06_batch_of_one="a", q07_groupnorm_batch=False,
            q08_layernorm_transformers=" c", q09_covariate_shift="b", q10_dropout_before_bn="b",
            q11_weight_decay="a", q12_ilsvrc2015=False)
''',
    },
}
