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


class CommandHold:
    """The velocity command in force: the newest one received, for `timeout` seconds after it came, then
    the standing command (the node's configured one) again.

    A teleop that dies mid-command (a crashed laptop, a joystick out of radio range) sends no "stop": without a
    timeout its last command would drive the robot until someone presses the e-stop. Publishers of `cmd_vel`
    repeat their command (a joystick at 10-50 Hz, Nav2 at its controller rate, the recorder every policy
    step), so silence longer than `timeout` means the sender is gone. timeout 0: a command holds until the next.
    """

    def __init__(self, limits: CommandLimits, standing: Command, timeout: float) -> None:
        if not (math.isfinite(timeout) and timeout >= 0):
            raise CommandLimitsError(f"command timeout must be >= 0 s (0: a command holds until the next), "
                                     f"got {timeout}")
        standing_clamped, outside = limits.clamp(standing)
        if outside:
            raise CommandLimitsError(f"standing command {list(standing)} is outside the command limits "
                                     f"({limits.describe()})")
        self.limits, self.standing, self.timeout = limits, standing_clamped, float(timeout)
        self.command: Command = standing_clamped
        self.received: float | None = None  # when the command in force came; None: the standing one is in force

    def offer(self, asked: Command, now: float) -> tuple[Command, bool]:
        """Take a received command (clamped into the limits) as the one in force from `now`; returns it and
        whether clamping changed it. Non-finite: CommandLimitsError, and the command in force stays."""
        command, clamped = self.limits.clamp(asked)
        self.command, self.received = command, now
        return command, clamped

    def current(self, now: float) -> tuple[Command, float | None]:
        """The command in force at `now`, and the silence in seconds if the received command lapsed just now
        (the moment to say so), else None."""
        if self.received is not None and self.timeout > 0 and now - self.received > self.timeout:
            silence = now - self.received
            self.command, self.received = self.standing, None
            return self.command, silence
        return self.command, None
