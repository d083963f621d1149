"""The person beside the stand-in Go1, so a rehearsal (`uni-o4 bringup --standin`) runs through falls
unattended: after a fall, they wait, stand the robot up, and re-arm the controller with the remote's
re-arm buttons (the pd_controller's `remote_rearm`), as an operator does on the real robot. Only a
fall calls them: an e-stop someone engaged stays engaged. With `arm_at_start` they also arm the robot
once at the start, as robot.yaml's `start_latched` asks of a person: stand it up, press the buttons."""

from __future__ import annotations

from dataclasses import dataclass

from ..robot.go1 import roll_pitch
from ..robot.safety import fallen


@dataclass
class StandInOperator:
    delay: float = 3.0  # s the robot lies before they stand it up
    rearm: frozenset[str] = frozenset({"L2", "A"})  # "" (empty): they stand it up, someone else re-arms
    max_tilt: float = 1.0  # the controller's fall rule (pd_controller max_tilt)
    hold_ticks: int = 10  # how long the buttons are held (0.2 s at 50 Hz)
    arm_at_start: bool = False  # the controller starts latched (start_latched): arm it once, start_ticks in
    start_ticks: int = 25  # 0.5 s at 50 Hz: the controller is up and damping
    falls: int = 0
    _ticks: int = 0
    _lying: int | None = None  # ticks since the fall
    _holding: int = 0

    def after_tick(self, robot) -> None:
        """Called by the stand-in Go1 after each control tick (robot: Go1UdpRobot)."""
        self._ticks += 1
        if self._holding:
            self._holding -= 1
            robot.buttons = self.rearm if self._holding else frozenset()
            return
        if self.arm_at_start and self._ticks == self.start_ticks:
            self._stand_up_and_rearm(robot)
            return
        if self._lying is None:
            if fallen(*roll_pitch(robot.state.quaternion), self.max_tilt):
                self._lying, self.falls = 0, self.falls + 1
            return
        self._lying += 1
        if self._lying * robot.sim.CONTROL_DT >= self.delay:
            self._lying = None
            self._stand_up_and_rearm(robot)

    def _stand_up_and_rearm(self, robot) -> None:
        robot.state = robot.sim.reset()  # stood up on its feet
        if self.rearm:
            robot.buttons, self._holding = self.rearm, self.hold_ticks
