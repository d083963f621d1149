"""The policy side of the control loop without ROS: observation -> action -> joint targets, and
weight hot-swaps that happen only between ticks, only after verification.

`offer` verifies an update at once (so a bad one is refused with its reason immediately) but
only stages it; the next `tick` swaps it in before computing its action, so every tick runs
wholly on one version and no tick waits for verification.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np
import torch

from ..learning.normalizer import StateNormalizer
from ..learning.policy import GaussianPolicyEnsemble
from .go1 import action_to_joint_targets
from .observation import ObservationBuilder, command_vector
from .policy_update import UpdateRejected, VerifiedPolicy, verify_update


@dataclass
class TickResult:
    q_des: np.ndarray
    action: np.ndarray
    log_prob: float
    observation: np.ndarray
    policy_version: int


class PolicyRunner:
    def __init__(self, policy: GaussianPolicyEnsemble, normalizer: StateNormalizer, version: int = 0,
                 deterministic: bool = True, key: bytes | None = None, seed: int = 0) -> None:
        if policy.n != 1:
            raise ValueError("the robot runs a single policy")
        self._active = VerifiedPolicy(version, policy.eval(), normalizer, "")
        self._pending: VerifiedPolicy | None = None
        self._lock = threading.Lock()
        self.deterministic, self.key = deterministic, key
        self.obs = ObservationBuilder()
        self.last_action = np.zeros(policy.spec.act_dim, np.float32)
        self.command = command_vector(0.0)
        self.seed = seed
        self.generator = torch.Generator().manual_seed(seed)
        torch.set_num_threads(1)

    @property
    def version(self) -> int:
        return self._active.version

    @property
    def obs_dim(self) -> int:
        return self._active.policy.spec.obs_dim

    def offer(self, version: int, sha256: str, blob: bytes, spec_json: str, signature: bytes) -> tuple[bool, str]:
        """Verify and stage an update; returns (accepted, reason)."""
        with self._lock:
            newest = max(self._active.version, self._pending.version if self._pending else -1)
        try:
            verified = verify_update(version, sha256, blob, spec_json, signature, current_version=newest,
                                     expected_obs_dim=self.obs_dim,
                                     expected_act_dim=self._active.policy.spec.act_dim, key=self.key)
        except UpdateRejected as exc:
            return False, str(exc)
        with self._lock:
            self._pending = verified
        return True, f"version {version} staged"

    def reset(self, episode: int | None = None) -> None:
        """A fresh history. With `episode` (the robot's reset count, in simulation) the sampling noise
        restarts from (seed, episode): an episode's noise does not depend on how many states were
        answered before it began, which message timing decides."""
        self.obs.reset()
        self.last_action[:] = 0.0
        if episode is not None:
            self.generator.manual_seed(self.seed * 1_000_003 + episode)

    def tick(self, quat_wxyz: np.ndarray, q: np.ndarray, dq: np.ndarray) -> TickResult:
        with self._lock:
            if self._pending is not None:
                self._active, self._pending = self._pending, None
        active = self._active
        frame = self.obs.frame(quat_wxyz, self.command, q, dq, self.last_action)
        history = self.obs.push(frame)
        with torch.no_grad():
            x = active.normalizer(torch.from_numpy(history).unsqueeze(0))
            mean, log_std = active.policy(x)
            if self.deterministic:
                a = mean
            else:
                a = mean + torch.randn(mean.shape, generator=self.generator) * log_std.exp()
            logp = float(active.policy.gaussian_log_prob(mean, log_std, a)[0, 0])
        action = a[0, 0].numpy().astype(np.float32)
        self.last_action = action
        return TickResult(action_to_joint_targets(action), action, logp, history, active.version)
