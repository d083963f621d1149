"""The paper's policy observation: 58 values x 5-step history (Appendix A.4.1, walk-these-ways).

    gravity in the body frame (3) | 15 scaled commands | q - q_default (12) | dq * 0.05 (12) |
    last action, clipped to +-10 (12) | 4 gait clock inputs sin(2 pi phase_foot)
The history is oldest first, newest last (290 values).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .go1 import DEFAULT_Q, JOINTS, projected_gravity

OBS_DIM, HISTORY = 58, 5
# What a Go1 policy reads and writes: the observation history, one action per joint.
POLICY_DIMS = (OBS_DIM * HISTORY, len(JOINTS))
# vx, vy, yaw rate, body height, step frequency, gait phase, offset, bound, duration, footswing
# height, pitch, roll, stance width, stance length, aux reward (walk-these-ways scales)
COMMAND_SCALES = np.array([2.0, 2.0, 0.25, 2.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.15, 0.3, 0.3, 1.0, 1.0, 1.0], np.float32)
DEFAULT_COMMAND = np.array([0.0, 0.0, 0.0, 0.0, 3.0, 0.5, 0.0, 0.0, 0.5, 0.08, 0.0, 0.0, 0.25, 0.0, 0.0], np.float32)


@dataclass
class GaitClock:
    """Foot phases for a trotting gait; advances with the control period."""

    dt: float = 0.02
    phase: float = 0.0

    def step(self, frequency: float, gait_phase: float, offset: float, bound: float) -> np.ndarray:
        self.phase = (self.phase + self.dt * frequency) % 1.0
        feet = np.array([self.phase + gait_phase + offset + bound, self.phase + offset, self.phase + bound,
                         self.phase + gait_phase]) % 1.0
        return np.sin(2 * np.pi * feet).astype(np.float32)


@dataclass
class ObservationBuilder:
    history: int = HISTORY
    clock: GaitClock = field(default_factory=GaitClock)
    _buf: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self._buf = np.zeros((self.history, OBS_DIM), np.float32)

    def reset(self) -> None:
        self._buf[:] = 0.0
        self.clock.phase = 0.0

    def frame(self, quat_wxyz: np.ndarray, command: np.ndarray, q: np.ndarray, dq: np.ndarray,
              last_action: np.ndarray) -> np.ndarray:
        cmd = np.asarray(command, np.float32)
        clocks = self.clock.step(float(cmd[4]), float(cmd[5]), float(cmd[6]), float(cmd[7]))
        return np.concatenate([
            projected_gravity(quat_wxyz), cmd * COMMAND_SCALES, np.asarray(q, np.float32) - DEFAULT_Q,
            np.asarray(dq, np.float32) * 0.05, np.clip(last_action, -10, 10).astype(np.float32), clocks,
        ]).astype(np.float32)

    def push(self, frame: np.ndarray) -> np.ndarray:
        """Append the newest frame; returns the flat (290,) history, oldest first."""
        if frame.shape != (OBS_DIM,) or not np.all(np.isfinite(frame)):
            raise ValueError(f"observation frame must be {OBS_DIM} finite values")
        self._buf[:-1] = self._buf[1:]
        self._buf[-1] = frame
        return self._buf.reshape(-1).copy()


def command_vector(vx: float, vy: float = 0.0, yaw_rate: float = 0.0) -> np.ndarray:
    c = DEFAULT_COMMAND.copy()
    c[:3] = (vx, vy, yaw_rate)
    return c


def newest_command(history: np.ndarray) -> np.ndarray:
    """(vx, vy, yaw rate) the policy was following in the newest frame of a flat history."""
    frame = np.asarray(history, np.float32).reshape(-1, OBS_DIM)[-1]
    return frame[3:6] / COMMAND_SCALES[:3]


def shows_command(history: np.ndarray, vx: float, vy: float, yaw_rate: float) -> bool:
    return bool(np.allclose(newest_command(history), (vx, vy, yaw_rate), atol=1e-4))


def is_fresh(history: np.ndarray) -> bool:
    """True for the first observation after a reset: every older frame is still the zero padding."""
    return not np.any(np.asarray(history).reshape(-1, OBS_DIM)[:-1])
