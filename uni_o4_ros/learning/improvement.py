"""Multi-step policy ensemble optimisation with AM-Q (Section 3.2, Algorithm 1 lines 10-21).

Each of the n target policies pi_i is improved with the PPO clip objective against its own
behaviour policy pi_k^i (initially its BC member), with the offline advantage
A = min Q(s, a) - V(s) on dataset states. Every C steps AM-Q scores every target and its
behaviour policy on the same start states; behaviour i is replaced by target i when AM-Q says
the target is better. Nothing here touches an environment.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch

from .behavior_cloning import kl_disagreement
from .networks import clip_grad_norm_per_member, copy_member
from .policy import GaussianPolicyEnsemble
from .ppo import clipped_surrogate
from .value import IQLCritic


@dataclass
class ReplacementEvent:
    step: int
    policy: int
    target_score: float
    behavior_score: float


@dataclass
class ImprovementState:
    step: int = 0
    iteration: list[int] = field(default_factory=list)  # k per policy
    events: list[ReplacementEvent] = field(default_factory=list)


class MultiStepImprover:
    def __init__(
        self,
        policy: GaussianPolicyEnsemble,
        critic: IQLCritic,
        *,
        lr: float,
        clip: float,
        total_steps: int,
        grad_clip: float,
        normalize_advantage: bool = True,
        kl_alpha: float = 0.0,
        advantage_head: int | None = None,
    ) -> None:
        self.target = policy
        self.behavior = copy.deepcopy(policy).requires_grad_(False)
        self.critic = critic
        self.clip, self.grad_clip, self.kl_alpha = clip, grad_clip, kl_alpha
        self.normalize_advantage = normalize_advantage
        self.advantage_head = advantage_head  # None: min of the double Q (paper)
        self.opt = torch.optim.Adam(self.target.parameters(), lr=lr)
        # Linear decay to 0 over the whole improvement phase (authors' code and Table 5 lr).
        self.sched = torch.optim.lr_scheduler.LambdaLR(
            self.opt, lambda t: max(0.0, 1.0 - t / max(1, total_steps))
        )
        self.state = ImprovementState(iteration=[0] * policy.n)

    def update(self, obs: torch.Tensor) -> dict[str, float]:
        """One PPO-clip step of every target policy on a batch of normalised dataset states."""
        n = self.target.n
        with torch.no_grad():
            mean, log_std = self.behavior(obs)
            act = self.behavior.executed(mean + torch.randn_like(mean) * log_std.exp())
            old_logp = self.behavior.gaussian_log_prob(mean, log_std, act)  # (n, B)
            b = obs.shape[0]
            flat_obs = obs.unsqueeze(0).expand(n, -1, -1).reshape(n * b, -1)
            adv = self.critic.advantage(flat_obs, act.reshape(n * b, -1), self.advantage_head).view(n, b)
            if self.normalize_advantage:
                adv = (adv - adv.mean(1, keepdim=True)) / (adv.std(1, keepdim=True) + 1e-8)
        new_logp = self.target.log_prob(obs.unsqueeze(0).expand(n, -1, -1), act)
        ratio = (new_logp - old_logp).exp()
        objective = clipped_surrogate(ratio, adv, self.clip).mean(1)
        if self.kl_alpha > 0.0 and n > 1:
            objective = objective + self.kl_alpha * kl_disagreement(self.target, obs).mean(1)
        loss = -objective.sum()
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        clip_grad_norm_per_member(self.target, self.grad_clip)
        self.opt.step()
        self.sched.step()
        self.state.step += 1
        with torch.no_grad():
            clip_frac = ((ratio - 1).abs() > self.clip).float().mean()
        return {"loss": float(loss.detach()) / n, "ratio_mean": float(ratio.detach().mean()),
                "clip_frac": float(clip_frac)}

    def replace(self, target_scores: torch.Tensor, behavior_scores: torch.Tensor) -> list[ReplacementEvent]:
        """Algorithm 1 lines 15-19: pi_k^i <- pi_i where AM-Q(pi_i) > AM-Q(pi_k^i)."""
        events = []
        for i in range(self.target.n):
            if float(target_scores[i]) > float(behavior_scores[i]):
                copy_member(self.behavior, i, self.target, i)
                self.state.iteration[i] += 1
                events.append(
                    ReplacementEvent(self.state.step, i, float(target_scores[i]), float(behavior_scores[i]))
                )
        self.state.events.extend(events)
        return events
