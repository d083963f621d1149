"""IQL value learning (Eq. 2 and 3): double Q, state value V by expectile regression, Polyak target."""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING

import torch
from torch import nn

from .networks import EnsembleMLP

if TYPE_CHECKING:
    from .config import ValueConfig


def expectile_loss(diff: torch.Tensor, expectile: float) -> torch.Tensor:
    """L_omega(u) = |omega - 1(u < 0)| u^2 with u = Q - V."""
    weight = torch.where(diff < 0, 1.0 - expectile, expectile)
    return weight * diff.pow(2)


class DoubleQ(nn.Module):
    """Two Q heads as one batched ensemble; `forward` returns both, `min_q` the pessimistic one."""

    def __init__(
        self, obs_dim: int, act_dim: int, hidden: tuple[int, ...], layer_norm: bool = False, out_scale: float = 1.0,
    ) -> None:
        super().__init__()
        # Layer-normalised features bound the output by the last layer's weights, which Adam at
        # lr 1e-4 grows far too slowly to reach values of ~300: Q then sits at a tenth of the
        # data's returns. The fixed scale puts the output in the returns' units (a buffer, so a
        # checkpoint carries it), and the small last-layer gain keeps the scaled initial output
        # near 0 rather than +-scale, which the value stage would first have to unlearn.
        self.net = EnsembleMLP(2, obs_dim + act_dim, 1, hidden, "relu", out_gain=0.01 if layer_norm else 1.0,
                               layer_norm=layer_norm)
        self.layer_norm = layer_norm
        if layer_norm:
            self.register_buffer("out_scale", torch.tensor(float(out_scale)))

    def _scaled(self, y: torch.Tensor) -> torch.Tensor:
        return y * self.out_scale if self.layer_norm else y

    def forward(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        return self._scaled(self.net(torch.cat([obs, act], dim=-1)).squeeze(-1))  # (2, B)

    def min_q(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        return self(obs, act).min(0).values

    def head_or_min(self, obs: torch.Tensor, act: torch.Tensor, head: int | None) -> torch.Tensor:
        """Head `head` alone (evaluated alone, not both then indexed), or the min when None."""
        if head is None:
            return self.min_q(obs, act)
        return self._scaled(self.net.forward_member(head, torch.cat([obs, act], dim=-1)).squeeze(-1))


class ValueNet(nn.Module):
    def __init__(self, obs_dim: int, hidden: tuple[int, ...]) -> None:
        super().__init__()
        self.net = EnsembleMLP(1, obs_dim, 1, hidden, "relu")

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.net(obs)[0].squeeze(-1)


class IQLCritic(nn.Module):
    """Q, V and the target Q; `update` performs one joint gradient step on a batch."""

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        q_hidden: tuple[int, ...],
        v_hidden: tuple[int, ...],
        expectile: float,
        gamma: float,
        tau: float,
        lr: float,
        target_every: int = 1,
        q_layer_norm: bool = False,
        q_out_scale: float = 1.0,
    ) -> None:
        super().__init__()
        self.q = DoubleQ(obs_dim, act_dim, q_hidden, q_layer_norm, q_out_scale)
        self.v = ValueNet(obs_dim, v_hidden)
        self.q_target = copy.deepcopy(self.q).requires_grad_(False)
        self.expectile, self.gamma, self.tau, self.target_every = expectile, gamma, tau, target_every
        self.q_opt = torch.optim.Adam(self.q.parameters(), lr=lr)
        self.v_opt = torch.optim.Adam(self.v.parameters(), lr=lr)
        self.n_updates = 0

    @classmethod
    def from_config(cls, c: ValueConfig, obs_dim: int, act_dim: int, q_out_scale: float = 1.0) -> IQLCritic:
        """The critic a `ValueConfig` describes: the one place that maps its fields to arguments."""
        return cls(obs_dim, act_dim, tuple(c.q_hidden), tuple(c.v_hidden), c.expectile, c.gamma, c.tau, c.lr,
                   c.target_every, c.q_layer_norm, q_out_scale)

    def update(
        self,
        obs: torch.Tensor,
        act: torch.Tensor,
        rew: torch.Tensor,
        next_obs: torch.Tensor,
        terminal: torch.Tensor,
    ) -> dict[str, float]:
        """One step. `terminal` holds true terminations only: a timeout still bootstraps."""
        with torch.no_grad():
            target_q = self.q_target.min_q(obs, act)
        v = self.v(obs)
        v_loss = expectile_loss(target_q - v, self.expectile).mean()
        self.v_opt.zero_grad(set_to_none=True)
        v_loss.backward()
        self.v_opt.step()

        with torch.no_grad():
            backup = rew + self.gamma * (1.0 - terminal) * self.v(next_obs)
        qs = self.q(obs, act)
        q_loss = (qs - backup.unsqueeze(0)).pow(2).mean(1).sum()
        self.q_opt.zero_grad(set_to_none=True)
        q_loss.backward()
        self.q_opt.step()

        self.n_updates += 1
        if self.n_updates % self.target_every == 0:
            with torch.no_grad():
                for p, tp in zip(self.q.parameters(), self.q_target.parameters()):
                    tp.lerp_(p, self.tau)
        return {"v_loss": float(v_loss.detach()), "q_loss": float(q_loss.detach()), "v_mean": float(v.detach().mean())}

    def warmup_update(self, obs: torch.Tensor, act: torch.Tensor, returns: torch.Tensor) -> dict[str, float]:
        """One regression step of both Q heads and V onto the behaviour policy's Monte-Carlo return.

        Why: bootstrapping moves the value's level by only (1 - gamma) per target-network
        generation, so with small rewards (the robot's are <= 0.03 per step) and a random
        initialisation, V can sit far from the data's returns for tens of thousands of steps.
        A V below 0 then makes falling look good (a terminal backup of r beats r + gamma V).
        Starting IQL from the behaviour values removes that; IQL's expectile then lifts them.
        """
        v_loss = (self.v(obs) - returns).pow(2).mean()
        self.v_opt.zero_grad(set_to_none=True)
        v_loss.backward()
        self.v_opt.step()
        q_loss = (self.q(obs, act) - returns.unsqueeze(0)).pow(2).mean(1).sum()
        self.q_opt.zero_grad(set_to_none=True)
        q_loss.backward()
        self.q_opt.step()
        return {"mc_v_loss": float(v_loss.detach()), "mc_q_loss": float(q_loss.detach())}

    def sync_target(self) -> None:
        self.q_target.load_state_dict(self.q.state_dict())

    @torch.no_grad()
    def advantage(self, obs: torch.Tensor, act: torch.Tensor, q_head: int | None = None) -> torch.Tensor:
        """A(s, a) = min Q(s, a) - V(s), the offline advantage of Section 3.2 (no GAE offline);
        with `q_head`, that single Q head instead of the min."""
        return self.q.head_or_min(obs, act, q_head) - self.v(obs)
