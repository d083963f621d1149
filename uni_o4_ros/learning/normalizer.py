"""Fixed state normalisation (s - mean) / std from the offline dataset.

The same statistics are used by BC, Q, V, the improved policies, AM-Q and online PPO, so a
policy carried from offline to online sees the same inputs; they travel with the policy weights.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


class StateNormalizer(nn.Module):
    def __init__(self, mean: np.ndarray | torch.Tensor, std: np.ndarray | torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32).clone())
        self.register_buffer("std", torch.as_tensor(std, dtype=torch.float32).clone())

    @classmethod
    def from_data(cls, observations: np.ndarray, eps: float = 1e-3) -> StateNormalizer:
        with np.errstate(over="ignore", invalid="ignore"):  # said below, in one line
            mean, std = observations.mean(0), observations.std(0) + eps
        # float32's std overflows for values past ~1.8e19 (their squares): every state then normalised to 0 or NaN,
        # and training went on with no error. (In float64 it would not, at twice the dataset's size in memory.)
        if not (np.isfinite(mean).all() and np.isfinite(std).all()):
            column = int(np.argmax(~(np.isfinite(mean) & np.isfinite(std))))
            raise ValueError(f"the observations' mean or spread overflows float32 (column {column}, values up to "
                             f"{float(np.abs(observations[:, column]).max()):.3g}): rescale that column of the dataset")
        return cls(mean, std)

    @classmethod
    def identity(cls, dim: int) -> StateNormalizer:
        return cls(np.zeros(dim), np.ones(dim))

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return (obs - self.mean) / self.std


class RunningNormalizer(StateNormalizer):
    """Running mean/std for PPO from scratch (no dataset to take statistics from)."""

    def __init__(self, dim: int, clip: float = 10.0) -> None:
        super().__init__(np.zeros(dim), np.ones(dim))
        self.register_buffer("var", torch.ones(dim))
        self.register_buffer("count", torch.tensor(1e-4))
        self.clip = clip

    @classmethod
    def from_stats(cls, mean: torch.Tensor, std: torch.Tensor, count: float = 1e4) -> RunningNormalizer:
        """Continue from known statistics, weighted as `count` samples."""
        rn = cls(int(mean.shape[0]))
        rn.mean.copy_(mean)
        rn.std.copy_(std)
        rn.var.copy_(std.pow(2))
        rn.count.fill_(count)
        return rn

    @torch.no_grad()
    def update(self, batch: torch.Tensor) -> None:
        b_mean, b_var, b_n = batch.mean(0), batch.var(0, unbiased=False), batch.shape[0]
        delta, tot = b_mean - self.mean, self.count + b_n
        self.mean += delta * b_n / tot
        m2 = self.var * self.count + b_var * b_n + delta.pow(2) * self.count * b_n / tot
        self.var.copy_(m2 / tot)
        self.count.copy_(tot)
        self.std.copy_(self.var.sqrt() + 1e-8)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return super().forward(obs).clamp(-self.clip, self.clip)

    def frozen_copy(self, min_std: float = 1e-3) -> StateNormalizer:
        """Fixed statistics for deployment. A dimension that never varied in training (std ~ 0)
        gets `min_std`, so a value it never saw cannot blow up into an unbounded input."""
        return StateNormalizer(self.mean.clone(), self.std.clamp_min(min_std))
