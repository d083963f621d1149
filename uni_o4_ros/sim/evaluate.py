"""Measure a saved Go1 policy in the Gymnasium environment: return, velocity tracking, falls.

Deterministic (mean) actions at a fixed forward-speed command, as the paper's low- and high-speed
tests (Fig. 5 b/c): each episode lasts up to 1000 steps and ends early on a fall.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
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
    # Per episode, so a report can give the uncertainty: walkers and fallers make returns bimodal,
    # and with 5 episodes one fall moves the mean by a fifth of the gap.
    episode_returns: list[float] = field(default_factory=list)
    episode_fell: list[bool] = field(default_factory=list)
    # Episodes in which the trunk pushed on the ground at least once (stumbles, fallen or not).
    episode_trunk_hit: list[bool] = field(default_factory=list)

    @property
    def se_return(self) -> float:
        """Standard error of the mean return (0 for a single episode)."""
        n = len(self.episode_returns)
        return float(np.std(self.episode_returns, ddof=1) / np.sqrt(n)) if n > 1 else 0.0

    def to_dict(self) -> dict:
        return {**asdict(self), "se_return": self.se_return}


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
    returns, errors, speeds, fell, lengths, trunk_hit = [], [], [], [], [], []
    for ep in range(episodes):
        obs, _ = env.reset(seed=seed + ep, options={"vx": command_vx})
        total, done, n, hit = 0.0, False, 0, False
        while not done:
            obs, r, term, trunc, info = env.step(act(obs))
            total += r
            n += 1
            errors.append(info["tracking_error"])
            speeds.append(info["vx"])
            hit = hit or info["trunk_on_ground"]
            done = term or trunc
        fell.append(bool(info["fell"]))
        trunk_hit.append(bool(hit))
        returns.append(total)
        lengths.append(n)
    env.close()
    return Go1Evaluation(terrain, command_vx, episodes, float(np.mean(returns)), float(np.std(returns)),
                         float(np.mean(errors)), float(np.mean(speeds)), sum(fell) / episodes, float(np.mean(lengths)),
                         [float(r) for r in returns], fell, trunk_hit)


def _evaluate_cell(args: tuple) -> Go1Evaluation:
    torch.set_num_threads(1)  # one cell per core; a second torch thread only contends
    return evaluate_go1(*args)


def evaluate_go1_cells(cells: Sequence[tuple], workers: int = 0) -> Iterator[Go1Evaluation]:
    """`evaluate_go1(*cell)` for every cell, in the cells' order, spread over `workers` processes
    (0 = one per core). Cells are independent simulations of a few seconds to minutes each, so this
    divides a multi-cell evaluation by the number of cores."""
    workers = min(len(cells), workers or multiprocessing.cpu_count() or 1)
    if workers <= 1:
        yield from (evaluate_go1(*c) for c in cells)
        return
    # spawn: a forked child would inherit torch's thread pool and any ROS/DDS state of the parent
    pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))
    try:
        yield from pool.map(_evaluate_cell, cells)
    finally:
        # Interrupted (Ctrl-C, or SIGTERM turned into SystemExit by the caller): queued cells are
        # dropped and the workers exit after their current cell instead of outliving the caller.
        pool.shutdown(wait=True, cancel_futures=True)
