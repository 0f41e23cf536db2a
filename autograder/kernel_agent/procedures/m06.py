"""Module 06 procedures: acting with a BN policy (``select_action``) and the critic losses of CrossQ
(``crossq_critic_loss``) and SAC with a target network (``critic_loss_with_target``).

The procedures build the small networks the learner's functions act on, from a ``spec`` of plain data
(sizes, normalization, seeds, dtype), with random running statistics and affine parameters so that train
and eval mode differ; hooks on every normalization layer record each call (mode, batch size, whether
autograd was recording); the buffers and modes are read before and after. The networks follow the
notebook's conventions (``cases.rl``): ``policy(obs, deterministic=False) -> (action, log_prob)`` with its
noise from ``policy.generator``; ``critic(obs, action) -> (B, 2)``.
"""
from __future__ import annotations

import copy
import math

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from . import stage


class BatchRenorm1d(nn.Module):
    """Batch Renormalization (Ioffe 2017) over (N, C): r and d from the running statistics, as constants;
    running statistics updated as PyTorch's BN after r and d are computed; eval mode is plain BN."""

    def __init__(self, num_features, momentum=0.01, eps=1e-3, r_max=3.0, d_max=5.0):
        super().__init__()
        self.momentum, self.eps, self.r_max, self.d_max = momentum, eps, r_max, d_max
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))
        self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long))

    def forward(self, x):
        if not self.training:
            return (x - self.running_mean) / torch.sqrt(self.running_var + self.eps) * self.weight + self.bias
        if x.shape[0] < 2:
            raise ValueError("Expected more than 1 value per channel when training")
        mean, var = x.mean(0), x.var(0, unbiased=False)
        sigma_b = torch.sqrt(var + self.eps)
        with torch.no_grad():
            sigma = torch.sqrt(self.running_var + self.eps)
            r = (sigma_b / sigma).clamp(1.0 / self.r_max, self.r_max)
            d = ((mean - self.running_mean) / sigma).clamp(-self.d_max, self.d_max)
            n = x.shape[0]
            self.running_mean.lerp_(mean.detach(), self.momentum)
            self.running_var.lerp_(var.detach() * n / (n - 1), self.momentum)
            self.num_batches_tracked += 1
        return ((x - mean) / sigma_b * r + d) * self.weight + self.bias


NORM_TYPES = (nn.modules.batchnorm._BatchNorm, BatchRenorm1d)


def _norm(kind, n):
    return nn.BatchNorm1d(n, momentum=0.01, eps=1e-3) if kind == "bn" else BatchRenorm1d(n)


def _mlp(sizes, norm):
    layers = [_norm(norm, sizes[0])] if norm else []
    for a, b in zip(sizes, sizes[1:]):
        layers += [nn.Linear(a, b), nn.ReLU()]
        if norm:
            layers.append(_norm(norm, b))
    return nn.Sequential(*layers)


class Policy(nn.Module):
    """A tanh-squashed Gaussian policy: ``policy(obs, deterministic=False) -> (action, log_prob)``."""

    def __init__(self, obs_dim, act_dim, hidden, norm):
        super().__init__()
        self.body = _mlp([obs_dim, *hidden], norm)
        self.head = nn.Linear(hidden[-1], 2 * act_dim)
        self.generator = None

    def forward(self, obs, deterministic=False):
        mean, log_std = self.head(self.body(obs)).chunk(2, dim=-1)
        log_std = log_std.clamp(-5.0, 2.0)
        std = log_std.exp()
        u = mean if deterministic else mean + std * torch.randn(mean.shape, generator=self.generator, dtype=mean.dtype)
        action = torch.tanh(u)
        log_prob = (-0.5 * ((u - mean) / std) ** 2 - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)
        log_prob = log_prob - (2 * (math.log(2.0) - u - F.softplus(-2 * u))).sum(-1)
        return action, log_prob


class Critic(nn.Module):
    """Two Q networks: ``critic(obs, action) -> (B, 2)``."""

    def __init__(self, obs_dim, act_dim, hidden, norm):
        super().__init__()
        self.q = nn.ModuleList(nn.Sequential(_mlp([obs_dim + act_dim, *hidden], norm), nn.Linear(hidden[-1], 1))
                               for _ in range(2))

    def forward(self, obs, action):
        x = torch.cat([obs, action], dim=-1)
        return torch.cat([q(x) for q in self.q], dim=-1)


_BUILT = {}   # networks already built, by kind and spec (building torch modules is the slow part)


def _fresh(kind, spec):
    torch.manual_seed(spec["seed"])
    cls = Policy if kind == "policy" else Critic
    net = cls(spec["obs_dim"], spec["act_dim"], tuple(spec["hidden"]), spec.get("norm"))
    gen = torch.Generator().manual_seed(spec["seed"] + 1)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, NORM_TYPES):
                c = m.running_mean.numel()
                m.running_mean.copy_(torch.randn(c, generator=gen) * 0.5 + 0.3)
                m.running_var.copy_(torch.rand(c, generator=gen) * 1.5 + 0.5)
                m.weight.copy_(torch.randn(c, generator=gen) * 0.2 + 1.0)
                m.bias.copy_(torch.randn(c, generator=gen) * 0.2)
                m.num_batches_tracked.fill_(50)
    return net.to(getattr(torch, spec.get("dtype", "float64")))


def build(kind, spec):
    """A ``Policy`` or ``Critic`` from ``spec``: obs_dim, act_dim, hidden, norm (None, "bn", "brn"), seed,
    dtype ("float32"/"float64"); weights from ``seed``, and random running statistics (means around 0.3,
    variances 0.5..2), gammas and betas so that batch and running statistics disagree. ``mode``
    ("train"/"eval") is set on the whole network, then ``frozen`` (indices of normalization layers) put in
    eval mode; a policy's noise generator is seeded with ``noise_seed``."""
    key = (kind, spec["obs_dim"], spec["act_dim"], tuple(spec["hidden"]), spec.get("norm"), spec["seed"],
           spec.get("dtype", "float64"))
    if key not in _BUILT:
        _BUILT[key] = _fresh(kind, spec)
    net = copy.deepcopy(_BUILT[key])
    net.train(spec.get("mode", "train") == "train")
    norms = [m for m in net.modules() if isinstance(m, NORM_TYPES)]
    for i in spec.get("frozen", ()):
        norms[i].eval()
    if kind == "policy":
        net.generator = torch.Generator().manual_seed(spec.get("noise_seed", 0))
    return net


class Recorder:
    """Forward hooks on every normalization layer of a network: one record per call."""

    def __init__(self, net):
        self.calls = []
        self.hooks = []
        for i, m in enumerate(m for m in net.modules() if isinstance(m, NORM_TYPES)):
            self.hooks.append(m.register_forward_pre_hook(self._hook(i)))

    def _hook(self, index):
        def hook(mod, inputs):
            x = inputs[0] if inputs else None
            self.calls.append({"layer": index, "training": bool(mod.training),
                               "batch": int(x.shape[0]) if isinstance(x, torch.Tensor) and x.dim() > 0 else -1,
                               "grad": bool(torch.is_grad_enabled())})
        return hook

    def remove(self):
        for h in self.hooks:
            h.remove()


def state(net):
    """Copies of every normalization layer's running_mean, running_var and num_batches_tracked."""
    return [[m.running_mean.detach().clone(), m.running_var.detach().clone(), int(m.num_batches_tracked)]
            for m in net.modules() if isinstance(m, NORM_TYPES)]


def _output(value):
    """A learner's returned value as plain data: its type name, its values (detached), requires_grad."""
    kind = f"{type(value).__module__}.{type(value).__qualname__}"
    if isinstance(value, torch.Tensor):
        return {"type": kind, "value": value.detach().clone(), "requires_grad": bool(value.requires_grad),
                "shape": list(value.shape)}
    if isinstance(value, np.ndarray):
        return {"type": kind, "value": np.array(value), "requires_grad": False, "shape": list(value.shape)}
    return {"type": kind, "value": None, "requires_grad": False, "shape": None}


def act(fn, spec, obs, deterministic=None):
    """Build the policy from ``spec``, call ``fn(policy, obs)`` (with ``deterministic=`` when given) and
    report the action, the normalization calls, the statistics and every module's mode before and after."""
    policy = build("policy", spec)
    rec = Recorder(policy)
    modes_before, before = [bool(m.training) for m in policy.modules()], state(policy)
    try:
        with stage("select_action"):
            out = fn(policy, obs) if deterministic is None else fn(policy, obs, deterministic=deterministic)
    finally:
        rec.remove()
    return {"output": _output(out), "calls": rec.calls, "modes_before": modes_before,
            "modes_after": [bool(m.training) for m in policy.modules()], "before": before, "after": state(policy)}


def critic_loss(fn, critic, policy, batch, gamma, alpha, target=None):
    """Build the critic, the policy (and the target critic) from their specs, call
    ``fn(critic, [target,] policy, batch, gamma, alpha)``, then ``backward()`` on the loss: the loss, the
    gradients of the critic's parameters, which networks received any gradient, the normalization calls,
    statistics and modes of every network before and after."""
    nets = {"critic": build("critic", critic), "policy": build("policy", policy)}
    if target is not None:
        nets["target"] = build("critic", target)
    recs = {k: Recorder(n) for k, n in nets.items()}
    before = {k: {"modes": [bool(m.training) for m in n.modules()], "state": state(n)} for k, n in nets.items()}
    args = (nets["critic"], nets["target"], nets["policy"]) if target is not None else (nets["critic"], nets["policy"])
    try:
        with stage(fn.__name__ if hasattr(fn, "__name__") else "the critic loss"):
            loss = fn(*args, {k: v.clone() for k, v in batch.items()}, gamma, alpha)
    finally:
        for r in recs.values():
            r.remove()
    out = {"loss": _output(loss), "calls": {k: r.calls for k, r in recs.items()}, "before": before,
           "after": {k: {"modes": [bool(m.training) for m in n.modules()], "state": state(n)} for k, n in nets.items()},
           "backward": False}
    if isinstance(loss, torch.Tensor) and loss.requires_grad and loss.numel() == 1:
        with stage("loss.backward()"):
            loss.backward()
        out["backward"] = True
    out["grads"] = [None if p.grad is None else p.grad.detach().clone() for p in nets["critic"].parameters()]
    out["got_grad"] = {k: any(p.grad is not None and bool(p.grad.abs().sum() > 0) for p in n.parameters())
                       for k, n in nets.items()}
    return out
