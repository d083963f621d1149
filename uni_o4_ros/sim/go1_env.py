"""Gymnasium environment of the paper's robot task on the MuJoCo Go1 (Appendix A.4).

Observation: the policy's 58 x 5 history (`robot.observation`), the very builder the policy node
uses. Action: 12 values, q_des = default + 0.25 a (hips x 0.5), through the same safety filter as
the pd_controller (rate, joint and torque limits), Kp 20 / Kd 0.5 at 50 Hz. Reward: Table 3
(`robot.reward`) with the body-frame base velocity (what the T265 reports). Episodes last 1000
steps and end early on a fall, by the rule of the robot's controller: |roll| or |pitch| over
`max_tilt` (optionally also a base below `min_base_height`, as in pretraining on flat ground). Steps
on which the trunk pushes on the ground (a stumble: the nose digging into the mattress) are
reported in `info["trunk_on_ground"]`; the robot often recovers from them.
Terrains: "flat" (the simulator) and "mattress" (the unseen, elastic, sinking target).
No domain randomisation, as in the paper.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np

from ..robot.command import PRETRAIN_COMMAND_VX
from ..robot.go1 import CONTROL_DT, action_to_joint_targets, roll_pitch, rotation_matrix
from ..robot.observation import POLICY_DIMS, ObservationBuilder, command_vector
from ..robot.reward import reward
from ..robot.safety import SafetyConfig, SafetyFilter, fallen
from .go1_sim import ASSETS, Go1Sim

TERRAINS = {"flat": ASSETS / "scene_flat.xml", "mattress": ASSETS / "scene_mattress.xml"}
ACTION_CLIP = 10.0  # walk-these-ways clip_actions
TRUNK_CONTACT_N = 1.0  # trunk pushes on the terrain with more than this: a stumble (SimState.trunk_force)


@dataclass(frozen=True)
class Go1EnvConfig:
    terrain: str = "flat"
    # forward speed command, sampled per episode (m/s); the policy node's default command limits follow it
    command_vx: tuple[float, float] = PRETRAIN_COMMAND_VX
    max_steps: int = 1000
    max_tilt: float = 1.0  # rad, the controller's fall threshold
    # m, 0 = off. A base-height rule means "on the ground" only on rigid ground: on the mattress a
    # walking robot whose feet sink dips below 0.12 m with its trunk 6 cm clear of the surface
    # (BENCHMARKS §6.0a). The robot's controller knows no such rule, so by default neither does the
    # task; pretraining on flat ground keeps the 0.12 m the shipped checkpoint was trained with.
    min_base_height: float = 0.0
    initial_noise: float = 0.0  # joint-angle noise at reset (rad); 0 = no randomisation


class Go1Env(gym.Env):
    metadata = {"render_modes": []}

    def __init__(self, cfg: Go1EnvConfig = Go1EnvConfig(), **overrides: Any) -> None:
        if overrides:
            cfg = Go1EnvConfig(**{**cfg.__dict__, **overrides})
        if cfg.terrain not in TERRAINS:
            raise ValueError(f"unknown terrain {cfg.terrain!r}; choose from {sorted(TERRAINS)}")
        self.cfg = cfg
        self.sim = Go1Sim(TERRAINS[cfg.terrain])
        self.obs_builder = ObservationBuilder()
        self.safety = SafetyFilter(SafetyConfig(max_tilt=cfg.max_tilt))
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (POLICY_DIMS[0],), np.float32)
        self.action_space = gym.spaces.Box(-ACTION_CLIP, ACTION_CLIP, (12,), np.float32)
        self.command = command_vector(0.0)
        self._fixed_vx: float | None = None
        self.steps = 0
        self.last_action = np.zeros(12, np.float32)
        self.last_dq = np.zeros(12)

    def set_command(self, vx: float | None) -> None:
        """Fix the forward speed command for the following episodes (None: sample per episode)."""
        self._fixed_vx = vx

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        """options: {"vx": forward speed command for this episode, "roll": initial roll (rad)}."""
        super().reset(seed=seed)
        st = self.sim.reset(roll=float((options or {}).get("roll", 0.0)))
        if self.cfg.initial_noise > 0:
            q = st.q + self.np_random.uniform(-self.cfg.initial_noise, self.cfg.initial_noise, 12)
            self.sim.data.qpos[self.sim.qpos_idx] = q
            st = self.sim.state()
        vx = (options or {}).get("vx", self._fixed_vx)
        if vx is None:
            vx = float(self.np_random.uniform(*self.cfg.command_vx))
        self.command = command_vector(float(vx))
        self.obs_builder.reset()
        self.safety.reset(st.q)
        self.steps = 0
        self.last_action = np.zeros(12, np.float32)
        self.last_dq = st.dq.copy()
        self._state = st
        obs = self.obs_builder.push(self.obs_builder.frame(st.quaternion, self.command, st.q, st.dq, self.last_action))
        return obs, {"command_vx": float(vx)}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict]:
        a = np.clip(np.asarray(action, np.float32), -ACTION_CLIP, ACTION_CLIP)
        if not np.all(np.isfinite(a)):
            raise ValueError("action contains NaN or inf")
        before = self._state
        cmd = self.safety.apply(action_to_joint_targets(a), before.q, before.dq)
        st = self._state = self.sim.step(cmd)
        v_body = rotation_matrix(st.quaternion).T @ st.linear_velocity
        ddq = (st.dq - self.last_dq) / CONTROL_DT
        r, terms = reward(v_body[:2], self.command[:2], float(st.angular_velocity[2]), float(self.command[2]),
                          float(v_body[2]), st.tau, st.dq, ddq, a, self.last_action)
        self.last_action, self.last_dq = a, st.dq.copy()
        self.steps += 1
        roll, pitch = roll_pitch(st.quaternion)
        fell = fallen(roll, pitch, self.cfg.max_tilt) or st.position[2] < self.cfg.min_base_height
        obs = self.obs_builder.push(self.obs_builder.frame(st.quaternion, self.command, st.q, st.dq, a))
        truncated = self.steps >= self.cfg.max_steps and not fell
        info = {"vx": float(v_body[0]), "command_vx": float(self.command[0]),
                "tracking_error": float(np.linalg.norm(v_body[:2] - self.command[:2])),
                "base_height": float(st.position[2]), "sinkage": float(self.sim.foot_sinkage().max()),
                "fell": bool(fell), "trunk_on_ground": st.trunk_force > TRUNK_CONTACT_N, "reward_terms": terms}
        return obs, float(r), bool(fell), bool(truncated), info


def make_go1_env(terrain: str = "flat", **overrides: Any):
    """A picklable-free factory for trainers that build their own env copies."""
    def make() -> Go1Env:
        return Go1Env(Go1EnvConfig(terrain=terrain, **overrides))

    return make
