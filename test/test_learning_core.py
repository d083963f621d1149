"""Unit tests of the learning core's components (torch only, no environment unless stated)."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from uni_o4_ros.learning.behavior_cloning import ensemble_bc_loss, eq6_disagreement, kl_disagreement
from uni_o4_ros.learning.config import UniO4Config, apply_overrides, config_hash, load_config
from uni_o4_ros.learning.dynamics import GaussianEnsembleModel, train_dynamics
from uni_o4_ros.learning.networks import EnsembleLinear, EnsembleMLP, clip_grad_norm_per_member
from uni_o4_ros.learning.policy import make_policy
from uni_o4_ros.learning.ppo import clipped_surrogate, compute_gae
from uni_o4_ros.learning.termination import make_robot_rule, rule_for_env
from uni_o4_ros.learning.value import IQLCritic, expectile_loss


def test_batched_ensemble_equals_loop_over_members():
    torch.manual_seed(0)
    mlp = EnsembleMLP(4, 5, 3, (16, 16))
    x = torch.randn(7, 5)
    batched = mlp(x)
    layers = [m for m in mlp.net if isinstance(m, EnsembleLinear)]
    for i in range(4):
        h = x
        for j, layer in enumerate(layers):
            h = h @ layer.weight[i] + layer.bias[i]
            if j < len(layers) - 1:
                h = torch.relu(h)
        torch.testing.assert_close(batched[i], h)


def test_members_start_different_and_train_independently():
    torch.manual_seed(0)
    pol = make_policy(3, 2, n=4, hidden=(8,))
    w = pol.body.net[0].weight
    assert not torch.allclose(w[0], w[1])
    # A loss on member 0 only must not move the gradient of member 1, even after clipping.
    obs = torch.randn(16, 3)
    loss = pol.log_prob(obs, torch.zeros(16, 2))[0].sum() * 1e6
    loss.backward()
    norms = clip_grad_norm_per_member(pol, 0.5)
    assert norms[0] > 0.5 and torch.all(norms[1:] == 0)
    sq = sum(p.grad[0].pow(2).sum() for p in pol.parameters())
    assert float(sq.sqrt()) == pytest.approx(0.5, rel=1e-3)


def test_eq6_term_changes_gradients_unlike_the_detached_version():
    """The authors detach max_j pi_j, which makes the term alpha * log pi_i: a rescaled BC loss."""
    torch.manual_seed(1)
    pol = make_policy(2, 1, n=3, hidden=(16,))
    obs, act = torch.randn(64, 2), torch.randn(64, 1) * 0.5
    alpha = 0.1

    def grads(loss):
        pol.zero_grad()
        loss.backward()
        return torch.cat([p.grad.flatten() for p in pol.parameters()])

    ours = grads(ensemble_bc_loss(pol, obs, act, alpha)[0])
    lp = pol.log_prob(obs, act)
    detached = -(lp.mean(1) + alpha * (lp - lp.max(0, keepdim=True).values.detach()).mean(1)).sum()
    g_detached = grads(detached)
    g_bc = grads(-(1 + alpha) * pol.log_prob(obs, act).mean(1).sum())
    torch.testing.assert_close(g_detached, g_bc)  # the authors' term is a no-op rescaling
    assert (ours - g_bc).norm() > 1e-3 * g_bc.norm()  # ours is not


def test_eq6_disagreement_is_zero_for_the_best_member_and_negative_otherwise():
    lp = torch.tensor([[-1.0, -3.0], [-2.0, -0.5]])
    d = eq6_disagreement(lp)
    torch.testing.assert_close(d, torch.tensor([[0.0, -2.5], [-1.0, 0.0]]))


def test_kl_disagreement_zero_for_identical_members_and_log_n_for_disjoint():
    pol = make_policy(1, 1, n=2, hidden=(4,), mean_activation="none")
    last = pol.body.net[-1]
    with torch.no_grad():
        for p in pol.parameters():
            p.zero_()
        last.bias[:, 0, 1] = -3.0  # pre-tanh log-std -> small std
    obs = torch.zeros(256, 1)
    torch.manual_seed(0)
    same = kl_disagreement(pol, obs, n_samples=8).mean()
    assert float(same.detach().abs()) < 1e-4
    with torch.no_grad():
        last.bias[0, 0, 0], last.bias[1, 0, 0] = -3.0, 3.0  # means far apart
    apart = kl_disagreement(pol, obs, n_samples=8).mean().detach()
    assert float(apart) == pytest.approx(np.log(2), abs=0.02)


def test_kl_disagreement_of_eq25_pushes_members_apart_through_its_gradient():
    """Eq. 25's term must move the members, as Eq. 6's must: differentiated through max_j pi_j and Z, its gradient
    on two overlapping members' means points them apart (ascending it, as the BC loss does). Detached there, it is
    each member's log-density at its own reparameterised sample, which no mean moves: a gradient of 0."""
    pol = make_policy(1, 1, n=2, hidden=(4,), mean_activation="none")
    last = pol.body.net[-1]
    with torch.no_grad():
        for p in pol.parameters():
            p.zero_()
        last.bias[:, 0, 1] = 0.5  # std ~0.26
        last.bias[0, 0, 0], last.bias[1, 0, 0] = -0.1, 0.1  # means 0.2 apart: overlapping
    for seed in range(3):
        pol.zero_grad()
        torch.manual_seed(seed)
        kl_disagreement(pol, torch.zeros(64, 1), n_samples=16).mean().backward()
        toward_first, toward_second = (float(g) for g in last.bias.grad[:, 0, 0])
        assert toward_first < -0.1 and toward_second > 0.1, (seed, toward_first, toward_second)


def _bimodal(n=4096, seed=0):
    g = torch.Generator().manual_seed(seed)
    s = torch.rand(n, 2, generator=g) * 2 - 1
    first = torch.rand(n, generator=g) < 0.7  # a dominant and a subdominant mode (Fig. 11)
    a = torch.where(first, 0.6, -0.6) + 0.05 * torch.randn(n, generator=g)
    return s, a[:, None]


def _fit(alpha, form, steps=2500, seed=0):
    torch.manual_seed(seed)
    s, a = _bimodal()
    pol = make_policy(2, 1, n=4, hidden=(64, 64))
    opt = torch.optim.Adam(pol.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        i = torch.randint(len(s), (256,), generator=g)
        loss, _ = ensemble_bc_loss(pol, s[i], a[i], alpha, form)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        mean, _ = pol(torch.zeros(1, 2))
    return mean.flatten()


def test_bimodal_without_disagreement_every_member_collapses_to_the_mean():
    means = _fit(0.0, "eq6")
    data_mean = 0.7 * 0.6 - 0.3 * 0.6
    assert torch.all((means - data_mean).abs() < 0.1), means
    assert not torch.any((means.abs() - 0.6).abs() < 0.15), means  # no member sits on a mode


def test_bimodal_envelope_disagreement_covers_both_modes():
    means = _fit(1.0, "envelope")
    assert torch.any((means - 0.6).abs() < 0.1), means
    assert torch.any((means + 0.6).abs() < 0.1), means


def test_expectile_loss_weights_positive_and_negative_errors():
    u = torch.tensor([-2.0, 2.0])
    torch.testing.assert_close(expectile_loss(u, 0.7), torch.tensor([0.3 * 4, 0.7 * 4]))


def test_the_target_q_follows_q_by_polyak_averaging_every_target_every_steps():
    """IQL's target network (Table 5's tau 0.005, every 2 steps): after an update that is not the 2nd it is
    unchanged; after the 2nd it moved tau of the way to Q, no more and not the other way."""
    torch.manual_seed(0)
    critic = IQLCritic(3, 2, (16,), (16,), 0.7, 0.99, 0.005, 3e-4, 2)
    batch = (torch.randn(32, 3), torch.randn(32, 2), torch.randn(32), torch.randn(32, 3), torch.zeros(32))
    before = [t.detach().clone() for t in critic.q_target.parameters()]
    critic.update(*batch)
    assert all(torch.equal(t, b) for t, b in zip(critic.q_target.parameters(), before))  # not on the 1st step
    critic.update(*batch)
    for t, q, b in zip(critic.q_target.parameters(), critic.q.parameters(), before):
        torch.testing.assert_close(t, b + 0.005 * (q.detach() - b))
    assert any(not torch.equal(t, b) for t, b in zip(critic.q_target.parameters(), before))


def test_the_clipped_surrogate_takes_the_pessimistic_bound_and_stops_the_gradient_past_the_clip():
    """The one objective of both phases (clip 0.1, Table 5's online): past 1 + clip with a positive advantage, or
    under 1 - clip with a negative one, the ratio gets no gradient; on the unfavoured side it keeps its own."""
    ratio = torch.tensor([0.5, 0.95, 1.05, 1.5, 0.5, 1.5], requires_grad=True)
    adv = torch.tensor([1.0, 1.0, 1.0, 1.0, -1.0, -1.0])
    s = clipped_surrogate(ratio, adv, 0.1)
    torch.testing.assert_close(s.detach(), torch.tensor([0.5, 0.95, 1.05, 1.1, -0.9, -1.5]))
    s.sum().backward()
    torch.testing.assert_close(ratio.grad, torch.tensor([1.0, 1.0, 1.0, 0.0, 0.0, -1.0]))


def test_iql_recovers_discounted_values_of_a_chain():
    """Chain 0 -> 1 -> ... -> 4 (terminal), reward 1 per step: V(s) = sum_{k < 5-s} gamma^k."""
    torch.manual_seed(0)
    states = torch.eye(5)
    obs = states.repeat(200, 1)
    idx = obs.argmax(1)
    nxt = states[(idx + 1).clamp(max=4)]
    term = (idx == 4).float()
    critic = IQLCritic(5, 1, (64, 64), (64, 64), expectile=0.7, gamma=0.9, tau=0.05, lr=3e-3)
    act = torch.zeros(len(obs), 1)
    rew = torch.ones(len(obs))
    for _ in range(1500):
        critic.update(obs, act, rew, nxt, term)
    v = critic.v(states).detach()
    truth = torch.tensor([sum(0.9**k for k in range(5 - s)) for s in range(5)])
    torch.testing.assert_close(v, truth, atol=0.08, rtol=0.0)
    adv = critic.advantage(states, torch.zeros(5, 1))
    assert adv.abs().max() < 0.1  # a single action: Q == V


def test_q_layer_norm_bounds_q_off_the_data_and_still_fits_it():
    # value.q_layer_norm: Q of actions far outside the data stays within what the last layer can
    # reach from unit-variance features, where a plain ReLU Q grows with the action; on the data
    # both fit the same one-step values.
    torch.manual_seed(0)
    obs = torch.randn(512, 3)
    act = torch.rand(512, 1) * 2 - 1
    rew = act[:, 0] - act[:, 0].pow(2)  # best action 0.5
    far = torch.full((512, 1), 1000.0)
    fitted = {}
    for ln in (False, True):
        critic = IQLCritic(3, 1, (64, 64), (64, 64), 0.5, 0.0, 0.05, 3e-3, q_layer_norm=ln)
        for _ in range(1500):
            critic.update(obs, act, rew, obs, torch.ones(512))
        q = critic.q(obs, act).detach()
        fitted[ln] = float((q - rew).abs().mean())
        q_far = critic.q(obs, far).detach()
        last = critic.q.net.net[-1]
        bound = last.weight.detach().norm(dim=(1, 2)) * 64**0.5 + last.bias.detach().abs().view(2)
        if ln:
            assert bool((q_far.abs() <= bound.view(2, 1) + 1e-4).all())
        else:
            assert float(q_far.abs().max()) > 10 * float(bound.max())
    assert fitted[True] < 0.05 and fitted[False] < 0.05


def test_iql_bootstraps_through_non_terminal_transitions():
    torch.manual_seed(0)
    obs = torch.tensor([[1.0, 0.0]]).repeat(64, 1)
    nxt = torch.tensor([[0.0, 1.0]]).repeat(64, 1)
    critic = IQLCritic(2, 1, (32,), (32,), 0.5, 0.9, 0.05, 3e-3)
    act = torch.zeros(64, 1)
    # state b loops to itself with reward 1 and never terminates: V(b) = 10
    for _ in range(3000):
        critic.update(torch.cat([obs, nxt]), torch.cat([act, act]), torch.ones(128),
                      torch.cat([nxt, nxt]), torch.zeros(128))
    assert float(critic.v(nxt[:1]).detach()) == pytest.approx(10.0, rel=0.1)


def test_dynamics_ensemble_learns_a_linear_system_with_early_stopping_and_elites():
    rng = np.random.default_rng(0)
    obs = rng.normal(size=(3000, 3)).astype(np.float32)
    act = rng.uniform(-1, 1, size=(3000, 2)).astype(np.float32)
    a_mat = np.array([[0.9, 0.1, 0], [0, 0.8, 0.2], [0.1, 0, 0.95]], np.float32)
    b_mat = np.array([[0.5, 0], [0, 0.3], [0.2, 0.2]], np.float32)
    nxt = obs @ a_mat.T + act @ b_mat.T
    rew = obs.sum(1) - (act**2).sum(1)
    torch.manual_seed(0)
    model = GaussianEnsembleModel(7, 3, 2, (64, 64), n_elites=5)
    stats = train_dynamics(model, obs, act, rew.astype(np.float32), nxt, n_elites=5, lr=1e-3, batch_size=256,
                           weight_decay=(1e-5,), holdout_ratio=0.2, max_holdout=1000, patience=5,
                           max_epochs=400, max_steps=100_000, rng=rng)
    assert stats["holdout_mse"] < 0.01
    assert stats["epochs"] < 400  # stopped on the holdout, not on the cap
    assert len(set(model.elites.tolist())) == 5
    s2, r = model.step(torch.as_tensor(obs[:5]), torch.as_tensor(act[:5]), deterministic=True)
    np.testing.assert_allclose(s2.numpy(), nxt[:5], atol=0.15)
    np.testing.assert_allclose(r.numpy(), rew[:5], atol=0.3)


def test_dynamics_trains_its_whole_budget_unless_a_patience_is_set():
    rng = np.random.default_rng(0)
    obs = rng.normal(size=(1300, 3)).astype(np.float32)
    act = rng.uniform(-1, 1, size=(1300, 2)).astype(np.float32)
    nxt, rew = obs + 0.1 * act.sum(1, keepdims=True), obs.sum(1)
    steps_per_epoch = 5  # 1300 - 260 holdout = 1040 training rows: 4 batches of 256 and one of 16

    def fit(patience: int | None) -> dict[str, float]:
        torch.manual_seed(0)
        model = GaussianEnsembleModel(7, 3, 2, (32, 32), n_elites=5)
        # lr 0: the holdout loss never improves after the first epoch, as on a plateau or a transient
        return train_dynamics(model, obs, act, rew, nxt, n_elites=5, lr=0.0, batch_size=256, weight_decay=(1e-5,),
                              holdout_ratio=0.2, max_holdout=1000, patience=patience, max_epochs=1000,
                              max_steps=100, rng=np.random.default_rng(1))

    assert fit(None)["steps"] == 100  # the paper's rule: the whole step budget
    assert fit(2)["steps"] == 3 * steps_per_epoch  # the authors': 1 epoch sets the best, 2 of patience


def test_termination_rules():
    hop = rule_for_env("Hopper-v5")
    ok = torch.tensor([1.2, 0.05] + [0.0] * 9)
    fallen = torch.tensor([0.6, 0.05] + [0.0] * 9)
    tilted = torch.tensor([1.2, 0.3] + [0.0] * 9)
    assert hop(torch.stack([ok, fallen, tilted])).tolist() == [False, True, True]
    walker = rule_for_env("walker2d-medium-v2")
    assert walker(torch.tensor([[1.2, 0.5] + [0.0] * 15, [2.5, 0.0] + [0.0] * 15])).tolist() == [False, True]
    assert rule_for_env("halfcheetah")(torch.tensor([[0.0] * 17, [float("nan")] * 17])).tolist() == [False, True]
    robot = make_robot_rule(frame_dim=3, max_tilt=1.0)
    upright = torch.tensor([0.0, 0.0, -1.0])
    roll = 1.2  # g_b = (0, -sin(roll), -cos(roll)) for a pure roll
    rolled = torch.tensor([0.0, -np.sin(roll), -np.cos(roll)], dtype=torch.float32)
    pitched = torch.tensor([np.sin(0.5), 0.0, -np.cos(0.5)], dtype=torch.float32)
    assert robot(torch.stack([upright, rolled, pitched])).tolist() == [False, True, False]
    # a 290-value history: only the newest 58-value frame (the last one) decides
    hist = torch.zeros(2, 290)
    hist[:, 232:235] = torch.stack([upright, rolled])
    hist[0, 0:3] = rolled  # an old frame that fell does not count
    assert rule_for_env("go1")(hist).tolist() == [False, True]
    with pytest.raises(ValueError, match="no termination rule"):
        rule_for_env("antmaze")


def test_gae_matches_hand_computation_and_cuts_at_episode_ends():
    rewards = torch.tensor([[1.0], [1.0], [1.0]])
    values = torch.tensor([[0.5], [0.4], [0.3]])
    dones = torch.tensor([[False], [True], [False]])
    last = torch.tensor([0.2])
    adv, ret = compute_gae(rewards, values, dones, dones, last, gamma=0.9, lam=0.8)
    d2 = 1 + 0.9 * 0.2 - 0.3
    d1 = 1 - 0.4  # episode ended: no bootstrap
    d0 = 1 + 0.9 * 0.4 - 0.5
    expected = torch.tensor([[d0 + 0.9 * 0.8 * d1], [d1], [d2]])
    torch.testing.assert_close(adv, expected)
    torch.testing.assert_close(ret, expected + values)


def test_config_defaults_are_table5_and_overrides_are_typed(tmp_path):
    cfg = UniO4Config()
    assert cfg.value.q_hidden == (1024, 1024) and cfg.value.v_hidden == (256, 256, 256)
    assert cfg.dynamics.hidden == (200, 200, 200, 200) and cfg.ope.horizon == 1000
    assert cfg.improvement.clip == 0.25 and cfg.online.clip == 0.1 and cfg.online.gae_lambda == 0.95
    assert cfg.improvement.lr == 1e-4 and cfg.online.actor_lr == 3e-5 and cfg.value.expectile == 0.7
    y = tmp_path / "c.yaml"
    y.write_text("bc:\n  alpha: 0.0\nvalue:\n  q_hidden: [64, 64]\n")
    cfg = load_config(y, ["online.lr_decay=false", "ope.horizon=20"])
    assert cfg.bc.alpha == 0.0 and cfg.value.q_hidden == (64, 64)
    assert cfg.online.lr_decay is False and cfg.ope.horizon == 20
    with pytest.raises(ValueError, match="unknown config key"):
        load_config(None, ["bc.alpah=0.2"])
    with pytest.raises(ValueError, match="boolean"):
        load_config(None, ["online.lr_decay=maybe"])
    # an optional setting: off by default, a number when given, off again with null / none
    assert UniO4Config().online.target_kl is None
    assert load_config(None, ["online.target_kl=0.02"]).online.target_kl == 0.02
    assert load_config(None, ["online.target_kl=0.02", "online.target_kl=none"]).online.target_kl is None
    with pytest.raises(ValueError, match="target_kl: expected float"):
        load_config(None, ["online.target_kl=small"])
    # values that cannot mean anything stop at once, named by their full key, before any training
    for override, message in (("online.clip=-1", "online.clip: must be in (0, 1)"),
                              ("online.gamma=1.5", "online.gamma: must be in (0, 1]"),
                              ("value.expectile=1.0", "value.expectile: must be in (0, 1)"),
                              ("bc.lr=.nan", "bc.lr: must be >= 0"),
                              ("online.target_kl=0", "online.target_kl: must be > 0"),
                              ("policy.hidden=[256,0]", "policy.hidden: must be >= 1 for every entry"),
                              ("dynamics.n_elites=8", "dynamics.n_elites: cannot exceed n_members (7)"),
                              ("policy.log_std_min=0.5", "policy.log_std_min: must be below log_std_max"),
                              # a value that means less than was asked, or nothing, is not silently made one
                              ("bc.steps=1.5", "bc.steps: expected a whole number, got 1.5"),
                              ("bc.alpha=true", "bc.alpha: expected float, got True"),
                              ("value.q_hidden=[]", "value.q_hidden: expected a list such as [256, 256], got []"),
                              ("value.q_hidden=256", "value.q_hidden: expected a list such as [256, 256], got 256"),
                              ("value.q_hidden=[64,abc]", "value.q_hidden: expected a whole number, got 'abc'"),
                              ("bc=3", "bc: is a section of settings, not one value"),
                              ("seed=-1", "seed: must be in [0, 4294967295]"),
                              # a seed past 64 bits overflowed inside a stage, after the stages before it
                              ("seed=99999999999999999999999", "seed: must be in [0, 4294967295]"),
                              # a misspelt name was refused only by the stage that reads it, after the ones
                              # before it had trained
                              ("selection.rule=bogus", "selection.rule: must be one of am_q, closest_certified"),
                              ("bc.disagreement=eq7", "bc.disagreement: must be one of eq6, envelope, kl"),
                              ("policy.activation=relu6", "policy.activation: must be one of relu, tanh"),
                              ("policy.mean_activation=sigmoid", "policy.mean_activation: must be one of tanh"),
                              ("dynamics.termination=hoper", "dynamics.termination: must be one of auto"),
                              ("ope.q_head=max", "ope.q_head: must be one of min, independent"),
                              ("device=cuda", "device: only 'cpu' is supported"),
                              # every evaluation is a point of the online curve: none printed NaN returns
                              ("online.eval_episodes=0", "online.eval_episodes: must be >= 1")):
        with pytest.raises(ValueError, match=re.escape(message)):
            load_config(None, [override])
    y.write_text("1: a\nfoo: b\n")  # a number key beside a misspelt one: sorting them raised a TypeError
    with pytest.raises(ValueError, match=re.escape("unknown config key(s) for UniO4Config: ['1', 'foo']")):
        load_config(y)
    y.write_text("online: 5\n")  # a section given one value in a file, too
    with pytest.raises(ValueError, match="online: is a section of settings"):
        load_config(y)
    assert load_config(None, ["bc.steps=2e3", "dynamics.max_steps=300.0"]).bc.steps == 2000  # whole numbers
    # the edges that experiments use stay allowed: a frozen actor, an undiscounted horizon
    cfg = load_config(None, ["online.actor_lr=0", "ope.gamma=1.0", "bc.alpha=0"])
    assert cfg.online.actor_lr == 0.0 and cfg.ope.gamma == 1.0 and cfg.bc.alpha == 0.0
    with pytest.raises(ValueError, match=re.escape("ppo.clip: must be in (0, 1)")):  # any nested config
        from uni_o4_ros.sim.pretrain import PretrainConfig

        apply_overrides(PretrainConfig(), None, ["ppo.clip=2"])
    for override, message in (("env.command_vx=[1]", "env.command_vx: expected 2 values, got [1]"),
                              ("export_every=0", "export_every: must be >= 1"),
                              ("hidden=[512,0]", "hidden: must be >= 1 for every entry")):
        with pytest.raises(ValueError, match=re.escape(message)):
            apply_overrides(PretrainConfig(), None, [override])
    assert apply_overrides(PretrainConfig(), None, ["env.command_vx=[0.5,1.5]"]).env.command_vx == (0.5, 1.5)


def test_the_names_a_config_checks_are_the_ones_its_stages_take():
    """config.py checks names when a config is made; the stages hold the implementations. They must agree, or a
    valid name would be refused (or a wrong one pass to fail hours later)."""
    from uni_o4_ros.learning import config, networks, selection, termination

    assert set(config.ACTIVATIONS) == set(networks.ACTIVATIONS)
    assert set(config.TERMINATIONS) == set(termination.RULES) | {"auto"}
    assert set(config.SELECTION_RULES) == set(selection.RULES)
    for name in config.MEAN_ACTIVATIONS:  # each builds a policy, and BC takes every disagreement form
        make_policy(3, 2, hidden=(4,), mean_activation=name)
    policy, obs, act = make_policy(3, 2, hidden=(4,), n=2), torch.zeros(5, 3), torch.zeros(5, 2)
    for form in config.DISAGREEMENTS:
        assert torch.isfinite(ensemble_bc_loss(policy, obs, act, alpha=0.1, form=form)[0])


def test_config_hash_changes_with_any_setting():
    a, b = UniO4Config(), UniO4Config()
    assert config_hash(a.value, "data") == config_hash(b.value, "data")
    b.value.expectile = 0.5
    assert config_hash(a.value, "data") != config_hash(b.value, "data")
    assert config_hash(a.value, "data") != config_hash(a.value, "other-data")


def _robot_like_dataset(episodes: int = 20, length: int = 40, seed: int = 0):
    """Small positive rewards and a fall at every episode's end, like the field recordings.

    The first feature is the number of steps left; the inputs are ten times larger than
    normalised ones (a policy's normaliser from another terrain), so a fresh network's outputs
    sit far from the returns.
    """
    from uni_o4_ros.data import OfflineDataset

    rng = np.random.default_rng(seed)
    left = np.tile(np.arange(length, 0, -1), episodes).astype(np.float32)
    obs = np.concatenate([left[:, None] / length, rng.normal(size=(len(left), 3))], 1).astype(np.float32) * 10
    nxt = np.roll(obs, -1, 0)
    term = left == 1
    return OfflineDataset(observations=obs, actions=rng.uniform(-1, 1, (len(left), 2)).astype(np.float32),
                          rewards=np.full(len(left), 0.02, np.float32), terminals=term,
                          timeouts=np.zeros(len(left), bool), next_observations=nxt)


def test_value_warmup_starts_iql_at_the_behaviour_returns(tmp_path):
    """With a few hundred steps in all, V must already rank states by how soon the robot falls."""
    from uni_o4_ros.learning.offline import OfflineTrainer

    ds = _robot_like_dataset()
    returns = torch.as_tensor(ds.discounted_returns(0.99))
    cfg = load_config(None, ["value.q_hidden=[64,64]", "value.v_hidden=[64,64]", "value.batch_size=256",
                             "value.lr=1e-3", "value.mc_warmup_steps=300", "value.steps=100"])
    trainer = OfflineTrainer(cfg, ds, tmp_path / "warm", progress=False)
    critic, _ = trainer.train_value()
    v = critic.v(trainer.obs_n).detach()
    assert abs(float(v.mean() - returns.mean())) < 0.1 * float(returns.mean())
    first, last = v[ds.observations[:, 0] == 10.0].mean(), v[ds.terminals].mean()
    assert float(first - last) > 0.7 * float(returns.max() - 0.02)  # truth: ~0.33 vs 0.02
    rows = [r.split(",") for r in (trainer.run_dir / "scalars.csv").read_text().splitlines()[1:]]
    assert max(int(r[1]) for r in rows if r[2] == "mc_v_loss") == 300  # then IQL takes over
    assert min(int(r[1]) for r in rows if r[2] == "v_loss") > 300


def test_the_dynamics_model_leaves_out_falls_recorded_without_their_next_state(tmp_path):
    """The robot's recorder wrote every fall as s' = s (and still does for a fallen state the policy never
    answered): fitted, the model learns that a fall changes nothing, and AM-Q's rollouts never fall. Those
    rows are left out of the model's data (nothing else's); real terminals are kept."""
    from dataclasses import replace

    from uni_o4_ros.learning import checkpoint
    from uni_o4_ros.learning.offline import OfflineTrainer

    ds = _robot_like_dataset()
    unknown = np.flatnonzero(ds.terminals)[::2]
    stuck = ds.next_observations.copy()
    stuck[unknown] = ds.observations[unknown]
    overrides = ["dynamics.hidden=[16,16]", "dynamics.max_epochs=1", "dynamics.max_steps=5"]
    for name, data, fitted in (("real", ds, len(ds)),
                               ("stuck", replace(ds, next_observations=stuck), len(ds) - len(unknown))):
        trainer = OfflineTrainer(load_config(None, overrides), data, tmp_path / name, progress=False)
        _, key = trainer.train_dynamics()
        _, meta = checkpoint.load(trainer._stage_dir("dynamics", key), "stage")
        assert meta["transitions"] == fitted, name


def test_layer_normalised_q_reaches_the_returns_level_and_keeps_its_scale_in_the_cache(tmp_path):
    """value.q_layer_norm: with Hopper-sized rewards (3 per step) the pipeline's Q must reach the
    data's returns within a few hundred steps, which an unscaled layer-normalised Q cannot (its
    output is bounded by the last layer's weights), and a rerun that reuses the cached stage must
    score actions exactly as the trained one did."""
    from dataclasses import replace

    from uni_o4_ros.learning.offline import OfflineTrainer

    ds = _robot_like_dataset()
    ds = replace(ds, rewards=np.full(len(ds.rewards), 3.0, np.float32))
    returns = torch.as_tensor(ds.discounted_returns(0.99))
    overrides = ["value.q_hidden=[64,64]", "value.v_hidden=[64,64]", "value.batch_size=256", "value.lr=1e-3",
                 "value.mc_warmup_steps=300", "value.steps=100", "value.q_layer_norm=true"]
    trainer = OfflineTrainer(load_config(None, overrides), ds, tmp_path / "ln", progress=False)
    critic, _ = trainer.train_value()
    act = torch.as_tensor(ds.actions)
    q = critic.q.min_q(trainer.obs_n, act).detach()
    assert abs(float(q.mean() - returns.mean())) < 0.15 * float(returns.mean())

    again, _ = OfflineTrainer(load_config(None, overrides), ds, tmp_path / "ln", progress=False).train_value()
    torch.testing.assert_close(again.q.min_q(trainer.obs_n, act).detach(), q, rtol=0, atol=0)

    unscaled = IQLCritic(4, 2, (64, 64), (64, 64), 0.7, 0.99, 0.005, 1e-3, q_layer_norm=True, q_out_scale=1.0)
    for _ in range(300):
        i = torch.randint(0, len(returns), (256,))
        unscaled.warmup_update(trainer.obs_n[i], act[i], returns[i])
    assert float(unscaled.q.min_q(trainer.obs_n, act).detach().mean()) < 0.5 * float(returns.mean())


def test_scalar_log_keeps_every_whole_row_after_a_row_torn_by_a_killed_process(tmp_path):
    from uni_o4_ros.learning.scalars import ScalarLog, plot_log, read_log

    path = tmp_path / "scalars.csv"
    log = ScalarLog(path)
    log.log("bc", 1, {"loss": 1.0})
    log.close()
    with path.open("a") as fh:
        fh.write("bc,2,lo")  # the process died in the middle of this row
    log = ScalarLog(path)  # the resumed run appends
    log.log("bc", 3, {"loss": 0.5})
    log.close()
    assert read_log(path) == {("bc", "loss"): [(1, 1.0), (3, 0.5)]}
    log = ScalarLog(path)  # resumed from a checkpoint at step 1 after a crash: steps 2 and 3 logged again
    log.log("bc", 2, {"loss": 0.7})
    log.log("bc", 3, {"loss": 0.4})
    log.close()
    assert read_log(path) == {("bc", "loss"): [(1, 1.0), (2, 0.7), (3, 0.4)]}
    assert plot_log(path, tmp_path / "curves.png").stat().st_size > 0
    other = tmp_path / "other.csv"
    other.write_text("time,reward\n0,1\n")
    with pytest.raises(ValueError, match="not a scalars log"):
        read_log(other)


def test_jsonl_log_loses_only_the_row_a_killed_writer_tore(tmp_path):
    from uni_o4_ros.learning.jsonlines import append_jsonl, read_jsonl

    path = tmp_path / "timeline.jsonl"
    append_jsonl(path, {"version": 1})
    with path.open("a") as fh:
        fh.write('{"version": 2, "ti')  # killed mid-row
    assert read_jsonl(path) == [{"version": 1}]  # a finished run's reader is not broken by it
    append_jsonl(path, {"version": 3})  # the resumed writer starts a fresh line
    assert read_jsonl(path) == [{"version": 1}, {"version": 3}]
