"""Reinforcement learning with BN (Module 06): small actor-critic networks, the reference critic losses,
acting, and a seeded soft actor-critic loop on gymnasium's Pendulum-v1.

Conventions (stated once, used everywhere here and in the notebook):

* A **policy** ``policy(obs, deterministic=False) -> (action, log_prob)``: ``obs`` (B, obs_dim); ``action``
  (B, act_dim) in [-1, 1], a tanh-squashed Gaussian sample (reparameterized, so it carries the gradient), or
  tanh(mean) when ``deterministic``; ``log_prob`` (B,), the log-density of the action under the policy
  (SAC's tanh correction included: Haarnoja et al. 2018, "Soft Actor-Critic", arXiv:1801.01290, Appendix C).
  Its noise comes from ``policy.generator`` when one is set (repeatable runs), else from torch's global one.
* A **critic** ``critic(obs, action) -> q`` of shape (B, 2): two Q estimates per sample (clipped double Q:
  Fujimoto et al. 2018, arXiv:1802.09477; SAC uses two critics too).
* A **batch** from the replay buffer: a dict of tensors ``obs`` (B, obs_dim), ``action`` (B, act_dim),
  ``reward`` (B,), ``next_obs`` (B, obs_dim), ``done`` (B,) (1.0 where the episode *terminated* in
  ``next_obs``; a time-limit truncation is not a terminal state).
* The critic loss is ``((q - y[:, None]) ** 2).mean()`` over both Q estimates, with the soft target
  ``y = r + gamma * (1 - done) * (min_i Q_i(s', a') - alpha * log pi(a'|s'))``, ``a' ~ pi(.|s')``
  (0.5 times the sum over the two critics of their mean squared errors, as CrossQ's code writes it).

Normalization layers: ``torch.nn.BatchNorm1d`` or :class:`BatchRenorm1d` (Ioffe 2017, arXiv:1702.03275),
with momentum 0.01 (PyTorch's convention: the weight of the new batch statistic; CrossQ's Flax code uses a
decay of 0.99, the same thing). CrossQ (Bhatt et al., ICLR 2024, "CrossQ: Batch Normalization in Deep
Reinforcement Learning for Greater Sample Efficiency and Simplicity", arXiv:1902.05605; code
github.com/adityab/CrossQ) normalizes the input and every hidden layer of actor and critic, removes the
target network, and passes (s, a) and (s', a') through the critic in one training-mode forward pass.
"""
from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from . import verify as _verify
from .data import register
from .runtime import progress

NORMS = (None, "bn", "brn")


# ----------------------------------------------------------------------------- networks
class BatchRenorm1d(nn.Module):
    """Batch Renormalization over (N, C) (Ioffe 2017, Algorithm 1), as a torch module with autograd.

    Training mode: ``y = gamma * ((x - mu_B) / sigma_B * r + d) + beta`` with ``sigma_B = sqrt(var_B + eps)``
    (biased batch variance), ``sigma = sqrt(running_var + eps)``, ``r = clip(sigma_B / sigma, 1/r_max, r_max)``
    and ``d = clip((mu_B - running_mean) / sigma, -d_max, d_max)`` treated as constants (no gradient). For
    the first ``warmup`` training steps r = 1 and d = 0 (plain batch norm), so the running statistics are
    estimated before they correct anything (CrossQ warms up for 100,000 steps; our runs are shorter). The
    running statistics then follow PyTorch's BN update (unbiased variance, ``momentum`` on the new value),
    computed after r and d. Eval mode: plain BN with the running statistics. Matches
    ``bnlib.batch_renorm_forward`` (tests/test_module06.py).
    """

    def __init__(self, num_features: int, momentum: float = 0.01, eps: float = 1e-3, r_max: float = 3.0,
                 d_max: float = 5.0, warmup: int = 0):
        super().__init__()
        self.num_features, self.momentum, self.eps = num_features, momentum, eps
        self.r_max, self.d_max, self.warmup = r_max, d_max, warmup
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))
        self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            xhat = (x - self.running_mean) / torch.sqrt(self.running_var + self.eps)
            return xhat * self.weight + self.bias
        if x.shape[0] < 2:
            raise ValueError("Expected more than 1 value per channel when training")
        mean = x.mean(0)
        var = x.var(0, unbiased=False)
        sigma_b = torch.sqrt(var + self.eps)
        xhat = (x - mean) / sigma_b
        if int(self.num_batches_tracked) >= self.warmup:
            with torch.no_grad():
                sigma = torch.sqrt(self.running_var + self.eps)
                r = (sigma_b / sigma).clamp(1.0 / self.r_max, self.r_max)
                d = ((mean - self.running_mean) / sigma).clamp(-self.d_max, self.d_max)
            xhat = xhat * r + d
        with torch.no_grad():
            n = x.shape[0]
            self.running_mean.lerp_(mean.detach(), self.momentum)
            self.running_var.lerp_(var.detach() * n / (n - 1), self.momentum)
            self.num_batches_tracked += 1
        return xhat * self.weight + self.bias

    def extra_repr(self) -> str:
        return (f"{self.num_features}, momentum={self.momentum}, eps={self.eps}, r_max={self.r_max}, "
                f"d_max={self.d_max}, warmup={self.warmup}")


def norm_layer(kind: str | None, features: int, momentum: float = 0.01, warmup: int = 0) -> nn.Module:
    """``nn.BatchNorm1d`` ("bn"), :class:`BatchRenorm1d` ("brn") or ``nn.Identity`` (None)."""
    if kind is None:
        return nn.Identity()
    if kind == "bn":
        return nn.BatchNorm1d(features, momentum=momentum, eps=1e-3)
    if kind == "brn":
        return BatchRenorm1d(features, momentum=momentum, eps=1e-3, warmup=warmup)
    raise ValueError(f"norm must be one of {NORMS}, got {kind!r}")


def mlp(sizes: Sequence[int], norm: str | None, momentum: float = 0.01, warmup: int = 0) -> nn.Sequential:
    """CrossQ's layout: a normalization of the input, then Linear -> ReLU -> normalization per hidden layer
    (``sizes`` = input, hidden..., without the output layer)."""
    layers: list[nn.Module] = [norm_layer(norm, sizes[0], momentum, warmup)] if norm else []
    for a, b in zip(sizes, sizes[1:]):
        layers += [nn.Linear(a, b), nn.ReLU()]
        if norm:
            layers.append(norm_layer(norm, b, momentum, warmup))
    return nn.Sequential(*layers)


class GaussianPolicy(nn.Module):
    """SAC's tanh-squashed Gaussian policy (see the module's conventions). ``log_std`` is clamped to [-5, 2]."""

    def __init__(self, obs_dim: int, act_dim: int, hidden: Sequence[int] = (64, 64), norm: str | None = None,
                 momentum: float = 0.01, warmup: int = 0, generator: torch.Generator | None = None):
        super().__init__()
        self.body = mlp([obs_dim, *hidden], norm, momentum, warmup)
        self.head = nn.Linear(hidden[-1], 2 * act_dim)
        self.generator = generator

    def forward(self, obs: torch.Tensor, deterministic: bool = False):
        mean, log_std = self.head(self.body(obs)).chunk(2, dim=-1)
        log_std = log_std.clamp(-5.0, 2.0)
        std = log_std.exp()
        if deterministic:
            u = mean
        else:
            u = mean + std * torch.randn(mean.shape, generator=self.generator, dtype=mean.dtype)
        action = torch.tanh(u)
        # log N(u; mean, std) - log(1 - tanh(u)^2), the second term written stably
        log_prob = (-0.5 * ((u - mean) / std) ** 2 - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)
        log_prob = log_prob - (2 * (math.log(2.0) - u - F.softplus(-2 * u))).sum(-1)
        return action, log_prob


class TwinCritic(nn.Module):
    """Two Q networks of the same layout; ``critic(obs, action)`` is (B, 2)."""

    def __init__(self, obs_dim: int, act_dim: int, hidden: Sequence[int] = (128, 128), norm: str | None = None,
                 momentum: float = 0.01, warmup: int = 0):
        super().__init__()
        self.q = nn.ModuleList(
            nn.Sequential(mlp([obs_dim + act_dim, *hidden], norm, momentum, warmup), nn.Linear(hidden[-1], 1))
            for _ in range(2))

    def forward(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        x = torch.cat([obs, action], dim=-1)
        return torch.cat([q(x) for q in self.q], dim=-1)


def norm_layers(module: nn.Module) -> list[nn.Module]:
    """The BatchNorm and BatchRenorm layers of ``module``, in ``modules()`` order."""
    return [m for m in module.modules() if isinstance(m, (nn.modules.batchnorm._BatchNorm, BatchRenorm1d))]


def statistics(module: nn.Module) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Copies of every normalization layer's (running_mean, running_var)."""
    return [(m.running_mean.detach().clone(), m.running_var.detach().clone()) for m in norm_layers(module)]


# ----------------------------------------------------------------------------- reference functions
def _restore(modes):
    for m, mode in modes:
        m.training = mode


@torch.no_grad()
def select_action(policy: nn.Module, obs, deterministic: bool = False) -> np.ndarray:
    """An action for ``obs`` (a NumPy array (obs_dim,) or (n, obs_dim)) as a NumPy array (act_dim,) or
    (n, act_dim): the policy in eval mode (BN with its running statistics, which acting leaves alone), no
    gradient, every module's train/eval mode restored afterwards."""
    modes = [(m, m.training) for m in policy.modules()]
    policy.eval()
    try:
        x = torch.as_tensor(np.asarray(obs), dtype=next(policy.parameters()).dtype)
        action, _ = policy(x.unsqueeze(0) if x.dim() == 1 else x, deterministic=deterministic)
    finally:
        _restore(modes)
    action = action.numpy()
    return action[0] if np.ndim(obs) == 1 else action


def next_actions(policy: nn.Module, next_obs: torch.Tensor):
    """a' ~ pi(.|s') and log pi(a'|s'), with the policy in eval mode (as CrossQ's code does: its BN uses the
    running statistics and sampling does not move them), without gradient; modes restored."""
    modes = [(m, m.training) for m in policy.modules()]
    policy.eval()
    try:
        with torch.no_grad():
            return policy(next_obs)
    finally:
        _restore(modes)


def crossq_critic_loss(critic: nn.Module, policy: nn.Module, batch: dict, gamma: float, alpha: float) -> torch.Tensor:
    """CrossQ's critic loss (Bhatt et al. 2024, Section 3 and their code): no target network; (s, a) and
    (s', a') go through the critic (in training mode) in ONE forward pass on the concatenated batch of 2B,
    so BN normalizes both halves with the same statistics and updates its running statistics once; the
    target half is detached."""
    obs, next_obs = batch["obs"], batch["next_obs"]
    next_action, next_log_prob = next_actions(policy, next_obs)
    q = critic(torch.cat([obs, next_obs]), torch.cat([batch["action"], next_action]))
    q_now, q_next = q[:len(obs)], q[len(obs):].detach()
    target = batch["reward"] + gamma * (1 - batch["done"]) * (q_next.min(dim=1).values - alpha * next_log_prob)
    return ((q_now - target[:, None]) ** 2).mean()


def critic_loss_with_target(critic: nn.Module, target_critic: nn.Module, policy: nn.Module, batch: dict,
                            gamma: float, alpha: float) -> torch.Tensor:
    """SAC's critic loss with a target network: Q(s, a) from the critic (training mode), min Q'(s', a')
    from the target critic in eval mode (its running statistics, Polyak averages of the critic's) without
    gradient, modes restored. With BN critics this is the "naive" combination CrossQ's paper reports failing."""
    next_action, next_log_prob = next_actions(policy, batch["next_obs"])
    modes = [(m, m.training) for m in target_critic.modules()]
    target_critic.eval()
    try:
        with torch.no_grad():
            q_next = target_critic(batch["next_obs"], next_action)
    finally:
        _restore(modes)
    target = batch["reward"] + gamma * (1 - batch["done"]) * (q_next.min(dim=1).values - alpha * next_log_prob)
    q_now = critic(batch["obs"], batch["action"])
    return ((q_now - target[:, None]) ** 2).mean()


def actor_loss(policy: nn.Module, critic: nn.Module, obs: torch.Tensor, alpha: float):
    """SAC's policy loss ``mean(alpha * log pi(a|s) - min_i Q_i(s, a))`` with a ~ pi(.|s) reparameterized;
    the policy as the caller left it (training mode), the critic in eval mode (as in CrossQ's code).
    Returns (loss, log_prob detached) for the temperature update."""
    action, log_prob = policy(obs)
    modes = [(m, m.training) for m in critic.modules()]
    critic.eval()
    try:
        q = critic(obs, action).min(dim=1).values
    finally:
        _restore(modes)
    return (alpha * log_prob - q).mean(), log_prob.detach()


@torch.no_grad()
def soft_update(target: nn.Module, source: nn.Module, tau: float) -> None:
    """Polyak averaging ``target = (1 - tau) * target + tau * source`` of the parameters and of the BN
    running statistics (CrossQ's SAC baseline averages the batch statistics too); counters are copied."""
    for t, s in zip(target.parameters(), source.parameters()):
        t.lerp_(s, tau)
    for t, s in zip(target.buffers(), source.buffers()):
        if t.dtype.is_floating_point:
            t.lerp_(s, tau)
        else:
            t.copy_(s)


# ----------------------------------------------------------------------------- environments and replay
def make_env(env_id: str = "Pendulum-v1", seed: int = 0, **kwargs):
    """A gymnasium classic-control environment (shipped inside the package: nothing is downloaded), its
    first ``reset`` seeded with ``seed`` and its action space seeded too. Pendulum-v1: observation
    (cos theta, sin theta, angular velocity), action a torque in [-2, 2] N m, reward -(theta^2 + 0.1
    thetadot^2 + 0.001 torque^2) per step with theta in [-pi, pi] (0 upright), 200 steps per episode (a
    time limit: truncation, never termination), so an episode's return lies between about -3,250 and 0."""
    import gymnasium as gym
    env = gym.make(env_id, disable_env_checker=True, **kwargs)
    env.reset(seed=seed)
    env.action_space.seed(seed)
    return env


def _loader(env_id: str):
    def load(seed: int = 0, **kwargs):
        return make_env(env_id, seed=seed, **kwargs)
    load.__doc__ = f"gymnasium's {env_id}, its first reset seeded (:func:`cases.rl.make_env`)."
    return load


for _env_id in ("Pendulum-v1", "CartPole-v1"):   # cases.data.load("Pendulum-v1", seed=0)
    register(_env_id)(_loader(_env_id))


class ReplayBuffer:
    """A fixed-size FIFO of transitions in NumPy, sampled uniformly with its own generator."""

    def __init__(self, obs_dim: int, act_dim: int, size: int, seed: int = 0):
        self.obs = np.zeros((size, obs_dim), np.float32)
        self.next_obs = np.zeros((size, obs_dim), np.float32)
        self.action = np.zeros((size, act_dim), np.float32)
        self.reward = np.zeros(size, np.float32)
        self.done = np.zeros(size, np.float32)
        self.size, self.n, self.i = size, 0, 0
        self.rng = np.random.default_rng(seed)

    def add(self, obs, action, reward, next_obs, terminated) -> None:
        i = self.i
        self.obs[i], self.action[i], self.reward[i], self.next_obs[i] = obs, action, reward, next_obs
        self.done[i] = float(terminated)
        self.i, self.n = (i + 1) % self.size, min(self.n + 1, self.size)

    def sample(self, batch_size: int) -> dict:
        idx = self.rng.integers(0, self.n, batch_size)
        return {k: torch.from_numpy(getattr(self, k)[idx]) for k in ("obs", "action", "reward", "next_obs", "done")}


# ----------------------------------------------------------------------------- agents
@dataclass(frozen=True)
class Variant:
    """One agent of the Pendulum experiment: normalization in actor and critic, and a target network or not.
    Without a target network the critic loss is CrossQ's (one joint forward pass; without BN it is just
    SAC with the target network removed)."""

    name: str
    norm: str | None
    target: bool


VARIANTS = {v.name: v for v in (
    Variant("SAC", None, True),
    Variant("SAC + BN, target network (naive)", "bn", True),
    Variant("CrossQ (BN, no target network)", "bn", False),
    Variant("CrossQ (Batch Renorm, no target network)", "brn", False),
    Variant("no BN, no target network", None, False),
)}


@dataclass
class Config:
    """Hyperparameters shared by every variant (a miniature: CrossQ's networks are 256 wide for the actor
    and 2,048 for the critic, and it trains for 10^5..10^6 steps)."""

    steps: int = 6000
    start_steps: int = 500          # uniformly random actions first
    batch_size: int = 128
    actor_hidden: tuple = (64, 64)
    critic_hidden: tuple = (128, 128)
    lr: float = 1e-3
    betas: tuple = (0.5, 0.999)     # CrossQ's Adam
    gamma: float = 0.99
    tau: float = 0.005              # Polyak rate of target networks
    momentum: float = 0.01          # BN / BRN momentum
    brn_warmup: int = 1000          # Batch Renorm acts as BN for its first updates
    eval_every: int = 1000
    eval_episodes: int = 2
    buffer: int = 100_000


@dataclass
class Run:
    """What one training run measured: evaluation returns (deterministic policy, eval mode, mean over
    ``eval_episodes`` fresh episodes) at ``eval_steps``; returns of the training episodes; wall time."""

    variant: str
    seed: int
    eval_steps: list = field(default_factory=list)
    eval_returns: list = field(default_factory=list)
    train_returns: list = field(default_factory=list)
    seconds: float = 0.0
    diverged: bool = False
    policy: nn.Module | None = None
    critic: nn.Module | None = None
    buffer: object = None


def evaluate(policy: nn.Module, episodes: int = 2, seed: int = 10_000, act: Callable = select_action,
             env_id: str = "Pendulum-v1") -> float:
    """Mean return of ``episodes`` episodes acting deterministically with ``act`` (eval mode)."""
    env = make_env(env_id, seed=seed)
    scale = float(env.action_space.high[0])
    total = 0.0
    for ep in range(episodes):
        obs, _ = env.reset(seed=seed + ep)
        done = False
        while not done:
            obs, r, term, trunc, _ = env.step(act(policy, obs, deterministic=True) * scale)
            total += float(r)
            done = term or trunc
    return total / episodes


def train_agent(variant: Variant | str, seed: int, config: Config = Config(), *,
                act: Callable = select_action, crossq_loss: Callable = crossq_critic_loss,
                target_loss: Callable = critic_loss_with_target, show_progress: bool = False,
                env_id: str = "Pendulum-v1") -> Run:
    """Train one soft actor-critic agent (Haarnoja et al. 2018; temperature tuned to the target entropy
    -act_dim, arXiv:1812.05905) for ``config.steps`` environment steps, one update per step, and return
    its :class:`Run`. ``act``, ``crossq_loss`` and ``target_loss`` are the acting and critic-loss functions
    (the learner's, once checked, or the references)."""
    v = VARIANTS[variant] if isinstance(variant, str) else variant
    c = config
    torch.manual_seed(seed)
    env = make_env(env_id, seed=seed)
    obs_dim, act_dim = env.observation_space.shape[0], env.action_space.shape[0]
    scale = float(env.action_space.high[0])
    policy = GaussianPolicy(obs_dim, act_dim, c.actor_hidden, v.norm, c.momentum, c.brn_warmup,
                            generator=torch.Generator().manual_seed(seed))
    critic = TwinCritic(obs_dim, act_dim, c.critic_hidden, v.norm, c.momentum, c.brn_warmup)
    target = copy.deepcopy(critic) if v.target else None
    opt_pi = torch.optim.Adam(policy.parameters(), lr=c.lr, betas=c.betas)
    opt_q = torch.optim.Adam(critic.parameters(), lr=c.lr, betas=c.betas)
    log_alpha = torch.zeros((), requires_grad=True)
    opt_alpha = torch.optim.Adam([log_alpha], lr=c.lr, betas=c.betas)
    buffer = ReplayBuffer(obs_dim, act_dim, c.buffer, seed)
    rng = np.random.default_rng(seed)
    run = Run(v.name, seed)
    policy.train(), critic.train()
    obs, _ = env.reset(seed=seed)
    episode_return = 0.0
    start = time.perf_counter()
    steps = progress(range(1, c.steps + 1), desc=f"{v.name}, seed {seed}", leave=False) if show_progress \
        else range(1, c.steps + 1)
    for step in steps:
        if step <= c.start_steps:
            action = rng.uniform(-1, 1, act_dim).astype(np.float32)
        else:
            action = np.asarray(act(policy, obs), dtype=np.float32)
        next_obs, reward, terminated, truncated, _ = env.step(action * scale)
        buffer.add(obs, action, reward, next_obs, terminated)
        episode_return += float(reward)
        obs = next_obs
        if terminated or truncated:
            run.train_returns.append((step, episode_return))
            obs, _ = env.reset()
            episode_return = 0.0
        if step > c.start_steps:
            batch = buffer.sample(c.batch_size)
            alpha = float(log_alpha.detach().exp())
            if v.target:
                loss_q = target_loss(critic, target, policy, batch, c.gamma, alpha)
            else:
                loss_q = crossq_loss(critic, policy, batch, c.gamma, alpha)
            if not torch.isfinite(loss_q):
                run.diverged = True
                break
            opt_q.zero_grad(set_to_none=True)
            loss_q.backward()
            opt_q.step()
            loss_pi, log_prob = actor_loss(policy, critic, batch["obs"], alpha)
            opt_pi.zero_grad(set_to_none=True)
            loss_pi.backward()
            opt_pi.step()
            loss_alpha = -(log_alpha * (log_prob + (-act_dim))).mean()
            opt_alpha.zero_grad(set_to_none=True)
            loss_alpha.backward()
            opt_alpha.step()
            if target is not None:
                soft_update(target, critic, c.tau)
        if step % c.eval_every == 0:
            run.eval_steps.append(step)
            run.eval_returns.append(evaluate(policy, c.eval_episodes, act=act, env_id=env_id))
    run.seconds = time.perf_counter() - start
    run.policy, run.critic, run.buffer = policy, critic, buffer
    return run


# ----------------------------------------------------------------------------- acting with several environments
def parallel_episodes(policy: nn.Module, n_envs: int = 8, seed: int = 20_000, mode: str = "eval",
                      act: Callable = select_action, env_id: str = "Pendulum-v1"):
    """One episode in each of ``n_envs`` environments stepped together, the policy acting on the batch of
    their observations (deterministic actions): ``mode`` "eval" acts with ``act`` (eval mode, statistics
    untouched); "train" is the mistake of acting in training mode (under ``torch.no_grad()``, which does
    not change the mode): BN normalizes with the statistics of the current observations and moves its
    running statistics at every step. Returns (returns per environment, the drift of the running
    statistics after each step: mean over layers of the relative change from the start)."""
    envs = [make_env(env_id, seed=seed + i) for i in range(n_envs)]
    obs = np.stack([e.reset(seed=seed + i)[0] for i, e in enumerate(envs)])
    scale = float(envs[0].action_space.high[0])
    start = statistics(policy)
    returns, drift, done = np.zeros(n_envs), [], False
    while not done:
        if mode == "train":
            policy.train()
            with torch.no_grad():
                action = policy(torch.as_tensor(obs), deterministic=True)[0].numpy()
        else:
            action = act(policy, obs, deterministic=True)
        steps = [e.step(a * scale) for e, a in zip(envs, action)]
        obs = np.stack([s[0] for s in steps])
        returns += [s[1] for s in steps]
        done = any(s[2] or s[3] for s in steps)
        drift.append(statistics_drift(start, statistics(policy)))
    return returns, np.array(drift)


def statistics_drift(before, after) -> float:
    """Mean over layers of ``(||mean' - mean|| + ||var' - var||) / (||mean|| + ||var||)`` between two
    :func:`statistics` snapshots (0 when nothing moved)."""
    out = [float(((m1 - m0).norm() + (v1 - v0).norm()) / (m0.norm() + v0.norm()))
           for (m0, v0), (m1, v1) in zip(before, after)]
    return float(np.mean(out)) if out else 0.0


def critic_input_halves(critic: nn.Module, policy: nn.Module, batch: dict):
    """What the critic's first normalization layer sees in CrossQ's joint pass: the per-feature mean and
    standard deviation of its input for the (s, a) half and for the (s', a') half (a' from the policy in
    eval mode), as two (features,) arrays each: ((mean_now, std_now), (mean_next, std_next))."""
    next_action, _ = next_actions(policy, batch["next_obs"])
    now = torch.cat([batch["obs"], batch["action"]], dim=-1)
    nxt = torch.cat([batch["next_obs"], next_action], dim=-1)
    return ((now.mean(0).numpy(), now.std(0).numpy()), (nxt.mean(0).numpy(), nxt.std(0).numpy()))


# ----------------------------------------------------------------------------- checks before experiments
def _probe_nets(seed: int, norm: str | None, dtype=torch.float64, policy_norm: str | None = "bn"):
    """A small policy and critic with random running statistics (so that modes matter), built twice alike."""
    torch.manual_seed(seed)
    policy = GaussianPolicy(3, 2, (8,), policy_norm, generator=torch.Generator().manual_seed(seed))
    critic = TwinCritic(3, 2, (8, 8), norm)
    target = TwinCritic(3, 2, (8, 8), norm)
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for m in norm_layers(policy) + norm_layers(critic) + norm_layers(target):
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=gen) * 0.5)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=gen) + 0.5)
    return policy.to(dtype).train(), critic.to(dtype).train(), target.to(dtype).train()


def _probe_batch(seed: int, b: int = 6) -> dict:
    g = torch.Generator().manual_seed(seed)
    obs = torch.randn(b, 3, generator=g, dtype=torch.float64)
    return {"obs": obs, "action": torch.rand(b, 2, generator=g, dtype=torch.float64) * 2 - 1,
            "reward": torch.randn(b, generator=g, dtype=torch.float64),
            "next_obs": obs + 0.3 * torch.randn(b, 3, generator=g, dtype=torch.float64),
            "done": (torch.arange(b) % 3 == 0).double()}


def _same_side_effects(mine_nets, ref_nets) -> None:
    for name, a, b in zip(("policy", "critic", "target critic"), mine_nets, ref_nets):
        if [m.training for m in a.modules()] != [m.training for m in b.modules()]:
            raise _verify.Disagreement(f"the {name}'s train/eval modes differ from the reference's afterwards")
        for (m0, v0), (m1, v1) in zip(statistics(a), statistics(b)):
            _verify._compare(f"the {name}'s running statistics", torch.cat([m0, v0]), torch.cat([m1, v1]), 1e-6)


def probe_select_action(fn, seed: int = 0) -> None:
    """The learner's ``select_action`` against :func:`select_action` on a float32 BN policy in training
    mode: one observation and a batch of 5, sampled and deterministic; statistics and modes afterwards."""
    for obs_shape in ((3,), (5, 3)):
        for deterministic in (False, True):
            (mine, _, _), (ref, _, _) = (_probe_nets(seed, None, torch.float32) for _ in range(2))
            obs = np.random.default_rng(seed).normal(size=obs_shape).astype(np.float32)
            _verify._compare("the action", fn(mine, obs.copy(), deterministic=deterministic),
                             select_action(ref, obs.copy(), deterministic=deterministic), 1e-5)
            _same_side_effects([mine], [ref])


def _probe_loss(fn, reference, with_target: bool, seed: int) -> None:
    for norm in ("bn", "brn"):
        mine, ref = _probe_nets(seed, norm), _probe_nets(seed, norm)
        batch = _probe_batch(seed)
        losses = []
        for (policy, critic, target), f in ((mine, fn), (ref, reference)):
            args = (critic, target, policy) if with_target else (critic, policy)
            loss = f(*args, {k: v.clone() for k, v in batch.items()}, 0.99, 0.1)
            if not isinstance(loss, torch.Tensor) or loss.numel() != 1 or not loss.requires_grad:
                raise _verify.Disagreement("it must return the loss as a scalar tensor with a gradient")
            loss.backward()
            losses.append((loss.detach(), torch.cat([p.grad.flatten() if p.grad is not None else torch.zeros(p.numel(), dtype=p.dtype)
                                                     for p in critic.parameters()])))
        _verify._compare(f"the loss ({norm} critic)", losses[0][0], losses[1][0], 1e-6)
        _verify._compare(f"the critic's gradient ({norm} critic)", losses[0][1], losses[1][1], 1e-6)
        _same_side_effects(mine, ref)


def probe_crossq(fn, seed: int = 0) -> None:
    """The learner's CrossQ loss against :func:`crossq_critic_loss` with BN and Batch Renorm critics (float64):
    loss, the critic's gradient, and every network's statistics and modes afterwards."""
    _probe_loss(fn, crossq_critic_loss, False, seed)


def probe_target_loss(fn, seed: int = 0) -> None:
    """The learner's loss with a target network against :func:`critic_loss_with_target`, likewise."""
    _probe_loss(fn, critic_loss_with_target, True, seed)


def checked_select_action(fn):
    """The learner's ``select_action`` if it passes :func:`probe_select_action`, else :func:`select_action`."""
    return _verify.checked(fn, select_action, probe_select_action, "select_action")


def checked_crossq(fn):
    """The learner's ``crossq_critic_loss`` if it passes :func:`probe_crossq`, else the reference."""
    return _verify.checked(fn, crossq_critic_loss, probe_crossq, "crossq_critic_loss")


def checked_target_loss(fn):
    """The learner's ``critic_loss_with_target`` if it passes :func:`probe_target_loss`, else the reference."""
    return _verify.checked(fn, critic_loss_with_target, probe_target_loss, "critic_loss_with_target")


def mean_range(values, digits: int = 0) -> str:
    """"mean (range min to max)" of values over seeds or environments, written so that negative returns read
    clearly, e.g. ``-152 (range -170 to -139)``."""
    v = np.asarray(values, dtype=np.float64)
    return f"{v.mean():.{digits}f} (range {v.min():.{digits}f} to {v.max():.{digits}f})"
