"""Measure a saved Go1 policy in the Gymnasium environment: return, velocity tracking, falls.

Deterministic (mean) actions at a fixed forward-speed command, as the paper's low- and high-speed
tests (Fig. 5 b/c): each episode lasts up to 1000 steps and ends early on a fall.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from ..learning.offline import load_policy
from .go1_env import Go1Env, Go1EnvConfig


@dataclass
class Go1Evaluation:
    terrain: str
    command_vx: float
    episodes: int
    mean_return: float
    std_return: float
    tracking_error: float  # mean |v_xy - v_cmd| over all steps (m/s)
    mean_vx: float  # mean forward speed (m/s)
    falls_per_episode: float
    mean_length: float

    def to_dict(self) -> dict:
        return asdict(self)


def evaluate_go1(policy_dir: str | Path, terrain: str, command_vx: float, episodes: int = 3, seed: int = 0,
                 max_steps: int = 1000, initial_noise: float = 0.0) -> Go1Evaluation:
    """A saved policy folder, deterministic (mean) actions."""
    policy, normalizer, _, _ = load_policy(policy_dir)

    def act(obs: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            mean, _ = policy(normalizer(torch.as_tensor(obs[None], dtype=torch.float32)))
        return mean[0, 0].numpy()

    return evaluate_actor(act, terrain, command_vx, episodes, seed, max_steps, initial_noise)


def evaluate_actor(act: Callable[[np.ndarray], np.ndarray], terrain: str, command_vx: float, episodes: int = 3,
                   seed: int = 0, max_steps: int = 1000, initial_noise: float = 0.0) -> Go1Evaluation:
    """Any observation -> action function (e.g. a peer library's agent) under the same protocol.

    MuJoCo is deterministic: with `initial_noise` = 0 every episode of a policy is the same one.
    A few hundredths of a radian of joint noise at reset make the episodes differ, so the spread
    over episodes means something."""
    env = Go1Env(Go1EnvConfig(terrain=terrain, max_steps=max_steps, initial_noise=initial_noise))
    returns, errors, speeds, falls, lengths = [], [], [], 0, []
    for ep in range(episodes):
        obs, _ = env.reset(seed=seed + ep, options={"vx": command_vx})
        total, done, n = 0.0, False, 0
        while not done:
            obs, r, term, trunc, info = env.step(act(obs))
            total += r
            n += 1
            errors.append(info["tracking_error"])
            speeds.append(info["vx"])
            done = term or trunc
            falls += int(info["fell"])
        returns.append(total)
        lengths.append(n)
    env.close()
    return Go1Evaluation(terrain, command_vx, episodes, float(np.mean(returns)), float(np.std(returns)),
                         float(np.mean(errors)), float(np.mean(speeds)), falls / episodes, float(np.mean(lengths)))
