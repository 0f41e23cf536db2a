"""Checks for Module 06, "Case study: reinforcement learning".

Contracts (stated in the notebook; networks as in ``cases.rl``: ``policy(obs, deterministic=False) ->
(action, log_prob)``, ``critic(obs, action) -> (B, 2)``; a batch is a dict of tensors ``obs``, ``action``,
``reward``, ``next_obs``, ``done``):

* ``select_action(policy, obs, deterministic=False) -> action``: ``obs`` a float32 NumPy array (obs_dim,)
  or (n, obs_dim); the action a NumPy array (act_dim,) or (n, act_dim); the policy in eval mode while it
  acts (BN uses its running statistics), no statistic changes, no autograd graph, and every module's
  train/eval mode afterwards as it was before.
* ``crossq_critic_loss(critic, policy, batch, gamma, alpha) -> loss`` (Bhatt et al., ICLR 2024): a' and
  log pi(a'|s') from the policy in eval mode without gradient (modes restored); ONE training-mode forward
  pass of the critic on the concatenated batch (s, a) + (s', a') of 2B; the target
  ``r + gamma (1 - done) (min_i Q_i(s', a') - alpha log pi(a'|s'))`` from the second half, detached; the
  loss ``((q - y[:, None]) ** 2).mean()`` over the first half's two Q estimates.
* ``critic_loss_with_target(critic, target_critic, policy, batch, gamma, alpha) -> loss``: the same target
  with min_i Q'_i(s', a') from the target critic in eval mode without gradient (modes restored), and
  Q(s, a) from the critic in training mode (one forward pass of B).

The networks are built by ``kernel_agent.procedures.m06`` where the learner's code lives (float32 for
acting, float64 for the losses, random running statistics so that train and eval mode differ); the same
procedures run here with the references below give the expected observations.
"""
from __future__ import annotations

import functools

import numpy as np
import torch

from ..kernel_agent.procedures import m06 as proc
import dis
import types

from . import (CheckFailure, Proxy, Report, as_array, compare, describe, forbidden_uses, norm_rel_error,
               one_torch_thread, run_procedure)

TOL = 1e-9        # float64 losses and gradients
TOL_ACT = 1e-6    # float32 actions
WORKS = 1e-3      # "it works": essential sub-tests (autograder/checks/__init__.py Report, course/grading.md)
ROOTS = ("bnlib", "autograder", "cases")
OBS, ACT = 3, 2


def _loads_builtin(fn, name: str, depth: int = 0) -> bool:
    """Whether ``fn`` (or a function of the learner's it calls) loads ``name`` as a global, i.e. calls the
    builtin: ``policy.eval()`` reads the attribute ``eval``, which is not the builtin ``eval``."""
    code = getattr(fn, "__code__", None)
    if code is None:
        return False
    codes, found = [code], False
    while codes:
        c = codes.pop()
        for ins in dis.get_instructions(c):
            if ins.opname in ("LOAD_GLOBAL", "LOAD_NAME") and ins.argval == name:
                found = True
        codes += [k for k in c.co_consts if isinstance(k, types.CodeType)]
    if found or depth >= 2:
        return found
    glb = getattr(fn, "__globals__", {})
    return any(_loads_builtin(glb[n], name, depth + 1) for n in code.co_names
               if isinstance(glb.get(n), types.FunctionType) and glb[n] is not fn)


def _guard(report: Report, fn):
    """``checks.guard`` for functions that switch modules with ``.eval()``: zero the report when ``fn`` is
    missing, not a function, or (in the learner's notebook) reaches bnlib, the course's ``cases`` package or
    the autograder, which the grading kernel does not have."""
    info = describe(fn)
    name = getattr(fn, "__name__", "this")
    if info.get("kind") == "missing":
        return report.zero(f"{name} is not defined (run the cell that defines it)")
    if info.get("kind") != "function":
        return report.zero(f"expected a function, got {str(info.get('type', '?')).rpartition('.')[2]}")
    if isinstance(fn, Proxy):
        return None
    bad = [b for b in forbidden_uses(fn, ROOTS) if b not in ("eval", "compile") or _loads_builtin(fn, b)]
    if bad:
        return report.zero(f"{name} must be written with torch by you; it uses {', '.join(bad)}. bnlib, the course's "
                           "cases package and the autograder are not available when your notebook is graded, so this "
                           "earns no credit.")
    return None


def _np(t) -> np.ndarray:
    return as_array("value", t).astype(np.float64)


# ----------------------------------------------------------------------------- references
def _modes(net):
    return [(m, m.training) for m in net.modules()]


def _restore(modes):
    for m, mode in modes:
        m.training = mode


def reference_select_action(policy, obs, deterministic=False):
    """The policy in eval mode, without gradient; modes restored module by module."""
    modes = _modes(policy)
    policy.eval()
    try:
        with torch.no_grad():
            x = torch.as_tensor(np.asarray(obs), dtype=torch.float32)
            action, _ = policy(x.unsqueeze(0) if x.dim() == 1 else x, deterministic=deterministic)
    finally:
        _restore(modes)
    action = action.numpy()
    return action[0] if np.ndim(obs) == 1 else action


def _next(policy, batch, mode="eval", source="policy"):
    if source == "buffer":   # a mistake: the next action taken from the replay buffer
        with torch.no_grad():
            _, log_prob = policy(batch["next_obs"])
        return batch["action"], log_prob
    modes = _modes(policy)
    policy.train(mode == "train")
    try:
        with torch.no_grad():
            return policy(batch["next_obs"])
    finally:
        _restore(modes)


def _target(batch, q_next, log_prob, gamma, alpha, mask=True, entropy=-1.0, reduce="min"):
    v = (q_next.min(dim=1).values if reduce == "min" else q_next.max(dim=1).values) + entropy * alpha * log_prob
    return batch["reward"] + gamma * ((1 - batch["done"]) if mask else 1.0) * v


def reference_crossq(critic, policy, batch, gamma, alpha, *, passes="joint", detach=True, mask=True, entropy=-1.0,
                     source="policy", reduce="min", policy_mode="eval"):
    """CrossQ's critic loss; the keyword options make known mistakes (for the hints): ``passes`` "two"
    (separate training-mode passes) or "eval_next" (the next half in eval mode, without gradient),
    ``detach`` False, ``mask`` False (terminal states ignored), ``entropy`` +1 (sign flipped) or 0,
    ``source`` "buffer" (a' from the replay buffer), ``reduce`` "max", ``policy_mode`` "train"."""
    obs, next_obs = batch["obs"], batch["next_obs"]
    a2, logp = _next(policy, batch, policy_mode, source)
    b = len(obs)
    if passes == "joint":
        q = critic(torch.cat([obs, next_obs]), torch.cat([batch["action"], a2]))
        q_now, q_next = q[:b], q[b:]
    elif passes == "two":
        q_now, q_next = critic(obs, batch["action"]), critic(next_obs, a2)
    else:
        q_now = critic(obs, batch["action"])
        modes = _modes(critic)
        critic.eval()
        with torch.no_grad():
            q_next = critic(next_obs, a2)
        _restore(modes)
    if detach:
        q_next = q_next.detach()
    y = _target(batch, q_next, logp, gamma, alpha, mask, entropy, reduce)
    return ((q_now - y[:, None]) ** 2).mean()


def reference_with_target(critic, target_critic, policy, batch, gamma, alpha, *, target_mode="eval", net="target",
                          mask=True, entropy=-1.0, source="policy", reduce="min", detach=True):
    """SAC's critic loss with a target network; options make known mistakes: ``target_mode`` "train",
    ``net`` "critic" (the online critic for the target), ``mask``, ``entropy``, ``source``, ``reduce``,
    ``detach`` False (gradient into the target critic)."""
    a2, logp = _next(policy, batch, "eval", source)
    tnet = target_critic if net == "target" else critic
    modes = _modes(tnet)
    tnet.train(target_mode == "train")
    try:
        with torch.set_grad_enabled(not detach):
            q_next = tnet(batch["next_obs"], a2)
    finally:
        _restore(modes)
    if net == "critic":
        q_next = q_next.detach()
    y = _target(batch, q_next, logp, gamma, alpha, mask, entropy, reduce)
    return ((critic(batch["obs"], batch["action"]) - y[:, None]) ** 2).mean()


CROSSQ_HINTS = [
    (dict(passes="two"), "(s, a) and (s', a') went through the critic in two forward passes, so BN normalized each "
                         "half with its own statistics. CrossQ concatenates them: critic(cat([s, s']), cat([a, a'])) "
                         "in ONE training-mode pass of 2B, then splits the output."),
    (dict(passes="eval_next"), "the next half went through the critic in eval mode (running statistics) in a pass of "
                               "its own: that is the naive BN recipe CrossQ replaces by one joint training-mode pass."),
    (dict(detach=False), "the target is not detached: gradient flows through Q(s', a') too (a residual-gradient "
                         "update). Split it off with .detach() (or compute it under torch.no_grad())."),
    (dict(mask=False), "terminal transitions must not bootstrap: multiply the next value by (1 - done)."),
    (dict(entropy=1.0), "the entropy term has the wrong sign: the soft value is min Q(s', a') - alpha * log pi(a'|s')."),
    (dict(entropy=0.0), "the entropy term is missing: the soft value is min Q(s', a') - alpha * log pi(a'|s')."),
    (dict(source="buffer"), "a' must be sampled from the CURRENT policy at s' (a' ~ pi(.|s')), not taken from the "
                            "replay buffer (those actions belong to s, and to old policies)."),
    (dict(reduce="max"), "clipped double Q takes the MINIMUM of the two Q estimates for the target, not the maximum."),
]

TARGET_HINTS = [
    (dict(target_mode="train"), "the target critic ran in training mode (batch statistics of (s', a'), and its running "
                                "statistics moved): evaluate it in eval mode, then restore its modes."),
    (dict(net="critic"), "the target values must come from target_critic, not from the critic being trained."),
    (dict(mask=False), "terminal transitions must not bootstrap: multiply the next value by (1 - done)."),
    (dict(entropy=1.0), "the entropy term has the wrong sign: the soft value is min Q'(s', a') - alpha * log pi(a'|s')."),
    (dict(entropy=0.0), "the entropy term is missing: the soft value is min Q'(s', a') - alpha * log pi(a'|s')."),
    (dict(source="buffer"), "a' must be sampled from the current policy at s', not taken from the replay buffer."),
    (dict(reduce="max"), "clipped double Q takes the MINIMUM of the two target estimates, not the maximum."),
]


# ----------------------------------------------------------------------------- shared machinery
def _loss_vector(obs) -> np.ndarray | None:
    """The loss and the critic's gradients as one float64 vector, or None when missing."""
    loss = obs.get("loss", {})
    if loss.get("value") is None or any(g is None for g in obs.get("grads", [None])):
        return None
    return np.concatenate([_np(loss["value"]).ravel()] + [_np(g).ravel() for g in obs["grads"]])


def _hint(got, inputs, reference, hints) -> str | None:
    mine = _loss_vector(got)
    if mine is None:
        return None
    for options, message in hints:
        wrong = proc.critic_loss(functools.partial(reference, **options), **inputs)
        vec = _loss_vector(wrong)
        if vec is not None and vec.shape == mine.shape and norm_rel_error(mine, vec) <= 1e-7:
            return "Likely cause: " + message
    return None


def _same_loss(got, ref, inputs, tol, reference, hints):
    """The loss (a scalar tensor connected to the critic) and its gradients w.r.t. the critic's parameters."""
    out = got.get("loss") or {}
    if out.get("type") != "torch.Tensor":
        raise CheckFailure(f"the loss must be a torch tensor, got {str(out.get('type')).rpartition('.')[2]}")
    if out.get("shape") not in ([], [1]):
        raise CheckFailure(f"the loss must be a scalar (one number), got shape {tuple(out.get('shape') or ())}: "
                           "average over the batch and over the two Q estimates")
    if not got.get("backward"):
        raise CheckFailure("the loss carries no gradient (requires_grad is False): compute Q(s, a) with autograd on "
                           "(outside torch.no_grad()) and keep the loss a tensor")
    missing = [i for i, g in enumerate(got.get("grads", [])) if g is None]
    if missing:
        raise CheckFailure(f"{len(missing)} of the critic's parameter tensors got no gradient from the loss")
    mine, expected = _loss_vector(got), _loss_vector(ref)
    hint = None
    if mine is None or mine.shape != expected.shape or not norm_rel_error(mine, expected) <= tol:
        hint = _hint(got, inputs, reference, hints)
    compare("the loss", out["value"], _np(ref["loss"]["value"]), tol, hint)
    grads = np.concatenate([_np(g).ravel() for g in got["grads"]])
    compare("the gradient of the loss w.r.t. the critic's parameters", grads, expected[1:], tol, hint)
    return f"loss {float(_np(out['value']).ravel()[0]):.4g}"


def _sizes(calls, layer_count=None):
    return sorted({(c["batch"], c["training"]) for c in calls})


def _same_state(what, got_state, ref_state, tol=TOL):
    for i, (a, b) in enumerate(zip(got_state, ref_state)):
        compare(f"running_mean of {what}'s normalization layer {i + 1}", a[0], _np(b[0]), tol)
        compare(f"running_var of {what}'s normalization layer {i + 1}", a[1], _np(b[1]), tol)
        if a[2] != b[2]:
            raise CheckFailure(f"num_batches_tracked of {what}'s layer {i + 1} is {a[2]}, expected {b[2]}: its "
                               f"statistics were updated {a[2] - b[2] + 1} time(s) instead of once")


def _untouched(what, before, after):
    for i, (a, b) in enumerate(zip(before["state"], after["state"])):
        if a[2] != b[2] or not (np.array_equal(_np(a[0]), _np(b[0])) and np.array_equal(_np(a[1]), _np(b[1]))):
            raise CheckFailure(f"{what}'s running statistics changed (layer {i + 1}): it ran in training mode. Put it "
                               "in eval mode for this forward pass (torch.no_grad() does not change the mode)")
    if after["modes"] != before["modes"]:
        raise CheckFailure(f"{what}'s train/eval modes were not restored (each module as it was before the call)")


def _policy_case(gen, b, norm=None, noise_seed=0):
    return dict(obs_dim=OBS, act_dim=ACT, hidden=[5], norm=norm, seed=int(torch.randint(0, 10_000, (), generator=gen)),
                noise_seed=noise_seed, dtype="float64", mode="train")


def _critic_case(gen, norm, hidden=(6,)):
    return dict(obs_dim=OBS, act_dim=ACT, hidden=list(hidden), norm=norm,
                seed=int(torch.randint(0, 10_000, (), generator=gen)), dtype="float64", mode="train")


def _batch(gen, b, terminal):
    obs = torch.randn(b, OBS, generator=gen, dtype=torch.float64) * torch.tensor([1.0, 0.7, 2.5], dtype=torch.float64) + 0.2
    next_obs = obs + 0.4 + 0.3 * torch.randn(b, OBS, generator=gen, dtype=torch.float64)
    action = torch.rand(b, ACT, generator=gen, dtype=torch.float64) * 2 - 1
    reward = -(obs ** 2).sum(1) * 0.5 - 1 + 0.1 * torch.randn(b, generator=gen, dtype=torch.float64)
    done = torch.zeros(b, dtype=torch.float64)
    done[list(terminal)] = 1.0
    return {"obs": obs, "action": action, "reward": reward, "next_obs": next_obs, "done": done}


# ----------------------------------------------------------------------------- select_action
@one_torch_thread
def check_select_action(select_action, points: float = 2.0, hidden: bool = False, seed: int = 0) -> float:
    """Grade the learner's ``select_action`` with a BN policy: actions, modes, statistics, autograd."""
    report = Report("select_action" + (" (hidden tests)" if hidden else ""), points)
    if (z := _guard(report, select_action)) is not None:
        return z
    gen = torch.Generator().manual_seed(seed)
    seen = {}

    def case(key, n, deterministic=None, mode="train", frozen=(), tol=TOL_ACT):
        spec = dict(obs_dim=OBS, act_dim=ACT, hidden=[8], norm="bn", dtype="float32", mode=mode, frozen=list(frozen),
                    seed=int(torch.randint(0, 10_000, (), generator=gen)),
                    noise_seed=int(torch.randint(0, 10_000, (), generator=gen)))
        shape = (OBS,) if n is None else (n, OBS)
        obs = (torch.randn(shape, generator=gen) * torch.tensor([1.0, 0.7, 2.5]) + 0.2).numpy()
        try:
            got = run_procedure(proc.act, select_action, spec=spec, obs=obs, deterministic=deterministic)
        except CheckFailure as exc:
            if "more than 1 value per channel" in str(exc):
                raise CheckFailure(f"{exc}. Likely cause: the policy is in training mode while it acts, where BN needs "
                                   "a batch; call policy.eval() first (torch.no_grad() does not change the mode), "
                                   "and restore the modes afterwards") from None
            raise
        ref = proc.act(reference_select_action, spec, obs, deterministic)
        seen[key] = (got, ref)
        out = got["output"]
        if out["value"] is None:
            raise CheckFailure(f"select_action must return a NumPy array (the environment takes one), got "
                               f"{out['type'].rpartition('.')[2]}")
        expected = _np(ref["output"]["value"])
        if tuple(out["shape"]) != expected.shape:
            raise CheckFailure(f"the action has shape {tuple(out['shape'])}, expected {expected.shape}: one observation "
                               f"({OBS},) gives one action ({ACT},); a batch (n, {OBS}) gives (n, {ACT})")
        hint = None
        if any(c["training"] for c in got["calls"]):
            hint = ("Likely cause: the policy's BN layers ran in training mode while acting (batch statistics of the "
                    "observations): call policy.eval() first; torch.no_grad() does not change the mode.")
        elif deterministic:
            sto = proc.act(reference_select_action, spec, obs, None)
            if norm_rel_error(_np(out["value"]), _np(sto["output"]["value"])) <= tol:
                hint = "Likely cause: deterministic=True must give the mean action: pass it on to the policy."
        elif deterministic is None:
            det = proc.act(reference_select_action, spec, obs, True)
            if norm_rel_error(_np(out["value"]), _np(det["output"]["value"])) <= tol:
                hint = "Likely cause: by default (deterministic=False) the action is SAMPLED from the policy."
        compare("the action", out["value"], expected, tol, hint)

    def seen_case(key):
        if key not in seen:
            raise CheckFailure("select_action could not be run on this case (see above)")
        return seen[key]

    def unchanged(key):
        got, _ = seen_case(key)
        before, after = got["before"], got["after"]
        for i, (a, b) in enumerate(zip(before, after)):
            if a[2] != b[2] or not (np.array_equal(_np(a[0]), _np(b[0])) and np.array_equal(_np(a[1]), _np(b[1]))):
                raise CheckFailure(f"acting changed the running statistics of BN layer {i + 1}: the policy ran in "
                                   "training mode. Acting must leave them alone (eval mode)")

    def restored(key, what="the policy's modes"):
        got, _ = seen_case(key)
        if got["modes_after"] != got["modes_before"]:
            was, now = got["modes_before"][0], got["modes_after"][0]
            detail = (f"the policy was in {'training' if was else 'eval'} mode before and is in "
                      f"{'training' if now else 'eval'} mode after" if was != now else
                      "a module inside the policy changed mode")
            raise CheckFailure(f"{what} were not restored: {detail}. Save every module's mode before and set it back "
                               "after (policy.train() after acting is right only if it was training before)")

    def no_graph(key):
        got, _ = seen_case(key)
        if any(c["grad"] for c in got["calls"]):
            raise CheckFailure("acting recorded an autograd graph: run the policy under torch.no_grad() (no gradient is "
                               "needed to act, and the graph costs time and memory at every step)")

    if not hidden:
        works = "acting works: one observation, a sampled action as the reference's (BN policy in eval mode)"
        report.run(works, 1, lambda: case("one", None), essential=True)
        report.run("deterministic=True gives the mean action", 0.5, lambda: case("det", None, True))

        def side_effects():
            unchanged("one")
            restored("one")
        report.run("acting leaves every BN statistic unchanged and the policy in training mode again", 0.5,
                   side_effects, requires=works)
        return report.finish()

    works = "acting works: a batch of 6 observations (vectorized environments), sampled actions"
    report.run(works, 1, lambda: case("batch", 6), essential=True)
    report.run("deterministic=True for a batch of 4", 0.5, lambda: case("det", 4, True))
    report.run("BN statistics unchanged (running_mean, running_var, num_batches_tracked)", 0.5,
               lambda: unchanged("batch"), requires=works)
    def eval_stays():
        case("eval", None, mode="eval")
        restored("eval")

    def mixed():
        case("mixed", 5, frozen=(1,))
        restored("mixed", "the modules' modes")
    report.run("a policy in eval mode stays in eval mode", 0.5, eval_stays, requires=works)
    report.run("modes restored module by module (a BN layer frozen in eval mode in a training policy)", 0.25, mixed,
               requires=works)
    report.run("no autograd graph while acting", 0.25, lambda: no_graph("batch"), requires=works)
    return report.finish()


# ----------------------------------------------------------------------------- crossq_critic_loss
def _loss_case(gen, seen, key, fn, reference, hints, *, norm, b, terminal, gamma, alpha, policy_norm=None,
               target_norm=None, tol=TOL):
    inputs = dict(critic=_critic_case(gen, norm), policy=_policy_case(gen, b, policy_norm),
                  batch=_batch(gen, b, terminal), gamma=gamma, alpha=alpha)
    if target_norm is not None:
        inputs["target"] = _critic_case(gen, None if target_norm == "none" else target_norm)
    got = run_procedure(proc.critic_loss, fn, **inputs)
    ref = proc.critic_loss(reference, **inputs)
    seen[key] = (got, ref, inputs)
    return _same_loss(got, ref, inputs, tol, reference, hints)


def _seen(seen, key):
    if key not in seen:
        raise CheckFailure("the loss could not be computed on this case (see above)")
    return seen[key]


def _policy_in_eval(seen, key):
    got, ref, inputs = _seen(seen, key)
    b = len(inputs["batch"]["obs"])
    calls = got["calls"]["policy"]
    if any(c["training"] for c in calls):
        raise CheckFailure("the policy sampled a' in training mode (its BN used the batch's statistics and updated its "
                           "running ones): sample a' with the policy in eval mode, as when acting, and restore its modes")
    if not calls:
        raise CheckFailure("the policy was never called: a' must be sampled from it at s'")
    if any(c["batch"] != b for c in calls):
        raise CheckFailure(f"the policy saw batches of {sorted({c['batch'] for c in calls})}, expected s' alone ({b})")
    _untouched("the policy", got["before"]["policy"], got["after"]["policy"])
    if got["got_grad"].get("policy"):
        raise CheckFailure("the policy's parameters received a gradient from the critic loss: sample a' without "
                           "gradient (torch.no_grad())")


@one_torch_thread
def check_crossq_critic_loss(crossq_critic_loss, points: float = 3.0, hidden: bool = False, seed: int = 0) -> float:
    """Grade the learner's CrossQ critic loss against the reference on BN and Batch Renorm critics."""
    report = Report("crossq_critic_loss" + (" (hidden tests)" if hidden else ""), points)
    if (z := _guard(report, crossq_critic_loss)) is not None:
        return z
    gen = torch.Generator().manual_seed(seed)
    seen = {}

    def case(key, **kw):
        return _loss_case(gen, seen, key, crossq_critic_loss, reference_crossq, CROSSQ_HINTS, **kw)

    def joint(key):
        got, ref, inputs = _seen(seen, key)
        b = len(inputs["batch"]["obs"])
        calls, expected = got["calls"]["critic"], ref["calls"]["critic"]
        sizes = _sizes(calls)
        if sizes != _sizes(expected) or len(calls) != len(expected):
            seen_as = ", ".join(f"{n} ({'train' if t else 'eval'})" for n, t in sizes)
            raise CheckFailure(f"the critic's normalization layers saw batches of {seen_as}, {len(calls)} calls for "
                               f"{len(expected)} layers; CrossQ needs ONE training-mode pass of 2B = {2 * b}: "
                               "critic(cat([s, s']), cat([a, a']))")
        _same_state("the critic", got["after"]["critic"]["state"], ref["after"]["critic"]["state"])
        return f"{len(expected)} layers, one pass of {2 * b} each"

    if not hidden:
        works = "the loss works: value and gradient w.r.t. the critic as the reference's, BN critic, B = 8, one terminal"
        report.run(works, 1.5, lambda: case("bn", norm="bn", b=8, terminal=[3], gamma=0.99, alpha=0.1, tol=WORKS),
                   essential=True)
        report.run("exact to 1e-9 (float64)", 0.5, lambda: case("exact", norm="bn", b=8, terminal=[0, 5], gamma=0.99,
                                                                alpha=0.1))
        report.run("one joint training-mode forward pass of 2B; running statistics updated once", 0.5,
                   lambda: joint("bn"), requires=works)

        def policy_eval():
            case("policy", norm="bn", b=6, terminal=[], gamma=0.99, alpha=0.1, policy_norm="bn", tol=1e300)
            _policy_in_eval(seen, "policy")
        report.run("a' sampled in eval mode and without gradient (a BN policy: statistics and modes unchanged)", 0.5,
                   policy_eval, requires=works)
        return report.finish()

    works = "the loss works: Batch Renorm critic, B = 12, three terminal transitions, gamma 0.97, alpha 0.2"
    report.run(works, 1.5, lambda: case("brn", norm="brn", b=12, terminal=[1, 4, 9], gamma=0.97, alpha=0.2, tol=WORKS),
               essential=True)
    report.run("BN critic, gamma 0.9, alpha 0: exact to 1e-9", 0.5,
               lambda: case("bn", norm="bn", b=10, terminal=[2], gamma=0.9, alpha=0.0))
    report.run("every transition terminal: the target is the reward alone", 0.5,
               lambda: case("done", norm="bn", b=6, terminal=range(6), gamma=0.99, alpha=0.3))
    report.run("Batch Renorm critic: one joint pass of 2B, statistics updated once", 0.5, lambda: joint("brn"),
               requires=works)

    def policy_eval():
        case("policy", norm="brn", b=7, terminal=[6], gamma=0.95, alpha=0.2, policy_norm="bn", tol=1e300)
        _policy_in_eval(seen, "policy")
    report.run("a' sampled in eval mode and without gradient (BN policy)", 0.5, policy_eval, requires=works)

    def critic_modes():
        got, _, _ = _seen(seen, "brn")
        if got["after"]["critic"]["modes"] != got["before"]["critic"]["modes"]:
            raise CheckFailure("the critic's train/eval modes changed: it must stay in training mode")
    report.run("the critic stays in training mode", 0.5, critic_modes, requires=works)
    return report.finish()


# ----------------------------------------------------------------------------- critic_loss_with_target
@one_torch_thread
def check_critic_loss_with_target(critic_loss_with_target, points: float = 2.0, hidden: bool = False,
                                  seed: int = 0) -> float:
    """Grade the learner's SAC critic loss with a target network (BN and plain critics)."""
    report = Report("critic_loss_with_target" + (" (hidden tests)" if hidden else ""), points)
    if (z := _guard(report, critic_loss_with_target)) is not None:
        return z
    gen = torch.Generator().manual_seed(seed)
    seen = {}

    def case(key, norm="bn", **kw):
        return _loss_case(gen, seen, key, critic_loss_with_target, reference_with_target, TARGET_HINTS, norm=norm,
                          target_norm=norm or "none", **kw)

    def target_untouched(key):
        got, _, _ = _seen(seen, key)
        if got["got_grad"].get("target"):
            raise CheckFailure("the target critic's parameters received a gradient: compute the target under "
                               "torch.no_grad() (only the critic learns from this loss)")
        if any(c["training"] for c in got["calls"]["target"]):
            raise CheckFailure("the target critic ran in training mode")
        _untouched("the target critic", got["before"]["target"], got["after"]["target"])

    def critic_once(key):
        got, ref, inputs = _seen(seen, key)
        b = len(inputs["batch"]["obs"])
        calls = got["calls"]["critic"]
        if _sizes(calls) != _sizes(ref["calls"]["critic"]) or len(calls) != len(ref["calls"]["critic"]):
            raise CheckFailure(f"the critic's normalization layers saw {sorted({c['batch'] for c in calls})} in "
                               f"{len(calls)} calls; expected one training-mode pass of (s, a), B = {b}")
        _same_state("the critic", got["after"]["critic"]["state"], ref["after"]["critic"]["state"])

    if not hidden:
        works = "the loss works: value and gradient as the reference's, BN critic and target critic, B = 8"
        report.run(works, 1, lambda: case("bn", b=8, terminal=[2], gamma=0.99, alpha=0.1, tol=WORKS), essential=True)
        report.run("exact to 1e-9 (float64)", 0.5, lambda: case("exact", b=8, terminal=[0, 7], gamma=0.99, alpha=0.1))
        report.run("the target critic in eval mode, without gradient, its statistics and modes untouched", 0.5,
                   lambda: target_untouched("bn"), requires=works)
        return report.finish()

    works = "the loss works: BN critics, B = 12, two terminal transitions, gamma 0.97, alpha 0.2"
    report.run(works, 1.5, lambda: case("bn", b=12, terminal=[3, 8], gamma=0.97, alpha=0.2, tol=WORKS), essential=True)
    report.run("critics without normalization (plain SAC): exact to 1e-9", 0.5,
               lambda: case("plain", norm=None, b=9, terminal=[4], gamma=0.9, alpha=0.05))
    report.run("every transition terminal: the target is the reward alone", 0.5,
               lambda: case("done", b=5, terminal=range(5), gamma=0.99, alpha=0.3))
    report.run("the target critic untouched: eval mode, no gradient, statistics and modes as before", 0.5,
               lambda: target_untouched("bn"), requires=works)
    report.run("the critic: one training-mode pass of (s, a), statistics updated once", 0.5,
               lambda: critic_once("bn"), requires=works)

    def policy_eval():
        case("policy", b=7, terminal=[], gamma=0.95, alpha=0.2, policy_norm="bn", tol=1e300)
        _policy_in_eval(seen, "policy")
    report.run("a' sampled in eval mode and without gradient (BN policy)", 0.5, policy_eval, requires=works)
    return report.finish()
