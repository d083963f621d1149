"""Parameters read once, at start, declared so that a change at run time is refused, not ignored, and
described so that `ros2 param describe` and rqt_reconfigure say what each one does.

Every node reads its parameters when it starts. Declared writable, `ros2 param set /pd_controller
max_tilt 0.5` would answer "Set parameter successful" and change nothing: an operator tightening a
safety limit on a running robot would believe it done. Read-only, the set is refused with the
reason; launch files, parameter files and `--ros-args -p` still set them at start.

Each node module keeps a table `PARAMETERS` of `Doc`s: one line per parameter, its unit first, and the
`ranges.RANGES` rule it must satisfy, which is both checked at start and shown as the descriptor's range.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from types import SimpleNamespace
from typing import Any, NamedTuple

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
from rclpy.exceptions import InvalidParameterValueException
from rclpy.node import Node

from ..ranges import RANGES, ConfigValueError, check_ranges, check_vector
from .run import NodeConfigError

READ_AT_START = "read once at start: restart the node to change it"
_INT64_MAX = 2**63 - 1


class Doc(NamedTuple):
    """What `ros2 param describe` says of one parameter."""

    text: str  # one line: the unit (or the choices) first, then what the node does with the value
    rule: str = ""  # a ranges.RANGES key: checked at start and shown as the descriptor's range


def describe(default: Any, doc: Doc | None) -> ParameterDescriptor:
    """The read-only descriptor of a parameter: its line with the read-at-start note, and its range."""
    d = ParameterDescriptor(read_only=True, description=f"{doc.text} ({READ_AT_START})" if doc else READ_AT_START)
    if doc is None or not doc.rule:
        return d
    rng = RANGES[doc.rule]
    d.additional_constraints = f"must be {rng.what}"
    # A half-open rule ends at the type's largest value: a descriptor has no "unbounded", and this is what
    # generate_parameter_library gives ros2_control's parameters for the same case.
    if isinstance(default, bool):
        pass  # no range for a switch
    elif isinstance(default, int):
        low, high = math.ceil(rng.low), _INT64_MAX if math.isinf(rng.high) else math.floor(rng.high)
        # Whole numbers make an open end exact: "> 0" is 1.., "< 100" ..99.
        d.integer_range = [IntegerRange(from_value=low if rng.ok(low) else low + 1,
                                        to_value=high if rng.ok(high) else high - 1, step=1)]
    elif isinstance(default, float):
        # step 0: any value in between (rclpy would refuse values off a step's grid).
        d.floating_point_range = [FloatingPointRange(from_value=float(rng.low),
                                                     to_value=min(float(rng.high), sys.float_info.max), step=0.0)]
    return d


def declare_read_only(node: Node, docs: Mapping[str, Doc], defaults: dict[str, Any]) -> dict[str, Any]:
    """Declare each parameter read-only with its default and its `docs` line; returns the values the node starts
    with, each inside its rule (else NodeConfigError)."""
    values = {name: _declare(node, name, default, docs.get(name)) for name, default in defaults.items()}
    require(values, {name: doc.rule for name, doc in docs.items() if doc.rule and name in values})
    return values


def _declare(node: Node, name: str, default: Any, doc: Doc | None) -> Any:
    try:
        value = node.declare_parameter(name, default, describe(default, doc)).value
    except InvalidParameterValueException as exc:
        # rclpy checks the descriptor's range as it declares, and its exception is no ValueError: run_node ended
        # in a traceback. Said here as every other start-up error is, in one line naming the rule.
        given = getattr(node, "_parameter_overrides", {}).get(name)  # as run.check_started reads it
        if doc is not None and doc.rule:
            require({name: default if given is None else given.value}, {name: doc.rule})
        raise NodeConfigError(f"parameter {name}: {exc}") from None
    # rcl reads `name:=[]` (and `name: []` in a YAML file) as a parameter with no value, not as an empty list of
    # the declared type: the nodes ended in a TypeError on len(None). An empty list is what was written.
    return [] if value is None and isinstance(default, list) else value


def require(values: dict[str, Any], rules: dict[str, str]) -> None:
    """NodeConfigError naming the first parameter outside its range (`ranges.RANGES`): a start-up error,
    not a node that runs on something meaningless."""
    try:
        check_ranges(SimpleNamespace(**{name: values[name] for name in rules}), rules)
    except ConfigValueError as exc:
        raise NodeConfigError(f"parameter {exc}") from None


def require_vector(values: dict[str, Any], name: str, length: int) -> tuple[float, ...]:
    """The parameter as `length` finite numbers, or NodeConfigError."""
    try:
        return check_vector(name, values[name], length)
    except ConfigValueError as exc:
        raise NodeConfigError(f"parameter {exc}") from None


def update_key(node: Node, setting: str) -> bytes | None:
    """The policy-update key named by the node's `hmac_key_file` ('auto': this computer's own), said in its log."""
    from ..robot.policy_update import UpdateKeyError, key_fingerprint, load_update_key

    try:
        key, path = load_update_key(setting)
    except UpdateKeyError as exc:
        raise NodeConfigError(str(exc)) from exc
    if key is None:
        node.get_logger().warning("hmac_key_file is '': policy updates are not signed, so the robot cannot tell "
                                  "its learner's from anything else on this ROS domain")
    else:
        node.get_logger().info(f"policy updates are signed with the key in {path} (hmac_key_file, fingerprint "
                               f"{key_fingerprint(key)}); a learner on another computer needs a copy of that file")
    return key


def writable_folder(path: str, name: str) -> Path:
    """The folder a node writes into (parameter `name`), made if missing. A file in its place, a folder that cannot
    be made or written into, or no path at all is a NodeConfigError at start: before, the first write failed
    (a traceback that ended the learner at its first update; a logger that kept every episode in memory until
    shutdown, then lost them)."""
    if not path.strip():
        raise NodeConfigError(f"parameter {name} is empty: name a folder")
    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise NodeConfigError(f"parameter {name} {path!r} is a file, not a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise NodeConfigError(f"parameter {name} {path!r}: cannot make that folder ({exc.strerror})") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise NodeConfigError(f"parameter {name} {path!r}: cannot write into that folder")
    return folder
