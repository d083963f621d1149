"""Velocity commands (vx, vy, yaw rate) a walking policy is asked to follow, and the box they are held to.

A learned gait is only known to work for commands like those it was trained on: asked for 50 m/s by
a joystick or a typo, the policy would drive the joints toward whatever its network extrapolates. So
every command reaching the policy is clamped into `CommandLimits` first, and the clamped command is
what the observation shows (and what the recorder rewards against).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

# The forward speeds `uni-o4 pretrain` samples per episode (go1_env.Go1EnvConfig.command_vx): the
# range the project's own policies were trained on.
PRETRAIN_COMMAND_VX = (0.0, 1.0)

Command = tuple[float, float, float]


class CommandLimitsError(ValueError):
    pass


@dataclass(frozen=True)
class CommandLimits:
    """Lowest and highest (vx m/s, vy m/s, yaw rate rad/s). The defaults: vx the pretraining range;
    vy and yaw rate small, since pretraining asks for neither (a joystick's sideways nudge stays one).
    Widen them for a policy trained on more."""

    low: Command = (PRETRAIN_COMMAND_VX[0], -0.3, -0.5)
    high: Command = (PRETRAIN_COMMAND_VX[1], 0.3, 0.5)

    def __post_init__(self) -> None:
        for name, v in (("low", self.low), ("high", self.high)):
            if len(v) != 3 or not all(math.isfinite(x) for x in v):
                raise CommandLimitsError(f"command limits: {name} must be 3 finite numbers (vx, vy, yaw rate), "
                                         f"got {list(v)}")
        if any(lo > hi for lo, hi in zip(self.low, self.high)):
            raise CommandLimitsError(f"command limits: low {list(self.low)} is above high {list(self.high)} "
                                     "in some component")

    def clamp(self, command: Command) -> tuple[Command, bool]:
        """The command held inside the limits, and whether that changed it. Non-finite commands have no
        nearest allowed value: CommandLimitsError."""
        if len(command) != 3 or not all(math.isfinite(x) for x in command):
            raise CommandLimitsError(f"velocity command must be 3 finite numbers, got {list(command)}")
        out = tuple(min(max(float(x), lo), hi) for x, lo, hi in zip(command, self.low, self.high))
        return out, out != tuple(float(x) for x in command)

    def widened_to(self, forward_speeds: Iterable[float]) -> CommandLimits:
        """These limits with vx widened to hold every speed given (speeds a user chose for a run)."""
        v = [float(x) for x in forward_speeds]
        return CommandLimits((min(self.low[0], *v), *self.low[1:]), (max(self.high[0], *v), *self.high[1:]))

    def describe(self) -> str:
        names = ("vx", "vy", "yaw rate")
        return ", ".join(f"{n} {lo:g}..{hi:g}" for n, lo, hi in zip(names, self.low, self.high))
