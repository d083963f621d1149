"""Go1 facts the rest of the package relies on, in one place (numpy only).

Joint order inside the package is the policy's (walk-these-ways / legged_gym): FL, FR, RL, RR legs,
each (hip, thigh, calf). The Unitree SDK and the MuJoCo Menagerie model use FR, FL, RR, RL; convert
only at the hardware/simulator boundary with `to_sdk` / `from_sdk`.
"""

from __future__ import annotations

import numpy as np

LEGS = ("FL", "FR", "RL", "RR")
JOINTS = tuple(f"{leg}_{j}" for leg in LEGS for j in ("hip", "thigh", "calf"))
# The joints' names in the Go1's URDF (unitree_ros go1_description) and in the MuJoCo model: FL_hip_joint, ...
# in the package's order. sensor_msgs/JointState (joint_states) carries these names.
JOINT_NAMES = tuple(f"{j}_joint" for j in JOINTS)
SDK_LEGS = ("FR", "FL", "RR", "RL")

# policy index i  <-  sdk index SDK_FROM_POLICY... : q_policy = q_sdk[POLICY_FROM_SDK]
POLICY_FROM_SDK = np.array([3, 4, 5, 0, 1, 2, 9, 10, 11, 6, 7, 8])
SDK_FROM_POLICY = np.argsort(POLICY_FROM_SDK)
FEET_POLICY_FROM_SDK = np.array([1, 0, 3, 2])

DEFAULT_Q = np.array([0.1, 0.8, -1.5, -0.1, 0.8, -1.5, 0.1, 1.0, -1.5, -0.1, 1.0, -1.5], np.float32)
# Go1 limits (SDK), per joint type; hips are symmetric.
Q_MIN = np.tile(np.array([-1.047, -0.663, -2.721], np.float32), 4)
Q_MAX = np.tile(np.array([1.047, 2.966, -0.837], np.float32), 4)
TAU_MAX = np.tile(np.array([23.7, 23.7, 35.55], np.float32), 4)
# Joint speed limits (rad/s) of the Go1's URDF (unitree_ros go1_description), per joint type.
DQ_MAX = np.tile(np.array([30.1, 30.1, 20.06], np.float32), 4)

KP, KD = 20.0, 0.5
ACTION_SCALE, HIP_SCALE_REDUCTION = 0.25, 0.5
CONTROL_DT = 0.02  # 50 Hz policy and controller
HIP_MASK = np.array([1, 0, 0] * 4, bool)


def from_sdk(x_sdk: np.ndarray) -> np.ndarray:
    """(..., 12) in SDK order (FR, FL, RR, RL) -> package order (FL, FR, RL, RR)."""
    return np.asarray(x_sdk)[..., POLICY_FROM_SDK]


def to_sdk(x_policy: np.ndarray) -> np.ndarray:
    return np.asarray(x_policy)[..., SDK_FROM_POLICY]


def action_to_joint_targets(action: np.ndarray) -> np.ndarray:
    """q_des = default + 0.25 a, hips scaled by a further 0.5 (walk-these-ways)."""
    a = np.asarray(action, np.float32) * ACTION_SCALE
    a = np.where(HIP_MASK, a * HIP_SCALE_REDUCTION, a)
    return DEFAULT_Q + a


def projected_gravity(quat_wxyz: np.ndarray) -> np.ndarray:
    """Gravity direction in the body frame, R^T [0, 0, -1], from the base orientation."""
    w, x, y, z = np.asarray(quat_wxyz, np.float64)
    # third row of R (world z axis expressed in body coordinates), negated
    return -np.array([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], np.float32)


def roll_pitch(quat_wxyz: np.ndarray) -> tuple[float, float]:
    w, x, y, z = np.asarray(quat_wxyz, np.float64)
    roll = np.arctan2(2 * (w * x + y * z), 1 - 2 * (x * x + y * y))
    pitch = np.arcsin(np.clip(2 * (w * y - z * x), -1, 1))
    return float(roll), float(pitch)


def yaw(quat_wxyz: np.ndarray) -> float:
    """Heading (rad) of a (w, x, y, z) quaternion, ZYX convention like roll_pitch."""
    w, x, y, z = np.asarray(quat_wxyz, np.float64)
    return float(np.arctan2(2 * (w * z + x * y), 1 - 2 * (y * y + z * z)))


def rotation_matrix(quat_wxyz: np.ndarray) -> np.ndarray:
    """Body -> world rotation from a (w, x, y, z) quaternion."""
    w, x, y, z = np.asarray(quat_wxyz, np.float64)
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
        [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
        [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
    ])
