"""Known-buggy implementations for Module 06 (Case study: reinforcement learning), as edits of the
solution cells."""
from . import Bug

ASSIGNMENT = "06_case_study_rl"
ACT, CROSSQ, TARGET = "select_action", "crossq_critic_loss", "critic_loss_with_target"
_NO_RESTORE = ("    finally:\n        for m, mode in modes:\n            m.training = mode\n",
               "    finally:\n        pass\n")

BUGS = [
    # ---- acting
    Bug("acting_in_train_mode", ACT, (("    policy.eval()\n", ""),),
        "acts in training mode under torch.no_grad() (no_grad does not switch BN to eval mode)"),
    Bug("mode_not_restored", ACT, (_NO_RESTORE,), "the policy is left in eval mode after acting", breaks=False),
    Bug("restores_train_unconditionally", ACT, (
        ("        for m, mode in modes:\n            m.training = mode\n", "        policy.train()\n"),),
        "policy.train() after acting, whatever the modes were before", breaks=False),
    Bug("ignores_deterministic", ACT, (("deterministic=deterministic)", "deterministic=False)"),),
        "always samples: deterministic=True is ignored", breaks=False),
    Bug("records_autograd_graph", ACT, (("        with torch.no_grad():\n            x = torch.as_tensor",
                                         "        if True:\n            x = torch.as_tensor"),
                                        ("    action = action.numpy()", "    action = action.detach().numpy()")),
        "acts without torch.no_grad() (an autograd graph at every step)", breaks=False),
    # ---- CrossQ's loss
    Bug("two_forward_passes", CROSSQ, (
        ("    q = critic(torch.cat([obs, next_obs]), torch.cat([action, next_action]))\n"
         "    q_now, q_next = q[: len(obs)], q[len(obs):].detach()\n",
         "    q_now = critic(obs, action)\n    q_next = critic(next_obs, next_action).detach()\n"),),
        "(s, a) and (s', a') in two training-mode passes: each half normalized with its own statistics"),
    Bug("next_half_in_eval_mode", CROSSQ, (
        ("    q = critic(torch.cat([obs, next_obs]), torch.cat([action, next_action]))\n"
         "    q_now, q_next = q[: len(obs)], q[len(obs):].detach()\n",
         "    q_now = critic(obs, action)\n    critic.eval()\n    with torch.no_grad():\n"
         "        q_next = critic(next_obs, next_action)\n    critic.train()\n"),),
        "the next half in a separate eval-mode pass (the naive BN recipe, without a target network)"),
    Bug("target_not_detached", CROSSQ, (("q[len(obs):].detach()", "q[len(obs):]"),),
        "the target is not detached: gradient flows through Q(s', a')"),
    Bug("terminal_mask_ignored", CROSSQ, (('gamma * (1 - batch["done"]) * soft_value', "gamma * soft_value"),),
        "terminal transitions bootstrap"),
    Bug("entropy_sign_flipped", CROSSQ, (("- alpha * next_log_prob", "+ alpha * next_log_prob"),),
        "the entropy bonus with the wrong sign"),
    Bug("next_actions_from_buffer", CROSSQ, (("torch.cat([action, next_action])", "torch.cat([action, action])"),),
        "a' taken from the replay buffer instead of sampled from the current policy"),
    Bug("max_instead_of_min", CROSSQ, (("q_next.min(dim=1)", "q_next.max(dim=1)"),),
        "the maximum of the two Q estimates for the target (overestimation)"),
    Bug("policy_in_train_mode_for_next_actions", CROSSQ, (("    policy.eval()\n", ""),),
        "a' sampled with the policy in training mode (its BN statistics move)", breaks=False),
    # ---- SAC's loss with a target network
    Bug("target_critic_in_train_mode", TARGET, (("    target_critic.eval()\n", ""),),
        "the target critic in training mode (batch statistics of (s', a'), its running statistics moved)"),
    Bug("online_critic_for_target", TARGET, (('q_next = target_critic(batch["next_obs"]', 'q_next = critic(batch["next_obs"]'),),
        "the target from the critic being trained instead of the target critic"),
    Bug("terminal_mask_ignored_with_target", TARGET, (('gamma * (1 - batch["done"]) * soft_value', "gamma * soft_value"),),
        "terminal transitions bootstrap"),
    Bug("entropy_term_missing", TARGET, (("q_next.min(dim=1).values - alpha * next_log_prob", "q_next.min(dim=1).values"),),
        "the soft value without the entropy term"),
    Bug("gradient_into_target_critic", TARGET, (
        ('            q_next = target_critic(batch["next_obs"], next_action)\n',
         '        q_next = target_critic(batch["next_obs"], next_action)\n'),),
        "the target critic evaluated with autograd on: its parameters receive gradients", breaks=False),
]

CORRECT_VARIANTS = {
    # modes saved by name, inference_mode, NumPy in and out via from_numpy; split/mse_loss/torch.minimum in
    # the losses, the target built under no_grad instead of detach, the modes restored with train(mode)
    "by_name_and_split": {
        ACT: '''
def select_action(policy, obs, deterministic=False):
    was = {name: m.training for name, m in policy.named_modules()}
    policy.train(False)
    obs = np.asarray(obs, dtype=np.float32)
    with torch.inference_mode():
        out = policy(torch.from_numpy(obs.reshape(-1, obs.shape[-1])), deterministic)[0]
    for name, m in policy.named_modules():
        m.training = was[name]
    out = out.clone().numpy()
    return out.reshape(obs.shape[:-1] + out.shape[-1:])
''',
        CROSSQ: '''
def crossq_critic_loss(critic, policy, batch, gamma, alpha):
    b = batch["obs"].shape[0]
    was = {name: m.training for name, m in policy.named_modules()}
    policy.train(False)
    with torch.no_grad():
        a2, logp2 = policy(batch["next_obs"])
    for name, m in policy.named_modules():
        m.training = was[name]
    q_now, q_next = torch.split(critic(torch.cat([batch["obs"], batch["next_obs"]], 0),
                                       torch.cat([batch["action"], a2], 0)), b, dim=0)
    with torch.no_grad():
        v = torch.minimum(q_next[:, 0], q_next[:, 1]) - alpha * logp2
        y = batch["reward"] + (1.0 - batch["done"]) * gamma * v
    return torch.nn.functional.mse_loss(q_now, y.unsqueeze(1).expand_as(q_now))
''',
        TARGET: '''
def critic_loss_with_target(critic, target_critic, policy, batch, gamma, alpha):
    saved = [(m, m.training) for net in (policy, target_critic) for m in net.modules()]
    policy.train(False)
    target_critic.train(False)
    with torch.no_grad():
        a2, logp2 = policy(batch["next_obs"])
        q2 = target_critic(batch["next_obs"], a2)
        y = batch["reward"] + (1.0 - batch["done"]) * gamma * (torch.minimum(q2[:, 0], q2[:, 1]) - alpha * logp2)
    for m, t in saved:
        m.training = t
    q = critic(batch["obs"], batch["action"])
    return 0.5 * (torch.nn.functional.mse_loss(q[:, 0], y) + torch.nn.functional.mse_loss(q[:, 1], y))
''',
    },
}
