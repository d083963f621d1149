"""Whether the samples the recorder computes rewards from may be used: finite, and, on the robot,
recent. The authors' robot code ends an episode once the T265 is more than 0.1 s late; past that,
a reward would be computed from a velocity the robot no longer has."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np


def finite_sample(values: Iterable[float]) -> bool:
    """A sample with NaN/inf (a tracking or driver glitch) is treated as never received."""
    return bool(np.all(np.isfinite(np.asarray(list(values), np.float64))))


@dataclass
class OdometryWatch:
    timeout: float = 0.0  # s; 0 = never too old (the simulator, where odometry is exact)
    last_rx: float | None = None  # when the newest usable sample arrived (monotonic s)

    def accept(self, values: Iterable[float], now: float) -> bool:
        """Record a sample's arrival; False (and it is ignored) if it holds NaN/inf."""
        if not finite_sample(values):
            return False
        self.last_rx = now
        return True

    def lost(self, now: float) -> str:
        """Why the odometry is too old to compute rewards from, or '' while it may be used."""
        if self.timeout <= 0:
            return ""
        if self.last_rx is None:
            return "no odometry received yet"
        age = now - self.last_rx
        if age <= self.timeout:
            return ""
        return f"odometry lost: no sample for {age:.2f} s (odom_timeout {self.timeout:g} s)"
