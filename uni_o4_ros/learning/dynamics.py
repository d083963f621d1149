"""Probabilistic dynamics ensemble (Eq. 5): 7 Gaussian members, 5 elites, holdout model selection.

Each member predicts the mean and log-variance of [s' - s, r] from normalised (s, a). Members
are one batched network; each sees its own bootstrap ordering of the training set. Training
runs to its step or epoch cap, or (with `patience`, the authors' rule) until no member improved its
holdout loss by more than 1% for that many epochs; each member keeps its best-holdout weights, and
the elites are the members with the lowest holdout MSE.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from .networks import EnsembleLinear, EnsembleMLP


class GaussianEnsembleModel(nn.Module):
    def __init__(
        self, n: int, obs_dim: int, act_dim: int, hidden: tuple[int, ...], n_elites: int | None = None
    ) -> None:
        super().__init__()
        self.n, self.obs_dim, self.act_dim = n, obs_dim, act_dim
        out = obs_dim + 1
        self.body = EnsembleMLP(n, obs_dim + act_dim, 2 * out, hidden, "swish")
        # Learned soft bounds on the log-variance keep the NLL from collapsing variances.
        self.max_logvar = nn.Parameter(torch.full((1, 1, out), 0.5))
        self.min_logvar = nn.Parameter(torch.full((1, 1, out), -10.0))
        self.register_buffer("in_mean", torch.zeros(obs_dim + act_dim))
        self.register_buffer("in_std", torch.ones(obs_dim + act_dim))
        self.register_buffer("elites", torch.arange(n_elites or n))

    def forward(self, obs: torch.Tensor, act: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = (torch.cat([obs, act], -1) - self.in_mean) / self.in_std
        mean, logvar = self.body(x).chunk(2, dim=-1)
        return mean, soft_bound_logvar(logvar, self.min_logvar, self.max_logvar)

    def linear_layers(self) -> list[EnsembleLinear]:
        return [m for m in self.body.modules() if isinstance(m, EnsembleLinear)]

    @torch.no_grad()
    def step(
        self,
        obs: torch.Tensor,
        act: torch.Tensor,
        generator: torch.Generator | None = None,
        deterministic: bool = False,
        noise: torch.Tensor | None = None,
        elite_draw: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Sample (s', r) for a batch: every member predicts, one random elite per sample is used.

        `noise` (n, B, obs+1) standard normal and `elite_draw` (B,) indices into the elites may be
        given by the caller, e.g. the same draws for several policies (common random numbers)."""
        mean, logvar = self(obs, act)  # (n, B, obs+1)
        if not deterministic:
            if noise is None:
                noise = torch.randn(mean.shape, generator=generator, device=mean.device)
            mean = mean + noise * (0.5 * logvar).exp()
        b = obs.shape[0]
        if elite_draw is None:
            elite_draw = torch.randint(len(self.elites), (b,), generator=generator, device=obs.device)
        pick = self.elites[elite_draw]
        chosen = mean[pick, torch.arange(b, device=obs.device)]
        return obs + chosen[:, :-1], chosen[:, -1]


def soft_bound_logvar(logvar: torch.Tensor, min_logvar: torch.Tensor, max_logvar: torch.Tensor) -> torch.Tensor:
    """Keep a predicted log-variance softly inside the learned [min, max] bounds."""
    logvar = max_logvar - F.softplus(max_logvar - logvar)
    return min_logvar + F.softplus(logvar - min_logvar)


def _nll(mean: torch.Tensor, logvar: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    inv_var = torch.exp(-logvar)
    return ((mean - target).pow(2) * inv_var + logvar).mean(dim=(1, 2))  # per member


# Relative holdout-MSE gain that counts as an improvement for the `patience` rule (authors' code).
HOLDOUT_IMPROVEMENT = 0.01


def train_dynamics(
    model: GaussianEnsembleModel,
    obs: np.ndarray,
    act: np.ndarray,
    rew: np.ndarray,
    next_obs: np.ndarray,
    *,
    n_elites: int,
    lr: float,
    batch_size: int,
    weight_decay: tuple[float, ...],
    holdout_ratio: float,
    max_holdout: int,
    patience: int | None,
    max_epochs: int,
    max_steps: int,
    rng: np.random.Generator,
    on_epoch: Callable[[int, dict[str, float]], None] | None = None,
) -> dict[str, float]:
    """Fit the ensemble by Gaussian NLL; returns final holdout metrics."""
    x_obs = torch.as_tensor(obs, dtype=torch.float32)
    x_act = torch.as_tensor(act, dtype=torch.float32)
    target = torch.as_tensor(np.concatenate([next_obs - obs, rew[:, None]], 1), dtype=torch.float32)
    n_total = len(x_obs)
    n_hold = int(min(max_holdout, holdout_ratio * n_total))
    perm = rng.permutation(n_total)
    hold, train = perm[:n_hold], perm[n_hold:]
    inputs = torch.cat([x_obs, x_act], 1)
    model.in_mean.copy_(inputs[train].mean(0))
    model.in_std.copy_(inputs[train].std(0).clamp_min(1e-6))

    layers = model.linear_layers()
    decays = list(weight_decay) + [weight_decay[-1]] * max(0, len(layers) - len(weight_decay))
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    n_train = len(train)
    best = torch.full((model.n,), float("inf"))
    best_state = {k: v.clone() for k, v in model.state_dict().items()}
    epochs_since, steps, epoch = 0, 0, 0
    while epoch < max_epochs and steps < max_steps:
        # Independent shuffles per member: a cheap bootstrap that decorrelates members.
        order = torch.as_tensor(np.stack([rng.permutation(train) for _ in range(model.n)]))
        for start in range(0, n_train, batch_size):
            idx = order[:, start : start + batch_size]  # (n, b)
            mean, logvar = model(x_obs[idx], x_act[idx])
            loss = _nll(mean, logvar, target[idx]).sum()
            loss = loss + 0.01 * (model.max_logvar.sum() - model.min_logvar.sum())
            loss = loss + sum(d * 0.5 * layer.weight.pow(2).sum() for d, layer in zip(decays, layers))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            steps += 1
            if steps >= max_steps:
                break
        epoch += 1
        with torch.no_grad():
            mean, _ = model(x_obs[hold], x_act[hold])
            mse = (mean - target[hold]).pow(2).mean(dim=(1, 2))
        improved = torch.isinf(best) | ((best - mse) / best.clamp_min(1e-12) > HOLDOUT_IMPROVEMENT)
        if improved.any():
            best = torch.where(improved, mse, best)
            state = model.state_dict()
            for k in best_state:
                if k.startswith("body."):  # per-member weights: keep each member's own best
                    best_state[k][improved] = state[k][improved].clone()
                else:
                    best_state[k] = state[k].clone()
            epochs_since = 0
        else:
            epochs_since += 1
        if on_epoch is not None:
            on_epoch(epoch, {"holdout_mse": float(mse.mean()), "steps": steps})
        if patience is not None and epochs_since >= patience:
            break
    model.load_state_dict(best_state)
    with torch.no_grad():
        mean, _ = model(x_obs[hold], x_act[hold])
        mse = (mean - target[hold]).pow(2).mean(dim=(1, 2))
    model.elites.copy_(torch.argsort(mse)[: len(model.elites)])
    return {"holdout_mse": float(mse[model.elites].mean()), "epochs": epoch, "steps": steps, "transitions": n_total}
