"""Module 06 (case study: reinforcement learning): the case-study helpers of cases/rl.py, grading policy,
do-nothing stubs, the kernel policy, the stored results and the module page, and (slow) the assignment
through nbgrader."""
import copy
import json

import numpy as np
import pytest
import torch
import torch.nn as nn

import bnlib
from autograder import course
from autograder.bank import grade_in_process, m06, solution_sources
from autograder.config import REPO
from cases import data, rl, rl_runs

ASSIGNMENT = m06.ASSIGNMENT
PAGE = REPO / "course" / "modules" / f"{ASSIGNMENT}.md"


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _nets(norm="bn", policy_norm="bn", seed=0, dtype=torch.float64):
    return rl._probe_nets(seed, norm, dtype, policy_norm)


# ----------------------------------------------------------------------------- cases.rl
@pytest.mark.parametrize("warmup", [0, 1000])
def test_batch_renorm_matches_bnlib(warmup):
    """cases.rl.BatchRenorm1d against bnlib's Batch Renormalization (keyword-only per-channel arrays): training
    output, running statistics, gradients through gamma * r; eval mode; r = 1, d = 0 during the warmup."""
    g = torch.Generator().manual_seed(0)
    layer = rl.BatchRenorm1d(5, momentum=0.1, eps=1e-3, r_max=1.5, d_max=0.5, warmup=warmup).double()
    with torch.no_grad():
        layer.running_mean.copy_(torch.randn(5, generator=g, dtype=torch.float64))
        layer.running_var.copy_(torch.rand(5, generator=g, dtype=torch.float64) + 0.5)
        layer.weight.copy_(torch.randn(5, generator=g, dtype=torch.float64))
        layer.bias.copy_(torch.randn(5, generator=g, dtype=torch.float64))
    x = (torch.randn(16, 5, generator=g, dtype=torch.float64) * 3 + 2).requires_grad_()
    rm, rv = layer.running_mean.numpy().copy(), layer.running_var.numpy().copy()
    w, b = layer.weight.detach().numpy().copy(), layer.bias.detach().numpy().copy()
    y = layer(x)
    dy = torch.randn(16, 5, generator=g, dtype=torch.float64)
    y.backward(dy)
    kw = dict(weight=w, bias=b, running_mean=rm, running_var=rv, training=True, momentum=0.1, eps=1e-3)
    if warmup:
        ref, saved = bnlib.batch_norm_forward(x.detach().numpy(), **kw)
        dx, dw, db = bnlib.batch_norm_backward(dy.numpy(), saved)
    else:
        ref, saved = bnlib.batch_renorm_forward(x.detach().numpy(), r_max=1.5, d_max=0.5, **kw)
        dx, dw, db = bnlib.batch_renorm_backward(dy.numpy(), saved)
    np.testing.assert_allclose(y.detach().numpy(), ref, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(layer.running_mean.numpy(), rm, rtol=1e-12)
    np.testing.assert_allclose(layer.running_var.numpy(), rv, rtol=1e-12)
    np.testing.assert_allclose(x.grad.numpy(), dx, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(layer.weight.grad.numpy(), dw, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(layer.bias.grad.numpy(), db, rtol=1e-8, atol=1e-10)
    layer.eval()
    ref_eval, _ = bnlib.batch_norm_forward(x.detach().numpy(), **{**kw, "training": False})
    np.testing.assert_allclose(layer(x).detach().numpy(), ref_eval, rtol=1e-10, atol=1e-12)


def test_policy_log_prob_is_the_squashed_gaussian_density():
    torch.manual_seed(0)
    policy = rl.GaussianPolicy(3, 2, (8,), None, generator=torch.Generator().manual_seed(1)).double()
    obs = torch.randn(64, 3, dtype=torch.float64)
    action, log_prob = policy(obs)
    mean, log_std = policy.head(policy.body(obs)).chunk(2, dim=-1)
    dist = torch.distributions.TransformedDistribution(
        torch.distributions.Independent(torch.distributions.Normal(mean, log_std.clamp(-5, 2).exp()), 1),
        [torch.distributions.TanhTransform()])
    np.testing.assert_allclose(log_prob.detach().numpy(), dist.log_prob(action).detach().numpy(), rtol=1e-6, atol=1e-6)
    det, _ = policy(obs, deterministic=True)
    assert torch.equal(det, torch.tanh(mean)) and action.abs().max() <= 1


def test_select_action_acts_in_eval_mode_and_restores_modes():
    policy, _, _ = _nets(dtype=torch.float32)
    rl.norm_layers(policy)[1].eval()          # a frozen layer inside a training policy
    modes, before = [m.training for m in policy.modules()], rl.statistics(policy)
    one = rl.select_action(policy, np.zeros(3, np.float32))
    many = rl.select_action(policy, np.zeros((4, 3), np.float32), deterministic=True)
    assert one.shape == (2,) and many.shape == (4, 2) and type(one) is np.ndarray
    assert np.allclose(many, many[0])          # eval mode: an observation's action ignores its neighbours
    assert [m.training for m in policy.modules()] == modes
    assert all(torch.equal(a, c) and torch.equal(b, d) for (a, b), (c, d) in zip(before, rl.statistics(policy)))


def test_crossq_loss_makes_one_joint_pass_and_detaches_the_target():
    policy, critic, _ = _nets("brn")
    batch = rl._probe_batch(0, 6)
    seen = []
    hooks = [m.register_forward_pre_hook(lambda mod, inp: seen.append((mod.training, inp[0].shape[0])))
             for m in rl.norm_layers(critic)]
    before = [int(m.num_batches_tracked) for m in rl.norm_layers(critic)]
    loss = rl.crossq_critic_loss(critic, policy, batch, 0.99, 0.1)
    for h in hooks:
        h.remove()
    assert seen == [(True, 12)] * len(rl.norm_layers(critic))
    assert [int(m.num_batches_tracked) for m in rl.norm_layers(critic)] == [n + 1 for n in before]
    loss.backward()
    assert all(p.grad is None for p in policy.parameters())
    assert policy.training and critic.training


def test_target_loss_leaves_the_target_critic_alone():
    policy, critic, target = _nets("bn")
    state = copy.deepcopy(target.state_dict())
    loss = rl.critic_loss_with_target(critic, target, policy, rl._probe_batch(1), 0.99, 0.1)
    loss.backward()
    assert target.training and all(p.grad is None for p in target.parameters())
    assert all(torch.equal(v, target.state_dict()[k]) for k, v in state.items())


def test_soft_update_averages_parameters_and_statistics():
    _, critic, target = _nets("bn")
    t0 = copy.deepcopy(target)
    rl.soft_update(target, critic, 0.25)
    for a, b, c in zip(t0.state_dict().values(), critic.state_dict().values(), target.state_dict().values()):
        expected = b if not a.dtype.is_floating_point else 0.75 * a + 0.25 * b
        assert torch.allclose(c, expected)


def test_environments_are_registered_and_seeded():
    a, b = data.load("Pendulum-v1", seed=3), data.load("Pendulum-v1", seed=3)
    assert np.array_equal(a.reset(seed=3)[0], b.reset(seed=3)[0])
    assert data.load("CartPole-v1", seed=0).action_space.n == 2
    buf = rl.ReplayBuffer(3, 1, 5, seed=0)
    for i in range(7):
        buf.add(np.full(3, i), np.zeros(1), -1.0, np.full(3, i + 1), i == 6)
    s = buf.sample(4)
    assert buf.n == 5 and s["obs"].shape == (4, 3) and s["reward"].shape == (4,) and s["done"].dtype == torch.float32


def test_training_is_repeatable_and_checks_fall_back():
    config = rl.Config(steps=110, start_steps=100, batch_size=16, eval_every=110, eval_episodes=1,
                       actor_hidden=(8,), critic_hidden=(8,))
    runs = [rl.train_agent("CrossQ (Batch Renorm, no target network)", 3, config) for _ in range(2)]
    assert runs[0].eval_returns == runs[1].eval_returns and len(runs[0].eval_returns) == 1
    assert rl.train_agent("SAC + BN, target network (naive)", 3, config).eval_steps == [110]
    assert rl.checked_crossq(rl.crossq_critic_loss) is rl.crossq_critic_loss

    def no_mask(critic, policy, batch, gamma, alpha):
        return rl.crossq_critic_loss(critic, policy, {**batch, "done": 0 * batch["done"]}, gamma, alpha)
    assert rl.checked_crossq(no_mask) is rl.crossq_critic_loss
    assert rl.checked_select_action(None) is rl.select_action


def test_parallel_episodes_show_the_train_mode_drift():
    policy, _, _ = _nets(dtype=torch.float32)
    returns, drift = rl.parallel_episodes(policy.eval(), n_envs=3, mode="eval")
    assert returns.shape == (3,) and np.all(drift == 0) and len(drift) == 200
    _, drift = rl.parallel_episodes(policy, n_envs=3, mode="train")
    assert drift[-1] > 0


# ----------------------------------------------------------------------------- grading
STUBS = {
    "select_action": '''
def select_action(policy, obs, deterministic=False):
    return np.zeros(2, dtype=np.float32)
''',
    "crossq_critic_loss": '''
def crossq_critic_loss(critic, policy, batch, gamma, alpha):
    return (critic(batch["obs"], batch["action"]) * 0).sum()
''',
    "critic_loss_with_target": '''
def critic_loss_with_target(critic, target_critic, policy, batch, gamma, alpha):
    return (critic(batch["obs"], batch["action"]) * 0).sum()
''',
}


def test_do_nothing_stubs_score_zero():
    """Functions that do nothing (zero actions, a zero loss that is still connected to the critic) earn
    nothing: every property they share with a right answer requires the main behaviour."""
    result = grade_in_process(ASSIGNMENT, {**solution_sources(ASSIGNMENT), **STUBS})
    assert {k: v[0] for k, v in result.items()} == {k: 0.0 for k in result}, \
        {k: v[2] for k, v in result.items() if v[0] > 0}


def test_visible_tests_name_the_mistake(capsys):
    from autograder.checks.m06 import check_crossq_critic_loss, check_select_action

    def train_mode(policy, obs, deterministic=False):
        with torch.no_grad():
            x = torch.as_tensor(obs)
            return policy(x.unsqueeze(0) if x.dim() == 1 else x, deterministic=deterministic)[0].numpy()[0]
    assert check_select_action(train_mode, points=2) == 0
    assert "call policy.eval() first" in capsys.readouterr().out

    def two_passes(critic, policy, batch, gamma, alpha):
        policy.eval()
        with torch.no_grad():
            a2, logp = policy(batch["next_obs"])
        policy.train()
        q, q2 = critic(batch["obs"], batch["action"]), critic(batch["next_obs"], a2).detach()
        y = batch["reward"] + gamma * (1 - batch["done"]) * (q2.min(1).values - alpha * logp)
        return ((q - y[:, None]) ** 2).mean()
    assert check_crossq_critic_loss(two_passes, points=3) == 0
    out = capsys.readouterr().out
    assert "two forward passes" in out and "ONE training-mode pass of 2B" in out


def test_policy_keeps_torch_whole_and_denies_the_course():
    policy = course.policy(ASSIGNMENT)
    assert {"bnlib", "autograder", "nbgrader", "cases", "gymnasium"} <= set(policy.deny)
    assert "torch" not in policy.deny and policy.torch_normalization and "torch" in policy.preload


# ----------------------------------------------------------------------------- stored results and the page
def test_stored_runs_cover_every_agent_with_five_seeds():
    stored = rl_runs.load()
    assert len(stored["seeds"]) >= 5 and stored["command"] == "python -m cases.rl_runs"
    assert {"cpu", "seconds", "torch", "gymnasium", "date"} <= set(stored["machine"])
    for name in rl.VARIANTS:
        runs = [r for r in stored["runs"] if r["variant"] == name]
        assert sorted(r["seed"] for r in runs) == sorted(stored["seeds"]), name
        assert all(len(r["eval_returns"]) == stored["config"]["steps"] // stored["config"]["eval_every"] for r in runs)


def test_page_quotes_what_the_notebook_measured():
    """The page's results block is the rendering of the results file that `python -m cases.report` wrote by
    running the solution notebook (live numbers, and the stored ones it read): generated, never typed."""
    from cases import report
    results = json.loads(PAGE.with_suffix(".results.json").read_text())
    assert report.render(results) in PAGE.read_text()
    assert results["run"]["seconds"] < 360, "the notebook must run top to bottom in under 6 minutes"
    experiments = {r["experiment"] for r in results["rows"]}
    assert {"Pendulum, live (2 seeds, 3,000 steps)", "Pendulum, stored (5 seeds, 6,000 steps)",
            "acting in training mode (live, 8 environments)"} <= experiments
    source = (REPO / "solutions" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb").read_text()
    for row in results["rows"]:
        assert json.dumps(row["experiment"])[1:-1] in source, row["experiment"]


@pytest.mark.slow
def test_module06_through_nbgrader(tmp_path):
    """Every Module 06 bug loses points in-process (tests/test_bank.py) and here, through the nbgrader
    pipeline (sandboxed kernel, trusted checks), packed one per graded function in each submission, with the
    points course/grading.md gives it; the reference and a correct variant get full marks, the release
    notebook 0."""
    from test_grading_e2e import auto_total, bugs_off_policy, grade_packed   # tests/ is on sys.path
    table, packs = grade_packed(tmp_path, ASSIGNMENT, m06)
    top = auto_total(table["reference"])
    assert top == 18.0
    for name in m06.CORRECT_VARIANTS:
        assert auto_total(table[f"variant_{name}"]) == top, name
    assert table["blank"]["total"] == 0.0
    assert sum(map(len, packs)) == len(m06.BUGS)
    assert not bugs_off_policy(table, packs)
