"""The Uni-O4 robot reward (Table 3): r = r_pos * exp(0.02 * r_neg).

r_pos = 0.02 exp(-|v_xy - v_cmd|^2 / sigma) + 0.01 exp(-(w_z - w_cmd)^2 / sigma)
r_neg = -(4e-4 v_z^2 + 2e-5 |tau|^2 + 2e-5 |dq|^2 + 5e-9 |ddq|^2 + 2e-3 |a_{t-1} - a_t|^2)
sigma = 0.25 (legged_gym's tracking sigma). Weights as printed in the paper's table.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class RewardWeights:
    xy_tracking: float = 0.02
    yaw_tracking: float = 0.01
    z_velocity: float = 4e-4
    torques: float = 2e-5
    joint_velocities: float = 2e-5
    joint_accelerations: float = 5e-9
    action_smoothing: float = 2e-3
    sigma: float = 0.25
    negative_scale: float = 0.02


def reward(v_xy: np.ndarray, v_cmd_xy: np.ndarray, w_z: float, w_cmd: float, v_z: float, tau: np.ndarray,
           dq: np.ndarray, ddq: np.ndarray, action: np.ndarray, last_action: np.ndarray,
           w: RewardWeights = RewardWeights()) -> tuple[float, dict[str, float]]:
    terms = {
        "xy_tracking": w.xy_tracking * float(np.exp(-np.sum((np.asarray(v_xy) - v_cmd_xy) ** 2) / w.sigma)),
        "yaw_tracking": w.yaw_tracking * float(np.exp(-((w_z - w_cmd) ** 2) / w.sigma)),
        "z_velocity": -w.z_velocity * float(v_z**2),
        "torques": -w.torques * float(np.sum(np.square(tau))),
        "joint_velocities": -w.joint_velocities * float(np.sum(np.square(dq))),
        "joint_accelerations": -w.joint_accelerations * float(np.sum(np.square(ddq))),
        "action_smoothing": -w.action_smoothing * float(np.sum(np.square(np.asarray(last_action) - action))),
    }
    r_pos = terms["xy_tracking"] + terms["yaw_tracking"]
    r_neg = sum(v for k, v in terms.items() if k not in ("xy_tracking", "yaw_tracking"))
    return r_pos * float(np.exp(w.negative_scale * r_neg)), terms
