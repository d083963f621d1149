"""Parameters read once, at start, declared so that a change at run time is refused, not ignored.

Every node reads its parameters when it starts. Declared writable, `ros2 param set /pd_controller
max_tilt 0.5` would answer "Set parameter successful" and change nothing: an operator tightening a
safety limit on a running robot would believe it done. Read-only, the set is refused with the
reason; launch files, parameter files and `--ros-args -p` still set them at start.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from rcl_interfaces.msg import ParameterDescriptor
from rclpy.node import Node

from ..ranges import ConfigValueError, check_ranges, check_vector
from .run import NodeConfigError

READ_AT_START = "read once at start: restart the node to change it"


def declare_read_only(node: Node, defaults: dict[str, Any]) -> dict[str, Any]:
    """Declare each parameter read-only with its default; returns the values the node starts with."""
    return {name: node.declare_parameter(name, default, ParameterDescriptor(read_only=True,
                                                                            description=READ_AT_START)).value
            for name, default in defaults.items()}


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
