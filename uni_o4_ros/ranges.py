"""Ranges a setting must lie in to mean anything: the learning configs' and the robot's safety limits."""

from __future__ import annotations

import math
from collections.abc import Callable
from numbers import Real
from typing import Any, NamedTuple


class Range(NamedTuple):
    """A rule: its check, its words, and the closed interval around it, `low` to `high`. A ROS parameter
    descriptor can only state closed ranges, so "> 0" is shown as [0, high] and `what` says the rest."""

    ok: Callable[[float], bool]
    what: str
    low: float
    high: float = math.inf


# Ranges a setting must lie in to mean anything. Checked when a config is built (from defaults,
# YAML, --set or ROS parameters), so a typo such as clip=-1 or gamma=1.5 stops with one line
# naming the key before any training, instead of a silent no-op or a divergence hours later.
RANGES: dict[str, Range] = {
    ">0": Range(lambda v: v > 0, "> 0", 0),
    ">=0": Range(lambda v: v >= 0, ">= 0", 0),
    ">=1": Range(lambda v: v >= 1, ">= 1", 1),
    "(0,1)": Range(lambda v: 0 < v < 1, "in (0, 1)", 0, 1),
    "(0,1]": Range(lambda v: 0 < v <= 1, "in (0, 1]", 0, 1),
    "[0,1]": Range(lambda v: 0 <= v <= 1, "in [0, 1]", 0, 1),
    "(0,pi]": Range(lambda v: 0 < v <= math.pi, "in (0, pi]", 0, math.pi),
    "[-pi,pi]": Range(lambda v: -math.pi <= v <= math.pi, "in [-pi, pi]", -math.pi, math.pi),  # an angle
    "[0,3]": Range(lambda v: 0 <= v <= 3, "in [0, 3]", 0, 3),  # the T265's tracker confidence
    "[0,100)": Range(lambda v: 0 <= v < 100, "in [0, 100)", 0, 100),  # a battery charge to stop at, in %
    "[0,127]": Range(lambda v: 0 <= v <= 127, "in [0, 127]", 0, 127),  # deg C: the Go1's motors report int8
    "[0,65535]": Range(lambda v: 0 <= v <= 65535, "in [0, 65535]", 0, 65535),  # a UDP port; 0: any free one
    "[1,65535]": Range(lambda v: 1 <= v <= 65535, "in [1, 65535]", 1, 65535),  # a UDP port to send to
    # a seed of 32 bits: the policy's per-episode noise seed (seed * 1000003 + episode) stays within torch's int64
    "[0,4294967295]": Range(lambda v: 0 <= v <= 2**32 - 1, "in [0, 4294967295]", 0, 2**32 - 1),
}


class ConfigValueError(ValueError):
    """A setting with an impossible value; `key` becomes the full path (`online.clip`) as the
    error passes up through the nested configs."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"{key}: {problem}")
        self.key, self.problem = key, problem


def check_vector(name: str, value: Any, length: int) -> tuple[float, ...]:
    """`value` as `length` finite numbers, or ConfigValueError naming `name`."""
    try:
        items = tuple(value)
    except TypeError:  # a lone number
        items = (value,)
    if len(items) != length or not all(isinstance(v, Real) and math.isfinite(v) for v in items):
        raise ConfigValueError(name, f"must be {length} finite numbers, got {value!r}")
    return tuple(float(v) for v in items)


def check_ranges(cfg: Any, rules: dict[str, str]) -> None:
    """Raise ValueError naming the first field outside its range; tuples are checked per element,
    None (a switched-off option) passes, NaN and inf never do."""
    for name, rule in rules.items():
        value = getattr(cfg, name)
        if value is None:
            continue
        rng = RANGES[rule]
        items = value if isinstance(value, tuple) else (value,)
        if not all(isinstance(v, (int, float)) and math.isfinite(v) and rng.ok(v) for v in items):
            raise ConfigValueError(name, f"must be {rng.what}{' for every entry' if isinstance(value, tuple) else ''}, "
                                   f"got {value!r}")
