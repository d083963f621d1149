"""Timers on the steady clock.

rclpy's `create_timer` runs on the node's ROS clock, which is the wall clock: set back (NTP stepping a
robot computer that booted with a stale time, an operator's `date`), a 50 Hz timer stops for as long as
the clock went back. The control loop's watchdog, fall check and e-stop all run in its tick, so the Go1
held its last stiff command meanwhile. A steady clock never goes back.
"""

from __future__ import annotations

from collections.abc import Callable

from rclpy.clock import Clock, ClockType
from rclpy.node import Node
from rclpy.timer import Timer


def steady_timer(node: Node, period: float, callback: Callable[[], None]) -> Timer:
    """`node.create_timer(period, callback)` on the steady clock."""
    return node.create_timer(period, callback, clock=Clock(clock_type=ClockType.STEADY_TIME))
