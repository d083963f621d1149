"""AM-Q and multi-step improvement on a point mass whose true returns are known exactly.

The point mass: s' = s + 0.2 a, r = -|s'|_1, actions in [-1, 1]. Driving s to 0 is optimal.
Q, V and the dynamics ensemble are learned from a random-action dataset (real training, small
networks); the true return of any policy is computed by rolling out the true system.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from uni_o4_ros.learning.dynamics import GaussianEnsembleModel, train_dynamics
from uni_o4_ros.learning.improvement import MultiStepImprover
from uni_o4_ros.learning.networks import copy_member
from uni_o4_ros.learning.normalizer import StateNormalizer
from uni_o4_ros.learning.ope import am_q, am_q_per_start
from uni_o4_ros.learning.policy import make_policy
from uni_o4_ros.learning.termination import never
from uni_o4_ros.learning.value import IQLCritic

DIM = 2


def true_step(s: torch.Tensor, a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    nxt = s + 0.2 * a.clamp(-1, 1)
    return nxt, -nxt.abs().sum(-1)


@torch.no_grad()
def true_return(policy_fn, starts: torch.Tensor, horizon: int = 30) -> float:
    s, total = starts.clone(), torch.zeros(len(starts))
    for _ in range(horizon):
        s, r = true_step(s, policy_fn(s))
        total += r
    return float(total.mean())


class FixedPolicy(nn.Module):
    """A deterministic linear feedback a = clip(k s), shaped like a one-member ensemble."""

    def __init__(self, gain: float) -> None:
        super().__init__()
        self.n, self.gain = 1, gain

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean = (self.gain * obs).clamp(-1, 1)
        if mean.dim() == 2:
            mean = mean.unsqueeze(0)
        return mean, torch.full_like(mean, -2.0)

    def executed(self, act: torch.Tensor) -> torch.Tensor:
        return act  # already within [-1, 1]


@pytest.fixture(scope="module")
def learned():
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    s = torch.as_tensor(rng.uniform(-1.5, 1.5, size=(20_000, DIM)), dtype=torch.float32)
    a = torch.as_tensor(rng.uniform(-1, 1, size=(20_000, DIM)), dtype=torch.float32)
    nxt, r = true_step(s, a)
    norm = StateNormalizer.identity(DIM)
    critic = IQLCritic(DIM, DIM, (128, 128), (128, 128), expectile=0.7, gamma=0.9, tau=0.01, lr=1e-3)
    g = torch.Generator().manual_seed(0)
    for _ in range(3000):
        i = torch.randint(len(s), (256,), generator=g)
        critic.update(s[i], a[i], r[i], nxt[i], torch.zeros(256))
    model = GaussianEnsembleModel(7, DIM, DIM, (64, 64), n_elites=5)
    train_dynamics(model, s.numpy(), a.numpy(), r.numpy(), nxt.numpy(), n_elites=5, lr=1e-3, batch_size=256,
                   weight_decay=(1e-5,), holdout_ratio=0.1, max_holdout=1000, patience=5, max_epochs=40,
                   max_steps=20_000, rng=rng)
    return s, a, critic, model, norm


def test_am_q_ranks_a_clearly_better_policy_above_a_worse_one(learned):
    s, _, critic, model, norm = learned
    good, bad, idle = FixedPolicy(-5.0), FixedPolicy(+5.0), FixedPolicy(0.0)
    starts = s[:256]
    scores = am_q([good, bad, idle], critic.q, model, never, norm, starts, horizon=20)
    truth = [true_return(lambda x, p=p: p(x)[0][0], starts) for p in (good, bad, idle)]
    assert truth[0] > truth[2] > truth[1]  # the premise: the feedback signs matter
    assert scores[0] > scores[2] > scores[1], (scores, truth)


def test_am_q_scores_every_policy_on_the_same_model_draws(learned):
    # Selection compares policies, so rollout j of each must see the same start, model noise and
    # elite: two copies of one policy then tie exactly, and a near-copy differs only by its action.
    s, _, critic, model, norm = learned
    starts = s[:128]
    g = torch.Generator().manual_seed(3)
    scores = am_q([FixedPolicy(-2.0), FixedPolicy(-2.0), FixedPolicy(-2.0001)], critic.q, model, never, norm,
                  starts, horizon=10, generator=g)
    assert float(scores[0]) == float(scores[1])
    assert abs(float(scores[0] - scores[2])) < 1e-3
    other = am_q([FixedPolicy(-2.0)], critic.q, model, never, norm, starts, horizon=10,
                 generator=torch.Generator().manual_seed(4))
    assert float(other[0]) != float(scores[0])  # the draws are random, just shared


def test_identical_members_are_rolled_out_once_with_unchanged_scores(learned):
    # The final choice scores n copies of one starting policy and targets equal to their
    # behaviours; each copy must cost nothing and change no score.
    s, _, critic, model, norm = learned
    starts = s[:64]
    torch.manual_seed(1)
    start, improved = make_policy(DIM, DIM, n=3, hidden=(16,)), make_policy(DIM, DIM, n=3, hidden=(16,))
    for i in (1, 2):
        copy_member(start, i, start, 0)  # three copies of one policy, as when starting from one online policy
    copy_member(improved, 2, improved, 1)
    q_pairs = []
    real_min_q = critic.q.min_q

    def counting_min_q(obs, act):
        q_pairs.append(len(obs))
        return real_min_q(obs, act)

    critic.q.min_q = counting_min_q
    try:
        per_start = am_q_per_start([start, improved], critic.q, model, never, norm, starts, 5,
                                   generator=torch.Generator().manual_seed(7))
    finally:
        critic.q.min_q = real_min_q
    assert per_start.shape == (6, 64)
    assert sum(q_pairs) == 3 * 64 * 5  # 3 distinct policies of 6 members, 5 steps, no terminations
    for k, (ens, i) in enumerate([(start, 0), (start, 1), (start, 2), (improved, 0), (improved, 1), (improved, 2)]):
        alone = make_policy(DIM, DIM, n=1, hidden=(16,))
        copy_member(alone, 0, ens, i)
        expected = am_q_per_start([alone], critic.q, model, never, norm, starts, 5,
                                  generator=torch.Generator().manual_seed(7))
        torch.testing.assert_close(per_start[k], expected[0], rtol=1e-5, atol=1e-5)
    assert not torch.equal(per_start[3], per_start[4])  # distinct members keep distinct scores


def test_am_q_is_a_sum_over_the_horizon_and_stops_at_termination(learned):
    s, _, critic, model, norm = learned
    pol = FixedPolicy(-5.0)
    starts = s[:64]
    one = am_q([pol], critic.q, model, never, norm, starts, horizon=1)
    direct = critic.q.min_q(starts, pol(starts)[0][0]).mean()
    torch.testing.assert_close(one[0], direct)
    always_done = lambda x: torch.ones(x.shape[0], dtype=torch.bool)  # noqa: E731
    torch.testing.assert_close(am_q([pol], critic.q, model, always_done, norm, starts, horizon=10)[0], direct)
    longer = am_q([pol], critic.q, model, never, norm, starts, horizon=5)
    assert abs(float(longer[0])) > abs(float(one[0])) * 2  # several Q terms summed, not averaged
    # what a score is made of: live steps per rollout, and steps the model left the given state range
    trace: dict = {}
    am_q_per_start([pol], critic.q, model, never, norm, starts, 5, trace=trace)
    assert torch.equal(trace["live_steps"], torch.full((1, 64), 5.0)) and not trace["clamped_steps"].any()
    first_step_ends = lambda x: x[:, 0] > -1e9  # noqa: E731 - every model step terminates
    lo, hi = s.min(0).values, s.min(0).values + 1e-3  # a range the model's next states leave at once
    am_q_per_start([pol], critic.q, model, first_step_ends, norm, starts, 5, state_bounds=(lo, hi), trace=trace)
    assert torch.equal(trace["live_steps"], torch.ones(1, 64))
    assert torch.equal(trace["clamped_steps"], torch.ones(1, 64))


def test_multi_step_improvement_raises_am_q_and_true_return_without_env_returns(learned):
    s, a, critic, model, norm = learned
    torch.manual_seed(1)
    policy = make_policy(DIM, DIM, n=2, hidden=(64, 64))
    opt = torch.optim.Adam(policy.parameters(), lr=1e-3)
    for _ in range(300):  # behaviour cloning of the random-action data
        i = torch.randint(len(s), (256,))
        loss = -policy.log_prob(s[i], a[i]).mean(1).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()

    def returns(p):
        return [true_return(lambda x, j=j: p(x)[0][j], s[:256]) for j in range(p.n)]

    before = returns(policy)
    imp = MultiStepImprover(policy, critic, lr=1e-3, clip=0.25, total_steps=400, grad_clip=0.5)
    events = 0
    for step in range(400):
        imp.update(s[torch.randint(len(s), (512,))])
        if (step + 1) % 50 == 0:
            sc = am_q([imp.target, imp.behavior], critic.q, model, never, norm, s[:128], horizon=10)
            events += len(imp.replace(sc[:2], sc[2:]))
    after = returns(imp.behavior)
    assert events >= 2 and min(imp.state.iteration) >= 1  # the behaviour policies moved (k > 0)
    assert min(after) > max(before) + 1.0, (before, after)


def test_replacement_only_when_target_scores_higher():
    torch.manual_seed(0)
    pol = make_policy(2, 1, n=3, hidden=(8,))
    critic = IQLCritic(2, 1, (8,), (8,), 0.7, 0.99, 0.005, 1e-3)
    imp = MultiStepImprover(pol, critic, lr=1e-3, clip=0.25, total_steps=10, grad_clip=0.5)
    imp.update(torch.randn(32, 2))
    before = [p.clone() for p in imp.behavior.parameters()]
    events = imp.replace(torch.tensor([1.0, 0.0, 5.0]), torch.tensor([0.5, 0.0, 6.0]))
    assert [e.policy for e in events] == [0] and imp.state.iteration == [1, 0, 0]
    after = list(imp.behavior.parameters())
    for b, a_, t in zip(before, after, imp.target.parameters()):
        torch.testing.assert_close(a_[0], t[0])  # member 0 copied from its target
        torch.testing.assert_close(a_[1:], b[1:])  # the others untouched


def test_gaussian_kl_matches_torch_distributions():
    from uni_o4_ros.learning.selection import gaussian_kl

    g = torch.Generator().manual_seed(0)
    mp, mq, lp, lq = (torch.randn(5, 3, generator=g) for _ in range(4))
    ref = torch.distributions.kl_divergence(torch.distributions.Normal(mp, lp.exp()),
                                            torch.distributions.Normal(mq, lq.exp())).sum(-1)
    torch.testing.assert_close(gaussian_kl(mp, lp, mq, lq), ref)


def test_closest_certified_takes_the_smallest_sure_change_and_otherwise_keeps_the_start():
    from uni_o4_ros.learning.selection import choose

    g = torch.Generator().manual_seed(0)
    base = torch.randn(400, generator=g)
    # rows: start 0, start 1, then candidates from start 0 / 1 / 0
    per_start = torch.stack([
        base, base + 0.1,
        base + 0.5 + 0.1 * torch.randn(400, generator=g),  # sure gain, moved far
        base + 0.1 + 0.3 + 0.1 * torch.randn(400, generator=g),  # sure gain over its own start, moved little
        base + 0.01 * torch.randn(400, generator=g),  # no gain: not certified although closest
    ])
    start_row, kl = [0, 1, 0, 1, 0], torch.tensor([0.0, 0.0, 3.0, 1.0, 0.1])
    assert choose(per_start, start_row, kl, "am_q").index == 2  # the paper's rule: highest AM-Q
    chosen = choose(per_start, start_row, kl, "closest_certified")
    assert chosen.index == 3 and chosen.certified == [False, False, True, True, False]
    assert chosen.gain[3] == pytest.approx(0.3, abs=0.03) and chosen.gain_se[3] == pytest.approx(0.1 / 20, rel=0.2)
    # nothing beats its start with confidence: hand back the best starting policy, unchanged
    noisy = torch.stack([base, base + 0.1, base + 0.3 * torch.randn(400, generator=g), base + 0.1, base])
    assert choose(noisy, start_row, kl, "closest_certified").index == 1
    with pytest.raises(ValueError, match="selection rule"):
        choose(per_start, start_row, kl, "best_return")


def test_a_diverged_candidate_is_never_chosen():
    from uni_o4_ros.learning.selection import choose

    per_start = torch.tensor([[1.0, 1.2], [float("nan"), 5.0], [2.0, 2.2], [float("inf"), 9.0]])
    start_row, kl = [0, 1, 0, 0], torch.zeros(4)
    # a NaN or inf AM-Q (diverged Q or model) would otherwise win: torch.argmax puts NaN first
    assert choose(per_start, start_row, kl, "am_q").index == 2
    assert choose(per_start[[1, 0]], [0, 1], kl[:2], "closest_certified").index == 1
    with pytest.raises(ValueError, match="finite AM-Q"):
        choose(torch.full((2, 3), float("nan")), [0, 1], kl[:2], "am_q")


def test_independent_q_heads_improve_on_one_and_score_on_the_other(learned):
    """ope.q_head=independent: the improvement's advantage comes from head 0 only and AM-Q from
    head 1 only, so an error in the head a policy climbs cannot raise its score, and vice versa."""
    s, _, critic, model, norm = learned
    corrupted = copy.deepcopy(critic)
    with torch.no_grad():  # head 0 now prefers pushing the state away from 0, the wrong way
        for p in corrupted.q.net.parameters():
            p[0].normal_(0.0, 0.5)
    policies = [FixedPolicy(-5.0), FixedPolicy(+5.0)]
    kwargs = dict(generator=torch.Generator().manual_seed(3))
    honest = am_q_per_start(policies, critic.q, model, never, norm, s[:64], 10, q_head=1, **kwargs)
    kwargs = dict(generator=torch.Generator().manual_seed(3))
    scored = am_q_per_start(policies, corrupted.q, model, never, norm, s[:64], 10, q_head=1, **kwargs)
    torch.testing.assert_close(scored, honest)  # head 0's damage does not reach AM-Q
    kwargs = dict(generator=torch.Generator().manual_seed(3))
    mixed = am_q_per_start(policies, corrupted.q, model, never, norm, s[:64], 10, **kwargs)
    assert not torch.allclose(mixed, honest)  # while the min of both heads does see it

    # And the improvement follows head 0 alone: with head 1 corrupted instead, every update is
    # the same as with the intact critic.
    other = copy.deepcopy(critic)
    with torch.no_grad():
        for p in other.q.net.parameters():
            p[1].normal_(0.0, 0.5)
    runs = []
    for c, head in ((critic, 0), (other, 0), (other, None)):
        torch.manual_seed(4)
        pol = make_policy(DIM, DIM, n=2, hidden=(16,))
        imp = MultiStepImprover(pol, c, lr=1e-3, clip=0.25, total_steps=5, grad_clip=0.5, advantage_head=head)
        for _ in range(5):
            imp.update(s[:128])
        runs.append([p.detach().clone() for p in pol.parameters()])
    for a_, b_ in zip(runs[0], runs[1]):
        torch.testing.assert_close(a_, b_)
    assert any(not torch.allclose(a_, c_) for a_, c_ in zip(runs[0], runs[2]))  # the min would follow it
