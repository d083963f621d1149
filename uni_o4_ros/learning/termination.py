"""Termination rules for model rollouts, applied to raw (unnormalised) next states.

A learned model does not know when an episode ends, so each task brings a hand-written rule
(as MOPO/MOBILE and the authors' code do). Rules take next_obs (..., obs_dim) and return a bool
tensor (...,). Names map to Gymnasium env ids with `rule_for_env`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

TerminationFn = Callable[[torch.Tensor], torch.Tensor]


def hopper(next_obs: torch.Tensor) -> torch.Tensor:
    height, angle = next_obs[..., 0], next_obs[..., 1]
    healthy = (
        torch.isfinite(next_obs).all(-1)
        & (next_obs[..., 1:].abs() < 100).all(-1)
        & (height > 0.7)
        & (angle.abs() < 0.2)
    )
    return ~healthy


def walker2d(next_obs: torch.Tensor) -> torch.Tensor:
    height, angle = next_obs[..., 0], next_obs[..., 1]
    healthy = torch.isfinite(next_obs).all(-1) & (height > 0.8) & (height < 2.0) & (angle.abs() < 1.0)
    return ~healthy


def halfcheetah(next_obs: torch.Tensor) -> torch.Tensor:
    # Never terminates in the env; only reject diverged model states.
    return ~(torch.isfinite(next_obs).all(-1) & (next_obs.abs() < 100).all(-1))


def never(next_obs: torch.Tensor) -> torch.Tensor:
    return ~torch.isfinite(next_obs).all(-1)


def make_robot_rule(frame_dim: int = 58, max_tilt: float = 1.0) -> TerminationFn:
    """Fall rule for the Go1: |roll| or |pitch| over `max_tilt` rad, read from projected gravity.

    Each observation frame starts with gravity in the body frame g_b = R^T [0, 0, -1]; for roll
    phi and pitch theta, g_b = (sin theta, -sin phi cos theta, -cos phi cos theta). With a history
    (oldest first) the newest frame is the last `frame_dim` values.
    """

    def rule(next_obs: torch.Tensor) -> torch.Tensor:
        start = next_obs.shape[-1] - frame_dim if next_obs.shape[-1] >= frame_dim else 0
        g = next_obs[..., start : start + 3]
        g = g / g.norm(dim=-1, keepdim=True).clamp_min(1e-6)
        pitch = torch.asin(g[..., 0].clamp(-1, 1))
        roll = torch.atan2(-g[..., 1], -g[..., 2])
        bad = (roll.abs() > max_tilt) | (pitch.abs() > max_tilt)
        return bad | ~torch.isfinite(next_obs).all(-1)

    return rule


RULES: dict[str, TerminationFn] = {
    "hopper": hopper,
    "walker2d": walker2d,
    "halfcheetah": halfcheetah,
    "never": never,
    "robot": make_robot_rule(),
}


def rule_for_env(name: str) -> TerminationFn:
    """'Hopper-v5', 'hopper-medium-v2', 'hopper' -> hopper rule; 'go1...' -> robot rule."""
    key = name.lower()
    if key.startswith("go1") or key == "robot":
        return RULES["robot"]
    for prefix, fn in RULES.items():
        if key.startswith(prefix):
            return fn
    raise ValueError(f"no termination rule for {name!r}; known: {sorted(RULES)}")
