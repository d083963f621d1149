"""Gaussian MLP policy ensemble with one log-std parameterisation, offline and online alike.

The authors' code bounds log-std differently offline and online (an extra tanh online), so the
policy handed from offline to online changes its distribution on the way. Here a single class
with a single parameterisation is used by behaviour cloning, offline improvement, online PPO and
the robot: an ensemble of size 1 is simply "a policy".
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from .networks import EnsembleMLP

LOG_2PI = float(torch.log(torch.tensor(2 * torch.pi)))


@dataclass
class PolicySpec:
    """Architecture of a policy; stored beside every checkpoint so weights can be verified."""

    obs_dim: int
    act_dim: int
    hidden: tuple[int, ...] = (256, 256, 256)
    activation: str = "relu"
    # Actions of the D4RL tasks lie in [-1, 1]: "tanh" bounds the mean (the paper's offline
    # policies, and ours throughout); "clip" keeps a linear mean and clips the executed action
    # (CleanRL's PPO; compared in BENCHMARKS §2). "none": unbounded PD targets (the robot).
    mean_activation: str = "tanh"
    log_std_min: float = -5.0
    log_std_max: float = 0.0

    def to_dict(self) -> dict:
        return {
            "obs_dim": self.obs_dim,
            "act_dim": self.act_dim,
            "hidden": list(self.hidden),
            "activation": self.activation,
            "mean_activation": self.mean_activation,
            "log_std_min": self.log_std_min,
            "log_std_max": self.log_std_max,
        }

    @classmethod
    def from_dict(cls, d: dict) -> PolicySpec:
        d = dict(d)
        d["hidden"] = tuple(int(h) for h in d["hidden"])
        return cls(**d)


class GaussianPolicyEnsemble(nn.Module):
    """n state-conditioned diagonal Gaussians; log-std = min + (max-min) * (tanh(h) + 1) / 2."""

    def __init__(self, spec: PolicySpec, n: int = 1) -> None:
        super().__init__()
        if spec.mean_activation not in ("tanh", "clip", "none"):
            raise ValueError("mean_activation must be 'tanh', 'clip' or 'none'")
        self.spec, self.n = spec, n
        self.body = EnsembleMLP(n, spec.obs_dim, 2 * spec.act_dim, spec.hidden, spec.activation, out_gain=0.01)

    @property
    def bounded(self) -> bool:
        """Actions are executed (and judged by Q) within [-1, 1]."""
        return self.spec.mean_activation in ("tanh", "clip")

    def executed(self, act: torch.Tensor) -> torch.Tensor:
        """The action the task carries out: clipped to [-1, 1] for bounded policies."""
        return act.clamp(-1.0, 1.0) if self.bounded else act

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """obs (B, obs) or (n, B, obs) -> mean, log_std each (n, B, act)."""
        out = self.body(obs)
        mean, pre_std = out.chunk(2, dim=-1)
        if self.spec.mean_activation == "tanh":
            mean = torch.tanh(mean)
        return mean, bounded_log_std(pre_std, self.spec.log_std_min, self.spec.log_std_max)

    @staticmethod
    def gaussian_log_prob(mean: torch.Tensor, log_std: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        """Sum over action dims of the diagonal Gaussian log-density."""
        z = (act - mean) * torch.exp(-log_std)
        return (-0.5 * z.pow(2) - log_std - 0.5 * LOG_2PI).sum(-1)

    def log_prob(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        """log pi_i(act|obs) for each member: act (B, act) or (n, B, act) -> (n, B)."""
        mean, log_std = self(obs)
        return self.gaussian_log_prob(mean, log_std, act)

    def cross_log_prob(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        """log pi_j(act_i|obs) for every pair: act (n, B, act) -> (n_i, n_j, B)."""
        mean, log_std = self(obs)  # (n_j, B, A)
        return self.gaussian_log_prob(mean.unsqueeze(0), log_std.unsqueeze(0), act.unsqueeze(1))

    @torch.no_grad()
    def act(self, obs: torch.Tensor, deterministic: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """Action and its log-probability (the log-prob of the mean when deterministic)."""
        mean, log_std = self(obs)
        a = mean if deterministic else mean + torch.randn_like(mean) * log_std.exp()
        return a, self.gaussian_log_prob(mean, log_std, a)


def bounded_log_std(pre_std: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
    """The one log-std parameterisation, offline and online alike: a tanh squashed into [lo, hi],
    so the std can neither collapse nor explode and its gradient stays smooth at both ends."""
    return lo + 0.5 * (hi - lo) * (torch.tanh(pre_std) + 1.0)


def make_policy(
    obs_dim: int,
    act_dim: int,
    n: int = 1,
    hidden: Sequence[int] = (256, 256, 256),
    activation: str = "relu",
    mean_activation: str = "tanh",
) -> GaussianPolicyEnsemble:
    return GaussianPolicyEnsemble(PolicySpec(obs_dim, act_dim, tuple(hidden), activation, mean_activation), n)


def set_initial_log_std(policy: GaussianPolicyEnsemble, log_std: float) -> None:
    """Start every member at a given log-std (PPO from scratch explores from std ~ 0.6, not the
    parameterisation's mid-range 0.08)."""
    lo, hi = policy.spec.log_std_min, policy.spec.log_std_max
    if not lo < log_std < hi:
        raise ValueError(f"log_std {log_std} outside ({lo}, {hi})")
    pre = torch.atanh(torch.tensor(2 * (log_std - lo) / (hi - lo) - 1.0))
    last = policy.body.net[-1]
    with torch.no_grad():
        last.bias[..., policy.spec.act_dim :] = pre
