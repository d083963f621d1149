"""The pd_controller's decisions without ROS: which motor command each 50 Hz tick sends.

    ACTIVE  -> latest joint command through the safety filter
    DAMPING -> no fresh command within the watchdog timeout, a fall, or not yet started
    ESTOP   -> damping until explicitly re-armed (re-arming leads to DAMPING, then ACTIVE on the
               next fresh command); a fault held from outside (`hold`) refuses the re-arm while it lasts
A fall (|roll| or |pitch| over the threshold) latches damping and reports an episode abort until
the robot is upright again and re-armed. A robot state that is no state (safety.state_problem: NaN, a
zero quaternion; or a joint speed no leg reaches on FAST_TICKS of FAST_WINDOW ticks) engages the e-stop, a sensor
or link fault the robot must not walk on, and the recorder ends the episode as a truncation, as for any
e-stop (one odd speed reading is read as 0 by the safety filter). A policy that stays silent for
`silence_latch` seconds after the robot was ACTIVE (if set) latches damping too: a short gap recovers by
itself, a dead policy does not.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum

import numpy as np

from .go1 import roll_pitch
from .safety import (
    SAG_S,
    MotorCommand,
    OddSpeeds,
    SafetyConfig,
    SafetyFilter,
    Watchdog,
    damping_command,
    fallen,
    orientation_problem,
    plausible_dq,
    speed_problem,
    state_problem,
)


class Mode(IntEnum):  # same values as RobotState.MODE_*
    DAMPING = 0
    ACTIVE = 1
    ESTOP = 2


@dataclass
class TickOutcome:
    command: MotorCommand
    mode: Mode
    reason: str
    fell: bool = False
    bad_state: bool = False  # this tick's state engaged the e-stop (said once, with the reason)


@dataclass
class ControllerCore:
    cfg: SafetyConfig = field(default_factory=SafetyConfig)
    mode: Mode = Mode.DAMPING
    _q_des: np.ndarray | None = None
    _policy_version: int = 0
    _fall_latched: bool = False
    _silent_latched: bool = False
    _odd: OddSpeeds = field(default_factory=OddSpeeds)  # recent ticks with a joint speed no leg reaches
    _estop_why: str = ""  # what engaged the e-stop, when it was not the operator
    _bad_now: str | None = None  # the newest state's problem (safety.state_problem), read in the e-stop too
    _silent_since: float | None = None  # when the watchdog damped an ACTIVE robot
    # Re-arms so far: each is a new start (a person stood the robot up, or it was stopped), so the
    # policy begins a fresh observation history instead of one ending in frames of a folded-up robot.
    rearms: int = 0
    # A fault outside the controller (the robot's link, its battery, a motor) that holds the e-stop
    # while it lasts: no re-arm is accepted until it clears, and the e-stop stays latched after it.
    held_by: str = ""

    def __post_init__(self) -> None:
        self.watchdog = Watchdog(self.cfg.watchdog_timeout)
        self.filter = SafetyFilter(self.cfg)

    def on_command(self, q_des: np.ndarray, policy_version: int, now: float) -> None:
        self._q_des = np.asarray(q_des, np.float32)
        self._policy_version = policy_version
        self.watchdog.feed(now)

    def estop(self, engage: bool) -> str:
        if engage:
            if self.mode != Mode.ESTOP:  # a press on an engaged stop keeps its reason (a bad state's, say)
                self.mode, self._estop_why = Mode.ESTOP, ""
            return "e-stop engaged: damping until re-armed"
        if blocker := self.rearm_blocker:
            return f"not re-armed: {blocker}"
        if self.mode == Mode.ESTOP or self._fall_latched or self._silent_latched:
            self.mode = Mode.DAMPING
            self._fall_latched = self._silent_latched = False
            self._estop_why = ""
            self._odd.clear()
            self._silent_since = None
            self._q_des = None  # a command from before the stop is never replayed
            self.rearms += 1
            return "re-armed: active on the next fresh command"
        return "nothing to re-arm"

    @property
    def rearm_blocker(self) -> str:
        """Why a re-arm is refused now ("" if it is not): an outside fault held, or a robot state that is no state
        (re-armed on one, the robot was said "re-armed" and stopped again on the next tick)."""
        return self.held_by or (f"bad robot state: {self._bad_now}" if self._bad_now else "")

    def hold(self, fault: str) -> None:
        """The outside fault now ("" once it has cleared); while there is one the e-stop is engaged."""
        self.held_by = fault
        if fault:
            self.mode = Mode.ESTOP

    def robot_put_back(self) -> None:
        """The (simulated) robot was stood up again: clear a latched fall or e-stop, as a person re-arming
        would, and forget the old command. The next fresh command activates the robot with the rate limit
        starting from the new pose, not from the last target before the reset."""
        self.mode = Mode.DAMPING
        self._fall_latched = self._silent_latched = False
        self._silent_since = None
        self._q_des = None
        self._estop_why, self._bad_now = "", None
        self._odd.clear()

    def tick(self, quat_wxyz: np.ndarray, q: np.ndarray, dq: np.ndarray, now: float) -> TickOutcome:
        if self.mode == Mode.ESTOP:
            odd = self._odd.see(speed_problem(dq))
            self._bad_now = state_problem(quat_wxyz, q, dq) or odd
            return TickOutcome(damping_command(self.cfg), Mode.ESTOP,
                               f"e-stop ({self._estop_why})" if self._estop_why else "e-stop")
        problem = state_problem(quat_wxyz, q, dq)
        fast = speed_problem(dq) if problem is None else None
        odd = self._odd.see(fast)  # every tick counts, a fall's too
        self._bad_now = problem or odd
        # A fall is told whenever the orientation can be read, so a bad joint reading at the moment of a fall
        # does not record the fall as something else.
        if problem is None or orientation_problem(quat_wxyz) is None:
            roll, pitch = roll_pitch(quat_wxyz)
            if fallen(roll, pitch, self.cfg.max_tilt):
                first = not self._fall_latched
                self._fall_latched = True
                self.mode = Mode.DAMPING
                return TickOutcome(damping_command(self.cfg), Mode.DAMPING,
                                   f"fall: roll {roll:.2f}, pitch {pitch:.2f}", fell=first)
        if problem is None and odd:
            problem = odd
        if problem:
            self.mode, self._estop_why = Mode.ESTOP, f"bad robot state: {problem}"
            return TickOutcome(damping_command(self.cfg), Mode.ESTOP,
                               f"{self._estop_why}: e-stop engaged until re-armed", bad_state=True)
        if self._fall_latched:
            return TickOutcome(damping_command(self.cfg), Mode.DAMPING, "fallen: re-arm required")
        if self._silent_latched:
            return TickOutcome(damping_command(self.cfg), Mode.DAMPING, "policy was silent: re-arm required")
        if self._q_des is None or self.watchdog.expired(now):
            if self.mode == Mode.ACTIVE:
                self._q_des = None
                self._silent_since = now
            self.mode = Mode.DAMPING
            if (self._silent_since is not None and self.cfg.silence_latch > 0
                    and now - self._silent_since >= self.cfg.silence_latch):
                self._silent_latched = True
                return TickOutcome(damping_command(self.cfg), Mode.DAMPING,
                                   f"policy silent for {now - self._silent_since:.2f} s: re-arm required")
            return TickOutcome(damping_command(self.cfg), Mode.DAMPING, "no fresh command (watchdog)")
        silent_since, self._silent_since = self._silent_since, None
        if self.mode != Mode.ACTIVE:
            # The rate limit starts from where the joints are now; slowly (activation_step) unless a command came
            # late by less than a Go1 takes to sag in damping: mid-stride, the legs are where the policy left them.
            self.filter.reset(q, ramp=silent_since is None or now - silent_since >= SAG_S)
            self.mode = Mode.ACTIVE
        return TickOutcome(self.filter.apply(self._q_des, q, plausible_dq(dq) if fast else dq), Mode.ACTIVE, "ok")

    @property
    def faulted(self) -> bool:
        """The e-stop is engaged by a fault the controller found (a bad robot state), not by an operator."""
        return self.mode == Mode.ESTOP and bool(self._estop_why)

    @property
    def policy_version(self) -> int:
        return self._policy_version


CONTROLLER_SUMMARY = "pd_controller summary: "  # the node's exit line: this prefix, then JSON


@dataclass
class PublishedStates:
    """The stamps of the last `keep` robot states this controller published (5 s at 50 Hz). A command
    answers one of them, or it was computed from another controller's states: a second suite on the
    same ROS domain, whose policy must not drive this robot."""

    keep: int = 250
    _stamps: dict[int, None] = field(default_factory=dict)  # insertion ordered: oldest first

    def published(self, stamp: int) -> None:
        self._stamps[stamp] = None
        if len(self._stamps) > self.keep:
            del self._stamps[next(iter(self._stamps))]

    def includes(self, stamp: int) -> bool:
        return stamp in self._stamps


@dataclass
class CommandLatency:
    """How often the command a tick applies answers an older state than the newest one the
    controller published: the policy missed its one-tick deadline and the robot saw an extra tick
    of latency. Near zero at 50 Hz on an idle computer; a simulation driven faster than real time
    (or a loaded robot computer) shows here when the graph no longer keeps up.

    With `wait_for_policy` (simulation only: a real robot cannot wait) it also decides when the
    simulated time should stand still until the policy has answered the newest state, up to
    `wait_timeout` seconds, so a faster-than-real-time graph runs in exact lockstep. Stamps are
    nanoseconds or any increasing id; the policy stamps its command with the state's stamp."""

    wait_for_policy: bool = False
    wait_timeout: float = 0.5
    active_ticks: int = 0
    late: int = 0
    answered: int | None = None  # the state the latest command was computed from
    newest: int | None = None  # the last state published
    published_at: float = 0.0

    def on_command(self, answered: int) -> None:
        self.answered = answered

    def on_state_published(self, stamp: int, now: float) -> None:
        self.newest, self.published_at = stamp, now

    def must_wait(self, now: float, estop: bool) -> bool:
        """True while the tick should be skipped to wait for the answer to the newest state. Not in
        e-stop (the policy is silent then); it does wait for the first answer that would activate
        the robot, but never longer than the timeout, after which the watchdog takes over."""
        return (self.wait_for_policy and not estop and self.answered is not None
                and self.answered != self.newest and now - self.published_at < self.wait_timeout)

    def on_active_tick(self) -> None:
        """Counts one tick that applied the policy's command, late unless it answers the newest state."""
        self.active_ticks += 1
        if self.answered is None or self.answered != self.newest:
            self.late += 1

    @property
    def late_fraction(self) -> float:
        return self.late / self.active_ticks if self.active_ticks else 0.0

    def to_dict(self) -> dict:
        return {"active_ticks": self.active_ticks, "late_commands": self.late,
                "late_fraction": round(self.late_fraction, 4)}
